//! Who a guest cluster is (design.md §5): the Rancher installation, the name, and the UIDs of
//! both Cluster objects. A re-created cluster with the same name is a different identity.

use serde::{Deserialize, Serialize};

/// The identity of one Harvester-backed guest cluster, as recorded in its Footprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// The Rancher installation UUID (the `install-uuid` Setting).
    pub install_uuid: String,
    /// The namespace of both Cluster objects, usually `fleet-default`.
    pub namespace: String,
    /// The name of both Cluster objects.
    pub name: String,
    /// The UID of the `provisioning.cattle.io` Cluster.
    pub provisioning_uid: String,
    /// The UID of the `cluster.x-k8s.io` Cluster.
    pub capi_uid: String,
}

impl ClusterIdentity {
    /// `<install uuid>/<namespace>/<name>`: what gleaner writes in `gleaner.io/cluster`.
    pub fn readable(&self) -> String {
        format!("{}/{}/{}", self.install_uuid, self.namespace, self.name)
    }

    /// The name of this cluster's Footprint: the provisioning Cluster's UID.
    pub fn footprint_name(&self) -> &str {
        &self.provisioning_uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClusterIdentity {
        ClusterIdentity {
            install_uuid: "3f0c9a2e-install".into(),
            namespace: "fleet-default".into(),
            name: "gc31".into(),
            provisioning_uid: "prov-uid-1".into(),
            capi_uid: "capi-uid-1".into(),
        }
    }

    #[test]
    fn readable_identity_is_install_namespace_name() {
        assert_eq!(identity().readable(), "3f0c9a2e-install/fleet-default/gc31");
    }

    #[test]
    fn footprint_is_named_by_the_provisioning_cluster_uid() {
        assert_eq!(identity().footprint_name(), "prov-uid-1");
    }

    #[test]
    fn identity_serializes_in_camel_case() {
        let json = serde_json::to_value(identity()).unwrap();
        assert_eq!(json["installUuid"], "3f0c9a2e-install");
        assert_eq!(json["provisioningUid"], "prov-uid-1");
        assert_eq!(json["capiUid"], "capi-uid-1");
    }
}
