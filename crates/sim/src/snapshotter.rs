//! The csi-snapshotter sidecar's share of the external-snapshotter, with the storage behind it,
//! for the world's real snapshot-controller ([`gleaner_world::Snapshots::Real`]) on one
//! namespace's snapshots. It follows the sidecar of the release the world runs
//! (`pkg/sidecar-controller/snapshot_controller.go` at v8.3.0): a dynamic content without status
//! gets `volumesnapshot-being-created`, then CreateSnapshot's answer as its status (handle,
//! creation time, ready), then loses the annotation; a deleting content that the controller
//! marked `volumesnapshot-being-deleted` (and that is not being created) gets DeleteSnapshot and
//! a cleared status when its policy is Delete, then loses the controller's finalizer.
//!
//! Behind it stands a [`Driver`]: Longhorn on a Harvester, or in a guest the Harvester CSI
//! driver, whose CreateSnapshot makes a host VolumeSnapshot of the volume's host PVC and whose
//! DeleteSnapshot deletes it (design.md §2).
//!
//! [`Storage::hold`] stands for a snapshot that takes long to cut: CreateSnapshot does not answer
//! while held, so the content keeps `volumesnapshot-being-created` and the snapshot stays not
//! ready, as with a slow Longhorn snapshot.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use crate::{
    Env, Error, Result,
    controller::{self, annotation, has_finalizer, is_deleting, name, remove_finalizer},
    csi::{Csi, api::patch_status},
    error::KubeContext,
    keys::FINALIZER_SNAPSHOT_CONTENT_BOUND,
    kinds,
    tasks::Tasks,
};

/// Journal actor of the sidecar and its storage.
pub const SNAPSHOTTER: &str = "csi-snapshotter";
/// The sidecar's mark while CreateSnapshot has not answered.
pub const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
/// The snapshot-controller's mark on a content whose deletion the sidecar must carry out.
pub const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
/// How often a held CreateSnapshot looks whether it may answer.
const HOLD_POLL: Duration = Duration::from_millis(200);

/// The storage behind the sidecar.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    held: Arc<AtomicBool>,
}

impl Storage {
    /// While held, CreateSnapshot does not answer.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }

    fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

/// The CSI driver the sidecar calls.
#[derive(Clone)]
pub enum Driver {
    /// Longhorn, on a Harvester: a snapshot named after its content, nothing else to see.
    Longhorn,
    /// The Harvester CSI driver of a guest cluster.
    HarvesterCsi(Box<Csi>),
}

/// Runs the sidecar for the contents of `namespace`'s VolumeSnapshots until `tasks` is dropped.
pub fn spawn(
    client: Client,
    namespace: &str,
    driver: Driver,
    env: Env,
    tasks: &mut Tasks,
) -> Storage {
    let storage = Storage::default();
    let resource = kinds::volume_snapshot_content();
    let context = Arc::new(Context {
        contents: Api::all_with(client, &resource),
        namespace: namespace.to_owned(),
        driver,
        storage: storage.clone(),
        env,
    });
    tasks.spawn(controller::run(
        context.contents.clone(),
        resource,
        context,
        reconcile,
    ));
    storage
}

struct Context {
    contents: Api<DynamicObject>,
    namespace: String,
    driver: Driver,
    storage: Storage,
    env: Env,
}

/// One step per call, as the sidecar's `syncContent`; each write is a watch event that brings
/// the next.
async fn reconcile(content: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let content = content.as_ref();
    if text(content, "/spec/volumeSnapshotRef/namespace") != Some(context.namespace.as_str()) {
        return Ok(Action::await_change());
    }
    match next_step(content, context.storage.is_held()) {
        Step::Delete => context.delete_snapshot(content).await?,
        Step::ReleaseContent => context.release(content).await?,
        Step::MarkBeingCreated => context.annotate(content, BEING_CREATED, true).await?,
        Step::WaitForStorage => return Ok(Action::requeue(HOLD_POLL)),
        Step::Create => context.create_snapshot(content).await?,
        Step::UnmarkBeingCreated => context.annotate(content, BEING_CREATED, false).await?,
        Step::Nothing => {}
    }
    Ok(Action::await_change())
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Delete,
    ReleaseContent,
    MarkBeingCreated,
    WaitForStorage,
    Create,
    UnmarkBeingCreated,
    Nothing,
}

/// What the sidecar does next with a content, given whether the storage answers.
fn next_step(content: &DynamicObject, storage_held: bool) -> Step {
    let being_created = annotation(content, BEING_CREATED).is_some();
    if should_delete(content, being_created) {
        let delete_on_storage = text(content, "/spec/deletionPolicy") == Some("Delete")
            && text(content, "/status/snapshotHandle").is_some();
        return if delete_on_storage {
            Step::Delete
        } else if has_finalizer(content, FINALIZER_SNAPSHOT_CONTENT_BOUND) {
            Step::ReleaseContent
        } else {
            Step::Nothing
        };
    }
    // Upstream cuts a snapshot whose creation was asked even while its content is deleting:
    // only an answered CreateSnapshot lets the deletion proceed without leaking it.
    let dynamic = content.data.pointer("/spec/source/volumeHandle").is_some();
    let without_status = content.data.get("status").is_none_or(Value::is_null);
    if dynamic && without_status {
        return match (being_created, storage_held) {
            (false, _) => Step::MarkBeingCreated,
            (true, true) => Step::WaitForStorage,
            (true, false) => Step::Create,
        };
    }
    if being_created && content.data.pointer("/status/readyToUse") == Some(&Value::Bool(true)) {
        return Step::UnmarkBeingCreated;
    }
    Step::Nothing
}

/// Upstream's `shouldDelete`: deleting, not waiting on CreateSnapshot, and either an unbound
/// pre-provisioned content or one the snapshot-controller marked for deletion.
fn should_delete(content: &DynamicObject, being_created: bool) -> bool {
    if !is_deleting(content) {
        return false;
    }
    let unbound_pre_provisioned = content
        .data
        .pointer("/spec/source/snapshotHandle")
        .is_some()
        && text(content, "/spec/volumeSnapshotRef/uid").is_none_or(str::is_empty);
    unbound_pre_provisioned || (!being_created && annotation(content, BEING_DELETED).is_some())
}

impl Context {
    fn record(&self, what: String) {
        self.env.journal.record(SNAPSHOTTER, what);
    }

    /// CreateSnapshot answered: the handle, the time and ready, as the sidecar's
    /// `updateSnapshotContentStatus` writes them. Longhorn names a snapshot after its content;
    /// the Harvester CSI driver answers with the host VolumeSnapshot it made, named as the
    /// sidecar asks (`snapshot-<VolumeSnapshot UID>`).
    async fn create_snapshot(&self, content: &DynamicObject) -> Result<()> {
        let handle = match &self.driver {
            Driver::Longhorn => format!("snap-{}", name(content)),
            Driver::HarvesterCsi(csi) => {
                let (Some(volume), Some(uid)) = (
                    text(content, "/spec/source/volumeHandle"),
                    text(content, "/spec/volumeSnapshotRef/uid"),
                ) else {
                    return Err(Error::Invalid(format!(
                        "VolumeSnapshotContent {} names no volume or snapshot UID",
                        name(content)
                    )));
                };
                csi.create_host_snapshot(volume, &format!("snapshot-{uid}"))
                    .await?
                    .name
            }
        };
        let created_nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        let status = json!({
            "snapshotHandle": handle,
            "creationTime": i64::try_from(created_nanos).unwrap_or(i64::MAX),
            "readyToUse": true,
        });
        patch_status(
            &self.contents,
            name(content),
            status,
            "VolumeSnapshotContent",
        )
        .await?;
        self.record(format!(
            "CreateSnapshot: cut the snapshot of VolumeSnapshotContent {}",
            name(content)
        ));
        Ok(())
    }

    /// DeleteSnapshot, then the status cleared, which brings the finalizer's removal.
    async fn delete_snapshot(&self, content: &DynamicObject) -> Result<()> {
        if let (Driver::HarvesterCsi(csi), Some(handle)) =
            (&self.driver, text(content, "/status/snapshotHandle"))
        {
            csi.delete_host_snapshot(handle).await?;
        }
        let status = json!({
            "snapshotHandle": null,
            "readyToUse": null,
            "creationTime": null,
            "restoreSize": null,
        });
        patch_status(
            &self.contents,
            name(content),
            status,
            "VolumeSnapshotContent",
        )
        .await?;
        self.record(format!(
            "DeleteSnapshot: deleted the snapshot of VolumeSnapshotContent {}",
            name(content)
        ));
        Ok(())
    }

    async fn release(&self, content: &DynamicObject) -> Result<()> {
        remove_finalizer(&self.contents, content, FINALIZER_SNAPSHOT_CONTENT_BOUND).await?;
        self.record(format!(
            "removed finalizer {FINALIZER_SNAPSHOT_CONTENT_BOUND} from VolumeSnapshotContent {}",
            name(content)
        ));
        Ok(())
    }

    async fn annotate(&self, content: &DynamicObject, key: &str, present: bool) -> Result<()> {
        let value = present.then_some("yes");
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.contents
            .patch(
                name(content),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .context(|| format!("cannot annotate VolumeSnapshotContent {}", name(content)))?;
        Ok(())
    }
}

fn text<'a>(object: &'a DynamicObject, pointer: &str) -> Option<&'a str> {
    object.data.pointer(pointer).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(data: Value) -> DynamicObject {
        DynamicObject::new("snapcontent-1", &kinds::volume_snapshot_content()).data(data)
    }

    fn dynamic(policy: &str) -> DynamicObject {
        content(json!({"spec": {
            "deletionPolicy": policy,
            "source": {"volumeHandle": "pvc-1"},
            "volumeSnapshotRef": {"namespace": "ns", "name": "snap", "uid": "1"},
        }}))
    }

    fn with_annotation(mut content: DynamicObject, key: &str) -> DynamicObject {
        content
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(key.to_owned(), "yes".to_owned());
        content
    }

    fn deleting(mut content: DynamicObject) -> DynamicObject {
        content.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        content.metadata.finalizers = Some(vec![FINALIZER_SNAPSHOT_CONTENT_BOUND.to_owned()]);
        content
    }

    fn ready(mut content: DynamicObject) -> DynamicObject {
        content.data["status"] = json!({"snapshotHandle": "snap-1", "readyToUse": true});
        content
    }

    #[test]
    fn a_new_dynamic_content_is_marked_then_cut_unless_the_storage_holds_it() {
        assert_eq!(next_step(&dynamic("Delete"), false), Step::MarkBeingCreated);
        let marked = with_annotation(dynamic("Delete"), BEING_CREATED);
        assert_eq!(next_step(&marked, true), Step::WaitForStorage);
        assert_eq!(next_step(&marked, false), Step::Create);
        assert_eq!(next_step(&ready(marked), false), Step::UnmarkBeingCreated);
        assert_eq!(next_step(&ready(dynamic("Delete")), false), Step::Nothing);
    }

    #[test]
    fn a_content_is_deleted_only_when_the_controller_marked_it_and_creation_answered() {
        let deleting_ready = deleting(ready(dynamic("Delete")));
        assert_eq!(next_step(&deleting_ready, false), Step::Nothing);
        let marked = with_annotation(deleting_ready, BEING_DELETED);
        assert_eq!(next_step(&marked, false), Step::Delete);
        let mut still_being_created = with_annotation(marked, BEING_CREATED);
        still_being_created.data["status"] = Value::Null;
        assert_eq!(next_step(&still_being_created, true), Step::WaitForStorage);
        assert_eq!(next_step(&still_being_created, false), Step::Create);
    }

    #[test]
    fn a_retained_or_already_deleted_snapshot_only_lets_its_content_go() {
        let retained = with_annotation(deleting(ready(dynamic("Retain"))), BEING_DELETED);
        assert_eq!(next_step(&retained, false), Step::ReleaseContent);
        let cleared = with_annotation(deleting(dynamic("Delete")), BEING_DELETED);
        let mut cleared = cleared;
        cleared.data["status"] = json!({});
        assert_eq!(next_step(&cleared, false), Step::ReleaseContent);
        cleared.metadata.finalizers = None;
        assert_eq!(next_step(&cleared, false), Step::Nothing);
    }

    #[test]
    fn an_unbound_pre_provisioned_content_is_deleted_without_a_mark() {
        let mut pre_provisioned = deleting(content(json!({"spec": {
            "deletionPolicy": "Delete",
            "source": {"snapshotHandle": "snap-x"},
            "volumeSnapshotRef": {"namespace": "ns", "name": "snap"},
        }})));
        pre_provisioned.data["status"] = json!({"snapshotHandle": "snap-x"});
        assert_eq!(next_step(&pre_provisioned, false), Step::Delete);
    }
}
