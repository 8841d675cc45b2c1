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

use crate::events::EventReason;
use gleaner_core::{
    ClusterIdentity, ConditionState, ConditionType, Deletion, HarvesterCheck, HarvesterRecord,
    Health, IntentSeen, Inventory, Named, Seen, VmRecord,
    attribution::{
        HostKind, HostObjectRecord, Observation, OtherFootprint, ThisFootprint, attribute,
        marks_to_write,
    },
    check_harvester, conditions, confirm_deletion,
    guest::{GuestFacts, PolicyAt, policy_at},
    keys, opt_out, paused_by, pool_credential,
    reclaim::HoldReason,
    vm_namespace, vm_of, vms,
};
use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};

use crate::{
    Error, Result,
    footprint::{
        Counts, Footprint, FootprintSpec, FootprintStatus, Identity, LedgerAction, Phase, Pool,
        PoolHarvester, STATUS_LIMIT,
    },
    management::{
        CLUSTER_NAME_LABEL, Context,
        cache::Scoped,
        guests::GuestSecret,
        harvesters::VmLookup,
        observe::{Clusters, provisioning_cluster},
        reclaimer::{self, Pass, Prepared},
        status::{self, StatusWriter, apply_status, is_true, owned, set_condition},
    },
    metrics::{InventoryOutcome, WriteKind},
};

const SPEC_MANAGER: &str = "gleaner/footprints";
/// How many lookalikes a Footprint lists.
const LOOKALIKES_KEPT: usize = 50;
/// How many unmatched guest PVs a Footprint lists.
const UNMATCHED_KEPT: usize = 50;
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
        adopted: None,
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
        context.event(&about, EventReason::Tracking, note).await;
    }
    Ok(Action::await_change())
}

/// A Footprint that cannot be made or kept: a Warning Event on the cluster, and the error for
/// the retry policy and the error counter.
async fn not_made(context: &Context, about: &ObjectReference, error: Error) -> Result<Action> {
    let note = format!("gleaner cannot write this cluster's Footprint: {error}");
    context
        .event(about, EventReason::FootprintNotWritten, note)
        .await;
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
                    .event(about, EventReason::MalformedCredential, error.to_string())
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
/// only when the caches show it), and then takes the final inventory of its guest; keeps its
/// VMs, the host objects attributed to it and the conditions it owns current from the caches,
/// the Harvester watches and the guest's watch, makes sure each of its Harvesters and its guest
/// (until that inventory) is watched, and marks what it attributed.
pub async fn phase(footprint: Arc<Footprint>, context: Arc<Context>) -> Result<Action> {
    // Every Footprint change comes through here, so the count follows the cache.
    context.metrics().footprints(
        context
            .caches
            .footprints
            .state()
            .iter()
            .map(|each| each.status.as_ref().and_then(|status| status.phase)),
    );
    let status = footprint.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Reclaimed) {
        return reclaimed(&footprint, &context).await;
    }
    if footprint.spec.adopted.is_some() {
        return adopted(&footprint, &context, status).await;
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
    let identity = &footprint.spec.identity;
    let secret = GuestSecret::of(&identity.namespace, &identity.name);
    let inventoried = status
        .conditions
        .iter()
        .any(|condition| condition.type_ == ConditionType::Inventoried.to_string());
    if status.phase == Some(Phase::Reclaiming) && inventoried {
        context.guests.stop(&name);
    } else {
        context.guests.follow(&name, secret.clone());
    }
    if !context.may_write() {
        return Ok(Action::await_change());
    }
    let Ok(recorded) = ClusterIdentity::try_from(&footprint.spec.identity) else {
        // The tracker records the CAPI Cluster's UID once it exists, which changes the
        // Footprint and brings it back here.
        return Ok(Action::await_change());
    };
    let cached = cached_clusters(&context, &recorded);
    let confirmed = status.phase == Some(Phase::Reclaiming)
        || (confirm_deletion(&recorded, &cached.observation()) == Deletion::Confirmed
            && confirmed_live(&recorded, &context).await?);
    // Once its VMs go nobody can ask the guest: one last live read before the first does.
    let (guest, inventory) = if confirmed && !inventoried {
        let (inventory, facts) = context
            .guests
            .inventory(&name, &secret, context.inventory_timeout)
            .await;
        (facts, Some(inventory))
    } else {
        (context.guests.facts(&name), None)
    };
    let mut next = status.clone();
    next.phase = Some(if confirmed {
        Phase::Reclaiming
    } else {
        Phase::Tracking
    });
    let refused = check_harvesters(&footprint, &context, &mut next);
    let facts = ConditionFacts {
        status: &status,
        cached: &cached,
        recorded: &recorded,
        confirmed,
        refused: &refused,
        guest: context.guests.health(&name),
    };
    for condition in decide_conditions(&footprint, &context, &facts) {
        set_condition(&mut next.conditions, condition);
    }
    next.vms = record_vms(&context, &recorded, &cached, &status, confirmed);
    let identity = recorded.readable();
    // What a refused credential shows is not this cluster's Harvester: attribute nothing from it.
    // `None` while a Harvester is not synced, or refused: nothing may be reclaimed then, since
    // what the inventory found may not be recorded yet.
    let marks = if refused.is_empty() {
        attribute_objects(&context, &footprint, &identity, guest.as_ref(), &mut next)
    } else {
        None
    };
    if let Some(inventory) = &inventory {
        let unsure = unsure_policies(&next.records(), context.policy_max_age);
        set_condition(
            &mut next.conditions,
            conditions::inventoried(inventory, unsure),
        );
    }
    let changed =
        owned(StatusWriter::Footprints, &status) != owned(StatusWriter::Footprints, &next);
    let mut version = footprint.resource_version();
    if changed {
        match apply_status(
            &context,
            &footprint,
            version.as_deref(),
            StatusWriter::Footprints,
            &next,
        )
        .await?
        {
            Some(written) => version = Some(written),
            // The cache was behind, or another write came in between; its event brings the
            // Footprint back here.
            None => return Ok(Action::await_change()),
        }
    }
    if status.phase != next.phase {
        tracing::info!(footprint = %name, cluster = %identity, phase = ?next.phase, "footprint phase");
    }
    report(&context, &footprint, &status, &next, &refused).await;
    if let Some(inventory) = &inventory {
        report_inventory(&context, &footprint, inventory).await;
    }
    // The Footprint records an object before gleaner marks it: the record is what counts.
    if !context.dry_run
        && let Some(marks) = &marks
    {
        write_marks(&context, marks).await?;
    }
    let inventoried = next
        .conditions
        .iter()
        .any(|condition| condition.type_ == ConditionType::Inventoried.to_string());
    // No finalizer can be added to an object being deleted; the reclaim goes on without it.
    if next.phase == Some(Phase::Reclaiming)
        && footprint.metadata.deletion_timestamp.is_none()
        && !footprint.finalizers().iter().any(|f| f == FINALIZER)
    {
        set_finalizer(&context, &footprint, version.as_deref(), true).await?;
        // The write brings the Footprint back here.
        return Ok(Action::await_change());
    }
    if next.phase == Some(Phase::Reclaiming) && inventoried && marks.is_some() {
        return reclaim(&context, &footprint, version.as_deref(), &recorded, next).await;
    }
    Ok(Action::await_change())
}

/// An adopted Footprint stands for no cluster: nothing to track, watch, inventory or attribute.
/// It is reclaimed from the moment it exists, under the reclaimer's rules.
async fn adopted(
    footprint: &Footprint,
    context: &Context,
    mut status: FootprintStatus,
) -> Result<Action> {
    if !context.may_write() {
        return Ok(Action::await_change());
    }
    let version = footprint.resource_version();
    if footprint.metadata.deletion_timestamp.is_none()
        && !footprint.finalizers().iter().any(|f| f == FINALIZER)
    {
        set_finalizer(context, footprint, version.as_deref(), true).await?;
        return Ok(Action::await_change());
    }
    let recorded = ClusterIdentity::try_from(&footprint.spec.identity)?;
    status.phase = Some(Phase::Reclaiming);
    reclaim(context, footprint, version.as_deref(), &recorded, status).await
}

/// Held on a Footprint while it is reclaimed and while it records kept objects, so a
/// `kubectl delete` cannot drop the record of what stays on Harvester.
const FINALIZER: &str = "gleaner.io/record";

/// Adds or removes [`FINALIZER`], guarded by `version`, the resourceVersion last read or written.
async fn set_finalizer(
    context: &Context,
    footprint: &Footprint,
    version: Option<&str>,
    held: bool,
) -> Result<()> {
    let mut finalizers: Vec<String> = footprint
        .finalizers()
        .iter()
        .filter(|finalizer| *finalizer != FINALIZER)
        .cloned()
        .collect();
    if held {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": version,
    }});
    let written = context
        .footprints()
        .patch(
            &footprint.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Kube {
            context: format!(
                "cannot set the finalizer of Footprint {}",
                footprint.name_any()
            ),
            source,
        });
    context.wrote(WriteKind::Footprint, &written);
    written
}

/// A `Reclaimed` Footprint: it keeps its finalizer while it records kept objects (an operator
/// releases those, then the Footprint); without any, the finalizer goes and, after
/// `--retention`, the Footprint too.
async fn reclaimed(footprint: &Footprint, context: &Context) -> Result<Action> {
    context.guests.forget(&footprint.name_any());
    if !context.may_write() {
        return Ok(Action::await_change());
    }
    let status = footprint.status.clone().unwrap_or_default();
    let ledger = status.ledger.unwrap_or_default();
    let keeps = ledger.folded_keeps > 0
        || ledger
            .entries
            .iter()
            .any(|entry| entry.action == LedgerAction::Kept);
    if keeps {
        return Ok(Action::await_change());
    }
    if footprint
        .finalizers()
        .iter()
        .any(|finalizer| finalizer == FINALIZER)
    {
        let version = footprint.resource_version();
        set_finalizer(context, footprint, version.as_deref(), false).await?;
        return Ok(Action::await_change());
    }
    let reclaimed_for = since(
        footprint
            .status
            .as_ref()
            .unwrap_or(&FootprintStatus::default()),
        ConditionType::Reclaimed,
    )
    .unwrap_or_default();
    let identity = &footprint.spec.identity;
    let cluster_still_there = context
        .caches
        .provisioning
        .get(&identity.namespace, &identity.name)
        .is_some_and(|cluster| cluster.uid().as_deref() == Some(footprint.name_any().as_str()));
    match record_fate(cluster_still_there, reclaimed_for, context.retention) {
        // Its disappearance brings the Footprint back here.
        RecordFate::OutliveTheCluster => return Ok(Action::await_change()),
        RecordFate::KeepFor(left) => return Ok(Action::requeue(left)),
        RecordFate::Delete => {}
    }
    context
        .footprints()
        .delete(&footprint.name_any(), &kube::api::DeleteParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot delete Footprint {}", footprint.name_any()),
            source,
        })?;
    tracing::info!(footprint = %footprint.name_any(), "retention passed: Footprint deleted");
    Ok(Action::await_change())
}

/// What becomes of a Reclaimed Footprint that kept nothing.
#[derive(Debug, PartialEq, Eq)]
enum RecordFate {
    /// Rancher still holds the provisioning Cluster (its deletion waits on someone's
    /// finalizer): deleted now, the record would be written anew by the tracker for a cluster
    /// already gone from Harvester, its history lost.
    OutliveTheCluster,
    /// The retention has this much left.
    KeepFor(Duration),
    Delete,
}

fn record_fate(
    cluster_still_there: bool,
    reclaimed_for: Duration,
    retention: Duration,
) -> RecordFate {
    if cluster_still_there {
        RecordFate::OutliveTheCluster
    } else if reclaimed_for < retention {
        RecordFate::KeepFor(retention - reclaimed_for)
    } else {
        RecordFate::Delete
    }
}

/// How soon a Footprint whose reclaim is in progress is looked at again (its objects' changes
/// bring it back sooner).
const RECLAIM_AGAIN: Duration = Duration::from_secs(5);
/// How soon a held reclaim is looked at again (its VMs' changes bring it back sooner).
const HELD_AGAIN: Duration = Duration::from_secs(30);

/// One reclaimer pass, then its ledger, `ReclaimHeld` and, once done, `Reclaimed`.
async fn reclaim(
    context: &Context,
    footprint: &Footprint,
    version: Option<&str>,
    recorded: &ClusterIdentity,
    applied: FootprintStatus,
) -> Result<Action> {
    let name = footprint.name_any();
    if let Some(wait) = context.reclaim_pauses.remaining(&name) {
        return Ok(Action::requeue(wait));
    }
    // The ledger is what stops a pass from doing again, differently, what the last one did (a
    // keep marked on the object under another reason): never act on a Footprint older than the
    // one the apiserver holds. One live read per pass.
    let current = context
        .footprints()
        .get_opt(&name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read Footprint {name}"),
            source,
        })?;
    if current
        .and_then(|current| current.resource_version())
        .as_deref()
        != version
    {
        return Ok(Action::requeue(RECLAIM_AGAIN));
    }
    let mut next = applied.clone();
    let mut applied = applied;
    // The grace period starts with the first pass that may act (in a real run).
    if next.grace_started_at.is_none() && !context.dry_run {
        next.grace_started_at = Some(Time(Timestamp::now()));
    }
    let mut version = version.map(str::to_owned);
    let outcome = match reclaimer::prepare(footprint, recorded, context, &mut next).await {
        Ok(Prepared::Held(reason)) => Ok(Pass::Held(reason)),
        Ok(Prepared::Ready(batch)) if context.dry_run => {
            dry_run(context, footprint, batch.would()).await?;
            Ok(Pass::Held(HoldReason::DryRun))
        }
        Ok(Prepared::Ready(batch)) => {
            if batch.deletes() {
                // The ledger names what is about to be deleted before anything is.
                match apply_status(
                    context,
                    footprint,
                    version.as_deref(),
                    StatusWriter::Footprints,
                    &next,
                )
                .await?
                {
                    Some(written) => version = Some(written),
                    None => return Ok(Action::requeue(RECLAIM_AGAIN)),
                }
                applied = next.clone();
            }
            reclaimer::execute(batch, footprint, context, &mut next).await
        }
        Err(error) => Err(error),
    };
    let held = match &outcome {
        Ok(Pass::Held(reason)) => Some(reason),
        _ => None,
    };
    set_condition(&mut next.conditions, conditions::reclaim_held(held));
    let stuck = match &outcome {
        Ok(Pass::InProgress { stuck }) => stuck.as_slice(),
        _ => &[],
    };
    set_condition(&mut next.conditions, conditions::deletion_stuck(stuck));
    if matches!(outcome, Ok(Pass::Done)) {
        next.phase = Some(Phase::Reclaimed);
        let ledger = next.ledger.clone().unwrap_or_default();
        let count = |action: LedgerAction| {
            ledger
                .entries
                .iter()
                .filter(|entry| entry.action == action)
                .count() as u64
        };
        set_condition(
            &mut next.conditions,
            conditions::reclaimed(
                count(LedgerAction::Deleted) + ledger.folded_deletions,
                count(LedgerAction::Kept) + ledger.folded_keeps,
            ),
        );
        tracing::info!(footprint = %footprint.name_any(), "reclaimed");
        if let Some(took) = since(&next, ConditionType::DeletionConfirmed) {
            context.metrics().reclaim_took(took);
        }
    }
    let identity_changed = matches!(&outcome, Ok(Pass::Held(HoldReason::IdentityChanged)));
    if identity_changed && !is_true(&applied.conditions, ConditionType::IdentityChanged) {
        let note = "every Cluster UID differs from the recorded ones while the cluster's VMs run \
                    (a Rancher restore re-created them?): nothing of it is deleted";
        context
            .event(
                &cluster_reference(&footprint.spec.identity),
                EventReason::IdentityChanged,
                note.into(),
            )
            .await;
    }
    set_condition(
        &mut next.conditions,
        conditions::identity_changed(identity_changed),
    );
    if owned(StatusWriter::Footprints, &applied) != owned(StatusWriter::Footprints, &next)
        && apply_status(
            context,
            footprint,
            version.as_deref(),
            StatusWriter::Footprints,
            &next,
        )
        .await?
        .is_none()
    {
        // The ledger must not be lost: a pass after a restart finds what this one deleted gone
        // and notes it then.
        return Ok(Action::requeue(RECLAIM_AGAIN));
    }
    let about = cluster_reference(&footprint.spec.identity);
    match outcome {
        Ok(Pass::Held(hold @ HoldReason::WebhookUnavailable(_))) => {
            context
                .event(&about, EventReason::WebhookUnavailable, hold.to_string())
                .await;
            Ok(Action::requeue(
                context.reclaim_pauses.failed(&name, HELD_AGAIN),
            ))
        }
        Err(error) => {
            let wait = context.reclaim_pauses.failed(&name, Duration::ZERO);
            let note = format!(
                "the reclaim stopped, nothing deleted on a guess; next try in {}s: {error}",
                wait.as_secs()
            );
            context
                .event(&about, EventReason::ReclaimFailed, note)
                .await;
            Err(error)
        }
        Ok(pass) => {
            context.reclaim_pauses.cleared(&name);
            Ok(match pass {
                Pass::Done => Action::await_change(),
                Pass::Held(_) => Action::requeue(HELD_AGAIN),
                Pass::InProgress { .. } => Action::requeue(RECLAIM_AGAIN),
            })
        }
    }
}

/// A dry run's verdicts: each new one logged, evented and in `status.would`.
async fn dry_run(
    context: &Context,
    footprint: &Footprint,
    would: &[(HostObjectRecord, String)],
) -> Result<()> {
    let known = footprint
        .status
        .as_ref()
        .map(|status| status.would.as_slice())
        .unwrap_or_default();
    let new: Vec<&(HostObjectRecord, String)> = would
        .iter()
        .filter(|(_, what)| !known.contains(what))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let about = cluster_reference(&footprint.spec.identity);
    for (record, what) in &new {
        tracing::info!(footprint = %footprint.name_any(), "dry run: {what}");
        let reason = if what.starts_with("would delete") {
            EventReason::WouldDelete
        } else {
            EventReason::WouldKeep
        };
        context.event_on(&about, record, reason, what.clone()).await;
    }
    let new = new.into_iter().map(|(_, what)| what.clone()).collect();
    status::would(context, &footprint.name_any(), new).await
}

/// Both Cluster objects of the recorded cluster and the installation, as the caches show them.
fn cached_clusters(context: &Context, recorded: &ClusterIdentity) -> Clusters {
    let cached = |scoped: &Scoped<DynamicObject>| {
        scoped
            .get(&recorded.namespace, &recorded.name)
            .map(|cluster| (*cluster).clone())
    };
    Clusters {
        install_uuid: context.caches.install_uuid(),
        provisioning: cached(&context.caches.provisioning),
        capi: cached(&context.caches.capi_clusters),
    }
}

/// What the Footprint controller's conditions are decided from.
struct ConditionFacts<'a> {
    status: &'a FootprintStatus,
    cached: &'a Clusters,
    recorded: &'a ClusterIdentity,
    confirmed: bool,
    /// The credentials that reach another Harvester than recorded, with why.
    refused: &'a BTreeMap<String, String>,
    /// How the guest's watch fares.
    guest: Health,
}

/// The conditions the Footprint controller owns, as the core decides them: `Frozen`,
/// `OptedOut`, `DeletionConfirmed`, `HarvesterUnreachable` and `HarvesterMisconfigured`.
fn decide_conditions(
    footprint: &Footprint,
    context: &Context,
    facts: &ConditionFacts<'_>,
) -> Vec<ConditionState> {
    let own = facts
        .cached
        .recorded(&facts.recorded.provisioning_uid, &facts.recorded.capi_uid);
    let (provisioning_skip, capi_skip) = own.skip_cleanup();
    let mut decided = vec![conditions::frozen(
        own.capi.is_some(),
        paused_by(&own.pause(None)),
    )];
    decided.extend(conditions::opted_out(
        &opt_out(provisioning_skip, capi_skip),
        facts.confirmed,
        is_true(&facts.status.conditions, ConditionType::OptedOut),
    ));
    if facts.confirmed {
        decided.push(conditions::deletion_confirmed());
    }
    let first_look = facts.status.conditions.is_empty();
    let deleting = facts.confirmed
        || own
            .provisioning
            .as_ref()
            .is_some_and(|cluster| cluster.metadata.deletion_timestamp.is_some());
    if first_look && deleting {
        decided.push(conditions::late_tracking());
    }
    decided.extend(conditions::guest_unreachable(&facts.guest));
    let healths: Vec<_> = footprint
        .spec
        .pools
        .iter()
        .map(|pool| pool.cloud_credential.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|credential| {
            let health = match facts.refused.get(&credential) {
                Some(problem) => Health::Misconfigured {
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
    decided
}

/// The VMs to record: those the cluster's Machines name while it lives, as the Harvester
/// watches show them; once its deletion is confirmed, every one recorded, gone or not, and
/// those named by machines made no later than the second the deletion began (a cluster first
/// seen deleting).
fn record_vms(
    context: &Context,
    recorded: &ClusterIdentity,
    cached: &Clusters,
    status: &FootprintStatus,
    confirmed: bool,
) -> Vec<VmRecord> {
    let named_now = named_vms(recorded, context);
    let named = if confirmed {
        let own = cached.recorded(&recorded.provisioning_uid, &recorded.capi_uid);
        let deletion_started = [own.provisioning.as_ref(), own.capi.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|cluster| cluster.metadata.deletion_timestamp.as_ref())
            .map(|since| since.0)
            .min();
        vms::named_before_deletion(named_now, deletion_started)
    } else {
        Some(named_now.into_iter().map(|(vm, _)| vm).collect())
    };
    vms::record(
        &status.vms,
        named.as_deref(),
        |credential, namespace, name| match context.harvesters.vm(credential, namespace, name) {
            // Once the deletion is confirmed a VM's record stays when it goes: the reclaimer
            // reads what became of each VM the cluster had, and an empty list is not "all gone".
            VmLookup::Absent if confirmed => Seen::Unknown,
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
    )
}

/// Warning Events for what went wrong since `status`: a malformed intent, a Harvester that
/// changed, a full Footprint, a new conflict.
async fn report(
    context: &Context,
    footprint: &Footprint,
    status: &FootprintStatus,
    next: &FootprintStatus,
    refused: &BTreeMap<String, String>,
) {
    let about = cluster_reference(&footprint.spec.identity);
    for vm in vms::newly_malformed(&status.vms, &next.vms) {
        let note = format!(
            "VM {}/{} carries a {} gleaner cannot read ({}): it is reported, not acted on",
            vm.namespace,
            vm.name,
            keys::INTENT_ANNOTATION,
            vm.intent_problem.clone().unwrap_or_default()
        );
        context
            .event(&about, EventReason::MalformedIntent, note)
            .await;
    }
    if !refused.is_empty() && !is_true(&status.conditions, ConditionType::HarvesterMisconfigured) {
        let note = refused.values().cloned().collect::<Vec<_>>().join("; ");
        context
            .event(&about, EventReason::HarvesterChanged, note)
            .await;
    }
    if is_true(&next.conditions, ConditionType::GuestUnreachable)
        && !is_true(&status.conditions, ConditionType::GuestUnreachable)
    {
        let note = format!(
            "gleaner cannot read this guest cluster through its kubeconfig Secret (what it knows \
             of its volumes stands): {}",
            message_of(&next.conditions, ConditionType::GuestUnreachable)
        );
        context
            .event(&about, EventReason::GuestUnreachable, note)
            .await;
    }
    if is_true(&next.conditions, ConditionType::RecordsLimited)
        && !is_true(&status.conditions, ConditionType::RecordsLimited)
    {
        let note = message_of(&next.conditions, ConditionType::RecordsLimited);
        context
            .event(&about, EventReason::FootprintFull, note)
            .await;
    }
    for record in newly_conflicting(&status.records(), &next.records()) {
        let note = format!(
            "{:?} {}/{} ({}) is tied to another cluster too ({}): it will never be deleted",
            record.kind(),
            record.namespace,
            record.name,
            record.uid,
            record
                .conflicts
                .iter()
                .map(|conflict| String::from(conflict.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        context
            .event_on(&about, record, EventReason::AttributionConflict, note)
            .await;
    }
}

fn message_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: ConditionType,
) -> String {
    conditions
        .iter()
        .find(|condition| condition.type_ == type_.to_string())
        .map(|condition| condition.message.clone())
        .unwrap_or_default()
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
/// lookalikes, `RecordsLimited`), and returns the marks to write on what it attributed; `None`,
/// and nothing changes, while a Harvester is not synced.
fn attribute_objects(
    context: &Context,
    footprint: &Footprint,
    identity: &str,
    guest: Option<&GuestFacts>,
    next: &mut FootprintStatus,
) -> Option<Vec<(HostObjectRecord, BTreeMap<&'static str, String>)>> {
    let name = footprint.name_any();
    let credentials: BTreeSet<String> = footprint
        .spec
        .pools
        .iter()
        .map(|pool| pool.cloud_credential.clone())
        .collect();
    let previous = next.records();
    let Some((vms, objects)) = context.harvesters.observed(&credentials) else {
        next.counts = Some(Counts::of(&previous));
        return None;
    };
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
    let recorded_vms = vm_uids(next);
    let found = attribute(
        &ThisFootprint {
            name: &name,
            identity,
            vm_uids: &recorded_vms,
            records: &previous,
        },
        &others,
        &Observation {
            vms: &vms,
            objects: Some(&objects),
            guest,
            now: Timestamp::now(),
        },
    );
    let mut found = found;
    if next.phase == Some(Phase::Reclaiming) {
        // While it is reclaimed, a record outlives its object: the reclaimer notes what became
        // of each in the ledger, once.
        let kept: BTreeSet<String> = found
            .records
            .iter()
            .map(|record| record.uid.clone())
            .collect();
        found.records.extend(
            previous
                .iter()
                .filter(|record| !kept.contains(&record.uid))
                .cloned(),
        );
        found.records.sort_by(|a, b| {
            (a.kind(), &a.namespace, &a.name, &a.uid).cmp(&(
                b.kind(),
                &b.namespace,
                &b.name,
                &b.uid,
            ))
        });
    }
    if guest.is_some() {
        next.unmatched_guest_volumes = found
            .unmatched
            .iter()
            .take(UNMATCHED_KEPT)
            .cloned()
            .collect();
    }
    let left_out = within_limit(next, &previous, found.records);
    set_condition(&mut next.conditions, conditions::records_limited(left_out));
    next.lookalikes = found
        .lookalikes
        .iter()
        .take(LOOKALIKES_KEPT)
        .map(|object| format!("{}/{} ({})", object.namespace, object.name, object.uid))
        .collect();
    let records = next.records();
    let this = ThisFootprint {
        name: &name,
        identity,
        vm_uids: &recorded_vms,
        records: &records,
    };
    let marks = records
        .iter()
        .filter_map(|record| {
            let object = objects.iter().find(|object| object.uid == record.uid)?;
            Some((record.clone(), marks_to_write(&this, record, object)?))
        })
        .collect();
    Some(marks)
}

/// How many recorded volumes have a guest reclaim policy that was never seen or is older than
/// `max_age` now: the reclaimer keeps them.
fn unsure_policies(records: &[HostObjectRecord], max_age: Duration) -> usize {
    let now = Timestamp::now();
    records
        .iter()
        .filter(|record| record.kind() == HostKind::PersistentVolumeClaim)
        .filter(|record| {
            matches!(
                policy_at(record.guest_policy, now, max_age),
                PolicyAt::NeverSeen | PolicyAt::Stale { .. }
            )
        })
        .count()
}

/// The Event and metric of a final inventory.
async fn report_inventory(context: &Context, footprint: &Footprint, inventory: &Inventory) {
    let about = cluster_reference(&footprint.spec.identity);
    match inventory {
        Inventory::Completed { .. } => {
            context.metrics().inventoried(InventoryOutcome::Completed);
            let note = format!("final inventory of the guest: {inventory:?}");
            context.event(&about, EventReason::Inventoried, note).await;
        }
        Inventory::Incomplete { problem } => {
            context.metrics().inventoried(InventoryOutcome::Incomplete);
            let note = format!(
                "the final inventory of the guest did not complete ({problem}): what gleaner \
                 learnt while the cluster lived stands"
            );
            context
                .event(&about, EventReason::InventoryIncomplete, note)
                .await;
        }
    }
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
    let live = Clusters::live_of(context, recorded).await?;
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

/// The VMs the cluster's HarvesterMachines name now (Rancher names each after its Machine), each
/// with when its HarvesterMachine was made.
fn named_vms(recorded: &ClusterIdentity, context: &Context) -> Vec<(Named, Option<Timestamp>)> {
    context
        .caches
        .harvester_machines
        .in_namespace(&recorded.namespace, |machine| {
            machine.labels().get(CLUSTER_NAME_LABEL) == Some(&recorded.name)
        })
        .iter()
        .map(|machine| {
            let target = vm_target(machine);
            let named = Named {
                machine: machine
                    .labels()
                    .get(CAPI_MACHINE_NAME_LABEL)
                    .cloned()
                    .unwrap_or_else(|| machine.name_any()),
                cloud_credential: target.0,
                namespace: target.1.namespace,
                name: target.1.name,
            };
            let created = machine.metadata.creation_timestamp.as_ref().map(|at| at.0);
            (named, created)
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

/// How long a condition has had its present status.
fn since(status: &FootprintStatus, type_: ConditionType) -> Option<Duration> {
    let condition = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_.to_string())?;
    Timestamp::now()
        .duration_since(condition.last_transition_time.0)
        .try_into()
        .ok()
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

#[cfg(test)]
mod tests {
    use gleaner_core::ConditionReason;
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::SignedDuration};

    use super::*;

    fn state(type_: ConditionType, status: bool) -> ConditionState {
        ConditionState::new(type_, status, ConditionReason::WatchFailing, "down".into())
    }

    #[test]
    fn a_reclaimed_record_outlives_its_cluster_then_its_retention() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            record_fate(true, 100 * hour, 48 * hour),
            RecordFate::OutliveTheCluster
        );
        assert_eq!(
            record_fate(false, 47 * hour, 48 * hour),
            RecordFate::KeepFor(hour)
        );
        assert_eq!(record_fate(false, 48 * hour, 48 * hour), RecordFate::Delete);
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
            guest_policy: None,
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
}
