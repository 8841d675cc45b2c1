//! gleaner's pre-terminate hook on CAPI Machines (design.md §5 "Hooks", safety rule 6): which
//! Machines get it, and what to do when one that carries it is deleting.

use std::time::Duration;

use crate::{ClusterObject, OptOut, PausedBy, Reason};

/// The API group of the HarvesterMachine infrastructure kind.
pub const HARVESTER_MACHINE_GROUP: &str = "rke-machine.cattle.io";
/// The HarvesterMachine infrastructure kind.
pub const HARVESTER_MACHINE_KIND: &str = "HarvesterMachine";

/// A Machine's `spec.infrastructureRef`, reduced to what identifies its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfrastructureRef {
    /// The API group: v1beta2's `apiGroup`, or the group of v1beta1's `apiVersion`.
    pub group: String,
    /// The kind.
    pub kind: String,
}

impl InfrastructureRef {
    /// From a reference in either Cluster API shape: v1beta2's `apiGroup`, else the group of
    /// v1beta1's `apiVersion`; missing fields read as empty.
    pub fn from_reference(
        api_group: Option<&str>,
        api_version: Option<&str>,
        kind: Option<&str>,
    ) -> Self {
        match api_group {
            Some(group) => Self {
                group: group.to_owned(),
                kind: kind.unwrap_or_default().to_owned(),
            },
            None => {
                Self::from_api_version(api_version.unwrap_or_default(), kind.unwrap_or_default())
            }
        }
    }

    /// From a v1beta1 reference's `apiVersion` (`group/version`, or a bare version for the core
    /// group) and `kind`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let group = api_version
            .split_once('/')
            .map_or("", |(group, _version)| group);
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }

    fn is_harvester_machine(&self) -> bool {
        self.group == HARVESTER_MACHINE_GROUP && self.kind == HARVESTER_MACHINE_KIND
    }
}

/// The facts about a CAPI Machine that decide whether it gets gleaner's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    /// Its `spec.infrastructureRef`.
    pub infrastructure: InfrastructureRef,
    /// Whether it carries a deletionTimestamp.
    pub deleting: bool,
}

/// Whether to add gleaner's hook to a Machine that lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddHook {
    /// Add the hook.
    Add,
    /// Do not add it. This never means "remove it": a deleting Machine that carries the hook is
    /// decided by [`deleting_machine_hook`].
    Skip(NoHookReason),
}

/// Why a Machine does not get gleaner's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoHookReason {
    /// It is already deleting: a hook is never added then (safety rule 6).
    Deleting,
    /// Its infrastructure is not a HarvesterMachine.
    NotHarvesterMachine,
}

/// Decides whether a Machine gets gleaner's hook: only a HarvesterMachine-backed Machine that is
/// not deleting.
pub fn add_hook(machine: &MachineFacts) -> AddHook {
    if machine.deleting {
        AddHook::Skip(NoHookReason::Deleting)
    } else if !machine.infrastructure.is_harvester_machine() {
        AddHook::Skip(NoHookReason::NotHarvesterMachine)
    } else {
        AddHook::Add
    }
}

/// What a cluster's Footprint records of the Harvesters its VMs run on: how long each of its
/// two failure conditions has been True. This is the one clock the hook timeout reads, so a
/// restart of gleaner never restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HarvesterRecord {
    /// How long `HarvesterUnreachable` has been True (a transport failure, a timeout or a 5xx).
    pub unreachable_for: Option<Duration>,
    /// How long `HarvesterMisconfigured` has been True (a rejected or unusable credential).
    pub misconfigured_for: Option<Duration>,
}

/// Whether the cluster's Footprint exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FootprintState {
    /// It exists, with what it records of the Harvesters.
    Recorded(HarvesterRecord),
    /// It does not exist (yet): the Machine has been deleting for `waited`.
    Missing {
        /// How long the Machine has been deleting.
        waited: Duration,
    },
}

/// Whether the final inventory of the guest (taken once its deletion is confirmed) is in the
/// Footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryState {
    /// It ran: `Inventoried` says whether it completed.
    Taken,
    /// Not yet: the Machine has been deleting for `waited`.
    Pending {
        /// How long the Machine has been deleting.
        waited: Duration,
    },
}

/// The facts about a deleting Machine that carries gleaner's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletingMachine {
    /// Why it goes ([`machine_reason`](crate::machine_reason)); with the Footprint missing, as
    /// decided from the Cluster objects alone.
    pub reason: Reason,
    /// The cluster's opt-out ([`opt_out`](crate::opt_out)).
    pub opt_out: OptOut,
    /// What freezes it, if anything ([`paused_by`](crate::paused_by)).
    pub paused_by: Option<PausedBy>,
    /// The cluster's Footprint.
    pub footprint: FootprintState,
    /// How long the hook may wait for a failing Harvester; `None` waits as long as it takes.
    pub hook_timeout: Option<Duration>,
    /// How long a deleting Machine waits for its cluster's Footprint to be made.
    pub footprint_wait: Duration,
    /// The final inventory of the guest.
    pub inventory: InventoryState,
    /// How long a cluster deletion's first Machine waits for that inventory: the inventory's
    /// own timeout and one status write.
    pub inventory_wait: Duration,
}

/// What to do with gleaner's hook on a deleting Machine, and with the VM's intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookDecision {
    /// Keep the hook and write nothing yet.
    Wait(WaitReason),
    /// The cluster opted out: remove the hook and write nothing, so upstream acts alone.
    RemoveHookOptedOut {
        /// The Cluster object carrying the opt-out.
        object: ClusterObject,
    },
    /// Remove the hook at once; then write the intent and `"false"` on the VM, best effort.
    RemoveHookThenWriteIntent {
        /// `ScaleDown` or `Unknown`.
        reason: Reason,
    },
    /// Write the intent and `"false"` on the VM; once written, remove the hook. A failed write
    /// is decided by [`after_failed_write`].
    WriteIntentThenRemoveHook {
        /// `ClusterDeletion`, or `Unknown` once a missing Footprint was waited for long enough.
        reason: Reason,
    },
}

/// Why the hook stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The Machine is frozen by a Cluster API pause.
    Frozen(PausedBy),
    /// The cluster has no Footprint yet, and the Machine has waited this long for it.
    FootprintMissing {
        /// How long the Machine has been deleting.
        waited: Duration,
    },
    /// The cluster's deletion is confirmed and the final inventory of its guest is not in the
    /// Footprint yet: once its VMs go, nobody can ask the guest.
    InventoryPending {
        /// How long the Machine has been deleting.
        waited: Duration,
    },
}

/// Why writing the intent on a VM failed, told apart by what the failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// The VM does not exist (or a namesake with another UID stands in its place): there is
    /// nothing on Harvester to protect.
    VmNotFound,
    /// A transport failure, a timeout or a 5xx: Harvester may answer again.
    Unreachable,
    /// A 401 or 403, or a credential that is missing, empty or malformed: an operator must act.
    Misconfigured,
}

/// What to do after the intent of a [`HookDecision::WriteIntentThenRemoveHook`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailedWrite {
    /// Keep the hook and try again.
    Wait {
        /// `Unreachable` or `Misconfigured`.
        failure: WriteFailure,
        /// How long the Footprint has recorded that failure.
        failing_for: Duration,
    },
    /// The VM is gone: nothing to protect, remove the hook and record it.
    RemoveHookNothingToProtect,
    /// The Footprint is missing and was waited for: remove the hook anyway, with a warning.
    RemoveHookFootprintMissing,
    /// The hook timeout passed: remove the hook without the intent, and set `ProtectionLapsed`
    /// on the Footprint.
    RemoveHookLapsed {
        /// How long the failure had been recorded.
        failing_for: Duration,
    },
}

/// Decides what to do with gleaner's hook on a deleting Machine.
///
/// A freeze waits, whatever else holds. An opted-out cluster loses the hook and gets nothing
/// written; a malformed opt-out is not an opt-out here (what gleaner writes only protects).
/// `ScaleDown` removes the hook at once, Footprint or not. Without a Footprint anything else
/// waits for it at most `footprint_wait`, then writes `Unknown` (which protects) and lets the
/// Machine go. With a Footprint, `Unknown` removes the hook at once and `ClusterDeletion` keeps
/// it until the intent is written.
pub fn deleting_machine_hook(machine: &DeletingMachine) -> HookDecision {
    if let Some(by) = machine.paused_by {
        return HookDecision::Wait(WaitReason::Frozen(by));
    }
    if let OptOut::OptedOut { object } = machine.opt_out {
        return HookDecision::RemoveHookOptedOut { object };
    }
    match (machine.reason, machine.footprint) {
        (Reason::ScaleDown, _) | (Reason::Unknown, FootprintState::Recorded(_)) => {
            HookDecision::RemoveHookThenWriteIntent {
                reason: machine.reason,
            }
        }
        (Reason::ClusterDeletion, FootprintState::Recorded(_)) => match machine.inventory {
            InventoryState::Pending { waited } if waited < machine.inventory_wait => {
                HookDecision::Wait(WaitReason::InventoryPending { waited })
            }
            InventoryState::Pending { .. } | InventoryState::Taken => {
                HookDecision::WriteIntentThenRemoveHook {
                    reason: Reason::ClusterDeletion,
                }
            }
        },
        (_, FootprintState::Missing { waited }) if waited < machine.footprint_wait => {
            HookDecision::Wait(WaitReason::FootprintMissing { waited })
        }
        (_, FootprintState::Missing { .. }) => HookDecision::WriteIntentThenRemoveHook {
            reason: Reason::Unknown,
        },
    }
}

/// Decides what a failed intent write for a [`HookDecision::WriteIntentThenRemoveHook`] leads
/// to. A VM that is gone has nothing to protect. A missing Footprint was waited for already, so
/// the Machine goes. Otherwise the hook waits as long as the Footprint records the failure,
/// until the optional hook timeout passes; a misconfiguration is held exactly as long as an
/// outage would be.
pub fn after_failed_write(machine: &DeletingMachine, failure: WriteFailure) -> AfterFailedWrite {
    let record = match machine.footprint {
        _ if failure == WriteFailure::VmNotFound => {
            return AfterFailedWrite::RemoveHookNothingToProtect;
        }
        FootprintState::Missing { .. } => return AfterFailedWrite::RemoveHookFootprintMissing,
        FootprintState::Recorded(record) => record,
    };
    let failing_for = match failure {
        WriteFailure::Misconfigured => record.misconfigured_for,
        WriteFailure::Unreachable | WriteFailure::VmNotFound => record.unreachable_for,
    }
    .unwrap_or_default();
    if machine
        .hook_timeout
        .is_some_and(|timeout| failing_for >= timeout)
    {
        AfterFailedWrite::RemoveHookLapsed { failing_for }
    } else {
        AfterFailedWrite::Wait {
            failure,
            failing_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        Deletion, confirm_deletion, machine_reason,
        testing::{identity, live_observation},
    };

    const MINUTE: Duration = Duration::from_secs(60);

    fn harvester_machine(deleting: bool) -> MachineFacts {
        MachineFacts {
            infrastructure: InfrastructureRef::from_api_version(
                "rke-machine.cattle.io/v1",
                "HarvesterMachine",
            ),
            deleting,
        }
    }

    fn deleting(reason: Reason) -> DeletingMachine {
        DeletingMachine {
            reason,
            opt_out: OptOut::No,
            paused_by: None,
            footprint: FootprintState::Recorded(HarvesterRecord::default()),
            hook_timeout: None,
            footprint_wait: MINUTE,
            inventory: InventoryState::Taken,
            inventory_wait: MINUTE,
        }
    }

    fn unreachable(minutes: u32) -> FootprintState {
        FootprintState::Recorded(HarvesterRecord {
            unreachable_for: Some(MINUTE * minutes),
            misconfigured_for: None,
        })
    }

    fn misconfigured(minutes: u32) -> FootprintState {
        FootprintState::Recorded(HarvesterRecord {
            unreachable_for: None,
            misconfigured_for: Some(MINUTE * minutes),
        })
    }

    fn missing(minutes: u32) -> FootprintState {
        FootprintState::Missing {
            waited: MINUTE * minutes,
        }
    }

    #[test]
    fn a_living_harvester_machine_gets_the_hook() {
        assert_eq!(add_hook(&harvester_machine(false)), AddHook::Add);
    }

    #[test]
    fn a_deleting_machine_never_gets_the_hook() {
        assert_eq!(
            add_hook(&harvester_machine(true)),
            AddHook::Skip(NoHookReason::Deleting)
        );
    }

    #[test]
    fn other_infrastructure_gets_no_hook() {
        for (api_version, kind) in [
            ("rke-machine.cattle.io/v1", "Amazonec2Machine"),
            (
                "infrastructure.cluster.x-k8s.io/v1beta1",
                "HarvesterMachine",
            ),
            ("v1", "HarvesterMachine"),
        ] {
            let machine = MachineFacts {
                infrastructure: InfrastructureRef::from_api_version(api_version, kind),
                deleting: false,
            };
            assert_eq!(
                add_hook(&machine),
                AddHook::Skip(NoHookReason::NotHarvesterMachine),
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn a_v1beta2_reference_names_its_group_directly() {
        let machine = MachineFacts {
            infrastructure: InfrastructureRef {
                group: HARVESTER_MACHINE_GROUP.into(),
                kind: HARVESTER_MACHINE_KIND.into(),
            },
            deleting: false,
        };
        assert_eq!(add_hook(&machine), AddHook::Add);
    }

    #[test]
    fn a_core_reference_has_the_empty_group_and_v1beta2_names_it() {
        assert_eq!(
            InfrastructureRef::from_reference(None, Some("v1"), Some("HarvesterMachine")).group,
            ""
        );
        assert_eq!(
            InfrastructureRef::from_reference(
                Some("rke-machine.cattle.io"),
                None,
                Some("HarvesterMachine")
            ),
            InfrastructureRef::from_api_version("rke-machine.cattle.io/v1", "HarvesterMachine")
        );
        assert_eq!(
            InfrastructureRef::from_reference(None, None, None),
            InfrastructureRef {
                group: String::new(),
                kind: String::new()
            }
        );
    }

    #[test]
    fn a_cluster_deletion_waits_for_the_final_inventory_a_bounded_time() {
        let pending = |seconds: u64| DeletingMachine {
            inventory: InventoryState::Pending {
                waited: Duration::from_secs(seconds),
            },
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            deleting_machine_hook(&pending(10)),
            HookDecision::Wait(WaitReason::InventoryPending {
                waited: Duration::from_secs(10)
            })
        );
        let write = HookDecision::WriteIntentThenRemoveHook {
            reason: Reason::ClusterDeletion,
        };
        assert_eq!(deleting_machine_hook(&pending(60)), write);
        assert_eq!(
            deleting_machine_hook(&deleting(Reason::ClusterDeletion)),
            write
        );
        // Only a cluster deletion has a guest worth a last look.
        assert_eq!(
            deleting_machine_hook(&DeletingMachine {
                reason: Reason::ScaleDown,
                ..pending(10)
            }),
            HookDecision::RemoveHookThenWriteIntent {
                reason: Reason::ScaleDown
            }
        );
    }

    #[test]
    fn scale_down_and_unknown_remove_the_hook_at_once() {
        for reason in [Reason::ScaleDown, Reason::Unknown] {
            let machine = DeletingMachine {
                footprint: unreachable(5),
                ..deleting(reason)
            };
            assert_eq!(
                deleting_machine_hook(&machine),
                HookDecision::RemoveHookThenWriteIntent { reason }
            );
        }
    }

    #[test]
    fn a_scale_down_never_waits_for_a_missing_footprint() {
        let machine = DeletingMachine {
            footprint: missing(0),
            ..deleting(Reason::ScaleDown)
        };
        assert_eq!(
            deleting_machine_hook(&machine),
            HookDecision::RemoveHookThenWriteIntent {
                reason: Reason::ScaleDown
            }
        );
    }

    #[test]
    fn without_a_footprint_a_deletion_waits_a_bounded_time_then_writes_unknown() {
        let waiting = DeletingMachine {
            footprint: missing(0),
            footprint_wait: MINUTE * 2,
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            deleting_machine_hook(&waiting),
            HookDecision::Wait(WaitReason::FootprintMissing {
                waited: Duration::ZERO
            })
        );
        let waited = DeletingMachine {
            footprint: missing(2),
            ..waiting
        };
        assert_eq!(
            deleting_machine_hook(&waited),
            HookDecision::WriteIntentThenRemoveHook {
                reason: Reason::Unknown
            }
        );
        for failure in [WriteFailure::Unreachable, WriteFailure::Misconfigured] {
            assert_eq!(
                after_failed_write(&waited, failure),
                AfterFailedWrite::RemoveHookFootprintMissing
            );
        }
    }

    #[test]
    fn cluster_deletion_writes_the_intent_before_removing_the_hook() {
        assert_eq!(
            deleting_machine_hook(&deleting(Reason::ClusterDeletion)),
            HookDecision::WriteIntentThenRemoveHook {
                reason: Reason::ClusterDeletion
            }
        );
    }

    #[test]
    fn a_vm_that_is_gone_has_nothing_to_protect() {
        let machine = DeletingMachine {
            footprint: unreachable(60),
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            after_failed_write(&machine, WriteFailure::VmNotFound),
            AfterFailedWrite::RemoveHookNothingToProtect
        );
    }

    #[test]
    fn cluster_deletion_waits_for_an_unreachable_harvester_without_a_timeout() {
        let machine = DeletingMachine {
            footprint: unreachable(60 * 24 * 365),
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            after_failed_write(&machine, WriteFailure::Unreachable),
            AfterFailedWrite::Wait {
                failure: WriteFailure::Unreachable,
                failing_for: MINUTE * 60 * 24 * 365
            }
        );
    }

    #[test]
    fn the_hook_lapses_once_the_timeout_passes() {
        let waiting = DeletingMachine {
            footprint: unreachable(9),
            hook_timeout: Some(MINUTE * 10),
            ..deleting(Reason::ClusterDeletion)
        };
        assert!(matches!(
            after_failed_write(&waiting, WriteFailure::Unreachable),
            AfterFailedWrite::Wait {
                failure: WriteFailure::Unreachable,
                ..
            }
        ));
        let lapsed = DeletingMachine {
            footprint: unreachable(10),
            ..waiting
        };
        assert_eq!(
            after_failed_write(&lapsed, WriteFailure::Unreachable),
            AfterFailedWrite::RemoveHookLapsed {
                failing_for: MINUTE * 10
            }
        );
    }

    #[test]
    fn a_misconfiguration_waits_on_its_own_clock_and_lapses_like_an_outage() {
        let waiting = DeletingMachine {
            footprint: misconfigured(3),
            hook_timeout: Some(MINUTE * 10),
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            after_failed_write(&waiting, WriteFailure::Misconfigured),
            AfterFailedWrite::Wait {
                failure: WriteFailure::Misconfigured,
                failing_for: MINUTE * 3
            }
        );
        // An outage recorded for long does not lapse a misconfiguration seen just now.
        let lapsed = DeletingMachine {
            footprint: misconfigured(10),
            ..waiting
        };
        assert_eq!(
            after_failed_write(&lapsed, WriteFailure::Misconfigured),
            AfterFailedWrite::RemoveHookLapsed {
                failing_for: MINUTE * 10
            }
        );
    }

    #[test]
    fn a_frozen_machine_waits_even_when_the_timeout_passed() {
        let machine = DeletingMachine {
            paused_by: Some(PausedBy::MachineAnnotation),
            footprint: unreachable(60),
            hook_timeout: Some(MINUTE),
            opt_out: OptOut::OptedOut {
                object: ClusterObject::Capi,
            },
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            deleting_machine_hook(&machine),
            HookDecision::Wait(WaitReason::Frozen(PausedBy::MachineAnnotation))
        );
    }

    #[test]
    fn an_opted_out_cluster_loses_the_hook_and_gets_nothing_written() {
        for reason in [Reason::ClusterDeletion, Reason::ScaleDown, Reason::Unknown] {
            let machine = DeletingMachine {
                opt_out: OptOut::OptedOut {
                    object: ClusterObject::Provisioning,
                },
                footprint: unreachable(5),
                ..deleting(reason)
            };
            assert_eq!(
                deleting_machine_hook(&machine),
                HookDecision::RemoveHookOptedOut {
                    object: ClusterObject::Provisioning
                }
            );
        }
    }

    #[test]
    fn a_malformed_opt_out_still_writes_the_protecting_intent() {
        let machine = DeletingMachine {
            opt_out: OptOut::Malformed {
                object: ClusterObject::Capi,
                value: "yes".into(),
            },
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            deleting_machine_hook(&machine),
            HookDecision::WriteIntentThenRemoveHook {
                reason: Reason::ClusterDeletion
            }
        );
    }

    fn infrastructure() -> impl Strategy<Value = InfrastructureRef> {
        let group = prop_oneof![Just(HARVESTER_MACHINE_GROUP.to_owned()), "[a-z.]{0,12}"];
        let kind = prop_oneof![Just(HARVESTER_MACHINE_KIND.to_owned()), "[A-Za-z]{0,12}"];
        (group, kind).prop_map(|(group, kind)| InfrastructureRef { group, kind })
    }

    fn opt_out() -> impl Strategy<Value = OptOut> {
        let object = prop_oneof![Just(ClusterObject::Provisioning), Just(ClusterObject::Capi)];
        prop_oneof![
            Just(OptOut::No),
            object
                .clone()
                .prop_map(|object| OptOut::OptedOut { object }),
            (object, ".{0,6}").prop_map(|(object, value)| OptOut::Malformed { object, value }),
        ]
    }

    fn paused_by() -> impl Strategy<Value = Option<PausedBy>> {
        proptest::option::of(prop_oneof![
            Just(PausedBy::ClusterSpec),
            Just(PausedBy::ClusterAnnotation),
            Just(PausedBy::MachineAnnotation),
        ])
    }

    fn minutes() -> impl Strategy<Value = Duration> {
        (0u64..1_000).prop_map(|minutes| MINUTE * u32::try_from(minutes).unwrap())
    }

    fn footprint() -> impl Strategy<Value = FootprintState> {
        prop_oneof![
            (
                proptest::option::of(minutes()),
                proptest::option::of(minutes())
            )
                .prop_map(|(unreachable_for, misconfigured_for)| {
                    FootprintState::Recorded(HarvesterRecord {
                        unreachable_for,
                        misconfigured_for,
                    })
                }),
            minutes().prop_map(|waited| FootprintState::Missing { waited }),
        ]
    }

    fn failure() -> impl Strategy<Value = WriteFailure> {
        prop_oneof![
            Just(WriteFailure::VmNotFound),
            Just(WriteFailure::Unreachable),
            Just(WriteFailure::Misconfigured),
        ]
    }

    fn reason() -> impl Strategy<Value = Reason> {
        prop_oneof![
            Just(Reason::ClusterDeletion),
            Just(Reason::ScaleDown),
            Just(Reason::Unknown),
        ]
    }

    fn deleting_machine() -> impl Strategy<Value = DeletingMachine> {
        (
            reason(),
            opt_out(),
            paused_by(),
            footprint(),
            proptest::option::of(minutes()),
            minutes(),
            proptest::option::of(minutes()),
            minutes(),
        )
            .prop_map(
                |(
                    reason,
                    opt_out,
                    paused_by,
                    footprint,
                    hook_timeout,
                    footprint_wait,
                    inventory,
                    inventory_wait,
                )| {
                    DeletingMachine {
                        reason,
                        opt_out,
                        paused_by,
                        footprint,
                        hook_timeout,
                        footprint_wait,
                        inventory: inventory.map_or(InventoryState::Taken, |waited| {
                            InventoryState::Pending { waited }
                        }),
                        inventory_wait,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn a_deleting_machine_never_gets_a_hook(infrastructure in infrastructure()) {
            let machine = MachineFacts { infrastructure, deleting: true };
            prop_assert_eq!(add_hook(&machine), AddHook::Skip(NoHookReason::Deleting));
        }

        #[test]
        fn only_living_harvester_machines_get_a_hook(
            infrastructure in infrastructure(),
            deleting: bool,
        ) {
            let wanted = !deleting
                && infrastructure.group == HARVESTER_MACHINE_GROUP
                && infrastructure.kind == HARVESTER_MACHINE_KIND;
            let machine = MachineFacts { infrastructure, deleting };
            prop_assert_eq!(add_hook(&machine) == AddHook::Add, wanted);
        }

        /// Waiting for the final inventory holds only a cluster deletion's hook, and only until
        /// the Machine has been deleting for the inventory's bound.
        #[test]
        fn the_inventory_wait_is_bounded(machine in deleting_machine()) {
            if let HookDecision::Wait(WaitReason::InventoryPending { waited }) = deleting_machine_hook(&machine) {
                prop_assert_eq!(machine.reason, Reason::ClusterDeletion);
                prop_assert!(waited < machine.inventory_wait);
                prop_assert_eq!(machine.inventory, InventoryState::Pending { waited });
            }
        }

        #[test]
        fn frozen_always_waits(machine in deleting_machine()) {
            let decision = deleting_machine_hook(&machine);
            if let Some(by) = machine.paused_by {
                prop_assert_eq!(decision, HookDecision::Wait(WaitReason::Frozen(by)));
            } else {
                prop_assert!(!matches!(decision, HookDecision::Wait(WaitReason::Frozen(_))));
            }
        }

        #[test]
        fn a_malformed_opt_out_decides_as_no_opt_out(
            machine in deleting_machine(),
            value in ".{0,6}",
        ) {
            let malformed = DeletingMachine {
                opt_out: OptOut::Malformed { object: ClusterObject::Capi, value },
                ..machine.clone()
            };
            let consenting = DeletingMachine { opt_out: OptOut::No, ..machine };
            prop_assert_eq!(
                deleting_machine_hook(&malformed),
                deleting_machine_hook(&consenting)
            );
        }

        #[test]
        fn an_opted_out_cluster_never_gets_an_intent(
            machine in deleting_machine(),
            capi: bool,
        ) {
            let object = if capi { ClusterObject::Capi } else { ClusterObject::Provisioning };
            let machine = DeletingMachine {
                opt_out: OptOut::OptedOut { object },
                paused_by: None,
                ..machine
            };
            prop_assert_eq!(
                deleting_machine_hook(&machine),
                HookDecision::RemoveHookOptedOut { object }
            );
        }

        #[test]
        fn a_failed_write_never_waits_past_the_timeout(
            machine in deleting_machine(),
            failure in failure(),
        ) {
            let failing_for = match (machine.footprint, failure) {
                (FootprintState::Recorded(record), WriteFailure::Misconfigured) => {
                    record.misconfigured_for.unwrap_or_default()
                }
                (FootprintState::Recorded(record), _) => record.unreachable_for.unwrap_or_default(),
                (FootprintState::Missing { .. }, _) => Duration::ZERO,
            };
            let decided = after_failed_write(&machine, failure);
            if machine.hook_timeout.is_some_and(|timeout| failing_for >= timeout) {
                prop_assert!(!matches!(decided, AfterFailedWrite::Wait { .. }), "{:?}", decided);
            }
            if failure == WriteFailure::VmNotFound {
                prop_assert_eq!(decided, AfterFailedWrite::RemoveHookNothingToProtect);
            }
            if matches!(machine.footprint, FootprintState::Missing { .. }) {
                prop_assert!(!matches!(decided, AfterFailedWrite::Wait { .. }), "{:?}", decided);
            }
        }

        #[test]
        fn a_missing_footprint_is_waited_for_no_longer_than_the_bound(
            machine in deleting_machine(),
        ) {
            if let (FootprintState::Missing { waited }, HookDecision::Wait(why)) =
                (machine.footprint, deleting_machine_hook(&machine))
            {
                prop_assert!(
                    waited < machine.footprint_wait || matches!(why, WaitReason::Frozen(_)),
                    "{:?}", why
                );
            }
        }

        #[test]
        fn a_scale_down_never_waits_unless_frozen(machine in deleting_machine()) {
            let machine = DeletingMachine { reason: Reason::ScaleDown, ..machine };
            if let HookDecision::Wait(why) = deleting_machine_hook(&machine) {
                prop_assert!(matches!(why, WaitReason::Frozen(_)), "{:?}", why);
            }
        }

        #[test]
        fn no_decision_acts_on_cluster_deletion_unless_the_deletion_is_confirmed(
            observed in live_observation(),
            machine in deleting_machine(),
        ) {
            let machine = DeletingMachine {
                reason: machine_reason(&identity(), &observed).reason,
                ..machine
            };
            let confirmed = confirm_deletion(&identity(), &observed) == Deletion::Confirmed;
            match deleting_machine_hook(&machine) {
                HookDecision::WriteIntentThenRemoveHook { reason } => {
                    prop_assert!(reason == Reason::Unknown || confirmed);
                    let missing = matches!(machine.footprint, FootprintState::Missing { .. });
                    prop_assert!(reason == Reason::ClusterDeletion || missing);
                }
                HookDecision::RemoveHookThenWriteIntent { reason } => {
                    prop_assert_ne!(reason, Reason::ClusterDeletion);
                }
                HookDecision::Wait(_) | HookDecision::RemoveHookOptedOut { .. } => {}
            }
        }
    }
}
