//! Cluster API's contract that gleaner builds on (design.md §4), checked against the real core
//! manager (`Player::Real`): a pre-terminate hook holds a Machine's infrastructure, a
//! paused Machine or Cluster freezes its deletion, and a deleting Cluster deletes its Machines and
//! waits for them. The simulators' Cluster API (crates/sim) must behave the same. Each test runs
//! against both managers: the `v1beta1` one (Rancher 2.12/2.13) and the `v1beta2` one (2.14).

use std::time::Duration;

use gleaner_world::{CapiVersion, ClusterName, Player, World, testing::eventually};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/gleaner";
const PAUSED: &str = "cluster.x-k8s.io/paused";
const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
/// Long enough for the manager to have acted on a deletion it was free to carry out: it
/// reconciles a changed Machine within a second.
const SETTLE: Duration = Duration::from_secs(4);

/// Runs the named contract test against each manager, as `<test>::v1beta1` and `<test>::v1beta2`.
macro_rules! against_both_managers {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn v1beta1() {
                super::$test(gleaner_world::CapiVersion::V1beta1).await;
            }

            #[tokio::test]
            async fn v1beta2() {
                super::$test(gleaner_world::CapiVersion::V1beta2).await;
            }
        }
    )*};
}

against_both_managers!(
    a_pre_terminate_hook_holds_the_infrastructure_of_a_deleting_machine_until_removed,
    a_paused_machine_freezes_its_deletion_until_unpaused,
    a_paused_cluster_freezes_its_machines_deletion_until_unpaused_and_the_machine_changes,
    a_deleting_cluster_deletes_its_machines_and_waits_for_their_hooks,
);

async fn world(capi: CapiVersion) -> &'static World {
    static V1BETA1: OnceCell<World> = OnceCell::const_new();
    static V1BETA2: OnceCell<World> = OnceCell::const_new();
    let cell = match capi {
        CapiVersion::V1beta1 => &V1BETA1,
        CapiVersion::V1beta2 => &V1BETA2,
    };
    cell.get_or_init(|| async move {
        World::builder()
            .capi(capi)
            .capi_controllers(Player::Real)
            .start()
            .await
            .expect("a world with the real Cluster API manager starts")
    })
    .await
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn version(capi: CapiVersion) -> &'static str {
    match capi {
        CapiVersion::V1beta1 => "v1beta1",
        CapiVersion::V1beta2 => "v1beta2",
    }
}

fn clusters(capi: CapiVersion) -> ApiResource {
    resource("cluster.x-k8s.io", version(capi), "Cluster")
}

fn machines(capi: CapiVersion) -> ApiResource {
    resource("cluster.x-k8s.io", version(capi), "Machine")
}

fn rke_clusters() -> ApiResource {
    resource("rke.cattle.io", "v1", "RKECluster")
}

/// A reference to a provider's object: by apiVersion and namespace in v1beta1, by apiGroup alone
/// (the referrer's namespace) in v1beta2.
fn reference(capi: CapiVersion, group: &str, kind: &str, name: &str, namespace: &str) -> Value {
    match capi {
        CapiVersion::V1beta1 => json!({
            "apiVersion": format!("{group}/v1"),
            "kind": kind,
            "name": name,
            "namespace": namespace,
        }),
        CapiVersion::V1beta2 => json!({"apiGroup": group, "kind": kind, "name": name}),
    }
}

/// The conditions the manager writes in the version's own form: v1beta1 objects carry the
/// v1beta2 ones under `status.v1beta2`.
fn conditions(object: &DynamicObject, capi: CapiVersion) -> Vec<Value> {
    let status = &object.data["status"];
    let conditions = match capi {
        CapiVersion::V1beta1 => &status["v1beta2"]["conditions"],
        CapiVersion::V1beta2 => &status["conditions"],
    };
    conditions.as_array().cloned().unwrap_or_default()
}

fn harvester_machines() -> ApiResource {
    resource("rke-machine.cattle.io", "v1", "HarvesterMachine")
}

/// One namespace's Cluster with one Machine whose infrastructure is a HarvesterMachine, as
/// Rancher lays them out; ready once the manager has taken the Machine (its finalizer) and
/// owns the HarvesterMachine.
struct Layout {
    capi: CapiVersion,
    cluster: Api<DynamicObject>,
    machine: Api<DynamicObject>,
    infrastructure: Api<DynamicObject>,
}

impl Layout {
    async fn new(capi: CapiVersion, namespace: &str, machine_annotations: Value) -> Self {
        let world = world(capi).await;
        let client = world.client(ClusterName::RANCHER).await.unwrap();
        gleaner_world::testing::ensure_namespace(&client, namespace)
            .await
            .unwrap();
        let layout = Self::apis(capi, &client, namespace);
        // The v1beta2 webhook wants a Cluster to reference something: its RKECluster, ready.
        let infrastructure_cluster =
            Api::namespaced_with(client.clone(), namespace, &rke_clusters());
        create(
            &infrastructure_cluster,
            json!({"metadata": {"name": "c1"}, "spec": {}}),
            &rke_clusters(),
        )
        .await;
        let ready = json!({"status": {"ready": true, "initialization": {"provisioned": true}}});
        infrastructure_cluster
            .patch_status("c1", &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .unwrap();
        create(
            &layout.cluster,
            json!({
                "metadata": {"name": "c1"},
                "spec": {"infrastructureRef": reference(capi, "rke.cattle.io", "RKECluster", "c1", namespace)},
            }),
            &clusters(capi),
        )
        .await;
        create(
            &layout.infrastructure,
            json!({"metadata": {"name": "c1-pool1-m1"}, "spec": {"vmNamespace": "default"}}),
            &harvester_machines(),
        )
        .await;
        create(
            &layout.machine,
            json!({
                "metadata": {"name": "m1", "annotations": machine_annotations},
                "spec": {
                    "clusterName": "c1",
                    "bootstrap": {"dataSecretName": "m1-bootstrap"},
                    "infrastructureRef": reference(capi, "rke-machine.cattle.io", "HarvesterMachine", "c1-pool1-m1", namespace),
                },
            }),
            &machines(capi),
        )
        .await;
        eventually(
            "the manager takes the Machine and owns its infrastructure",
            || async {
                let machine = layout.machine.get("m1").await.unwrap();
                let infrastructure = layout.infrastructure.get("c1-pool1-m1").await.unwrap();
                machine.finalizers().iter().any(|f| f == MACHINE_FINALIZER)
                    && infrastructure
                        .owner_references()
                        .iter()
                        .any(|owner| owner.kind == "Machine" && owner.name == "m1")
            },
        )
        .await;
        layout
    }

    fn apis(capi: CapiVersion, client: &Client, namespace: &str) -> Self {
        let api =
            |resource: &ApiResource| Api::namespaced_with(client.clone(), namespace, resource);
        Self {
            capi,
            cluster: api(&clusters(capi)),
            machine: api(&machines(capi)),
            infrastructure: api(&harvester_machines()),
        }
    }

    async fn infrastructure_untouched(&self) -> bool {
        self.infrastructure
            .get_opt("c1-pool1-m1")
            .await
            .unwrap()
            .is_some_and(|found| found.metadata.deletion_timestamp.is_none())
    }

    async fn all_gone(&self) -> bool {
        self.machine.get_opt("m1").await.unwrap().is_none()
            && self
                .infrastructure
                .get_opt("c1-pool1-m1")
                .await
                .unwrap()
                .is_none()
    }

    async fn annotate(&self, api: &Api<DynamicObject>, name: &str, key: &str, value: Value) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Whether the manager says the deleting Machine waits for a pre-terminate hook.
    async fn waits_for_hook(&self) -> bool {
        let machine = self.machine.get("m1").await.unwrap();
        match self.capi {
            CapiVersion::V1beta1 => machine.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|condition| {
                    condition["type"] == "PreTerminateDeleteHookSucceeded"
                        && condition["status"] == "False"
                        && condition["reason"] == "WaitingExternalHook"
                }),
            CapiVersion::V1beta2 => conditions(&machine, self.capi).iter().any(|condition| {
                condition["type"] == "Deleting"
                    && condition["status"] == "True"
                    && condition["reason"] == "WaitingForPreTerminateHook"
            }),
        }
    }
}

async fn create(api: &Api<DynamicObject>, object: Value, resource: &ApiResource) {
    let mut object: DynamicObject = serde_json::from_value(object).unwrap();
    object.types = Some(kube::api::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    api.create(&Default::default(), &object).await.unwrap();
}

async fn a_pre_terminate_hook_holds_the_infrastructure_of_a_deleting_machine_until_removed(
    capi: CapiVersion,
) {
    let layout = Layout::new(capi, "capi-hook", json!({HOOK: "gleaner"})).await;
    layout
        .machine
        .delete("m1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the manager says it waits for the hook", || {
        layout.waits_for_hook()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert!(layout.infrastructure_untouched().await);

    layout
        .annotate(&layout.machine, "m1", HOOK, Value::Null)
        .await;
    eventually(
        "without the hook the infrastructure and the Machine go",
        || layout.all_gone(),
    )
    .await;
}

async fn a_paused_machine_freezes_its_deletion_until_unpaused(capi: CapiVersion) {
    let layout = Layout::new(capi, "capi-paused-machine", json!({})).await;
    layout
        .annotate(&layout.machine, "m1", PAUSED, json!(""))
        .await;
    layout
        .machine
        .delete("m1", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    assert!(layout.infrastructure_untouched().await);
    assert!(layout.machine.get_opt("m1").await.unwrap().is_some());

    layout
        .annotate(&layout.machine, "m1", PAUSED, Value::Null)
        .await;
    eventually("unpaused, the deletion goes on", || layout.all_gone()).await;
}

async fn a_paused_cluster_freezes_its_machines_deletion_until_unpaused_and_the_machine_changes(
    capi: CapiVersion,
) {
    let layout = Layout::new(capi, "capi-paused-cluster", json!({})).await;
    let patch = json!({"spec": {"paused": true}});
    layout
        .cluster
        .patch("c1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // Until the manager has seen the pause, its Machine controller may act on a deletion as if
    // there were none.
    eventually("the manager says the Cluster is paused", || async {
        let cluster = layout.cluster.get("c1").await.unwrap();
        conditions(&cluster, capi)
            .iter()
            .any(|condition| condition["type"] == "Paused" && condition["status"] == "True")
    })
    .await;
    layout
        .machine
        .delete("m1", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    assert!(layout.infrastructure_untouched().await);

    // Unpausing the Cluster does not itself wake its Machines: the Machine controller maps
    // Cluster changes to Machines only when the control plane becomes initialized. A Machine is
    // woken by its own change, its MachineSet's (whose `Paused` condition the unpause changes:
    // how Rancher's Machines resume, crates/sim/tests/rancher.rs), a failed probe of the
    // workload cluster, or the resync (`--sync-period`, 10 minutes). This bare Machine has only
    // its own change to wait for.
    let patch = json!({"spec": {"paused": false}});
    layout
        .cluster
        .patch("c1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    layout
        .annotate(&layout.machine, "m1", "example.com/touched", json!("yes"))
        .await;
    eventually("a change of the Machine resumes its deletion", || {
        layout.all_gone()
    })
    .await;
}

async fn a_deleting_cluster_deletes_its_machines_and_waits_for_their_hooks(capi: CapiVersion) {
    let layout = Layout::new(capi, "capi-cluster-deletion", json!({HOOK: "gleaner"})).await;
    layout
        .cluster
        .delete("c1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Cluster's deletion deletes its Machine", || async {
        layout
            .machine
            .get("m1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert!(layout.infrastructure_untouched().await);
    assert!(
        layout.cluster.get_opt("c1").await.unwrap().is_some(),
        "the Cluster waits for its Machines"
    );

    layout
        .annotate(&layout.machine, "m1", HOOK, Value::Null)
        .await;
    eventually(
        "without the hook everything goes, the Cluster last",
        || async {
            layout.all_gone().await && layout.cluster.get_opt("c1").await.unwrap().is_none()
        },
    )
    .await;
}
