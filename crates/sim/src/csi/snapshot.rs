//! Guest snapshots (design.md §2): a user's guest VolumeSnapshot; the cluster-scoped guest
//! VolumeSnapshotContent the guest's external-snapshotter binds it to, whose
//! `status.snapshotHandle` names the host VolumeSnapshot; and that host VolumeSnapshot, which the
//! driver's CreateSnapshot makes in its own namespace from the host PVC, labelled with that
//! PVC's StorageClass and volume mode. The content's deletionPolicy comes from the guest
//! VolumeSnapshotClass: deleting the guest snapshot of a `Delete` content deletes the content
//! and (DeleteSnapshot) the host VolumeSnapshot; a `Retain` content and its host VolumeSnapshot
//! stay. Where the world runs the real snapshot-controller in the guest, it makes and deletes
//! the contents and the guest's csi-snapshotter sidecar ([`crate::snapshotter`]) calls this
//! driver's CreateSnapshot and DeleteSnapshot; elsewhere the driver plays the guest's whole
//! external-snapshotter in one step. On Harvester the real snapshot-controller (or the stand-in
//! in [`crate::snapshots`]) handles the host VolumeSnapshots.

use std::{collections::BTreeMap, time::Duration};

use gleaner_world::Player;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client, ResourceExt as _, api::DynamicObject};
use serde_json::{Value, json};

use super::{
    Csi, GUEST_DRIVER, GUEST_USER, GuestVolume, HARVESTER_CSI, HostObject, LONGHORN_DRIVER, Named,
    Reclaim,
    api::{create_or_get, delete, drop_finalizer, get_opt, patch_status, wait_gone},
};
use crate::{
    Error, Result, keys, kinds,
    snapshots::{Class, content_for},
};

/// The guest VolumeSnapshotClass of the Harvester CSI driver (inference: its name).
pub const GUEST_SNAPSHOT_CLASS: &str = "harvester-snapshot";
/// A guest VolumeSnapshotClass of the same driver whose contents are retained (inference: the
/// name a user would give it).
pub const GUEST_RETAINED_SNAPSHOT_CLASS: &str = "harvester-snapshot-retain";
/// The host VolumeSnapshotClass CreateSnapshot names for Longhorn volumes (inference: Harvester's
/// `csi-driver-config` default, a Longhorn in-cluster snapshot class).
pub const HOST_SNAPSHOT_CLASS: &str = "longhorn-snapshot";
/// Journal actor of the guest's external-snapshotter (snapshot controller and sidecar).
const GUEST_SNAPSHOTTER: &str = "guest-snapshotter";
/// How long the guest's real snapshot-controller and sidecar may take to cut a snapshot.
const CUT_DEADLINE: Duration = Duration::from_secs(60);
const CUT_POLL: Duration = Duration::from_millis(100);

/// A guest snapshot: the user's VolumeSnapshot, its content and the host one made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSnapshot {
    pub guest_namespace: String,
    pub guest: Named,
    /// The guest VolumeSnapshotContent, `snapcontent-<guest VolumeSnapshot UID>`.
    pub content: Named,
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
    /// A user's guest VolumeSnapshot of `volume` named `name`, in the guest class whose
    /// contents have deletionPolicy `policy`; CreateSnapshot's host VolumeSnapshot of its host
    /// PVC; then the guest content, ready, bound to the guest VolumeSnapshot. Each snapshot
    /// class is made if missing. Idempotent.
    pub async fn snapshot(
        &self,
        volume: &GuestVolume,
        name: &str,
        policy: Reclaim,
    ) -> Result<GuestSnapshot> {
        let guest_class = guest_snapshot_class(policy);
        ensure_class(&self.guest, &guest_class, json!({})).await?;
        ensure_class(
            &self.harvester,
            &host_snapshot_class(),
            json!({"type": "snap"}),
        )
        .await?;
        let guest = self
            .create_guest_snapshot(volume, name, &guest_class.name)
            .await?;
        let (content, host) = match self.guest_snapshots {
            Player::Real => self.wait_until_cut(&volume.guest_namespace, name).await?,
            Player::Sim => {
                let guest_named = Named::of(&guest)?;
                let host = self
                    .create_host_snapshot(
                        &volume.host_pvc.name,
                        &format!("snapshot-{}", guest_named.uid),
                    )
                    .await?;
                let content = self
                    .bind_guest_snapshot(volume, &guest, &guest_class, &host)
                    .await?;
                (content, host)
            }
        };
        Ok(GuestSnapshot {
            guest_namespace: volume.guest_namespace.clone(),
            guest: Named::of(&guest)?,
            content,
            host_namespace: self.host_namespace.clone(),
            host,
        })
    }

    /// A user deletes the guest VolumeSnapshot. If its content's deletionPolicy (read first, so
    /// a policy changed since counts) is Delete, the guest's snapshot controller deletes the
    /// content, DeleteSnapshot deletes the host VolumeSnapshot (returning once the delete is
    /// accepted, inference) and the sidecar then lets the content go; a Retain content and the
    /// host VolumeSnapshot stay. Waits until the guest VolumeSnapshot (and a deleted content)
    /// is gone.
    pub async fn delete_snapshot(&self, snapshot: &GuestSnapshot) -> Result<()> {
        let policy = self.content_policy(snapshot).await?;
        let guest = snapshots(&self.guest, &snapshot.guest_namespace);
        let guest_path = format!("{}/{}", snapshot.guest_namespace, snapshot.guest.name);
        delete(&guest, &snapshot.guest.name, "guest VolumeSnapshot").await?;
        self.env.journal.record(
            GUEST_USER,
            format!("deleted guest VolumeSnapshot {guest_path}"),
        );
        match (self.guest_snapshots, policy) {
            (Player::Real, Some(Reclaim::Delete)) => {
                wait_gone(
                    &self.guest_contents(),
                    &snapshot.content.name,
                    "guest VolumeSnapshotContent",
                )
                .await?;
            }
            (Player::Sim, Some(Reclaim::Delete)) => {
                self.delete_content_and_host_snapshot(snapshot).await?;
            }
            (_, Some(Reclaim::Retain) | None) => {}
        }
        wait_gone(&guest, &snapshot.guest.name, "guest VolumeSnapshot").await
    }

    /// With the guest's real snapshot-controller: waits until the guest VolumeSnapshot is bound
    /// and ready, and returns its content and the host VolumeSnapshot its handle names.
    async fn wait_until_cut(&self, namespace: &str, name: &str) -> Result<(Named, Named)> {
        let guest = snapshots(&self.guest, namespace);
        let deadline = tokio::time::Instant::now() + CUT_DEADLINE;
        loop {
            let snapshot = get_opt(&guest, name, "guest VolumeSnapshot").await?;
            let bound = snapshot.as_ref().and_then(|snapshot| {
                let status = &snapshot.data["status"];
                (status["readyToUse"] == Value::Bool(true))
                    .then(|| status["boundVolumeSnapshotContentName"].as_str())
                    .flatten()
            });
            if let Some(content_name) = bound {
                let content = get_opt(
                    &self.guest_contents(),
                    content_name,
                    "guest VolumeSnapshotContent",
                )
                .await?;
                let handle = content
                    .as_ref()
                    .and_then(|content| content.data["status"]["snapshotHandle"].as_str());
                if let (Some(content), Some(handle)) = (&content, handle) {
                    let host = get_opt(
                        &snapshots(&self.harvester, &self.host_namespace),
                        handle,
                        "host VolumeSnapshot",
                    )
                    .await?
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "guest VolumeSnapshotContent {content_name} names host VolumeSnapshot {handle}, which does not exist"
                        ))
                    })?;
                    return Ok((Named::of(content)?, Named::of(&host)?));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "guest VolumeSnapshot {namespace}/{name} is not ready {}s after its creation",
                    CUT_DEADLINE.as_secs()
                )));
            }
            tokio::time::sleep(CUT_POLL).await;
        }
    }

    async fn create_guest_snapshot(
        &self,
        volume: &GuestVolume,
        name: &str,
        class: &str,
    ) -> Result<DynamicObject> {
        let namespace = &volume.guest_namespace;
        let object = snapshot_of(name, namespace, &volume.guest_pvc.name, class);
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
        Ok(made)
    }

    /// CreateSnapshot of the volume `claim_name` (the host PVC, the guest PV's volume handle):
    /// reads the host PVC for the labels, then makes the host VolumeSnapshot `name`.
    pub(crate) async fn create_host_snapshot(&self, claim_name: &str, name: &str) -> Result<Named> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.host_namespace);
        let claim = get_opt(&claims, claim_name, "host PVC")
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "CreateSnapshot: no host PVC {}/{claim_name}",
                    self.host_namespace
                ))
            })?;
        let mut object = snapshot_of(name, &self.host_namespace, claim_name, HOST_SNAPSHOT_CLASS);
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

    /// The guest's external-snapshotter around CreateSnapshot: the content of the guest
    /// snapshot (its source the guest PV's volume handle, the host PVC), ready with the host
    /// VolumeSnapshot as its snapshot handle, and the guest VolumeSnapshot bound to it.
    async fn bind_guest_snapshot(
        &self,
        volume: &GuestVolume,
        guest: &DynamicObject,
        class: &Class,
        host: &Named,
    ) -> Result<Named> {
        let contents = self.guest_contents();
        let object = content_for(guest, class, &volume.host_pvc.name)?;
        let content = create_or_get(&contents, &object, "guest VolumeSnapshotContent").await?;
        let content_name = content.name_any();
        let status = json!({"snapshotHandle": host.name, "readyToUse": true});
        patch_status(
            &contents,
            &content_name,
            status,
            "guest VolumeSnapshotContent",
        )
        .await?;
        let status = json!({"boundVolumeSnapshotContentName": content_name, "readyToUse": true});
        let guest_name = guest.name_any();
        patch_status(
            &snapshots(&self.guest, &volume.guest_namespace),
            &guest_name,
            status,
            "guest VolumeSnapshot",
        )
        .await?;
        self.env.journal.record(
            GUEST_SNAPSHOTTER,
            format!(
                "bound guest VolumeSnapshot {}/{guest_name} to VolumeSnapshotContent {content_name} (snapshot handle {})",
                volume.guest_namespace, host.name
            ),
        );
        Named::of(&content)
    }

    /// The deletionPolicy of the snapshot's guest content; None once the content is gone.
    async fn content_policy(&self, snapshot: &GuestSnapshot) -> Result<Option<Reclaim>> {
        let content = get_opt(
            &self.guest_contents(),
            &snapshot.content.name,
            "guest VolumeSnapshotContent",
        )
        .await?;
        Ok(content.and_then(|content| {
            content.data["spec"]["deletionPolicy"]
                .as_str()
                .and_then(Reclaim::parse)
        }))
    }

    async fn delete_content_and_host_snapshot(&self, snapshot: &GuestSnapshot) -> Result<()> {
        let contents = self.guest_contents();
        let content = &snapshot.content.name;
        delete(&contents, content, "guest VolumeSnapshotContent").await?;
        self.env.journal.record(
            GUEST_SNAPSHOTTER,
            format!("deleted VolumeSnapshotContent {content}"),
        );
        self.delete_host_snapshot(&snapshot.host.name).await?;
        drop_finalizer(
            &contents,
            content,
            keys::FINALIZER_SNAPSHOT_CONTENT_BOUND,
            "guest VolumeSnapshotContent",
        )
        .await?;
        wait_gone(&contents, content, "guest VolumeSnapshotContent").await
    }

    /// DeleteSnapshot: deletes the host VolumeSnapshot the handle names (returning once the
    /// delete is accepted, inference).
    pub(crate) async fn delete_host_snapshot(&self, handle: &str) -> Result<()> {
        let host = snapshots(&self.harvester, &self.host_namespace);
        delete(&host, handle, "host VolumeSnapshot").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "DeleteSnapshot: deleted host VolumeSnapshot {}/{handle}",
                self.host_namespace
            ),
        );
        Ok(())
    }

    fn guest_contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.guest.clone(), &kinds::volume_snapshot_content())
    }
}

/// The guest VolumeSnapshotClass whose contents get deletionPolicy `policy`.
fn guest_snapshot_class(policy: Reclaim) -> Class {
    let name = match policy {
        Reclaim::Delete => GUEST_SNAPSHOT_CLASS,
        Reclaim::Retain => GUEST_RETAINED_SNAPSHOT_CLASS,
    };
    Class {
        name: name.to_owned(),
        driver: GUEST_DRIVER.to_owned(),
        deletion_policy: policy.as_str().to_owned(),
    }
}

fn host_snapshot_class() -> Class {
    Class {
        name: HOST_SNAPSHOT_CLASS.to_owned(),
        driver: LONGHORN_DRIVER.to_owned(),
        deletion_policy: Reclaim::Delete.as_str().to_owned(),
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

/// A VolumeSnapshotClass, made if missing.
async fn ensure_class(client: &Client, class: &Class, parameters: Value) -> Result<()> {
    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &kinds::volume_snapshot_class());
    let class = DynamicObject::new(&class.name, &kinds::volume_snapshot_class()).data(json!({
        "driver": class.driver,
        "deletionPolicy": class.deletion_policy,
        "parameters": parameters,
    }));
    create_or_get(&classes, &class, "VolumeSnapshotClass").await?;
    Ok(())
}

fn snapshots(client: &Client, namespace: &str) -> Api<DynamicObject> {
    kinds::namespaced(client, namespace, &kinds::volume_snapshot())
}
