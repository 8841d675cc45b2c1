//! gleaner's management side in the world: the real binary, given the Rancher kubeconfig only,
//! against the simulated Rancher, Cluster API, node driver and Harvester.

mod common;

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;

use common::world;
use gleaner::footprint::{Footprint, Phase};
use gleaner_sim::{
    Clock, kinds,
    scenario::{Class, ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, World};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;

const HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/gleaner";
const INTENT: &str = "gleaner.io/intent";
const REMOVE_ALL: &str = "harvesterhci.io/removeAllPersistentVolumeClaims";
const TIME_SCALE: f64 = 0.05;
const DEADLINE: Duration = Duration::from_secs(60);

/// The real gleaner binary, killed when dropped; its log stays under the world's folder.
struct Gleaner {
    child: Child,
}

impl Gleaner {
    async fn start(world: &World, name: &str, watch: &str) -> Self {
        let client = world.client(ClusterName::RANCHER).await.unwrap();
        let namespace = format!("gleaner-{name}");
        create_namespace(&client, &namespace).await;
        let log =
            std::fs::File::create(world.dir().join("logs").join(format!("gleaner-{name}.log")))
                .unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        drop(admin);
        let child = Command::new(env!("CARGO_BIN_EXE_gleaner"))
            .args(["run", "--kubeconfig"])
            .arg(world.kubeconfig(ClusterName::RANCHER).unwrap())
            .args(["--namespace", &namespace, "--watch-namespace", watch])
            .args([
                "--lease-duration",
                "2s",
                "--admin-addr",
                &admin_addr.to_string(),
            ])
            .env("RUST_LOG", "info,gleaner=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }
}

impl Drop for Gleaner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(error) => panic!("cannot create namespace {name}: {error}"),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every Machine of the scenario's cluster carries gleaner's hook.
async fn wait_for_hooks(world: &World, scenario: &Scenario, cluster: &str) {
    let rancher = scenario.rancher_of(cluster).unwrap();
    let _ = world;
    eventually("gleaner hooks every Machine", || async {
        let machines = rancher.machines(cluster).await.unwrap();
        !machines.is_empty()
            && machines.iter().all(|machine| {
                machine.annotations().get(HOOK).map(String::as_str) == Some("gleaner")
            })
    })
    .await;
}

/// What each VM of the namespace carried when gleaner's intent first appeared, and the etcd
/// revision of that write. A watch delivers every change in order, so the first event with
/// the intent carries exactly the write's revision; all apiservers of a world share one etcd,
/// so revisions order writes across clusters.
#[derive(Clone, Default)]
struct IntentLog {
    seen: Arc<Mutex<HashMap<String, SeenIntent>>>,
}

/// The revision of the write, the intent, and the removeAll value beside it.
type SeenIntent = (u64, Value, Option<String>);

impl IntentLog {
    fn watch(harvester: Client, namespace: &str) -> (Self, tokio::task::JoinHandle<()>) {
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

    fn get(&self, vm: &str) -> Option<SeenIntent> {
        self.seen.lock().unwrap().get(vm).cloned()
    }
}

#[tokio::test]
async fn scale_down_writes_scale_down_and_false_and_lets_the_machine_go() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("g-scale")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let fleet = scenario.key("c1").namespace;
    let _gleaner = Gleaner::start(world, "scale", &fleet).await;
    wait_for_hooks(world, &scenario, "c1").await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let mut machines = scenario.cluster("c1").unwrap().machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let going = &machines[0];
    scenario
        .rancher_of("c1")
        .unwrap()
        .scale_down("c1", "pool1", &going.name)
        .await
        .unwrap();
    let gone = format!("VM {}/{} is gone", scenario.vm_namespace(), going.vm);
    eventually("the scaled-down VM is gone", || async {
        scenario.journal().position("node-driver", &gone).is_some()
    })
    .await;
    watcher.abort();
    let (_, intent, remove_all) = intents.get(&going.vm).expect("gleaner wrote an intent");
    assert_eq!(intent["reason"], "ScaleDown");
    assert_eq!(remove_all.as_deref(), Some("false"));
    assert!(
        intents.get(&machines[1].vm).is_none(),
        "the other VM is untouched"
    );
    // The guest volume outlives the scale-down.
    let report = scenario.measure(Duration::from_secs(2)).await.unwrap();
    let volume = report
        .objects
        .iter()
        .find(|object| object.name.starts_with("pvc-"))
        .unwrap();
    assert!(volume.exists_at_end, "{report}");
}

#[tokio::test]
async fn cluster_deletion_writes_the_intent_before_each_harvester_machine_goes() {
    let world = world().await;
    let mut scenario = ScenarioBuilder::new("g-delete")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 2)
                .volume(VolumePlan::new("data").hotplugged())
                .volume(VolumePlan::new("database").retain().hotplugged()),
        )
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let _gleaner = Gleaner::start(world, "delete", &key.namespace).await;
    wait_for_hooks(world, &scenario, "c1").await;
    let rancher_client = world.client(ClusterName::RANCHER).await.unwrap();
    let footprints: Api<Footprint> = Api::namespaced(rancher_client, "gleaner-delete");
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    eventually("gleaner made the cluster's Footprint", || async {
        footprints.get_opt(&uid).await.unwrap().is_some()
    })
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    scenario.delete_cluster(&key).await.unwrap();
    let report = scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let entries = scenario.journal().entries();
    for machine in &scenario.cluster("c1").unwrap().machines {
        let (written, intent, remove_all) =
            intents.get(&machine.vm).expect("an intent on every VM");
        assert_eq!(intent["reason"], "ClusterDeletion");
        assert_eq!(intent["footprint"], uid.as_str());
        assert_eq!(remove_all.as_deref(), Some("false"));
        let prefix = format!("deleted HarvesterMachine {} at revision ", machine.name);
        let deleted_at: u64 = entries
            .iter()
            .filter(|entry| entry.actor == "capi")
            .find_map(|entry| entry.what.strip_prefix(&prefix))
            .expect("CAPI deleted the HarvesterMachine")
            .parse()
            .unwrap();
        assert!(
            written < deleted_at,
            "intent written at revision {written}, HarvesterMachine deleted at {deleted_at}"
        );
        let driver = entries
            .iter()
            .find(|entry| {
                entry.actor == "node-driver"
                    && entry.what.contains(&format!("/{} (removeAll", machine.vm))
            })
            .expect("the driver removed the VM");
        assert!(driver.what.contains("removeAll=false"), "{}", driver.what);
    }
    eventually("the Footprint is Reclaiming", || async {
        footprints
            .get(&uid)
            .await
            .unwrap()
            .status
            .and_then(|status| status.phase)
            == Some(Phase::Reclaiming)
    })
    .await;
    // With gleaner in place upstream deletes only the VMs' own disks.
    assert_eq!(report.class(Class::VmDisk).reclaimed, 2, "{report}");
    assert_eq!(report.class(Class::Hotplugged).leaked, 1, "{report}");
    assert_eq!(report.class(Class::Retained).kept, 1, "{report}");
}
