//! Part 1 hardened, in the world with the real binary: no Machine held by a mistake, bounded
//! calls, one installation at a time, a Footprint as soon as gleaner leads, no periodic reads.

mod common;

use std::{process::Stdio, time::Duration};

use common::{
    DEADLINE, Gleaner, INTENT, TIME_SCALE, condition, hooked, hooks, requests, until_journal,
    wait_for_hooks, warned, world, world_builder,
};
use gleaner::footprint::{Footprint, ReleaseReason};
use gleaner_sim::{
    Clock, kinds,
    scenario::{ClusterPlan, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, testing::eventually};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

async fn footprints(namespace: &str) -> Api<Footprint> {
    Api::namespaced(
        world().await.client(ClusterName::RANCHER).await.unwrap(),
        namespace,
    )
}

/// Deleted by hand and replaced by a namesake with another UID, a cluster's VM has nothing left
/// to protect: the hook goes at once, the Footprint records why, and the namesake gets no intent.
#[tokio::test]
async fn a_vm_replaced_by_a_namesake_gets_no_intent_and_its_hook_goes() {
    let world = world().await;
    let (mut scenario, _gleaner) = hooked("h-namesake", 1, &[]).await;
    let footprints = footprints("gleaner-h-namesake").await;
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let vm = scenario.cluster("c1").unwrap().machines[0].vm.clone();
    let recorded_uid = || async {
        footprints
            .get_opt(&uid)
            .await
            .unwrap()
            .and_then(|footprint| footprint.status)
            .and_then(|status| status.vms.into_iter().find(|record| record.name == vm))
            .and_then(|record| record.uid)
    };
    eventually("the Footprint records the VM's UID", || async {
        recorded_uid().await.is_some()
    })
    .await;
    let original = recorded_uid().await.unwrap();
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let before = vms.get(&vm).await.unwrap();
    vms.delete(&vm, &DeleteParams::default()).await.unwrap();
    eventually("the VM is gone", || async {
        vms.get_opt(&vm).await.unwrap().is_none()
    })
    .await;
    let mut namesake: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": vm, "labels": before.labels()},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
    }))
    .unwrap();
    namesake.metadata.namespace = Some(scenario.vm_namespace().to_owned());
    let namesake = vms.create(&PostParams::default(), &namesake).await.unwrap();
    assert_ne!(namesake.uid(), Some(original.clone()));
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the hook goes with nothing to protect", || async {
        hooks(&scenario, "c1")
            .await
            .iter()
            .all(|(_, hook)| hook.is_none())
    })
    .await;
    let status = footprints.get(&uid).await.unwrap().status.unwrap();
    let released = &status.released[0];
    assert_eq!(released.reason, ReleaseReason::VmNotFound, "{released:?}");
    assert_eq!(released.vm, format!("{}/{vm}", scenario.vm_namespace()));
    assert_eq!(
        status
            .vms
            .iter()
            .find(|record| record.name == vm)
            .and_then(|r| r.uid.clone()),
        Some(original),
        "the record keeps the UID of the VM it came from"
    );
    if let Some(namesake) = vms.get_opt(&vm).await.unwrap() {
        assert!(
            !namesake.annotations().contains_key(INTENT),
            "the namesake got no intent: {:?}",
            namesake.annotations()
        );
    }
    until_journal(&scenario, "capi", "Cluster c1 finished deleting").await;
}

/// A Harvester that accepts connections and never answers: every call times out, the
/// Footprint says it is unreachable, and the hook timeout still lets the Machine go.
#[tokio::test]
async fn a_silent_harvester_times_out_and_the_hook_timeout_still_fires() {
    let world = world().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let (mut scenario, _gleaner) = hooked(
        "h-silent",
        1,
        &["--api-timeout", "2s", "--hook-timeout", "4s"],
    )
    .await;
    let footprints = footprints("gleaner-h-silent").await;
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let status = |type_: &'static str| {
        let footprints = footprints.clone();
        let uid = uid.clone();
        async move {
            condition(&footprints, &uid, type_)
                .await
                .map(|(status, _)| status)
        }
    };
    eventually("the Footprint's Harvester answers", || async {
        status("HarvesterUnreachable").await.as_deref() == Some("False")
    })
    .await;
    let credential = scenario.cluster("c1").unwrap().cloud_credential.clone();
    let (namespace, name) = credential.split_once(':').unwrap();
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(rancher.clone(), namespace);
    let original = secrets.get(name).await.unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: silent\n\
         clusters: [{{name: silent, cluster: {{server: \"http://{address}\"}}}}]\n\
         users: [{{name: silent, user: {{token: silent}}}}]\n\
         contexts: [{{name: silent, context: {{cluster: silent, user: silent}}}}]\n"
    );
    let silenced =
        json!({"stringData": {"harvestercredentialConfig-kubeconfigContent": kubeconfig}});
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&silenced))
        .await
        .unwrap();
    eventually(
        "the Footprint says its Harvester is unreachable",
        || async { status("HarvesterUnreachable").await.as_deref() == Some("True") },
    )
    .await;
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the hook timeout lets the Machine go", || async {
        status("ProtectionLapsed").await.as_deref() == Some("True")
            && hooks(&scenario, "c1")
                .await
                .iter()
                .all(|(_, hook)| hook.is_none())
    })
    .await;
    let released = footprints.get(&uid).await.unwrap().status.unwrap().released;
    assert_eq!(
        released[0].reason,
        ReleaseReason::HookTimeout,
        "{released:?}"
    );
    assert!(warned(world, &key.namespace, "HarvesterUnreachable", "has waited").await);
    // Mended, the rest of the deletion (the node driver's) completes.
    let mended = json!({"data": original.data.unwrap()});
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&mended))
        .await
        .unwrap();
    until_journal(&scenario, "capi", "Cluster c1 finished deleting").await;
    held.abort();
}

/// Whatever keeps the Footprint from being made (here: no install-uuid Setting), a scale-down
/// goes at once, and a cluster deletion waits `--footprint-wait`, then writes the protective
/// intent `Unknown` and lets the Machine go; Warning Events and the error counter say why.
#[tokio::test]
async fn without_a_footprint_a_scale_down_goes_at_once_and_a_deletion_waits_a_bounded_time() {
    let world = world_builder().start().await.unwrap();
    let mut scenario = ScenarioBuilder::new("h-nofp")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(&world)
        .await
        .unwrap();
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    Api::<kube::api::DynamicObject>::all_with(rancher.clone(), &kinds::setting())
        .delete("install-uuid", &DeleteParams::default())
        .await
        .unwrap();
    let key = scenario.key("c1");
    let gleaner = Gleaner::start_with(
        &world,
        "h-nofp",
        "h-nofp",
        &key.namespace,
        &["--footprint-wait", "3s"],
    )
    .await;
    wait_for_hooks(&scenario, "c1").await;
    eventually("a Warning says the Footprint cannot be written", || async {
        warned(
            &world,
            &key.namespace,
            "FootprintNotWritten",
            "install-uuid",
        )
        .await
    })
    .await;
    let errors = r#"gleaner_reconcile_errors_total{kind="Cluster",error="install_uuid_missing"}"#;
    eventually("the error counter counts it", || async {
        gleaner
            .metrics()
            .await
            .lines()
            .any(|line| line.starts_with(errors))
    })
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let vms = kinds::namespaced(
        &harvester,
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let mut machines = scenario.cluster("c1").unwrap().machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let (going, staying) = (&machines[0], &machines[1]);
    scenario
        .rancher_of("c1")
        .unwrap()
        .scale_down("c1", "pool1", &going.name)
        .await
        .unwrap();
    until_journal(
        &scenario,
        "node-driver",
        &format!("VM {}/{} is gone", scenario.vm_namespace(), going.vm),
    )
    .await;
    scenario.delete_cluster(&key).await.unwrap();
    let started = tokio::time::Instant::now();
    eventually("the deleting Machine waits, with a Warning", || async {
        warned(&world, &key.namespace, "FootprintMissing", "waits").await
    })
    .await;
    assert!(
        hooks(&scenario, "c1")
            .await
            .iter()
            .any(|(name, hook)| *name == staying.name && hook.is_some()),
        "the deletion waits for the Footprint"
    );
    eventually(
        "after the bound, the intent Unknown protects the VM",
        || async {
            vms.get_opt(&staying.vm).await.unwrap().is_some_and(|vm| {
                vm.annotations()
                    .get(INTENT)
                    .is_some_and(|intent| intent.contains("\"Unknown\""))
                    && vm.annotations().get(common::REMOVE_ALL).map(String::as_str) == Some("false")
            })
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    until_journal(&scenario, "capi", "Cluster c1 finished deleting").await;
    let report = scenario.measure(Duration::from_secs(2)).await.unwrap();
    let volume = report
        .objects
        .iter()
        .find(|object| object.name.starts_with("pvc-"))
        .unwrap();
    assert!(
        volume.exists_at_end,
        "Unknown protects the guest volume: {report}"
    );
}

/// A second installation watching a namespace the first one watches refuses to start; one
/// watching another namespace starts.
#[tokio::test]
async fn a_second_installation_watching_the_same_namespace_refuses_to_start() {
    let world = world().await;
    let (scenario, _first) = hooked("h-twice", 1, &[]).await;
    let fleet = scenario.key("c1").namespace;
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(rancher.clone(), "gleaner-h-twice");
    eventually("the first installation marks its Lease", || async {
        leases
            .get_opt("gleaner")
            .await
            .unwrap()
            .is_some_and(|lease| lease.labels().contains_key("gleaner.io/installation"))
    })
    .await;
    gleaner_world::testing::ensure_namespace(&rancher, "gleaner-h-twice-b")
        .await
        .unwrap();
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .args(["run", "--kubeconfig"])
        .arg(world.kubeconfig(ClusterName::RANCHER).unwrap())
        .args([
            "--namespace",
            "gleaner-h-twice-b",
            "--watch-namespace",
            &fleet,
        ])
        .args(["--admin-addr", "127.0.0.1:0", "--lease-duration", "2s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("the second installation exits")
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("another gleaner installation is running"),
        "{log}"
    );
    assert!(log.contains("gleaner-h-twice/gleaner"), "{log}");
    let elsewhere = Gleaner::start(world, "h-twice-c", "h-twice-elsewhere").await;
    eventually(
        "an installation watching another namespace starts",
        || async {
            common::http_get(elsewhere.admin(), "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
        },
    )
    .await;
}

/// A standby makes no Footprint; once it wins the Lease, the Footprint appears within seconds,
/// not at the next periodic look.
#[tokio::test]
async fn a_footprint_appears_within_seconds_of_winning_the_lease() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("h-lease")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1))
        .start(world)
        .await
        .unwrap();
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let namespace = "gleaner-h-lease";
    gleaner_world::testing::ensure_namespace(&rancher, namespace)
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(rancher.clone(), namespace);
    let held = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("gleaner".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("departed".into()),
            lease_duration_seconds: Some(4),
            acquire_time: Some(MicroTime(Timestamp::now())),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &held).await.unwrap();
    let _gleaner = Gleaner::start(world, "h-lease", &scenario.key("c1").namespace).await;
    let footprints = footprints(namespace).await;
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let holder = || async {
        leases
            .get("gleaner")
            .await
            .unwrap()
            .spec
            .and_then(|spec| spec.holder_identity)
    };
    while holder().await.as_deref() != Some("h-lease") {
        assert!(
            footprints.get_opt(&uid).await.unwrap().is_none(),
            "a standby made a Footprint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let won = tokio::time::Instant::now();
    eventually("the Footprint appears", || async {
        footprints.get_opt(&uid).await.unwrap().is_some()
    })
    .await;
    let took = won.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the Footprint took {took:?} after the Lease"
    );
}

/// Idle clusters cost gleaner no periodic reads: over a window longer than part 1's 30-second
/// period, the Rancher apiserver counts no GET or LIST of Footprints, Settings or Secrets (the
/// cloud credential is watched, not read again).
#[tokio::test]
async fn idle_clusters_cost_no_periodic_reads() {
    let world = world_builder().start().await.unwrap();
    let scenario = ScenarioBuilder::new("h-idle")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1))
        .cluster(ClusterPlan::new("c2", 1))
        .start(&world)
        .await
        .unwrap();
    let fleet = scenario.key("c1").namespace;
    let _gleaner = Gleaner::start(&world, "h-idle", &fleet).await;
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-h-idle",
    );
    eventually("both Footprints record their VMs", || async {
        let listed = footprints.list(&Default::default()).await.unwrap().items;
        listed.len() == 2
            && listed.iter().all(|footprint| {
                footprint.status.as_ref().is_some_and(|status| {
                    status.vms.iter().all(|vm| vm.uid.is_some()) && !status.vms.is_empty()
                })
            })
    })
    .await;
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    // The simulated Rancher reads the cloud credential while it finishes provisioning (later on
    // a loaded machine): wait until no Secret has been read for 5 s, so that the window below
    // measures the idling alone. A periodic read of gleaner's (at most 30 s apart) still shows.
    let secret_reads = || async {
        requests(&rancher, &["GET", "LIST"])
            .await
            .get("secrets")
            .copied()
            .unwrap_or_default()
    };
    let mut seen = secret_reads().await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = secret_reads().await;
        if now == seen {
            break;
        }
        seen = now;
    }
    let before = requests(&rancher, &["GET", "LIST"]).await;
    tokio::time::sleep(Duration::from_secs(32)).await;
    let after = requests(&rancher, &["GET", "LIST"]).await;
    eprintln!("GET and LIST over 32 s of idling, by resource: {:?}", {
        let mut made = after.clone();
        for (resource, count) in &mut made {
            *count -= before.get(resource).copied().unwrap_or_default();
        }
        made
    });
    for resource in ["footprints", "settings", "secrets"] {
        let made = after.get(resource).copied().unwrap_or_default()
            - before.get(resource).copied().unwrap_or_default();
        assert_eq!(made, 0, "{resource}: {made} GET/LIST in 32 s of idling");
    }
}
