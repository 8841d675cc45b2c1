//! The host objects a Harvester watch follows for attribution, reduced on arrival to their
//! metadata and the few spec fields the core reads, and read back as the core's facts.

use gleaner_core::{
    attribution::{
        HostKind, HostObjectRecord, NETWORK_FILESYSTEM_NAMESPACE, ObservedObject, ObservedVm,
    },
    keys,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};

/// The CSI driver's label naming the guest cluster (when its toggle is on): a hint only.
pub const GUEST_CLUSTER_LABEL: &str = "guestcluster.harvesterhci.io/name";
/// The guest Service a LoadBalancer was made for (the cloud provider writes it).
const LB_SERVICE_UUID: &str = "cloudprovider.harvesterhci.io/service-uuid";

/// What one watch of a Harvester follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The node driver's VMs, in every namespace.
    Vms,
    /// Host objects of one kind in one namespace.
    Objects { kind: HostKind, namespace: String },
}

impl Target {
    /// The host-object watches for VMs in `namespaces`: their PVCs, VolumeSnapshots and
    /// LoadBalancers, and the NetworkFilesystems of `harvester-system`.
    pub fn for_namespaces<'a>(namespaces: impl IntoIterator<Item = &'a String>) -> Vec<Target> {
        let mut targets: Vec<Target> = namespaces
            .into_iter()
            .flat_map(|namespace| {
                [
                    HostKind::PersistentVolumeClaim,
                    HostKind::VolumeSnapshot,
                    HostKind::LoadBalancer,
                ]
                .map(|kind| Target::Objects {
                    kind,
                    namespace: namespace.clone(),
                })
            })
            .collect();
        targets.push(Target::Objects {
            kind: HostKind::NetworkFilesystem,
            namespace: NETWORK_FILESYSTEM_NAMESPACE.to_owned(),
        });
        targets
    }
}

pub fn resource(kind: HostKind) -> ApiResource {
    let (group, version, kind_name, plural) = match kind {
        HostKind::PersistentVolumeClaim => {
            ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
        }
        HostKind::NetworkFilesystem => (
            "harvesterhci.io",
            "v1beta1",
            "NetworkFilesystem",
            "networkfilesystems",
        ),
        HostKind::VolumeSnapshot => (
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
            "volumesnapshots",
        ),
        HostKind::LoadBalancer => (
            "loadbalancer.harvesterhci.io",
            "v1beta1",
            "LoadBalancer",
            "loadbalancers",
        ),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind_name), plural)
}

/// A reference to the recorded object on its Harvester, for an Event's `related` object.
pub fn reference(record: &HostObjectRecord) -> ObjectReference {
    let resource = resource(record.kind());
    ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        namespace: Some(record.namespace.clone()),
        name: Some(record.name.clone()),
        uid: Some(record.uid.clone()),
        ..ObjectReference::default()
    }
}

/// Keeps only what attribution reads: metadata without managed fields, and of the spec
/// `volumeName` and `volumeMode` (a PVC), `source` (a VolumeSnapshot), or the hot-plugged
/// claims (a VM).
pub fn trim(target: &Target, object: &mut DynamicObject) {
    object.managed_fields_mut().clear();
    let spec = &object.data["spec"];
    object.data = match target {
        Target::Vms => {
            json!({"spec": {"template": {"spec": {"volumes": hotplugged_volumes(spec)}}}})
        }
        Target::Objects {
            kind: HostKind::PersistentVolumeClaim,
            ..
        } => json!({"spec": {"volumeName": spec["volumeName"], "volumeMode": spec["volumeMode"]}}),
        Target::Objects {
            kind: HostKind::VolumeSnapshot,
            ..
        } => json!({"spec": {"source": spec["source"]}}),
        Target::Objects { .. } => json!({}),
    };
}

fn hotplugged_volumes(spec: &Value) -> Vec<Value> {
    spec["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume["persistentVolumeClaim"]["hotpluggable"] == Value::Bool(true))
        .cloned()
        .collect()
}

/// The claim names a VM hot-plugs now.
pub fn hotplugged(vm: &DynamicObject) -> Vec<String> {
    hotplugged_volumes(&vm.data["spec"])
        .iter()
        .filter_map(|volume| volume["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned)
        .collect()
}

pub fn observed_vm(credential: &str, vm: &DynamicObject) -> ObservedVm {
    ObservedVm {
        cloud_credential: credential.to_owned(),
        namespace: vm.namespace().unwrap_or_default(),
        uid: vm.uid().unwrap_or_default(),
        hotplugged: hotplugged(vm),
    }
}

pub fn observed_object(credential: &str, kind: HostKind, object: &DynamicObject) -> ObservedObject {
    let spec = &object.data["spec"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    ObservedObject {
        cloud_credential: credential.to_owned(),
        kind: Some(kind),
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        volume_name: text(&spec["volumeName"]),
        block: spec["volumeMode"] == "Block",
        snapshot_source: text(&spec["source"]["persistentVolumeClaimName"]),
        service_uuid: object.annotations().get(LB_SERVICE_UUID).cloned(),
        footprint_label: object.labels().get(keys::FOOTPRINT_LABEL).cloned(),
        cluster_annotation: object.annotations().get(keys::CLUSTER_ANNOTATION).cloned(),
        guest_cluster_label: object.labels().get(GUEST_CLUSTER_LABEL).cloned(),
    }
}

/// Whether two versions of an object look the same to attribution.
pub fn same_facts(before: &DynamicObject, after: &DynamicObject) -> bool {
    before.metadata.uid == after.metadata.uid
        && before.metadata.labels == after.metadata.labels
        && before.metadata.annotations == after.metadata.annotations
        && before.metadata.deletion_timestamp.is_some()
            == after.metadata.deletion_timestamp.is_some()
        && before.data == after.data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm", "namespace": "vms", "uid": "u1"},
            "spec": {"template": {"spec": {"volumes": [
                {"name": "disk-0", "persistentVolumeClaim": {"claimName": "vm-disk-0"}},
                {"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": true}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "secret"}},
            ]}}},
            "status": {"ready": true},
        }))
        .unwrap()
    }

    #[test]
    fn a_vm_keeps_only_its_hot_plugged_claims() {
        let mut vm = vm();
        trim(&Target::Vms, &mut vm);
        assert_eq!(hotplugged(&vm), ["pvc-a"]);
        assert!(vm.data.get("status").is_none());
        assert!(!vm.data.to_string().contains("secret"));
        assert_eq!(observed_vm("a:b", &vm).uid, "u1");
    }

    #[test]
    fn a_pvc_keeps_its_volume_name_and_mode() {
        let mut pvc: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "pvc-a", "namespace": "vms", "uid": "u2",
                         "labels": {"gleaner.io/footprint": "fp", "guestcluster.harvesterhci.io/name": "c1"}},
            "spec": {"volumeName": "pv-1", "volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        let target = Target::Objects {
            kind: HostKind::PersistentVolumeClaim,
            namespace: "vms".into(),
        };
        trim(&target, &mut pvc);
        let observed = observed_object("a:b", HostKind::PersistentVolumeClaim, &pvc);
        assert_eq!(observed.volume_name.as_deref(), Some("pv-1"));
        assert!(observed.block);
        assert_eq!(observed.footprint_label.as_deref(), Some("fp"));
        assert_eq!(observed.guest_cluster_label.as_deref(), Some("c1"));
        assert!(pvc.data["spec"].get("resources").is_none());
    }

    #[test]
    fn every_namespace_gets_pvcs_snapshots_and_load_balancers_and_the_harvester_its_filesystems() {
        let targets = Target::for_namespaces(&["a".to_owned(), "b".to_owned()]);
        assert_eq!(targets.len(), 7);
        assert!(targets.contains(&Target::Objects {
            kind: HostKind::NetworkFilesystem,
            namespace: NETWORK_FILESYSTEM_NAMESPACE.into()
        }));
    }
}
