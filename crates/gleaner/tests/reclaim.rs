//! The reclaimer (part 2b-1), in the world with the real binary, judged by the scenario's ground
//! truth: a deleted cluster leaves nothing it owned that was not protected, and nothing of
//! anyone else's is touched.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{TIME_SCALE, demo_world as world, footprints, gleaner_for, status_of, wait_for_hooks};
use gleaner::footprint::{Footprint, LedgerAction, Phase};
use gleaner_sim::{
    Clock, demo, kinds,
    scenario::{Class, ClusterKey, ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, testing::eventually};
use kube::{Api, ResourceExt};

/// The UIDs of the guest objects a cluster made (not its VMs' own disks).
fn made(scenario: &Scenario, key: &ClusterKey) -> BTreeSet<String> {
    scenario
        .made_by(key)
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect()
}

/// Waits until the Footprint of `key` records everything its cluster made.
async fn recorded_all(footprints: &Api<Footprint>, scenario: &Scenario, key: &ClusterKey) {
    let expected = made(scenario, key);
    eventually(
        &format!("{key:?}'s Footprint records what it made"),
        || async {
            let recorded: BTreeSet<String> = status_of(footprints, key)
                .await
                .records()
                .into_iter()
                .map(|record| record.uid)
                .collect();
            recorded == expected
        },
    )
    .await;
}

/// Nothing leaked, nothing wrongly deleted, in every class.
fn judged_clean(report: &gleaner_sim::scenario::Report) {
    for class in Class::ALL {
        let summary = report.class(class);
        assert_eq!(summary.wrongly_deleted, 0, "{class}:\n{report}");
        assert_eq!(summary.leaked, 0, "{class}:\n{report}");
    }
}

#[tokio::test]
async fn a_deleted_cluster_leaves_nothing_unprotected_and_nothing_else_is_touched() {
    let world = world().await;
    let prefix = "r-demo";
    let mut scenario = demo::clusters(prefix, Clock::new(TIME_SCALE))
        .start(world)
        .await
        .unwrap();
    let _gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    let footprints = footprints(world, prefix).await;
    let prod = scenario.key("prod");
    let expected = made(&scenario, &prod);
    recorded_all(&footprints, &scenario, &prod).await;
    wait_for_hooks(&scenario, "prod").await;
    scenario.delete_cluster(&prod).await.unwrap();
    eventually("prod's Footprint is Reclaimed", || async {
        status_of(&footprints, &prod).await.phase == Some(Phase::Reclaimed)
    })
    .await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    judged_clean(&report);
    for class in [Class::Retained, Class::AnnotatedRetain] {
        assert!(report.class(class).kept > 0, "{class}:\n{report}");
    }
    // Every kept object of prod says so on itself and in the ledger, once.
    let status = status_of(&footprints, &prod).await;
    let ledger = status.ledger.clone().unwrap_or_default();
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    for object in report
        .objects
        .iter()
        .filter(|object| object.must_survive && expected.contains(&object.uid))
    {
        let entries = ledger
            .entries
            .iter()
            .filter(|entry| {
                entry.action == LedgerAction::Kept
                    && entry.object.ends_with(&format!("({})", object.uid))
            })
            .count();
        assert_eq!(entries, 1, "{object:?} in {ledger:?}");
        let resource = match object.kind.as_str() {
            "VolumeSnapshot" => kinds::volume_snapshot(),
            _ => kinds::persistent_volume_claim(),
        };
        let found = kinds::namespaced(&harvester, &object.namespace, &resource)
            .get(&object.name)
            .await
            .unwrap();
        assert!(
            found.annotations().contains_key("gleaner.io/kept"),
            "{object:?}"
        );
    }
    let deleted = ledger
        .entries
        .iter()
        .filter(|entry| entry.action == LedgerAction::Deleted)
        .count();
    assert!(deleted > 0, "{ledger:?}");
    // It records what stays on Harvester: a `kubectl delete` cannot drop it.
    let name = footprints
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|footprint| {
            footprint.spec.identity.name == "prod"
                && footprint.spec.identity.namespace == prod.namespace
        })
        .unwrap()
        .name_any();
    footprints.delete(&name, &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = footprints.get(&name).await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), ["gleaner.io/record"]);
}

#[tokio::test]
async fn a_reclaimed_footprint_with_nothing_kept_goes_after_the_retention() {
    let world = world().await;
    let prefix = "r-retention";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let footprints = footprints(world, prefix).await;
    let _gleaner = gleaner_for(world, prefix, &scenario, &["--retention=3s"]).await;
    recorded_all(&footprints, &scenario, &key).await;
    wait_for_hooks(&scenario, "c1").await;
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the Footprint is Reclaimed", || async {
        status_of(&footprints, &key).await.phase == Some(Phase::Reclaimed)
    })
    .await;
    eventually("the Footprint goes after the retention", || async {
        footprints.get_opt(&uid).await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn killed_mid_reclaim_and_restarted_it_finishes_and_deletes_each_object_once() {
    let world = world().await;
    let prefix = "r-kill";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 2)
                .volume(VolumePlan::new("data").hotplugged().snapshots(2))
                .volume(VolumePlan::new("logs").hotplugged())
                .volume(VolumePlan::new("spare"))
                .volume(VolumePlan::new("kept").retain())
                .volume(VolumePlan::new("shared").rwx()),
        )
        .cluster(ClusterPlan::new("c2", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let footprints = footprints(world, prefix).await;
    let first = gleaner_for(world, prefix, &scenario, &[]).await;
    recorded_all(&footprints, &scenario, &key).await;
    wait_for_hooks(&scenario, "c1").await;
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the reclaimer starts deleting", || async {
        common::evented(world, &key.namespace, "Deleting").await
    })
    .await;
    drop(first);
    let _second = gleaner_for(world, prefix, &scenario, &[]).await;
    eventually("c1's Footprint is Reclaimed", || async {
        status_of(&footprints, &key).await.phase == Some(Phase::Reclaimed)
    })
    .await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    judged_clean(&report);
    let ledger = status_of(&footprints, &key)
        .await
        .ledger
        .unwrap_or_default();
    for uid in made(&scenario, &key) {
        let entries = ledger
            .entries
            .iter()
            .filter(|entry| entry.object.ends_with(&format!("({uid})")))
            .count();
        assert_eq!(entries, 1, "{uid} once in {ledger:?}");
    }
}

#[tokio::test]
async fn scale_down_and_reprovision_delete_nothing_of_the_guests() {
    let world = world().await;
    let prefix = "r-scale";
    let scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 3)
                .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                .volume(VolumePlan::new("logs").hotplugged())
                .volume(VolumePlan::new("spare"))
                .volume(VolumePlan::new("shared").rwx()),
        )
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let footprints = footprints(world, prefix).await;
    let _gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    recorded_all(&footprints, &scenario, &key).await;
    wait_for_hooks(&scenario, "c1").await;
    let mut machines = scenario.cluster("c1").unwrap().machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let rancher = scenario.rancher_of("c1").unwrap();
    let vm_gone = |vm: &str| format!("VM {}/{vm} is gone", scenario.vm_namespace());
    rancher
        .scale_down("c1", "pool1", &machines[0].name)
        .await
        .unwrap();
    common::until_journal(&scenario, "node-driver", &vm_gone(&machines[0].vm)).await;
    rancher.reprovision(&machines[1].name).await.unwrap();
    common::until_journal(&scenario, "node-driver", &vm_gone(&machines[1].vm)).await;
    // Give a reclaimer every chance to act wrongly.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = scenario.measure(Duration::from_secs(30)).await.unwrap();
    let guest_objects = made(&scenario, &key);
    let gone: Vec<_> = report
        .objects
        .iter()
        .filter(|object| guest_objects.contains(&object.uid) && !object.exists_at_end)
        .collect();
    assert!(gone.is_empty(), "deleted on a living cluster: {gone:?}");
    let status = status_of(&footprints, &key).await;
    assert_eq!(status.phase, Some(Phase::Tracking));
    assert!(status.ledger.is_none(), "{:?}", status.ledger);
}
