//! gleaner in harder scenarios: a paused cluster, a cluster re-created under the same name,
//! dotted Machine names and a pool on a second Harvester. Each runs the real binary, given the
//! Rancher kubeconfig only, against the simulated Rancher, Cluster API, node driver and
//! Harvesters.

mod common;

use std::time::Duration;

use common::{
    DEADLINE, Gleaner, IntentLog, TIME_SCALE, condition, deletion_confirmed, hooks, phase,
    until_journal, wait_for_hooks, world_builder,
};
use gleaner::footprint::{Footprint, Phase};
use gleaner_sim::{
    Clock, Journal, kinds,
    rancher::{GuestCluster, GuestClusterSpec, PoolSpec},
    scenario::{ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::testing::eventually;
use gleaner_world::{ClusterName, Role, World};
use kube::{Api, api::DeleteParams};
use tokio::{sync::OnceCell, task::JoinHandle};

const SECOND_HARVESTER: &str = "harvester-2";
/// How long a frozen cluster is watched for anything gleaner or CAPI might do.
const FROZEN_FOR: Duration = Duration::from_secs(3);

/// This binary's world: the default one plus a second Harvester, with gleaner's CRDs in the
/// management cluster.
async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            world_builder()
                .cluster(SECOND_HARVESTER, Role::Harvester)
                .start()
                .await
                .unwrap()
        })
        .await
}

/// A scenario with `plan`, watched by a gleaner (namespace `gleaner-<prefix>`) that has hooked
/// every Machine and made the cluster's Footprint; the Footprints of gleaner's namespace.
async fn watched(prefix: &str, plan: ClusterPlan) -> (Scenario, Gleaner, Api<Footprint>) {
    let world = world().await;
    let name = plan.name.clone();
    let scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(plan)
        .start(world)
        .await
        .unwrap();
    let fleet = scenario.key(&name).namespace;
    let gleaner = Gleaner::start(world, prefix, &fleet).await;
    wait_for_hooks(&scenario, &name).await;
    let footprints: Api<Footprint> = Api::namespaced(
        world.client(ClusterName::RANCHER).await.unwrap(),
        &format!("gleaner-{prefix}"),
    );
    let uid = scenario.cluster(&name).unwrap().uid.clone();
    eventually("gleaner made the cluster's Footprint", || async {
        footprints.get_opt(&uid).await.unwrap().is_some()
    })
    .await;
    (scenario, gleaner, footprints)
}

/// The etcd revision at which CAPI deleted the HarvesterMachine, if it did.
fn harvester_machine_deleted_at(journal: &Journal, machine: &str) -> Option<u64> {
    let prefix = format!("deleted HarvesterMachine {machine} at revision ");
    journal
        .entries()
        .iter()
        .filter(|entry| entry.actor == "capi")
        .find_map(|entry| entry.what.strip_prefix(&prefix))
        .map(|revision| revision.parse().unwrap())
}

/// The VM carries `ClusterDeletion` for `footprint` and removeAll "false", written before CAPI
/// deleted the Machine's HarvesterMachine (all apiservers share one etcd, so revisions order
/// writes across clusters).
fn assert_intent_before_deletion(
    intents: &IntentLog,
    journal: &Journal,
    machine: &str,
    vm: &str,
    footprint: &str,
) {
    let (written, intent, remove_all) = intents
        .get(vm)
        .unwrap_or_else(|| panic!("no intent on VM {vm} of Machine {machine}"));
    assert_eq!(intent["reason"], "ClusterDeletion", "{intent}");
    assert_eq!(intent["footprint"], footprint, "{intent}");
    assert_eq!(remove_all.as_deref(), Some("false"));
    let deleted_at = harvester_machine_deleted_at(journal, machine)
        .unwrap_or_else(|| panic!("CAPI never deleted HarvesterMachine {machine}"));
    assert!(
        written < deleted_at,
        "intent on {vm} written at revision {written}, HarvesterMachine {machine} deleted at {deleted_at}"
    );
}

/// A paused cluster, deleted: its Footprint said `Frozen` before the deletion, every Machine is
/// deleting, and an intent log watches its VMs.
struct Frozen {
    scenario: Scenario,
    _gleaner: Gleaner,
    footprints: Api<Footprint>,
    cluster: GuestCluster,
    intents: IntentLog,
    watcher: JoinHandle<()>,
}

async fn paused_and_deleted(prefix: &str) -> Frozen {
    let world = world().await;
    let (mut scenario, gleaner, footprints) = watched(prefix, ClusterPlan::new("c1", 2)).await;
    let cluster = scenario.cluster("c1").unwrap().clone();
    let rancher = scenario.rancher_of("c1").unwrap();
    rancher.set_paused("c1", true).await.unwrap();
    eventually("the Footprint says Frozen", || async {
        condition(&footprints, &cluster.uid, "Frozen")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    // CAPI does not start a paused Cluster's deletion (its MachineDeployments stay), so the
    // Machines are deleted directly, as `kubectl delete machine` would: gleaner then faces
    // deleting, hooked Machines of a paused cluster, and CAPI holds them while it is paused.
    let machines = kinds::namespaced(
        &world.client(ClusterName::RANCHER).await.unwrap(),
        &key.namespace,
        &kinds::Capi {
            version: world.capi_version(),
        }
        .machine(),
    );
    for machine in &cluster.machines {
        machines
            .delete(&machine.name, &DeleteParams::background())
            .await
            .unwrap();
    }
    let rancher = scenario.rancher_of("c1").unwrap();
    eventually("every Machine is deleting", || async {
        rancher
            .machines("c1")
            .await
            .unwrap()
            .iter()
            .all(|machine| machine.metadata.deletion_timestamp.is_some())
    })
    .await;
    Frozen {
        scenario,
        _gleaner: gleaner,
        footprints,
        cluster,
        intents,
        watcher,
    }
}

#[tokio::test]
async fn a_paused_cluster_is_frozen_and_resumes_when_unpaused() {
    let frozen = paused_and_deleted("s-pause").await;
    let (scenario, cluster, intents) = (&frozen.scenario, &frozen.cluster, &frozen.intents);
    tokio::time::sleep(FROZEN_FOR).await;
    let rancher = scenario.rancher_of("c1").unwrap();
    let held = hooks(scenario, "c1").await;
    assert_eq!(held.len(), cluster.machines.len());
    assert!(
        held.iter()
            .all(|(_, hook)| hook.as_deref() == Some("gleaner")),
        "a frozen cluster's Machines keep gleaner's hook"
    );
    for machine in &cluster.machines {
        assert!(
            intents.get(&machine.vm).is_none(),
            "nothing written on VM {} while the cluster is paused",
            machine.vm
        );
    }
    assert_eq!(
        scenario
            .journal()
            .position("capi", "deleted HarvesterMachine"),
        None,
        "no HarvesterMachine goes while the cluster is paused"
    );
    rancher.set_paused("c1", false).await.unwrap();
    scenario.measure(DEADLINE).await.unwrap();
    until_journal(scenario, "capi", "Cluster c1 finished deleting").await;
    frozen.watcher.abort();
    for machine in &cluster.machines {
        assert_intent_before_deletion(
            intents,
            scenario.journal(),
            &machine.name,
            &machine.vm,
            &cluster.uid,
        );
    }
}

/// The Footprint's `Frozen` condition after the unpause, apart from the test above so that a
/// stale condition does not hide what the freeze itself does.
#[tokio::test]
async fn a_footprint_is_no_longer_frozen_once_its_cluster_is_unpaused() {
    let frozen = paused_and_deleted("s-thaw").await;
    let (footprints, uid) = (&frozen.footprints, &frozen.cluster.uid);
    eventually("the Footprint's deletion is confirmed", || async {
        deletion_confirmed(phase(footprints, uid).await)
    })
    .await;
    frozen
        .scenario
        .rancher_of("c1")
        .unwrap()
        .set_paused("c1", false)
        .await
        .unwrap();
    eventually("the Footprint is no longer Frozen", || async {
        condition(footprints, uid, "Frozen")
            .await
            .is_some_and(|(status, _)| status == "False")
    })
    .await;
    frozen.watcher.abort();
}

#[tokio::test]
async fn a_re_created_cluster_with_the_same_name_gets_its_own_footprint() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = watched("s-again", ClusterPlan::new("c1", 1)).await;
    let first = scenario.cluster("c1").unwrap().clone();
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    until_journal(&scenario, "rancher", "cluster c1 is gone").await;
    eventually(
        "the first c1's Footprint's deletion is confirmed",
        || async { deletion_confirmed(phase(&footprints, &first.uid).await) },
    )
    .await;
    let rancher = scenario.rancher_of("c1").unwrap();
    let second = rancher
        .provision(&GuestClusterSpec {
            name: "c1".into(),
            harvester: ClusterName::HARVESTER.into(),
            vm_namespace: scenario.vm_namespace().into(),
            guest: None,
            pools: vec![PoolSpec::new("pool1", 2)],
        })
        .await
        .unwrap();
    assert_ne!(second.uid, first.uid);
    eventually(
        "the new c1 has a Footprint of its own, Tracking",
        || async { phase(&footprints, &second.uid).await == Some(Phase::Tracking) },
    )
    .await;
    let old = footprints.get(&first.uid).await.unwrap();
    let new = footprints.get(&second.uid).await.unwrap();
    assert_eq!(new.spec.identity.provisioning_cluster_uid, second.uid);
    assert_eq!(
        new.spec.identity.capi_cluster_uid.as_deref(),
        Some(second.capi_uid.as_str())
    );
    assert_eq!(
        (&new.spec.identity.namespace, &new.spec.identity.name),
        (&key.namespace, &key.name)
    );
    assert_eq!(
        new.spec.identity.install_uuid,
        old.spec.identity.install_uuid
    );
    assert_eq!(old.spec.identity.provisioning_cluster_uid, first.uid);
    assert_eq!(
        old.spec.identity.capi_cluster_uid.as_deref(),
        Some(first.capi_uid.as_str())
    );
    assert!(deletion_confirmed(
        old.status.and_then(|status| status.phase)
    ));
    // A Machine of the new c1 going is decided against the new Footprint.
    wait_for_hooks(&scenario, "c1").await;
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let going = &second.machines[0];
    rancher
        .scale_down("c1", "pool1", &going.name)
        .await
        .unwrap();
    eventually("gleaner writes an intent on the scaled-down VM", || async {
        intents.get(&going.vm).is_some()
    })
    .await;
    watcher.abort();
    let (_, intent, remove_all) = intents.get(&going.vm).unwrap();
    assert_eq!(intent["reason"], "ScaleDown", "{intent}");
    assert_eq!(intent["footprint"], second.uid.as_str(), "{intent}");
    assert_eq!(remove_all.as_deref(), Some("false"));
    assert!(deletion_confirmed(phase(&footprints, &first.uid).await));
}

#[tokio::test]
async fn dotted_machine_names_find_their_vm() {
    let world = world().await;
    // Machine names are label values, so at most 63 characters: only the dots change.
    let dotted = "c1.eu-west.example-pool1-7d9f8c6b5x-abcde";
    let (mut scenario, _gleaner, _) =
        watched("s-dots", ClusterPlan::new("c1", 2).machine_names(&[dotted])).await;
    let cluster = scenario.cluster("c1").unwrap().clone();
    let dotted_machines = cluster.machines_named_after(dotted);
    assert!(!dotted_machines.is_empty(), "{:?}", cluster.machines);
    for machine in dotted_machines {
        assert_eq!(machine.vm, machine.name.replace('.', "-"));
    }
    let harvester = world.client(ClusterName::HARVESTER).await.unwrap();
    let (intents, watcher) = IntentLog::watch(harvester, scenario.vm_namespace());
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    scenario.measure(DEADLINE).await.unwrap();
    watcher.abort();
    for machine in &cluster.machines {
        assert_intent_before_deletion(
            &intents,
            scenario.journal(),
            &machine.name,
            &machine.vm,
            &cluster.uid,
        );
    }
}

#[tokio::test]
async fn a_pool_on_a_second_harvester_gets_its_intent_through_its_own_credential() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = watched(
        "s-far",
        ClusterPlan::new("c1", 1).pool_on(SECOND_HARVESTER, 1),
    )
    .await;
    let cluster = scenario.cluster("c1").unwrap().clone();
    let far = cluster
        .machines
        .iter()
        .find(|machine| machine.harvester == SECOND_HARVESTER)
        .unwrap()
        .clone();
    assert_ne!(far.cloud_credential, cluster.cloud_credential);
    let footprint = footprints.get(&cluster.uid).await.unwrap();
    let mut pools: Vec<(String, String, String)> = footprint
        .spec
        .pools
        .iter()
        .map(|pool| {
            (
                pool.name.clone(),
                pool.cloud_credential.clone(),
                pool.vm_namespace.clone(),
            )
        })
        .collect();
    pools.sort();
    let vm_namespace = scenario.vm_namespace().to_owned();
    assert_eq!(
        pools,
        vec![
            (
                "pool1".to_owned(),
                cluster.cloud_credential.clone(),
                vm_namespace.clone()
            ),
            (far.pool.clone(), far.cloud_credential.clone(), vm_namespace),
        ]
    );
    let near_log = IntentLog::watch(
        world.client(ClusterName::HARVESTER).await.unwrap(),
        scenario.vm_namespace(),
    );
    let far_log = IntentLog::watch(
        world.client(SECOND_HARVESTER).await.unwrap(),
        scenario.vm_namespace(),
    );
    let key = scenario.key("c1");
    scenario.delete_cluster(&key).await.unwrap();
    scenario.measure(DEADLINE).await.unwrap();
    near_log.1.abort();
    far_log.1.abort();
    for machine in &cluster.machines {
        let intents = if machine.harvester == SECOND_HARVESTER {
            &far_log.0
        } else {
            &near_log.0
        };
        assert_intent_before_deletion(
            intents,
            scenario.journal(),
            &machine.name,
            &machine.vm,
            &cluster.uid,
        );
    }
}

fn uids(status: &gleaner::footprint::FootprintStatus) -> Vec<String> {
    status
        .records()
        .into_iter()
        .map(|record| record.uid)
        .collect()
}

/// The Footprint records which Harvester each pool runs on; a credential repointed at another
/// Harvester is refused (HarvesterMisconfigured, a Warning, nothing attributed or written
/// through it, checked live before a write), and a rotated credential for the same Harvester is
/// accepted.
#[tokio::test]
async fn a_credential_repointed_at_another_harvester_is_refused_and_a_rotated_one_accepted() {
    let world = world().await;
    let (mut scenario, _gleaner, footprints) = watched(
        "s-identity",
        ClusterPlan::new("c1", 1).volume(VolumePlan::new("data").hotplugged()),
    )
    .await;
    let uid = scenario.cluster("c1").unwrap().uid.clone();
    let recorded = || async {
        footprints
            .get(&uid)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    };
    eventually(
        "the Footprint records its pool's Harvester and volume",
        || async {
            let status = recorded().await;
            let records = status.records();
            // With the guest's evidence too: what comes later must not pass for a change.
            status.harvesters.len() == 1 && records.len() == 1 && records[0].guest_policy.is_some()
        },
    )
    .await;
    let before = recorded().await;
    let credential = scenario.cluster("c1").unwrap().cloud_credential.clone();
    let (namespace, name) = credential.split_once(':').unwrap();
    let rancher = world.client(ClusterName::RANCHER).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(rancher.clone(), namespace);
    let original = secrets.get(name).await.unwrap();
    let elsewhere = std::fs::read_to_string(world.kubeconfig(SECOND_HARVESTER).unwrap()).unwrap();
    let point = |secret: &str, to: serde_json::Value| {
        let secrets = secrets.clone();
        let secret = secret.to_owned();
        async move {
            secrets
                .patch(&secret, &Default::default(), &kube::api::Patch::Merge(&to))
                .await
                .unwrap();
        }
    };
    let repointed = serde_json::json!({"stringData": {"harvestercredentialConfig-kubeconfigContent": elsewhere}});
    let mended = serde_json::json!({"data": original.data.clone().unwrap()});
    let key = scenario.key("c1");
    let misconfigured = || async {
        condition(&footprints, &uid, "HarvesterMisconfigured")
            .await
            .map(|(status, _)| status)
    };
    // Repointed: the pool's credential now reaches the second Harvester.
    point(name, repointed.clone()).await;
    eventually("the repointed credential is refused", || async {
        misconfigured().await.as_deref() == Some("True")
    })
    .await;
    eventually("a Warning says the Harvester changed", || async {
        common::warned(
            world,
            &key.namespace,
            "HarvesterChanged",
            "not the recorded",
        )
        .await
    })
    .await;
    let status = recorded().await;
    assert_eq!(
        status.records(),
        before.records(),
        "nothing attributed through it"
    );
    assert_eq!(
        status.harvesters, before.harvesters,
        "the recorded Harvester stays"
    );
    point(name, mended.clone()).await;
    eventually("mended, the credential is accepted again", || async {
        misconfigured().await.as_deref() == Some("False")
    })
    .await;
    // Rotated: the same Harvester through a new Secret the cluster now names.
    let mut rotated = original.clone();
    rotated.metadata = kube::api::ObjectMeta {
        name: Some(format!("{name}-rotated")),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    };
    secrets.create(&Default::default(), &rotated).await.unwrap();
    let clusters = gleaner_sim::kinds::namespaced(
        &rancher,
        &key.namespace,
        &gleaner_sim::kinds::provisioning_cluster(),
    );
    let rotate = serde_json::json!({"spec": {"cloudCredentialSecretName": format!("{namespace}:{name}-rotated")}});
    clusters
        .patch("c1", &Default::default(), &kube::api::Patch::Merge(&rotate))
        .await
        .unwrap();
    eventually(
        "the rotated credential is accepted for the same Harvester",
        || async {
            let status = recorded().await;
            status.harvesters.len() == 1
                && status.harvesters[0].cloud_credential.ends_with("-rotated")
                && status.harvesters[0].kube_system_uid == before.harvesters[0].kube_system_uid
                && uids(&status) == uids(&before)
        },
    )
    .await;
    // The HarvesterMachine still names the old credential: repointed, a deletion's hook waits
    // rather than write through it.
    point(name, repointed).await;
    scenario.delete_cluster(&key).await.unwrap();
    eventually("the hook waits with a Warning", || async {
        common::warned(
            world,
            &key.namespace,
            "HarvesterMisconfigured",
            "not the recorded",
        )
        .await
    })
    .await;
    assert!(
        hooks(&scenario, "c1")
            .await
            .iter()
            .all(|(_, hook)| hook.is_some())
    );
    point(name, mended).await;
    until_journal(&scenario, "capi", "Cluster c1 finished deleting").await;
}
