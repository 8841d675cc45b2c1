//! `cargo xtask bench reclaim`: many guest clusters deleted at once, twice in one world (upstream's
//! fix alone, then upstream with gleaner), measured by the apiservers' own
//! `apiserver_request_total` and by watches on the VMs and host objects; judged by the ground
//! truth, so that a fast wrong answer never looks good. Figures, never assertions on time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use gleaner::footprint::{Footprint, FootprintStatus, Phase};
use gleaner_sim::{
    Clock, kinds,
    rancher::RancherSettings,
    scenario::{ClusterKey, ClusterPlan, Report, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, Role, World, testing::ensure_namespace};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::plot;

#[derive(Args, Clone)]
pub struct ReclaimArgs {
    /// Guest clusters deleted at once (each with its own guest apiserver).
    #[arg(long, default_value_t = 20)]
    clusters: usize,
    /// VMs per cluster.
    #[arg(long, default_value_t = 3)]
    vms: usize,
    /// Scales every simulated delay and poll; 1 is real speed (the remove job's 5 s polling).
    #[arg(long)]
    time_scale: Option<f64>,
    /// A few clusters at a tenth of real speed: proves the bench works, judges nothing.
    #[arg(long)]
    quick: bool,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also draws the figures (latency per cluster, requests and writes per reclaimed object,
    /// upstream against gleaner) into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

impl ReclaimArgs {
    fn clusters(&self) -> usize {
        if self.quick { 3 } else { self.clusters }
    }

    fn time_scale(&self) -> f64 {
        let default = if self.quick { 0.1 } else { 1.0 };
        self.time_scale.unwrap_or(default)
    }

    fn clock(&self) -> Clock {
        Clock::new(self.time_scale())
    }
}

/// gleaner's namespace in the bench's Rancher.
const GLEANER_NAMESPACE: &str = "gleaner-bench";
/// How long one system may take to finish the deletions, at real speed.
const DELETION_TIMEOUT: Duration = Duration::from_secs(900);

pub fn run(args: ReclaimArgs) -> Result<()> {
    crate::tools::ensure_built()?;
    anyhow::ensure!(
        args.time_scale().is_finite() && args.time_scale() > 0.0,
        "--time-scale must be a positive number"
    );
    let binary = crate::demo::build_gleaner(&["--release"])?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    let figures = runtime.block_on(measure_both(&binary, &args))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&figures.to_json())?),
        Output::Table => print!("{}", figures.table()),
    }
    if let Some(path) = &args.plot {
        figures.plot(path)?;
        eprintln!("xtask: drew {}", path.display());
    }
    Ok(())
}

/// Both systems' figures, from one world.
pub struct Figures {
    clusters: usize,
    vms: usize,
    time_scale: f64,
    upstream: System,
    gleaner: System,
}

/// One system's deletion of every cluster.
struct System {
    report: Report,
    /// Requests each apiserver served during the deletion, by (verb, resource).
    rancher: Requests,
    harvester: Requests,
    /// Harvester requests while gleaner attributed the clusters' objects (before any deletion);
    /// empty for upstream.
    attribution: Requests,
    /// Per deleted cluster with at least one object gone: from its last VM starting to delete
    /// to its last deletable host object gone.
    latencies: Vec<Duration>,
    /// gleaner's own share of the deletion's requests and of the attribution's (empty for
    /// upstream), told apart by its User-Agent in the apiservers' audit logs.
    own: OwnShare,
}

#[derive(Default)]
struct OwnShare {
    rancher: Own,
    harvester: Own,
    attribution: Own,
}

/// One client's requests in an audit log window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Own {
    requests: u64,
    writes: u64,
}

impl Own {
    /// The requests gleaner sent, among the audit log lines of a window.
    fn of_gleaner(lines: &str) -> Self {
        let prefix = gleaner::user_agent::NAME;
        lines
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["userAgent"].as_str() == Some(prefix))
            .fold(Self::default(), |own, event| {
                let write = matches!(
                    event["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete" | "deletecollection")
                );
                Self {
                    requests: own.requests + 1,
                    writes: own.writes + u64::from(write),
                }
            })
    }
}

/// Where a cluster's audit log stands now: the window after it starts there.
fn audit_mark(world: &World, cluster: &str) -> Result<u64> {
    let path = world.audit_log(cluster)?;
    Ok(std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0))
}

/// gleaner's requests to a cluster since `mark`.
fn own_since(world: &World, cluster: &str, mark: u64) -> Result<Own> {
    let path = world.audit_log(cluster)?;
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let start = usize::try_from(mark).unwrap_or(usize::MAX).min(text.len());
    Ok(Own::of_gleaner(&String::from_utf8_lossy(&text[start..])))
}

async fn measure_both(binary: &Path, args: &ReclaimArgs) -> Result<Figures> {
    let world = World::builder()
        .with_crds(Role::Management, gleaner::footprint::crds())
        .audit_log(true)
        .start()
        .await?;
    let upstream = measure(&world, args, None).await?;
    let gleaner = measure(&world, args, Some(binary)).await?;
    Ok(Figures {
        clusters: args.clusters(),
        vms: args.vms,
        time_scale: args.time_scale(),
        upstream,
        gleaner,
    })
}

/// The bench's clusters: each with hot-plugged, unattached, RWX and snapshotted volumes and a
/// load balancer.
fn scenario(prefix: &str, args: &ReclaimArgs) -> ScenarioBuilder {
    (0..args.clusters()).fold(
        ScenarioBuilder::new(prefix)
            .clock(args.clock())
            .rancher(RancherSettings::default())
            .load_balancer_controller(true),
        |builder, index| {
            builder.cluster(
                ClusterPlan::new(&format!("c{index}"), args.vms)
                    .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                    .volume(VolumePlan::new("logs").hotplugged())
                    .volume(VolumePlan::new("scratch").unattached())
                    .volume(VolumePlan::new("shared").rwx())
                    .load_balancer("web"),
            )
        },
    )
}

async fn measure(world: &World, args: &ReclaimArgs, gleaner: Option<&Path>) -> Result<System> {
    let prefix = if gleaner.is_some() {
        "bench-gleaner"
    } else {
        "bench-upstream"
    };
    let mut scenario = scenario(prefix, args).start(world).await?;
    let keys: Vec<ClusterKey> = scenario.cluster_keys().cloned().collect();
    let timeout = args
        .clock()
        .scaled(DELETION_TIMEOUT)
        .max(Duration::from_secs(120));
    let harvester = world.client(ClusterName::HARVESTER).await?;
    let mut attribution = Requests::default();
    let mut own = OwnShare::default();
    let _running = match gleaner {
        Some(binary) => {
            let before = Requests::read(&harvester).await?;
            let mark = audit_mark(world, ClusterName::HARVESTER)?;
            let running = start_gleaner(world, binary, &keys)?;
            until_recorded(world, &scenario, &keys, timeout).await?;
            attribution = Requests::read(&harvester).await?.since(&before);
            own.attribution = own_since(world, ClusterName::HARVESTER, mark)?;
            Some(running)
        }
        None => None,
    };
    let rancher = world.client(ClusterName::RANCHER).await?;
    let resources = resources(&scenario, &keys);
    let gone = Gone::watch(&harvester, &resources);
    let rancher_before = Requests::read(&rancher).await?;
    let harvester_before = Requests::read(&harvester).await?;
    let rancher_mark = audit_mark(world, ClusterName::RANCHER)?;
    let harvester_mark = audit_mark(world, ClusterName::HARVESTER)?;
    tracing::info!(clusters = keys.len(), %prefix, "deleting every cluster");
    for key in &keys {
        scenario.delete_cluster(key).await?;
    }
    if gleaner.is_some() {
        until_reclaimed(world, &scenario, &keys, timeout).await?;
    }
    let report = scenario.measure(timeout).await?;
    let rancher_requests = Requests::read(&rancher).await?.since(&rancher_before);
    let harvester_requests = Requests::read(&harvester).await?.since(&harvester_before);
    own.rancher = own_since(world, ClusterName::RANCHER, rancher_mark)?;
    own.harvester = own_since(world, ClusterName::HARVESTER, harvester_mark)?;
    let latencies = latencies(&scenario, &keys, &report, &gone);
    gone.stop();
    Ok(System {
        report,
        rancher: rancher_requests,
        harvester: harvester_requests,
        attribution,
        latencies,
        own,
    })
}

fn start_gleaner(
    world: &World,
    binary: &Path,
    keys: &[ClusterKey],
) -> Result<crate::demo::Running> {
    let watched: BTreeSet<&str> = keys.iter().map(|key| key.namespace.as_str()).collect();
    let child = Command::new(binary)
        .args(["run", "--kubeconfig"])
        .arg(world.kubeconfig(ClusterName::RANCHER)?)
        .args(["--namespace", GLEANER_NAMESPACE, "--watch-namespace"])
        .arg(watched.into_iter().collect::<Vec<_>>().join(","))
        .args(["--admin-addr", "127.0.0.1:0", "--grace-period", "0s"])
        .env("POD_NAME", "gleaner-bench")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            world.dir().join("logs").join("gleaner-bench.log"),
        )?)
        .spawn()
        .context("cannot start gleaner")?;
    Ok(crate::demo::Running(child))
}

async fn footprints(world: &World) -> Result<Api<Footprint>> {
    let rancher = world.client(ClusterName::RANCHER).await?;
    ensure_namespace(&rancher, GLEANER_NAMESPACE).await?;
    Ok(Api::namespaced(rancher, GLEANER_NAMESPACE))
}

/// Until every cluster's Footprint records everything it made.
async fn until_recorded(
    world: &World,
    scenario: &Scenario,
    keys: &[ClusterKey],
    timeout: Duration,
) -> Result<()> {
    until_every_footprint(
        world,
        scenario,
        keys,
        timeout,
        "gleaner records every cluster",
        |key, status| {
            let recorded: BTreeSet<String> = status
                .map(|status| status.records().into_iter().map(|r| r.uid).collect())
                .unwrap_or_default();
            recorded == made(scenario, key).into_iter().collect()
        },
    )
    .await
}

async fn until_reclaimed(
    world: &World,
    scenario: &Scenario,
    keys: &[ClusterKey],
    timeout: Duration,
) -> Result<()> {
    until_every_footprint(
        world,
        scenario,
        keys,
        timeout,
        "gleaner reclaims every cluster",
        |_, status| status.and_then(|status| status.phase) == Some(Phase::Reclaimed),
    )
    .await
}

/// Until `holds` of every cluster's Footprint status (`None` while it has none).
async fn until_every_footprint(
    world: &World,
    scenario: &Scenario,
    keys: &[ClusterKey],
    timeout: Duration,
    what: &str,
    holds: impl Fn(&ClusterKey, Option<FootprintStatus>) -> bool,
) -> Result<()> {
    let footprints = footprints(world).await?;
    crate::demo::until(timeout, what, || async {
        for key in keys {
            let uid = &scenario.cluster(&key.name).context("no such cluster")?.uid;
            let status = footprints
                .get_opt(uid)
                .await?
                .and_then(|footprint| footprint.status);
            if !holds(key, status) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// The UIDs of the guest objects a cluster made (not its VMs' own disks).
fn made(scenario: &Scenario, key: &ClusterKey) -> Vec<String> {
    scenario
        .made_by(key)
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect()
}

/// Every kind of host object the clusters made, and the VMs.
fn resources(scenario: &Scenario, keys: &[ClusterKey]) -> Vec<ApiResource> {
    let mut found: BTreeMap<String, ApiResource> = BTreeMap::new();
    for key in keys {
        for (object, _) in scenario.made_by(key) {
            found.insert(object.resource.plural.clone(), object.resource);
        }
    }
    let vms = kinds::virtual_machine();
    found.insert(vms.plural.clone(), vms);
    found.into_values().collect()
}

/// When each host object went and when each VM started to delete, as watches saw them.
struct Gone {
    deleted: Arc<Mutex<HashMap<String, Instant>>>,
    deleting_vms: Arc<Mutex<HashMap<String, Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gone {
    fn watch(harvester: &Client, resources: &[ApiResource]) -> Self {
        let deleted = Arc::new(Mutex::new(HashMap::new()));
        let deleting_vms = Arc::new(Mutex::new(HashMap::new()));
        let tasks = resources
            .iter()
            .map(|resource| {
                let api = Api::<DynamicObject>::all_with(harvester.clone(), resource);
                let is_vm = resource.kind == "VirtualMachine";
                let deleted = deleted.clone();
                let deleting_vms = deleting_vms.clone();
                tokio::spawn(async move {
                    let mut events = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .boxed();
                    while let Some(event) = events.next().await {
                        let now = Instant::now();
                        match event {
                            Ok(watcher::Event::Delete(object)) => {
                                if let Some(uid) = object.uid() {
                                    lock(&deleted).entry(uid).or_insert(now);
                                }
                            }
                            Ok(
                                watcher::Event::Apply(object) | watcher::Event::InitApply(object),
                            ) if is_vm && object.metadata.deletion_timestamp.is_some() => {
                                lock(&deleting_vms).entry(object.name_any()).or_insert(now);
                            }
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        Self {
            deleted,
            deleting_vms,
            tasks,
        }
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Per cluster: its last VM starting to delete to its last reclaimed object gone (0 when every
/// object went before the last VM started to).
fn latencies(
    scenario: &Scenario,
    keys: &[ClusterKey],
    report: &Report,
    gone: &Gone,
) -> Vec<Duration> {
    let reclaimed: BTreeSet<&str> = report
        .objects
        .iter()
        .filter(|object| !object.must_survive && !object.exists_at_end)
        .map(|object| object.uid.as_str())
        .collect();
    let deleted = lock(&gone.deleted);
    let deleting_vms = lock(&gone.deleting_vms);
    keys.iter()
        .filter_map(|key| {
            let cluster = scenario.cluster(&key.name)?;
            let last_vm = cluster
                .machines
                .iter()
                .filter_map(|machine| deleting_vms.get(&machine.vm))
                .max()?;
            let last_gone = made(scenario, key)
                .iter()
                .filter(|uid| reclaimed.contains(uid.as_str()))
                .filter_map(|uid| deleted.get(uid))
                .max()?;
            Some(last_gone.saturating_duration_since(*last_vm))
        })
        .collect()
}

/// `apiserver_request_total` of one apiserver, summed by (verb, resource).
#[derive(Default, Clone)]
struct Requests(BTreeMap<(String, String), u64>);

impl Requests {
    async fn read(client: &Client) -> Result<Self> {
        let text = client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await
            .context("cannot read an apiserver's metrics")?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let mut counts = BTreeMap::new();
        for line in text
            .lines()
            .filter(|line| line.starts_with("apiserver_request_total{"))
        {
            let Some((labels, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split_once(&format!("{name}=\""))
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(value, _)| value.to_owned())
                    .unwrap_or_default()
            };
            *counts
                .entry((label("verb"), label("resource")))
                .or_default() += count as u64;
        }
        Self(counts)
    }

    fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(key, count)| {
                    let earlier = before.0.get(key).copied().unwrap_or_default();
                    (key.clone(), count.saturating_sub(earlier))
                })
                .filter(|(_, count)| *count > 0)
                .collect(),
        )
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|((verb, _), _)| matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|(_, count)| count)
            .sum()
    }

    fn by_verb(&self) -> BTreeMap<String, u64> {
        let mut verbs = BTreeMap::new();
        for ((verb, _), count) in &self.0 {
            *verbs.entry(verb.clone()).or_default() += count;
        }
        verbs
    }
}

impl System {
    fn reclaimed(&self) -> usize {
        self.report
            .summary
            .values()
            .map(|class| class.reclaimed)
            .sum()
    }

    fn leaked(&self) -> usize {
        self.report.summary.values().map(|class| class.leaked).sum()
    }

    fn wrongly_deleted(&self) -> usize {
        self.report
            .summary
            .values()
            .map(|class| class.wrongly_deleted)
            .sum()
    }

    fn per_reclaimed(&self, count: u64) -> Option<f64> {
        (self.reclaimed() > 0).then(|| count as f64 / self.reclaimed() as f64)
    }

    /// p50, p99 and max of the latencies, in seconds.
    fn latency(&self) -> Value {
        let mut seconds: Vec<f64> = self.latencies.iter().map(Duration::as_secs_f64).collect();
        seconds.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!seconds.is_empty()).then(|| {
                let rank = ((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len());
                seconds[rank - 1]
            })
        };
        json!({
            "p50": quantile(0.5),
            "p99": quantile(0.99),
            "max": seconds.last(),
            "clusters": seconds.len(),
        })
    }

    fn to_json(&self) -> Value {
        let objects = self.report.objects.len();
        json!({
            "reclaimed": self.reclaimed(),
            "leaked": self.leaked(),
            "wrongly_deleted": self.wrongly_deleted(),
            "objects": objects,
            "requests_per_reclaimed_object": self.per_reclaimed(self.rancher.total() + self.harvester.total()),
            "writes_per_reclaimed_object": self.per_reclaimed(self.harvester.writes()),
            "rancher_writes_per_reclaimed_object": self.per_reclaimed(self.rancher.writes()),
            "attribution_writes_per_object": (objects > 0 && !self.attribution.0.is_empty())
                .then(|| self.attribution.writes() as f64 / objects as f64),
            "latency_seconds": self.latency(),
            "gleaner_own": {
                "requests_per_reclaimed_object": self.per_reclaimed(self.own.rancher.requests + self.own.harvester.requests),
                "harvester_writes_per_reclaimed_object": self.per_reclaimed(self.own.harvester.writes),
                "rancher_writes_per_reclaimed_object": self.per_reclaimed(self.own.rancher.writes),
                "attribution_writes_per_object": (objects > 0)
                    .then(|| self.own.attribution.writes as f64 / objects as f64),
            },
            "classes": self.report.summary,
            "requests": {
                "rancher": self.rancher.by_verb(),
                "harvester": self.harvester.by_verb(),
            },
        })
    }
}

impl Figures {
    pub fn to_json(&self) -> Value {
        json!({
            "clusters": self.clusters,
            "vms_per_cluster": self.vms,
            "time_scale": self.time_scale,
            "systems": {
                "upstream": self.upstream.to_json(),
                "gleaner": self.gleaner.to_json(),
            },
            "ratios": {
                "requests_per_reclaimed_object": ratio(
                    &self.gleaner.to_json()["requests_per_reclaimed_object"],
                    &self.upstream.to_json()["requests_per_reclaimed_object"],
                ),
            },
        })
    }

    /// Reclaim latency per cluster (sorted) and the per-object costs, upstream against gleaner.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let sorted_seconds = |system: &System| {
            let mut seconds: Vec<f64> =
                system.latencies.iter().map(Duration::as_secs_f64).collect();
            seconds.sort_by(f64::total_cmp);
            seconds
                .into_iter()
                .enumerate()
                .map(|(rank, seconds)| ((rank + 1) as f64, seconds))
                .collect()
        };
        let lines = [
            plot::Line {
                label: "upstream".into(),
                points: sorted_seconds(&self.upstream),
            },
            plot::Line {
                label: "upstream + gleaner".into(),
                points: sorted_seconds(&self.gleaner),
            },
        ];
        let json = self.to_json();
        let per_object = |path: &[&str]| {
            ["upstream", "gleaner"]
                .iter()
                .map(|system| {
                    path.iter()
                        .fold(&json["systems"][*system], |value, key| &value[*key])
                        .as_f64()
                        .unwrap_or_default()
                })
                .collect()
        };
        let bars = [
            plot::Bars {
                label: "requests".into(),
                values: per_object(&["requests_per_reclaimed_object"]),
            },
            plot::Bars {
                label: "Harvester writes".into(),
                values: per_object(&["writes_per_reclaimed_object"]),
            },
            plot::Bars {
                label: "Rancher writes".into(),
                values: per_object(&["rancher_writes_per_reclaimed_object"]),
            },
        ];
        plot::lines_and_bars(
            path,
            &format!(
                "{} clusters of {} VMs deleted at once (time scale {})",
                self.clusters, self.vms, self.time_scale
            ),
            (
                "last VM deleting -> last deletable host object gone",
                "clusters, fastest first",
                "seconds",
            ),
            &lines,
            "per reclaimed object, every actor (apiservers' counters)",
            &["upstream", "upstream + gleaner"],
            &bars,
        )
    }

    fn table(&self) -> String {
        let json = self.to_json();
        let (upstream, gleaner) = (&json["systems"]["upstream"], &json["systems"]["gleaner"]);
        let cell = |value: &Value| match value {
            Value::Number(number) => match number.as_u64() {
                Some(whole) => whole.to_string(),
                None => format!("{:.2}", number.as_f64().unwrap_or_default()),
            },
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        let mut table = format!(
            "{} clusters of {} VMs deleted at once, time scale {}; every actor's requests, from the apiservers' own counters\n{:<44} {:>12} {:>20}\n",
            self.clusters, self.vms, self.time_scale, "", "upstream", "upstream + gleaner"
        );
        for (label, path) in [
            ("reclaimed", &["reclaimed"][..]),
            ("leaked", &["leaked"]),
            ("wrongly deleted", &["wrongly_deleted"]),
            (
                "requests per reclaimed object",
                &["requests_per_reclaimed_object"],
            ),
            (
                "Harvester writes per reclaimed object",
                &["writes_per_reclaimed_object"],
            ),
            (
                "Rancher writes per reclaimed object",
                &["rancher_writes_per_reclaimed_object"],
            ),
            (
                "attribution writes per object (life)",
                &["attribution_writes_per_object"],
            ),
            (
                "gleaner's own requests per reclaimed object",
                &["gleaner_own", "requests_per_reclaimed_object"],
            ),
            (
                "gleaner's own Harvester writes per object",
                &["gleaner_own", "harvester_writes_per_reclaimed_object"],
            ),
            (
                "gleaner's own Rancher writes per object",
                &["gleaner_own", "rancher_writes_per_reclaimed_object"],
            ),
            (
                "gleaner's own attribution writes per object",
                &["gleaner_own", "attribution_writes_per_object"],
            ),
            ("latency p50 (s)", &["latency_seconds", "p50"]),
            ("latency p99 (s)", &["latency_seconds", "p99"]),
            ("latency max (s)", &["latency_seconds", "max"]),
        ] {
            let pick = |system: &Value| {
                path.iter()
                    .fold(system.clone(), |value, key| value[key].clone())
            };
            table += &format!(
                "{label:<44} {:>12} {:>20}\n",
                cell(&pick(upstream)),
                cell(&pick(gleaner))
            );
        }
        table += &format!(
            "{:<44} {:>12} {:>20}\n",
            "ratio gleaner/upstream, requests per object",
            "",
            cell(&json["ratios"]["requests_per_reclaimed_object"])
        );
        table
    }
}

fn ratio(numerator: &Value, denominator: &Value) -> Option<f64> {
    let (numerator, denominator) = (numerator.as_f64()?, denominator.as_f64()?);
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask bench reclaim --quick` with the gleaner `cargo test` built: the figures are
    /// there and the answer is right; no figure is judged.
    #[tokio::test]
    async fn the_quick_bench_measures_both_systems_and_gleaner_answers_right() {
        let args = ReclaimArgs {
            clusters: 20,
            vms: 2,
            time_scale: None,
            quick: true,
            output: Output::Json,
            plot: None,
        };
        let figures = measure_both(&crate::demo::tests::built_gleaner(), &args)
            .await
            .unwrap();
        let json = figures.to_json();
        let gleaner = &json["systems"]["gleaner"];
        assert_eq!(gleaner["leaked"], 0, "{json:#}");
        assert_eq!(gleaner["wrongly_deleted"], 0, "{json:#}");
        assert!(gleaner["reclaimed"].as_u64().unwrap() > 0, "{json:#}");
        // The audit logs tell gleaner's own requests apart; upstream sends none of them.
        let own = &gleaner["gleaner_own"];
        assert!(
            own["requests_per_reclaimed_object"].as_f64().unwrap() > 0.0,
            "{json:#}"
        );
        assert!(
            own["harvester_writes_per_reclaimed_object"]
                .as_f64()
                .unwrap()
                > 0.0,
            "{json:#}"
        );
        assert_eq!(
            json["systems"]["upstream"]["gleaner_own"]["requests_per_reclaimed_object"], 0.0,
            "{json:#}"
        );
        let picture =
            std::env::temp_dir().join(format!("xtask-reclaim-{}.png", std::process::id()));
        figures.plot(&picture).unwrap();
        let png = std::fs::read(&picture).unwrap();
        std::fs::remove_file(&picture).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(
            json["systems"]["upstream"]["wrongly_deleted"], 0,
            "{json:#}"
        );
        for system in ["upstream", "gleaner"] {
            let figures = &json["systems"][system];
            for field in [
                "requests_per_reclaimed_object",
                "writes_per_reclaimed_object",
                "reclaimed",
                "leaked",
                "wrongly_deleted",
            ] {
                assert!(!figures[field].is_null(), "{system}.{field}: {json:#}");
            }
            for quantile in ["p50", "p99", "max"] {
                assert!(
                    figures["latency_seconds"][quantile].as_f64().is_some(),
                    "{system}.latency_seconds.{quantile}: {json:#}"
                );
            }
        }
        assert!(figures.table().contains("upstream + gleaner"));
        let classes = json["systems"]["upstream"]["classes"].as_object().unwrap();
        assert!(
            classes
                .values()
                .any(|class| class["leaked"].as_u64() > Some(0)),
            "upstream leaks some class: {json:#}"
        );
    }

    #[test]
    fn requests_are_summed_by_verb_and_resource_and_diffed() {
        let before = Requests::parse(
            r#"apiserver_request_total{code="200",component="apiserver",group="",resource="persistentvolumeclaims",scope="resource",subresource="",verb="DELETE",version="v1"} 2
apiserver_request_total{code="404",component="apiserver",group="",resource="persistentvolumeclaims",scope="resource",subresource="",verb="DELETE",version="v1"} 1
"#,
        );
        let after = Requests::parse(
            r#"apiserver_request_total{code="200",component="apiserver",group="",resource="persistentvolumeclaims",scope="resource",subresource="",verb="DELETE",version="v1"} 5
apiserver_request_total{code="404",component="apiserver",group="",resource="persistentvolumeclaims",scope="resource",subresource="",verb="DELETE",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",group="",resource="persistentvolumeclaims",scope="cluster",subresource="",verb="LIST",version="v1"} 4
"#,
        );
        let during = after.since(&before);
        assert_eq!(during.total(), 7);
        assert_eq!(during.writes(), 3);
        assert_eq!(
            during.by_verb(),
            BTreeMap::from([("DELETE".to_owned(), 3), ("LIST".to_owned(), 4)])
        );
    }

    #[test]
    fn only_gleaner_s_requests_count_as_its_own_and_its_writes_among_them() {
        let agent = gleaner::user_agent::NAME;
        let lines = [
            json!({"userAgent": agent, "verb": "get"}),
            json!({"userAgent": agent, "verb": "patch"}),
            json!({"userAgent": agent, "verb": "delete"}),
            json!({"userAgent": "kube-controller-manager/v1.34.4", "verb": "delete"}),
            json!({"verb": "create"}),
        ]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
        assert_eq!(
            Own::of_gleaner(&format!("{lines}\n{{not json")),
            Own {
                requests: 3,
                writes: 2
            }
        );
    }

    #[test]
    fn a_ratio_needs_both_figures() {
        assert_eq!(ratio(&json!(2.0), &json!(4.0)), Some(0.5));
        assert_eq!(ratio(&Value::Null, &json!(4.0)), None);
        assert_eq!(ratio(&json!(2.0), &json!(0.0)), None);
    }
}
