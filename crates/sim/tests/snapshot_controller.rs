//! The real snapshot-controller on the Harvester with the simulated csi-snapshotter sidecar:
//! the finalizers the reclaimer's order assumes (design.md §2), as upstream sets them.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, world};
use gleaner_sim::{
    csi::{GuestSnapshot, GuestVolume, LONGHORN_DRIVER, Reclaim, VolumeRequest},
    keys::{
        FINALIZER_SNAPSHOT_AS_SOURCE, FINALIZER_SNAPSHOT_BOUND, FINALIZER_SNAPSHOT_CONTENT_BOUND,
    },
    kinds,
    snapshotter::{BEING_CREATED, SNAPSHOTTER},
};
use gleaner_world::{Player, testing::eventually};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, ResourceExt, api::DynamicObject};

const SOURCE_PROTECTION: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";

/// A fixture on the real snapshot-controller; None (the test says it is skipped) otherwise.
async fn real(namespace: &str) -> Option<Fixture> {
    if world().await.snapshots() != Player::Real {
        eprintln!("skipped: needs the real snapshot-controller (GLEANER_WORLD_SNAPSHOTS=real)");
        return None;
    }
    Some(Fixture::new(namespace).await)
}

impl Fixture {
    fn host_snapshots(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.harvester, &self.namespace, &kinds::volume_snapshot())
    }

    fn host_contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.harvester.clone(), &kinds::volume_snapshot_content())
    }

    fn host_pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.harvester.clone(), &self.namespace)
    }

    async fn snapshot_of_rwo(&self) -> (GuestVolume, GuestSnapshot) {
        let request = VolumeRequest::rwo(&self.namespace, "data", Reclaim::Delete);
        let volume = self.csi.create_volume(&request).await.unwrap();
        let snapshot = self
            .csi
            .snapshot(&volume, "data-snap", Reclaim::Delete)
            .await
            .unwrap();
        (volume, snapshot)
    }

    async fn host_snapshot(&self, snapshot: &GuestSnapshot) -> DynamicObject {
        self.host_snapshots()
            .get(&snapshot.host.name)
            .await
            .unwrap()
    }

    async fn source_protected(&self, volume: &GuestVolume) -> bool {
        self.host_pvcs()
            .get(&volume.host_pvc.name)
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|finalizer| finalizer == SOURCE_PROTECTION)
    }
}

fn has(object: &DynamicObject, finalizer: &str) -> bool {
    object
        .finalizers()
        .iter()
        .any(|present| present == finalizer)
}

#[tokio::test]
async fn a_host_snapshot_is_protected_bound_and_ready_and_its_deletion_takes_its_content() {
    let Some(fixture) = real("real-snap-life").await else {
        return;
    };
    let (volume, snapshot) = fixture.snapshot_of_rwo().await;
    eventually("the host snapshot is ready and protected", || async {
        let host = fixture.host_snapshot(&snapshot).await;
        host.data["status"]["readyToUse"] == true
            && has(&host, FINALIZER_SNAPSHOT_AS_SOURCE)
            && has(&host, FINALIZER_SNAPSHOT_BOUND)
    })
    .await;
    let host = fixture.host_snapshot(&snapshot).await;
    let content_name = host.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_name, format!("snapcontent-{}", snapshot.host.uid));
    let content = fixture.host_contents().get(&content_name).await.unwrap();
    assert!(has(&content, FINALIZER_SNAPSHOT_CONTENT_BOUND));
    assert_eq!(content.data["spec"]["driver"], LONGHORN_DRIVER);
    assert_eq!(content.data["spec"]["deletionPolicy"], "Delete");
    assert_eq!(
        content.data["spec"]["volumeSnapshotRef"]["uid"],
        snapshot.host.uid.as_str()
    );
    assert!(!content.annotations().contains_key(BEING_CREATED));
    eventually("the ready snapshot lets its source PVC go", || async {
        !fixture.source_protected(&volume).await
    })
    .await;

    fixture
        .host_snapshots()
        .delete(&snapshot.host.name, &Default::default())
        .await
        .unwrap();
    eventually("the snapshot and its content are gone", || async {
        fixture
            .host_snapshots()
            .get_opt(&snapshot.host.name)
            .await
            .unwrap()
            .is_none()
            && fixture
                .host_contents()
                .get_opt(&content_name)
                .await
                .unwrap()
                .is_none()
    })
    .await;
    assert!(
        fixture
            .journal
            .position(SNAPSHOTTER, "DeleteSnapshot")
            .is_some()
    );
}

#[tokio::test]
async fn a_snapshot_still_being_cut_holds_its_source_pvc_until_the_storage_answers() {
    let Some(fixture) = real("real-snap-cutting").await else {
        return;
    };
    let storage = fixture.storage.clone().unwrap();
    storage.hold(true);
    let (volume, snapshot) = fixture.snapshot_of_rwo().await;
    eventually(
        "the source PVC is protected while the snapshot is cut",
        || async { fixture.source_protected(&volume).await },
    )
    .await;
    let claims = fixture.host_pvcs();
    claims
        .delete(&volume.host_pvc.name, &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claim = claims.get(&volume.host_pvc.name).await.unwrap();
    assert!(claim.metadata.deletion_timestamp.is_some());
    let host = fixture.host_snapshot(&snapshot).await;
    assert_ne!(host.data["status"]["readyToUse"], true, "{host:?}");

    storage.hold(false);
    eventually("the PVC goes once the snapshot is cut", || async {
        claims
            .get_opt(&volume.host_pvc.name)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let host = fixture.host_snapshot(&snapshot).await;
    assert_eq!(host.data["status"]["readyToUse"], true, "{host:?}");
}
