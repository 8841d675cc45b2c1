//! Rancher, Cluster API and the node driver, against the real apiservers.

use std::time::Duration;

use gleaner_sim::{
    Clock, Env, Journal,
    keys::PRE_TERMINATE_HOOK_PREFIX,
    kinds,
    rancher::{GuestCluster, GuestClusterSpec, PoolSpec, Rancher, RancherSettings},
};
use gleaner_world::testing::eventually;
use gleaner_world::{ClusterName, World};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

const TIME_SCALE: f64 = 0.02;

struct Setup {
    rancher: Rancher,
    harvester: Client,
    vm_namespace: String,
    journal: Journal,
}

async fn setup(test: &str, settings: RancherSettings) -> Setup {
    let world = World::shared().await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vm_namespace = format!("vms-{test}");
    Api::<Namespace>::all(harvester.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(vm_namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let journal = Journal::default();
    let env = Env {
        clock: Clock::new(TIME_SCALE),
        journal: journal.clone(),
    };
    let rancher = Rancher::start(
        world,
        ClusterName::RANCHER,
        &format!("fleet-{test}"),
        settings,
        env,
    )
    .await
    .unwrap();
    Setup {
        rancher,
        harvester,
        vm_namespace,
        journal,
    }
}

impl Setup {
    /// A cluster with one pool, `pool1`, of `machines` Machines.
    async fn provision(&self, name: &str, machines: usize) -> gleaner_sim::Result<GuestCluster> {
        self.rancher
            .provision(&spec(
                name,
                &self.vm_namespace,
                vec![PoolSpec::new("pool1", machines)],
            ))
            .await
    }
}

fn spec(name: &str, vm_namespace: &str, pools: Vec<PoolSpec>) -> GuestClusterSpec {
    GuestClusterSpec {
        name: name.to_owned(),
        harvester: ClusterName::HARVESTER.to_owned(),
        vm_namespace: vm_namespace.to_owned(),
        guest: None,
        pools,
    }
}

fn vms(setup: &Setup) -> Api<DynamicObject> {
    kinds::namespaced(
        &setup.harvester,
        &setup.vm_namespace,
        &kinds::virtual_machine(),
    )
}

#[tokio::test]
async fn provisioning_creates_labelled_vms_named_by_the_driver_rule() {
    let setup = setup("provision", RancherSettings::default()).await;
    // Machine names are label values, so at most 63 characters: only the dots change.
    let dotted = "c1.eu-west.example-pool1-7d9f8c6b5x-abcde";
    let mut pool = PoolSpec::new("pool1", 2);
    pool.machine_names = vec![dotted.to_owned()];
    let cluster = setup
        .rancher
        .provision(&spec("c1", &setup.vm_namespace, vec![pool]))
        .await
        .unwrap();
    assert_eq!(cluster.machines.len(), 2);
    let dotted_machines = cluster.machines_named_after(dotted);
    assert!(!dotted_machines.is_empty(), "{:?}", cluster.machines);
    for machine in dotted_machines {
        assert_eq!(machine.vm, machine.name.replace('.', "-"));
        assert!(
            machine
                .vm
                .starts_with("c1-eu-west-example-pool1-7d9f8c6b5x-")
        );
    }
    for vm_name in cluster.machines.iter().map(|machine| &machine.vm) {
        let vm = vms(&setup).get(vm_name).await.unwrap();
        let labels = vm.metadata.labels.unwrap();
        assert_eq!(
            labels["harvesterhci.io/creator"],
            "docker-machine-driver-harvester"
        );
        assert_eq!(labels["guestcluster.harvesterhci.io/name"], "c1");
        assert!(
            vm.metadata.annotations.unwrap()["harvesterhci.io/volumeClaimTemplates"]
                .contains(&format!("{vm_name}-disk-0-"))
        );
    }
    assert_eq!(setup.rancher.install_uuid().len(), 36);
}

#[tokio::test]
async fn scale_down_removes_one_vm_and_the_handler_leaves_it_alone() {
    let setup = setup("scale-down", RancherSettings::default()).await;
    let cluster = setup.provision("c1", 2).await.unwrap();
    let (machine, vm_name) = (&cluster.machines[0].name, &cluster.machines[0].vm);
    setup
        .rancher
        .scale_down("c1", "pool1", machine)
        .await
        .unwrap();
    eventually("the scaled-down VM is gone", || async {
        vms(&setup).get_opt(vm_name).await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        vms(&setup)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(setup.journal.position("cleanup-handler", "removeAll"), None);
    let marked = setup
        .journal
        .entries()
        .into_iter()
        .find(|entry| entry.actor == "node-driver" && entry.what.contains("marked VM"))
        .unwrap();
    assert!(marked.what.contains("removeAll=false"), "{}", marked.what);
}

#[tokio::test]
async fn reprovisioning_replaces_the_machine_and_its_vm() {
    let setup = setup("reprovision", RancherSettings::default()).await;
    let cluster = setup.provision("c1", 1).await.unwrap();
    let (machine, vm_name) = (&cluster.machines[0].name, &cluster.machines[0].vm);
    setup.rancher.reprovision(machine).await.unwrap();
    eventually("the old VM is gone and a new one runs", || async {
        let names: Vec<String> = vms(&setup)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|vm| vm.metadata.name)
            .collect();
        names.len() == 1 && &names[0] != vm_name
    })
    .await;
}

#[tokio::test]
async fn a_pre_terminate_hook_holds_the_vm_until_it_is_removed() {
    let setup = setup("hook", RancherSettings::default()).await;
    let cluster = setup.provision("c1", 1).await.unwrap();
    let (machine, vm_name) = (&cluster.machines[0].name, &cluster.machines[0].vm);
    let hook = format!("{PRE_TERMINATE_HOOK_PREFIX}test");
    let machines = machines(&setup).await;
    let annotate = json!({"metadata": {"annotations": {&hook: "test"}}});
    machines
        .patch(machine, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    setup.rancher.delete_cluster("c1").await.unwrap();
    eventually("the Machine waits on the hook", || async {
        setup.journal.position("capi", "waits on hooks").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(vms(&setup).get_opt(vm_name).await.unwrap().is_some());
    let release = json!({"metadata": {"annotations": {&hook: null}}});
    machines
        .patch(machine, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    eventually("the VM goes once the hook is removed", || async {
        vms(&setup).get_opt(vm_name).await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn cluster_deletion_lets_the_handler_mark_every_vm_before_the_driver_reads_it() {
    // The clock shrinks the remove job's realistic delay to a few hundred milliseconds while the
    // handler's requests take real time: a minute of it keeps the job behind, as at real speed.
    let settings = RancherSettings {
        remove_job_delay: Duration::from_secs(60),
        ..RancherSettings::default()
    };
    let setup = setup("delete", settings).await;
    let cluster = setup.provision("c1", 2).await.unwrap();
    setup.rancher.delete_cluster("c1").await.unwrap();
    let clusters = kinds::namespaced(
        setup.rancher.client(),
        setup.rancher.namespace(),
        &kinds::provisioning_cluster(),
    );
    eventually("the provisioning Cluster is gone", || async {
        clusters.get_opt("c1").await.unwrap().is_none()
    })
    .await;
    for vm_name in cluster.machines.iter().map(|machine| &machine.vm) {
        assert!(vms(&setup).get_opt(vm_name).await.unwrap().is_none());
        let marked = setup
            .journal
            .position(
                "cleanup-handler",
                &format!("removeAll=true on VM {}/{vm_name}", setup.vm_namespace),
            )
            .unwrap();
        let read = setup
            .journal
            .position(
                "node-driver",
                &format!(
                    "marked VM {}/{vm_name} (removeAll=true)",
                    setup.vm_namespace
                ),
            )
            .unwrap();
        assert!(marked < read);
    }
}

#[tokio::test]
async fn with_no_remove_job_delay_the_handler_loses_the_race() {
    let settings = RancherSettings {
        remove_job_delay: Duration::ZERO,
        handler_latency: Duration::from_secs(30),
        ..RancherSettings::default()
    };
    let setup = setup("race", settings).await;
    setup.provision("c1", 1).await.unwrap();
    setup.rancher.delete_cluster("c1").await.unwrap();
    eventually("the driver has read the VM", || async {
        setup.journal.position("node-driver", "marked VM").is_some()
    })
    .await;
    let marked = setup
        .journal
        .entries()
        .into_iter()
        .find(|entry| entry.actor == "node-driver" && entry.what.contains("marked VM"))
        .unwrap();
    assert!(marked.what.contains("removeAll=false"), "{}", marked.what);
}

#[tokio::test]
async fn a_paused_cluster_holds_its_deleting_machines_until_resumed() {
    let setup = setup("pause", RancherSettings::default()).await;
    let cluster = setup.provision("c1", 1).await.unwrap();
    let vm_name = &cluster.machines[0].vm;
    setup.rancher.set_paused("c1", true).await.unwrap();
    setup
        .rancher
        .reprovision(&cluster.machines[0].name)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(vms(&setup).get_opt(vm_name).await.unwrap().is_some());
    assert_eq!(
        setup.journal.position("capi", "deleted HarvesterMachine"),
        None
    );
    // The real manager resumes too: unpausing changes the MachineSet's `Paused` condition, and
    // a MachineSet's change wakes its Machines.
    setup.rancher.set_paused("c1", false).await.unwrap();
    eventually("the VM goes once the cluster is resumed", || async {
        vms(&setup).get_opt(vm_name).await.unwrap().is_none()
    })
    .await;
}

async fn machines(setup: &Setup) -> Api<DynamicObject> {
    kinds::namespaced(
        setup.rancher.client(),
        setup.rancher.namespace(),
        &kinds::Capi {
            version: World::shared().await.capi_version(),
        }
        .machine(),
    )
}

#[tokio::test]
async fn every_machine_has_its_machine_state_secret() {
    let setup = setup("state", RancherSettings::default()).await;
    let cluster = setup.provision("c1", 1).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(setup.rancher.client().clone(), setup.rancher.namespace());
    let name = format!("{}-machine-state", cluster.machines[0].name);
    let secret = secrets.get(&name).await.unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].kind,
        "HarvesterMachine"
    );
}

#[tokio::test]
async fn an_invalid_cluster_name_is_refused_by_the_schema_with_a_clear_error() {
    let setup = setup("invalid", RancherSettings::default()).await;
    let error = setup
        .provision("Not_A_Name", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("Not_A_Name"), "{error}");
    assert!(
        error.contains("422") || error.contains("Invalid"),
        "{error}"
    );
}
