//! Simulators of the actors gleaner does not replace, faithful to design.md §2-4 and working
//! only through the real apiservers of a [`gleaner_world::World`]; scenarios that drive them
//! and record the ground truth.

pub mod clock;
pub mod cloud_provider;
mod controller;
pub mod csi;
pub mod demo;
pub mod error;
pub mod guest;
pub mod harvester;
pub mod journal;
pub mod keys;
pub mod kinds;
pub mod naming;
pub mod rancher;
pub mod scenario;
pub mod snapshots;
pub mod snapshotter;
pub mod tasks;

pub use clock::Clock;
pub use error::{Error, Result};
pub use journal::Journal;

/// What every simulated actor shares: the time scale and the journal it records into.
#[derive(Clone, Debug)]
pub struct Env {
    pub clock: Clock,
    pub journal: Journal,
}
