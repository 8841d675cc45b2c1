//! The reclaimer (design.md §5–6): drives a `Reclaiming` Footprint whose final inventory ran to
//! `Reclaimed`. Each pass reads live what the safety rules demand (both Cluster objects, every
//! recorded VM, each recorded object by name, every other Footprint), lets the core plan, and
//! acts: deletes with UID and resourceVersion preconditions, each preceded by an Event and
//! followed by a ledger entry; keeps written once on the object (`gleaner.io/kept`), evented and
//! in the ledger. Level-triggered and idempotent: a pass after a restart plans again from live
//! facts, so nothing is deleted twice.

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    ClusterIdentity, ConditionType, Deletion,
    attribution::{HostKind, HostObjectRecord},
    confirm_deletion, keys,
    reclaim::{
        HoldReason, KeepReason, LiveObject, Plan, ReclaimFacts, RecordedVm, Verdict, VmState, plan,
    },
    retention,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions},
};
use serde_json::json;

/// How long an asked deletion may wait on finalizers before `DeletionStuck` names it.
const DELETION_BOUND: std::time::Duration = std::time::Duration::from_secs(300);

/// An object whose delete was asked already: since when, and what it waits for.
struct Pending {
    since: Timestamp,
    finalizers: Vec<String>,
}

use crate::{
    Error, Result,
    error::ApiFailure,
    footprint::{Footprint, FootprintStatus, LEDGER_KEPT, Ledger, LedgerAction, LedgerEntry},
    management::{
        Context, footprints::cluster_reference, harvesters::virtual_machine, host_objects,
        observe::Clusters, status::is_true,
    },
    metrics::WriteKind,
};

/// What a pass did, for the Footprint's status.
pub enum Pass {
    /// The plan holds the whole cluster, with why.
    Held(HoldReason),
    /// Some deletions are still to be confirmed gone: look again. The objects whose deletion
    /// has waited longer than [`DELETION_BOUND`] on finalizers, with those finalizers.
    InProgress { stuck: Vec<String> },
    /// Every deletable object is gone; the rest is kept.
    Done,
}

/// One pass over a `Reclaiming` Footprint: the ledger entries and phase go into `next`.
pub async fn pass(
    footprint: &Footprint,
    recorded: &ClusterIdentity,
    context: &Context,
    next: &mut FootprintStatus,
) -> Result<Pass> {
    let live = Clusters::live_of(context, recorded).await?;
    let confirmed = confirm_deletion(recorded, &live.observation()) == Deletion::Confirmed;
    // Both Cluster objects there, each with another UID: re-created, as by a Rancher restore.
    let other_uid = |cluster: &Option<DynamicObject>, uid: &str| {
        cluster
            .as_ref()
            .is_some_and(|cluster| cluster.uid().as_deref() != Some(uid))
    };
    let identity_changed = other_uid(&live.provisioning, &recorded.provisioning_uid)
        && other_uid(&live.capi, &recorded.capi_uid);
    let vms = recorded_vms(context, next).await?;
    let records = next.records();
    let denied = ledger_kept(next, KeepReason::Denied);
    let nothing = BTreeSet::new();
    let cluster_wide = ReclaimFacts {
        confirmed,
        identity_changed,
        frozen: is_true(&next.conditions, ConditionType::Frozen),
        opted_out: is_true(&next.conditions, ConditionType::OptedOut),
        footprint_retention: retention(
            footprint
                .annotations()
                .get(keys::RETAIN_ANNOTATION)
                .map(String::as_str),
        ),
        vms: &vms,
        records: &[],
        live: &BTreeMap::new(),
        other_footprints: &nothing,
        denied: &denied,
        now: Timestamp::now(),
        policy_max_age: context.policy_max_age,
    };
    // What holds the whole cluster is read first: the objects only once it may act.
    if let Plan::Hold(reason) = plan(&cluster_wide) {
        return Ok(Pass::Held(reason));
    }
    let (objects, pending_deletions) = live_objects(context, &records).await?;
    let others = other_footprints(context, &footprint.name_any()).await?;
    let facts = ReclaimFacts {
        records: &records,
        live: &objects,
        other_footprints: &others,
        ..cluster_wide
    };
    let steps = match plan(&facts) {
        Plan::Hold(reason) => return Ok(Pass::Held(reason)),
        Plan::Act(steps) => steps,
    };
    let about = cluster_reference(&footprint.spec.identity);
    let mut pending = false;
    let mut stuck = Vec::new();
    for (record, verdict) in steps {
        let object = objects.get(&record.uid);
        match verdict {
            Verdict::Gone => note(next, LedgerAction::Deleted, &record, "found gone"),
            Verdict::Keep(reason) => keep(context, &about, next, &record, object, reason).await?,
            Verdict::Delete => {
                let Some(object) = object else { continue };
                if !context.may_write() {
                    return Ok(Pass::InProgress { stuck });
                }
                if let Some(waiting) = pending_deletions.get(&record.uid)
                    && Timestamp::now()
                        .duration_since(waiting.since)
                        .unsigned_abs()
                        > DELETION_BOUND
                {
                    stuck.push(format!(
                        "{} waits for {}",
                        described(&record),
                        waiting.finalizers.join(", ")
                    ));
                }
                pending |= delete(context, &about, next, &record, object).await?;
            }
        }
    }
    Ok(if pending {
        Pass::InProgress { stuck }
    } else {
        Pass::Done
    })
}

/// Each VM the Footprint records, read live by name: gone when absent or replaced.
async fn recorded_vms(context: &Context, status: &FootprintStatus) -> Result<Vec<RecordedVm>> {
    let mut vms = Vec::new();
    for vm in &status.vms {
        let harvester = context.harvesters.client(&vm.cloud_credential).await?;
        let found =
            Api::<DynamicObject>::namespaced_with(harvester, &vm.namespace, &virtual_machine())
                .get_opt(&vm.name)
                .await
                .map_err(|source| Error::Kube {
                    context: format!("cannot read VM {}/{}", vm.namespace, vm.name),
                    source,
                })?;
        let state = match found {
            Some(found) if vm.uid.is_none() || found.uid() == vm.uid => {
                if found.metadata.deletion_timestamp.is_some() {
                    VmState::Deleting
                } else {
                    VmState::Running
                }
            }
            _ => VmState::Gone,
        };
        vms.push(RecordedVm {
            name: format!("{}/{}", vm.namespace, vm.name),
            uid: vm.uid.clone().unwrap_or_default(),
            state,
        });
    }
    Ok(vms)
}

/// Each recorded object as found by name now, with the VMs of its namespace that list it, and
/// those whose delete was asked already.
async fn live_objects(
    context: &Context,
    records: &[HostObjectRecord],
) -> Result<(BTreeMap<String, LiveObject>, BTreeMap<String, Pending>)> {
    let mut pending = BTreeMap::new();
    let mut attachments: BTreeMap<(String, String), Vec<VmClaims>> = BTreeMap::new();
    let mut live = BTreeMap::new();
    for record in records {
        let harvester = context.harvesters.client(&record.cloud_credential).await?;
        let api = Api::<DynamicObject>::namespaced_with(
            harvester.clone(),
            &record.namespace,
            &host_objects::resource(record.kind()),
        );
        let Some(object) = api
            .get_opt(&record.name)
            .await
            .map_err(|source| Error::Kube {
                context: format!(
                    "cannot read {:?} {}/{}",
                    record.kind(),
                    record.namespace,
                    record.name
                ),
                source,
            })?
        else {
            continue;
        };
        let attached_to = if record.kind() == HostKind::PersistentVolumeClaim {
            let key = (record.cloud_credential.clone(), record.namespace.clone());
            if !attachments.contains_key(&key) {
                attachments.insert(
                    key.clone(),
                    claims_by_vm(harvester, &record.namespace).await?,
                );
            }
            attachments[&key]
                .iter()
                .filter(|(_, claims)| claims.contains(&record.name))
                .map(|(uid, _)| uid.clone())
                .collect()
        } else {
            Vec::new()
        };
        if let Some(since) = &object.metadata.deletion_timestamp {
            pending.insert(
                record.uid.clone(),
                Pending {
                    since: since.0,
                    finalizers: object.finalizers().to_vec(),
                },
            );
        }
        live.insert(
            record.uid.clone(),
            LiveObject {
                uid: object.uid().unwrap_or_default(),
                resource_version: object.resource_version().unwrap_or_default(),
                retention: Some(retention(
                    object
                        .annotations()
                        .get(keys::RETAIN_ANNOTATION)
                        .map(String::as_str),
                )),
                attached_to,
                owned_by: object
                    .owner_references()
                    .iter()
                    .filter(|owner| owner.kind == "VirtualMachine")
                    .map(|owner| owner.uid.clone())
                    .collect(),
                deleting: object.metadata.deletion_timestamp.is_some(),
            },
        );
    }
    Ok((live, pending))
}

/// A VM's UID and the claims it lists as volumes.
type VmClaims = (String, Vec<String>);

/// Every VM of the namespace (any creator) with the claims it lists as volumes.
async fn claims_by_vm(harvester: kube::Client, namespace: &str) -> Result<Vec<VmClaims>> {
    let vms = Api::<DynamicObject>::namespaced_with(harvester, namespace, &virtual_machine())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot list the VMs of {namespace}"),
            source,
        })?;
    Ok(vms
        .items
        .iter()
        .map(|vm| {
            let claims = vm.data["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|volume| volume["persistentVolumeClaim"]["claimName"].as_str())
                .map(str::to_owned)
                .collect();
            (vm.uid().unwrap_or_default(), claims)
        })
        .collect())
}

/// The UIDs every other Footprint records, from a live list (just before deleting).
async fn other_footprints(context: &Context, name: &str) -> Result<BTreeSet<String>> {
    let list = context
        .footprints()
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot list the Footprints of {}", context.namespace),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter(|other| other.name_any() != name)
        .filter_map(|other| other.status.as_ref())
        .flat_map(|status| status.records())
        .map(|record| record.uid)
        .collect())
}

/// The UIDs the ledger records as kept for `reason`.
fn ledger_kept(status: &FootprintStatus, reason: KeepReason) -> BTreeSet<String> {
    status
        .ledger
        .iter()
        .flat_map(|ledger| &ledger.entries)
        .filter(|entry| entry.action == LedgerAction::Kept && entry.reason == reason.as_str())
        .filter_map(|entry| uid_of(&entry.object))
        .collect()
}

/// The UID of a ledger entry's object, written `Kind namespace/name (uid)`.
fn uid_of(object: &str) -> Option<String> {
    let (_, rest) = object.rsplit_once(" (")?;
    rest.strip_suffix(')').map(str::to_owned)
}

fn described(record: &HostObjectRecord) -> String {
    format!(
        "{:?} {}/{} ({})",
        record.kind(),
        record.namespace,
        record.name,
        record.uid
    )
}

/// Adds a ledger entry for the object, once.
fn note(next: &mut FootprintStatus, action: LedgerAction, record: &HostObjectRecord, reason: &str) {
    let object = described(record);
    let ledger = next.ledger.get_or_insert_with(Ledger::default);
    if ledger
        .entries
        .iter()
        .any(|entry| entry.object == object && entry.action == action)
    {
        return;
    }
    ledger.entries.push(LedgerEntry {
        time: Time(Timestamp::now()),
        action,
        object,
        reason: reason.to_owned(),
    });
    while ledger.entries.len() > LEDGER_KEPT {
        match ledger.entries.remove(0).action {
            LedgerAction::Deleted => ledger.folded_deletions += 1,
            LedgerAction::Kept => ledger.folded_keeps += 1,
        }
    }
}

fn in_ledger(next: &FootprintStatus, record: &HostObjectRecord, action: LedgerAction) -> bool {
    let object = described(record);
    next.ledger
        .iter()
        .flat_map(|ledger| &ledger.entries)
        .any(|entry| entry.object == object && entry.action == action)
}

/// Keeps an object for good: `gleaner.io/kept` on it (not on a replacement), an Event and a
/// ledger entry, once.
async fn keep(
    context: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    next: &mut FootprintStatus,
    record: &HostObjectRecord,
    object: Option<&LiveObject>,
    reason: KeepReason,
) -> Result<()> {
    if in_ledger(next, record, LedgerAction::Kept) {
        return Ok(());
    }
    if reason != KeepReason::Replaced
        && let Some(object) = object
        && !context.dry_run
    {
        let harvester = context.harvesters.client(&record.cloud_credential).await?;
        let patch = json!({"metadata": {
            "uid": object.uid,
            "annotations": {keys::KEPT_ANNOTATION: reason.as_str()},
        }});
        let written = Api::<DynamicObject>::namespaced_with(
            harvester,
            &record.namespace,
            &host_objects::resource(record.kind()),
        )
        .patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| Error::Kube {
            context: format!("cannot mark {} kept", described(record)),
            source,
        });
        context.wrote(WriteKind::HostObjectMarks, &written);
        written?;
    }
    let note_text = format!("{} is kept: {}", described(record), reason.as_str());
    context.event(about, "Kept", note_text).await;
    context.metrics().kept(record.class, reason);
    note(next, LedgerAction::Kept, record, reason.as_str());
    Ok(())
}

/// Deletes an object with its UID and resourceVersion as preconditions, after an Event saying
/// what and why. `true` while its deletion is still to be confirmed gone.
async fn delete(
    context: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    next: &mut FootprintStatus,
    record: &HostObjectRecord,
    object: &LiveObject,
) -> Result<bool> {
    if object.deleting {
        // Asked already; its finalizers decide when it goes. Never asked twice.
        return Ok(true);
    }
    if context.dry_run {
        return Ok(false);
    }
    let note_text = format!(
        "deleting {}: the cluster's deletion is confirmed and nothing protects it",
        described(record)
    );
    context.event(about, "Deleting", note_text).await;
    let harvester = context.harvesters.client(&record.cloud_credential).await?;
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(object.uid.clone()),
            resource_version: Some(object.resource_version.clone()),
        }),
        ..DeleteParams::default()
    };
    let result = Api::<DynamicObject>::namespaced_with(
        harvester,
        &record.namespace,
        &host_objects::resource(record.kind()),
    )
    .delete(&record.name, &params)
    .await;
    match result {
        Ok(either) => {
            context.metrics().wrote(WriteKind::HostObjectDelete, "ok");
            context.metrics().reclaimed(record.class);
            note(next, LedgerAction::Deleted, record, "reclaimed");
            tracing::info!(object = %described(record), "deleted");
            Ok(either.is_left())
        }
        Err(source) => match ApiFailure::of(&source) {
            ApiFailure::NotFound => {
                note(next, LedgerAction::Deleted, record, "found gone");
                Ok(false)
            }
            ApiFailure::Rejected | ApiFailure::Forbidden if denied_by_webhook(&source) => {
                context
                    .metrics()
                    .wrote(WriteKind::HostObjectDelete, "denied");
                keep(
                    context,
                    about,
                    next,
                    record,
                    Some(object),
                    KeepReason::Denied,
                )
                .await?;
                Ok(false)
            }
            failure => {
                context
                    .metrics()
                    .wrote(WriteKind::HostObjectDelete, failure.metric_label());
                Err(Error::Kube {
                    context: format!("cannot delete {}", described(record)),
                    source,
                })
            }
        },
    }
}

/// Whether an admission webhook refused the delete (as Harvester's PVC webhook does).
fn denied_by_webhook(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.message.contains("admission webhook"))
}
