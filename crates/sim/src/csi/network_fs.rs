//! The `NetworkFilesystem` behind a guest RWX volume (PROVENANCE.md, "Added afterwards"): the
//! driver's CreateVolume makes it in `harvester-system`, named after the host PV, with
//! `desiredState: Disabled`; its DeleteVolume deletes it before the host PVC. No
//! networkfs-manager runs here, so its status stays unset.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DynamicObject};
use serde_json::json;

use super::{
    Csi, HARVESTER_CSI, LONGHORN_DRIVER, Named,
    api::{create_or_get, delete},
};
use gleaner_world::testing::ensure_namespace;

use crate::{Result, kinds};

/// Where the driver makes every NetworkFilesystem.
pub const NETWORK_FILESYSTEM_NAMESPACE: &str = "harvester-system";

/// Whether DeleteVolume has a NetworkFilesystem to delete for this host PVC: Filesystem mode,
/// ReadWriteMany. (Upstream also requires a Longhorn StorageClass; every host class here is.)
pub(super) fn serves(claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = &claim.spec else {
        return false;
    };
    let filesystem = spec.volume_mode.as_deref().unwrap_or("Filesystem") == "Filesystem";
    let rwx = spec
        .access_modes
        .iter()
        .flatten()
        .any(|mode| mode == "ReadWriteMany");
    filesystem && rwx
}

impl Csi {
    /// CreateVolume, once the host PVC is bound: the NetworkFilesystem named after its PV.
    /// Idempotent.
    pub(super) async fn create_network_fs(&self, host_pv: &str) -> Result<Named> {
        ensure_namespace(&self.harvester, NETWORK_FILESYSTEM_NAMESPACE).await?;
        let object = DynamicObject::new(host_pv, &kinds::network_filesystem())
            .within(NETWORK_FILESYSTEM_NAMESPACE)
            .data(json!({"spec": {
                "desiredState": "Disabled",
                "networkFSName": host_pv,
                // inference: the driver names Longhorn as the provisioner.
                "provisioner": LONGHORN_DRIVER,
            }}));
        let made = create_or_get(&network_filesystems(self), &object, "NetworkFilesystem").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "CreateVolume: created NetworkFilesystem {NETWORK_FILESYSTEM_NAMESPACE}/{host_pv}"
            ),
        );
        Named::of(&made)
    }

    /// DeleteVolume's first step for an RWX volume. One already gone counts as deleted.
    pub(super) async fn delete_network_fs(&self, host_pv: &str) -> Result<()> {
        delete(&network_filesystems(self), host_pv, "NetworkFilesystem").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "DeleteVolume: deleted NetworkFilesystem {NETWORK_FILESYSTEM_NAMESPACE}/{host_pv}"
            ),
        );
        Ok(())
    }
}

fn network_filesystems(csi: &Csi) -> Api<DynamicObject> {
    kinds::namespaced(
        &csi.harvester,
        NETWORK_FILESYSTEM_NAMESPACE,
        &kinds::network_filesystem(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;

    use super::*;

    fn claim(volume_mode: Option<&str>, access_mode: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![access_mode.to_owned()]),
                volume_mode: volume_mode.map(str::to_owned),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn only_filesystem_rwx_claims_are_served_over_nfs() {
        assert!(serves(&claim(Some("Filesystem"), "ReadWriteMany")));
        assert!(
            serves(&claim(None, "ReadWriteMany")),
            "Filesystem is the default"
        );
        assert!(!serves(&claim(Some("Block"), "ReadWriteMany")));
        assert!(!serves(&claim(Some("Filesystem"), "ReadWriteOnce")));
        assert!(!serves(&PersistentVolumeClaim::default()));
    }
}
