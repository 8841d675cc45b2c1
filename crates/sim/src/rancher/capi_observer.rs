//! The journal's view of the real Cluster API manager: when the world runs it, these watches
//! record what it did in the same words the simulated controllers use (actor `capi`), so one
//! test reads the same whichever plays. It only watches; it never writes.

use std::{collections::BTreeSet, sync::Arc};

use futures::StreamExt;
use kube::{
    Api,
    api::DynamicObject,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    Journal,
    controller::{is_deleting, name},
    kinds,
    rancher::capi::{CapiContext, pre_terminate_hooks},
    tasks::Tasks,
};

const ACTOR: &str = "capi";

pub(crate) fn spawn(context: &Arc<CapiContext>, tasks: &mut Tasks) {
    let api = |resource| kinds::namespaced(&context.client, &context.namespace, &resource);
    tasks.spawn(observe(
        api(context.capi.machine()),
        context.env.journal.clone(),
        machine_facts,
    ));
    tasks.spawn(observe(
        api(kinds::harvester_machine()),
        context.env.journal.clone(),
        harvester_machine_facts,
    ));
    tasks.spawn(observe(
        api(context.capi.cluster()),
        context.env.journal.clone(),
        cluster_facts,
    ));
}

/// What one watch event of a kind tells, from the object as the event shows it and whether it
/// is gone. Each fact is journaled once.
type Facts = fn(&DynamicObject, Change) -> Vec<String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Applied,
    Gone,
}

async fn observe(api: Api<DynamicObject>, journal: Journal, facts: Facts) {
    let mut seen = BTreeSet::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let (object, change) = match &event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                (object, Change::Applied)
            }
            Ok(watcher::Event::Delete(object)) => (object, Change::Gone),
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "the Cluster API observer's watch retries");
                continue;
            }
        };
        for fact in facts(object, change) {
            if seen.insert(fact.clone()) {
                journal.record(ACTOR, fact);
            }
        }
    }
}

/// A deleting object gone: its last finalizer was taken off. (Deleted with none, as a backup
/// restore does, it goes without ever showing a deletion timestamp: not a finished deletion.)
fn finished_deleting(object: &DynamicObject, change: Change) -> bool {
    change == Change::Gone && is_deleting(object)
}

/// A deleting Machine the manager holds on pre-terminate hooks; a Machine gone.
fn machine_facts(machine: &DynamicObject, change: Change) -> Vec<String> {
    let machine_name = name(machine);
    if finished_deleting(machine, change) {
        return vec![format!("Machine {machine_name} finished deleting")];
    }
    // v1beta1 Machines say so in their own condition, v1beta2 ones in the reason of `Deleting`.
    let waits_on_hooks = machine.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| {
            let v1beta1 = condition["type"] == "PreTerminateDeleteHookSucceeded"
                && condition["status"] == "False"
                && condition["reason"] == "WaitingExternalHook";
            let v1beta2 = condition["type"] == "Deleting"
                && condition["status"] == "True"
                && condition["reason"] == "WaitingForPreTerminateHook";
            v1beta1 || v1beta2
        });
    if change == Change::Gone || !is_deleting(machine) || !waits_on_hooks {
        return Vec::new();
    }
    let hooks = pre_terminate_hooks(machine);
    vec![format!("Machine {machine_name} waits on hooks {hooks:?}")]
}

/// The deletion of a HarvesterMachine, at the revision of the write that marked it (the first
/// event that shows it deleting carries that revision: a watch misses no change).
fn harvester_machine_facts(machine: &DynamicObject, change: Change) -> Vec<String> {
    if change == Change::Gone || !is_deleting(machine) {
        return Vec::new();
    }
    vec![format!(
        "deleted HarvesterMachine {} at revision {}",
        name(machine),
        machine
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    )]
}

fn cluster_facts(cluster: &DynamicObject, change: Change) -> Vec<String> {
    if finished_deleting(cluster, change) {
        return vec![format!("Cluster {} finished deleting", name(cluster))];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::PRE_TERMINATE_HOOK_PREFIX;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_deleting_machine_held_by_its_hooks_is_said_to_wait_on_them() {
        let held = object(json!({
            "metadata": {
                "name": "m1",
                "deletionTimestamp": "2026-12-03T10:00:00Z",
                "annotations": {format!("{PRE_TERMINATE_HOOK_PREFIX}gleaner"): "gleaner"},
            },
            "status": {"conditions": [{
                "type": "PreTerminateDeleteHookSucceeded",
                "status": "False",
                "reason": "WaitingExternalHook",
            }]},
        }));
        assert_eq!(
            machine_facts(&held, Change::Applied),
            [format!(
                "Machine m1 waits on hooks [\"{PRE_TERMINATE_HOOK_PREFIX}gleaner\"]"
            )]
        );
        let mut living = held.clone();
        living.metadata.deletion_timestamp = None;
        assert!(machine_facts(&living, Change::Applied).is_empty());
        assert_eq!(
            machine_facts(&held, Change::Gone),
            ["Machine m1 finished deleting"]
        );
        let mut held_v1beta2 = held.clone();
        held_v1beta2.data["status"] = json!({"conditions": [{
            "type": "Deleting",
            "status": "True",
            "reason": "WaitingForPreTerminateHook",
        }]});
        assert_eq!(
            machine_facts(&held_v1beta2, Change::Applied),
            machine_facts(&held, Change::Applied)
        );
        held_v1beta2.data["status"]["conditions"][0]["reason"] = json!("DrainingNode");
        assert!(machine_facts(&held_v1beta2, Change::Applied).is_empty());
    }

    #[test]
    fn an_object_deleted_without_a_deletion_timestamp_did_not_finish_deleting() {
        let restored = object(json!({"metadata": {"name": "c1"}}));
        assert!(cluster_facts(&restored, Change::Gone).is_empty());
        let mut deleted = restored.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-03T10:00:00Z".parse().unwrap(),
            ));
        assert_eq!(
            cluster_facts(&deleted, Change::Gone),
            ["Cluster c1 finished deleting"]
        );
        assert!(cluster_facts(&deleted, Change::Applied).is_empty());
    }

    #[test]
    fn a_harvester_machine_s_deletion_is_told_at_its_revision() {
        let deleting = object(json!({"metadata": {
            "name": "m1",
            "resourceVersion": "4711",
            "deletionTimestamp": "2026-12-03T10:00:00Z",
        }}));
        assert_eq!(
            harvester_machine_facts(&deleting, Change::Applied),
            ["deleted HarvesterMachine m1 at revision 4711"]
        );
        let mut living = deleting.clone();
        living.metadata.deletion_timestamp = None;
        assert!(harvester_machine_facts(&living, Change::Applied).is_empty());
        assert!(harvester_machine_facts(&deleting, Change::Gone).is_empty());
    }
}
