//! gleaner's sans-IO core: plain structs of observed facts in, decisions with reasons out.
//!
//! Nothing here performs I/O, awaits, or talks to an API server; the controllers observe,
//! call these functions, and act on what they return (design.md §6).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
mod testing;

pub mod deletion;
pub mod freeze;
pub mod harvester;
pub mod hooks;
pub mod identity;
pub mod intent;
pub mod keys;
pub mod naming;
pub mod optout;
pub mod reason;
pub mod retain;

pub use deletion::{ClusterObservation, Deletion, LiveObservation, NotConfirmed, confirm_deletion};
pub use freeze::{PauseFacts, PausedBy, paused_by};
pub use harvester::{CredentialRef, CredentialRefError, pool_credential};
pub use hooks::{
    AddHook, DeletingMachine, HookDecision, InfrastructureRef, MachineFacts, NoHookReason,
    Reachability, WaitReason, add_hook, deleting_machine_hook,
};
pub use identity::ClusterIdentity;
pub use intent::{Intent, IntentError};
pub use naming::{DEFAULT_VM_NAMESPACE, VmRef, vm_name, vm_of};
pub use optout::{ClusterObject, OptOut, ParseBoolError, opt_out, parse_bool};
pub use reason::{Explanation, MachineReason, Reason, UnknownReason, machine_reason};
pub use retain::{Retention, retention};
