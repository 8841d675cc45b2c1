//! Attribution from inside the guest (part 2a-2), in the world with the real binary: each guest
//! cluster's own apiserver, reached through its `<cluster>-kubeconfig` Secret. The ground truth
//! is the scenario's record of what each cluster made, never gleaner's records.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{
    Gleaner, TIME_SCALE, demo_world as world, footprints, gleaner_for, requests, status_of, warned,
};
use gleaner::footprint::{Footprint, FootprintStatus, LedgerAction};
use gleaner_core::{
    attribution::{Evidence, ObjectClass},
    guest::GuestPolicy,
};
use gleaner_sim::{
    Clock,
    csi::Reclaim,
    demo, kinds,
    scenario::{ClusterKey, ClusterPlan, Scenario, ScenarioBuilder, Traits, VolumePlan},
};
use gleaner_world::{ClusterName, World, testing::eventually};
use k8s_openapi::api::core::v1::{PersistentVolume, Secret};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::Kubeconfig,
};
use serde_json::json;

/// A fast inventory and fast timeouts, so a silent guest shows within a test's patience.
const QUICK: &[&str] = &["--inventory-timeout=5s", "--api-timeout=10s"];
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a class of the ground truth is to gleaner.
fn class_of(kind: &str, traits: &Traits) -> Option<ObjectClass> {
    match kind {
        _ if traits.vm_disk => None,
        "PersistentVolumeClaim" if traits.rwx => Some(ObjectClass::RwxVolume),
        "PersistentVolumeClaim" => Some(ObjectClass::Volume),
        "NetworkFilesystem" => Some(ObjectClass::NetworkFilesystem),
        "VolumeSnapshot" => Some(ObjectClass::Snapshot),
        "LoadBalancer" => Some(ObjectClass::LoadBalancer),
        _ => None,
    }
}

/// Every guest object a cluster made (its VMs' own disks are the node driver's), by UID, with
/// its class and, for a volume, the reclaim policy its guest PV has.
fn truth(
    scenario: &Scenario,
    key: &ClusterKey,
) -> BTreeMap<String, (ObjectClass, Option<GuestPolicy>)> {
    scenario
        .made_by(key)
        .into_iter()
        .filter_map(|(object, traits)| {
            let class = class_of(&object.resource.kind, &traits)?;
            let policy = matches!(class, ObjectClass::Volume | ObjectClass::RwxVolume).then_some(
                if traits.retained {
                    GuestPolicy::Retain
                } else {
                    GuestPolicy::Delete
                },
            );
            Some((object.uid, (class, policy)))
        })
        .collect()
}

/// What the Footprint records, in the same terms; a snapshot's policy is checked apart.
fn recorded(status: &FootprintStatus) -> BTreeMap<String, (ObjectClass, Option<GuestPolicy>)> {
    status
        .records()
        .into_iter()
        .map(|record| {
            let policy = match record.class {
                ObjectClass::Volume | ObjectClass::RwxVolume => {
                    record.guest_policy.map(|seen| seen.policy)
                }
                _ => None,
            };
            (record.uid, (record.class, policy))
        })
        .collect()
}

async fn demo_clusters_hold_exactly_the_ground_truth(prefix: &str, csi_label: bool) {
    let world = world().await;
    let scenario = demo::clusters(prefix, Clock::new(TIME_SCALE))
        .csi_cluster_label(csi_label)
        .start(world)
        .await
        .unwrap();
    let _gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    let footprints = footprints(world, prefix).await;
    let ours: Vec<ClusterKey> = scenario
        .cluster_keys()
        .filter(|key| key.installation == ClusterName::RANCHER)
        .cloned()
        .collect();
    for key in &ours {
        let expected = truth(&scenario, key);
        assert!(!expected.is_empty(), "{key:?}");
        eventually(
            &format!("{key:?} records exactly what it made, by UID, class and policy"),
            || async { recorded(&status_of(&footprints, key).await) == expected },
        )
        .await;
    }
    let prod = status_of(&footprints, &scenario.key("prod")).await;
    let snapshots: Vec<_> = prod
        .records()
        .into_iter()
        .filter(|record| record.class == ObjectClass::Snapshot)
        .collect();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    for snapshot in &snapshots {
        assert!(
            snapshot
                .evidence
                .iter()
                .any(|evidence| matches!(evidence, Evidence::GuestSnapshot { .. })),
            "{snapshot:?}"
        );
        assert_eq!(
            snapshot.guest_policy.map(|seen| seen.policy),
            Some(GuestPolicy::Delete)
        );
    }
    // The namesake in team-b has a LoadBalancer with the same cluster label, for another
    // Service: prod holds only its own.
    let namesake = scenario
        .cluster_keys()
        .find(|key| key.name == "prod" && key.namespace != scenario.key("prod").namespace)
        .unwrap()
        .clone();
    let theirs: BTreeSet<String> = truth(&scenario, &namesake).into_keys().collect();
    assert!(
        recorded(&prod).keys().all(|uid| !theirs.contains(uid)),
        "nothing of the namesake"
    );
    assert!(prod.unmatched_guest_volumes.is_empty(), "{prod:?}");
}

#[tokio::test]
async fn every_class_of_every_demo_cluster_is_attributed_by_uid_class_and_policy() {
    demo_clusters_hold_exactly_the_ground_truth("g-demo", false).await;
}

#[tokio::test]
async fn with_the_csi_cluster_label_on_it_is_still_exactly_the_ground_truth() {
    demo_clusters_hold_exactly_the_ground_truth("g-label", true).await;
}

/// A scenario with one cluster `c1` and a hot-plugged volume `data`, watched by gleaner, with
/// everything it made recorded.
async fn tracked(prefix: &str, extra: &[&str]) -> (Scenario, Gleaner, Api<Footprint>) {
    let world = world().await;
    let scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let gleaner = gleaner_for(world, prefix, &scenario, extra).await;
    let footprints = footprints(world, prefix).await;
    let key = scenario.key("c1");
    let expected = truth(&scenario, &key);
    eventually("c1's Footprint records what it made", || async {
        recorded(&status_of(&footprints, &key).await) == expected
    })
    .await;
    (scenario, gleaner, footprints)
}

fn condition_of(status: &FootprintStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| (condition.status.clone(), condition.reason.clone()))
}

/// Every VM of the cluster is gone from Harvester: its hooks went.
async fn vms_gone(world: &World, scenario: &Scenario, cluster: &str) {
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let names: Vec<String> = scenario
        .cluster(cluster)
        .unwrap()
        .machines
        .iter()
        .map(|machine| machine.vm.clone())
        .collect();
    eventually(&format!("the VMs of {cluster} are gone"), || async {
        for name in &names {
            if vms.get_opt(name).await.unwrap().is_some() {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test]
/// Both volumes end `Retain`, so the reclaimer keeps them and their records stay to be read.
async fn a_volume_made_and_a_policy_changed_just_before_deletion_are_in_the_final_inventory() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = tracked("g-late", QUICK).await;
    let key = scenario.key("c1");
    let guest = world
        .client(&scenario.guest_of(&key).unwrap())
        .await
        .unwrap();
    let listed = || async {
        requests(&guest, &["LIST"])
            .await
            .get("persistentvolumes")
            .copied()
            .unwrap_or_default()
    };
    let lists_before = listed().await;
    scenario
        .set_reclaim_policy(&key, "data", Reclaim::Retain)
        .await
        .unwrap();
    scenario
        .add_volume(&key, VolumePlan::new("late").retain())
        .await
        .unwrap();
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the final inventory completed", || async {
        condition_of(&status_of(&footprints, &key).await, "Inventoried")
            == Some(("True".into(), "InventoryCompleted".into()))
    })
    .await;
    // The watch lists once; the inventory is one more live list of the guest's PVs.
    assert!(
        listed().await > lists_before,
        "the inventory read the guest live"
    );
    let status = status_of(&footprints, &key).await;
    assert_eq!(recorded(&status), truth(&scenario, &key), "{status:?}");
    let late = scenario
        .made_by(&key)
        .into_iter()
        .filter(|(object, traits)| {
            object.resource.kind == "PersistentVolumeClaim" && !traits.vm_disk
        })
        .map(|(object, _)| object.uid)
        .collect::<BTreeSet<_>>();
    assert_eq!(late.len(), 2, "data and late");
    let records = status.records();
    for uid in &late {
        let record = records.iter().find(|record| &record.uid == uid).unwrap();
        assert!(
            record
                .evidence
                .iter()
                .any(|evidence| matches!(evidence, Evidence::GuestVolume { .. })),
            "{record:?}"
        );
    }
    vms_gone(world, &scenario, "c1").await;
}

#[tokio::test]
async fn a_guest_that_stops_keeps_what_was_known_and_its_inventory_is_marked_incomplete() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = tracked("g-down", QUICK).await;
    let key = scenario.key("c1");
    let known = recorded(&status_of(&footprints, &key).await);
    let guest = scenario.guest_of(&key).unwrap();
    world.stop_apiserver(&guest).unwrap();
    eventually("GuestUnreachable", || async {
        condition_of(&status_of(&footprints, &key).await, "GuestUnreachable")
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    eventually("a GuestUnreachable Warning", || async {
        warned(
            world,
            &key.namespace,
            "GuestUnreachable",
            "kubeconfig Secret",
        )
        .await
    })
    .await;
    assert_eq!(recorded(&status_of(&footprints, &key).await), known);
    deleted_with_an_incomplete_inventory(world, &mut scenario, &footprints, &known).await;
}

#[tokio::test]
async fn a_guest_that_comes_back_clears_guest_unreachable() {
    let world = world().await;
    let (scenario, _gleaner, footprints) = tracked("g-back", QUICK).await;
    let key = scenario.key("c1");
    let guest = scenario.guest_of(&key).unwrap();
    world.stop_apiserver(&guest).unwrap();
    eventually("GuestUnreachable", || async {
        condition_of(&status_of(&footprints, &key).await, "GuestUnreachable")
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    world.start_apiserver(&guest).await.unwrap();
    eventually("GuestUnreachable clears", || async {
        condition_of(&status_of(&footprints, &key).await, "GuestUnreachable")
            == Some(("False".into(), "GuestReachable".into()))
    })
    .await;
}

#[tokio::test]
async fn a_rotated_kubeconfig_is_followed() {
    let (mut scenario, _gleaner, footprints) = tracked("g-rotate", QUICK).await;
    let key = scenario.key("c1");
    scenario.rotate_guest_kubeconfig(&key).await.unwrap();
    scenario
        .add_volume(&key, VolumePlan::new("after"))
        .await
        .unwrap();
    let expected = truth(&scenario, &key);
    eventually("the volume made after the rotation is recorded", || async {
        recorded(&status_of(&footprints, &key).await) == expected
    })
    .await;
    assert_eq!(
        condition_of(&status_of(&footprints, &key).await, "GuestUnreachable"),
        Some(("False".into(), "GuestReachable".into()))
    );
}

/// Deletes c1, whose guest does not answer: the final inventory is marked incomplete within
/// its timeout, the hooks go, and the reclaimer acts on what was known.
async fn deleted_with_an_incomplete_inventory(
    world: &World,
    scenario: &mut Scenario,
    footprints: &Api<Footprint>,
    known: &BTreeMap<String, (ObjectClass, Option<GuestPolicy>)>,
) {
    let key = scenario.key("c1");
    let deleted = Instant::now();
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the final inventory is marked incomplete", || async {
        condition_of(&status_of(footprints, &key).await, "Inventoried")
            == Some(("False".into(), "InventoryIncomplete".into()))
    })
    .await;
    assert!(
        deleted.elapsed() < INVENTORY_TIMEOUT + Duration::from_secs(20),
        "{:?}",
        deleted.elapsed()
    );
    vms_gone(world, scenario, "c1").await;
    reclaimed_from(footprints, &key, known).await;
}

/// The last known facts stood: the reclaimer acted on every object known before the guest
/// went silent (each is in the ledger, deleted or kept).
async fn reclaimed_from(
    footprints: &Api<Footprint>,
    key: &ClusterKey,
    known: &BTreeMap<String, (ObjectClass, Option<GuestPolicy>)>,
) {
    eventually("the reclaimer acted on every known object", || async {
        let status = status_of(footprints, key).await;
        let ledger = status.ledger.unwrap_or_default();
        status.phase == Some(gleaner::footprint::Phase::Reclaimed)
            && known.keys().all(|uid| {
                ledger
                    .entries
                    .iter()
                    .any(|entry| entry.object.ends_with(&format!("({uid})")))
            })
    })
    .await;
    // What was known decides: a volume last seen Delete goes, one never seen or Retain stays.
    let ledger = status_of(footprints, key).await.ledger.unwrap_or_default();
    for (uid, (class, policy)) in known {
        let entry = ledger
            .entries
            .iter()
            .find(|entry| entry.object.ends_with(&format!("({uid})")))
            .unwrap();
        let volume = matches!(class, ObjectClass::Volume | ObjectClass::RwxVolume);
        let expected = match policy {
            _ if !volume => None,
            Some(GuestPolicy::Delete) => Some((LedgerAction::Deleted, "reclaimed")),
            Some(GuestPolicy::Retain) => Some((LedgerAction::Kept, "GuestRetain")),
            None => Some((LedgerAction::Kept, "PolicyNeverSeen")),
        };
        if let Some((action, reason)) = expected {
            assert_eq!(
                (entry.action, entry.reason.as_str()),
                (action, reason),
                "{class:?} {uid} last seen {policy:?}"
            );
        }
    }
}

/// Accepts connections and never says a word.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test]
async fn a_guest_that_accepts_and_never_answers_times_the_inventory_out() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = tracked("g-silent", QUICK).await;
    let key = scenario.key("c1");
    let known = recorded(&status_of(&footprints, &key).await);
    let (namespace, name) = scenario.guest_kubeconfig_secret(&key);
    let secrets: Api<Secret> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        &namespace,
    );
    let secret = secrets.get(&name).await.unwrap();
    let text = String::from_utf8(secret.data.unwrap()["value"].0.clone()).unwrap();
    let mut kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let silent = silent_server().await;
    for cluster in &mut kubeconfig.clusters {
        if let Some(cluster) = cluster.cluster.as_mut() {
            cluster.server = Some(format!("https://{silent}"));
        }
    }
    // JSON is YAML: the kubeconfig reads back as it is.
    let value = serde_json::to_string(&kubeconfig).unwrap();
    secrets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"value": value}})),
        )
        .await
        .unwrap();
    deleted_with_an_incomplete_inventory(world, &mut scenario, &footprints, &known).await;
}

#[tokio::test]
async fn a_cluster_first_seen_deleting_is_tracked_late() {
    let world = world().await;
    let mut scenario = ScenarioBuilder::new("g-latecomer")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let clusters = kinds::namespaced(&rancher, &key.namespace, &kinds::provisioning_cluster());
    set_finalizers(&clusters, "c1", |finalizers| finalizers.push(HOLD.into())).await;
    scenario.delete_cluster(&key).await.unwrap();
    let _gleaner = gleaner_for(world, "g-latecomer", &scenario, QUICK).await;
    let footprints = footprints(world, "g-latecomer").await;
    eventually("LateTracking", || async {
        condition_of(&status_of(&footprints, &key).await, "LateTracking")
            == Some(("True".into(), "FirstSeenDeleting".into()))
    })
    .await;
    set_finalizers(&clusters, "c1", |finalizers| {
        finalizers.retain(|f| f != HOLD)
    })
    .await;
}

/// A cluster deleted before gleaner ever tracked it, its Machines held by another controller's
/// hook: its Footprint still records the VMs its HarvesterMachines named (they were made before
/// the deletion began), so the reclaim waits for them and, once they go, finishes, rather than
/// holding for an operator because "the Footprint never recorded a VM" (campaign seed 1065).
#[tokio::test]
async fn a_cluster_first_seen_deleting_records_the_vms_its_machines_had() {
    let world = world().await;
    let prefix = "g-late-vms";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let machines = kinds::namespaced(
        &rancher,
        &key.namespace,
        &kinds::Capi {
            version: world.capi_version(),
        }
        .machine(),
    );
    let names: Vec<String> = common::hooks(&scenario, "c1")
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let foreign_hook = json!({"metadata": {"annotations": {FOREIGN_HOOK: "hold"}}});
    for name in &names {
        machines
            .patch(name, &PatchParams::default(), &Patch::Merge(&foreign_hook))
            .await
            .unwrap();
    }
    scenario.delete_cluster(&key).await.unwrap();
    let _gleaner = gleaner_for(world, prefix, &scenario, QUICK).await;
    let footprints = footprints(world, prefix).await;
    let vms: BTreeSet<String> = scenario
        .cluster_of(&key)
        .unwrap()
        .machines
        .iter()
        .map(|machine| machine.vm.clone())
        .collect();
    eventually(
        "the late Footprint records every VM with its UID",
        || async {
            let status = status_of(&footprints, &key).await;
            let recorded: BTreeSet<String> = status
                .vms
                .iter()
                .filter(|vm| vm.uid.is_some())
                .map(|vm| vm.name.clone())
                .collect();
            condition_of(&status, "LateTracking").is_some_and(|(state, _)| state == "True")
                && recorded == vms
        },
    )
    .await;
    let released = json!({"metadata": {"annotations": {FOREIGN_HOOK: null}}});
    for name in &names {
        machines
            .patch(name, &PatchParams::default(), &Patch::Merge(&released))
            .await
            .unwrap();
    }
    common::until_reclaimed(&footprints, &key).await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    common::judged_clean(&report);
}

/// Another controller's pre-terminate hook: Cluster API keeps a Machine's VM while it is there.
const FOREIGN_HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/test";

const HOLD: &str = "test.gleaner.io/hold";

/// Changes an object's finalizers, guarded by the resourceVersion read.
async fn set_finalizers(
    api: &Api<kube::api::DynamicObject>,
    name: &str,
    change: impl Fn(&mut Vec<String>),
) {
    let object = api.get(name).await.unwrap();
    let mut finalizers = object.finalizers().to_vec();
    change(&mut finalizers);
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.resource_version(),
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_guest_pv_whose_host_pvc_is_missing_is_reported_never_guessed() {
    let world = world().await;
    let (scenario, _gleaner, footprints) = tracked("g-unmatched", QUICK).await;
    let key = scenario.key("c1");
    let guest = world
        .client(&scenario.guest_of(&key).unwrap())
        .await
        .unwrap();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pvc-made-by-hand"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "csi": {"driver": "driver.harvesterhci.io", "volumeHandle": "pvc-nowhere"},
        },
    }))
    .unwrap();
    Api::<PersistentVolume>::all(guest)
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    eventually("the guest PV is reported unmatched", || async {
        status_of(&footprints, &key)
            .await
            .unmatched_guest_volumes
            .iter()
            .any(|unmatched| {
                unmatched.pv == "pvc-made-by-hand"
                    && unmatched.volume_handle == "pvc-nowhere"
                    && unmatched.found == 0
            })
    })
    .await;
    assert_eq!(
        recorded(&status_of(&footprints, &key).await),
        truth(&scenario, &key)
    );
}
