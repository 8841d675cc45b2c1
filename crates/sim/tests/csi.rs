//! The CSI simulator against real apiservers: a Harvester and one guest cluster.

mod common;

use common::fixture::{Fixture, HARVESTER, world};
use futures::future::try_join_all;
use gleaner_sim::{
    Error,
    csi::{
        GUEST_DRIVER, GuestAccess, GuestVolume, LONGHORN_DRIVER, NETWORK_FILESYSTEM_NAMESPACE,
        Reclaim, VolumeRequest,
    },
    keys, kinds,
};
use gleaner_world::World;
use gleaner_world::testing::eventually;
use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

impl Fixture {
    async fn volume(&self, name: &str, reclaim: Reclaim) -> GuestVolume {
        self.csi
            .create_volume(&VolumeRequest::rwo(&self.namespace, name, reclaim))
            .await
            .unwrap()
    }

    async fn rwx_volume(&self, name: &str, reclaim: Reclaim) -> GuestVolume {
        self.csi
            .create_volume(&VolumeRequest::rwx(&self.namespace, name, reclaim))
            .await
            .unwrap()
    }

    fn network_filesystems(&self) -> Api<DynamicObject> {
        kinds::namespaced(
            &self.harvester,
            NETWORK_FILESYSTEM_NAMESPACE,
            &kinds::network_filesystem(),
        )
    }

    fn guest_pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.guest.clone(), &self.namespace)
    }

    fn guest_pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.guest.clone())
    }

    fn host_pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.harvester.clone(), &self.namespace)
    }

    fn host_pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.harvester.clone())
    }

    fn vms(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.harvester, &self.namespace, &kinds::virtual_machine())
    }

    /// A minimal VM the KubeVirt v1.5 schema accepts, with one disk of its own.
    async fn create_vm(&self, name: &str) -> DynamicObject {
        let vm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": {"harvesterhci.io/creator": "docker-machine-driver-harvester"}},
            "spec": {
                "runStrategy": "RerunOnFailure",
                "template": {"spec": {
                    "domain": {
                        "cpu": {"cores": 2},
                        "memory": {"guest": "4Gi"},
                        "devices": {
                            "disks": [{"name": "disk-0", "bootOrder": 1, "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "nic-0", "bridge": {}, "model": "virtio"}],
                        },
                    },
                    "networks": [{"name": "nic-0", "multus": {"networkName": "default/untag"}}],
                    "volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": format!("{name}-disk-0-abcde")}}],
                }},
            },
        }))
        .unwrap();
        self.vms()
            .create(&PostParams::default(), &vm)
            .await
            .unwrap()
    }
}

/// Reads an object as JSON, the way `kubectl get -o json` shows it.
fn as_json(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

fn kubectl(world: &World, cluster: &str, args: &[&str]) -> String {
    let output = world.kubectl(cluster, args).unwrap();
    assert!(output.status.success(), "kubectl {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_guest_volume_is_a_block_rwx_host_pvc_named_after_the_guest_pvc_uid() {
    let fixture = Fixture::new("csi-create").await;
    let volume = fixture.volume("data", Reclaim::Delete).await;

    let guest_pvc = as_json(&fixture.guest_pvcs().get("data").await.unwrap());
    let guest_uid = guest_pvc["metadata"]["uid"].as_str().unwrap();
    let expected_name = format!("pvc-{guest_uid}");
    assert_eq!(guest_pvc["status"]["phase"], "Bound");
    assert_eq!(guest_pvc["spec"]["volumeName"], expected_name.as_str());
    assert_eq!(guest_pvc["spec"]["storageClassName"], "harvester");
    assert_eq!(guest_pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));

    let host_pvc = as_json(&fixture.host_pvcs().get(&expected_name).await.unwrap());
    let host_uid = host_pvc["metadata"]["uid"].as_str().unwrap();
    assert_eq!(host_pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(host_pvc["spec"]["volumeMode"], "Block");
    assert_eq!(host_pvc["spec"]["storageClassName"], "longhorn");
    assert_eq!(host_pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(
        host_pvc["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"],
        LONGHORN_DRIVER
    );
    assert_eq!(
        host_pvc["spec"]["volumeName"],
        format!("pvc-{host_uid}").as_str()
    );
    assert_eq!(host_pvc["status"]["phase"], "Bound");

    let host_pv = as_json(
        &fixture
            .host_pvs()
            .get(&format!("pvc-{host_uid}"))
            .await
            .unwrap(),
    );
    assert_eq!(host_pv["spec"]["csi"]["driver"], LONGHORN_DRIVER);
    assert_eq!(host_pv["spec"]["claimRef"]["name"], expected_name.as_str());
    assert_eq!(host_pv["spec"]["claimRef"]["namespace"], "csi-create");
    assert_eq!(host_pv["spec"]["claimRef"]["uid"], host_uid);
    assert_eq!(host_pv["status"]["phase"], "Bound");

    let guest_pv = as_json(&fixture.guest_pvs().get(&expected_name).await.unwrap());
    assert_eq!(guest_pv["spec"]["csi"]["driver"], GUEST_DRIVER);
    assert_eq!(
        guest_pv["spec"]["csi"]["volumeHandle"],
        expected_name.as_str()
    );
    assert_eq!(guest_pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(guest_pv["spec"]["claimRef"]["uid"], guest_uid);
    assert_eq!(guest_pv["status"]["phase"], "Bound");

    assert_eq!(volume.guest_pvc.uid, guest_uid);
    assert_eq!(volume.host_pvc.name, expected_name);
    assert_eq!(volume.host_pv.name, format!("pvc-{host_uid}"));
    assert_eq!(volume.guest_pv.name, expected_name);

    let class = Api::<StorageClass>::all(fixture.guest.clone())
        .get("harvester")
        .await
        .unwrap();
    assert_eq!(class.provisioner, GUEST_DRIVER);
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));

    let listed = kubectl(
        world().await,
        HARVESTER,
        &[
            "get",
            "pvc",
            "-n",
            "csi-create",
            "-o",
            "custom-columns=NAME:.metadata.name,STATUS:.status.phase,MODES:.spec.accessModes,VOLUMEMODE:.spec.volumeMode",
            "--no-headers",
        ],
    );
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        [expected_name.as_str(), "Bound", "[ReadWriteMany]", "Block"]
    );
}

#[tokio::test]
async fn a_retain_storage_class_gives_retain_guest_pvs_and_creating_again_changes_nothing() {
    let fixture = Fixture::new("csi-retain-class").await;
    let volume = fixture.volume("keep", Reclaim::Retain).await;
    let guest_pv = fixture
        .guest_pvs()
        .get(&volume.guest_pv.name)
        .await
        .unwrap();
    let policy = guest_pv.spec.unwrap().persistent_volume_reclaim_policy;
    assert_eq!(policy.as_deref(), Some("Retain"));
    assert_eq!(volume.storage_class, "harvester-retain");

    assert_eq!(fixture.volume("keep", Reclaim::Retain).await, volume);
    assert_eq!(
        fixture
            .host_pvcs()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn attach_then_detach_changes_exactly_the_vms_volumes_and_disks() {
    let fixture = Fixture::new("csi-attach").await;
    let before = fixture.create_vm("node-1").await;
    let volume = fixture.volume("data", Reclaim::Delete).await;
    let claim = volume.host_pvc.name.as_str();

    fixture.csi.attach("node-1", &volume).await.unwrap();
    let attached = fixture.vms().get("node-1").await.unwrap();
    let mut expected = before.data["spec"].clone();
    let template = &mut expected["template"]["spec"];
    push(
        &mut template["volumes"],
        json!({"name": claim, "persistentVolumeClaim": {"claimName": claim, "hotpluggable": true}}),
    );
    push(
        &mut template["domain"]["devices"]["disks"],
        json!({"name": claim, "disk": {"bus": "scsi"}}),
    );
    assert_eq!(attached.data["spec"], expected);
    assert_eq!(attached.metadata.labels, before.metadata.labels);
    assert_eq!(attached.metadata.annotations, before.metadata.annotations);

    fixture.csi.attach("node-1", &volume).await.unwrap();
    let again = fixture.vms().get("node-1").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, attached.metadata.resource_version,
        "attaching twice writes nothing"
    );

    fixture.csi.detach("node-1", &volume).await.unwrap();
    fixture.csi.detach("node-1", &volume).await.unwrap();
    let detached = fixture.vms().get("node-1").await.unwrap();
    assert_eq!(detached.data["spec"], before.data["spec"]);
    assert!(
        fixture
            .journal
            .position("kubevirt-hotplug", "unplugged")
            .is_some()
    );
}

fn push(list: &mut Value, entry: Value) {
    list.as_array_mut().unwrap().push(entry);
}

#[tokio::test]
async fn concurrent_attaches_to_one_vm_all_land() {
    let fixture = Fixture::new("csi-concurrent").await;
    fixture.create_vm("node-1").await;
    let requests: Vec<_> = (0..6)
        .map(|index| {
            VolumeRequest::rwo(
                &fixture.namespace,
                &format!("data-{index}"),
                Reclaim::Delete,
            )
        })
        .collect();
    let volumes = try_join_all(
        requests
            .iter()
            .map(|request| fixture.csi.create_volume(request)),
    )
    .await
    .unwrap();
    try_join_all(
        volumes
            .iter()
            .map(|volume| fixture.csi.attach("node-1", volume)),
    )
    .await
    .unwrap();

    let vm = fixture.vms().get("node-1").await.unwrap();
    let spec = &vm.data["spec"]["template"]["spec"];
    for volume in &volumes {
        let name = volume.host_pvc.name.as_str();
        let named = |entry: &Value| entry["name"] == name;
        assert!(
            spec["volumes"].as_array().unwrap().iter().any(named),
            "{name}"
        );
        let disks = spec["domain"]["devices"]["disks"].as_array().unwrap();
        assert!(disks.iter().any(named), "{name}");
    }
}

#[tokio::test]
async fn attaching_to_a_missing_vm_fails() {
    let fixture = Fixture::new("csi-no-vm").await;
    let volume = fixture.volume("data", Reclaim::Delete).await;
    let error = fixture.csi.attach("absent", &volume).await.unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error}");
    fixture.csi.detach("absent", &volume).await.unwrap();
}

#[tokio::test]
async fn deleting_a_delete_volume_deletes_the_host_pvc_and_pv() {
    let fixture = Fixture::new("csi-delete").await;
    let volume = fixture.volume("data", Reclaim::Delete).await;
    fixture.csi.delete_volume(&volume).await.unwrap();

    assert!(
        fixture
            .guest_pvcs()
            .get_opt("data")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fixture
            .guest_pvs()
            .get_opt(&volume.guest_pv.name)
            .await
            .unwrap()
            .is_none()
    );
    eventually("the host PVC is gone", || async {
        fixture
            .host_pvcs()
            .get_opt(&volume.host_pvc.name)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    eventually("the host PV is gone", || async {
        fixture
            .host_pvs()
            .get_opt(&volume.host_pv.name)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let deleted_claim = fixture.journal.position("guest-user", "deleted guest PVC");
    let delete_volume = fixture.journal.position("harvester-csi", "DeleteVolume");
    assert!(
        deleted_claim < delete_volume,
        "{:?}",
        fixture.journal.entries()
    );
}

#[tokio::test]
async fn deleting_a_retain_volume_keeps_the_host_pvc() {
    let fixture = Fixture::new("csi-retain").await;
    let volume = fixture.volume("data", Reclaim::Retain).await;
    fixture.csi.delete_volume(&volume).await.unwrap();
    assert_retained(&fixture, &volume, "data").await;
}

#[tokio::test]
async fn a_guest_pv_switched_to_retain_keeps_the_host_pvc() {
    let fixture = Fixture::new("csi-switch-retain").await;
    let volume = fixture.volume("data", Reclaim::Delete).await;
    // What `kubectl patch pv ... persistentVolumeReclaimPolicy: Retain` does.
    fixture
        .guest_pvs()
        .patch(
            &volume.guest_pv.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    fixture.csi.delete_volume(&volume).await.unwrap();
    assert_retained(&fixture, &volume, "data").await;
}

async fn assert_retained(fixture: &Fixture, volume: &GuestVolume, guest_pvc: &str) {
    assert!(
        fixture
            .guest_pvcs()
            .get_opt(guest_pvc)
            .await
            .unwrap()
            .is_none()
    );
    let guest_pv = fixture
        .guest_pvs()
        .get(&volume.guest_pv.name)
        .await
        .unwrap();
    assert_eq!(guest_pv.status.unwrap().phase.as_deref(), Some("Released"));
    let host_pvc = fixture
        .host_pvcs()
        .get(&volume.host_pvc.name)
        .await
        .unwrap();
    assert!(host_pvc.metadata.deletion_timestamp.is_none());
    assert_eq!(host_pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    assert!(
        fixture
            .host_pvs()
            .get_opt(&volume.host_pv.name)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        fixture
            .journal
            .position("harvester-csi", "DeleteVolume")
            .is_none()
    );
}

#[tokio::test]
async fn an_rwx_volume_is_a_filesystem_host_pvc_with_a_network_filesystem_named_after_its_pv() {
    let fixture = Fixture::new("csi-rwx").await;
    let volume = fixture.rwx_volume("shared", Reclaim::Delete).await;
    assert_eq!(volume.access, GuestAccess::ReadWriteMany);

    let guest_pvc = as_json(&fixture.guest_pvcs().get("shared").await.unwrap());
    assert_eq!(guest_pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    let host_pvc = as_json(
        &fixture
            .host_pvcs()
            .get(&volume.host_pvc.name)
            .await
            .unwrap(),
    );
    assert_eq!(host_pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(host_pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(host_pvc["spec"]["storageClassName"], "longhorn");
    let host_pv = host_pvc["spec"]["volumeName"].as_str().unwrap();
    assert_eq!(host_pv, volume.host_pv.name);

    let listed = kubectl(
        world().await,
        HARVESTER,
        &[
            "get",
            "networkfilesystems.harvesterhci.io",
            "-n",
            NETWORK_FILESYSTEM_NAMESPACE,
            host_pv,
            "-o",
            "custom-columns=NAME:.metadata.name,DESIRED:.spec.desiredState,FS:.spec.networkFSName",
            "--no-headers",
        ],
    );
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        [host_pv, "Disabled", host_pv]
    );
    let filesystem = fixture.network_filesystems().get(host_pv).await.unwrap();
    let made = volume.network_filesystem.clone().unwrap();
    assert_eq!(made.name, host_pv);
    assert_eq!(filesystem.metadata.uid.as_deref(), Some(made.uid.as_str()));

    let objects: Vec<_> = volume
        .host_objects()
        .into_iter()
        .map(|object| {
            (
                object.resource.kind,
                object.namespace,
                object.name,
                object.uid,
            )
        })
        .collect();
    assert_eq!(
        objects,
        [
            (
                "PersistentVolumeClaim".to_owned(),
                "csi-rwx".to_owned(),
                volume.host_pvc.name.clone(),
                volume.host_pvc.uid.clone()
            ),
            (
                "NetworkFilesystem".to_owned(),
                NETWORK_FILESYSTEM_NAMESPACE.to_owned(),
                made.name,
                made.uid
            ),
        ]
    );

    let rwo = fixture.volume("single", Reclaim::Delete).await;
    assert_eq!(rwo.network_filesystem, None);
    assert_eq!(rwo.host_objects().len(), 1);
    assert_eq!(
        fixture.volume("single", Reclaim::Delete).await,
        rwo,
        "creating again changes nothing"
    );
    assert_eq!(
        fixture.rwx_volume("shared", Reclaim::Delete).await,
        volume,
        "creating again changes nothing"
    );
}

#[tokio::test]
async fn deleting_an_rwx_delete_volume_deletes_its_network_filesystem_then_its_host_pvc() {
    let fixture = Fixture::new("csi-rwx-delete").await;
    let volume = fixture.rwx_volume("shared", Reclaim::Delete).await;
    fixture.csi.delete_volume(&volume).await.unwrap();

    let host_pv = volume.host_pv.name.clone();
    eventually("the NetworkFilesystem is gone", || async {
        fixture
            .network_filesystems()
            .get_opt(&host_pv)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    eventually("the host PVC is gone", || async {
        fixture
            .host_pvcs()
            .get_opt(&volume.host_pvc.name)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let journal = &fixture.journal;
    let filesystem = journal.position("harvester-csi", "deleted NetworkFilesystem");
    let claim = journal.position("harvester-csi", "DeleteVolume: deleted host PVC");
    assert!(
        filesystem.is_some() && filesystem < claim,
        "{:?}",
        journal.entries()
    );
}

#[tokio::test]
async fn a_retained_rwx_volume_keeps_its_network_filesystem() {
    let fixture = Fixture::new("csi-rwx-retain").await;
    let volume = fixture.rwx_volume("shared", Reclaim::Retain).await;
    fixture.csi.delete_volume(&volume).await.unwrap();
    assert!(
        fixture
            .network_filesystems()
            .get_opt(&volume.host_pv.name)
            .await
            .unwrap()
            .is_some()
    );
    assert_retained(&fixture, &volume, "shared").await;
}

#[tokio::test]
async fn attaching_an_rwx_volume_is_refused_and_leaves_the_vm_alone() {
    let fixture = Fixture::new("csi-rwx-attach").await;
    let before = fixture.create_vm("node-1").await;
    let volume = fixture.rwx_volume("shared", Reclaim::Delete).await;
    let error = fixture.csi.attach("node-1", &volume).await.unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error}");
    assert!(error.to_string().contains("never hot-plugged"), "{error}");
    let after = fixture.vms().get("node-1").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test]
async fn host_pvcs_carry_the_guest_cluster_label_only_with_the_unmerged_change() {
    let fixture = Fixture::new("csi-label").await;
    let unlabelled = fixture.volume("plain", Reclaim::Delete).await;
    let labelling = Fixture {
        csi: fixture.csi.clone().with_cluster_label("guest-a"),
        ..fixture
    };
    let labelled = labelling.volume("labelled", Reclaim::Delete).await;
    let labelled_rwx = labelling.rwx_volume("labelled-rwx", Reclaim::Delete).await;

    let selector = format!("{}=guest-a", keys::LABEL_GUEST_CLUSTER);
    let listed = kubectl(
        world().await,
        HARVESTER,
        &[
            "get",
            "pvc",
            "-n",
            "csi-label",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    );
    let mut expected = vec![
        format!("persistentvolumeclaim/{}", labelled.host_pvc.name),
        format!("persistentvolumeclaim/{}", labelled_rwx.host_pvc.name),
    ];
    expected.sort();
    let mut listed: Vec<_> = listed.lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, expected);

    let plain = labelling
        .host_pvcs()
        .get(&unlabelled.host_pvc.name)
        .await
        .unwrap();
    let labels = plain.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key(keys::LABEL_GUEST_CLUSTER),
        "{labels:?}"
    );
}
