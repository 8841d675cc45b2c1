//! gleaner's development tasks (the cargo-xtask convention): `cargo xtask <task>`.

mod bench;
mod bench_reclaim;
mod campaign;
mod demo;
mod image;
mod plot;
mod tools;
mod world;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "gleaner's development tasks", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Bench {
    /// Many guest clusters deleted at once, upstream alone then with gleaner, side by side:
    /// requests and writes per reclaimed object, latency, leaks and wrong deletions.
    Reclaim(bench_reclaim::ReclaimArgs),
}

#[derive(Subcommand)]
enum Task {
    /// Build whatever is missing, then run every test of the workspace.
    Test {
        /// Extra arguments for `cargo test` (a test name filter, `--nocapture`, ...).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Check formatting and run clippy with warnings denied.
    Lint,
    /// Build the Kubernetes components and etcd from their Go modules into the cache, if missing.
    Tools,
    /// Regenerate tools/*/go.mod from the pinned releases (the Kubernetes `replace` block comes
    /// from k8s.io/kubernetes' own go.mod).
    Pin,
    /// Run one scripted guest-cluster deletion and print what was reclaimed, kept and leaked.
    Demo(demo::DemoArgs),
    /// Start a world and keep it running until interrupted, for kubectl.
    World(world::WorldArgs),
    /// Seeded random scenarios with faults in the real world, judged by ground truth: zero
    /// wrongful deletions, zero leaks once faults heal.
    Campaign(campaign::CampaignArgs),
    /// Time `gleaner audit` against a Harvester holding many host PVCs; prints figures.
    BenchAudit(bench::BenchArgs),
    /// Benchmarks that print figures (never judge them).
    #[command(subcommand)]
    Bench(Bench),
    /// Build gleaner's OCI image with crane, without a Docker daemon, into target/image: an OCI
    /// layout and a tarball for `docker load` or `podman load`.
    Image(image::ImageArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The world polls apiservers until they are ready; kube's client logs every
                // refused connection of that wait as an error.
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().task {
        Task::Test { cargo_test_args } => test(&cargo_test_args),
        Task::Lint => lint(),
        Task::Tools => tools::ensure_built(),
        Task::Pin => tools::pin(),
        Task::Demo(args) => demo::run(args),
        Task::World(args) => world::run(args),
        Task::Campaign(args) => campaign::run(args),
        Task::BenchAudit(args) => bench::run(args),
        Task::Bench(Bench::Reclaim(args)) => bench_reclaim::run(args),
        Task::Image(args) => image::run(args),
    }
}

fn test(cargo_test_args: &[String]) -> Result<()> {
    tools::ensure_built()?;
    let started = Instant::now();
    let status = cargo()
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(cargo_test_args)
        .status()
        .context("cannot run cargo test")?;
    eprintln!(
        "xtask: the test suite ran in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "--deny",
        "warnings",
    ]))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
