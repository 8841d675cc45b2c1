//! The reclaimer (part 2b-1), in the world with the real binary, judged by the scenario's ground
//! truth: a deleted cluster leaves nothing it owned that was not protected, and nothing of
//! anyone else's is touched.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Gleaner, TIME_SCALE, wait_for_hooks};
use gleaner::footprint::{Footprint, FootprintStatus, LedgerAction, Phase};
use gleaner_sim::{
    Clock, demo, kinds,
    scenario::{Class, ClusterKey, Scenario},
};
use gleaner_world::{ClusterName, Role, World, testing::eventually};
use kube::{Api, ResourceExt};

async fn status_of(footprints: &Api<Footprint>, key: &ClusterKey) -> FootprintStatus {
    footprints
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|footprint| {
            footprint.spec.identity.namespace == key.namespace
                && footprint.spec.identity.name == key.name
        })
        .and_then(|footprint| footprint.status)
        .unwrap_or_default()
}

/// The UIDs of the guest objects a cluster made (not its VMs' own disks).
fn made(scenario: &Scenario, key: &ClusterKey) -> BTreeSet<String> {
    scenario
        .made_by(key)
        .into_iter()
        .filter(|(_, traits)| !traits.vm_disk)
        .map(|(object, _)| object.uid)
        .collect()
}

async fn demo_world() -> World {
    demo::world()
        .with_crds(Role::Management, gleaner::footprint::crds())
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deleted_cluster_leaves_nothing_unprotected_and_nothing_else_is_touched() {
    let world = demo_world().await;
    let prefix = "r-demo";
    let mut scenario = demo::clusters(prefix, Clock::new(TIME_SCALE))
        .start(&world)
        .await
        .unwrap();
    let fleets: BTreeSet<String> = scenario
        .cluster_keys()
        .filter(|key| key.installation == ClusterName::RANCHER)
        .map(|key| key.namespace.clone())
        .collect();
    let fleets: Vec<String> = fleets.into_iter().collect();
    let _gleaner = Gleaner::start_with(&world, prefix, prefix, &fleets.join(","), &[]).await;
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        &format!("gleaner-{prefix}"),
    );
    let prod = scenario.key("prod");
    let expected = made(&scenario, &prod);
    eventually("prod's Footprint records everything prod made", || async {
        let recorded: BTreeSet<String> = status_of(&footprints, &prod)
            .await
            .records()
            .into_iter()
            .map(|record| record.uid)
            .collect();
        recorded == expected
    })
    .await;
    wait_for_hooks(&scenario, "prod").await;
    scenario.delete_cluster(&prod).await.unwrap();
    eventually("prod's Footprint is Reclaimed", || async {
        status_of(&footprints, &prod).await.phase == Some(Phase::Reclaimed)
    })
    .await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    for class in Class::ALL {
        let summary = report.class(class);
        assert_eq!(summary.wrongly_deleted, 0, "{class}:\n{report}");
        assert_eq!(summary.leaked, 0, "{class}:\n{report}");
    }
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
                entry.action == LedgerAction::Kept && entry.object.contains(&object.uid)
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
}
