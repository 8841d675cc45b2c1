//! The simulated Harvester against the real harvester apiserver and controller-manager of the
//! shared world: what a user would see with kubectl.

use gleaner_sim::{
    Clock, Env, Journal,
    harvester::{Harvester, HarvesterVersion, PVC_CONTROLLER, PVC_WEBHOOK, VM_CONTROLLER},
    keys::{
        FINALIZER_HARVESTER_PVC, FINALIZER_KUBEVIRT_VM, FINALIZER_VM_CLEANUP, GOLDEN_IMAGE,
        REMOVED_PVCS, VOLUME_CLAIM_TEMPLATES,
    },
    kinds::{namespaced, virtual_machine, virtual_machine_instance},
};
use gleaner_world::testing::eventually;
use gleaner_world::{ClusterName, World};
use k8s_openapi::{
    api::{
        admissionregistration::v1::ValidatingWebhookConfiguration,
        core::v1::{ConfigMap, Namespace, PersistentVolumeClaim},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
    core::Status,
};
use serde_json::json;

const HARVESTER: &str = ClusterName::HARVESTER;
const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
const TEST_FINALIZER: &str = "test.gleaner.io/hold";

/// One test's namespace with a simulated Harvester serving it.
struct Site {
    client: Client,
    namespace: String,
    journal: Journal,
    harvester: Harvester,
}

impl Site {
    async fn start(namespace: &str) -> Self {
        let world = World::shared().await;
        let client = world.client(HARVESTER).await.unwrap();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        let env = Env {
            clock: Clock::new(0.01),
            journal: Journal::default(),
        };
        let harvester = Harvester::start(world, HARVESTER, namespace, HarvesterVersion::V1_8, &env)
            .await
            .unwrap();
        Self {
            client,
            namespace: namespace.to_owned(),
            journal: env.journal,
            harvester,
        }
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn vms(&self) -> Api<DynamicObject> {
        namespaced(&self.client, &self.namespace, &virtual_machine())
    }

    fn instances(&self) -> Api<DynamicObject> {
        namespaced(&self.client, &self.namespace, &virtual_machine_instance())
    }

    fn images(&self) -> Api<DynamicObject> {
        namespaced(
            &self.client,
            &self.namespace,
            &gleaner_sim::kinds::virtual_machine_image(),
        )
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    async fn create_claim(&self, claim: PersistentVolumeClaim) {
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .unwrap();
    }

    async fn create_vm(&self, vm: DynamicObject) -> DynamicObject {
        self.vms()
            .create(&PostParams::default(), &vm)
            .await
            .unwrap()
    }

    async fn wait_for_claim_gone(&self, name: &str) {
        let claims = self.claims();
        eventually(&format!("PVC {name} is gone"), || async {
            claims.get_opt(name).await.unwrap().is_none()
        })
        .await;
    }

    /// The journal shows the webhook's verdict on a delete of `claim` by `user`.
    fn webhook_reviewed(&self, claim: &str, user: &str, verdict: &str) -> bool {
        self.journal
            .position(
                PVC_WEBHOOK,
                &format!("DELETE PVC {} by {user}: {verdict}", self.path(claim)),
            )
            .is_some()
    }

    async fn shutdown(self) {
        self.harvester.shutdown().await.unwrap();
    }
}

fn claim(name: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "volumeMode": "Block",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))
    .unwrap()
}

fn owned_claim(name: &str, owner: OwnerReference) -> PersistentVolumeClaim {
    let mut claim = claim(name);
    claim.metadata.owner_references = Some(vec![owner]);
    claim
}

fn disk_template(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "annotations": {"harvesterhci.io/imageId": "default/image-8854n"}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": "longhorn-image-8854n",
            "volumeMode": "Block",
        },
    })
}

/// A guest-node VM as the node driver creates it: disks from `templates`, `claims` as
/// (hot-plugged) PVC volumes.
fn vm(name: &str, templates: &[&str], claims: &[&str]) -> DynamicObject {
    let templates: Vec<_> = templates.iter().map(|disk| disk_template(disk)).collect();
    let volumes: Vec<_> = claims
        .iter()
        .map(|claim| json!({"name": claim, "persistentVolumeClaim": {"claimName": claim}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "annotations": {VOLUME_CLAIM_TEMPLATES: serde_json::to_string(&templates).unwrap()},
        },
        "spec": {
            "runStrategy": "RerunOnFailure",
            "template": {
                "metadata": {"labels": {"harvesterhci.io/vmName": name}},
                "spec": {
                    "domain": {"devices": {}, "resources": {"requests": {"memory": "1Gi"}}},
                    "volumes": volumes,
                },
            },
        },
    }))
    .unwrap()
}

fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ..OwnerReference::default()
    }
}

fn vm_owner(vm: &DynamicObject) -> OwnerReference {
    owner_reference(
        "kubevirt.io/v1",
        "VirtualMachine",
        &vm.name_any(),
        vm.uid().as_deref().unwrap(),
    )
}

fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn assert_refused(claims: &Api<PersistentVolumeClaim>, name: &str, naming: &str) {
    let status = api_error(claims.delete(name, &DeleteParams::default()).await);
    assert!(
        (400..500).contains(&status.code),
        "a client error: {status:?}"
    );
    assert!(
        status.message.contains(naming),
        "names {naming}: {}",
        status.message
    );
    assert!(
        claims
            .get(name)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

async fn has_finalizers(api: &Api<DynamicObject>, name: &str, expected: &[&str]) -> bool {
    api.get_opt(name).await.unwrap().is_some_and(|object| {
        expected.iter().all(|finalizer| {
            object
                .finalizers()
                .iter()
                .any(|present| present == finalizer)
        })
    })
}

#[tokio::test]
async fn a_vm_gets_its_finalizers_disk_pvcs_and_instance() {
    let site = Site::start("harvester-sim-vm-creation").await;
    let created = site
        .create_vm(vm(
            "node-1",
            &["node-1-disk-0-abcde"],
            &["node-1-disk-0-abcde"],
        ))
        .await;

    let vms = site.vms();
    eventually("the VM carries both finalizers", || {
        has_finalizers(
            &vms,
            "node-1",
            &[FINALIZER_KUBEVIRT_VM, FINALIZER_VM_CLEANUP],
        )
    })
    .await;
    let claims = site.claims();
    eventually("the disk PVC exists", || async {
        claims
            .get_opt("node-1-disk-0-abcde")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let disk = claims.get("node-1-disk-0-abcde").await.unwrap();
    assert!(disk.owner_references().is_empty(), "no owner, as upstream");
    assert_eq!(
        disk.annotations()["harvesterhci.io/imageId"],
        "default/image-8854n"
    );
    assert_eq!(
        disk.spec.unwrap().storage_class_name.as_deref(),
        Some("longhorn-image-8854n")
    );

    let instances = site.instances();
    eventually("the VMI exists", || async {
        instances.get_opt("node-1").await.unwrap().is_some()
    })
    .await;
    let instance = instances.get("node-1").await.unwrap();
    let owner = &instance.owner_references()[0];
    assert_eq!(owner.kind, "VirtualMachine");
    assert_eq!(Some(&owner.uid), created.uid().as_ref());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    site.shutdown().await;
}

#[tokio::test]
async fn foreground_vm_deletion_deletes_exactly_the_removed_pvcs() {
    let site = Site::start("harvester-sim-vm-removal").await;
    site.create_claim(claim("pvc-guest")).await;
    site.create_claim(claim("pvc-unlisted")).await;
    site.create_vm(vm(
        "node-1",
        &["node-1-disk-0", "node-1-disk-1"],
        &["node-1-disk-0", "node-1-disk-1", "pvc-guest"],
    ))
    .await;
    let claims = site.claims();
    let instances = site.instances();
    eventually("the disks and the VMI exist", || async {
        claims.get_opt("node-1-disk-1").await.unwrap().is_some()
            && instances.get_opt("node-1").await.unwrap().is_some()
    })
    .await;

    // What the node driver's Remove() does: list the PVCs, then delete in the foreground.
    let vms = site.vms();
    let annotation = json!({"metadata": {"annotations": {
        REMOVED_PVCS: "node-1-disk-0,pvc-guest,pvc-never-existed",
    }}});
    vms.patch(
        "node-1",
        &PatchParams::default(),
        &Patch::Merge(&annotation),
    )
    .await
    .unwrap();
    vms.delete("node-1", &DeleteParams::foreground())
        .await
        .unwrap();

    eventually("the VM and its VMI are gone", || async {
        vms.get_opt("node-1").await.unwrap().is_none()
            && instances.get_opt("node-1").await.unwrap().is_none()
    })
    .await;
    site.wait_for_claim_gone("node-1-disk-0").await;
    site.wait_for_claim_gone("pvc-guest").await;
    for kept in ["node-1-disk-1", "pvc-unlisted"] {
        let claim = claims.get(kept).await.unwrap();
        assert!(
            claim.metadata.deletion_timestamp.is_none(),
            "{kept} is not deleted"
        );
    }
    assert!(
        site.journal
            .position(
                VM_CONTROLLER,
                &format!("PVC {} listed by VM", site.path("pvc-never-existed"))
            )
            .is_some(),
        "{:#?}",
        site.journal.entries()
    );
    site.shutdown().await;
}

#[tokio::test]
async fn the_webhook_refuses_deleting_a_pvc_attached_to_a_live_vm_until_it_is_deleting() {
    let site = Site::start("harvester-sim-webhook-attached").await;
    site.create_claim(claim("data")).await;
    let mut held = vm("node-1", &[], &["data"]);
    held.metadata.finalizers = Some(vec![TEST_FINALIZER.to_owned()]);
    site.create_vm(held).await;
    let claims = site.claims();

    assert_refused(
        &claims,
        "data",
        &format!("attached to VM {}", site.path("node-1")),
    )
    .await;

    // The test's finalizer keeps the VM deleting after Harvester's and KubeVirt's are gone.
    let vms = site.vms();
    vms.delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    site.wait_for_claim_gone("data").await;
    assert!(
        vms.get("node-1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    eventually("only the test's finalizer holds the VM", || async {
        vms.get("node-1").await.unwrap().finalizers() == [TEST_FINALIZER]
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    vms.patch("node-1", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    eventually("the VM is gone", || async {
        vms.get_opt("node-1").await.unwrap().is_none()
    })
    .await;
    site.shutdown().await;
}

#[tokio::test]
async fn the_webhook_refuses_deleting_a_pvc_owned_by_a_live_vm() {
    let site = Site::start("harvester-sim-webhook-owned").await;
    let owner = site.create_vm(vm("node-1", &[], &[])).await;
    site.create_claim(owned_claim("data", vm_owner(&owner)))
        .await;

    assert_refused(
        &site.claims(),
        "data",
        &format!("owned by VM {}", site.path("node-1")),
    )
    .await;
    site.shutdown().await;
}

#[tokio::test]
async fn the_webhook_refuses_deleting_a_golden_image_pvc_while_its_image_exists() {
    let site = Site::start("harvester-sim-webhook-golden").await;
    let image: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "harvesterhci.io/v1beta1",
        "kind": "VirtualMachineImage",
        "metadata": {"name": "ubuntu"},
        "spec": {"displayName": "ubuntu", "sourceType": "download", "url": "http://example.invalid/ubuntu.img"},
    }))
    .unwrap();
    let images = site.images();
    images.create(&PostParams::default(), &image).await.unwrap();
    let mut golden = claim("golden");
    golden.metadata.annotations = Some(
        [
            (GOLDEN_IMAGE.to_owned(), "true".to_owned()),
            ("harvesterhci.io/imageId".to_owned(), site.path("ubuntu")),
        ]
        .into(),
    );
    site.create_claim(golden).await;
    let claims = site.claims();

    assert_refused(
        &claims,
        "golden",
        &format!(
            "golden image of VirtualMachineImage {}",
            site.path("ubuntu")
        ),
    )
    .await;

    images
        .delete("ubuntu", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("golden", &DeleteParams::default())
        .await
        .unwrap();
    site.wait_for_claim_gone("golden").await;
    site.shutdown().await;
}

#[tokio::test]
async fn the_webhook_refuses_deleting_an_export_source_not_yet_imported() {
    let site = Site::start("harvester-sim-webhook-export").await;
    site.create_claim(claim("source")).await;
    let image: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "harvesterhci.io/v1beta1",
        "kind": "VirtualMachineImage",
        "metadata": {"name": "exported"},
        "spec": {
            "displayName": "exported",
            "sourceType": "export-from-volume",
            "pvcNamespace": site.namespace,
            "pvcName": "source",
        },
    }))
    .unwrap();
    let images = site.images();
    images.create(&PostParams::default(), &image).await.unwrap();
    let claims = site.claims();

    assert_refused(
        &claims,
        "source",
        &format!("VirtualMachineImage {}", site.path("exported")),
    )
    .await;

    // The image's CRD has no status subresource: the status is patched on the object.
    let imported = json!({"status": {"conditions": [{"type": "Imported", "status": "True"}]}});
    images
        .patch(
            "exported",
            &PatchParams::default(),
            &Patch::Merge(&imported),
        )
        .await
        .unwrap();
    claims
        .delete("source", &DeleteParams::default())
        .await
        .unwrap();
    site.wait_for_claim_gone("source").await;
    site.shutdown().await;
}

#[tokio::test]
async fn the_garbage_collector_deletes_owned_pvcs_through_the_webhook() {
    let site = Site::start("harvester-sim-webhook-gc").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(site.client.clone(), &site.namespace);
    let owner_map = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".to_owned()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let map_owner = owner_reference(
        "v1",
        "ConfigMap",
        "owner",
        owner_map.uid().as_deref().unwrap(),
    );
    site.create_claim(owned_claim("owned-by-config-map", map_owner))
        .await;
    let owner_vm = site.create_vm(vm("node-1", &[], &[])).await;
    site.create_claim(owned_claim("owned-by-vm", vm_owner(&owner_vm)))
        .await;

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    site.vms()
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();

    for owned in ["owned-by-config-map", "owned-by-vm"] {
        site.wait_for_claim_gone(owned).await;
        assert!(
            site.webhook_reviewed(owned, GARBAGE_COLLECTOR, "allowed"),
            "{:#?}",
            site.journal.entries()
        );
    }
    site.shutdown().await;
}

#[tokio::test]
async fn every_pvc_gets_the_harvester_finalizer_and_deletion_still_completes() {
    let site = Site::start("harvester-sim-pvc-finalizer").await;
    site.create_claim(claim("plain")).await;
    let claims = site.claims();
    eventually("the PVC carries Harvester's finalizer", || async {
        claims
            .get("plain")
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|finalizer| finalizer == FINALIZER_HARVESTER_PVC)
    })
    .await;

    claims
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap();
    site.wait_for_claim_gone("plain").await;
    assert!(
        site.journal
            .position(
                PVC_CONTROLLER,
                &format!(
                    "removed finalizer {FINALIZER_HARVESTER_PVC} from PVC {}",
                    site.path("plain")
                )
            )
            .is_some()
    );
    site.shutdown().await;
}

#[tokio::test]
async fn shutting_down_removes_the_webhook_configuration() {
    let site = Site::start("harvester-sim-shutdown").await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(site.client.clone());
    let name = site.harvester.webhook.config_name().to_owned();
    let config = configs.get(&name).await.unwrap();
    let webhook = &config.webhooks.unwrap()[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(
        webhook.client_config.url.as_deref(),
        Some(site.harvester.webhook.url())
    );

    site.shutdown().await;
    assert!(configs.get_opt(&name).await.unwrap().is_none());
}
