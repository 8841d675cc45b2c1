//! `cargo xtask demo`: one scripted guest-cluster deletion, judged against the ground truth.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gleaner_sim::{Clock, demo, scenario::Report};
use serde_json::json;

#[derive(Args)]
pub struct DemoArgs {
    /// `table` for people, `json` for programs (only JSON on stdout; logs go to stderr).
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Scales every simulated delay and poll; 1 is real speed (the remove job starts about
    /// 10 seconds after its machine starts deleting, the driver polls every 5 seconds).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

pub fn run(args: DemoArgs) -> Result<()> {
    crate::tools::ensure_built()?;
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be a positive number"
    );
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    let report = runtime.block_on(upstream(args.time_scale))?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"systems": {"upstream": report}}))?
        ),
        Output::Table => {
            println!(
                "upstream (Rancher's cleanup handler on, node driver 1.0.6, CSI label off, Harvester's load-balancer controller on):"
            );
            print!("{report}");
        }
    }
    Ok(())
}

async fn upstream(time_scale: f64) -> Result<Report> {
    let world = demo::world().start().await?;
    Ok(demo::upstream(&world, Clock::new(time_scale)).await?)
}
