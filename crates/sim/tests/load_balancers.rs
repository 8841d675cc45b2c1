//! The guest cloud provider and Harvester's load-balancer controllers against the real
//! harvester and guest apiservers of the shared world.

use gleaner_sim::{
    Clock, Env, Journal,
    cloud_provider::{CLOUD_PROVIDER, CloudProvider, GuestLoadBalancer, load_balancer_name},
    harvester::{
        Harvester, HarvesterVersion,
        load_balancer::{self, LB_CONTROLLER, LB_VM_CONTROLLER},
    },
    keys::{
        CREATOR_DRIVER, FINALIZER_KUBEVIRT_VM, FINALIZER_LB_CONTROLLER, FINALIZER_LB_VM_CONTROLLER,
        FINALIZER_SERVICE_LB_CLEANUP, FINALIZER_VM_CLEANUP, LABEL_CREATOR, LABEL_GUEST_CLUSTER,
        LABEL_LB_CLUSTER, LB_SERVICE_UUID, REMOVE_ALL_PVCS,
    },
    kinds::{load_balancer as load_balancer_kind, namespaced, virtual_machine},
    tasks::Tasks,
};
use gleaner_world::testing::{ensure_namespace, eventually};
use gleaner_world::{ClusterName, World};
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, PostParams},
};
use serde_json::{Value, json};

const HARVESTER: &str = ClusterName::HARVESTER;
const GUEST: &str = "guest-1";

/// One test's Harvester namespace (also its guest namespace) with Harvester and its
/// load-balancer controllers serving it.
struct Site {
    harvester_client: Client,
    guest_client: Client,
    namespace: String,
    env: Env,
    harvester: Harvester,
    _load_balancers: Tasks,
}

impl Site {
    async fn start(namespace: &str) -> Self {
        let world = World::shared().await;
        let harvester_client = world.client(HARVESTER).await.unwrap();
        let guest_client = world.client(GUEST).await.unwrap();
        ensure_namespace(&harvester_client, namespace)
            .await
            .unwrap();
        ensure_namespace(&guest_client, namespace).await.unwrap();
        let env = Env {
            clock: Clock::new(0.01),
            journal: Journal::default(),
        };
        let harvester = Harvester::start(world, HARVESTER, namespace, HarvesterVersion::V1_8, &env)
            .await
            .unwrap();
        let mut load_balancers = Tasks::default();
        load_balancer::spawn(
            harvester_client.clone(),
            namespace,
            env.clone(),
            &mut load_balancers,
        );
        Self {
            harvester_client,
            guest_client,
            namespace: namespace.to_owned(),
            env,
            harvester,
            _load_balancers: load_balancers,
        }
    }

    /// The cloud provider of a guest cluster Rancher names `cluster`, whose Services live in
    /// guest namespaces the tests choose.
    fn cloud_provider(&self, cluster: &str) -> CloudProvider {
        CloudProvider::new(
            self.guest_client.clone(),
            self.harvester_client.clone(),
            &self.namespace,
            cluster,
            self.env.clone(),
        )
    }

    fn journal(&self) -> &Journal {
        &self.env.journal
    }

    fn load_balancers(&self) -> Api<DynamicObject> {
        namespaced(
            &self.harvester_client,
            &self.namespace,
            &load_balancer_kind(),
        )
    }

    fn vms(&self) -> Api<DynamicObject> {
        namespaced(&self.harvester_client, &self.namespace, &virtual_machine())
    }

    fn services(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.guest_client.clone(), namespace)
    }

    fn guest_namespace(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.namespace)
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    /// A load balancer of `cluster` for a Service in the guest namespace
    /// `<site namespace>-<suffix>`.
    async fn guest_load_balancer(
        &self,
        cluster: &str,
        suffix: &str,
        service: &str,
    ) -> GuestLoadBalancer {
        let guest_namespace = self.guest_namespace(suffix);
        ensure_namespace(&self.guest_client, &guest_namespace)
            .await
            .unwrap();
        self.cloud_provider(cluster)
            .create_load_balancer(&guest_namespace, service)
            .await
            .unwrap()
    }

    /// A LoadBalancer made by hand for a VM workload, labelled as `cluster`'s.
    async fn vm_workload_load_balancer(&self, name: &str, cluster: &str) {
        let lb: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "loadbalancer.harvesterhci.io/v1beta1",
            "kind": "LoadBalancer",
            "metadata": {"name": name, "labels": {LABEL_LB_CLUSTER: cluster}},
            "spec": {"ipam": "pool", "workloadType": "vm"},
        }))
        .unwrap();
        self.load_balancers()
            .create(&PostParams::default(), &lb)
            .await
            .unwrap();
    }

    /// Creates a VM, waits until every Harvester controller holds it, then deletes it and
    /// waits until it is gone.
    async fn remove_vm(&self, vm: DynamicObject) {
        let vms = self.vms();
        let name = vm.name_any();
        vms.create(&PostParams::default(), &vm).await.unwrap();
        let holders = [
            FINALIZER_VM_CLEANUP,
            FINALIZER_KUBEVIRT_VM,
            FINALIZER_LB_VM_CONTROLLER,
        ];
        eventually(&format!("VM {name} is held by Harvester"), || async {
            let finalizers = vms.get(&name).await.unwrap().finalizers().to_vec();
            holders
                .iter()
                .all(|expected| finalizers.iter().any(|present| present == expected))
        })
        .await;
        vms.delete(&name, &DeleteParams::default()).await.unwrap();
        eventually(&format!("VM {name} is gone"), || async {
            vms.get_opt(&name).await.unwrap().is_none()
        })
        .await;
    }

    async fn wait_until_held(&self, lb: &GuestLoadBalancer) {
        let lbs = self.load_balancers();
        eventually(
            "the LoadBalancer controller holds the LoadBalancer",
            || async {
                lbs.get(&lb.load_balancer.name)
                    .await
                    .unwrap()
                    .finalizers()
                    .iter()
                    .any(|finalizer| finalizer == FINALIZER_LB_CONTROLLER)
            },
        )
        .await;
    }

    async fn wait_until_gone(&self, lb: &GuestLoadBalancer) {
        let lbs = self.load_balancers();
        eventually(
            &format!("LoadBalancer {} is gone", lb.load_balancer.name),
            || async { lbs.get_opt(&lb.load_balancer.name).await.unwrap().is_none() },
        )
        .await;
    }

    async fn assert_live(&self, name: &str) {
        let lb = self.load_balancers().get(name).await.unwrap();
        assert!(
            lb.metadata.deletion_timestamp.is_none(),
            "LoadBalancer {name} is not deleted: {:#?}",
            self.journal().entries()
        );
    }

    async fn shutdown(self) {
        self.harvester.shutdown().await.unwrap();
    }
}

/// A guest-node VM the KubeVirt schema accepts, with the given labels and annotations.
fn vm(name: &str, labels: Value, annotations: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "runStrategy": "RerunOnFailure",
            "template": {
                "metadata": {"labels": {"harvesterhci.io/vmName": name}},
                "spec": {
                    "domain": {"devices": {}, "resources": {"requests": {"memory": "1Gi"}}},
                    "volumes": [],
                },
            },
        },
    }))
    .unwrap()
}

/// A VM the node driver made for `cluster`, with these annotations.
fn driver_vm(name: &str, cluster: &str, annotations: Value) -> DynamicObject {
    vm(
        name,
        json!({LABEL_CREATOR: CREATOR_DRIVER, LABEL_GUEST_CLUSTER: cluster}),
        annotations,
    )
}

#[tokio::test]
async fn a_guest_load_balancer_service_makes_a_harvester_load_balancer_that_goes_with_it() {
    let site = Site::start("lb-sim-lifecycle").await;
    let lb = site.guest_load_balancer("alpha", "alpha", "web").await;

    let guest_namespace = site.guest_namespace("alpha");
    let service = site.services(&guest_namespace).get("web").await.unwrap();
    assert_eq!(service.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
    assert!(
        service
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER_SERVICE_LB_CLEANUP.to_owned())
    );
    assert_eq!(
        lb.load_balancer.name,
        load_balancer_name("alpha", &guest_namespace, "web", &lb.service.uid)
    );
    let object = site
        .load_balancers()
        .get(&lb.load_balancer.name)
        .await
        .unwrap();
    assert_eq!(object.uid().as_deref(), Some(lb.load_balancer.uid.as_str()));
    assert_eq!(object.labels()[LABEL_LB_CLUSTER], "alpha");
    assert_eq!(object.annotations()[LB_SERVICE_UUID], lb.service.uid);
    assert_eq!(object.data["spec"]["workloadType"], "cluster");
    assert_eq!(object.data["spec"]["ipam"], "pool");
    site.wait_until_held(&lb).await;

    site.cloud_provider("alpha")
        .delete_load_balancer(&lb)
        .await
        .unwrap();
    site.wait_until_gone(&lb).await;
    assert!(
        site.services(&guest_namespace)
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
    );
    let journal = site.journal();
    let deleted = journal.position(CLOUD_PROVIDER, "deleting LoadBalancer");
    let released = journal.position(
        LB_CONTROLLER,
        &format!(
            "removed finalizer {FINALIZER_LB_CONTROLLER} from LoadBalancer {}",
            site.path(&lb.load_balancer.name)
        ),
    );
    assert!(
        deleted.is_some() && released.is_some() && deleted < released,
        "{:#?}",
        journal.entries()
    );
    site.shutdown().await;
}

#[tokio::test]
async fn removing_a_driver_vm_with_remove_all_true_deletes_every_same_named_clusters_load_balancers()
 {
    let site = Site::start("lb-sim-vm-removal").await;
    let own = site.guest_load_balancer("alpha", "alpha", "web").await;
    // Another Rancher's (or namespace's) cluster also called alpha, on the same Harvester
    // namespace: the bare name cannot tell them apart.
    let twin = site.guest_load_balancer("alpha", "twin", "web").await;
    let other = site.guest_load_balancer("beta", "beta", "web").await;
    site.vm_workload_load_balancer("alpha-vm-workload", "alpha")
        .await;
    for lb in [&own, &twin, &other] {
        site.wait_until_held(lb).await;
    }

    site.remove_vm(driver_vm(
        "alpha-pool1-abcde",
        "alpha",
        json!({REMOVE_ALL_PVCS: "true"}),
    ))
    .await;

    site.wait_until_gone(&own).await;
    site.wait_until_gone(&twin).await;
    site.assert_live(&other.load_balancer.name).await;
    site.assert_live("alpha-vm-workload").await;
    let journal = site.journal();
    for gone in [&own, &twin] {
        let deleted = journal.position(
            LB_VM_CONTROLLER,
            &format!(
                "deleted LoadBalancer {} of guest cluster alpha",
                site.path(&gone.load_balancer.name)
            ),
        );
        let released = journal.position(
            LB_VM_CONTROLLER,
            &format!(
                "removed finalizer {FINALIZER_LB_VM_CONTROLLER} from VM {}",
                site.path("alpha-pool1-abcde")
            ),
        );
        assert!(
            deleted.is_some() && deleted < released,
            "{:#?}",
            journal.entries()
        );
    }
    site.shutdown().await;
}

#[tokio::test]
async fn removing_a_driver_vm_without_remove_all_exactly_true_deletes_nothing() {
    let site = Site::start("lb-sim-vm-keep").await;
    let lb = site.guest_load_balancer("alpha", "alpha", "web").await;
    site.wait_until_held(&lb).await;

    for (name, annotations) in [
        ("alpha-absent", json!({})),
        ("alpha-false", json!({REMOVE_ALL_PVCS: "false"})),
        ("alpha-capital", json!({REMOVE_ALL_PVCS: "True"})),
    ] {
        site.remove_vm(driver_vm(name, "alpha", annotations)).await;
        assert!(
            site.journal()
                .position(
                    LB_VM_CONTROLLER,
                    &format!(
                        "removed finalizer {FINALIZER_LB_VM_CONTROLLER} from VM {}",
                        site.path(name)
                    ),
                )
                .is_some(),
            "the VM controller handled {name}: {:#?}",
            site.journal().entries()
        );
    }
    site.assert_live(&lb.load_balancer.name).await;
    site.shutdown().await;
}

#[tokio::test]
async fn removing_a_vm_the_driver_did_not_make_deletes_nothing() {
    let site = Site::start("lb-sim-vm-foreign").await;
    let lb = site.guest_load_balancer("alpha", "alpha", "web").await;
    site.wait_until_held(&lb).await;

    site.remove_vm(vm(
        "alpha-handmade",
        json!({LABEL_GUEST_CLUSTER: "alpha"}),
        json!({REMOVE_ALL_PVCS: "true"}),
    ))
    .await;

    site.assert_live(&lb.load_balancer.name).await;
    assert!(
        site.journal()
            .position(LB_VM_CONTROLLER, "deleted LoadBalancer")
            .is_none()
    );
    site.shutdown().await;
}
