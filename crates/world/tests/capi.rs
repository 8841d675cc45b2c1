//! Cluster API's contract that gleaner builds on (design.md §4), checked against the real core
//! manager (`Player::Real`): a pre-terminate hook holds a Machine's infrastructure, a
//! paused Machine or Cluster freezes its deletion, and a deleting Cluster deletes its Machines and
//! waits for them. The simulators' Cluster API (crates/sim) must behave the same.

use std::time::Duration;

use gleaner_world::{ClusterName, Player, World, testing::eventually};
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

async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            World::builder()
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

fn clusters() -> ApiResource {
    resource("cluster.x-k8s.io", "v1beta1", "Cluster")
}

fn machines() -> ApiResource {
    resource("cluster.x-k8s.io", "v1beta1", "Machine")
}

fn harvester_machines() -> ApiResource {
    resource("rke-machine.cattle.io", "v1", "HarvesterMachine")
}

/// One namespace's Cluster with one Machine whose infrastructure is a HarvesterMachine, as
/// Rancher lays them out; ready once the manager has taken the Machine (its finalizer) and
/// owns the HarvesterMachine.
struct Layout {
    cluster: Api<DynamicObject>,
    machine: Api<DynamicObject>,
    infrastructure: Api<DynamicObject>,
}

impl Layout {
    async fn new(namespace: &str, machine_annotations: Value) -> Self {
        let world = world().await;
        let client = world.client(ClusterName::RANCHER).await.unwrap();
        gleaner_world::testing::ensure_namespace(&client, namespace)
            .await
            .unwrap();
        let layout = Self::apis(&client, namespace);
        create(
            &layout.cluster,
            json!({"metadata": {"name": "c1"}, "spec": {}}),
            &clusters(),
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
                    "infrastructureRef": {
                        "apiVersion": "rke-machine.cattle.io/v1",
                        "kind": "HarvesterMachine",
                        "name": "c1-pool1-m1",
                        "namespace": namespace,
                    },
                },
            }),
            &machines(),
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

    fn apis(client: &Client, namespace: &str) -> Self {
        let api =
            |resource: &ApiResource| Api::namespaced_with(client.clone(), namespace, resource);
        Self {
            cluster: api(&clusters()),
            machine: api(&machines()),
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

    async fn condition(&self, type_: &str) -> Option<Value> {
        let machine = self.machine.get("m1").await.unwrap();
        machine.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|condition| condition["type"] == type_)
            .cloned()
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

#[tokio::test]
async fn a_pre_terminate_hook_holds_the_infrastructure_of_a_deleting_machine_until_removed() {
    let layout = Layout::new("capi-hook", json!({HOOK: "gleaner"})).await;
    layout
        .machine
        .delete("m1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the manager says it waits for the hook", || async {
        layout
            .condition("PreTerminateDeleteHookSucceeded")
            .await
            .is_some_and(|condition| {
                condition["status"] == "False" && condition["reason"] == "WaitingExternalHook"
            })
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

#[tokio::test]
async fn a_paused_machine_freezes_its_deletion_until_unpaused() {
    let layout = Layout::new("capi-paused-machine", json!({})).await;
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

#[tokio::test]
async fn a_paused_cluster_freezes_its_machines_deletion_until_unpaused_and_the_machine_changes() {
    let layout = Layout::new("capi-paused-cluster", json!({})).await;
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
        cluster.data["status"]["v1beta2"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
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

#[tokio::test]
async fn a_deleting_cluster_deletes_its_machines_and_waits_for_their_hooks() {
    let layout = Layout::new("capi-cluster-deletion", json!({HOOK: "gleaner"})).await;
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
