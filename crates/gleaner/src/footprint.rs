//! `gleaner.io/v1alpha1` `Footprint`: the durable record of what one Harvester-backed guest
//! cluster has on Harvester and of everything gleaner did about it (design.md §5). It outlives
//! the cluster's Rancher objects, which is what lets cleanup finish after an outage.

use gleaner_core::ClusterIdentity;
pub use gleaner_core::{
    VmRecord,
    attribution::{Conflict, Evidence, HostObjectRecord, ObjectClass, UnmatchedGuestVolume},
    guest::PolicySeen,
};
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One guest cluster's identity and where its machine pools run.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "gleaner.io",
    version = "v1alpha1",
    kind = "Footprint",
    namespaced,
    status = "FootprintStatus",
    shortname = "fp",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.identity.name"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.identity.namespace"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Volumes","type":"integer","jsonPath":".status.counts.volumes"}"#,
    printcolumn = r#"{"name":"Snapshots","type":"integer","jsonPath":".status.counts.snapshots"}"#,
    printcolumn = r#"{"name":"NFS","type":"integer","jsonPath":".status.counts.networkFilesystems"}"#,
    printcolumn = r#"{"name":"LBs","type":"integer","jsonPath":".status.counts.loadBalancers"}"#,
    printcolumn = r#"{"name":"Conflicts","type":"integer","jsonPath":".status.counts.conflicts"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FootprintSpec {
    pub identity: Identity,
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// Set on a Footprint `gleaner adopt --confirm` made for orphans an audit found: it stands
    /// for no cluster, and each object's deletion is confirmed by its orphan verdict, read live
    /// just before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adoption>,
}

/// Who adopted a Footprint's objects, when, and from which audit.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    /// The user the apiserver says ran `gleaner adopt --confirm`.
    pub by: String,
    pub at: Time,
    /// What the audit found, in a line.
    pub audit: String,
}

/// `<install uuid>/<namespace>/<name>` plus both Cluster UIDs: a re-created cluster with the
/// same name is a different Footprint.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The Rancher installation (`install-uuid` Setting).
    #[serde(rename = "installUUID")]
    pub install_uuid: String,
    pub namespace: String,
    pub name: String,
    /// The `provisioning.cattle.io` Cluster's UID (also the Footprint's name).
    #[serde(rename = "provisioningClusterUID")]
    pub provisioning_cluster_uid: String,
    /// The `cluster.x-k8s.io` Cluster's UID, once seen.
    #[serde(
        rename = "capiClusterUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capi_cluster_uid: Option<String>,
}

/// A machine pool: the Harvester it runs on (the cloud credential that reaches it) and the
/// namespace of its VMs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub name: String,
    /// `namespace:name` of the cloud credential Secret.
    pub cloud_credential: String,
    pub vm_namespace: String,
}

impl TryFrom<&Identity> for ClusterIdentity {
    type Error = crate::Error;

    /// The core's identity; a Footprint that has not seen its CAPI Cluster yet has none.
    fn try_from(identity: &Identity) -> Result<Self, Self::Error> {
        let capi_uid =
            identity
                .capi_cluster_uid
                .clone()
                .ok_or_else(|| crate::Error::Footprint {
                    footprint: identity.provisioning_cluster_uid.clone(),
                    problem: "has not recorded its CAPI Cluster's UID yet".into(),
                })?;
        Ok(Self {
            install_uuid: identity.install_uuid.clone(),
            namespace: identity.namespace.clone(),
            name: identity.name.clone(),
            provisioning_uid: identity.provisioning_cluster_uid.clone(),
            capi_uid,
        })
    }
}

/// Each list is a map keyed as server-side apply needs, so that each writer (the Footprint
/// controller, the hooks) owns only the entries and fields it applies.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FootprintStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The cluster's VMs as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["cloudCredential", "namespace", "name"]
    ))]
    pub vms: Vec<VmRecord>,
    /// Every host object attributed to the cluster, by UID, grouped by Harvester and namespace
    /// (see [`FootprintStatus::records`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["cloudCredential", "namespace"]
    ))]
    pub objects: Vec<ObjectGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// The Harvester each pool runs on, by the UID of its `kube-system` namespace, as first
    /// seen: a credential that later reaches another Harvester is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pool"]))]
    pub harvesters: Vec<PoolHarvester>,
    /// Objects that carry this Footprint's label or identity without evidence (restored or
    /// cloned copies): never attributed, `namespace/name (uid)`; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookalikes: Vec<String>,
    /// When the grace period of a confirmed deletion started (not in a dry run: the switch to
    /// a real run starts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_started_at: Option<Time>,
    /// Guest PVs of the Harvester CSI driver whose host PVC is not found (or not found once) in
    /// the pools' namespaces: reported, never guessed; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_guest_volumes: Vec<UnmatchedGuestVolume>,
    /// Machines of the deleted cluster whose hook went without gleaner's intent, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<ReleasedMachine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
    /// What a dry run would have done, most recent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum Phase {
    Tracking,
    Reclaiming,
    Reclaimed,
}

/// A Machine whose hook gleaner removed without writing the intent on its VM.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedMachine {
    pub machine: String,
    /// `namespace/name` of its VM on Harvester.
    pub vm: String,
    pub reason: ReleaseReason,
    pub message: String,
    pub time: Time,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The VM was not on Harvester: nothing to protect.
    VmNotFound,
    /// The hook timeout passed while Harvester failed: protection lapsed.
    HookTimeout,
}

/// The Harvester a pool runs on.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolHarvester {
    pub pool: String,
    /// The credential that reached it last.
    pub cloud_credential: String,
    /// The UID of its `kube-system` namespace.
    pub kube_system_uid: String,
}

/// The attributed host objects of one namespace of one Harvester: a Footprint holds thousands,
/// so what they share is written once.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectGroup {
    /// `namespace:name` of the cloud credential that reaches the Harvester.
    pub cloud_credential: String,
    pub namespace: String,
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["uid"]))]
    pub objects: Vec<AttributedObject>,
}

/// One attributed host object (its kind follows from its class).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttributedObject {
    pub name: String,
    pub uid: String,
    pub class: ObjectClass,
    pub evidence: Vec<Evidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cluster_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// A volume's guest reclaim policy or a snapshot's guest deletion policy, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<PolicySeen>,
}

impl FootprintStatus {
    /// The attributed host objects, one record each.
    pub fn records(&self) -> Vec<HostObjectRecord> {
        self.objects
            .iter()
            .flat_map(|group| {
                group.objects.iter().map(|object| HostObjectRecord {
                    cloud_credential: group.cloud_credential.clone(),
                    namespace: group.namespace.clone(),
                    name: object.name.clone(),
                    uid: object.uid.clone(),
                    class: object.class,
                    evidence: object.evidence.clone(),
                    guest_cluster_hint: object.guest_cluster_hint.clone(),
                    conflicts: object.conflicts.clone(),
                    guest_policy: object.guest_policy,
                })
            })
            .collect()
    }

    /// Records the attributed host objects, grouped by Harvester and namespace.
    pub fn set_records(&mut self, records: Vec<HostObjectRecord>) {
        let mut groups: std::collections::BTreeMap<(String, String), Vec<AttributedObject>> =
            std::collections::BTreeMap::new();
        for record in records {
            groups
                .entry((record.cloud_credential, record.namespace))
                .or_default()
                .push(AttributedObject {
                    name: record.name,
                    uid: record.uid,
                    class: record.class,
                    evidence: record.evidence,
                    guest_cluster_hint: record.guest_cluster_hint,
                    conflicts: record.conflicts,
                    guest_policy: record.guest_policy,
                });
        }
        self.objects = groups
            .into_iter()
            .map(|((cloud_credential, namespace), objects)| ObjectGroup {
                cloud_credential,
                namespace,
                objects,
            })
            .collect();
    }
}

/// The most a Footprint's status may take, serialized: a Kubernetes object must stay well under
/// etcd's 1.5 MiB, and a Footprint also carries its spec and metadata.
pub const STATUS_LIMIT: usize = 960 * 1024;
/// How many ledger entries a Footprint keeps; older ones fold into the counts.
pub const LEDGER_KEPT: usize = 100;

/// How many host objects of each sort the Footprint attributes, for `kubectl get footprints`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub volumes: usize,
    pub snapshots: usize,
    pub network_filesystems: usize,
    pub load_balancers: usize,
    /// Objects tied to another cluster too: never deleted.
    pub conflicts: usize,
}

impl Counts {
    pub fn of(records: &[HostObjectRecord]) -> Self {
        let count = |class: &[ObjectClass]| {
            records
                .iter()
                .filter(|record| class.contains(&record.class))
                .count()
        };
        Self {
            volumes: count(&[ObjectClass::Volume, ObjectClass::RwxVolume]),
            snapshots: count(&[ObjectClass::Snapshot]),
            network_filesystems: count(&[ObjectClass::NetworkFilesystem]),
            load_balancers: count(&[ObjectClass::LoadBalancer]),
            conflicts: records
                .iter()
                .filter(|record| !record.conflicts.is_empty())
                .count(),
        }
    }
}

/// A bounded record of deletions and keeps; the oldest entries fold into the counts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<LedgerEntry>,
    #[serde(default)]
    pub folded_deletions: u64,
    #[serde(default)]
    pub folded_keeps: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub time: Time,
    pub action: LedgerAction,
    /// `Kind namespace/name (uid)`.
    pub object: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum LedgerAction {
    /// Announced before the delete is made; becomes `Deleted` once a live read finds it gone.
    Deleting,
    /// Confirmed gone by a live read.
    Deleted,
    Kept,
}

/// Every CRD gleaner owns, for `gleaner crd` and for test worlds.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Footprint::crd()]
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            format!(
                "---\n{}",
                serde_norway::to_string(crd).expect("a CRD always serialises")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_is_gleaner_io_v1alpha1_namespaced_with_status() {
        let crd = Footprint::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("footprints.gleaner.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
    }

    #[test]
    fn identity_fields_use_the_contract_names() {
        let identity = serde_json::to_value(Identity {
            install_uuid: "u".into(),
            namespace: "fleet-default".into(),
            name: "c1".into(),
            provisioning_cluster_uid: "p".into(),
            capi_cluster_uid: Some("c".into()),
        })
        .unwrap();
        for key in [
            "installUUID",
            "namespace",
            "name",
            "provisioningClusterUID",
            "capiClusterUID",
        ] {
            assert!(identity.get(key).is_some(), "{key} in {identity}");
        }
    }

    #[test]
    fn status_lists_are_maps_keyed_for_server_side_apply() {
        let crd = serde_json::to_value(Footprint::crd()).unwrap();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        for (list, keys) in [
            ("conditions", serde_json::json!(["type"])),
            (
                "vms",
                serde_json::json!(["cloudCredential", "namespace", "name"]),
            ),
            (
                "objects",
                serde_json::json!(["cloudCredential", "namespace"]),
            ),
        ] {
            assert_eq!(status[list]["x-kubernetes-list-type"], "map", "{list}");
            assert_eq!(status[list]["x-kubernetes-list-map-keys"], keys, "{list}");
        }
    }

    #[test]
    fn a_footprint_without_its_capi_uid_has_no_core_identity_yet() {
        let mut identity = Identity {
            install_uuid: "u".into(),
            namespace: "fleet-default".into(),
            name: "c1".into(),
            provisioning_cluster_uid: "p".into(),
            capi_cluster_uid: None,
        };
        assert!(ClusterIdentity::try_from(&identity).is_err());
        identity.capi_cluster_uid = Some("c".into());
        let core = ClusterIdentity::try_from(&identity).unwrap();
        assert_eq!(core.readable(), "u/fleet-default/c1");
        assert_eq!(
            (core.provisioning_uid.as_str(), core.capi_uid.as_str()),
            ("p", "c")
        );
    }

    #[test]
    fn a_footprint_written_by_part_1_still_reads() {
        let written = serde_json::json!({
            "apiVersion": "gleaner.io/v1alpha1", "kind": "Footprint",
            "metadata": {"name": "p", "namespace": "gleaner-system"},
            "spec": {
                "identity": {"installUUID": "u", "namespace": "fleet-default", "name": "c1",
                             "provisioningClusterUID": "p", "capiClusterUID": "c"},
                "pools": [{"name": "pool1", "cloudCredential": "cattle-global-data:cc-1",
                           "vmNamespace": "default"}],
            },
            "status": {
                "phase": "Reclaiming",
                "conditions": [{"type": "HarvesterUnreachable", "status": "False",
                                "reason": "Reachable", "message": "",
                                "lastTransitionTime": "2026-11-30T10:00:00Z"}],
                "vms": [{"machine": "m", "cloudCredential": "cattle-global-data:cc-1",
                         "namespace": "default", "name": "vm", "uid": "v",
                         "intent": "ClusterDeletion"}],
                "would": ["would write intent ClusterDeletion on VM default/vm"],
            },
        });
        let footprint: Footprint = serde_json::from_value(written).unwrap();
        let status = footprint.status.unwrap();
        assert_eq!(
            status.vms[0].intent,
            Some(gleaner_core::Reason::ClusterDeletion)
        );
        assert!(status.records().is_empty());
        assert_eq!(status.phase, Some(Phase::Reclaiming));
    }

    #[test]
    fn the_yaml_stream_parses_back_into_the_crds() {
        let yaml = crds_yaml();
        let parsed: Vec<CustomResourceDefinition> = serde_norway::Deserializer::from_str(&yaml)
            .map(|document| CustomResourceDefinition::deserialize(document).unwrap())
            .collect();
        assert_eq!(parsed, crds());
    }
}
