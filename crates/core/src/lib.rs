//! gleaner's sans-IO core: plain structs of observed facts in, decisions with reasons out.
//!
//! Nothing here performs I/O, awaits, or talks to an API server; the controllers observe,
//! call these functions, and act on what they return (design.md §6).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
mod testing;

pub mod attribution;
pub mod audit;
pub mod conditions;
pub mod deletion;
pub mod freeze;
pub mod guest;
pub mod harvester;
pub mod hooks;
pub mod identity;
pub mod intent;
pub mod keys;
pub mod naming;
pub mod optout;
pub mod quantity;
pub mod reason;
pub mod reclaim;
pub mod retain;
pub mod vms;

pub use conditions::{ConditionReason, ConditionState, ConditionType, Health, Inventory};
pub use deletion::{ClusterObservation, Deletion, LiveObservation, NotConfirmed, confirm_deletion};
pub use freeze::{PauseFacts, PausedBy, paused_by};
pub use harvester::{
    CredentialRef, CredentialRefError, HarvesterCheck, check_harvester, pool_credential,
};
pub use hooks::{
    AddHook, AfterFailedWrite, DeletingMachine, FootprintState, HarvesterRecord, HookDecision,
    InfrastructureRef, InventoryState, MachineFacts, NoHookReason, WaitReason, WriteFailure,
    add_hook, after_failed_write, deleting_machine_hook,
};
pub use identity::ClusterIdentity;
pub use intent::{Intent, IntentError};
pub use naming::{DEFAULT_VM_NAMESPACE, VmRef, vm_name, vm_namespace, vm_of};
pub use optout::{ClusterObject, OptOut, ParseBoolError, opt_out, parse_bool};
pub use reason::{Explanation, MachineReason, Reason, UnknownReason, machine_reason};
pub use retain::{Retention, retention};
pub use vms::{IntentSeen, Named, Seen, VmRecord};
