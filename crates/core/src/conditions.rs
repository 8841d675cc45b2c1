//! The Footprint's conditions (design.md §5): their types, reasons and the rules that set them.
//! The shell keeps transition times; what each condition says is decided here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ClusterObject, OptOut, PausedBy, keys};

/// A Footprint condition type; its wire name is the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    /// A live read confirmed the cluster's deletion.
    DeletionConfirmed,
    /// The cluster opted out of cleanup.
    OptedOut,
    /// The cluster is paused: gleaner neither acts nor removes its hook.
    Frozen,
    /// A Harvester of the cluster does not answer (a transport failure, a timeout or a 5xx).
    HarvesterUnreachable,
    /// A Harvester of the cluster rejects its credential, or the credential is unusable.
    HarvesterMisconfigured,
    /// The hook timeout let a Machine go without its intent.
    ProtectionLapsed,
    /// The Footprint is full: objects found since are not recorded (so never deleted).
    RecordsLimited,
    /// The guest cluster does not answer through its kubeconfig Secret, or that Secret is
    /// missing or unusable: the last known facts stand.
    GuestUnreachable,
    /// The final inventory of the guest, taken once its deletion is confirmed, completed
    /// (True) or not (False); its transition time says when it ran.
    Inventoried,
    /// gleaner first saw the cluster when its deletion had already started: what it knows
    /// may be partial.
    LateTracking,
    /// The reclaimer holds every deletion of the cluster for now, and says why.
    ReclaimHeld,
    /// Every Cluster UID differs from the recorded ones while the cluster's VMs run, as after a
    /// Rancher restore: nothing is deleted.
    IdentityChanged,
    /// Deletions asked long ago still wait on finalizers; they are never asked again.
    DeletionStuck,
    /// Every deletable object is gone; its transition time says when.
    Reclaimed,
}

/// Why a condition has its status; its wire name is the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionReason {
    /// `DeletionConfirmed`: both Cluster objects gone or deleting, in the recorded installation.
    BothClustersGone,
    /// `OptedOut` False.
    NotOptedOut,
    /// `OptedOut` True.
    SkipCleanupAnnotation,
    /// `OptedOut` False: the annotation does not parse.
    MalformedAnnotation,
    /// `Frozen` True.
    Paused,
    /// `Frozen` False.
    NotPaused,
    /// `Frozen` False: the CAPI Cluster is gone.
    ClusterGone,
    /// `HarvesterUnreachable` True.
    WatchFailing,
    /// `HarvesterUnreachable` False.
    Reachable,
    /// `HarvesterMisconfigured` True.
    CredentialRejected,
    /// `HarvesterMisconfigured` False.
    CredentialAccepted,
    /// `ProtectionLapsed` True.
    HookTimeout,
    /// `RecordsLimited` True.
    FootprintFull,
    /// `RecordsLimited` False.
    WithinLimit,
    /// `GuestUnreachable` True: the guest's watch fails.
    GuestWatchFailing,
    /// `GuestUnreachable` True: the kubeconfig Secret is missing, malformed or rejected.
    KubeconfigUnusable,
    /// `GuestUnreachable` False.
    GuestReachable,
    /// `Inventoried` True.
    InventoryCompleted,
    /// `Inventoried` False.
    InventoryIncomplete,
    /// `LateTracking` True.
    FirstSeenDeleting,
    /// `ReclaimHeld` True.
    Held,
    /// `ReclaimHeld` False.
    Acting,
    /// `IdentityChanged` True.
    ClustersRecreated,
    /// `IdentityChanged` False.
    SameIdentity,
    /// `DeletionStuck` True.
    FinalizersPending,
    /// `DeletionStuck` False.
    NoneStuck,
    /// `Reclaimed` True.
    AllDeletableGone,
}

macro_rules! wire_name {
    ($type:ty) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}
wire_name!(ConditionType);
wire_name!(ConditionReason);

/// What a condition says, without its transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionState {
    /// The condition type.
    pub type_: ConditionType,
    /// True or False.
    pub status: bool,
    /// Why.
    pub reason: ConditionReason,
    /// For people.
    pub message: String,
}

impl ConditionState {
    /// A condition as decided.
    pub fn new(
        type_: ConditionType,
        status: bool,
        reason: ConditionReason,
        message: String,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message,
        }
    }
}

/// `DeletionConfirmed` True.
pub fn deletion_confirmed() -> ConditionState {
    ConditionState::new(
        ConditionType::DeletionConfirmed,
        true,
        ConditionReason::BothClustersGone,
        "a live read showed both Cluster objects gone or deleting, in the recorded installation"
            .into(),
    )
}

/// `OptedOut` from the recorded Cluster objects' annotations, or `None` to keep it as it is:
/// once deletion is confirmed an opt-out stays, since the object that carried it may be gone.
pub fn opted_out(
    opt_out: &OptOut,
    confirmed: bool,
    opted_out_before: bool,
) -> Option<ConditionState> {
    if confirmed && opted_out_before {
        return None;
    }
    let object = |object: &ClusterObject| format!("{object:?}");
    Some(match opt_out {
        OptOut::No => ConditionState::new(
            ConditionType::OptedOut,
            false,
            ConditionReason::NotOptedOut,
            "no Cluster object opts out".into(),
        ),
        OptOut::OptedOut { object: by } => ConditionState::new(
            ConditionType::OptedOut,
            true,
            ConditionReason::SkipCleanupAnnotation,
            format!(
                "the {} Cluster carries {}",
                object(by),
                keys::SKIP_CLEANUP_ANNOTATION
            ),
        ),
        OptOut::Malformed { object: by, value } => ConditionState::new(
            ConditionType::OptedOut,
            false,
            ConditionReason::MalformedAnnotation,
            format!(
                "the {} Cluster's {} is {value:?}, not a boolean",
                object(by),
                keys::SKIP_CLEANUP_ANNOTATION
            ),
        ),
    })
}

/// `Frozen`, following the recorded CAPI Cluster while it exists.
pub fn frozen(capi_cluster_exists: bool, paused_by: Option<PausedBy>) -> ConditionState {
    match paused_by {
        Some(by) => ConditionState::new(
            ConditionType::Frozen,
            true,
            ConditionReason::Paused,
            format!("paused by {by:?}"),
        ),
        None if !capi_cluster_exists => ConditionState::new(
            ConditionType::Frozen,
            false,
            ConditionReason::ClusterGone,
            "the CAPI Cluster is gone".into(),
        ),
        None => ConditionState::new(
            ConditionType::Frozen,
            false,
            ConditionReason::NotPaused,
            "the cluster is not paused".into(),
        ),
    }
}

/// How a cluster gleaner reaches (a Harvester, a guest) fares, as gleaner observes it: its
/// watches, and for a Harvester the writes that failed since the last one that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Nothing observed yet (the first list is not in): says nothing either way.
    Syncing,
    /// It answers.
    Reachable,
    /// It does not answer; the error, never the credential's content.
    Unreachable {
        /// What failed.
        problem: String,
    },
    /// It rejects the credential, or the credential is unusable.
    Misconfigured {
        /// What failed.
        problem: String,
    },
}

/// `HarvesterUnreachable` and `HarvesterMisconfigured` from the health of each Harvester of the
/// cluster (by credential). Each is True while any Harvester shows it, False once every one has
/// been observed without it, and kept as it is (`None`) while one is still syncing: a restart of
/// gleaner must not restart the clock the hook timeout reads.
pub fn harvester_conditions(healths: &[(String, Health)]) -> [Option<ConditionState>; 2] {
    let syncing = healths.iter().any(|(_, health)| *health == Health::Syncing);
    let failing = |misconfigured: bool| -> Vec<String> {
        healths
            .iter()
            .filter_map(|(credential, health)| match health {
                Health::Unreachable { problem } if !misconfigured => {
                    Some(format!("{credential}: {problem}"))
                }
                Health::Misconfigured { problem } if misconfigured => {
                    Some(format!("{credential}: {problem}"))
                }
                _ => None,
            })
            .collect()
    };
    let condition = |misconfigured: bool| {
        let (type_, failing_reason, fine_reason, fine) = if misconfigured {
            (
                ConditionType::HarvesterMisconfigured,
                ConditionReason::CredentialRejected,
                ConditionReason::CredentialAccepted,
                "every Harvester of the cluster accepts its credential",
            )
        } else {
            (
                ConditionType::HarvesterUnreachable,
                ConditionReason::WatchFailing,
                ConditionReason::Reachable,
                "every Harvester of the cluster answers",
            )
        };
        let problems = failing(misconfigured);
        if !problems.is_empty() {
            Some(ConditionState::new(
                type_,
                true,
                failing_reason,
                problems.join("; "),
            ))
        } else if syncing {
            None
        } else {
            Some(ConditionState::new(type_, false, fine_reason, fine.into()))
        }
    };
    [condition(false), condition(true)]
}

/// `RecordsLimited`: True while `left_out` objects found could not be recorded.
pub fn records_limited(left_out: usize) -> ConditionState {
    if left_out == 0 {
        ConditionState::new(
            ConditionType::RecordsLimited,
            false,
            ConditionReason::WithinLimit,
            "every attributed object is recorded".into(),
        )
    } else {
        ConditionState::new(
            ConditionType::RecordsLimited,
            true,
            ConditionReason::FootprintFull,
            format!(
                "{left_out} attributed object(s) are not recorded: the Footprint is full; they \
                 are never deleted"
            ),
        )
    }
}

/// `GuestUnreachable` from the guest's health, or `None` to keep it as it is while its watch
/// syncs.
pub fn guest_unreachable(health: &Health) -> Option<ConditionState> {
    let (status, reason, message) = match health {
        Health::Syncing => return None,
        Health::Reachable => (
            false,
            ConditionReason::GuestReachable,
            "the guest cluster answers".to_owned(),
        ),
        Health::Unreachable { problem } => {
            (true, ConditionReason::GuestWatchFailing, problem.clone())
        }
        Health::Misconfigured { problem } => {
            (true, ConditionReason::KubeconfigUnusable, problem.clone())
        }
    };
    Some(ConditionState::new(
        ConditionType::GuestUnreachable,
        status,
        reason,
        message,
    ))
}

/// How the final inventory of a guest went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inventory {
    /// Every list answered within the timeout.
    Completed {
        /// Guest PVs of the Harvester CSI driver read.
        volumes: usize,
        /// Guest VolumeSnapshotContents of the driver read.
        contents: usize,
        /// Guest LoadBalancer Services read.
        services: usize,
    },
    /// A list failed or the timeout passed: the last known facts stand.
    Incomplete {
        /// What failed.
        problem: String,
    },
}

/// `Inventoried`, with how many recorded volumes the guest's policies will keep because their
/// policy was never seen or is too old (the reclaimer keeps them).
pub fn inventoried(inventory: &Inventory, unsure_policies: usize) -> ConditionState {
    let unsure = if unsure_policies == 0 {
        String::new()
    } else {
        format!(
            "; {unsure_policies} recorded volume(s) have no recent guest reclaim policy and \
             will be kept"
        )
    };
    match inventory {
        Inventory::Completed {
            volumes,
            contents,
            services,
        } => ConditionState::new(
            ConditionType::Inventoried,
            true,
            ConditionReason::InventoryCompleted,
            format!(
                "the final inventory read {volumes} guest PV(s), {contents} snapshot content(s) \
                 and {services} LoadBalancer Service(s){unsure}"
            ),
        ),
        Inventory::Incomplete { problem } => ConditionState::new(
            ConditionType::Inventoried,
            false,
            ConditionReason::InventoryIncomplete,
            format!(
                "the final inventory did not complete ({problem}): the last known facts stand{unsure}"
            ),
        ),
    }
}

/// `ReclaimHeld`: True with why while the plan holds the cluster, False once it acts.
pub fn reclaim_held(hold: Option<&crate::reclaim::HoldReason>) -> ConditionState {
    match hold {
        Some(hold) => ConditionState::new(
            ConditionType::ReclaimHeld,
            true,
            ConditionReason::Held,
            hold.to_string(),
        ),
        None => ConditionState::new(
            ConditionType::ReclaimHeld,
            false,
            ConditionReason::Acting,
            "every safety rule allows the reclaimer to act".into(),
        ),
    }
}

/// `IdentityChanged`, as the reclaimer last found it.
pub fn identity_changed(changed: bool) -> ConditionState {
    if changed {
        ConditionState::new(
            ConditionType::IdentityChanged,
            true,
            ConditionReason::ClustersRecreated,
            "both Cluster objects exist with other UIDs than recorded while the cluster's VMs \
             run: nothing is deleted until an operator acts"
                .into(),
        )
    } else {
        ConditionState::new(
            ConditionType::IdentityChanged,
            false,
            ConditionReason::SameIdentity,
            "the Cluster objects are the recorded ones, or gone".into(),
        )
    }
}

/// `DeletionStuck`: True naming each object whose deletion waits too long, and on what.
pub fn deletion_stuck(stuck: &[String]) -> ConditionState {
    if stuck.is_empty() {
        ConditionState::new(
            ConditionType::DeletionStuck,
            false,
            ConditionReason::NoneStuck,
            "no deletion waits long on finalizers".into(),
        )
    } else {
        ConditionState::new(
            ConditionType::DeletionStuck,
            true,
            ConditionReason::FinalizersPending,
            stuck.join("; "),
        )
    }
}

/// `Reclaimed` True, with how many objects went and how many stay.
pub fn reclaimed(deleted: u64, kept: u64) -> ConditionState {
    ConditionState::new(
        ConditionType::Reclaimed,
        true,
        ConditionReason::AllDeletableGone,
        format!("{deleted} object(s) deleted, {kept} kept"),
    )
}

/// `LateTracking` True.
pub fn late_tracking() -> ConditionState {
    ConditionState::new(
        ConditionType::LateTracking,
        true,
        ConditionReason::FirstSeenDeleting,
        "gleaner first saw this cluster while it was being deleted: it records what it can still \
         observe, and attributes nothing without evidence"
            .into(),
    )
}

/// `ProtectionLapsed` True, with what happened.
pub fn protection_lapsed(message: String) -> ConditionState {
    ConditionState::new(
        ConditionType::ProtectionLapsed,
        true,
        ConditionReason::HookTimeout,
        message,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn health() -> impl Strategy<Value = Health> {
        prop_oneof![
            Just(Health::Syncing),
            Just(Health::Reachable),
            "[a-z ]{1,8}".prop_map(|problem| Health::Unreachable { problem }),
            "[a-z ]{1,8}".prop_map(|problem| Health::Misconfigured { problem }),
        ]
    }

    fn opt_out() -> impl Strategy<Value = OptOut> {
        let object = prop_oneof![Just(ClusterObject::Provisioning), Just(ClusterObject::Capi)];
        prop_oneof![
            Just(OptOut::No),
            object
                .clone()
                .prop_map(|object| OptOut::OptedOut { object }),
            (object, ".{0,4}").prop_map(|(object, value)| OptOut::Malformed { object, value }),
        ]
    }

    #[test]
    fn wire_names_are_the_variant_names() {
        assert_eq!(
            ConditionType::HarvesterMisconfigured.to_string(),
            "HarvesterMisconfigured"
        );
        assert_eq!(ConditionReason::HookTimeout.to_string(), "HookTimeout");
        assert_eq!(
            serde_json::to_string(&ConditionType::ProtectionLapsed).unwrap(),
            "\"ProtectionLapsed\""
        );
    }

    #[test]
    fn a_guest_is_unreachable_while_it_fails_and_kept_as_it_is_while_it_syncs() {
        assert_eq!(guest_unreachable(&Health::Syncing), None);
        let reachable = guest_unreachable(&Health::Reachable).unwrap();
        assert!(!reachable.status);
        let down = guest_unreachable(&Health::Unreachable {
            problem: "503 from Rancher's proxy".into(),
        })
        .unwrap();
        assert!(down.status);
        assert_eq!(down.reason, ConditionReason::GuestWatchFailing);
        assert_eq!(down.message, "503 from Rancher's proxy");
        let rejected = guest_unreachable(&Health::Misconfigured {
            problem: "401".into(),
        })
        .unwrap();
        assert_eq!(
            (rejected.status, rejected.reason),
            (true, ConditionReason::KubeconfigUnusable)
        );
    }

    #[test]
    fn an_inventory_says_what_it_read_or_why_it_did_not_complete() {
        let done = inventoried(
            &Inventory::Completed {
                volumes: 3,
                contents: 1,
                services: 2,
            },
            0,
        );
        assert!(done.status);
        assert!(done.message.contains("3 guest PV(s)"), "{}", done.message);
        let incomplete = inventoried(
            &Inventory::Incomplete {
                problem: "timed out after 30s".into(),
            },
            2,
        );
        assert!(!incomplete.status);
        assert!(incomplete.message.contains("timed out after 30s"));
        assert!(incomplete.message.contains("2 recorded volume(s)"));
    }

    #[test]
    fn a_syncing_harvester_keeps_both_conditions_as_they_are() {
        let healths = [
            ("a:x".to_owned(), Health::Syncing),
            ("a:y".to_owned(), Health::Reachable),
        ];
        assert_eq!(harvester_conditions(&healths), [None, None]);
    }

    #[test]
    fn an_unreachable_and_a_misconfigured_harvester_are_named_apart() {
        let healths = [
            (
                "a:x".to_owned(),
                Health::Unreachable {
                    problem: "timed out".into(),
                },
            ),
            (
                "a:y".to_owned(),
                Health::Misconfigured {
                    problem: "403".into(),
                },
            ),
        ];
        let [unreachable, misconfigured] = harvester_conditions(&healths);
        let unreachable = unreachable.unwrap();
        assert!(unreachable.status);
        assert_eq!(unreachable.message, "a:x: timed out");
        let misconfigured = misconfigured.unwrap();
        assert!(misconfigured.status);
        assert_eq!(misconfigured.reason, ConditionReason::CredentialRejected);
        assert_eq!(misconfigured.message, "a:y: 403");
    }

    proptest! {
        #[test]
        fn each_harvester_condition_is_true_exactly_while_a_harvester_shows_it(
            healths in proptest::collection::vec(health(), 0..4),
        ) {
            let healths: Vec<(String, Health)> = healths
                .into_iter()
                .enumerate()
                .map(|(index, health)| (format!("ns:cc{index}"), health))
                .collect();
            let [unreachable, misconfigured] = harvester_conditions(&healths);
            let any = |wanted: fn(&Health) -> bool| healths.iter().any(|(_, h)| wanted(h));
            let syncing = any(|h| *h == Health::Syncing);
            for (condition, shown) in [
                (unreachable, any(|h| matches!(h, Health::Unreachable { .. }))),
                (misconfigured, any(|h| matches!(h, Health::Misconfigured { .. }))),
            ] {
                match condition {
                    Some(condition) => prop_assert_eq!(condition.status, shown),
                    None => prop_assert!(syncing && !shown),
                }
            }
        }

        #[test]
        fn an_opt_out_stays_once_deletion_is_confirmed(opt_out in opt_out(), confirmed: bool, before: bool) {
            let decided = opted_out(&opt_out, confirmed, before);
            if confirmed && before {
                prop_assert_eq!(decided, None);
            } else {
                let decided = decided.unwrap();
                prop_assert_eq!(decided.status, matches!(opt_out, OptOut::OptedOut { .. }));
            }
        }

        #[test]
        fn frozen_follows_the_capi_cluster(exists: bool, paused in proptest::option::of(prop_oneof![
            Just(PausedBy::ClusterSpec), Just(PausedBy::ClusterAnnotation)
        ])) {
            let decided = frozen(exists, paused);
            prop_assert_eq!(decided.status, paused.is_some());
            prop_assert_eq!(decided.type_, ConditionType::Frozen);
            if paused.is_none() {
                prop_assert_eq!(decided.reason == ConditionReason::ClusterGone, !exists);
            }
        }
    }
}
