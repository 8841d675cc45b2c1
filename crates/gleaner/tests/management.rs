//! gleaner's management side in the world: the real binary, given the Rancher kubeconfig only,
//! against the simulated Rancher, Cluster API, node driver and Harvester.

mod common;

use std::{process::Command, time::Duration};

use common::{
    DEADLINE, Gleaner, INTENT, IntentLog, REMOVE_ALL, TIME_SCALE, condition, hooked, hooks, phase,
    until_journal, wait_for_hooks, warned, world, world_builder,
};
use gleaner::footprint::{Footprint, Phase};
use gleaner_sim::{
    Clock, kinds,
    scenario::{Class, ClusterPlan, ScenarioBuilder, VolumePlan},
};
use gleaner_world::ClusterName;
use gleaner_world::testing::eventually;
use kube::Api;

#[tokio::test]
async fn scale_down_writes_scale_down_and_false_and_lets_the_machine_go() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("g-scale")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let fleet = scenario.key("c1").namespace;
    let _gleaner = Gleaner::start(world, "scale", &fleet).await;
    wait_for_hooks(&scenario, "c1").await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let mut machines = scenario.cluster("c1").unwrap().machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-scale",
    );
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let recorded_vms = || async {
        let mut vms: Vec<String> = footprints
            .get_opt(&uid)
            .await
            .unwrap()
            .and_then(|footprint| footprint.status)
            .map(|status| {
                status
                    .vms
                    .into_iter()
                    .filter(|vm| vm.uid.is_some())
                    .map(|vm| vm.name)
                    .collect()
            })
            .unwrap_or_default();
        vms.sort();
        vms
    };
    let mut all_vms: Vec<String> = machines.iter().map(|machine| machine.vm.clone()).collect();
    all_vms.sort();
    eventually(
        "the Footprint records both VMs as seen on Harvester",
        || async { recorded_vms().await == all_vms },
    )
    .await;
    let going = &machines[0];
    scenario
        .rancher_of("c1")
        .unwrap()
        .scale_down("c1", "pool1", &going.name)
        .await
        .unwrap();
    let gone = format!("VM {}/{} is gone", scenario.vm_namespace(), going.vm);
    until_journal(&scenario, "node-driver", &gone).await;
    watcher.abort();
    let (_, intent, remove_all) = intents.get(&going.vm).expect("gleaner wrote an intent");
    assert_eq!(intent["reason"], "ScaleDown");
    eventually("the Footprint drops the VM that is gone", || async {
        recorded_vms().await == [machines[1].vm.clone()]
    })
    .await;
    assert_eq!(remove_all.as_deref(), Some("false"));
    assert!(
        intents.get(&machines[1].vm).is_none(),
        "the other VM is untouched"
    );
    // The guest volume outlives the scale-down.
    let report = scenario.measure(Duration::from_secs(2)).await.unwrap();
    let volume = report
        .objects
        .iter()
        .find(|object| object.name.starts_with("pvc-"))
        .unwrap();
    assert!(volume.exists_at_end, "{report}");
}

#[tokio::test]
async fn cluster_deletion_writes_the_intent_before_each_harvester_machine_goes() {
    let world = world().await;
    let mut scenario = ScenarioBuilder::new("g-delete")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 2)
                .volume(VolumePlan::new("data").hotplugged())
                .volume(VolumePlan::new("database").retain().hotplugged()),
        )
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let _gleaner = Gleaner::start(world, "delete", &key.namespace).await;
    wait_for_hooks(&scenario, "c1").await;
    let rancher_client = world.client(ClusterName::RANCHER).await.unwrap();
    let footprints: Api<Footprint> = Api::namespaced(rancher_client, "gleaner-delete");
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    recorded(&footprints, &uid, 2, 2).await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the Footprint is Reclaimed", || async {
        phase(&footprints, &uid).await == Some(Phase::Reclaimed)
    })
    .await;
    let report = scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let entries = scenario.journal().entries();
    for machine in &scenario.cluster("c1").unwrap().machines {
        let (written, intent, remove_all) =
            intents.get(&machine.vm).expect("an intent on every VM");
        assert_eq!(intent["reason"], "ClusterDeletion");
        assert_eq!(intent["footprint"], uid.as_str());
        assert_eq!(remove_all.as_deref(), Some("false"));
        let prefix = format!("deleted HarvesterMachine {} at revision ", machine.name);
        let deleted_at: u64 = entries
            .iter()
            .filter(|entry| entry.actor == "capi")
            .find_map(|entry| entry.what.strip_prefix(&prefix))
            .expect("CAPI deleted the HarvesterMachine")
            .parse()
            .unwrap();
        assert!(
            written < deleted_at,
            "intent written at revision {written}, HarvesterMachine deleted at {deleted_at}"
        );
        let driver = entries
            .iter()
            .find(|entry| {
                entry.actor == "node-driver"
                    && entry.what.contains(&format!("/{} (removeAll", machine.vm))
            })
            .expect("the driver removed the VM");
        assert!(driver.what.contains("removeAll=false"), "{}", driver.what);
    }
    // With gleaner in place upstream deletes only the VMs' own disks; gleaner reclaims the
    // guest's volume and keeps the one its guest retains.
    assert_eq!(report.class(Class::VmDisk).reclaimed, 2, "{report}");
    assert_eq!(report.class(Class::Hotplugged).reclaimed, 1, "{report}");
    assert_eq!(report.class(Class::Hotplugged).leaked, 0, "{report}");
    assert_eq!(report.class(Class::Retained).kept, 1, "{report}");
}

#[tokio::test]
async fn machines_wait_on_the_hook_while_gleaner_is_down_and_the_order_holds() {
    let world = world().await;
    let (mut scenario, gleaner) = hooked("g-restart", 1, &[]).await;
    drop(gleaner);
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    until_journal(&scenario, "capi", "waits on hooks").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        scenario
            .journal()
            .position("capi", "deleted HarvesterMachine"),
        None
    );
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let _gleaner = Gleaner::start(world, "g-restart", &key.namespace).await;
    scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let machine = &scenario.cluster("c1").unwrap().machines[0];
    let (written, intent, _) = intents
        .get(&machine.vm)
        .expect("the intent, once gleaner is back");
    assert_eq!(intent["reason"], "ClusterDeletion");
    let deleted = scenario
        .journal()
        .entries()
        .iter()
        .find_map(|entry| {
            entry
                .what
                .strip_prefix(&format!(
                    "deleted HarvesterMachine {} at revision ",
                    machine.name
                ))
                .map(|revision| revision.parse::<u64>().unwrap())
        })
        .expect("the HarvesterMachine went");
    assert!(written < deleted);
}

#[tokio::test]
async fn an_opted_out_cluster_gets_no_intent_and_its_hooks_go() {
    let world = world().await;
    let (mut scenario, _gleaner) = hooked("g-optout", 1, &[]).await;
    let key = scenario.key("c1");
    let clusters = kinds::namespaced(
        &world.client(ClusterName::RANCHER).await.unwrap(),
        &key.namespace,
        &kinds::provisioning_cluster(),
    );
    let opt_out = serde_json::json!({"metadata": {"annotations": {
        "harvesterhci.io/skipHarvesterMachineProvisionCleanup": "true"
    }}});
    clusters
        .patch(
            "c1",
            &Default::default(),
            &kube::api::Patch::Merge(&opt_out),
        )
        .await
        .unwrap();
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-g-optout",
    );
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    eventually("the Footprint says OptedOut", || async {
        condition(&footprints, &uid, "OptedOut")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    scenario.delete_cluster(&key).await.unwrap();
    scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let machine = &scenario.cluster("c1").unwrap().machines[0];
    assert!(
        intents.get(&machine.vm).is_none(),
        "nothing written on an opted-out cluster's VM"
    );
    // `measure` returns once the VM is gone; CAPI finishes deleting the Machine a few calls later.
    until_journal(
        &scenario,
        "capi",
        &format!("Machine {} finished deleting", machine.name),
    )
    .await;
}

#[tokio::test]
async fn a_dry_run_hooks_but_writes_nothing_on_harvester() {
    let world = world().await;
    let (mut scenario, _gleaner) = hooked("g-dry", 1, &["--dry-run"]).await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    let report = scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let machine = &scenario.cluster("c1").unwrap().machines[0];
    assert!(intents.get(&machine.vm).is_none());
    // Upstream behaves as without gleaner: the handler's "true" wins, hot-plugged volumes go.
    assert_eq!(report.class(Class::Hotplugged).reclaimed, 1, "{report}");
    // The Footprint says what gleaner would have done.
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-g-dry",
    );
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let status = footprints.get(&uid).await.unwrap().status.unwrap();
    let expected = format!(
        "would write intent ClusterDeletion and {REMOVE_ALL}: \"false\" on VM {}/{}",
        scenario.vm_namespace(),
        machine.vm
    );
    assert!(status.would.contains(&expected), "{:?}", status.would);
    // The rest is the reclaimer's plan, also written nowhere but here.
    assert!(
        status
            .would
            .iter()
            .filter(|entry| **entry != expected)
            .all(|entry| entry.starts_with("would delete ") || entry.starts_with("would keep ")),
        "{:?}",
        status.would
    );
}

#[tokio::test]
async fn gleaner_unhook_leaves_no_gleaner_hook() {
    let world = world().await;
    let (scenario, gleaner) = hooked("g-unhook", 2, &[]).await;
    drop(gleaner);
    let fleet = scenario.key("c1").namespace;
    let output = Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .args(["unhook", "--kubeconfig"])
        .arg(world.kubeconfig(ClusterName::RANCHER).unwrap())
        .args(["--watch-namespace", &fleet])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("from 2 Machine(s)"));
    assert!(
        hooks(&scenario, "c1")
            .await
            .iter()
            .all(|(_, hook)| hook.is_none())
    );
}

#[tokio::test]
async fn of_two_replicas_one_writes_and_the_other_takes_over_when_it_dies() {
    let world = world().await;
    let scenario = ScenarioBuilder::new("g-replicas")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1))
        .start(world)
        .await
        .unwrap();
    let fleet = scenario.key("c1").namespace;
    let first = Gleaner::start_with(world, "replicas", "replica-a", &fleet, &[]).await;
    wait_for_hooks(&scenario, "c1").await;
    let second = Gleaner::start_with(world, "replicas", "replica-b", &fleet, &[]).await;
    let client = world.client(ClusterName::RANCHER).await.unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "gleaner-replicas");
    let holder = || async {
        leases
            .get_opt("gleaner")
            .await
            .unwrap()
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
    };
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    drop(first);
    eventually("replica-b takes the Lease", || async {
        holder().await.as_deref() == Some("replica-b")
    })
    .await;
    // The new leader writes: a replacement Machine gets its hook.
    let machine = scenario.cluster("c1").unwrap().machines[0].name.clone();
    scenario
        .rancher_of("c1")
        .unwrap()
        .reprovision(&machine)
        .await
        .unwrap();
    eventually("the replacement Machine is hooked by replica-b", || async {
        hooks(&scenario, "c1")
            .await
            .iter()
            .any(|(name, hook)| *name != machine && hook.is_some())
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn cluster_deletion_passes_in_a_v1beta2_world() {
    let world = world_builder()
        .capi(gleaner_world::CapiVersion::V1beta2)
        .start()
        .await
        .unwrap();
    let mut scenario = ScenarioBuilder::new("g-v1beta2")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(&world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let _gleaner = Gleaner::start(&world, "v1beta2", &key.namespace).await;
    wait_for_hooks(&scenario, "c1").await;
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-v1beta2",
    );
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    recorded(&footprints, &uid, 1, 1).await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the Footprint is Reclaimed", || async {
        phase(&footprints, &uid).await == Some(Phase::Reclaimed)
    })
    .await;
    let report = scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    let machine = &scenario.cluster("c1").unwrap().machines[0];
    let (_, intent, remove_all) = intents.get(&machine.vm).expect("an intent on the VM");
    assert_eq!(intent["reason"], "ClusterDeletion");
    assert_eq!(remove_all.as_deref(), Some("false"));
    assert_eq!(report.class(Class::Hotplugged).reclaimed, 1, "{report}");
    assert_eq!(report.class(Class::Hotplugged).leaked, 0, "{report}");
}

#[tokio::test]
async fn a_broken_credential_is_a_misconfiguration_that_holds_the_hook_with_a_warning() {
    let world = world().await;
    let (mut scenario, _gleaner) = hooked("g-broken", 1, &[]).await;
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-g-broken",
    );
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    eventually("gleaner made the cluster's Footprint", || async {
        footprints.get_opt(&uid).await.unwrap().is_some()
    })
    .await;
    let cluster = scenario.cluster("c1").unwrap().clone();
    let (namespace, name) = cluster.cloud_credential.split_once(':').unwrap();
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(rancher.clone(), namespace);
    let original = secrets.get(name).await.unwrap();
    let status = |type_: &'static str| {
        let footprints = footprints.clone();
        let uid = uid.clone();
        async move {
            condition(&footprints, &uid, type_)
                .await
                .map(|(status, _)| status)
        }
    };
    eventually(
        "the Footprint's Harvester answers and accepts its credential",
        || async {
            status("HarvesterUnreachable").await.as_deref() == Some("False")
                && status("HarvesterMisconfigured").await.as_deref() == Some("False")
        },
    )
    .await;
    let broken = serde_json::json!({"data": {
        "harvestercredentialConfig-kubeconfigContent": "bm90IGEga3ViZWNvbmZpZw=="
    }});
    secrets
        .patch(name, &Default::default(), &kube::api::Patch::Merge(&broken))
        .await
        .unwrap();
    // The Harvester's watch reads its Secret again and gives up the old client.
    // A credential that does not parse is a misconfiguration, not an outage.
    eventually(
        "the Footprint says its Harvester is misconfigured",
        || async {
            status("HarvesterMisconfigured").await.as_deref() == Some("True")
                && status("HarvesterUnreachable").await.as_deref() == Some("False")
        },
    )
    .await;
    // Rancher's own remove job reads the same credential, so upstream is stuck too: the point is
    // that gleaner neither panics nor guesses.
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    eventually(
        "a Warning Event says the hook waits for the credential",
        || async {
            warned(
                world,
                &key.namespace,
                "HarvesterMisconfigured",
                "does not parse",
            )
            .await
        },
    )
    .await;
    assert!(
        hooks(&scenario, "c1")
            .await
            .iter()
            .all(|(_, hook)| hook.is_some())
    );
    assert!(
        !std::fs::read_to_string(world.dir().join("logs/gleaner-g-broken.log"))
            .unwrap()
            .contains("bm90IGEga3ViZWNvbmZpZw")
    );
    // Mended, the deletion completes in order.
    let mended = serde_json::json!({"data": {
        "harvestercredentialConfig-kubeconfigContent": original.data.unwrap()["harvestercredentialConfig-kubeconfigContent"]
    }});
    secrets
        .patch(name, &Default::default(), &kube::api::Patch::Merge(&mended))
        .await
        .unwrap();
    until_journal(&scenario, "capi", "Cluster c1 finished deleting").await;
    eventually("the watch follows the mended credential", || async {
        status("HarvesterMisconfigured").await.as_deref() == Some("False")
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_harvester_lets_a_scale_down_go_and_holds_a_deletion_until_the_timeout() {
    // Its own world: stopping the Harvester would disturb every other test.
    let world = world_builder().start().await.unwrap();
    let mut scenario = ScenarioBuilder::new("g-unreachable")
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(&world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-unreachable",
    );
    let waiting = Gleaner::start(&world, "unreachable", &key.namespace).await;
    wait_for_hooks(&scenario, "c1").await;
    eventually("the Footprint sees its Harvester answer", || async {
        condition(&footprints, &uid, "HarvesterUnreachable")
            .await
            .is_some_and(|(status, _)| status == "False")
    })
    .await;
    world.stop_apiserver(ClusterName::HARVESTER).unwrap();
    eventually(
        "the Footprint says its Harvester is unreachable",
        || async {
            condition(&footprints, &uid, "HarvesterUnreachable").await
                == Some(("True".into(), "WatchFailing".into()))
        },
    )
    .await;
    // A reprovision does not wait on Harvester: its hook goes at once.
    let rancher = scenario.rancher_of("c1").unwrap();
    let replaced = scenario.cluster("c1").unwrap().machines[0].name.clone();
    rancher.reprovision(&replaced).await.unwrap();
    eventually("the reprovisioned Machine's hook goes", || async {
        hooks(&scenario, "c1")
            .await
            .iter()
            .filter(|(name, _)| *name == replaced)
            .all(|(_, hook)| hook.is_none())
    })
    .await;
    scenario.delete_cluster(&key).await.unwrap();
    eventually(
        "a Warning Event says the hook waits for Harvester",
        || async { warned(&world, &key.namespace, "HarvesterUnreachable", "").await },
    )
    .await;
    // Without a hook timeout the hook waits as long as Harvester is away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let others_hooked = |machines: Vec<(String, Option<String>)>| {
        machines
            .iter()
            .filter(|(name, _)| *name != replaced)
            .all(|(_, hook)| hook.is_some())
    };
    assert!(others_hooked(hooks(&scenario, "c1").await));
    assert_eq!(condition(&footprints, &uid, "ProtectionLapsed").await, None);
    eventually(
        "the metrics show the held hook and the unreachable Harvester",
        || async {
            let metrics = waiting.metrics().await;
            let has = |line: &str| metrics.lines().any(|sample| sample == line);
            let held = metrics
                .lines()
                .find_map(|sample| sample.strip_prefix("gleaner_hooks_held "));
            held.is_some_and(|held| held != "0")
                && has(r#"gleaner_harvesters{state="Unreachable"} 1"#)
        },
    )
    .await;
    drop(waiting);
    let _lapsing = Gleaner::start_with(
        &world,
        "unreachable",
        "unreachable-timeout",
        &key.namespace,
        &["--hook-timeout", "2s"],
    )
    .await;
    eventually("the hook timeout sets ProtectionLapsed", || async {
        condition(&footprints, &uid, "ProtectionLapsed").await
            == Some(("True".into(), "HookTimeout".into()))
    })
    .await;
    eventually("and removes the hook", || async {
        let machines = hooks(&scenario, "c1").await;
        machines.is_empty() || !others_hooked(machines)
    })
    .await;
    eventually("a Warning Event says protection lapsed", || async {
        warned(&world, &key.namespace, "ProtectionLapsed", "").await
    })
    .await;
}

#[tokio::test]
async fn a_malformed_intent_gives_a_warning_event_and_is_left_as_it_is() {
    let world = world().await;
    let (scenario, _gleaner) = hooked("g-malformed", 1, &[]).await;
    let key = scenario.key("c1");
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        "gleaner-g-malformed",
    );
    let vm = scenario.cluster("c1").unwrap().machines[0].vm.clone();
    let recorded = || async {
        footprints
            .get_opt(&uid)
            .await
            .unwrap()
            .and_then(|footprint| footprint.status)
            .and_then(|status| status.vms.into_iter().find(|record| record.name == vm))
    };
    eventually("the Footprint records the VM with its UID", || async {
        recorded().await.is_some_and(|record| record.uid.is_some())
    })
    .await;
    let vms = kinds::namespaced(
        &world.client(ClusterName::HARVESTER).await.unwrap(),
        scenario.vm_namespace(),
        &kinds::virtual_machine(),
    );
    let malformed = "{\"reason\": ClusterDeletion";
    let patch = serde_json::json!({"metadata": {"annotations": {INTENT: malformed}}});
    vms.patch(&vm, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("a Warning Event names the malformed intent", || async {
        warned(world, &key.namespace, "MalformedIntent", "").await
    })
    .await;
    let record = recorded().await.unwrap();
    assert_eq!(record.intent, None);
    assert!(record.intent_problem.is_some(), "{record:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let annotations = vms.get(&vm).await.unwrap().metadata.annotations.unwrap();
    assert_eq!(annotations[INTENT], malformed, "no write on a guess");
    assert!(!annotations.contains_key(REMOVE_ALL));
}

/// Waits until the Footprint records `vms` VMs by UID and `objects` objects: a Footprint that
/// never recorded a VM is held for an operator, so a deletion test deletes only after this.
async fn recorded(footprints: &Api<Footprint>, uid: &str, vms: usize, objects: usize) {
    eventually("the Footprint records the VMs and the volumes", || async {
        let status = footprints
            .get_opt(uid)
            .await
            .unwrap()
            .and_then(|footprint| footprint.status)
            .unwrap_or_default();
        status.vms.iter().filter(|vm| vm.uid.is_some()).count() == vms
            && status.records().len() == objects
    })
    .await;
}
