//! What gleaner's integration tests share. Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    collections::{BTreeSet, HashMap},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use gleaner::footprint::{Footprint, Phase};
use gleaner_sim::{
    Clock, kinds,
    scenario::{Class, ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::testing::{ensure_namespace, eventually};
use gleaner_world::{ClusterName, Role, World, WorldBuilder};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::OnceCell,
};

/// A world with gleaner's CRDs in the management cluster, from the same function `gleaner crd`
/// prints (scenarios start their clusters' guest apiservers).
pub fn world_builder() -> WorldBuilder {
    World::builder().with_crds(Role::Management, gleaner::footprint::crds())
}

/// This test binary's world: the default one, with gleaner's CRDs in the management cluster,
/// from the same function `gleaner crd` prints.
pub async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async { world_builder().start().await.unwrap() })
        .await
}

/// The demo's world (a second Rancher installation beside the first) with gleaner's CRDs,
/// shared by a test binary's tests; scenarios start their guest apiservers as they need them.
pub async fn demo_world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            gleaner_sim::demo::world()
                .with_crds(Role::Management, gleaner::footprint::crds())
                .start()
                .await
                .unwrap()
        })
        .await
}

pub const HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/gleaner";
pub const INTENT: &str = "gleaner.io/intent";
pub const REMOVE_ALL: &str = "harvesterhci.io/removeAllPersistentVolumeClaims";
pub const TIME_SCALE: f64 = 0.05;
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The real gleaner binary, killed when dropped; its log stays under the world's folder.
pub struct Gleaner {
    child: Child,
    admin: std::net::SocketAddr,
}

impl Gleaner {
    pub async fn start(world: &World, name: &str, watch: &str) -> Self {
        Self::start_with(world, name, name, watch, &[]).await
    }

    /// `instance` names the log; replicas of one gleaner share `name` (its namespace and Lease).
    pub async fn start_with(
        world: &World,
        name: &str,
        instance: &str,
        watch: &str,
        extra: &[&str],
    ) -> Self {
        let kubeconfig = world.kubeconfig(ClusterName::RANCHER).unwrap();
        Self::start_as(world, name, instance, watch, &kubeconfig, extra).await
    }

    /// As [`Gleaner::start_with`], reaching Rancher's apiserver with `kubeconfig`.
    pub async fn start_as(
        world: &World,
        name: &str,
        instance: &str,
        watch: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let client = world.client(ClusterName::RANCHER).await.unwrap();
        let namespace = format!("gleaner-{name}");
        ensure_namespace(&client, &namespace).await.unwrap();
        let log = std::fs::File::create(
            world
                .dir()
                .join("logs")
                .join(format!("gleaner-{instance}.log")),
        )
        .unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        drop(admin);
        // Killed with the test thread that started it, even when the test process is killed
        // before `Drop` runs.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", env!("CARGO_BIN_EXE_gleaner")])
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--namespace", &namespace, "--watch-namespace", watch])
            .args([
                "--lease-duration",
                "2s",
                "--admin-addr",
                &admin_addr.to_string(),
            ])
            .args(extra)
            .env("POD_NAME", instance)
            .env("RUST_LOG", "info,gleaner=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            admin: admin_addr,
        }
    }
}

impl Gleaner {
    /// Its admin server's address.
    pub fn admin(&self) -> std::net::SocketAddr {
        self.admin
    }

    /// The metrics it serves now (the OpenMetrics text), empty while it does not answer.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

impl Drop for Gleaner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each Machine of the scenario's cluster now, by name, with the value of gleaner's hook on it.
pub async fn hooks(scenario: &Scenario, cluster: &str) -> Vec<(String, Option<String>)> {
    let rancher = scenario.rancher_of(cluster).unwrap();
    rancher
        .machines(cluster)
        .await
        .unwrap()
        .iter()
        .map(|machine| (machine.name_any(), machine.annotations().get(HOOK).cloned()))
        .collect()
}

/// Every Machine of the scenario's cluster carries gleaner's hook.
pub async fn wait_for_hooks(scenario: &Scenario, cluster: &str) {
    eventually("gleaner hooks every Machine", || async {
        let machines = hooks(scenario, cluster).await;
        !machines.is_empty()
            && machines
                .iter()
                .all(|(_, hook)| hook.as_deref() == Some("gleaner"))
    })
    .await;
}

/// What each VM of the namespace carried when gleaner's intent first appeared, and the etcd
/// revision of that write. A watch delivers every change in order, so the first event with
/// the intent carries exactly the write's revision; all apiservers of a world share one etcd,
/// so revisions order writes across clusters.
#[derive(Clone, Default)]
pub struct IntentLog {
    seen: Arc<Mutex<HashMap<String, SeenIntent>>>,
}

/// The revision of the write, the intent, and the removeAll value beside it.
pub type SeenIntent = (u64, Value, Option<String>);

impl IntentLog {
    pub fn watch(harvester: Client, namespace: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let log = Self::default();
        let vms = kinds::namespaced(&harvester, namespace, &kinds::virtual_machine());
        let seen = log.seen.clone();
        let task = tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(vms, watcher::Config::default()).touched_objects());
            while let Some(Ok(vm)) = events.next().await {
                let annotations = vm.annotations();
                if let Some(intent) = annotations.get(INTENT) {
                    let intent: Value = serde_json::from_str(intent).unwrap();
                    let remove_all = annotations.get(REMOVE_ALL).cloned();
                    let revision = vm.resource_version().unwrap_or_default().parse().unwrap();
                    seen.lock()
                        .unwrap()
                        .entry(vm.name_any())
                        .or_insert((revision, intent, remove_all));
                }
            }
        });
        (log, task)
    }

    pub fn get(&self, vm: &str) -> Option<SeenIntent> {
        self.seen.lock().unwrap().get(vm).cloned()
    }
}

/// A scenario with one cluster `c1` of `machines` Machines and a hot-plugged volume, watched by
/// a gleaner that has hooked every Machine.
pub async fn hooked(prefix: &str, machines: usize, extra: &[&str]) -> (Scenario, Gleaner) {
    let world = world().await;
    let scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", machines).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let fleet = scenario.key("c1").namespace;
    let gleaner = Gleaner::start_with(world, prefix, prefix, &fleet, extra).await;
    wait_for_hooks(&scenario, "c1").await;
    (scenario, gleaner)
}

/// A bare HTTP/1.0 GET: the status code and the body, or `None` while nothing listens.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// The Events of `namespace` of the Rancher cluster.
async fn events(world: &World, namespace: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(rancher, namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

/// Whether a Warning Event with `reason`, whose note contains `text`, is in `namespace` of the
/// Rancher cluster.
pub async fn warned(world: &World, namespace: &str, reason: &str, text: &str) -> bool {
    events(world, namespace).await.iter().any(|event| {
        event.type_.as_deref() == Some("Warning")
            && event.reason.as_deref() == Some(reason)
            && event
                .note
                .as_deref()
                .is_some_and(|note| note.contains(text))
    })
}

/// Whether an Event with `reason` is in `namespace` of the Rancher cluster.
pub async fn evented(world: &World, namespace: &str, reason: &str) -> bool {
    events(world, namespace)
        .await
        .iter()
        .any(|event| event.reason.as_deref() == Some(reason))
}

/// A gleaner watching the namespaces of the scenario's clusters in the main installation.
pub async fn gleaner_for(
    world: &World,
    prefix: &str,
    scenario: &Scenario,
    extra: &[&str],
) -> Gleaner {
    let fleets: std::collections::BTreeSet<String> = scenario
        .cluster_keys()
        .filter(|key| key.installation == ClusterName::RANCHER)
        .map(|key| key.namespace.clone())
        .collect();
    let fleets: Vec<String> = fleets.into_iter().collect();
    Gleaner::start_with(world, prefix, prefix, &fleets.join(","), extra).await
}

/// The Footprints of the gleaner started as `prefix`.
pub async fn footprints(world: &World, prefix: &str) -> Api<Footprint> {
    Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        &format!("gleaner-{prefix}"),
    )
}

/// The status of the Footprint of `key`, empty until it exists.
pub async fn status_of(
    footprints: &Api<Footprint>,
    key: &gleaner_sim::scenario::ClusterKey,
) -> gleaner::footprint::FootprintStatus {
    footprints
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|footprint| {
            footprint.spec.identity.namespace == key.namespace
                && footprint.spec.identity.name == key.name
        })
        .and_then(|footprint| footprint.status)
        .unwrap_or_default()
}

/// The Footprint's condition `type_`, as `(status, reason)`.
pub async fn condition(
    footprints: &Api<Footprint>,
    uid: &str,
    type_: &str,
) -> Option<(String, String)> {
    footprints
        .get_opt(uid)
        .await
        .unwrap()
        .and_then(|footprint| footprint.status)
        .and_then(|status| {
            status
                .conditions
                .into_iter()
                .find(|condition| condition.type_ == type_)
        })
        .map(|condition| (condition.status, condition.reason))
}

/// The Footprint's phase, if it has one.
pub async fn phase(footprints: &Api<Footprint>, name: &str) -> Option<Phase> {
    footprints
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|footprint| footprint.status)
        .and_then(|status| status.phase)
}

/// Whether a Footprint's phase says its cluster's deletion is confirmed: `Reclaiming`, or
/// `Reclaimed` once the reclaimer is done.
pub fn deletion_confirmed(phase: Option<Phase>) -> bool {
    matches!(phase, Some(Phase::Reclaiming | Phase::Reclaimed))
}

/// Waits until the scenario's journal has an entry of `actor` containing `what`.
pub async fn until_journal(scenario: &Scenario, actor: &str, what: &str) {
    eventually(&format!("{actor}: {what}"), || async {
        scenario.journal().position(actor, what).is_some()
    })
    .await;
}

/// The requests an apiserver has served with one of `verbs`, by resource, from its own
/// `apiserver_request_total`.
pub async fn requests(client: &Client, verbs: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let mut served = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        if !verbs.contains(&label("verb").as_str()) {
            continue;
        }
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *served.entry(label("resource")).or_default() += count as u64;
    }
    served
}

/// The UIDs of the guest objects a cluster made (not its VMs' own disks).
pub fn made(scenario: &Scenario, key: &gleaner_sim::scenario::ClusterKey) -> BTreeSet<String> {
    scenario
        .made_by(key)
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect()
}

/// Waits until the Footprint of `key` records everything its cluster made.
pub async fn recorded_all(
    footprints: &Api<Footprint>,
    scenario: &Scenario,
    key: &gleaner_sim::scenario::ClusterKey,
) {
    let expected = made(scenario, key);
    eventually(
        &format!("{key:?}'s Footprint records what it made"),
        || async {
            let recorded: BTreeSet<String> = status_of(footprints, key)
                .await
                .records()
                .into_iter()
                .map(|record| record.uid)
                .collect();
            recorded == expected
        },
    )
    .await;
}

/// Nothing leaked, nothing wrongly deleted, in every class.
pub fn judged_clean(report: &gleaner_sim::scenario::Report) {
    for class in Class::ALL {
        let summary = report.class(class);
        assert_eq!(summary.wrongly_deleted, 0, "{class}:\n{report}");
        assert_eq!(summary.leaked, 0, "{class}:\n{report}");
    }
}

/// Waits until the Footprint of `key` is `Reclaimed`.
pub async fn until_reclaimed(footprints: &Api<Footprint>, key: &gleaner_sim::scenario::ClusterKey) {
    eventually(&format!("{key:?}'s Footprint is Reclaimed"), || async {
        status_of(footprints, key).await.phase == Some(Phase::Reclaimed)
    })
    .await;
}

/// The demo's clusters (as `configure` makes them) under a gleaner watching them, once `prod`'s
/// Footprint records everything it made and its Machines carry the hook.
pub async fn prod_recorded(
    world: &World,
    prefix: &str,
    configure: fn(gleaner_sim::scenario::ScenarioBuilder) -> gleaner_sim::scenario::ScenarioBuilder,
) -> (
    Scenario,
    Gleaner,
    Api<Footprint>,
    gleaner_sim::scenario::ClusterKey,
) {
    let scenario = configure(gleaner_sim::demo::clusters(
        prefix,
        gleaner_sim::Clock::new(TIME_SCALE),
    ))
    .start(world)
    .await
    .unwrap();
    let gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    let footprints = footprints(world, prefix).await;
    let prod = scenario.key("prod");
    recorded_all(&footprints, &scenario, &prod).await;
    wait_for_hooks(&scenario, "prod").await;
    (scenario, gleaner, footprints, prod)
}
