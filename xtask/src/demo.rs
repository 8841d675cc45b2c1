//! `cargo xtask demo`: one scripted guest-cluster deletion, judged against the ground truth.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gleaner_sim::{
    Clock,
    csi::Reclaim,
    rancher::RancherSettings,
    scenario::{Attachment, ClusterPlan, Report, ScenarioBuilder},
};
use gleaner_world::World;
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

/// How long to wait for the deleted cluster's VMs before judging anyway, at real speed.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(900);

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
            println!("upstream (Rancher's cleanup handler on, node driver 1.0.6):");
            print!("{report}");
        }
    }
    Ok(())
}

/// Rancher's upstream fix alone: the handler on, driver 1.0.6, the remove job's realistic
/// delay. One cluster is deleted, one lives on.
async fn upstream(time_scale: f64) -> Result<Report> {
    let world = World::builder().guests(1).start().await?;
    let clock = Clock::new(time_scale);
    let mut scenario = ScenarioBuilder::new("upstream")
        .clock(clock)
        .rancher(RancherSettings::default())
        .cluster(
            ClusterPlan::new("doomed", 2)
                .volume("data", Reclaim::Delete, Attachment::Hotplugged)
                .volume("logs", Reclaim::Delete, Attachment::Hotplugged)
                .volume("scratch", Reclaim::Delete, Attachment::Unattached)
                .volume("spare", Reclaim::Delete, Attachment::NeverAttached)
                .volume("database", Reclaim::Retain, Attachment::Hotplugged),
        )
        .cluster(ClusterPlan::new("living", 1).volume(
            "app",
            Reclaim::Delete,
            Attachment::Hotplugged,
        ))
        .start(&world)
        .await?;
    tracing::info!("guest clusters provisioned; deleting cluster doomed");
    scenario.delete_cluster("doomed").await?;
    let report = scenario.measure(clock.scaled(MEASURE_TIMEOUT)).await?;
    Ok(report)
}
