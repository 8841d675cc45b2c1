//! Attribution from what Harvester shows (part 2a-1), in the world with the real binary; the
//! ground truth is the scenario's record of what each cluster made, never gleaner's records.

mod common;

use std::collections::BTreeSet;

use common::{Gleaner, TIME_SCALE, requests, world};
use gleaner::footprint::{Footprint, FootprintStatus};
use gleaner_core::{
    attribution::{Conflict, ObjectClass},
    guest::{GuestPolicy, PolicySeen},
};
use gleaner_sim::{
    Clock, kinds,
    scenario::{ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, testing::eventually};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;

const FOOTPRINT: &str = "gleaner.io/footprint";
const CLUSTER: &str = "gleaner.io/cluster";

async fn status(footprints: &Api<Footprint>, name: &str) -> FootprintStatus {
    footprints
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|footprint| footprint.status)
        .unwrap_or_default()
}

fn attributed(status: &FootprintStatus) -> BTreeSet<String> {
    status
        .records()
        .into_iter()
        .map(|record| record.uid)
        .collect()
}

/// The UIDs of the guest objects a cluster of the scenario made: its volumes (hot-plugged or
/// not, seen from the VMs and from its guest's PVs), their snapshots, NetworkFilesystems and
/// load balancers; not its VMs' own disks.
fn made(scenario: &Scenario, cluster: &str) -> BTreeSet<String> {
    scenario
        .made_by(&scenario.key(cluster))
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect()
}

async fn watched(prefix: &str, scenario: &Scenario, extra: &[&str]) -> (Gleaner, Api<Footprint>) {
    let world = world().await;
    let fleets: Vec<String> = scenario
        .cluster_keys()
        .map(|key| key.namespace.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let gleaner = Gleaner::start_with(world, prefix, prefix, &fleets.join(","), extra).await;
    let footprints = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        &format!("gleaner-{prefix}"),
    );
    (gleaner, footprints)
}

#[tokio::test]
async fn a_clusters_volumes_and_their_snapshots_are_attributed_by_uid_and_marked() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("a-main")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 2)
                .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                .volume(VolumePlan::new("logs").hotplugged())
                .volume(VolumePlan::new("spare")),
        )
        .cluster(ClusterPlan::new("c2", 1).volume(VolumePlan::new("data").hotplugged()))
        .cluster(
            ClusterPlan::new("c1", 1)
                .in_namespace("b")
                .volume(VolumePlan::new("data").hotplugged()),
        )
        .lookalikes(1)
        .start(world)
        .await
        .unwrap();
    let (_gleaner, footprints) = watched("a-main", &scenario, &[]).await;
    let c1 = scenario.cluster("c1").unwrap().uid.clone();
    let expected = made(&scenario, "c1");
    assert_eq!(
        expected.len(),
        4,
        "two hot-plugged volumes, a never-attached one and a snapshot"
    );
    eventually("c1's Footprint attributes exactly what c1 made", || async {
        attributed(&status(&footprints, &c1).await) == expected
    })
    .await;
    let recorded = status(&footprints, &c1).await;
    let classes: Vec<ObjectClass> = recorded
        .records()
        .iter()
        .map(|record| record.class)
        .collect();
    assert_eq!(
        classes
            .iter()
            .filter(|class| **class == ObjectClass::Volume)
            .count(),
        3
    );
    assert!(classes.contains(&ObjectClass::Snapshot));
    assert!(
        recorded
            .records()
            .iter()
            .all(|record| record.conflicts.is_empty())
    );
    let counts = recorded.counts.clone().unwrap();
    assert_eq!(
        (counts.volumes, counts.snapshots, counts.conflicts),
        (3, 1, 0)
    );
    // Nothing of the living cluster, the same-named cluster in another namespace, or the
    // lookalike.
    for other in scenario
        .cluster_keys()
        .filter(|key| **key != scenario.key("c1"))
    {
        let theirs: BTreeSet<String> = scenario
            .made_by(other)
            .into_iter()
            .map(|(object, _)| object.uid)
            .collect();
        assert!(expected.is_disjoint(&theirs), "{other:?}");
    }
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    for record in &recorded.records() {
        let resource = match record.class {
            ObjectClass::Snapshot => kinds::volume_snapshot(),
            _ => kinds::persistent_volume_claim(),
        };
        let objects = kinds::namespaced(&harvester, &record.namespace, &resource);
        eventually(
            &format!("{} carries gleaner's marks", record.name),
            || async {
                let object = objects.get(&record.name).await.unwrap();
                object.labels().get(FOOTPRINT).map(String::as_str) == Some(c1.as_str())
                    && object
                        .annotations()
                        .get(CLUSTER)
                        .is_some_and(|identity| identity.ends_with(&format!("/c1@{}", record.uid)))
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_detached_volume_stays_attributed_and_a_restored_copy_is_not() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("a-detach")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let (_gleaner, footprints) = watched("a-detach", &scenario, &[]).await;
    let c1 = scenario.cluster("c1").unwrap().uid.clone();
    let expected = made(&scenario, "c1");
    eventually(
        "the hot-plugged volume is attributed and marked",
        || async { attributed(&status(&footprints, &c1).await) == expected },
    )
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vm_name = scenario.cluster("c1").unwrap().machines[0].vm.clone();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let vm = vms.get(&vm_name).await.unwrap();
    let unplugged: Vec<serde_json::Value> = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|volume| volume["persistentVolumeClaim"]["hotpluggable"] != json!(true))
        .cloned()
        .collect();
    let detach = json!({"spec": {"template": {"spec": {"volumes": unplugged}}}});
    vms.patch(&vm_name, &PatchParams::default(), &Patch::Merge(&detach))
        .await
        .unwrap();
    // A restored copy: the attributed volume's labels and annotations, a new UID.
    let pvcs = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::persistent_volume_claim(),
    );
    let record = status(&footprints, &c1).await.records()[0].clone();
    let original = pvcs.get(&record.name).await.unwrap();
    eventually("the original carries its marks", || async {
        pvcs.get(&record.name)
            .await
            .unwrap()
            .labels()
            .contains_key(FOOTPRINT)
    })
    .await;
    let marked = pvcs.get(&record.name).await.unwrap();
    let copy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": format!("{}-restored", record.name),
            "namespace": scenario.vm_namespace(),
            "labels": marked.labels(),
            "annotations": marked.annotations(),
        },
        "spec": original.data["spec"].clone(),
    }))
    .unwrap();
    let mut copy = copy;
    copy.data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("volumeName");
    let copy = pvcs.create(&PostParams::default(), &copy).await.unwrap();
    eventually("the copy is a lookalike, not attributed", || async {
        let status = status(&footprints, &c1).await;
        status
            .lookalikes
            .iter()
            .any(|lookalike| lookalike.contains(&copy.uid().unwrap()))
            && attributed(&status) == expected
    })
    .await;
}

#[tokio::test]
async fn a_volume_hot_plugged_into_vms_of_two_clusters_is_a_conflict_on_both() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("a-conflict")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .cluster(ClusterPlan::new("c2", 1))
        .start(world)
        .await
        .unwrap();
    let (_gleaner, footprints) = watched("a-conflict", &scenario, &[]).await;
    let (c1, c2) = (
        scenario.cluster("c1").unwrap().uid.clone(),
        scenario.cluster("c2").unwrap().uid.clone(),
    );
    let expected = made(&scenario, "c1");
    eventually("c1 attributes its volume", || async {
        attributed(&status(&footprints, &c1).await) == expected
    })
    .await;
    eventually("c2's Footprint records its VM", || async {
        status(&footprints, &c2)
            .await
            .vms
            .iter()
            .any(|vm| vm.uid.is_some())
    })
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let record = status(&footprints, &c1).await.records()[0].clone();
    let theirs = scenario.cluster("c2").unwrap().machines[0].vm.clone();
    let vm = vms.get(&theirs).await.unwrap();
    let mut volumes = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes.push(json!({"name": record.name, "persistentVolumeClaim": {
        "claimName": record.name, "hotpluggable": true
    }}));
    let plug = json!({"spec": {"template": {"spec": {"volumes": volumes}}}});
    vms.patch(&theirs, &PatchParams::default(), &Patch::Merge(&plug))
        .await
        .unwrap();
    eventually("the volume is a conflict on both Footprints", || async {
        let ours = status(&footprints, &c1).await;
        let other = status(&footprints, &c2).await;
        let conflicted = |status: &FootprintStatus, with: &str| {
            status.records().iter().any(|object| {
                object.uid == record.uid
                    && object.conflicts.contains(&Conflict::OtherFootprint {
                        footprint: with.to_owned(),
                    })
            })
        };
        conflicted(&ours, &c2) && conflicted(&other, &c1)
    })
    .await;
    eventually("a Warning Event names the conflict", || async {
        common::warned(
            world,
            &scenario.key("c1").namespace,
            "AttributionConflict",
            "",
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn restarted_gleaner_records_the_same_and_marks_nothing_twice_and_a_dry_run_marks_nothing() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("a-restart")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged().snapshots(1)),
        )
        .start(world)
        .await
        .unwrap();
    let c1 = scenario.cluster("c1").unwrap().uid.clone();
    let expected = made(&scenario, "c1");
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let pvcs = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::persistent_volume_claim(),
    );
    {
        let (_dry, footprints) = watched("a-restart", &scenario, &["--dry-run"]).await;
        eventually("a dry run records everything", || async {
            attributed(&status(&footprints, &c1).await) == expected
        })
        .await;
        for (object, _) in scenario.made_by(&scenario.key("c1")) {
            if let Some(found) = pvcs.get_opt(&object.name).await.unwrap() {
                assert!(
                    !found.labels().contains_key(FOOTPRINT),
                    "a dry run marked {}",
                    object.name
                );
            }
        }
    }
    let (first, footprints) = watched("a-restart", &scenario, &[]).await;
    let marked = || async {
        let mut marked = 0;
        for (object, _) in scenario.made_by(&scenario.key("c1")) {
            let resource = if object.resource.kind == "VolumeSnapshot" {
                kinds::volume_snapshot()
            } else {
                kinds::persistent_volume_claim()
            };
            let found = kinds::namespaced(&harvester, &object.namespace, &resource)
                .get(&object.name)
                .await
                .unwrap();
            marked += usize::from(found.labels().contains_key(FOOTPRINT));
        }
        marked
    };
    eventually("gleaner marks what it attributed", || async {
        marked().await == expected.len()
    })
    .await;
    let before = status(&footprints, &c1).await.records();
    let patched = || async { requests(&harvester, &["PATCH"]).await };
    let patches_before = patched().await;
    drop(first);
    let (again, footprints) = watched("a-restart", &scenario, &[]).await;
    eventually(
        "the restarted gleaner's Harvester watch is synced",
        || async {
            again
                .metrics()
                .await
                .contains("gleaner_harvesters{state=\"Reachable\"} 1")
        },
    )
    .await;
    // Give it time to look at the Footprint once more.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        status(&footprints, &c1).await.records(),
        before,
        "no duplicates, nothing lost"
    );
    let patches_after = patched().await;
    for resource in ["persistentvolumeclaims", "volumesnapshots"] {
        assert_eq!(
            patches_after.get(resource),
            patches_before.get(resource),
            "the Harvester apiserver counts no new PATCH of {resource}"
        );
    }
    let writes = again.metrics().await;
    assert!(
        !writes.contains("gleaner_writes_total{kind=\"HostObjectMarks\",result=\"ok\"}"),
        "no second write on marked objects:\n{writes}"
    );
}

/// A Footprint of 2,000 attributed objects with 253-character names, every evidence kind, a
/// full ledger and a full `status.would` stays under 1 MiB, and the apiserver takes it whole.
#[tokio::test]
async fn a_full_footprint_stays_under_one_mebibyte() {
    use gleaner::footprint::{
        Evidence, FootprintSpec, HostObjectRecord, LEDGER_KEPT, Ledger, LedgerAction, LedgerEntry,
    };
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    let world = world().await;
    let client = world.client(ClusterName::RANCHER).await.unwrap();
    let namespace = "gleaner-a-size";
    gleaner_world::testing::ensure_namespace(&client, namespace)
        .await
        .unwrap();
    let footprints: Api<Footprint> = Api::namespaced(client, namespace);
    let uid = |index: usize| format!("00000000-0000-0000-0000-{index:0>12}");
    let long = |index: usize| format!("{index:0>253}");
    let classes = [
        (ObjectClass::Volume, "default"),
        (ObjectClass::RwxVolume, "default"),
        (ObjectClass::NetworkFilesystem, "harvester-system"),
        (ObjectClass::Snapshot, "default"),
    ];
    let records: Vec<HostObjectRecord> = (0..2_000)
        .map(|index| {
            let (class, namespace) = classes[index % classes.len()];
            let evidence = match class {
                ObjectClass::NetworkFilesystem => Evidence::VolumeOf {
                    pvc_uid: uid(index),
                },
                ObjectClass::Snapshot => Evidence::SnapshotOf {
                    pvc_uid: uid(index),
                },
                _ => Evidence::HotPlugged { vm_uid: uid(index) },
            };
            // A volume is seen hot-plugged and named by its guest PV, with its policy.
            let (evidence, guest_policy) = match class {
                ObjectClass::Volume | ObjectClass::RwxVolume => (
                    vec![evidence, Evidence::GuestVolume { pv_uid: uid(index) }],
                    Some(PolicySeen {
                        policy: GuestPolicy::Retain,
                        seen_at: Timestamp::now(),
                    }),
                ),
                _ => (vec![evidence], None),
            };
            HostObjectRecord {
                cloud_credential: "cattle-global-data:cc-abcde".into(),
                namespace: namespace.into(),
                name: long(index),
                uid: uid(index),
                class,
                evidence,
                guest_cluster_hint: None,
                conflicts: Vec::new(),
                guest_policy,
            }
        })
        .collect();
    let mut status = FootprintStatus {
        would: (0..20)
            .map(|index| {
                format!(
                    "would write intent ClusterDeletion and harvesterhci.io/removeAllPersistentVolumeClaims: \"false\" on VM default/{}",
                    &long(index)[..63]
                )
            })
            .collect(),
        ledger: Some(Ledger {
            entries: (0..LEDGER_KEPT)
                .map(|index| LedgerEntry {
                    time: Time(Timestamp::now()),
                    action: LedgerAction::Deleted,
                    object: format!("PersistentVolumeClaim default/{} ({})", long(index), uid(index)),
                    reason: "the cluster's deletion is confirmed and its guest PV was last seen Delete".into(),
                })
                .collect(),
            folded_deletions: 1_900,
            folded_keeps: 0,
        }),
        ..FootprintStatus::default()
    };
    status.set_records(records);
    let mut footprint = Footprint::new("size", FootprintSpec::default());
    footprint.status = Some(status.clone());
    let size = serde_json::to_vec(&footprint).unwrap().len();
    assert!(size < 1024 * 1024, "a full Footprint takes {size} bytes");
    assert!(serde_json::to_vec(&status).unwrap().len() <= gleaner::footprint::STATUS_LIMIT);
    footprints
        .create(
            &PostParams::default(),
            &Footprint::new("size", FootprintSpec::default()),
        )
        .await
        .unwrap();
    footprints
        .patch_status(
            "size",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .unwrap();
    let stored = footprints.get("size").await.unwrap().status.unwrap();
    assert_eq!(stored.records().len(), 2_000);
    eprintln!("a Footprint of 2,000 objects with 253-character names: {size} bytes");
}
