//! The reclaimer (design.md §5–6): drives a `Reclaiming` Footprint whose final inventory ran to
//! `Reclaimed`. Each pass reads live what the safety rules demand (both Cluster objects, every
//! recorded VM, each recorded object by name, every other Footprint) and lets the core plan.
//! Keeps are written once on the object (`gleaner.io/kept`), evented and in the ledger. Deletes
//! go in a batch: announced in the ledger (`Deleting`) and that status written first, then each
//! made with UID and resourceVersion preconditions after an Event, then recorded `Deleted` once
//! a live read finds the object gone. Level-triggered and idempotent: a pass after a restart
//! plans again from live facts, and the announcements tell what the last one asked.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::events::EventReason;
use gleaner_core::{
    ClusterIdentity, ConditionType, Deletion, Retention,
    attribution::HostObjectRecord,
    confirm_deletion, keys, parse_bool,
    reclaim::{
        AfterDelete, DeleteAnswer, HoldReason, KeepReason, LiveObject, Plan, ReclaimFacts,
        RecordedVm, Verdict, after_delete, plan,
    },
    retention,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions},
};
use serde_json::json;

use crate::{
    Error, Result,
    error::ApiFailure,
    footprint::{Footprint, FootprintStatus, LEDGER_KEPT, Ledger, LedgerAction, LedgerEntry},
    management::{
        Capi, Context, backoff,
        footprints::cluster_reference,
        host_objects,
        live::{self, LiveReads},
        observe::Clusters,
        status::is_true,
    },
    metrics::WriteKind,
};

/// Footprints whose last batch stopped on a failure, and until when their next pass waits.
/// A stopped batch takes back its announcements, and that status write would otherwise bring
/// the Footprint straight back: a retry loop against a failing Harvester.
#[derive(Default)]
pub struct Pauses(Mutex<HashMap<String, (u32, Instant)>>);

impl Pauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long the Footprint's next pass must still wait.
    pub fn remaining(&self, footprint: &str) -> Option<Duration> {
        let (_, until) = *self.lock().get(footprint)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// A batch stopped on a failure: the next pass waits a jittered, doubling backoff, at
    /// least `floor`. Returns the wait.
    pub fn failed(&self, footprint: &str, floor: Duration) -> Duration {
        let mut pauses = self.lock();
        let (failures, until) = pauses
            .entry(footprint.to_owned())
            .or_insert((0, Instant::now()));
        *failures = failures.saturating_add(1);
        let wait = backoff(*failures, rand::random_range(0.5..=1.0)).max(floor);
        *until = Instant::now() + wait;
        wait
    }

    /// A pass went through: no wait.
    pub fn cleared(&self, footprint: &str) {
        self.lock().remove(footprint);
    }
}

/// What a pass did, for the Footprint's status.
pub enum Pass {
    /// The plan holds the whole cluster, with why.
    Held(HoldReason),
    /// Some deletions are still to be confirmed gone: look again. The objects whose deletion
    /// has waited longer than `--deletion-stuck-after` on finalizers, with those finalizers.
    InProgress { stuck: Vec<String> },
    /// Every deletable object is gone; the rest is kept.
    Done,
}

/// An object the plan deletes in this pass, as read just before.
struct Doomed {
    record: HostObjectRecord,
    object: LiveObject,
    /// A PVC's storage request.
    bytes: Option<u64>,
}

/// The deletes of one pass. They are announced in the ledger (action `Deleting`) and that
/// status written before the first is made, so a restart mid-batch knows what it asked.
pub struct Batch {
    doomed: Vec<Doomed>,
    /// In a dry run, each verdict, for `status.would`, with its object.
    would: Vec<(HostObjectRecord, String)>,
    /// Objects asked to go earlier, not yet gone.
    waiting: bool,
    stuck: Vec<String>,
}

impl Batch {
    /// Whether it deletes anything (and so must be announced first).
    pub fn deletes(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// In a dry run, what the pass would have done, object by object.
    pub fn would(&self) -> &[(HostObjectRecord, String)] {
        &self.would
    }
}

/// What the live reads and the plan of a pass lead to.
pub enum Prepared {
    Held(HoldReason),
    Ready(Batch),
}

/// The first half of a pass over a `Reclaiming` Footprint: the live reads, the plan, the keeps
/// and the objects found gone (into `next`'s ledger), and the deletes to make, announced in
/// `next`'s ledger.
pub async fn prepare(
    footprint: &Footprint,
    recorded: &ClusterIdentity,
    context: &Context,
    next: &mut FootprintStatus,
) -> Result<Prepared> {
    // An adopted Footprint stands for no cluster: each object's orphan verdict, read live below,
    // is its confirmation, and it records no VM.
    let adopted = footprint.spec.adopted.is_some();
    let Confirmation {
        confirmed,
        identity_changed,
    } = Confirmation::of(&context.client, &context.capi, footprint, recorded).await?;
    let vms = if adopted {
        Vec::new()
    } else {
        live::recorded_vms(&context.harvesters, next).await?
    };
    let records = next.records();
    let marks = Marks::of(footprint, next);
    let cluster_wide = ReclaimFacts {
        confirmed,
        identity_changed,
        // A dry run says what would be done once the grace period ends, without waiting.
        deletions_begin: if context.dry_run {
            Some(Timestamp::now())
        } else {
            next.grace_started_at.as_ref().map(|started| {
                SignedDuration::try_from(context.grace_period)
                    .ok()
                    .and_then(|grace| started.0.checked_add(grace).ok())
                    .unwrap_or(Timestamp::MAX)
            })
        },
        ..marks.facts(&vms, context.policy_max_age)
    };
    // What holds the whole cluster is read first: the objects only once it may act.
    if let Plan::Hold(reason) = plan(&cluster_wide) {
        return Ok(Prepared::Held(reason));
    }
    let LiveReads {
        objects,
        pending: pending_deletions,
        mut bytes,
    } = live::objects(&context.harvesters, &records).await?;
    let others = live::other_footprints(&context.footprints(), &footprint.name_any()).await?;
    let unorphaned = if adopted {
        no_longer_orphans(
            &context.harvesters,
            &context.footprints(),
            footprint,
            &records,
            &objects,
        )
        .await?
    } else {
        BTreeSet::new()
    };
    let facts = ReclaimFacts {
        records: &records,
        live: &objects,
        other_footprints: &others,
        unorphaned: &unorphaned,
        ..cluster_wide
    };
    let steps = match plan(&facts) {
        Plan::Hold(reason) => return Ok(Prepared::Held(reason)),
        Plan::Act(steps) => steps,
    };
    let about = cluster_reference(&footprint.spec.identity);
    let mut batch = Batch {
        doomed: Vec::new(),
        would: Vec::new(),
        waiting: false,
        stuck: Vec::new(),
    };
    for (record, verdict) in steps {
        if context.dry_run {
            let what = match verdict {
                Verdict::Delete => format!("would delete {}", described(&record)),
                Verdict::Keep(reason) => {
                    format!("would keep {}: {}", described(&record), reason.as_str())
                }
                Verdict::Gone => continue,
            };
            batch.would.push((record, what));
            continue;
        }
        match verdict {
            Verdict::Gone => confirmed_gone(next, &record),
            Verdict::Keep(reason) => {
                let object = objects.get(&record.uid);
                keep(context, &about, next, &record, object, reason).await?;
            }
            Verdict::Delete => {
                let Some(object) = objects.get(&record.uid).cloned() else {
                    continue;
                };
                if let Some(waiting) = pending_deletions.get(&record.uid) {
                    // Asked already; its finalizers decide when it goes. Never asked twice.
                    batch.waiting = true;
                    let waited = Timestamp::now().duration_since(waiting.since);
                    if waited.unsigned_abs() > context.deletion_stuck_after {
                        batch.stuck.push(format!(
                            "{} waits for {}",
                            described(&record),
                            waiting.finalizers.join(", ")
                        ));
                    }
                    continue;
                }
                note(next, LedgerAction::Deleting, &record, "about to be deleted");
                batch.doomed.push(Doomed {
                    bytes: bytes.remove(&record.uid),
                    record,
                    object,
                });
            }
        }
    }
    Ok(Prepared::Ready(batch))
}

/// The second half of a pass: the announced deletes, each rechecked for the Lease, preceded by
/// an Event and guarded by UID and resourceVersion. Their outcomes go into `next`'s ledger.
pub async fn execute(
    batch: Batch,
    footprint: &Footprint,
    context: &Context,
    next: &mut FootprintStatus,
) -> Result<Pass> {
    let about = cluster_reference(&footprint.spec.identity);
    let mut asked = batch.waiting;
    let mut doomed = batch.doomed.into_iter();
    let mut stopped = None;
    for Doomed {
        record,
        object,
        bytes,
    } in doomed.by_ref()
    {
        if !context.may_write() {
            unannounce(next, &record);
            stopped = Some(Ok(Pass::InProgress {
                stuck: batch.stuck.clone(),
            }));
            break;
        }
        let (answer, failure) = delete(context, &about, &record, &object).await?;
        context
            .metrics()
            .wrote(WriteKind::HostObjectDelete, answer.label());
        match after_delete(answer) {
            AfterDelete::Asked => {
                asked = true;
                context.metrics().reclaimed(record.class, bytes);
                tracing::info!(object = %described(&record), "delete asked");
            }
            AfterDelete::Gone => confirmed_gone(next, &record),
            AfterDelete::Replan => {
                unannounce(next, &record);
                asked = true;
            }
            AfterDelete::Keep(reason) => {
                keep(context, &about, next, &record, Some(&object), reason).await?;
            }
            AfterDelete::Hold(reason) => {
                unannounce(next, &record);
                stopped = Some(Ok(Pass::Held(reason)));
                break;
            }
            // It may have gone: the announcement stays for the next pass's live read.
            AfterDelete::Retry => {
                stopped = failure.map(Err);
                break;
            }
            AfterDelete::Fail => {
                unannounce(next, &record);
                stopped = failure.map(Err);
                break;
            }
        }
    }
    // What the batch did not reach was not asked.
    for Doomed { record, .. } in doomed {
        unannounce(next, &record);
    }
    stopped.unwrap_or(Ok(if asked {
        Pass::InProgress { stuck: batch.stuck }
    } else {
        Pass::Done
    }))
}

/// Of an adopted Footprint's objects found live, those a live audit (against every other
/// Footprint) no longer finds orphans.
pub async fn no_longer_orphans(
    harvesters: &crate::management::harvesters::Harvesters,
    footprints: &Api<Footprint>,
    footprint: &Footprint,
    records: &[HostObjectRecord],
    objects: &BTreeMap<String, LiveObject>,
) -> Result<BTreeSet<String>> {
    let others: Vec<Footprint> = footprints
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: "cannot list the Footprints".to_owned(),
            source,
        })?
        .items
        .into_iter()
        .filter(|other| other.name_any() != footprint.name_any())
        .collect();
    let credentials = records
        .iter()
        .map(|record| record.cloud_credential.clone())
        .collect();
    let report = crate::inspect::audit::audit_with(harvesters, &others, &credentials).await?;
    let orphans: BTreeSet<&str> = report
        .findings
        .iter()
        .filter(|found| found.finding.verdict == gleaner_core::audit::Verdict::Orphan)
        .map(|found| found.finding.uid.as_str())
        .collect();
    Ok(records
        .iter()
        .filter(|record| {
            objects.contains_key(&record.uid) && !orphans.contains(record.uid.as_str())
        })
        .map(|record| record.uid.clone())
        .collect())
}

/// What a live read of both Cluster objects says of the recorded cluster.
pub struct Confirmation {
    /// The deletion is confirmed (design.md §5).
    pub confirmed: bool,
    /// Both Cluster objects exist, each with another UID: re-created, as by a Rancher restore.
    pub identity_changed: bool,
}

impl Confirmation {
    /// The live read of [`Confirmation::read`]; for an adopted Footprint, which stands for no
    /// cluster, the adoption itself (its objects are confirmed one by one, by a live audit).
    pub async fn of(
        client: &kube::Client,
        capi: &Capi,
        footprint: &Footprint,
        recorded: &ClusterIdentity,
    ) -> Result<Self> {
        if footprint.spec.adopted.is_some() {
            return Ok(Self {
                confirmed: true,
                identity_changed: false,
            });
        }
        Self::read(client, capi, recorded).await
    }

    pub async fn read(
        client: &kube::Client,
        capi: &Capi,
        recorded: &ClusterIdentity,
    ) -> Result<Self> {
        let live = Clusters::live(client, capi, &recorded.namespace, &recorded.name).await?;
        let other_uid = |cluster: &Option<DynamicObject>, uid: &str| {
            cluster
                .as_ref()
                .is_some_and(|cluster| cluster.uid().as_deref() != Some(uid))
        };
        Ok(Self {
            confirmed: confirm_deletion(recorded, &live.observation()) == Deletion::Confirmed,
            identity_changed: other_uid(&live.provisioning, &recorded.provisioning_uid)
                && other_uid(&live.capi, &recorded.capi_uid),
        })
    }
}

/// What a Footprint itself says about its cluster, beside the live reads: its annotations, its
/// conditions and the denials in its ledger.
pub struct Marks {
    frozen: bool,
    opted_out: bool,
    footprint_retention: Retention,
    vms_gone_by_operator: bool,
    denied: BTreeSet<String>,
}

/// No live object and no other Footprint's UIDs: the facts before the objects are read.
static NOTHING_LIVE: BTreeMap<String, LiveObject> = BTreeMap::new();
static NO_UIDS: BTreeSet<String> = BTreeSet::new();

impl Marks {
    pub fn of(footprint: &Footprint, status: &FootprintStatus) -> Self {
        let annotation = |key: &str| footprint.annotations().get(key).map(String::as_str);
        Self {
            frozen: is_true(&status.conditions, ConditionType::Frozen),
            opted_out: is_true(&status.conditions, ConditionType::OptedOut),
            footprint_retention: retention(annotation(keys::RETAIN_ANNOTATION)),
            // An operator's adoption says as much: its objects belong to no VM.
            vms_gone_by_operator: footprint.spec.adopted.is_some()
                || annotation(keys::VMS_GONE_ANNOTATION)
                    .is_some_and(|value| parse_bool(value) == Ok(true)),
            denied: ledger_kept(status, KeepReason::Denied),
        }
    }

    /// The facts of a pass from these marks and the recorded VMs as read live: not confirmed,
    /// no grace period started, nothing read of the objects yet, as of now.
    pub fn facts<'a>(
        &'a self,
        vms: &'a [RecordedVm],
        policy_max_age: Duration,
    ) -> ReclaimFacts<'a> {
        ReclaimFacts {
            confirmed: false,
            identity_changed: false,
            frozen: self.frozen,
            opted_out: self.opted_out,
            footprint_retention: self.footprint_retention.clone(),
            vms_gone_by_operator: self.vms_gone_by_operator,
            deletions_begin: None,
            vms,
            records: &[],
            live: &NOTHING_LIVE,
            other_footprints: &NO_UIDS,
            denied: &self.denied,
            unorphaned: &NO_UIDS,
            now: Timestamp::now(),
            policy_max_age,
        }
    }
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

pub fn described(record: &HostObjectRecord) -> String {
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
    // An announcement stays until its object is confirmed gone; the oldest outcomes fold.
    while ledger.entries.len() > LEDGER_KEPT
        && let Some(oldest) = ledger
            .entries
            .iter()
            .position(|entry| entry.action != LedgerAction::Deleting)
    {
        match ledger.entries.remove(oldest).action {
            LedgerAction::Deleted => ledger.folded_deletions += 1,
            LedgerAction::Kept => ledger.folded_keeps += 1,
            LedgerAction::Deleting => unreachable!("announcements are not folded"),
        }
    }
}

/// Takes back the announcement of a delete not made.
fn unannounce(next: &mut FootprintStatus, record: &HostObjectRecord) {
    let object = described(record);
    if let Some(ledger) = &mut next.ledger {
        ledger
            .entries
            .retain(|entry| !(entry.object == object && entry.action == LedgerAction::Deleting));
    }
}

/// A live read found no object of the record's name: deleted by gleaner when it announced
/// the delete, else found gone.
fn confirmed_gone(next: &mut FootprintStatus, record: &HostObjectRecord) {
    let announced = in_ledger(next, record, LedgerAction::Deleting);
    unannounce(next, record);
    let reason = if announced { "reclaimed" } else { "found gone" };
    note(next, LedgerAction::Deleted, record, reason);
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
    // A delete announced in an earlier pass that did not happen is not one now.
    unannounce(next, record);
    if in_ledger(next, record, LedgerAction::Kept) {
        return Ok(());
    }
    if reason != KeepReason::Replaced
        && let Some(object) = object
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
    context
        .event_on(about, record, EventReason::Kept, note_text)
        .await;
    context.metrics().kept(record.class, reason);
    note(next, LedgerAction::Kept, record, reason.as_str());
    Ok(())
}

/// Deletes an object with its UID and resourceVersion as preconditions, after an Event saying
/// what and why: the answer, with the error behind it when it failed.
async fn delete(
    context: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    record: &HostObjectRecord,
    object: &LiveObject,
) -> Result<(DeleteAnswer, Option<Error>)> {
    let note_text = format!(
        "deleting {}: the cluster's deletion is confirmed and nothing protects it",
        described(record)
    );
    context
        .event_on(about, record, EventReason::Deleting, note_text)
        .await;
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
    let source = match result {
        Ok(_) => return Ok((DeleteAnswer::Accepted, None)),
        Err(source) => source,
    };
    let answer = answer_of(&source);
    let failure = Error::Kube {
        context: format!("cannot delete {}", described(record)),
        source,
    };
    Ok((answer, Some(failure)))
}

/// What a failed delete means for the object.
fn answer_of(error: &kube::Error) -> DeleteAnswer {
    match ApiFailure::of(error) {
        ApiFailure::NotFound => DeleteAnswer::NotFound,
        ApiFailure::Conflict => DeleteAnswer::Conflict,
        ApiFailure::Rejected | ApiFailure::Forbidden if denied_by_webhook(error) => {
            DeleteAnswer::Denied
        }
        ApiFailure::ServerError if webhook_not_called(error) => {
            DeleteAnswer::WebhookUnavailable(error.to_string())
        }
        ApiFailure::Unreachable | ApiFailure::ServerError => DeleteAnswer::Unanswered,
        ApiFailure::Forbidden | ApiFailure::Rejected | ApiFailure::Other => DeleteAnswer::Refused,
    }
}

/// Whether the apiserver could not call an admission webhook (it then fails closed).
fn webhook_not_called(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.message.contains("failed calling webhook"))
}

/// Whether an admission webhook refused the delete (as Harvester's PVC webhook does).
fn denied_by_webhook(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.message.contains("admission webhook"))
}

#[cfg(test)]
mod tests {
    use gleaner_core::attribution::ObjectClass;

    use super::*;

    fn record(uid: &str) -> HostObjectRecord {
        HostObjectRecord {
            cloud_credential: "cattle-global-data:hv".into(),
            namespace: "vms".into(),
            name: format!("pvc-{uid}"),
            uid: uid.into(),
            class: ObjectClass::Volume,
            evidence: Vec::new(),
            guest_cluster_hint: None,
            conflicts: Vec::new(),
            guest_policy: None,
        }
    }

    fn actions(status: &FootprintStatus) -> Vec<(String, LedgerAction, String)> {
        status
            .ledger
            .iter()
            .flat_map(|ledger| &ledger.entries)
            .map(|entry| (entry.object.clone(), entry.action, entry.reason.clone()))
            .collect()
    }

    #[test]
    fn an_announced_delete_found_gone_is_reclaimed_and_an_unannounced_one_found_gone() {
        let mut status = FootprintStatus::default();
        note(&mut status, LedgerAction::Deleting, &record("a"), "about");
        confirmed_gone(&mut status, &record("a"));
        confirmed_gone(&mut status, &record("b"));
        // Once each, however many passes find them gone.
        confirmed_gone(&mut status, &record("a"));
        assert_eq!(
            actions(&status),
            [
                (
                    described(&record("a")),
                    LedgerAction::Deleted,
                    "reclaimed".into()
                ),
                (
                    described(&record("b")),
                    LedgerAction::Deleted,
                    "found gone".into()
                ),
            ]
        );
        assert_eq!(uid_of(&described(&record("a"))).as_deref(), Some("a"));
    }

    #[test]
    fn a_delete_not_made_leaves_no_announcement() {
        let mut status = FootprintStatus::default();
        note(&mut status, LedgerAction::Deleting, &record("a"), "about");
        unannounce(&mut status, &record("a"));
        assert!(actions(&status).is_empty());
    }

    #[test]
    fn the_ledger_folds_its_oldest_outcomes_but_never_an_announcement() {
        let mut status = FootprintStatus::default();
        note(
            &mut status,
            LedgerAction::Deleting,
            &record("pending"),
            "about",
        );
        for index in 0..LEDGER_KEPT + 5 {
            note(
                &mut status,
                LedgerAction::Kept,
                &record(&format!("k{index}")),
                "Conflict",
            );
        }
        let ledger = status.ledger.clone().unwrap();
        assert_eq!(ledger.entries.len(), LEDGER_KEPT);
        assert_eq!(ledger.folded_keeps, 6);
        assert_eq!(ledger.entries[0].action, LedgerAction::Deleting);
    }

    #[test]
    fn a_webhook_that_cannot_be_called_is_told_from_one_that_refuses() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure(message, "").with_code(code),
            ))
        };
        for (error, answer) in [
            (
                status(
                    400,
                    "admission webhook \"pvc.harvesterhci.io\" denied the request",
                ),
                DeleteAnswer::Denied,
            ),
            (
                status(409, "the object has been modified"),
                DeleteAnswer::Conflict,
            ),
            (status(404, "not found"), DeleteAnswer::NotFound),
            (
                status(503, "the server is currently unable"),
                DeleteAnswer::Unanswered,
            ),
            (status(403, "forbidden"), DeleteAnswer::Refused),
        ] {
            assert_eq!(answer_of(&error), answer, "{error}");
        }
        let down = status(
            500,
            "Internal error occurred: failed calling webhook \"pvc.harvesterhci.io\": connection refused",
        );
        assert!(matches!(
            answer_of(&down),
            DeleteAnswer::WebhookUnavailable(_)
        ));
    }
}
