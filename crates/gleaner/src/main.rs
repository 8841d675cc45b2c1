//! gleaner: reclaims the Harvester storage that deleted Rancher guest clusters leave behind.

use clap::Parser;

/// Reclaims the Harvester storage that deleted Rancher guest clusters leave behind.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}
