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

/// Whether the Harvester a Machine's VM runs on can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// It answers.
    Reachable,
    /// It has not answered for this long.
    Unreachable {
        /// How long it has been unreachable.
        unreachable_for: Duration,
    },
}

/// The facts about a deleting Machine that carries gleaner's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletingMachine {
    /// Why it goes ([`machine_reason`](crate::machine_reason)).
    pub reason: Reason,
    /// The cluster's opt-out ([`opt_out`](crate::opt_out)).
    pub opt_out: OptOut,
    /// What freezes it, if anything ([`paused_by`](crate::paused_by)).
    pub paused_by: Option<PausedBy>,
    /// Whether its Harvester can be reached.
    pub harvester: Reachability,
    /// How long the hook may wait for an unreachable Harvester; `None` waits as long as it takes.
    pub hook_timeout: Option<Duration>,
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
    /// Write the `ClusterDeletion` intent and `"false"` on the VM; once written, remove the hook.
    WriteIntentThenRemoveHook,
    /// The hook timeout passed while Harvester was unreachable: remove the hook without writing,
    /// and set `ProtectionLapsed` on the Footprint.
    RemoveHookLapsed {
        /// How long Harvester had been unreachable.
        unreachable_for: Duration,
    },
}

/// Why the hook stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The Machine is frozen by a Cluster API pause.
    Frozen(PausedBy),
    /// The cluster is being deleted and its Harvester cannot be reached to write the intent.
    HarvesterUnreachable {
        /// How long it has been unreachable.
        unreachable_for: Duration,
    },
}

/// Decides what to do with gleaner's hook on a deleting Machine.
///
/// A freeze waits, whatever else holds. An opted-out cluster loses the hook and gets nothing
/// written; a malformed opt-out is not an opt-out here (what gleaner writes only protects).
/// `ScaleDown` and `Unknown` remove the hook at once. `ClusterDeletion` keeps it until the intent
/// is written, waiting for an unreachable Harvester until the optional timeout passes.
pub fn deleting_machine_hook(machine: &DeletingMachine) -> HookDecision {
    if let Some(by) = machine.paused_by {
        return HookDecision::Wait(WaitReason::Frozen(by));
    }
    if let OptOut::OptedOut { object } = machine.opt_out {
        return HookDecision::RemoveHookOptedOut { object };
    }
    match (machine.reason, machine.harvester) {
        (Reason::ScaleDown | Reason::Unknown, _) => HookDecision::RemoveHookThenWriteIntent {
            reason: machine.reason,
        },
        (Reason::ClusterDeletion, Reachability::Reachable) => {
            HookDecision::WriteIntentThenRemoveHook
        }
        (Reason::ClusterDeletion, Reachability::Unreachable { unreachable_for }) => {
            if machine
                .hook_timeout
                .is_some_and(|timeout| unreachable_for >= timeout)
            {
                HookDecision::RemoveHookLapsed { unreachable_for }
            } else {
                HookDecision::Wait(WaitReason::HarvesterUnreachable { unreachable_for })
            }
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
            harvester: Reachability::Reachable,
            hook_timeout: None,
        }
    }

    fn unreachable(minutes: u32) -> Reachability {
        Reachability::Unreachable {
            unreachable_for: MINUTE * minutes,
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
    fn scale_down_and_unknown_remove_the_hook_at_once() {
        for reason in [Reason::ScaleDown, Reason::Unknown] {
            let machine = DeletingMachine {
                harvester: unreachable(5),
                ..deleting(reason)
            };
            assert_eq!(
                deleting_machine_hook(&machine),
                HookDecision::RemoveHookThenWriteIntent { reason }
            );
        }
    }

    #[test]
    fn cluster_deletion_writes_the_intent_before_removing_the_hook() {
        assert_eq!(
            deleting_machine_hook(&deleting(Reason::ClusterDeletion)),
            HookDecision::WriteIntentThenRemoveHook
        );
    }

    #[test]
    fn cluster_deletion_waits_for_an_unreachable_harvester_without_a_timeout() {
        let machine = DeletingMachine {
            harvester: unreachable(60 * 24 * 365),
            ..deleting(Reason::ClusterDeletion)
        };
        assert_eq!(
            deleting_machine_hook(&machine),
            HookDecision::Wait(WaitReason::HarvesterUnreachable {
                unreachable_for: MINUTE * 60 * 24 * 365
            })
        );
    }

    #[test]
    fn the_hook_lapses_once_the_timeout_passes() {
        let waiting = DeletingMachine {
            harvester: unreachable(9),
            hook_timeout: Some(MINUTE * 10),
            ..deleting(Reason::ClusterDeletion)
        };
        assert!(matches!(
            deleting_machine_hook(&waiting),
            HookDecision::Wait(WaitReason::HarvesterUnreachable { .. })
        ));
        let lapsed = DeletingMachine {
            harvester: unreachable(10),
            ..waiting
        };
        assert_eq!(
            deleting_machine_hook(&lapsed),
            HookDecision::RemoveHookLapsed {
                unreachable_for: MINUTE * 10
            }
        );
    }

    #[test]
    fn a_frozen_machine_waits_even_when_the_timeout_passed() {
        let machine = DeletingMachine {
            paused_by: Some(PausedBy::MachineAnnotation),
            harvester: unreachable(60),
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
                harvester: unreachable(5),
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
            HookDecision::WriteIntentThenRemoveHook
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

    fn reachability() -> impl Strategy<Value = Reachability> {
        prop_oneof![
            Just(Reachability::Reachable),
            (0u64..1_000_000).prop_map(|seconds| Reachability::Unreachable {
                unreachable_for: Duration::from_secs(seconds)
            }),
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
            reachability(),
            proptest::option::of((0u64..1_000_000).prop_map(Duration::from_secs)),
        )
            .prop_map(|(reason, opt_out, paused_by, harvester, hook_timeout)| {
                DeletingMachine {
                    reason,
                    opt_out,
                    paused_by,
                    harvester,
                    hook_timeout,
                }
            })
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
        fn the_hook_never_waits_past_the_timeout_unless_frozen(machine in deleting_machine()) {
            let decision = deleting_machine_hook(&machine);
            if let (
                Some(timeout),
                Reachability::Unreachable { unreachable_for },
                HookDecision::Wait(why),
            ) = (machine.hook_timeout, machine.harvester, decision)
            {
                prop_assert!(
                    unreachable_for < timeout || matches!(why, WaitReason::Frozen(_))
                );
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
                HookDecision::WriteIntentThenRemoveHook
                | HookDecision::RemoveHookLapsed { .. }
                | HookDecision::Wait(WaitReason::HarvesterUnreachable { .. }) => {
                    prop_assert!(confirmed);
                }
                HookDecision::RemoveHookThenWriteIntent { reason } => {
                    prop_assert_ne!(reason, Reason::ClusterDeletion);
                }
                HookDecision::Wait(WaitReason::Frozen(_))
                | HookDecision::RemoveHookOptedOut { .. } => {}
            }
        }
    }
}
