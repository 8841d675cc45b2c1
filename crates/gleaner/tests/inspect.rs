//! `gleaner plan` and `gleaner explain` (the CLI for people, part 1), run as the real binary
//! against the world: what `plan` says deleting a cluster would do is what the reclaimer then
//! does, object for object; `explain` tells each kind of object's story; bad input gets one
//! line and a non-zero exit.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Output,
    time::Duration,
};

use common::{
    TIME_SCALE, demo_world as world, footprints, gleaner_for, recorded_all, status_of,
    until_reclaimed, wait_for_hooks,
};
use gleaner::footprint::LedgerAction;
use gleaner_sim::{
    Clock, kinds,
    scenario::{Class, ClusterPlan, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, World, testing::eventually};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::Secret,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// Runs the gleaner binary against the world's Rancher as its admin, without colour.
async fn gleaner(world: &World, args: &[&str]) -> Output {
    gleaner_as(&world.kubeconfig(ClusterName::RANCHER).unwrap(), args).await
}

/// Runs the gleaner binary against the world's Rancher with `kubeconfig`, without colour.
async fn gleaner_as(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// The JSON a successful run printed.
async fn answer(world: &World, args: &[&str]) -> Value {
    let output = gleaner(world, args).await;
    assert!(
        output.status.success(),
        "gleaner {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The one-line error of a failed run.
async fn refusal(world: &World, args: &[&str]) -> String {
    let output = gleaner(world, args).await;
    assert_eq!(output.status.code(), Some(1), "gleaner {args:?}");
    assert!(
        output.stdout.is_empty(),
        "gleaner {args:?} printed a partial answer"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "gleaner {args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The uid inside a ledger entry's `Kind namespace/name (uid)`.
fn uid_in(object: &str) -> String {
    let (_, rest) = object.rsplit_once(" (").unwrap();
    rest.trim_end_matches(')').to_owned()
}

#[tokio::test]
async fn a_plan_of_a_living_cluster_is_what_the_reclaimer_then_does_object_for_object() {
    let world = world().await;
    let prefix = "i-plan";
    let (mut scenario, _gleaner, footprints, prod) =
        common::prod_recorded(world, prefix, |builder| builder).await;
    let gleaner_namespace = format!("gleaner-{prefix}");
    let args = [
        "plan",
        "prod",
        "-n",
        &prod.namespace,
        "--gleaner-namespace",
        &gleaner_namespace,
    ];
    let plan = answer(world, &[&args[..], &["-o", "json"]].concat()).await;
    assert_eq!(plan["question"], "IfDeletedNow", "{plan:#}");
    assert!(plan["hold"].is_null(), "{plan:#}");
    let mut would_delete = BTreeSet::new();
    let mut would_keep = BTreeMap::new();
    for object in plan["objects"].as_array().unwrap() {
        let uid = object["uid"].as_str().unwrap().to_owned();
        match object["action"].as_str().unwrap() {
            "Delete" => {
                would_delete.insert(uid);
            }
            "Keep" => {
                would_keep.insert(uid, object["reason"].as_str().unwrap().to_owned());
            }
            other => panic!("{other} for a living cluster's object: {plan:#}"),
        }
    }
    assert!(
        !would_delete.is_empty() && !would_keep.is_empty(),
        "{plan:#}"
    );
    assert_eq!(
        plan["totals"]["delete"].as_u64(),
        Some(would_delete.len() as u64)
    );
    assert!(
        plan["totals"]["deleteBytes"].as_u64().unwrap() > 0,
        "{plan:#}"
    );
    let table = gleaner(world, &args).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("Cluster "), "{table}");
    assert!(
        table.contains(&format!("{} to delete", would_delete.len())),
        "{table}"
    );
    assert!(table.contains("GuestRetain"), "{table}");
    // Read-only RBAC is enough, and gives the same answer.
    let reader = read_only(world, &gleaner_namespace).await;
    let as_reader = gleaner_as(&reader, &[&args[..], &["-o", "json"]].concat()).await;
    assert!(
        as_reader.status.success(),
        "{}",
        String::from_utf8_lossy(&as_reader.stderr)
    );
    let as_reader: Value = serde_json::from_slice(&as_reader.stdout).unwrap();
    assert_eq!(as_reader["objects"], plan["objects"]);

    scenario.delete_cluster(&prod).await.unwrap();
    until_reclaimed(&footprints, &prod).await;
    let ledger = status_of(&footprints, &prod)
        .await
        .ledger
        .unwrap_or_default();
    let deleted: BTreeSet<String> = ledger
        .entries
        .iter()
        .filter(|entry| entry.action == LedgerAction::Deleted)
        .map(|entry| uid_in(&entry.object))
        .collect();
    let kept: BTreeMap<String, String> = ledger
        .entries
        .iter()
        .filter(|entry| entry.action == LedgerAction::Kept)
        .map(|entry| (uid_in(&entry.object), entry.reason.clone()))
        .collect();
    assert_eq!(deleted, would_delete);
    assert_eq!(kept, would_keep);
    // Afterwards the plan says what the reclaimer decided: each object gone or kept.
    let after = answer(world, &[&args[..], &["-o", "json"]].concat()).await;
    assert_eq!(after["question"], "Now");
    assert_eq!(
        after["totals"]["gone"].as_u64(),
        Some(would_delete.len() as u64),
        "{after:#}"
    );
    assert_eq!(after["totals"]["delete"].as_u64(), Some(0), "{after:#}");
}

#[tokio::test]
async fn explain_tells_a_reclaimed_a_kept_a_conflicting_and_an_unattributed_objects_story() {
    let world = world().await;
    let prefix = "i-explain";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .lookalikes(1)
        .cluster(
            ClusterPlan::new("c1", 1)
                .volume(VolumePlan::new("data").hotplugged())
                .volume(VolumePlan::new("database").retain().hotplugged())
                .volume(VolumePlan::new("spare").hotplugged()),
        )
        .cluster(ClusterPlan::new("c2", 1))
        .start(world)
        .await
        .unwrap();
    let c1 = scenario.key("c1");
    let footprints = footprints(world, prefix).await;
    let _gleaner = gleaner_for(world, prefix, &scenario, &[]).await;
    recorded_all(&footprints, &scenario, &c1).await;
    wait_for_hooks(&scenario, "c1").await;
    // c2's VM hot-plugs c1's spare volume too: a conflict on both Footprints.
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let spare = scenario.guest_volume(&c1, "spare").unwrap().clone();
    let theirs = scenario.cluster("c2").unwrap().machines[0].vm.clone();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let vm = vms.get(&theirs).await.unwrap();
    let mut volumes = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes.push(json!({"name": "spare", "persistentVolumeClaim": {
        "claimName": spare.host_pvc.name, "hotpluggable": true
    }}));
    let plug = json!({"spec": {"template": {"spec": {"volumes": volumes}}}});
    vms.patch(&theirs, &PatchParams::default(), &Patch::Merge(&plug))
        .await
        .unwrap();
    eventually("c1's spare volume is a conflict", || async {
        status_of(&footprints, &c1)
            .await
            .records()
            .iter()
            .any(|record| record.name == spare.host_pvc.name && !record.conflicts.is_empty())
    })
    .await;
    scenario.delete_cluster(&c1).await.unwrap();
    until_reclaimed(&footprints, &c1).await;

    let gleaner_namespace = format!("gleaner-{prefix}");
    let explain = |object: String, namespace: String| {
        let gleaner_namespace = gleaner_namespace.clone();
        async move {
            answer(
                world,
                &[
                    "explain",
                    &object,
                    "-n",
                    &namespace,
                    "--gleaner-namespace",
                    &gleaner_namespace,
                    "-o",
                    "json",
                ],
            )
            .await
        }
    };
    let host_namespace = spare.host_namespace.clone();
    let pvc = |volume: &str| {
        format!(
            "pvc/{}",
            scenario.guest_volume(&c1, volume).unwrap().host_pvc.name
        )
    };

    let reclaimed = explain(pvc("data"), host_namespace.clone()).await;
    assert_eq!(reclaimed["object"]["exists"], false, "{reclaimed:#}");
    assert_eq!(reclaimed["attributed"], true, "{reclaimed:#}");
    let recording = &reclaimed["recordedBy"][0];
    assert_eq!(recording["plan"]["action"], "Gone", "{reclaimed:#}");
    assert!(
        recording["ledger"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["action"] == "Deleted" && entry["reason"] == "reclaimed"),
        "{reclaimed:#}"
    );
    assert!(
        recording["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["reason"] == "Deleting"),
        "{reclaimed:#}"
    );
    assert!(
        recording["evidence"][0]["fact"]
            .as_str()
            .unwrap()
            .starts_with("HotPlugged:"),
        "{reclaimed:#}"
    );

    let kept = explain(pvc("database"), host_namespace.clone()).await;
    assert_eq!(kept["object"]["exists"], true, "{kept:#}");
    assert_eq!(kept["object"]["marks"]["gleaner.io/kept"], "GuestRetain");
    let recording = &kept["recordedBy"][0];
    assert_eq!(
        (&recording["plan"]["action"], &recording["plan"]["reason"]),
        (&json!("Keep"), &json!("GuestRetain")),
        "{kept:#}"
    );
    assert_eq!(recording["guestPolicy"]["policy"], "Retain", "{kept:#}");
    assert!(
        recording["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["reason"] == "Kept"),
        "{kept:#}"
    );

    let conflicting = explain(pvc("spare"), host_namespace.clone()).await;
    let recordings = conflicting["recordedBy"].as_array().unwrap();
    assert_eq!(recordings.len(), 2, "{conflicting:#}");
    for recording in recordings {
        assert!(
            !recording["conflicts"].as_array().unwrap().is_empty(),
            "{conflicting:#}"
        );
        assert_eq!(
            (&recording["plan"]["action"], &recording["plan"]["reason"]),
            (&json!("Keep"), &json!("Conflict")),
            "{conflicting:#}"
        );
    }
    let c2_recording = recordings
        .iter()
        .find(|recording| recording["cluster"].as_str().unwrap().ends_with("/c2"))
        .unwrap();
    assert_eq!(c2_recording["phase"], "Tracking");

    let report = scenario.measure(Duration::from_secs(60)).await.unwrap();
    let lookalike = report
        .objects
        .iter()
        .find(|object| object.class == Class::Lookalike)
        .unwrap();
    let unattributed = explain(
        format!("pvc/{}", lookalike.name),
        lookalike.namespace.clone(),
    )
    .await;
    assert_eq!(unattributed["attributed"], false, "{unattributed:#}");
    assert!(
        unattributed["recordedBy"].as_array().unwrap().is_empty(),
        "{unattributed:#}"
    );
    let story = unattributed["story"].to_string();
    assert!(story.contains("gleaner never deletes it"), "{story}");
    // The table is the story, for people.
    let output = gleaner(
        world,
        &[
            "explain",
            &format!("pvc/{}", lookalike.name),
            "-n",
            &lookalike.namespace,
            "--gleaner-namespace",
            &gleaner_namespace,
        ],
    )
    .await;
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("No Footprint records uid"), "{text}");
}

/// A kubeconfig for a ServiceAccount of Rancher that may only read what plan and explain read:
/// gleaner's Footprints, both Cluster kinds, the install-uuid Setting, Events, and by name the
/// cloud credentials.
async fn read_only(world: &World, gleaner_namespace: &str) -> std::path::PathBuf {
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let name = format!("{gleaner_namespace}-reader");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["gleaner.io"], "resources": ["footprints"], "verbs": ["get", "list"]},
            {"apiGroups": ["provisioning.cattle.io"], "resources": ["clusters"], "verbs": ["get"]},
            {"apiGroups": ["cluster.x-k8s.io"], "resources": ["clusters"], "verbs": ["get"]},
            {"apiGroups": ["management.cattle.io"], "resources": ["settings"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": gleaner_namespace}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(rancher.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(rancher)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    world
        .service_account_kubeconfig(ClusterName::RANCHER, gleaner_namespace, &name)
        .await
        .unwrap()
}

/// A cloud credential in Rancher whose kubeconfig is `kubeconfig`.
async fn credential(world: &World, name: &str, kubeconfig: &str) -> String {
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let namespace = "cattle-global-data";
    gleaner_world::testing::ensure_namespace(&rancher, namespace)
        .await
        .unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                "harvestercredentialConfig-kubeconfigContent".to_owned(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(rancher, namespace);
    let _ = secrets.delete(name, &Default::default()).await;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    format!("{namespace}:{name}")
}

#[tokio::test]
async fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let world = world().await;
    let error = refusal(
        world,
        &[
            "plan",
            "nowhere",
            "-n",
            "fleet-none",
            "--gleaner-namespace",
            "gleaner-i-bad",
        ],
    )
    .await;
    assert!(error.contains("no cluster fleet-none/nowhere"), "{error}");

    let error = refusal(world, &["explain", "pod/x"]).await;
    assert!(error.contains("not \"pod\""), "{error}");

    // A Harvester nobody answers at.
    let ca = world.ca_pem();
    let unreachable = credential(
        world,
        "i-bad-unreachable",
        &gleaner_world::render_kubeconfig("nowhere", "https://127.0.0.1:1", ca, "token"),
    )
    .await;
    let error = refusal(
        world,
        &[
            "explain",
            "pvc/anything",
            "--harvester",
            &unreachable,
            "--api-timeout",
            "2s",
        ],
    )
    .await;
    assert!(
        error.contains("cannot read PersistentVolumeClaim default/anything"),
        "{error}"
    );
    let error = refusal(
        world,
        &["audit", "--harvester", &unreachable, "--api-timeout", "2s"],
    )
    .await;
    assert!(error.contains("cannot read kube-system"), "{error}");

    // A credential whose identity may read nothing on Harvester.
    let nobody = world
        .service_account_kubeconfig(ClusterName::HARVESTER, "default", "i-bad-nobody")
        .await
        .unwrap();
    let forbidden = credential(
        world,
        "i-bad-forbidden",
        &std::fs::read_to_string(nobody).unwrap(),
    )
    .await;
    let error = refusal(
        world,
        &["explain", "pvc/anything", "--harvester", &forbidden],
    )
    .await;
    assert!(error.contains("forbidden"), "{error}");
}
