//! One Footprint per Harvester-backed provisioning Cluster, named by its UID, created when
//! gleaner first sees the cluster and kept current from the caches; `Reclaiming` once a live
//! read confirms its deletion.
//!
//! Status writers share the status through server-side apply, each with its own field manager
//! and each applying every field it owns: the Footprint controller owns `phase`, `vms` and every
//! condition but `ProtectionLapsed`; the hooks own `ProtectionLapsed`, `released` and `would`.
//! The lists are maps (conditions by type, VMs by Harvester, namespace and name, objects by
//! UID), so each writer's entries are its own.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use gleaner_core::{
    ClusterIdentity, ConditionState, ConditionType, Deletion, HarvesterCheck, HarvesterHealth,
    HarvesterRecord, IntentSeen, Named, Seen,
    attribution::{
        HostObjectRecord, ObservedObject, OtherFootprint, ThisFootprint, attribute, marks_to_write,
    },
    check_harvester, conditions, confirm_deletion, keys, opt_out, paused_by, pool_credential,
    vm_namespace, vm_of, vms,
};
use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Error, Result,
    footprint::{
        Counts, Footprint, FootprintSpec, FootprintStatus, Identity, Phase, Pool, PoolHarvester,
        ReleaseReason, ReleasedMachine, STATUS_LIMIT,
    },
    management::{
        CLUSTER_NAME_LABEL, Context,
        harvesters::VmLookup,
        observe::{Clusters, provisioning_cluster},
    },
    metrics::WriteKind,
};

const SPEC_MANAGER: &str = "gleaner/footprints";
const STATUS_MANAGER: &str = "gleaner/footprint-status";
const HOOKS_MANAGER: &str = "gleaner/hooks";
/// How many dry-run entries a Footprint keeps.
const WOULD_KEPT: usize = 20;
/// How many lookalikes a Footprint lists.
const LOOKALIKES_KEPT: usize = 50;
/// How many released Machines a Footprint keeps, most recent first.
const RELEASED_KEPT: usize = 100;
/// How often a status write is tried again when another write came in between.
const CONFLICT_RETRIES: usize = 5;
const CAPI_MACHINE_NAME_LABEL: &str = "rke.cattle.io/capi-machine-name";

/// Whether a provisioning Cluster runs on Harvester: a pool made from a `HarvesterConfig`.
pub fn harvester_backed(cluster: &DynamicObject) -> bool {
    pools_of(cluster)
        .iter()
        .any(|pool| pool["machineConfigRef"]["kind"] == "HarvesterConfig")
}

pub fn pools_of(cluster: &DynamicObject) -> Vec<serde_json::Value> {
    cluster.data["spec"]["rkeConfig"]["machinePools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Keeps the Footprint's spec current from the provisioning Cluster, as the caches show it.
pub async fn track(cluster: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let Some(uid) = cluster.uid() else {
        return Ok(Action::await_change());
    };
    if !harvester_backed(&cluster) || !context.may_write() {
        return Ok(Action::await_change());
    }
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let about = cluster.object_ref(&provisioning_cluster());
    let existing = context.caches.footprint(&context.namespace, &uid);
    let install_uuid = match existing.as_ref() {
        Some(footprint) => footprint.spec.identity.install_uuid.clone(),
        None => match context.caches.install_uuid() {
            Some(uuid) => uuid,
            None => return not_made(&context, &about, Error::InstallUuidMissing).await,
        },
    };
    let capi_uid = context
        .caches
        .capi_clusters
        .get(&namespace, &name)
        .and_then(|capi| capi.uid())
        .or_else(|| {
            existing
                .as_ref()
                .and_then(|footprint| footprint.spec.identity.capi_cluster_uid.clone())
        });
    let spec = FootprintSpec {
        identity: Identity {
            install_uuid,
            namespace: namespace.clone(),
            name,
            provisioning_cluster_uid: uid.clone(),
            capi_cluster_uid: capi_uid,
        },
        pools: pools(&cluster, &about, &context).await,
    };
    if existing
        .as_ref()
        .is_some_and(|footprint| footprint.spec == spec)
    {
        return Ok(Action::await_change());
    }
    let written = context
        .footprints()
        .patch(
            &uid,
            &PatchParams::apply(SPEC_MANAGER).force(),
            &Patch::Apply(&Footprint::new(&uid, spec)),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot write Footprint {}/{uid}", context.namespace),
            source,
        });
    context.wrote(WriteKind::Footprint, &written);
    if let Err(error) = written {
        return not_made(&context, &about, error).await;
    }
    if existing.is_none() {
        let note = format!(
            "gleaner tracks this cluster in Footprint {}/{uid}",
            context.namespace
        );
        context.event(&about, "Tracking", note).await;
    }
    Ok(Action::await_change())
}

/// A Footprint that cannot be made or kept: a Warning Event on the cluster, and the error for
/// the retry policy and the error counter.
async fn not_made(context: &Context, about: &ObjectReference, error: Error) -> Result<Action> {
    let note = format!("gleaner cannot write this cluster's Footprint: {error}");
    context.warn(about, "FootprintNotWritten", note).await;
    Err(error)
}

/// Each pool's Harvester (its own cloud credential, else the cluster's) and VM namespace, from
/// the HarvesterConfig cache. A malformed credential is kept as written, with a warning: the
/// Footprint then shows that Harvester as misconfigured.
async fn pools(cluster: &DynamicObject, about: &ObjectReference, context: &Context) -> Vec<Pool> {
    let cluster_credential = cluster.data["spec"]["cloudCredentialSecretName"].as_str();
    let namespace = cluster.namespace().unwrap_or_default();
    let mut pools = Vec::new();
    for pool in pools_of(cluster) {
        let config = pool["machineConfigRef"]["name"]
            .as_str()
            .unwrap_or_default();
        let namespace_of_vms = context
            .caches
            .harvester_configs
            .get(&namespace, config)
            .and_then(|config| config.data["vmNamespace"].as_str().map(str::to_owned));
        let own = pool["cloudCredentialSecretName"].as_str();
        let cloud_credential = match pool_credential(own, cluster_credential) {
            Ok(credential) => credential.map(|credential| credential.to_string()),
            Err(error) => {
                context
                    .warn(about, "MalformedCredential", error.to_string())
                    .await;
                Some(error.0)
            }
        };
        pools.push(Pool {
            name: pool["name"].as_str().unwrap_or_default().to_owned(),
            cloud_credential: cloud_credential.unwrap_or_default(),
            vm_namespace: vm_namespace(namespace_of_vms.as_deref()).to_owned(),
        });
    }
    pools
}

/// Moves a Footprint to `Reclaiming` once a live read confirms its cluster's deletion (asked
/// only when the caches show it); keeps its VMs and the conditions it owns current from the
/// caches and the Harvester watches, and makes sure each of its Harvesters is watched.
pub async fn phase(footprint: Arc<Footprint>, context: Arc<Context>) -> Result<Action> {
    let status = footprint.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Reclaimed) {
        return Ok(Action::await_change());
    }
    let name = footprint.name_any();
    context.harvesters.follow_footprint(
        &name,
        footprint
            .spec
            .pools
            .iter()
            .map(|pool| (pool.cloud_credential.clone(), pool.vm_namespace.clone())),
    );
    if !context.may_write() {
        return Ok(Action::await_change());
    }
    let Ok(recorded) = ClusterIdentity::try_from(&footprint.spec.identity) else {
        // The tracker records the CAPI Cluster's UID once it exists, which changes the
        // Footprint and brings it back here.
        return Ok(Action::await_change());
    };
    let cached = Clusters {
        install_uuid: context.caches.install_uuid(),
        provisioning: context
            .caches
            .provisioning
            .get(&recorded.namespace, &recorded.name)
            .map(|cluster| (*cluster).clone()),
        capi: context
            .caches
            .capi_clusters
            .get(&recorded.namespace, &recorded.name)
            .map(|cluster| (*cluster).clone()),
    };
    let confirmed = status.phase == Some(Phase::Reclaiming)
        || (confirm_deletion(&recorded, &cached.observation()) == Deletion::Confirmed
            && confirmed_live(&recorded, &context).await?);
    let mut next = status.clone();
    next.phase = Some(if confirmed {
        Phase::Reclaiming
    } else {
        Phase::Tracking
    });
    let own = cached.recorded(&recorded.provisioning_uid, &recorded.capi_uid);
    let (provisioning_skip, capi_skip) = own.skip_cleanup();
    let opted_out_before = is_true(&status.conditions, ConditionType::OptedOut);
    let mut decided = vec![conditions::frozen(
        own.capi.is_some(),
        paused_by(&own.pause(None)),
    )];
    decided.extend(conditions::opted_out(
        &opt_out(provisioning_skip, capi_skip),
        confirmed,
        opted_out_before,
    ));
    if confirmed {
        decided.push(conditions::deletion_confirmed());
    }
    let refused = check_harvesters(&footprint, &context, &mut next);
    let healths: Vec<_> = footprint
        .spec
        .pools
        .iter()
        .map(|pool| pool.cloud_credential.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|credential| {
            let health = match refused.get(&credential) {
                Some(problem) => HarvesterHealth::Misconfigured {
                    problem: problem.clone(),
                },
                None => context.harvesters.health(&credential),
            };
            (credential, health)
        })
        .collect();
    decided.extend(
        conditions::harvester_conditions(&healths)
            .into_iter()
            .flatten(),
    );
    for condition in decided {
        set_condition(&mut next.conditions, condition);
    }
    let named = (!confirmed).then(|| named_vms(&recorded, &context));
    next.vms = vms::record(
        &status.vms,
        named.as_deref(),
        |credential, namespace, name| match context.harvesters.vm(credential, namespace, name) {
            VmLookup::Unknown => Seen::Unknown,
            VmLookup::Absent => Seen::Absent,
            VmLookup::Present(vm) => Seen::Present {
                uid: vm.uid().unwrap_or_default(),
                intent: IntentSeen::of(
                    vm.annotations()
                        .get(keys::INTENT_ANNOTATION)
                        .map(String::as_str),
                ),
            },
        },
    );
    let identity = recorded.readable();
    // What a refused credential shows is not this cluster's Harvester: attribute nothing from it.
    let observed = if refused.is_empty() {
        attribute_objects(&context, &footprint, &identity, &mut next)
    } else {
        None
    };
    let recorded_vms = vm_uids(&next);
    let records = next.records();
    let marks = observed.as_ref().map_or_else(Vec::new, |objects| {
        let this = ThisFootprint {
            name: &name,
            identity: &identity,
            vm_uids: &recorded_vms,
            records: &records,
        };
        records
            .iter()
            .filter_map(|record| {
                let object = objects.iter().find(|object| object.uid == record.uid)?;
                Some((record.clone(), marks_to_write(&this, record, object)?))
            })
            .collect()
    });
    let changed =
        owned(StatusWriter::Footprints, &status) != owned(StatusWriter::Footprints, &next);
    if changed
        && !apply_status(&context, &footprint, StatusWriter::Footprints, &next, false).await?
    {
        // Another write came in between; its event brings the Footprint back here.
        return Ok(Action::await_change());
    }
    if status.phase != next.phase {
        tracing::info!(footprint = %name, cluster = %identity, phase = ?next.phase, "footprint phase");
    }
    let about = cluster_reference(&footprint.spec.identity);
    for vm in vms::newly_malformed(&status.vms, &next.vms) {
        let note = format!(
            "VM {}/{} carries a {} gleaner cannot read ({}): it is reported, not acted on",
            vm.namespace,
            vm.name,
            keys::INTENT_ANNOTATION,
            vm.intent_problem.clone().unwrap_or_default()
        );
        context.warn(&about, "MalformedIntent", note).await;
    }
    if !refused.is_empty() && !is_true(&status.conditions, ConditionType::HarvesterMisconfigured) {
        let note = refused.values().cloned().collect::<Vec<_>>().join("; ");
        context.warn(&about, "HarvesterChanged", note).await;
    }
    if is_true(&next.conditions, ConditionType::RecordsLimited)
        && !is_true(&status.conditions, ConditionType::RecordsLimited)
    {
        let note = next
            .conditions
            .iter()
            .find(|condition| condition.type_ == ConditionType::RecordsLimited.to_string())
            .map(|condition| condition.message.clone())
            .unwrap_or_default();
        context.warn(&about, "FootprintFull", note).await;
    }
    for record in newly_conflicting(&status.records(), &records) {
        let note = format!(
            "{:?} {}/{} ({}) is tied to another cluster too ({:?}): it will never be deleted",
            record.kind(),
            record.namespace,
            record.name,
            record.uid,
            record.conflicts
        );
        context.warn(&about, "AttributionConflict", note).await;
    }
    // The Footprint records an object before gleaner marks it: the record is what counts.
    if !context.dry_run {
        write_marks(&context, &marks).await?;
    }
    Ok(Action::await_change())
}

/// Records which Harvester each pool runs on, as first seen, and returns the credentials that
/// now reach another one (refused, with why).
fn check_harvesters(
    footprint: &Footprint,
    context: &Context,
    next: &mut FootprintStatus,
) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    for pool in &footprint.spec.pools {
        let observed = context.harvesters.identity(&pool.cloud_credential);
        let recorded = next
            .harvesters
            .iter_mut()
            .find(|known| known.pool == pool.name);
        let checked = check_harvester(
            recorded
                .as_ref()
                .map(|known| known.kube_system_uid.as_str()),
            observed.as_deref(),
        );
        tracing::debug!(pool = %pool.name, credential = %pool.cloud_credential, ?checked, "Harvester identity");
        match checked {
            HarvesterCheck::Record(kube_system_uid) => next.harvesters.push(PoolHarvester {
                pool: pool.name.clone(),
                cloud_credential: pool.cloud_credential.clone(),
                kube_system_uid,
            }),
            // A rotated credential for the same Harvester.
            HarvesterCheck::Same => {
                if let Some(known) = recorded {
                    known.cloud_credential.clone_from(&pool.cloud_credential);
                }
            }
            HarvesterCheck::Unknown => {}
            HarvesterCheck::Changed { recorded, observed } => {
                let error = Error::HarvesterChanged {
                    credential: pool.cloud_credential.clone(),
                    recorded,
                    observed,
                };
                refused.insert(pool.cloud_credential.clone(), error.to_string());
            }
        }
    }
    refused
}

/// Attributes the Harvester objects the watches show into `next` (records, counts,
/// lookalikes); returns what was observed, or `None` while a Harvester is not synced.
fn attribute_objects(
    context: &Context,
    footprint: &Footprint,
    identity: &str,
    next: &mut FootprintStatus,
) -> Option<Vec<ObservedObject>> {
    let name = footprint.name_any();
    let credentials: BTreeSet<String> = footprint
        .spec
        .pools
        .iter()
        .map(|pool| pool.cloud_credential.clone())
        .collect();
    let observed = context.harvesters.observed(&credentials);
    let others: Vec<OtherFootprint> = context
        .caches
        .footprints
        .state()
        .iter()
        .filter(|other| other.name_any() != name)
        .map(|other| {
            let status = other.status.clone().unwrap_or_default();
            OtherFootprint {
                name: other.name_any(),
                vm_uids: vm_uids(&status),
                object_uids: status
                    .records()
                    .into_iter()
                    .map(|record| record.uid)
                    .collect(),
            }
        })
        .collect();
    let previous = next.records();
    let recorded_vms = vm_uids(next);
    let this = ThisFootprint {
        name: &name,
        identity,
        vm_uids: &recorded_vms,
        records: &previous,
    };
    let (vms, objects) = match observed {
        Some((vms, objects)) => (vms, Some(objects)),
        None => (Vec::new(), None),
    };
    let found = attribute(&this, &others, &vms, objects.as_deref());
    let left_out = within_limit(next, &previous, found.records);
    set_condition(&mut next.conditions, conditions::records_limited(left_out));
    if objects.is_some() {
        next.lookalikes = found
            .lookalikes
            .iter()
            .take(LOOKALIKES_KEPT)
            .map(|object| format!("{}/{} ({})", object.namespace, object.name, object.uid))
            .collect();
    }
    objects
}

/// Records `records` in `next`, leaving out, newest first, what was not recorded before until
/// the status fits [`STATUS_LIMIT`]: an object left out is never deleted, and the
/// `RecordsLimited` condition says how many. Returns how many were left out.
fn within_limit(
    next: &mut FootprintStatus,
    previous: &[HostObjectRecord],
    mut records: Vec<HostObjectRecord>,
) -> usize {
    let known: BTreeSet<&str> = previous.iter().map(|record| record.uid.as_str()).collect();
    let mut left_out = 0;
    loop {
        next.counts = Some(Counts::of(&records));
        next.set_records(records.clone());
        let size = serde_json::to_vec(&*next).map_or(0, |json| json.len());
        if size <= STATUS_LIMIT {
            return left_out;
        }
        // Leave out about as many as the excess takes, then measure again.
        let average = size / records.len().max(1);
        let mut excess = (size - STATUS_LIMIT) / average.max(1) + 1;
        while excess > 0 {
            let Some(newest) = records
                .iter()
                .rposition(|record| !known.contains(record.uid.as_str()))
            else {
                return left_out;
            };
            records.remove(newest);
            left_out += 1;
            excess -= 1;
        }
    }
}

/// The UIDs of the VMs a Footprint records.
fn vm_uids(status: &FootprintStatus) -> BTreeSet<String> {
    status.vms.iter().filter_map(|vm| vm.uid.clone()).collect()
}

fn newly_conflicting<'a>(
    before: &[HostObjectRecord],
    after: &'a [HostObjectRecord],
) -> Vec<&'a HostObjectRecord> {
    after
        .iter()
        .filter(|record| !record.conflicts.is_empty())
        .filter(|record| {
            !before
                .iter()
                .any(|old| old.uid == record.uid && !old.conflicts.is_empty())
        })
        .collect()
}

/// Writes gleaner's label and annotation on each attributed object that lacks them. A failure
/// is retried with the reconcile.
async fn write_marks(
    context: &Context,
    marks: &[(HostObjectRecord, BTreeMap<&'static str, String>)],
) -> Result<()> {
    let mut failed = None;
    for (record, marks) in marks {
        let written = context
            .harvesters
            .mark(
                &record.cloud_credential,
                record.kind(),
                &record.namespace,
                &record.name,
                &record.uid,
                marks,
            )
            .await;
        context.wrote(WriteKind::HostObjectMarks, &written);
        match written {
            Ok(()) => {
                tracing::info!(kind = ?record.kind(), namespace = %record.namespace, name = %record.name, "marked")
            }
            Err(error) => failed = Some(error),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The live read that confirms a deletion the caches show (design.md §5, safety rule 1).
async fn confirmed_live(recorded: &ClusterIdentity, context: &Context) -> Result<bool> {
    let live = Clusters::live(
        &context.client,
        &context.capi,
        &recorded.namespace,
        &recorded.name,
    )
    .await?;
    Ok(confirm_deletion(recorded, &live.observation()) == Deletion::Confirmed)
}

/// The provisioning Cluster a Footprint records, as the object its Events are about (it may be
/// gone already).
pub fn cluster_reference(identity: &Identity) -> ObjectReference {
    ObjectReference {
        api_version: Some("provisioning.cattle.io/v1".into()),
        kind: Some("Cluster".into()),
        namespace: Some(identity.namespace.clone()),
        name: Some(identity.name.clone()),
        uid: Some(identity.provisioning_cluster_uid.clone()),
        ..ObjectReference::default()
    }
}

/// The VMs the cluster's HarvesterMachines name now (Rancher names each after its Machine).
fn named_vms(recorded: &ClusterIdentity, context: &Context) -> Vec<Named> {
    context
        .caches
        .harvester_machines
        .in_namespace(&recorded.namespace, |machine| {
            machine.labels().get(CLUSTER_NAME_LABEL) == Some(&recorded.name)
        })
        .iter()
        .map(|machine| {
            let target = vm_target(machine);
            Named {
                machine: machine
                    .labels()
                    .get(CAPI_MACHINE_NAME_LABEL)
                    .cloned()
                    .unwrap_or_else(|| machine.name_any()),
                cloud_credential: target.0,
                namespace: target.1.namespace,
                name: target.1.name,
            }
        })
        .collect()
}

/// The credential (as written) and VM of a HarvesterMachine.
pub fn vm_target(harvester_machine: &DynamicObject) -> (String, gleaner_core::VmRef) {
    let spec = &harvester_machine.data["spec"];
    (
        spec["common"]["cloudCredentialSecretName"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        vm_of(&harvester_machine.name_any(), spec["vmNamespace"].as_str()),
    )
}

/// How long the Footprint has recorded its Harvesters unreachable and misconfigured: the one
/// clock the hook timeout reads.
pub fn harvester_record(footprint: &Footprint) -> HarvesterRecord {
    let since = |type_: ConditionType| {
        let condition = footprint
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_.to_string() && condition.status == "True")?;
        Timestamp::now()
            .duration_since(condition.last_transition_time.0)
            .try_into()
            .ok()
            .or(Some(Duration::ZERO))
    };
    HarvesterRecord {
        unreachable_for: since(ConditionType::HarvesterUnreachable),
        misconfigured_for: since(ConditionType::HarvesterMisconfigured),
    }
}

/// Sets `ProtectionLapsed` and records the Machine that went without its intent.
pub async fn protection_lapsed(
    context: &Context,
    footprint: &str,
    machine: &str,
    vm: &str,
    note: &str,
) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        set_condition(
            &mut status.conditions,
            conditions::protection_lapsed(note.to_owned()),
        );
        record_release(status, machine, vm, ReleaseReason::HookTimeout, note);
    })
    .await
}

/// Records a Machine whose VM was not on Harvester: its hook went with nothing to protect.
pub async fn vm_not_found(
    context: &Context,
    footprint: &str,
    machine: &str,
    vm: &str,
    note: &str,
) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        record_release(status, machine, vm, ReleaseReason::VmNotFound, note);
    })
    .await
}

fn record_release(
    status: &mut FootprintStatus,
    machine: &str,
    vm: &str,
    reason: ReleaseReason,
    note: &str,
) {
    status
        .released
        .retain(|released| released.machine != machine);
    status.released.insert(
        0,
        ReleasedMachine {
            machine: machine.to_owned(),
            vm: vm.to_owned(),
            reason,
            message: note.to_owned(),
            time: Time(Timestamp::now()),
        },
    );
    status.released.truncate(RELEASED_KEPT);
}

/// Records, most recent first, what a dry run would have done.
pub async fn would(context: &Context, footprint: &str, what: String) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        status.would.retain(|entry| *entry != what);
        status.would.insert(0, what.clone());
        status.would.truncate(WOULD_KEPT);
    })
    .await
}

/// Reads the Footprint live, changes what the hooks own of its status and applies it, guarded
/// by the resourceVersion read, again if another write came in between.
async fn update_hooks_status(
    context: &Context,
    name: &str,
    mut change: impl FnMut(&mut FootprintStatus),
) -> Result<()> {
    for _ in 0..CONFLICT_RETRIES {
        let footprint = context
            .footprints()
            .get(name)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read Footprint {name}"),
                source,
            })?;
        let mut status = footprint.status.clone().unwrap_or_default();
        change(&mut status);
        if apply_status(context, &footprint, StatusWriter::Hooks, &status, true).await? {
            return Ok(());
        }
    }
    Err(Error::Conflict(format!("Footprint {name}")))
}

/// The writers of a Footprint's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusWriter {
    /// The Footprint controller.
    Footprints,
    /// The hook controller.
    Hooks,
}

impl StatusWriter {
    fn manager(self) -> &'static str {
        match self {
            Self::Footprints => STATUS_MANAGER,
            Self::Hooks => HOOKS_MANAGER,
        }
    }

    fn owns(self, condition: &Condition) -> bool {
        let hooks = condition.type_ == ConditionType::ProtectionLapsed.to_string();
        hooks == (self == Self::Hooks)
    }
}

/// What `writer` owns of `status`, as it applies it.
fn owned(writer: StatusWriter, status: &FootprintStatus) -> serde_json::Value {
    let conditions: Vec<&Condition> = status
        .conditions
        .iter()
        .filter(|condition| writer.owns(condition))
        .collect();
    match writer {
        StatusWriter::Footprints => json!({
            "phase": status.phase,
            "conditions": conditions,
            "vms": status.vms,
            "objects": status.objects,
            "counts": status.counts,
            "harvesters": status.harvesters,
            "lookalikes": status.lookalikes,
        }),
        StatusWriter::Hooks => json!({
            "conditions": conditions,
            "released": status.released,
            "would": status.would,
        }),
    }
}

/// Applies what `writer` owns of `status`; with `guarded`, only over the resourceVersion the
/// Footprint was read at. `false` on a conflict.
async fn apply_status(
    context: &Context,
    footprint: &Footprint,
    writer: StatusWriter,
    status: &FootprintStatus,
    guarded: bool,
) -> Result<bool> {
    let mut metadata = json!({"name": footprint.name_any()});
    if guarded {
        metadata["resourceVersion"] = json!(footprint.resource_version());
    }
    let body = json!({
        "apiVersion": Footprint::api_version(&()),
        "kind": Footprint::kind(&()),
        "metadata": metadata,
        "status": owned(writer, status),
    });
    let result = context
        .footprints()
        .patch_status(
            &footprint.name_any(),
            &PatchParams::apply(writer.manager()).force(),
            &Patch::Apply(&body),
        )
        .await;
    let outcome = match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            context: format!(
                "cannot write the status of Footprint {}",
                footprint.name_any()
            ),
            source,
        }),
    };
    let label = match &outcome {
        Ok(true) => "ok",
        Ok(false) => "conflict",
        Err(error) => error.metric_label(),
    };
    context.metrics().wrote(WriteKind::FootprintStatus, label);
    outcome
}

fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == type_.to_string() && condition.status == "True")
}

/// Sets a condition as the core decided it, keeping its transition time when its status does
/// not change.
pub fn set_condition(conditions: &mut Vec<Condition>, decided: ConditionState) {
    let status = if decided.status { "True" } else { "False" };
    let type_ = decided.type_.to_string();
    let now = Time(Timestamp::now());
    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == type_)
    {
        Some(condition) => {
            if condition.status != status {
                condition.last_transition_time = now;
            }
            condition.status = status.to_owned();
            condition.reason = decided.reason.to_string();
            condition.message = decided.message;
        }
        None => conditions.push(Condition {
            type_,
            status: status.to_owned(),
            reason: decided.reason.to_string(),
            message: decided.message,
            last_transition_time: now,
            observed_generation: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use gleaner_core::ConditionReason;
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use gleaner_core::VmRecord;

    fn state(type_: ConditionType, status: bool) -> ConditionState {
        ConditionState {
            type_,
            status,
            reason: ConditionReason::WatchFailing,
            message: "down".into(),
        }
    }

    #[test]
    fn the_footprint_says_how_long_its_harvester_has_been_failing() {
        let mut footprint = Footprint::new("uid", FootprintSpec::default());
        assert_eq!(harvester_record(&footprint), HarvesterRecord::default());
        let mut status = FootprintStatus::default();
        set_condition(
            &mut status.conditions,
            state(ConditionType::HarvesterUnreachable, true),
        );
        status.conditions[0].last_transition_time =
            Time(Timestamp::now() - SignedDuration::from_secs(90));
        footprint.status = Some(status.clone());
        let record = harvester_record(&footprint);
        assert!(record.unreachable_for.unwrap() >= Duration::from_secs(90));
        assert_eq!(record.misconfigured_for, None);
        set_condition(
            &mut status.conditions,
            state(ConditionType::HarvesterUnreachable, false),
        );
        footprint.status = Some(status);
        assert_eq!(harvester_record(&footprint), HarvesterRecord::default());
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, state(ConditionType::Frozen, true));
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(2));
        set_condition(&mut conditions, state(ConditionType::Frozen, true));
        assert_eq!(conditions[0].last_transition_time, first);
        set_condition(&mut conditions, state(ConditionType::Frozen, false));
        assert_ne!(conditions[0].last_transition_time, first);
        assert_eq!(conditions.len(), 1);
    }

    fn record(index: usize) -> HostObjectRecord {
        HostObjectRecord {
            cloud_credential: "cattle-global-data:cc-abcde".into(),
            namespace: "default".into(),
            name: format!("{index:0>253}"),
            uid: format!("00000000-0000-0000-0000-{index:0>12}"),
            class: gleaner_core::attribution::ObjectClass::Volume,
            evidence: vec![gleaner_core::attribution::Evidence::HotPlugged {
                vm_uid: "11111111-2222-3333-4444-555555555555".into(),
            }],
            guest_cluster_hint: None,
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn past_the_limit_new_objects_are_left_out_and_recorded_ones_kept() {
        let previous: Vec<HostObjectRecord> = (0..100).map(record).collect();
        let mut next = FootprintStatus::default();
        let left_out = within_limit(&mut next, &previous, (0..4_000).map(record).collect());
        assert!(left_out > 0);
        let kept = next.records();
        assert_eq!(kept.len(), 4_000 - left_out);
        assert!(previous.iter().all(|old| kept.contains(old)));
        assert!(serde_json::to_vec(&next).unwrap().len() <= STATUS_LIMIT);
        assert_eq!(next.counts.unwrap().volumes, kept.len());
        let mut small = FootprintStatus::default();
        assert_eq!(
            within_limit(&mut small, &[], (0..10).map(record).collect()),
            0
        );
    }

    #[test]
    fn each_writer_applies_only_what_it_owns() {
        let mut status = FootprintStatus {
            phase: Some(Phase::Tracking),
            would: vec!["would write".into()],
            vms: vec![VmRecord::default()],
            ..FootprintStatus::default()
        };
        set_condition(&mut status.conditions, state(ConditionType::Frozen, false));
        set_condition(
            &mut status.conditions,
            state(ConditionType::ProtectionLapsed, true),
        );
        let footprints = owned(StatusWriter::Footprints, &status);
        assert_eq!(footprints["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(footprints["conditions"][0]["type"], "Frozen");
        assert!(footprints.get("would").is_none());
        let hooks = owned(StatusWriter::Hooks, &status);
        assert_eq!(hooks["conditions"][0]["type"], "ProtectionLapsed");
        assert_eq!(hooks["would"][0], "would write");
        assert!(hooks.get("vms").is_none() && hooks.get("phase").is_none());
    }
}
