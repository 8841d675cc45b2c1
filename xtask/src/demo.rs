//! `cargo xtask demo`: one scripted guest-cluster deletion, run twice in one world (upstream's
//! fix alone, then upstream with gleaner installed) and judged against the ground truth.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gleaner::footprint::{Footprint, Phase};
use gleaner_core::keys;
use gleaner_sim::{
    Clock, demo,
    scenario::{Class, Report},
};
use gleaner_world::{ClusterName, Role, World, testing::ensure_namespace};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

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

/// One system's run: the judged report, how long from the deletion to the end, and how many
/// requests the Rancher and Harvester apiservers served meanwhile (every actor's, as their own
/// `apiserver_request_total` counts them).
struct Run {
    report: Report,
    took: Duration,
    requests: u64,
}

/// gleaner's namespace in the demo's Rancher.
const GLEANER_NAMESPACE: &str = "gleaner-demo";
/// How long gleaner may take to record the cluster and to reclaim it, at real speed.
const GLEANER_TIMEOUT: Duration = Duration::from_secs(900);

pub fn run(args: DemoArgs) -> Result<()> {
    crate::tools::ensure_built()?;
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be a positive number"
    );
    let binary = build_gleaner(&[])?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    let (upstream, gleaner) = runtime.block_on(both(&binary, Clock::new(args.time_scale)))?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"systems": {
                "upstream": system(&upstream)?,
                "gleaner": system(&gleaner)?,
            }}))?
        ),
        Output::Table => {
            println!(
                "Rancher's cleanup handler on, node driver 1.0.6, CSI label off, Harvester's load-balancer controller on; prod deleted:"
            );
            print!("{}", side_by_side(&upstream, &gleaner));
        }
    }
    Ok(())
}

async fn both(binary: &Path, clock: Clock) -> Result<(Run, Run)> {
    let world = demo::world()
        .with_crds(Role::Management, gleaner::footprint::crds())
        .start()
        .await?;
    let upstream = upstream_alone(&world, clock).await?;
    let gleaner = with_gleaner(&world, binary, clock).await?;
    Ok((upstream, gleaner))
}

/// The scenario with Rancher's upstream fix alone.
async fn upstream_alone(world: &World, clock: Clock) -> Result<Run> {
    let mut scenario = demo::clusters("upstream", clock).start(world).await?;
    let prod = scenario.key("prod");
    let before = requests(world).await?;
    let started = Instant::now();
    tracing::info!("deleting cluster prod, upstream alone");
    scenario.delete_cluster(&prod).await?;
    let report = scenario
        .measure(clock.scaled(demo::MEASURE_TIMEOUT))
        .await?;
    Ok(Run {
        report,
        took: started.elapsed(),
        requests: requests(world).await? - before,
    })
}

/// The same scenario with gleaner installed before the deletion.
async fn with_gleaner(world: &World, binary: &Path, clock: Clock) -> Result<Run> {
    let mut scenario = demo::clusters("gleaner", clock).start(world).await?;
    let rancher = world.client(ClusterName::RANCHER).await?;
    ensure_namespace(&rancher, GLEANER_NAMESPACE).await?;
    let watched: BTreeSet<String> = scenario
        .cluster_keys()
        .filter(|key| key.installation == ClusterName::RANCHER)
        .map(|key| key.namespace.clone())
        .collect();
    let _gleaner = Running(
        Command::new(binary)
            .args(["run", "--kubeconfig"])
            .arg(world.kubeconfig(ClusterName::RANCHER)?)
            .args(["--namespace", GLEANER_NAMESPACE, "--watch-namespace"])
            .arg(watched.into_iter().collect::<Vec<_>>().join(","))
            .args(["--admin-addr", "127.0.0.1:0"])
            .env("POD_NAME", "gleaner-demo")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                world.dir().join("logs").join("gleaner-demo.log"),
            )?)
            .spawn()
            .context("cannot start gleaner")?,
    );
    let prod = scenario.key("prod");
    let made: BTreeSet<String> = scenario
        .made_by(&prod)
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect();
    let machines = scenario
        .cluster("prod")
        .map_or(0, |cluster| cluster.machines.len());
    let footprints: Api<Footprint> = Api::namespaced(rancher, GLEANER_NAMESPACE);
    let footprint = scenario
        .cluster("prod")
        .map(|cluster| cluster.uid.clone())
        .context("the demo has no prod")?;
    let deadline = clock.scaled(GLEANER_TIMEOUT).max(Duration::from_secs(60));
    tracing::info!("waiting for gleaner to record prod and hook its machines");
    until(deadline, "gleaner records prod", || async {
        let Some(status) = footprints.get_opt(&footprint).await?.and_then(|f| f.status) else {
            return Ok(false);
        };
        let recorded: BTreeSet<String> = status.records().into_iter().map(|r| r.uid).collect();
        let hooked = hooked_machines(&scenario, "prod").await?;
        Ok(recorded == made && status.vms.len() == machines && hooked == machines)
    })
    .await?;
    let before = requests(world).await?;
    let started = Instant::now();
    tracing::info!("deleting cluster prod");
    scenario.delete_cluster(&prod).await?;
    until(deadline, "gleaner reclaims prod", || async {
        let phase = footprints
            .get_opt(&footprint)
            .await?
            .and_then(|f| f.status)
            .and_then(|status| status.phase);
        Ok(phase == Some(Phase::Reclaimed))
    })
    .await?;
    let report = scenario.measure(deadline).await?;
    Ok(Run {
        report,
        took: started.elapsed(),
        requests: requests(world).await? - before,
    })
}

/// How many of the cluster's Machines carry gleaner's hook.
async fn hooked_machines(
    scenario: &gleaner_sim::scenario::Scenario,
    cluster: &str,
) -> Result<usize> {
    let rancher = scenario
        .rancher_of(cluster)
        .with_context(|| format!("no Rancher runs {cluster}"))?;
    Ok(rancher
        .machines(cluster)
        .await?
        .iter()
        .filter(|machine| machine.annotations().contains_key(keys::HOOK_ANNOTATION))
        .count())
}

/// Polls `check` once a second until it holds, failing after `deadline`.
pub(crate) async fn until<F, Fut>(deadline: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    while !check().await? {
        if started.elapsed() > deadline {
            bail!("timed out after {deadline:?}: {what}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Every request the Rancher and Harvester apiservers served so far, from their own metrics.
async fn requests(world: &World) -> Result<u64> {
    let mut total = 0;
    for cluster in [ClusterName::RANCHER, ClusterName::HARVESTER] {
        let client = world.client(cluster).await?;
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = client
            .request_text(request)
            .await
            .with_context(|| format!("cannot read {cluster}'s metrics"))?;
        total += text
            .lines()
            .filter(|line| line.starts_with("apiserver_request_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    Ok(total)
}

fn system(run: &Run) -> Result<Value> {
    let mut value = serde_json::to_value(&run.report)?;
    if let Value::Object(fields) = &mut value {
        fields.insert("seconds_to_clean".into(), json!(run.took.as_secs_f64()));
        fields.insert("api_requests".into(), json!(run.requests));
    }
    Ok(value)
}

/// Both systems per class: reclaimed, kept, leaked, wrongly deleted.
fn side_by_side(upstream: &Run, gleaner: &Run) -> String {
    let mut table = format!(
        "{:<28} {:>30}   {:>30}\n{:<28} {:>30}   {:>30}\n",
        "",
        "upstream",
        "upstream + gleaner",
        "class",
        "reclaimed kept leaked wrong",
        "reclaimed kept leaked wrong"
    );
    let cells = |report: &Report, class: Class| {
        let summary = report.class(class);
        format!(
            "{:>9} {:>4} {:>6} {:>5}",
            summary.reclaimed, summary.kept, summary.leaked, summary.wrongly_deleted
        )
    };
    for class in Class::ALL {
        if upstream.report.class(class).total == 0 && gleaner.report.class(class).total == 0 {
            continue;
        }
        table += &format!(
            "{:<28} {:>30}   {:>30}\n",
            class.to_string(),
            cells(&upstream.report, class),
            cells(&gleaner.report, class)
        );
    }
    table += &format!(
        "{:<28} {:>30}   {:>30}\n{:<28} {:>30}   {:>30}\n",
        "seconds from deletion to end",
        format!("{:.1}", upstream.took.as_secs_f64()),
        format!("{:.1}", gleaner.took.as_secs_f64()),
        "apiserver requests (all actors)",
        upstream.requests,
        gleaner.requests
    );
    table
}

/// gleaner's binary, built by cargo in this workspace with the extra `cargo build` arguments
/// (`--release`).
pub fn build_gleaner(extra: &[&str]) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args([
            "build",
            "-p",
            "gleaner",
            "--bin",
            "gleaner",
            "--message-format=json",
        ])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo build")?;
    anyhow::ensure!(output.status.success(), "cargo build -p gleaner failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["target"]["name"] == "gleaner")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo built no gleaner executable")
}

/// A child process killed when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The gleaner binary `cargo test --workspace` builds beside this test's executable
    /// (`target/<profile>/deps/xtask-…` → `target/<profile>/gleaner`).
    pub(crate) fn built_gleaner() -> PathBuf {
        let test = std::env::current_exe().unwrap();
        let binary = test
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("gleaner"))
            .unwrap();
        assert!(
            binary.is_file(),
            "{} is missing: run the workspace's tests (cargo xtask test), which build it",
            binary.display()
        );
        binary
    }

    #[tokio::test]
    async fn the_demo_shows_upstream_leaking_and_gleaner_leaving_nothing_and_deleting_nothing_wrong()
     {
        let (upstream, gleaner) = both(&built_gleaner(), Clock::new(0.05)).await.unwrap();
        for class in Class::ALL {
            let summary = gleaner.report.class(class);
            assert_eq!(
                (summary.leaked, summary.wrongly_deleted),
                (0, 0),
                "{class} with gleaner:\n{}",
                gleaner.report
            );
        }
        let upstream_leaked: usize = Class::ALL
            .iter()
            .map(|class| upstream.report.class(*class).leaked)
            .sum();
        assert!(upstream_leaked > 0, "upstream alone:\n{}", upstream.report);
        assert_eq!(
            upstream.report.objects.len(),
            gleaner.report.objects.len(),
            "the same scenario twice"
        );
        for run in [&upstream, &gleaner] {
            let json = system(run).unwrap();
            assert!(json["api_requests"].as_u64().unwrap() > 0, "{json}");
            assert!(json["seconds_to_clean"].as_f64().unwrap() > 0.0, "{json}");
            let object = &json["objects"][0];
            for field in [
                "class",
                "namespace",
                "name",
                "must_survive",
                "exists_at_end",
            ] {
                assert!(!object[field].is_null(), "{field} in {object}");
            }
        }
        let table = side_by_side(&upstream, &gleaner);
        assert!(table.contains("upstream + gleaner"), "{table}");
        assert!(table.contains("apiserver requests"), "{table}");
    }
}
