//! `gleaner.io/v1alpha1` `Footprint`: the durable record of what one Harvester-backed guest
//! cluster has on Harvester and of everything gleaner did about it (design.md §5). It outlives
//! the cluster's Rancher objects, which is what lets cleanup finish after an outage.

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
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FootprintSpec {
    pub identity: Identity,
    #[serde(default)]
    pub pools: Vec<Pool>,
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

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FootprintStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The cluster's VMs as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmRecord>,
    /// Every host object attributed to the cluster, by UID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<HostObjectRecord>,
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

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VmRecord {
    /// The CAPI Machine that last named it.
    pub machine: String,
    /// `namespace:name` of the cloud credential that reaches its Harvester.
    pub cloud_credential: String,
    pub namespace: String,
    pub name: String,
    /// Its UID on Harvester, once seen there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The reason of gleaner's intent on it, if it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Why its intent annotation could not be read, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_problem: Option<String>,
}

/// A host object and why gleaner believes it is the cluster's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostObjectRecord {
    pub cloud_credential: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub class: String,
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_reclaim_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_reclaim_policy_seen: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<String>,
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
    fn the_yaml_stream_parses_back_into_the_crds() {
        let yaml = crds_yaml();
        let parsed: Vec<CustomResourceDefinition> = serde_norway::Deserializer::from_str(&yaml)
            .map(|document| CustomResourceDefinition::deserialize(document).unwrap())
            .collect();
        assert_eq!(parsed, crds());
    }
}
