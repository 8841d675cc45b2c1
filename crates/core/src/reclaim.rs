//! What becomes of each recorded host object of a cluster whose deletion is confirmed
//! (design.md §5 and safety rules 1–6): the whole cluster is held, or each object is deleted,
//! kept (final) or already gone, each with its reason. Decided from live facts only.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use jiff::Timestamp;

use crate::{
    Retention,
    attribution::{HostKind, HostObjectRecord, ObjectClass},
    guest::{PolicyAt, policy_at},
};

/// Why nothing of the cluster is deleted in this pass (temporary: nothing is written on the
/// objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// The live read at the start of this pass did not confirm the deletion.
    NotConfirmed,
    /// The Footprint never recorded a VM: an empty list is not "all gone".
    NoVmsRecorded,
    /// Recorded VMs still run (no deletionTimestamp): their names.
    VmsRunning(Vec<String>),
    /// The cluster is paused.
    Frozen,
    /// `gleaner.io/retain` on the Footprint (or a value that does not parse).
    FootprintRetained,
    /// Every Cluster UID differs while recorded VMs still run, as after a Rancher restore.
    IdentityChanged,
    /// The grace period (`--grace-period`, from the start stored in the Footprint) runs: no
    /// deletion before `until`.
    GracePeriod {
        /// When deletions may begin.
        until: Timestamp,
    },
    /// gleaner runs with `--dry-run`: what it would do is in `status.would`.
    DryRun,
    /// Harvester's admission webhook could not be called (a 5xx naming it): the rest of the
    /// batch waits for it to return.
    WebhookUnavailable(String),
}

impl HoldReason {
    /// The variant's name, for tooling (`gleaner plan -o json`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotConfirmed => "NotConfirmed",
            Self::NoVmsRecorded => "NoVmsRecorded",
            Self::VmsRunning(_) => "VmsRunning",
            Self::Frozen => "Frozen",
            Self::FootprintRetained => "FootprintRetained",
            Self::IdentityChanged => "IdentityChanged",
            Self::GracePeriod { .. } => "GracePeriod",
            Self::DryRun => "DryRun",
            Self::WebhookUnavailable(_) => "WebhookUnavailable",
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConfirmed => f.write_str("the deletion is not confirmed by a live read"),
            Self::NoVmsRecorded => f.write_str(
                "the Footprint never recorded a VM: an operator who knows them gone annotates it \
                 gleaner.io/vms-gone=true",
            ),
            Self::VmsRunning(vms) => write!(f, "VMs not deleting yet: {}", vms.join(", ")),
            Self::Frozen => f.write_str("the cluster is paused"),
            Self::FootprintRetained => f.write_str("the Footprint carries gleaner.io/retain"),
            Self::IdentityChanged => {
                f.write_str("every Cluster UID differs while recorded VMs run (a Rancher restore?)")
            }
            Self::GracePeriod { until } => write!(
                f,
                "the grace period runs: deletions begin at {until}; gleaner.io/retain on a \
                 volume or on the Footprint until then keeps it"
            ),
            Self::DryRun => f.write_str(
                "a dry run: nothing is deleted or kept; status.would lists what would be",
            ),
            Self::WebhookUnavailable(message) => {
                write!(f, "Harvester's admission webhook is unavailable: {message}")
            }
        }
    }
}

/// Why an object stays for good; written as `gleaner.io/kept`, its wire name the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeepReason {
    /// The live object has another UID than the record: it was replaced; nothing is written on
    /// the new one.
    Replaced,
    /// A PVC attached to a VM this Footprint does not record.
    AttachedElsewhere,
    /// Owned by a VM this Footprint does not record.
    OwnedElsewhere,
    /// Its guest policy was last seen `Retain`.
    GuestRetain,
    /// Its guest policy was never seen.
    PolicyNeverSeen,
    /// Its guest policy was seen `Delete` longer ago than `--policy-max-age`.
    PolicyStale,
    /// `gleaner.io/retain` on it.
    RetainAnnotation,
    /// `gleaner.io/retain` on it does not parse: kept as if true.
    RetainAnnotationMalformed,
    /// Tied to another cluster too.
    Conflict,
    /// Another Footprint records its UID (a live list just before deleting).
    OtherFootprint,
    /// The cluster opted out of cleanup.
    OptedOut,
    /// Harvester's admission webhook denied its deletion.
    Denied,
    /// Adopted as an orphan, but a live audit just before its delete no longer finds it one
    /// (attached to a VM since, recorded by a cluster, marked).
    NoLongerOrphan,
    /// A snapshot or NetworkFilesystem of a kept volume.
    VolumeKept,
    /// A volume whose snapshot is kept.
    SnapshotKept,
}

impl KeepReason {
    /// The wire name, as written on the object.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaced => "Replaced",
            Self::AttachedElsewhere => "AttachedElsewhere",
            Self::OwnedElsewhere => "OwnedElsewhere",
            Self::GuestRetain => "GuestRetain",
            Self::PolicyNeverSeen => "PolicyNeverSeen",
            Self::PolicyStale => "PolicyStale",
            Self::RetainAnnotation => "RetainAnnotation",
            Self::RetainAnnotationMalformed => "RetainAnnotationMalformed",
            Self::Conflict => "Conflict",
            Self::OtherFootprint => "OtherFootprint",
            Self::OptedOut => "OptedOut",
            Self::Denied => "Denied",
            Self::NoLongerOrphan => "NoLongerOrphan",
            Self::VolumeKept => "VolumeKept",
            Self::SnapshotKept => "SnapshotKept",
        }
    }
}

/// What becomes of one recorded object in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delete it, guarded by its UID and resourceVersion.
    Delete,
    /// Keep it for good.
    Keep(KeepReason),
    /// No object of its name exists: nothing to do.
    Gone,
}

/// What Harvester answered to a delete, told apart by what it means for the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteAnswer {
    /// Accepted: the object is gone or waits on its finalizers.
    Accepted,
    /// No object of that name.
    NotFound,
    /// A precondition (UID or resourceVersion) failed: the object changed since it was read.
    Conflict,
    /// Harvester's admission webhook refused it.
    Denied,
    /// The admission webhook could not be called; it fails closed, so nothing was deleted.
    WebhookUnavailable(String),
    /// A transport failure, a timeout or another 5xx: it may or may not have happened.
    Unanswered,
    /// Unauthorized, forbidden or otherwise refused: nothing was deleted.
    Refused,
}

impl DeleteAnswer {
    /// The `result` label of the delete counter.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted => "ok",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Denied => "denied",
            Self::WebhookUnavailable(_) | Self::Unanswered => "unavailable",
            Self::Refused => "refused",
        }
    }
}

/// What follows a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterDelete {
    /// Asked: a later live read confirms it gone (its finalizers decide when); never asked
    /// again.
    Asked,
    /// Nothing of that name: gone.
    Gone,
    /// Nothing was deleted and the object changed: read it and plan it again.
    Replan,
    /// Keep it for good.
    Keep(KeepReason),
    /// Nothing was deleted; the rest of the batch waits, the whole cluster held.
    Hold(HoldReason),
    /// Stop the batch. Whether it was deleted is unknown: the next pass's live read tells.
    Retry,
    /// Stop the batch: nothing was deleted and gleaner may not delete it.
    Fail,
}

/// What a delete's answer leads to.
pub fn after_delete(answer: DeleteAnswer) -> AfterDelete {
    match answer {
        DeleteAnswer::Accepted => AfterDelete::Asked,
        DeleteAnswer::NotFound => AfterDelete::Gone,
        DeleteAnswer::Conflict => AfterDelete::Replan,
        DeleteAnswer::Denied => AfterDelete::Keep(KeepReason::Denied),
        DeleteAnswer::WebhookUnavailable(message) => {
            AfterDelete::Hold(HoldReason::WebhookUnavailable(message))
        }
        DeleteAnswer::Unanswered => AfterDelete::Retry,
        DeleteAnswer::Refused => AfterDelete::Fail,
    }
}

/// A recorded VM as a live read shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// It exists without a deletionTimestamp.
    Running,
    /// It carries a deletionTimestamp (which cannot be taken back).
    Deleting,
    /// No VM with its UID exists.
    Gone,
}

/// A VM the Footprint records, as a live read shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVm {
    /// `namespace/name`, for people.
    pub name: String,
    /// The UID the Footprint recorded.
    pub uid: String,
    /// What the live read shows of the VM with that UID.
    pub state: VmState,
}

/// A recorded object as a live read just before deleting shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveObject {
    /// Its UID now.
    pub uid: String,
    /// Its resourceVersion, for the delete's precondition.
    pub resource_version: String,
    /// `gleaner.io/retain` on it.
    pub retention: Option<Retention>,
    /// For a PVC, the UIDs of the VMs that list it as a volume.
    pub attached_to: Vec<String>,
    /// The UIDs of the VMs that own it.
    pub owned_by: Vec<String>,
    /// It carries a deletionTimestamp: its delete was asked already, its finalizers decide.
    pub deleting: bool,
}

/// Everything the plan for one Footprint rests on, read live at the start of the pass.
#[derive(Debug, Clone)]
pub struct ReclaimFacts<'a> {
    /// The live read confirmed the deletion (design.md §5).
    pub confirmed: bool,
    /// Every Cluster UID differs from the record while recorded VMs run.
    pub identity_changed: bool,
    /// The cluster is paused.
    pub frozen: bool,
    /// The cluster opted out.
    pub opted_out: bool,
    /// `gleaner.io/retain` on the Footprint.
    pub footprint_retention: Retention,
    /// An operator said, with `gleaner.io/vms-gone: "true"` on the Footprint, that the cluster's
    /// VMs are gone: releases the `NoVmsRecorded` hold only.
    pub vms_gone_by_operator: bool,
    /// When the grace period lets deletions begin; `None` while it has not started.
    pub deletions_begin: Option<Timestamp>,
    /// Each VM the Footprint records.
    pub vms: &'a [RecordedVm],
    /// The recorded objects.
    pub records: &'a [HostObjectRecord],
    /// Each recorded object (by record UID) as found by name now; absent when not found.
    pub live: &'a BTreeMap<String, LiveObject>,
    /// The UIDs other Footprints record, from a live list.
    pub other_footprints: &'a BTreeSet<String>,
    /// The UIDs whose deletion Harvester's webhook denied.
    pub denied: &'a BTreeSet<String>,
    /// Of an adopted Footprint's objects, the UIDs a live audit no longer finds orphans.
    pub unorphaned: &'a BTreeSet<String>,
    /// Now, and how old a guest policy may be.
    pub now: Timestamp,
    /// `--policy-max-age`.
    pub policy_max_age: Duration,
}

/// The plan for one Footprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is deleted or kept in this pass.
    Hold(HoldReason),
    /// Each recorded object's verdict, in the order of deletion: snapshots, NetworkFilesystems,
    /// PVCs, load balancers.
    Act(Vec<(HostObjectRecord, Verdict)>),
}

/// The order of deletion (design.md §5).
fn order(kind: HostKind) -> u8 {
    match kind {
        HostKind::VolumeSnapshot => 0,
        HostKind::NetworkFilesystem => 1,
        HostKind::PersistentVolumeClaim => 2,
        HostKind::LoadBalancer => 3,
    }
}

/// Plans what becomes of a cluster's recorded objects.
pub fn plan(facts: &ReclaimFacts<'_>) -> Plan {
    if let Some(hold) = hold(facts) {
        return Plan::Hold(hold);
    }
    let mut verdicts: BTreeMap<&str, Verdict> = facts
        .records
        .iter()
        .map(|record| (record.uid.as_str(), own_verdict(facts, record)))
        .collect();
    protect_related(facts.records, &mut verdicts);
    let mut steps: Vec<(HostObjectRecord, Verdict)> = facts
        .records
        .iter()
        .map(|record| (record.clone(), verdicts[record.uid.as_str()]))
        .collect();
    steps.sort_by_key(|(record, _)| (order(record.kind()), record.uid.clone()));
    Plan::Act(steps)
}

/// What a pass would decide were the cluster's deletion confirmed now, its VMs deleting and
/// the grace period over: the question `gleaner plan` asks about a living cluster. The plan
/// itself is [`plan`]'s, so it can never tell a story the reclaimer would not.
pub fn plan_if_deleted(facts: &ReclaimFacts<'_>) -> Plan {
    let vms: Vec<RecordedVm> = facts
        .vms
        .iter()
        .map(|vm| RecordedVm {
            state: match vm.state {
                VmState::Running => VmState::Deleting,
                state => state,
            },
            ..vm.clone()
        })
        .collect();
    plan(&ReclaimFacts {
        confirmed: true,
        identity_changed: false,
        deletions_begin: Some(facts.now),
        vms: &vms,
        ..facts.clone()
    })
}

fn hold(facts: &ReclaimFacts<'_>) -> Option<HoldReason> {
    if !facts.confirmed {
        return Some(HoldReason::NotConfirmed);
    }
    if facts.frozen {
        return Some(HoldReason::Frozen);
    }
    if facts.footprint_retention.holds() {
        return Some(HoldReason::FootprintRetained);
    }
    if facts.vms.is_empty() && !facts.vms_gone_by_operator {
        return Some(HoldReason::NoVmsRecorded);
    }
    let running: Vec<String> = facts
        .vms
        .iter()
        .filter(|vm| vm.state == VmState::Running)
        .map(|vm| vm.name.clone())
        .collect();
    if facts.identity_changed && !running.is_empty() {
        return Some(HoldReason::IdentityChanged);
    }
    if !running.is_empty() {
        return Some(HoldReason::VmsRunning(running));
    }
    match facts.deletions_begin {
        None => Some(HoldReason::GracePeriod { until: facts.now }),
        Some(until) if facts.now < until => Some(HoldReason::GracePeriod { until }),
        Some(_) => None,
    }
}

/// The verdict from the object's own facts alone.
fn own_verdict(facts: &ReclaimFacts<'_>, record: &HostObjectRecord) -> Verdict {
    let Some(live) = facts.live.get(&record.uid) else {
        return Verdict::Gone;
    };
    let keep = if live.uid != record.uid {
        Some(KeepReason::Replaced)
    } else if facts.opted_out {
        Some(KeepReason::OptedOut)
    } else if !record.deletable() {
        Some(KeepReason::Conflict)
    } else if facts.other_footprints.contains(&record.uid) {
        Some(KeepReason::OtherFootprint)
    } else if let Some(reason) = foreign_vm(facts, live) {
        Some(reason)
    } else if let Some(reason) = retained(live) {
        Some(reason)
    } else if facts.denied.contains(&record.uid) {
        Some(KeepReason::Denied)
    } else if facts.unorphaned.contains(&record.uid) {
        Some(KeepReason::NoLongerOrphan)
    } else {
        guest_policy(facts, record)
    };
    keep.map_or(Verdict::Delete, Verdict::Keep)
}

/// A VM the Footprint does not record holds the object: never delete it, even a deleting VM's
/// (safety rule 2).
fn foreign_vm(facts: &ReclaimFacts<'_>, live: &LiveObject) -> Option<KeepReason> {
    let foreign = |uid: &String| !facts.vms.iter().any(|vm| vm.uid == *uid);
    if live.attached_to.iter().any(foreign) {
        Some(KeepReason::AttachedElsewhere)
    } else if live.owned_by.iter().any(foreign) {
        Some(KeepReason::OwnedElsewhere)
    } else {
        None
    }
}

fn retained(live: &LiveObject) -> Option<KeepReason> {
    match live.retention {
        Some(Retention::Retained) => Some(KeepReason::RetainAnnotation),
        Some(Retention::Malformed { .. }) => Some(KeepReason::RetainAnnotationMalformed),
        Some(Retention::NotRetained) | None => None,
    }
}

/// Volumes and snapshots go only when their guest policy, recently seen, says `Delete`; an
/// adopted orphan's guest is gone, and the operator's confirmation stands in for it.
fn guest_policy(facts: &ReclaimFacts<'_>, record: &HostObjectRecord) -> Option<KeepReason> {
    if adopted(record) {
        return None;
    }
    if !matches!(
        record.class,
        ObjectClass::Volume | ObjectClass::RwxVolume | ObjectClass::Snapshot
    ) {
        return None;
    }
    match policy_at(record.guest_policy, facts.now, facts.policy_max_age) {
        PolicyAt::Delete => None,
        PolicyAt::Retain => Some(KeepReason::GuestRetain),
        PolicyAt::NeverSeen => Some(KeepReason::PolicyNeverSeen),
        PolicyAt::Stale { .. } => Some(KeepReason::PolicyStale),
    }
}

fn adopted(record: &HostObjectRecord) -> bool {
    record
        .evidence
        .iter()
        .any(|evidence| matches!(evidence, crate::attribution::Evidence::Adopted { .. }))
}

/// A kept volume keeps its snapshots and NetworkFilesystem; a kept snapshot keeps its source
/// volume (and so that volume's NetworkFilesystem).
fn protect_related<'a>(records: &'a [HostObjectRecord], verdicts: &mut BTreeMap<&'a str, Verdict>) {
    use crate::attribution::Evidence;
    let kept = |verdicts: &BTreeMap<&str, Verdict>, uid: &str| {
        matches!(verdicts.get(uid), Some(Verdict::Keep(_)))
    };
    // Snapshots first keep their sources, then volumes keep what hangs on them.
    for record in records
        .iter()
        .filter(|record| record.class == ObjectClass::Snapshot)
    {
        if !kept(verdicts, &record.uid) {
            continue;
        }
        for evidence in &record.evidence {
            if let Evidence::SnapshotOf { pvc_uid } = evidence
                && let Some(verdict) = verdicts.get_mut(pvc_uid.as_str())
                && *verdict == Verdict::Delete
            {
                *verdict = Verdict::Keep(KeepReason::SnapshotKept);
            }
        }
    }
    for record in records {
        let sources: Vec<&str> = record
            .evidence
            .iter()
            .filter_map(|evidence| match evidence {
                Evidence::VolumeOf { pvc_uid } | Evidence::SnapshotOf { pvc_uid } => {
                    Some(pvc_uid.as_str())
                }
                _ => None,
            })
            .collect();
        if sources.iter().any(|source| kept(verdicts, source))
            && verdicts.get(record.uid.as_str()) == Some(&Verdict::Delete)
        {
            verdicts.insert(record.uid.as_str(), Verdict::Keep(KeepReason::VolumeKept));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        attribution::Evidence,
        guest::{GuestPolicy, PolicySeen},
    };

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn seen(policy: GuestPolicy, days_ago: i64) -> Option<PolicySeen> {
        Some(PolicySeen {
            policy,
            seen_at: Timestamp::from_second(1_800_000_000 - days_ago * 24 * 3600).unwrap(),
        })
    }

    fn record(uid: &str, class: ObjectClass, evidence: Vec<Evidence>) -> HostObjectRecord {
        HostObjectRecord {
            cloud_credential: "cattle-global-data:hv".into(),
            namespace: "vms".into(),
            name: format!("name-{uid}"),
            uid: uid.into(),
            class,
            evidence,
            guest_cluster_hint: None,
            conflicts: Vec::new(),
            guest_policy: seen(GuestPolicy::Delete, 0),
        }
    }

    fn volume(uid: &str) -> HostObjectRecord {
        record(
            uid,
            ObjectClass::Volume,
            vec![Evidence::HotPlugged {
                vm_uid: "vm-1".into(),
            }],
        )
    }

    fn live_as_recorded(records: &[HostObjectRecord]) -> BTreeMap<String, LiveObject> {
        records
            .iter()
            .map(|record| {
                (
                    record.uid.clone(),
                    LiveObject {
                        uid: record.uid.clone(),
                        resource_version: "1".into(),
                        ..LiveObject::default()
                    },
                )
            })
            .collect()
    }

    fn vms(state: VmState) -> Vec<RecordedVm> {
        vec![RecordedVm {
            name: "vms/vm-1".into(),
            uid: "vm-1".into(),
            state,
        }]
    }

    fn facts<'a>(
        vms: &'a [RecordedVm],
        records: &'a [HostObjectRecord],
        live: &'a BTreeMap<String, LiveObject>,
        none: &'a BTreeSet<String>,
    ) -> ReclaimFacts<'a> {
        ReclaimFacts {
            confirmed: true,
            identity_changed: false,
            frozen: false,
            opted_out: false,
            footprint_retention: Retention::NotRetained,
            vms_gone_by_operator: false,
            deletions_begin: Some(now()),
            vms,
            records,
            live,
            other_footprints: none,
            denied: none,
            unorphaned: none,
            now: now(),
            policy_max_age: WEEK,
        }
    }

    fn verdicts(plan: Plan) -> Vec<(String, Verdict)> {
        match plan {
            Plan::Act(steps) => steps
                .into_iter()
                .map(|(record, verdict)| (record.uid, verdict))
                .collect(),
            Plan::Hold(reason) => panic!("held: {reason}"),
        }
    }

    #[test]
    fn a_confirmed_deletion_deletes_snapshots_then_filesystems_then_volumes_then_balancers() {
        let records = [
            record(
                "lb",
                ObjectClass::LoadBalancer,
                vec![Evidence::GuestService {
                    service_uid: "svc".into(),
                }],
            ),
            volume("pvc"),
            record(
                "nfs",
                ObjectClass::NetworkFilesystem,
                vec![Evidence::VolumeOf {
                    pvc_uid: "pvc".into(),
                }],
            ),
            record(
                "snap",
                ObjectClass::Snapshot,
                vec![Evidence::SnapshotOf {
                    pvc_uid: "pvc".into(),
                }],
            ),
        ];
        let live = live_as_recorded(&records);
        let none = BTreeSet::new();
        let vms = vms(VmState::Deleting);
        assert_eq!(
            verdicts(plan(&facts(&vms, &records, &live, &none))),
            [
                ("snap".to_owned(), Verdict::Delete),
                ("nfs".to_owned(), Verdict::Delete),
                ("pvc".to_owned(), Verdict::Delete),
                ("lb".to_owned(), Verdict::Delete),
            ]
        );
    }

    #[test]
    fn the_whole_cluster_holds_until_confirmed_every_vm_deleting_unpaused_unretained_and_past_its_grace()
     {
        let records = [volume("pvc")];
        let live = live_as_recorded(&records);
        let none = BTreeSet::new();
        let deleting = vms(VmState::Deleting);
        let running = vms(VmState::Running);
        let base = facts(&deleting, &records, &live, &none);
        let later = now() + jiff::SignedDuration::from_secs(60);
        for (facts, hold) in [
            (
                ReclaimFacts {
                    confirmed: false,
                    ..base.clone()
                },
                HoldReason::NotConfirmed,
            ),
            (
                ReclaimFacts {
                    vms: &running,
                    ..base.clone()
                },
                HoldReason::VmsRunning(vec!["vms/vm-1".into()]),
            ),
            (
                ReclaimFacts {
                    vms: &[],
                    ..base.clone()
                },
                HoldReason::NoVmsRecorded,
            ),
            (
                ReclaimFacts {
                    frozen: true,
                    ..base.clone()
                },
                HoldReason::Frozen,
            ),
            (
                ReclaimFacts {
                    footprint_retention: Retention::Malformed {
                        value: "yes".into(),
                    },
                    ..base.clone()
                },
                HoldReason::FootprintRetained,
            ),
            (
                ReclaimFacts {
                    vms: &running,
                    identity_changed: true,
                    ..base.clone()
                },
                HoldReason::IdentityChanged,
            ),
            (
                ReclaimFacts {
                    deletions_begin: Some(later),
                    ..base.clone()
                },
                HoldReason::GracePeriod { until: later },
            ),
            (
                ReclaimFacts {
                    deletions_begin: None,
                    ..base.clone()
                },
                HoldReason::GracePeriod { until: now() },
            ),
        ] {
            assert_eq!(plan(&facts), Plan::Hold(hold));
        }
        let gone = vms(VmState::Gone);
        assert!(matches!(
            plan(&ReclaimFacts {
                vms: &gone,
                ..base.clone()
            }),
            Plan::Act(_)
        ));
    }

    #[test]
    fn a_delete_is_never_repeated_on_a_guess_and_only_a_refusal_by_the_webhook_keeps() {
        let unavailable = DeleteAnswer::WebhookUnavailable("connection refused".into());
        for (answer, after, label) in [
            (DeleteAnswer::Accepted, AfterDelete::Asked, "ok"),
            (DeleteAnswer::NotFound, AfterDelete::Gone, "not_found"),
            (DeleteAnswer::Conflict, AfterDelete::Replan, "conflict"),
            (
                DeleteAnswer::Denied,
                AfterDelete::Keep(KeepReason::Denied),
                "denied",
            ),
            (
                unavailable.clone(),
                AfterDelete::Hold(HoldReason::WebhookUnavailable("connection refused".into())),
                "unavailable",
            ),
            (DeleteAnswer::Unanswered, AfterDelete::Retry, "unavailable"),
            (DeleteAnswer::Refused, AfterDelete::Fail, "refused"),
        ] {
            assert_eq!(answer.label(), label);
            assert_eq!(after_delete(answer), after);
        }
    }

    #[test]
    fn an_operators_word_releases_a_footprint_without_vms_and_keeps_what_any_vm_holds() {
        let records = [volume("loose"), volume("plugged")];
        let mut live = live_as_recorded(&records);
        live.get_mut("plugged").unwrap().attached_to = vec!["vm-9".into()];
        let none = BTreeSet::new();
        let released = ReclaimFacts {
            vms_gone_by_operator: true,
            ..facts(&[], &records, &live, &none)
        };
        assert_eq!(
            verdicts(plan(&released)),
            [
                ("loose".to_owned(), Verdict::Delete),
                (
                    "plugged".to_owned(),
                    Verdict::Keep(KeepReason::AttachedElsewhere)
                ),
            ]
        );
        // The word releases only that hold.
        assert_eq!(
            plan(&ReclaimFacts {
                confirmed: false,
                ..released
            }),
            Plan::Hold(HoldReason::NotConfirmed)
        );
    }

    #[test]
    fn an_adopted_orphan_goes_without_a_guest_policy_unless_a_live_audit_unorphans_it() {
        let adopted = |uid: &str| HostObjectRecord {
            guest_policy: None,
            ..record(
                uid,
                ObjectClass::Volume,
                vec![Evidence::Adopted { by: "ops".into() }],
            )
        };
        let never_seen = HostObjectRecord {
            guest_policy: None,
            ..volume("never-seen")
        };
        let records = vec![adopted("orphan"), adopted("taken"), never_seen];
        let live = live_as_recorded(&records);
        let none = BTreeSet::new();
        let taken = BTreeSet::from(["taken".to_owned()]);
        let vms = vms(VmState::Gone);
        let got: BTreeMap<String, Verdict> = verdicts(plan(&ReclaimFacts {
            unorphaned: &taken,
            ..facts(&vms, &records, &live, &none)
        }))
        .into_iter()
        .collect();
        assert_eq!(got["orphan"], Verdict::Delete);
        assert_eq!(got["taken"], Verdict::Keep(KeepReason::NoLongerOrphan));
        assert_eq!(
            got["never-seen"],
            Verdict::Keep(KeepReason::PolicyNeverSeen)
        );
    }

    #[test]
    fn each_keep_has_its_reason() {
        let stale = HostObjectRecord {
            guest_policy: seen(GuestPolicy::Delete, 8),
            ..volume("stale")
        };
        let retain = HostObjectRecord {
            guest_policy: seen(GuestPolicy::Retain, 30),
            ..volume("retain")
        };
        let unseen = HostObjectRecord {
            guest_policy: None,
            ..volume("unseen")
        };
        let conflict = HostObjectRecord {
            conflicts: vec![crate::attribution::Conflict::OtherFootprint {
                footprint: "fp2".into(),
            }],
            ..volume("conflict")
        };
        let records = [
            stale,
            retain,
            unseen,
            conflict,
            volume("annotated"),
            volume("malformed"),
            volume("replaced"),
            volume("elsewhere"),
            volume("owned"),
            volume("theirs"),
            volume("denied"),
            volume("gone"),
        ];
        let mut live = live_as_recorded(&records);
        live.get_mut("annotated").unwrap().retention = Some(Retention::Retained);
        live.get_mut("malformed").unwrap().retention = Some(Retention::Malformed {
            value: "yes".into(),
        });
        live.get_mut("replaced").unwrap().uid = "new".into();
        live.get_mut("elsewhere").unwrap().attached_to = vec!["vm-foreign".into()];
        live.get_mut("owned").unwrap().owned_by = vec!["vm-foreign".into()];
        live.remove("gone");
        let theirs = BTreeSet::from(["theirs".to_owned()]);
        let denied = BTreeSet::from(["denied".to_owned()]);
        let vms = vms(VmState::Deleting);
        let got: BTreeMap<String, Verdict> = verdicts(plan(&ReclaimFacts {
            other_footprints: &theirs,
            denied: &denied,
            ..facts(&vms, &records, &live, &theirs)
        }))
        .into_iter()
        .collect();
        let keep = |reason| Verdict::Keep(reason);
        for (uid, verdict) in [
            ("stale", keep(KeepReason::PolicyStale)),
            ("retain", keep(KeepReason::GuestRetain)),
            ("unseen", keep(KeepReason::PolicyNeverSeen)),
            ("conflict", keep(KeepReason::Conflict)),
            ("annotated", keep(KeepReason::RetainAnnotation)),
            ("malformed", keep(KeepReason::RetainAnnotationMalformed)),
            ("replaced", keep(KeepReason::Replaced)),
            ("elsewhere", keep(KeepReason::AttachedElsewhere)),
            ("owned", keep(KeepReason::OwnedElsewhere)),
            ("theirs", keep(KeepReason::OtherFootprint)),
            ("denied", keep(KeepReason::Denied)),
            ("gone", Verdict::Gone),
        ] {
            assert_eq!(got[uid], verdict, "{uid}");
        }
    }

    #[test]
    fn a_kept_volume_keeps_its_snapshots_and_filesystem_and_a_kept_snapshot_its_volume() {
        let snapshot_of = |uid: &str, pvc: &str| {
            record(
                uid,
                ObjectClass::Snapshot,
                vec![Evidence::SnapshotOf {
                    pvc_uid: pvc.into(),
                }],
            )
        };
        let records = [
            HostObjectRecord {
                guest_policy: seen(GuestPolicy::Retain, 0),
                ..volume("kept")
            },
            snapshot_of("snap-of-kept", "kept"),
            record(
                "nfs-of-kept",
                ObjectClass::NetworkFilesystem,
                vec![Evidence::VolumeOf {
                    pvc_uid: "kept".into(),
                }],
            ),
            volume("source"),
            HostObjectRecord {
                guest_policy: seen(GuestPolicy::Retain, 0),
                ..snapshot_of("retained-snap", "source")
            },
            snapshot_of("sibling", "source"),
        ];
        let live = live_as_recorded(&records);
        let none = BTreeSet::new();
        let vms = vms(VmState::Gone);
        let got: BTreeMap<String, Verdict> = verdicts(plan(&facts(&vms, &records, &live, &none)))
            .into_iter()
            .collect();
        assert_eq!(got["snap-of-kept"], Verdict::Keep(KeepReason::VolumeKept));
        assert_eq!(got["nfs-of-kept"], Verdict::Keep(KeepReason::VolumeKept));
        assert_eq!(got["retained-snap"], Verdict::Keep(KeepReason::GuestRetain));
        assert_eq!(got["source"], Verdict::Keep(KeepReason::SnapshotKept));
        assert_eq!(got["sibling"], Verdict::Keep(KeepReason::VolumeKept));
    }

    fn arbitrary_record() -> impl Strategy<Value = HostObjectRecord> {
        let class = prop_oneof![
            Just(ObjectClass::Volume),
            Just(ObjectClass::RwxVolume),
            Just(ObjectClass::NetworkFilesystem),
            Just(ObjectClass::Snapshot),
            Just(ObjectClass::LoadBalancer),
        ];
        let policy = prop_oneof![
            Just(None),
            (0i64..14).prop_map(|days| seen(GuestPolicy::Delete, days)),
            (0i64..14).prop_map(|days| seen(GuestPolicy::Retain, days)),
        ];
        (
            "u[0-7]",
            class,
            proptest::collection::vec(
                prop_oneof![
                    "vm-[1-3]".prop_map(|vm_uid| Evidence::HotPlugged { vm_uid }),
                    "u[0-7]".prop_map(|pvc_uid| Evidence::VolumeOf { pvc_uid }),
                    "u[0-7]".prop_map(|pvc_uid| Evidence::SnapshotOf { pvc_uid }),
                    "pv[0-3]".prop_map(|pv_uid| Evidence::GuestVolume { pv_uid }),
                    Just(Evidence::Adopted { by: "ops".into() }),
                ],
                0..3,
            ),
            policy,
            any::<bool>(),
        )
            .prop_map(|(uid, class, evidence, guest_policy, conflicted)| {
                HostObjectRecord {
                    guest_policy,
                    conflicts: if conflicted {
                        vec![crate::attribution::Conflict::OtherFootprint {
                            footprint: "fp2".into(),
                        }]
                    } else {
                        Vec::new()
                    },
                    ..record(&uid, class, evidence)
                }
            })
    }

    fn arbitrary_live() -> impl Strategy<Value = Option<LiveObject>> {
        proptest::option::of(
            (
                any::<bool>(),
                prop_oneof![
                    Just(None),
                    Just(Some(Retention::NotRetained)),
                    Just(Some(Retention::Retained)),
                    Just(Some(Retention::Malformed { value: "x".into() })),
                ],
                proptest::collection::vec("vm-[1-4]", 0..2),
                proptest::collection::vec("vm-[1-4]", 0..2),
            )
                .prop_map(|(replaced, retention, attached_to, owned_by)| LiveObject {
                    uid: if replaced {
                        "other".into()
                    } else {
                        String::new()
                    },
                    resource_version: "1".into(),
                    retention,
                    attached_to,
                    owned_by,
                    deleting: false,
                }),
        )
    }

    fn vm_state() -> impl Strategy<Value = VmState> {
        prop_oneof![
            Just(VmState::Running),
            Just(VmState::Deleting),
            Just(VmState::Gone)
        ]
    }

    /// A random world: records with distinct UIDs, what a live read shows of each, the
    /// recorded VMs (vm-1..vm-3; vm-4 is always another cluster's), other Footprints' and
    /// denied UIDs, and the cluster-wide facts.
    #[allow(clippy::type_complexity)]
    fn world() -> impl Strategy<
        Value = (
            Vec<HostObjectRecord>,
            BTreeMap<String, LiveObject>,
            Vec<RecordedVm>,
            BTreeSet<String>,
            (BTreeSet<String>, BTreeSet<String>),
            [bool; 7],
        ),
    > {
        (
            proptest::collection::vec((arbitrary_record(), arbitrary_live()), 0..8),
            proptest::collection::vec(vm_state(), 0..3),
            proptest::collection::btree_set("u[0-7]", 0..2),
            proptest::collection::btree_set("u[0-7]", 0..2),
            proptest::collection::btree_set("u[0-7]", 0..2),
            any::<[bool; 7]>(),
        )
            .prop_map(|(pairs, states, others, denied, unorphaned, flags)| {
                let mut seen_uids = BTreeSet::new();
                let (records, live): (Vec<_>, Vec<_>) = pairs
                    .into_iter()
                    .filter(|(record, _)| seen_uids.insert(record.uid.clone()))
                    .unzip();
                let live = records
                    .iter()
                    .zip(live)
                    .filter_map(|(record, live): (&HostObjectRecord, Option<LiveObject>)| {
                        let mut live = live?;
                        if live.uid.is_empty() {
                            live.uid.clone_from(&record.uid);
                        }
                        Some((record.uid.clone(), live))
                    })
                    .collect();
                let vms = states
                    .into_iter()
                    .enumerate()
                    .map(|(index, state)| RecordedVm {
                        name: format!("vms/vm-{}", index + 1),
                        uid: format!("vm-{}", index + 1),
                        state,
                    })
                    .collect();
                (records, live, vms, others, (denied, unorphaned), flags)
            })
    }

    /// The facts of a random world, its flags read in the order of [`world`]'s.
    #[allow(clippy::too_many_arguments)]
    fn facts_of<'a>(
        records: &'a [HostObjectRecord],
        live: &'a BTreeMap<String, LiveObject>,
        vms: &'a [RecordedVm],
        others: &'a BTreeSet<String>,
        denied: &'a BTreeSet<String>,
        unorphaned: &'a BTreeSet<String>,
        flags: [bool; 7],
    ) -> ReclaimFacts<'a> {
        let [
            confirmed,
            identity_changed,
            frozen,
            opted_out,
            retained,
            vms_gone_by_operator,
            grace_ended,
        ] = flags;
        ReclaimFacts {
            confirmed,
            identity_changed,
            frozen,
            opted_out,
            footprint_retention: if retained {
                Retention::Retained
            } else {
                Retention::NotRetained
            },
            vms_gone_by_operator,
            deletions_begin: grace_ended.then_some(now()),
            vms,
            records,
            live,
            other_footprints: others,
            denied,
            unorphaned,
            now: now(),
            policy_max_age: WEEK,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("GLEANER_PLAN_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(4_000)
        ))]

        /// `gleaner plan`'s answer for a living cluster is what the reclaimer decides once that
        /// cluster's deletion is confirmed and its VMs deleting.
        #[test]
        fn the_plan_of_a_living_cluster_is_the_reclaimers_once_it_is_deleted(world in world()) {
            let (records, live, vms, others, (denied, unorphaned), flags) = world;
            let living = ReclaimFacts {
                confirmed: false,
                identity_changed: false,
                deletions_begin: None,
                ..facts_of(&records, &live, &vms, &others, &denied, &unorphaned, flags)
            };
            let deleting: Vec<RecordedVm> = vms
                .iter()
                .map(|vm| RecordedVm {
                    state: if vm.state == VmState::Gone { VmState::Gone } else { VmState::Deleting },
                    ..vm.clone()
                })
                .collect();
            let deleted = ReclaimFacts {
                confirmed: true,
                deletions_begin: Some(now()),
                vms: &deleting,
                ..living.clone()
            };
            prop_assert_eq!(plan_if_deleted(&living), plan(&deleted));
        }

        /// Safety rules 1 to 4, for every Delete the plan gives.
        #[test]
        fn a_deletion_breaks_no_safety_rule(world in world()) {
            let (records, live, vms, others, (denied, unorphaned), flags) = world;
            let [confirmed, _, frozen, opted_out, footprint_retained, vms_gone_by_operator, grace_ended] = flags;
            let facts = facts_of(&records, &live, &vms, &others, &denied, &unorphaned, flags);
            let Plan::Act(steps) = plan(&facts) else {
                return Ok(());
            };
            // Rule 1, 4 and the holds: only a confirmed, unpaused, unretained deletion whose
            // every recorded VM is deleting or gone acts at all.
            prop_assert!(confirmed && !frozen && !footprint_retained && grace_ended);
            // An empty list of VMs acts only on an operator's word.
            prop_assert!((!vms.is_empty() || vms_gone_by_operator) && vms.iter().all(|vm| vm.state != VmState::Running));
            let verdict_of = |uid: &str| steps.iter().find(|(record, _)| record.uid == uid).map(|(_, verdict)| *verdict);
            let mut last_order = 0;
            for (record, verdict) in &steps {
                prop_assert!(order(record.kind()) >= last_order, "in order");
                last_order = order(record.kind());
                if *verdict != Verdict::Delete {
                    continue;
                }
                prop_assert!(!opted_out);
                let object = &live[&record.uid];
                // Rule 5's precondition and rule 3: the same object, this cluster's alone.
                prop_assert_eq!(&object.uid, &record.uid);
                prop_assert!(record.conflicts.is_empty() && !record.evidence.is_empty());
                prop_assert!(!others.contains(&record.uid) && !denied.contains(&record.uid));
                // An adopted object goes only while a live audit still finds it an orphan.
                prop_assert!(!unorphaned.contains(&record.uid));
                // Rule 2: nothing of a VM outside the Footprint.
                let ours = |uid: &String| vms.iter().any(|vm| vm.uid == *uid);
                prop_assert!(object.attached_to.iter().all(ours) && object.owned_by.iter().all(ours));
                // Rule 3: no retain, and a volume's or snapshot's recent guest policy is Delete.
                prop_assert!(matches!(object.retention, None | Some(Retention::NotRetained)));
                // An operator's adoption stands in for the guest policy of a guest that is gone.
                if !adopted(record) && matches!(record.class, ObjectClass::Volume | ObjectClass::RwxVolume | ObjectClass::Snapshot) {
                    prop_assert_eq!(policy_at(record.guest_policy, now(), WEEK), PolicyAt::Delete);
                }
                // What hangs on a kept volume stays; a kept snapshot keeps its source.
                for evidence in &record.evidence {
                    if let Evidence::VolumeOf { pvc_uid } | Evidence::SnapshotOf { pvc_uid } = evidence {
                        prop_assert!(!matches!(verdict_of(pvc_uid), Some(Verdict::Keep(_))));
                    }
                }
                if record.kind() == HostKind::PersistentVolumeClaim {
                    for (other, other_verdict) in &steps {
                        let snapshot_of_it = other.class == ObjectClass::Snapshot
                            && other.evidence.contains(&Evidence::SnapshotOf { pvc_uid: record.uid.clone() });
                        prop_assert!(!(snapshot_of_it && matches!(other_verdict, Verdict::Keep(_))));
                    }
                }
            }
        }
    }
}
