//! Guest snapshots against real apiservers, a Harvester and one guest cluster, with the world's
//! snapshot-controller on the Harvester (the real one, or the stand-in) and the stand-in on the
//! guest.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, HARVESTER, world};
use gleaner_sim::{
    csi::{
        GUEST_DRIVER, GUEST_RETAINED_SNAPSHOT_CLASS, GUEST_SNAPSHOT_CLASS, GuestSnapshot,
        GuestVolume, HOST_SNAPSHOT_CLASS, LONGHORN_DRIVER, Reclaim, VolumeRequest,
    },
    keys::{
        FINALIZER_SNAPSHOT_AS_SOURCE, FINALIZER_SNAPSHOT_BOUND, FINALIZER_SNAPSHOT_CONTENT_BOUND,
        LABEL_SNAP_HOST_SC, LABEL_SNAP_HOST_VOLUME_MODE,
    },
    kinds,
    snapshotter::SNAPSHOTTER,
};
use gleaner_world::{Player, testing::eventually};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, api::DynamicObject};

impl Fixture {
    async fn volume(&self, request: VolumeRequest) -> GuestVolume {
        self.csi.create_volume(&request).await.unwrap()
    }

    fn guest_snapshots(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.guest, &self.namespace, &kinds::volume_snapshot())
    }

    fn host_snapshots(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.harvester, &self.namespace, &kinds::volume_snapshot())
    }

    fn guest_contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.guest.clone(), &kinds::volume_snapshot_content())
    }

    fn host_contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.harvester.clone(), &kinds::volume_snapshot_content())
    }

    fn host_pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.harvester.clone(), &self.namespace)
    }

    /// Waits until the stand-in has bound the snapshot and protected it, then returns it.
    async fn ready(&self, api: &Api<DynamicObject>, name: &str) -> DynamicObject {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let snapshot = api.get(name).await.unwrap();
            let protected = finalizers(&snapshot).len() == 2;
            if snapshot.data["status"]["readyToUse"] == true && protected {
                return snapshot;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "VolumeSnapshot {name} never got ready: {snapshot:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn gone(api: &Api<DynamicObject>, name: &str) -> bool {
    api.get_opt(name).await.unwrap().is_none()
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

fn label<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

async fn snapshot_of_rwo(fixture: &Fixture) -> (GuestVolume, GuestSnapshot) {
    let request = VolumeRequest::rwo(&fixture.namespace, "data", Reclaim::Delete);
    let volume = fixture.volume(request).await;
    let snapshot = fixture
        .csi
        .snapshot(&volume, "data-snap", Reclaim::Delete)
        .await
        .unwrap();
    (volume, snapshot)
}

#[tokio::test]
async fn a_guest_snapshot_makes_a_labelled_host_snapshot_of_the_host_pvc() {
    let fixture = Fixture::with_snapshot_controller("snap-create").await;
    let (volume, snapshot) = snapshot_of_rwo(&fixture).await;

    let guest = fixture.ready(&fixture.guest_snapshots(), "data-snap").await;
    assert_eq!(
        guest.data["spec"]["source"]["persistentVolumeClaimName"],
        "data"
    );
    assert_eq!(
        guest.data["spec"]["volumeSnapshotClassName"],
        GUEST_SNAPSHOT_CLASS
    );
    assert_eq!(
        guest.metadata.uid.as_deref(),
        Some(snapshot.guest.uid.as_str())
    );

    let host_name = format!("snapshot-{}", snapshot.guest.uid);
    assert_eq!(snapshot.host.name, host_name);
    assert_eq!(snapshot.host_namespace, "snap-create");
    let host = fixture.ready(&fixture.host_snapshots(), &host_name).await;
    assert_eq!(
        host.metadata.uid.as_deref(),
        Some(snapshot.host.uid.as_str())
    );
    assert_eq!(
        host.data["spec"]["source"]["persistentVolumeClaimName"],
        volume.host_pvc.name.as_str()
    );
    assert_eq!(
        host.data["spec"]["volumeSnapshotClassName"],
        HOST_SNAPSHOT_CLASS
    );
    assert_eq!(label(&host, LABEL_SNAP_HOST_SC), Some("longhorn"));
    assert_eq!(label(&host, LABEL_SNAP_HOST_VOLUME_MODE), Some("Block"));
    let mut protection = finalizers(&host);
    protection.sort_unstable();
    assert_eq!(
        protection,
        [FINALIZER_SNAPSHOT_AS_SOURCE, FINALIZER_SNAPSHOT_BOUND]
    );

    let content_name = format!("snapcontent-{}", snapshot.host.uid);
    assert_eq!(
        host.data["status"]["boundVolumeSnapshotContentName"],
        content_name.as_str()
    );
    let content = fixture.host_contents().get(&content_name).await.unwrap();
    assert_eq!(content.data["spec"]["driver"], LONGHORN_DRIVER);
    assert_eq!(content.data["spec"]["deletionPolicy"], "Delete");
    assert_eq!(
        content.data["spec"]["source"]["volumeHandle"],
        volume.host_pv.name.as_str()
    );
    let reference = &content.data["spec"]["volumeSnapshotRef"];
    assert_eq!(reference["name"], host_name.as_str());
    assert_eq!(reference["namespace"], "snap-create");
    assert_eq!(reference["uid"], snapshot.host.uid.as_str());
    assert_eq!(finalizers(&content), [FINALIZER_SNAPSHOT_CONTENT_BOUND]);
    assert_eq!(content.data["status"]["readyToUse"], true);

    let guest_content = fixture
        .guest_contents()
        .get(&format!("snapcontent-{}", snapshot.guest.uid))
        .await
        .unwrap();
    assert_eq!(guest_content.data["spec"]["driver"], GUEST_DRIVER);
    assert_eq!(
        guest_content.data["spec"]["source"]["volumeHandle"],
        volume.host_pvc.name.as_str(),
        "a guest PV's volume handle is its host PVC"
    );

    let object = snapshot.host_object();
    assert_eq!(object.resource.kind, "VolumeSnapshot");
    assert_eq!(
        (object.name, object.uid),
        (host_name, snapshot.host.uid.clone())
    );
    assert_eq!(
        fixture
            .csi
            .snapshot(&volume, "data-snap", Reclaim::Delete)
            .await
            .unwrap(),
        snapshot,
        "snapshotting again changes nothing"
    );
}

#[tokio::test]
async fn a_host_snapshot_of_an_rwx_volume_is_labelled_filesystem() {
    let fixture = Fixture::with_snapshot_controller("snap-rwx").await;
    let request = VolumeRequest::rwx(&fixture.namespace, "shared", Reclaim::Delete);
    let volume = fixture.volume(request).await;
    let snapshot = fixture
        .csi
        .snapshot(&volume, "shared-snap", Reclaim::Delete)
        .await
        .unwrap();
    let listed = kubectl(
        HARVESTER,
        &[
            "get",
            "volumesnapshots.snapshot.storage.k8s.io",
            "-n",
            "snap-rwx",
            "-o",
            "custom-columns=NAME:.metadata.name,MODE:.metadata.labels.harvesterhci\\.io/snapHostVolumeMode,SOURCE:.spec.source.persistentVolumeClaimName",
            "--no-headers",
        ],
    )
    .await;
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        [
            snapshot.host.name.as_str(),
            "Filesystem",
            volume.host_pvc.name.as_str()
        ]
    );
}

#[tokio::test]
async fn deleting_a_guest_snapshot_completes_on_both_clusters() {
    let fixture = Fixture::with_snapshot_controller("snap-delete").await;
    let (_, snapshot) = snapshot_of_rwo(&fixture).await;
    let host = fixture
        .ready(&fixture.host_snapshots(), &snapshot.host.name)
        .await;
    fixture.ready(&fixture.guest_snapshots(), "data-snap").await;
    let content = host.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();

    fixture.csi.delete_snapshot(&snapshot).await.unwrap();

    assert!(gone(&fixture.guest_snapshots(), "data-snap").await);
    eventually("the host VolumeSnapshot is gone", || {
        gone_owned(fixture.host_snapshots(), snapshot.host.name.clone())
    })
    .await;
    eventually("the host VolumeSnapshotContent is gone", || {
        gone_owned(fixture.host_contents(), content.clone())
    })
    .await;
    let journal = &fixture.journal;
    let deleted = journal.position("harvester-csi", "DeleteSnapshot");
    // The stand-in journals its release of the host snapshot; with the real snapshot-controller
    // the sidecar journals the storage's DeleteSnapshot of its content.
    let released = match world().await.snapshots() {
        Player::Sim => journal.position(
            "snapshot-controller",
            &format!("from VolumeSnapshot snap-delete/{}", snapshot.host.name),
        ),
        Player::Real => journal.position(
            SNAPSHOTTER,
            &format!("deleted the snapshot of VolumeSnapshotContent {content}"),
        ),
    };
    assert!(
        deleted.is_some() && deleted < released,
        "{:?}",
        journal.entries()
    );
}

#[tokio::test]
async fn deleting_a_host_pvc_with_a_snapshot_leaves_the_host_snapshot_behind() {
    let fixture = Fixture::with_snapshot_controller("snap-leak").await;
    let (volume, snapshot) = snapshot_of_rwo(&fixture).await;
    fixture
        .ready(&fixture.host_snapshots(), &snapshot.host.name)
        .await;

    fixture.csi.delete_volume(&volume).await.unwrap();
    eventually("the host PVC is gone", || async {
        fixture
            .host_pvcs()
            .get_opt(&volume.host_pvc.name)
            .await
            .unwrap()
            .is_none()
    })
    .await;

    let host = fixture
        .host_snapshots()
        .get(&snapshot.host.name)
        .await
        .unwrap();
    assert!(host.metadata.deletion_timestamp.is_none());
    assert_eq!(
        host.metadata.uid.as_deref(),
        Some(snapshot.host.uid.as_str())
    );
    assert_eq!(host.data["status"]["readyToUse"], true);
    assert!(
        fixture
            .journal
            .position("harvester-csi", "DeleteSnapshot")
            .is_none()
    );
}

#[tokio::test]
async fn a_guest_snapshot_gets_a_ready_guest_content_whose_handle_is_the_host_snapshot() {
    let fixture = Fixture::new("snap-content").await;
    let (volume, snapshot) = snapshot_of_rwo(&fixture).await;
    assert_eq!(
        snapshot.content.name,
        format!("snapcontent-{}", snapshot.guest.uid)
    );
    let content = fixture
        .guest_contents()
        .get(&snapshot.content.name)
        .await
        .unwrap();
    assert_eq!(
        content.metadata.uid.as_deref(),
        Some(snapshot.content.uid.as_str())
    );
    let spec = &content.data["spec"];
    assert_eq!(spec["driver"], GUEST_DRIVER);
    assert_eq!(spec["deletionPolicy"], "Delete");
    assert_eq!(spec["volumeSnapshotClassName"], GUEST_SNAPSHOT_CLASS);
    let guest_pv = Api::<PersistentVolume>::all(fixture.guest.clone())
        .get(&volume.guest_pv.name)
        .await
        .unwrap();
    assert_eq!(
        spec["source"]["volumeHandle"],
        guest_pv.spec.unwrap().csi.unwrap().volume_handle.as_str(),
        "the source is the guest PV's volume handle"
    );
    assert_eq!(
        spec["source"]["volumeHandle"],
        volume.host_pvc.name.as_str()
    );
    let reference = &spec["volumeSnapshotRef"];
    assert_eq!(reference["name"], "data-snap");
    assert_eq!(reference["namespace"], "snap-content");
    assert_eq!(reference["uid"], snapshot.guest.uid.as_str());
    assert_eq!(
        content.data["status"]["snapshotHandle"],
        snapshot.host.name.as_str()
    );
    assert_eq!(content.data["status"]["readyToUse"], true);
    assert_eq!(finalizers(&content), [FINALIZER_SNAPSHOT_CONTENT_BOUND]);
    let guest = fixture.guest_snapshots().get("data-snap").await.unwrap();
    assert_eq!(
        guest.data["status"]["boundVolumeSnapshotContentName"],
        snapshot.content.name.as_str()
    );

    fixture.csi.delete_snapshot(&snapshot).await.unwrap();
    assert!(gone(&fixture.guest_contents(), &snapshot.content.name).await);
    eventually("the host VolumeSnapshot is gone", || {
        gone_owned(fixture.host_snapshots(), snapshot.host.name.clone())
    })
    .await;
}

#[tokio::test]
async fn a_retained_guest_snapshot_keeps_its_content_and_host_snapshot_when_deleted() {
    let fixture = Fixture::new("snap-retained").await;
    let request = VolumeRequest::rwo(&fixture.namespace, "data", Reclaim::Delete);
    let volume = fixture.volume(request).await;
    let snapshot = fixture
        .csi
        .snapshot(&volume, "kept-snap", Reclaim::Retain)
        .await
        .unwrap();
    let content = fixture
        .guest_contents()
        .get(&snapshot.content.name)
        .await
        .unwrap();
    assert_eq!(content.data["spec"]["deletionPolicy"], "Retain");
    assert_eq!(
        content.data["spec"]["volumeSnapshotClassName"],
        GUEST_RETAINED_SNAPSHOT_CLASS
    );
    assert_eq!(finalizers(&content), [FINALIZER_SNAPSHOT_CONTENT_BOUND]);

    fixture.csi.delete_snapshot(&snapshot).await.unwrap();

    assert!(gone(&fixture.guest_snapshots(), "kept-snap").await);
    let content = fixture
        .guest_contents()
        .get(&snapshot.content.name)
        .await
        .unwrap();
    assert!(content.metadata.deletion_timestamp.is_none());
    let host = fixture
        .host_snapshots()
        .get(&snapshot.host.name)
        .await
        .unwrap();
    assert!(host.metadata.deletion_timestamp.is_none());
    assert!(
        fixture
            .journal
            .position("harvester-csi", "DeleteSnapshot")
            .is_none()
    );
}

async fn gone_owned(api: Api<DynamicObject>, name: String) -> bool {
    gone(&api, &name).await
}

async fn kubectl(cluster: &str, args: &[&str]) -> String {
    let output = world().await.kubectl(cluster, args).unwrap();
    assert!(output.status.success(), "kubectl {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}
