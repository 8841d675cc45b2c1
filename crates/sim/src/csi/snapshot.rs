//! Guest snapshots (design.md §2): a user's guest VolumeSnapshot and the host VolumeSnapshot the
//! driver's CreateSnapshot makes in its own namespace, from the host PVC, labelled with that
//! PVC's StorageClass and volume mode. No snapshot controller runs here; the stand-in in
//! [`crate::snapshots`] plays it where a test wants one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client, api::DynamicObject};
use serde_json::{Value, json};

use super::{
    Csi, GUEST_DRIVER, GUEST_USER, GuestVolume, HARVESTER_CSI, HostObject, LONGHORN_DRIVER, Named,
    api::{create_or_get, delete, get_opt, wait_gone},
};
use crate::{Error, Result, keys, kinds};

/// The guest VolumeSnapshotClass of the Harvester CSI driver (inference: its name).
pub const GUEST_SNAPSHOT_CLASS: &str = "harvester-snapshot";
/// The host VolumeSnapshotClass CreateSnapshot names for Longhorn volumes (inference: Harvester's
/// `csi-driver-config` default, a Longhorn in-cluster snapshot class).
pub const HOST_SNAPSHOT_CLASS: &str = "longhorn-snapshot";

/// A guest snapshot: the user's VolumeSnapshot and the host one made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSnapshot {
    pub guest_namespace: String,
    pub guest: Named,
    /// The driver's namespace (the Csi's host namespace).
    pub host_namespace: String,
    /// `snapshot-<guest VolumeSnapshot UID>`, the name the external-snapshotter asks
    /// CreateSnapshot for (inference: the driver names the host VolumeSnapshot so).
    pub host: Named,
}

impl GuestSnapshot {
    /// The host VolumeSnapshot, as made.
    pub fn host_object(&self) -> HostObject {
        HostObject::new(kinds::volume_snapshot(), &self.host_namespace, &self.host)
    }
}

impl Csi {
    /// A user's guest VolumeSnapshot of `volume` named `name`, then CreateSnapshot's host
    /// VolumeSnapshot of its host PVC; each snapshot class is made if missing. Idempotent.
    pub async fn snapshot(&self, volume: &GuestVolume, name: &str) -> Result<GuestSnapshot> {
        ensure_class(&self.guest, GUEST_SNAPSHOT_CLASS, GUEST_DRIVER, json!({})).await?;
        let guest = self.create_guest_snapshot(volume, name).await?;
        ensure_class(
            &self.harvester,
            HOST_SNAPSHOT_CLASS,
            LONGHORN_DRIVER,
            json!({"type": "snap"}),
        )
        .await?;
        let host = self.create_host_snapshot(volume, &guest).await?;
        Ok(GuestSnapshot {
            guest_namespace: volume.guest_namespace.clone(),
            guest,
            host_namespace: self.host_namespace.clone(),
            host,
        })
    }

    /// A user deletes the guest VolumeSnapshot; DeleteSnapshot deletes the host one (returning
    /// once the delete is accepted, inference). Waits until the guest VolumeSnapshot is gone.
    pub async fn delete_snapshot(&self, snapshot: &GuestSnapshot) -> Result<()> {
        let guest = snapshots(&self.guest, &snapshot.guest_namespace);
        let guest_path = format!("{}/{}", snapshot.guest_namespace, snapshot.guest.name);
        delete(&guest, &snapshot.guest.name, "guest VolumeSnapshot").await?;
        self.env.journal.record(
            GUEST_USER,
            format!("deleted guest VolumeSnapshot {guest_path}"),
        );
        let host = snapshots(&self.harvester, &snapshot.host_namespace);
        delete(&host, &snapshot.host.name, "host VolumeSnapshot").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "DeleteSnapshot: deleted host VolumeSnapshot {}/{}",
                snapshot.host_namespace, snapshot.host.name
            ),
        );
        wait_gone(&guest, &snapshot.guest.name, "guest VolumeSnapshot").await
    }

    async fn create_guest_snapshot(&self, volume: &GuestVolume, name: &str) -> Result<Named> {
        let namespace = &volume.guest_namespace;
        let object = snapshot_of(
            name,
            namespace,
            &volume.guest_pvc.name,
            GUEST_SNAPSHOT_CLASS,
        );
        let made = create_or_get(
            &snapshots(&self.guest, namespace),
            &object,
            "VolumeSnapshot",
        )
        .await?;
        self.env.journal.record(
            GUEST_USER,
            format!("created guest VolumeSnapshot {namespace}/{name}"),
        );
        Named::of(&made)
    }

    /// CreateSnapshot: reads the host PVC for the labels, then makes the host VolumeSnapshot.
    async fn create_host_snapshot(&self, volume: &GuestVolume, guest: &Named) -> Result<Named> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.host_namespace);
        let claim_name = &volume.host_pvc.name;
        let claim = get_opt(&claims, claim_name, "host PVC")
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "CreateSnapshot: no host PVC {}/{claim_name}",
                    self.host_namespace
                ))
            })?;
        let name = format!("snapshot-{}", guest.uid);
        let mut object = snapshot_of(&name, &self.host_namespace, claim_name, HOST_SNAPSHOT_CLASS);
        object.metadata.labels = Some(source_labels(&claim)?);
        let made = create_or_get(
            &snapshots(&self.harvester, &self.host_namespace),
            &object,
            "VolumeSnapshot",
        )
        .await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "CreateSnapshot: created host VolumeSnapshot {}/{name}",
                self.host_namespace
            ),
        );
        Named::of(&made)
    }
}

/// The labels CreateSnapshot puts on the host VolumeSnapshot, from its source PVC.
fn source_labels(claim: &PersistentVolumeClaim) -> Result<BTreeMap<String, String>> {
    let spec = claim.spec.as_ref();
    let class = spec.and_then(|spec| spec.storage_class_name.clone());
    let mode = spec.and_then(|spec| spec.volume_mode.clone());
    let (Some(class), Some(mode)) = (class, mode) else {
        return Err(Error::Invalid(format!(
            "CreateSnapshot: host PVC {} names no StorageClass or volume mode",
            claim.metadata.name.as_deref().unwrap_or_default()
        )));
    };
    Ok(BTreeMap::from([
        (keys::LABEL_SNAP_HOST_SC.to_owned(), class),
        (keys::LABEL_SNAP_HOST_VOLUME_MODE.to_owned(), mode),
    ]))
}

/// A VolumeSnapshot of the PVC `claim`.
fn snapshot_of(name: &str, namespace: &str, claim: &str, class: &str) -> DynamicObject {
    DynamicObject::new(name, &kinds::volume_snapshot())
        .within(namespace)
        .data(json!({"spec": {
            "source": {"persistentVolumeClaimName": claim},
            "volumeSnapshotClassName": class,
        }}))
}

/// A VolumeSnapshotClass (deletionPolicy Delete), made if missing.
async fn ensure_class(client: &Client, name: &str, driver: &str, parameters: Value) -> Result<()> {
    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &kinds::volume_snapshot_class());
    let class = DynamicObject::new(name, &kinds::volume_snapshot_class()).data(json!({
        "driver": driver,
        "deletionPolicy": "Delete",
        "parameters": parameters,
    }));
    create_or_get(&classes, &class, "VolumeSnapshotClass").await?;
    Ok(())
}

fn snapshots(client: &Client, namespace: &str) -> Api<DynamicObject> {
    kinds::namespaced(client, namespace, &kinds::volume_snapshot())
}
