//! A stand-in for the external-snapshotter's snapshot controller (with its csi-snapshotter
//! sidecar's share) on one namespace of a cluster, so tests sharing a world stay apart. For what
//! gleaner sees, it does what upstream does: it protects every VolumeSnapshot with
//! [`FINALIZER_SNAPSHOT_AS_SOURCE`], binds it to a cluster-scoped VolumeSnapshotContent
//! `snapcontent-<snapshot UID>` (deletionPolicy from the class, protected by
//! [`FINALIZER_SNAPSHOT_CONTENT_BOUND`] whatever the policy), marks both ready, then adds [`FINALIZER_SNAPSHOT_BOUND`]. When a
//! VolumeSnapshot is deleting, it deletes a Delete content, then removes every finalizer it added.
//! No physical snapshot is taken; restores (which hold the as-source finalizer) are not simulated.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use crate::{
    Env, Error, Result,
    controller::{self, has_finalizer, is_deleting, name, remove_finalizer},
    csi::api::{create_or_get, delete, get_opt, patch_status},
    error::KubeContext,
    keys::{
        FINALIZER_SNAPSHOT_AS_SOURCE, FINALIZER_SNAPSHOT_BOUND, FINALIZER_SNAPSHOT_CONTENT_BOUND,
    },
    kinds,
    tasks::Tasks,
};

/// Journal actor of the stand-in.
pub const SNAPSHOT_CONTROLLER: &str = "snapshot-controller";

/// Runs the stand-in for the VolumeSnapshots of `namespace` until `tasks` is dropped.
pub fn spawn(client: Client, namespace: &str, env: Env, tasks: &mut Tasks) {
    let resource = kinds::volume_snapshot();
    let api = kinds::namespaced(&client, namespace, &resource);
    let context = Arc::new(Context {
        client,
        namespace: namespace.to_owned(),
        env,
    });
    tasks.spawn(controller::run(api, resource, context, reconcile));
}

struct Context {
    client: Client,
    namespace: String,
    env: Env,
}

/// One step per call; each write is a watch event that brings the next.
async fn reconcile(snapshot: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let snapshot = snapshot.as_ref();
    if is_deleting(snapshot) {
        context.release(snapshot).await?;
    } else if !has_finalizer(snapshot, FINALIZER_SNAPSHOT_AS_SOURCE) {
        context
            .add_finalizer(snapshot, FINALIZER_SNAPSHOT_AS_SOURCE)
            .await?;
    } else if bound_content(snapshot).is_none() {
        context.bind(snapshot).await?;
    } else if !has_finalizer(snapshot, FINALIZER_SNAPSHOT_BOUND) {
        context
            .add_finalizer(snapshot, FINALIZER_SNAPSHOT_BOUND)
            .await?;
    }
    Ok(Action::await_change())
}

impl Context {
    fn snapshots(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.client, &self.namespace, &kinds::volume_snapshot())
    }

    fn contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &kinds::volume_snapshot_content())
    }

    fn path(&self, snapshot: &DynamicObject) -> String {
        format!("{}/{}", self.namespace, name(snapshot))
    }

    fn record(&self, what: String) {
        self.env.journal.record(SNAPSHOT_CONTROLLER, what);
    }

    async fn add_finalizer(&self, snapshot: &DynamicObject, finalizer: &str) -> Result<()> {
        let mut finalizers = snapshot.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(finalizer.to_owned());
        self.set_finalizers(snapshot, &finalizers).await?;
        self.record(format!(
            "added finalizer {finalizer} to VolumeSnapshot {}",
            self.path(snapshot)
        ));
        Ok(())
    }

    /// Dynamic provisioning: the content, both statuses, bound both ways.
    async fn bind(&self, snapshot: &DynamicObject) -> Result<()> {
        let class = self.class(snapshot).await?;
        let handle = self.volume_handle(snapshot).await?;
        let content = content_for(snapshot, &class, &handle)?;
        let content_name = name(&content).to_owned();
        let contents = self.contents();
        create_or_get(&contents, &content, "VolumeSnapshotContent").await?;
        patch_status(
            &contents,
            &content_name,
            json!({"readyToUse": true}),
            "VolumeSnapshotContent",
        )
        .await?;
        let status = json!({
            "boundVolumeSnapshotContentName": content_name,
            "creationTime": snapshot.metadata.creation_timestamp,
            "readyToUse": true,
        });
        patch_status(&self.snapshots(), name(snapshot), status, "VolumeSnapshot").await?;
        self.record(format!(
            "bound VolumeSnapshot {} to VolumeSnapshotContent {content_name}",
            self.path(snapshot)
        ));
        Ok(())
    }

    /// The snapshot's class, which must exist (upstream's default-class lookup is not simulated).
    async fn class(&self, snapshot: &DynamicObject) -> Result<Class> {
        let class_name = text(&snapshot.data, "/spec/volumeSnapshotClassName")
            .ok_or_else(|| self.invalid(snapshot, "names no VolumeSnapshotClass"))?;
        let classes = Api::all_with(self.client.clone(), &kinds::volume_snapshot_class());
        let class: DynamicObject = get_opt(&classes, class_name, "VolumeSnapshotClass")
            .await?
            .ok_or_else(|| self.invalid(snapshot, &format!("has no class {class_name}")))?;
        let field = |pointer| {
            text(&class.data, pointer)
                .map(str::to_owned)
                .ok_or_else(|| self.invalid(snapshot, &format!("has a class without {pointer}")))
        };
        Ok(Class {
            name: class_name.to_owned(),
            driver: field("/driver")?,
            deletion_policy: field("/deletionPolicy")?,
        })
    }

    /// The CSI volume handle of the source PVC's PV.
    async fn volume_handle(&self, snapshot: &DynamicObject) -> Result<String> {
        let claim_name = text(&snapshot.data, "/spec/source/persistentVolumeClaimName")
            .ok_or_else(|| self.invalid(snapshot, "has no source PVC"))?;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let volume_name = get_opt(&claims, claim_name, "PVC")
            .await?
            .and_then(|claim| claim.spec?.volume_name)
            .ok_or_else(|| self.invalid(snapshot, &format!("has no bound PVC {claim_name}")))?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        get_opt(&volumes, &volume_name, "PV")
            .await?
            .and_then(|volume| Some(volume.spec?.csi?.volume_handle))
            .ok_or_else(|| self.invalid(snapshot, &format!("has no CSI PV {volume_name}")))
    }

    /// A deleting VolumeSnapshot: its Delete content goes, then every finalizer it was given.
    async fn release(&self, snapshot: &DynamicObject) -> Result<()> {
        if let Some(content) = bound_content(snapshot) {
            self.delete_content(content).await?;
        }
        let ours = [FINALIZER_SNAPSHOT_AS_SOURCE, FINALIZER_SNAPSHOT_BOUND];
        let finalizers = snapshot.metadata.finalizers.clone().unwrap_or_default();
        let (removed, kept): (Vec<String>, Vec<String>) = finalizers
            .into_iter()
            .partition(|finalizer| ours.contains(&finalizer.as_str()));
        if removed.is_empty() {
            return Ok(());
        }
        self.set_finalizers(snapshot, &kept).await?;
        self.record(format!(
            "removed finalizers {} from VolumeSnapshot {}",
            removed.join(", "),
            self.path(snapshot)
        ));
        Ok(())
    }

    /// The snapshot controller deletes a Delete content; the sidecar, once DeleteSnapshot is
    /// done, takes the content's finalizer off. A Retain content stays.
    async fn delete_content(&self, content_name: &str) -> Result<()> {
        let contents = self.contents();
        let what = "VolumeSnapshotContent";
        let Some(content) = get_opt(&contents, content_name, what).await? else {
            return Ok(());
        };
        if text(&content.data, "/spec/deletionPolicy") != Some("Delete") {
            return Ok(());
        }
        if !is_deleting(&content) {
            delete(&contents, content_name, what).await?;
            self.record(format!("deleted VolumeSnapshotContent {content_name}"));
        }
        let content = get_opt(&contents, content_name, what).await?;
        if let Some(content) =
            content.filter(|content| has_finalizer(content, FINALIZER_SNAPSHOT_CONTENT_BOUND))
        {
            remove_finalizer(&contents, &content, FINALIZER_SNAPSHOT_CONTENT_BOUND).await?;
            self.record(format!(
                "removed finalizer {FINALIZER_SNAPSHOT_CONTENT_BOUND} from VolumeSnapshotContent {content_name}"
            ));
        }
        Ok(())
    }

    /// A merge patch carrying the resourceVersion it read: a concurrent change fails it with a
    /// conflict (and the reconcile retries) instead of being overwritten.
    async fn set_finalizers(&self, snapshot: &DynamicObject, finalizers: &[String]) -> Result<()> {
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": snapshot.metadata.resource_version,
        }});
        self.snapshots()
            .patch(
                name(snapshot),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .context(|| {
                format!(
                    "cannot set the finalizers of VolumeSnapshot {}",
                    self.path(snapshot)
                )
            })?;
        Ok(())
    }

    fn invalid(&self, snapshot: &DynamicObject, problem: &str) -> Error {
        Error::Invalid(format!("VolumeSnapshot {} {problem}", self.path(snapshot)))
    }
}

/// What binding needs of a VolumeSnapshotClass.
pub(crate) struct Class {
    pub(crate) name: String,
    pub(crate) driver: String,
    pub(crate) deletion_policy: String,
}

/// The VolumeSnapshotContent the snapshot controller makes for a dynamic snapshot.
pub(crate) fn content_for(
    snapshot: &DynamicObject,
    class: &Class,
    volume_handle: &str,
) -> Result<DynamicObject> {
    let uid =
        snapshot.metadata.uid.as_deref().ok_or_else(|| {
            Error::Invalid(format!("VolumeSnapshot {} has no UID", name(snapshot)))
        })?;
    let mut content = DynamicObject::new(
        &format!("snapcontent-{uid}"),
        &kinds::volume_snapshot_content(),
    )
    .data(json!({"spec": {
        "deletionPolicy": class.deletion_policy,
        "driver": class.driver,
        "source": {"volumeHandle": volume_handle},
        "volumeSnapshotClassName": class.name,
        "volumeSnapshotRef": {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "name": name(snapshot),
            "namespace": snapshot.metadata.namespace,
            "uid": uid,
        },
    }}));
    // Whatever its policy: the snapshot-controller protects every bound content (v8.3.0's
    // `NeedToAddContentFinalizer`); a Retain content keeps it after its snapshot is gone.
    content.metadata.finalizers = Some(vec![FINALIZER_SNAPSHOT_CONTENT_BOUND.to_owned()]);
    Ok(content)
}

fn bound_content(snapshot: &DynamicObject) -> Option<&str> {
    text(&snapshot.data, "/status/boundVolumeSnapshotContentName")
}

fn text<'a>(data: &'a Value, pointer: &str) -> Option<&'a str> {
    data.pointer(pointer).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> DynamicObject {
        let mut snapshot = DynamicObject::new("snap", &kinds::volume_snapshot()).within("ns");
        snapshot.metadata.uid = Some("1234".to_owned());
        snapshot
    }

    fn class(deletion_policy: &str) -> Class {
        Class {
            name: "longhorn-snapshot".to_owned(),
            driver: "driver.longhorn.io".to_owned(),
            deletion_policy: deletion_policy.to_owned(),
        }
    }

    #[test]
    fn a_content_points_back_at_its_snapshot_and_is_protected_whatever_its_policy() {
        let content = content_for(&snapshot(), &class("Delete"), "pvc-1").unwrap();
        assert_eq!(name(&content), "snapcontent-1234");
        assert_eq!(finalizers(&content), [FINALIZER_SNAPSHOT_CONTENT_BOUND]);
        let spec = &content.data["spec"];
        assert_eq!(
            spec["volumeSnapshotRef"],
            json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "name": "snap",
                "namespace": "ns",
                "uid": "1234",
            })
        );
        assert_eq!(spec["source"], json!({"volumeHandle": "pvc-1"}));
        assert_eq!(spec["deletionPolicy"], "Delete");

        let retained = content_for(&snapshot(), &class("Retain"), "pvc-1").unwrap();
        assert_eq!(finalizers(&retained), [FINALIZER_SNAPSHOT_CONTENT_BOUND]);
    }

    #[test]
    fn a_snapshot_without_uid_is_an_error_not_a_panic() {
        let mut snapshot = snapshot();
        snapshot.metadata.uid = None;
        assert!(matches!(
            content_for(&snapshot, &class("Delete"), "pvc-1"),
            Err(Error::Invalid(_))
        ));
    }

    fn finalizers(object: &DynamicObject) -> Vec<&str> {
        object
            .metadata
            .finalizers
            .iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}
