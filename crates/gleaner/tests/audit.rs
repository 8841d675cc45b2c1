//! `gleaner audit` (the CLI for people, part 2) as the real binary in the world: after a cluster
//! deleted with upstream alone, it finds exactly what leaked, per the scenario's ground truth,
//! and nothing that must survive; a namespace gleaner cannot fully see makes it say `unknown`.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    TIME_SCALE, demo_world as world, footprints, gleaner_for, recorded_all, status_of,
    until_journal,
};
use gleaner::footprint::Footprint;
use gleaner_sim::scenario::ClusterKey;
use gleaner_sim::{
    Clock, demo,
    scenario::{ClusterPlan, Report, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, World, testing::eventually};
use kube::Api;
use serde_json::Value;

/// `gleaner audit -o json` as Rancher's admin: its exit status and answer.
async fn audit(world: &World, gleaner_namespace: &str) -> (Option<i32>, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .args([
            "audit",
            "--gleaner-namespace",
            gleaner_namespace,
            "-o",
            "json",
        ])
        .arg("--kubeconfig")
        .arg(world.kubeconfig(ClusterName::RANCHER).unwrap())
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.code(),
        serde_json::from_slice(&output.stdout).unwrap(),
    )
}

/// The findings about the scenario's objects (the world holds other tests' too), by UID.
fn about<'a>(answer: &'a Value, report: &Report) -> Vec<&'a Value> {
    let ours: BTreeSet<&str> = report
        .objects
        .iter()
        .map(|object| object.uid.as_str())
        .collect();
    answer["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|finding| ours.contains(finding["uid"].as_str().unwrap()))
        .collect()
}

/// The scenario, with `old` deleted by upstream alone (no gleaner yet) and judged once Rancher
/// has let its provisioning Cluster go (a gleaner started before that would see a deletion).
async fn leaked_by_upstream(scenario: &mut Scenario) -> Report {
    let old = scenario.key("old");
    scenario.delete_cluster(&old).await.unwrap();
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    until_journal(scenario, "rancher", "cluster old is gone").await;
    assert!(
        report
            .objects
            .iter()
            .any(|object| !object.must_survive && object.exists_at_end),
        "upstream leaked nothing:\n{report}"
    );
    report
}

/// The status of the cluster's `GuestUnreachable` condition.
async fn guest_unreachable(footprints: &Api<Footprint>, key: &ClusterKey) -> Option<String> {
    status_of(footprints, key)
        .await
        .conditions
        .into_iter()
        .find(|condition| condition.type_ == "GuestUnreachable")
        .map(|condition| condition.status)
}

/// Waits until the living cluster's Footprint records what it made and sees its guest.
async fn living_seen(world: &World, prefix: &str, scenario: &Scenario) {
    let footprints = footprints(world, prefix).await;
    let living = scenario.key("living");
    recorded_all(&footprints, scenario, &living).await;
    eventually("the living cluster's guest is seen", || async {
        guest_unreachable(&footprints, &living).await.as_deref() == Some("False")
    })
    .await;
}

#[tokio::test]
async fn audit_finds_exactly_what_upstream_leaked_and_nothing_that_must_survive() {
    let world = world().await;
    let prefix = "u-audit";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("old", 1)
                .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                .volume(VolumePlan::new("scratch").unattached().snapshots(1))
                .volume(VolumePlan::new("spare"))
                .volume(VolumePlan::new("keep").annotated_retain())
                .volume(VolumePlan::new("shared").rwx())
                .load_balancer("web"),
        )
        .cluster(
            ClusterPlan::new("living", 1)
                .volume(VolumePlan::new("app").hotplugged())
                .volume(VolumePlan::new("idle"))
                .load_balancer("api"),
        )
        .start(world)
        .await
        .unwrap();
    let report = leaked_by_upstream(&mut scenario).await;
    let first = gleaner_for(world, prefix, &scenario, &[]).await;
    living_seen(world, prefix, &scenario).await;

    let (status, answer) = audit(world, &format!("gleaner-{prefix}")).await;
    assert_eq!(status, Some(3), "orphans found: exit 3\n{answer:#}");
    let findings = about(&answer, &report);
    let orphans: BTreeSet<&str> = findings
        .iter()
        .filter(|finding| finding["verdict"] == "orphan")
        .map(|finding| finding["uid"].as_str().unwrap())
        .collect();
    let leaked: BTreeSet<&str> = report
        .objects
        .iter()
        .filter(|object| !object.must_survive && object.exists_at_end)
        .map(|object| object.uid.as_str())
        .collect();
    assert_eq!(orphans, leaked, "{answer:#}\n{report}");
    for object in report.objects.iter().filter(|object| object.must_survive) {
        assert!(
            !orphans.contains(object.uid.as_str()),
            "{object:?} must survive"
        );
    }
    // The living cluster's volumes, attached or not, are in use.
    let living = scenario.key("living");
    let footprints = footprints(world, prefix).await;
    for record in status_of(&footprints, &living).await.records() {
        let finding = findings
            .iter()
            .find(|finding| finding["uid"] == record.uid.as_str());
        if let Some(finding) = finding {
            assert_eq!(finding["verdict"], "in use", "{finding:#}");
        }
    }
    // The retained one says why.
    let retained = report
        .objects
        .iter()
        .find(|object| object.class == gleaner_sim::scenario::Class::AnnotatedRetain)
        .unwrap();
    let finding = findings
        .iter()
        .find(|finding| finding["uid"] == retained.uid.as_str())
        .unwrap();
    assert_eq!(
        (&finding["verdict"], &finding["why"]),
        (&Value::from("unknown"), &Value::from("Retained")),
        "{finding:#}"
    );
    assert!(answer["totals"]["orphanBytes"].as_u64().unwrap() > 0);

    // `--audit-interval` exports the same figures from inside the controller.
    drop(first);
    let gleaner = gleaner_for(world, prefix, &scenario, &["--audit-interval", "1m"]).await;
    let harvester = answer["harvesters"][0]["credentials"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let series = format!("gleaner_orphans{{harvester=\"{harvester}\"}} ");
    let everywhere = answer["totals"]["orphans"].as_u64().unwrap();
    eventually("the periodic audit exports the orphans", || async {
        gleaner.metrics().await.lines().any(|line| {
            line.strip_prefix(&series)
                .and_then(|value| value.trim().parse::<u64>().ok())
                == Some(everywhere)
        })
    })
    .await;
}

#[tokio::test]
async fn a_second_installations_vm_or_an_unseen_guest_makes_a_left_volume_unknown() {
    let world = world().await;
    let prefix = "u-audit-blind";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("old", 1).volume(VolumePlan::new("spare")))
        .cluster(ClusterPlan::new("living", 1).volume(VolumePlan::new("app")))
        .cluster(
            ClusterPlan::new("theirs", 1)
                .in_installation(demo::SECOND_RANCHER)
                .volume(VolumePlan::new("elsewhere")),
        )
        .start(world)
        .await
        .unwrap();
    let report = leaked_by_upstream(&mut scenario).await;
    let _gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    living_seen(world, prefix, &scenario).await;
    let old_spare = scenario
        .made_by(&scenario.key("old"))
        .into_iter()
        .find(|(object, _)| {
            object.resource.kind == "PersistentVolumeClaim" && object.name.starts_with("pvc-")
        })
        .map(|(object, _)| object.uid)
        .unwrap();
    let verdict_of_spare = |answer: &Value| {
        about(answer, &report)
            .into_iter()
            .find(|finding| finding["uid"] == old_spare.as_str())
            .cloned()
            .unwrap()
    };

    // The other installation's VM is no cluster this gleaner knows: it could own the volume.
    let (_, answer) = audit(world, &format!("gleaner-{prefix}")).await;
    let spare = verdict_of_spare(&answer);
    assert_eq!(spare["verdict"], "unknown", "{spare:#}");
    assert!(spare["why"]["ForeignVm"].is_object(), "{spare:#}");
    assert!(
        about(&answer, &report)
            .iter()
            .all(|finding| finding["verdict"] != "orphan"),
        "{answer:#}"
    );

    // A living guest gleaner cannot see could name it.
    let living = scenario.key("living");
    let guest = scenario.guest_of(&living).unwrap();
    world.stop_apiserver(&guest).unwrap();
    let footprints = footprints(world, prefix).await;
    eventually("the living guest is unreachable", || async {
        guest_unreachable(&footprints, &living).await.as_deref() == Some("True")
    })
    .await;
    let (_, answer) = audit(world, &format!("gleaner-{prefix}")).await;
    let spare = verdict_of_spare(&answer);
    assert_eq!(spare["verdict"], "unknown", "{spare:#}");
    assert!(
        spare["why"]["GuestInventoryIncomplete"].is_object(),
        "{spare:#}"
    );
    world.start_apiserver(&guest).await.unwrap();
}

/// `gleaner <args> -o json` as Rancher's admin: its exit status, answer and stderr.
async fn gleaner_json(world: &World, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .args(args)
        .args(["-o", "json", "--kubeconfig"])
        .arg(world.kubeconfig(ClusterName::RANCHER).unwrap())
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn adopted_orphans_are_reclaimed_and_one_taken_during_the_grace_period_is_kept() {
    let world = world().await;
    let prefix = "u-adopt";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("old", 1)
                .volume(VolumePlan::new("scratch").unattached().snapshots(1))
                .volume(VolumePlan::new("spare"))
                .volume(VolumePlan::new("keep").annotated_retain()),
        )
        .cluster(ClusterPlan::new("living", 1).volume(VolumePlan::new("app").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let report = leaked_by_upstream(&mut scenario).await;
    let _gleaner = gleaner_for(world, prefix, &scenario, &["--grace-period", "20s"]).await;
    living_seen(world, prefix, &scenario).await;
    let gleaner_namespace = format!("gleaner-{prefix}");
    let ours = ["--gleaner-namespace", gleaner_namespace.as_str()];
    let old = scenario.key("old");
    let pvc_of = |volume: &str| {
        scenario
            .guest_volume(&old, volume)
            .unwrap()
            .host_pvc
            .name
            .clone()
    };

    // Only orphans are adopted, and nothing is when one named is not.
    let kept = format!("pvc/{}", pvc_of("keep"));
    let (status, _, error) = gleaner_json(world, &[&["adopt", &kept], &ours[..]].concat()).await;
    assert_eq!(status, Some(1), "{error}");
    assert!(error.contains("gleaner.io/retain"), "{error}");
    // By label: refused whole when one selected is not an orphan.
    let claims = gleaner_sim::kinds::namespaced(
        &world.client(ClusterName::HARVESTER).await.unwrap(),
        scenario.vm_namespace(),
        &gleaner_sim::kinds::persistent_volume_claim(),
    );
    for (volume, label) in [("scratch", "old-data"), ("keep", "kept-data")] {
        let patch = serde_json::json!({"metadata": {"labels": {"app": label}}});
        claims
            .patch(
                &pvc_of(volume),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    let (status, _, error) = gleaner_json(
        world,
        &[&["adopt", "-l", "app=kept-data"], &ours[..]].concat(),
    )
    .await;
    assert_eq!(status, Some(1), "{error}");
    let (status, shown, error) = gleaner_json(
        world,
        &[&["adopt", "-l", "app=old-data"], &ours[..]].concat(),
    )
    .await;
    assert_eq!(status, Some(0), "{error}");
    let scratch_uid = claims.get(&pvc_of("scratch")).await.unwrap().metadata.uid;
    assert_eq!(shown["objects"].as_array().unwrap().len(), 1, "{shown:#}");
    assert_eq!(shown["objects"][0]["uid"].as_str(), scratch_uid.as_deref());

    let footprints = footprints(world, prefix).await;
    let before = footprints
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    let (status, shown, error) =
        gleaner_json(world, &[&["adopt", "--all"], &ours[..]].concat()).await;
    assert_eq!(status, Some(0), "{error}");
    assert!(shown["footprint"].is_null(), "{shown:#}");
    assert_eq!(
        footprints
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        before,
        "without --confirm nothing is written"
    );

    let (status, adopted, error) = gleaner_json(
        world,
        &[&["adopt", "--all", "--confirm"], &ours[..]].concat(),
    )
    .await;
    assert_eq!(status, Some(0), "{error}");
    let name = adopted["footprint"].as_str().unwrap().to_owned();
    let adopted_uids: BTreeSet<String> = adopted["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["uid"].as_str().unwrap().to_owned())
        .collect();
    let leaked: BTreeSet<String> = report
        .objects
        .iter()
        .filter(|object| !object.must_survive && object.exists_at_end)
        .map(|object| object.uid.clone())
        .collect();
    assert!(leaked.is_subset(&adopted_uids), "{adopted:#}\n{report}");

    // During the grace period the living cluster's VM takes one of them.
    let spare = pvc_of("spare");
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vms = gleaner_sim::kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &gleaner_sim::kinds::virtual_machine(),
    );
    let theirs = scenario.cluster("living").unwrap().machines[0].vm.clone();
    let vm = vms.get(&theirs).await.unwrap();
    let mut volumes = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes.push(
        serde_json::json!({"name": "spare", "persistentVolumeClaim": {
            "claimName": spare, "hotpluggable": true
        }}),
    );
    let plug = serde_json::json!({"spec": {"template": {"spec": {"volumes": volumes}}}});
    vms.patch(
        &theirs,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&plug),
    )
    .await
    .unwrap();
    // And a Pod mounts another: only a live audit can see that (no VM lists it). The plan
    // says so during the grace period, and the reclaimer keeps it.
    let mounted = pvc_of("scratch");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reader"},
        "spec": {
            "containers": [{"name": "reader", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": mounted}}],
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(harvester.clone(), scenario.vm_namespace())
        .create(&Default::default(), &pod)
        .await
        .unwrap();
    let mounted_uid = claims.get(&mounted).await.unwrap().metadata.uid.unwrap();
    let (status, plan, error) = gleaner_json(
        world,
        &[&["plan", &name, "-n", &gleaner_namespace], &ours[..]].concat(),
    )
    .await;
    assert_eq!(status, Some(0), "{error}");
    let planned = plan["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|object| object["uid"] == mounted_uid.as_str())
        .unwrap();
    assert_eq!(
        (&planned["action"], &planned["reason"]),
        (&Value::from("Keep"), &Value::from("NoLongerOrphan")),
        "{plan:#}"
    );

    eventually("the adopted Footprint is reclaimed", || async {
        footprints
            .get_opt(&name)
            .await
            .unwrap()
            .and_then(|footprint| footprint.status)
            .and_then(|status| status.phase)
            == Some(gleaner::footprint::Phase::Reclaimed)
    })
    .await;
    let ledger = footprints
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap()
        .ledger
        .unwrap_or_default();
    let claims = gleaner_sim::kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &gleaner_sim::kinds::persistent_volume_claim(),
    );
    let taken = claims.get(&spare).await.unwrap();
    let taken_uid = taken.metadata.uid.clone().unwrap();
    let entry = ledger
        .entries
        .iter()
        .find(|entry| entry.object.contains(&taken_uid))
        .unwrap();
    assert_eq!(
        entry.action,
        gleaner::footprint::LedgerAction::Kept,
        "{ledger:?}"
    );
    let after = scenario.measure(Duration::from_secs(60)).await.unwrap();
    let mounted_entry = ledger
        .entries
        .iter()
        .find(|entry| entry.object.contains(&mounted_uid))
        .unwrap();
    assert_eq!(
        (mounted_entry.action, mounted_entry.reason.as_str()),
        (gleaner::footprint::LedgerAction::Kept, "NoLongerOrphan"),
        "{ledger:?}"
    );
    // The mounted volume's snapshot (old's only one) stays with it.
    let kept_with_it: BTreeSet<String> = scenario
        .made_by(&old)
        .into_iter()
        .filter(|(object, traits)| object.uid == mounted_uid || traits.snapshot)
        .map(|(object, _)| object.uid)
        .collect();
    for object in &after.objects {
        if object.uid == taken_uid || kept_with_it.contains(&object.uid) {
            continue;
        }
        assert!(
            object.must_survive == object.exists_at_end,
            "{object:?}\n{after}"
        );
    }
}
