//! Every reason gleaner's Kubernetes Events carry, with its type: one enum, so the README's table
//! and the code cannot drift apart (a test reads the README).

use kube::runtime::events::EventType;

macro_rules! event_reasons {
    ($($reason:ident: $type_:ident, $meaning:literal;)*) => {
        /// The `reason` of an Event gleaner publishes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EventReason {
            $(#[doc = $meaning] $reason,)*
        }

        impl EventReason {
            /// Every reason, in the README's order.
            pub const ALL: &[EventReason] = &[$(EventReason::$reason,)*];

            /// As it is written on the Event.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventReason::$reason => stringify!($reason),)*
                }
            }

            pub fn type_(self) -> EventType {
                match self {
                    $(EventReason::$reason => EventType::$type_,)*
                }
            }

            /// What it says, for people.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(EventReason::$reason => $meaning,)*
                }
            }
        }
    };
}

event_reasons! {
    ClusterDeletion: Normal, "A Machine goes because its cluster is deleted; the intent is on its VM.";
    ScaleDown: Normal, "A Machine goes while its cluster lives (a scale-down or a reprovision).";
    Unknown: Normal, "A Machine goes and why cannot be told; the protective intent is on its VM.";
    VmNotFound: Normal, "A deleting Machine's VM is not on Harvester: nothing to protect, its hook goes.";
    OptedOut: Normal, "The cluster opted out of cleanup: gleaner lets its Machines go and deletes nothing.";
    Tracking: Normal, "gleaner made the cluster's Footprint.";
    Inventoried: Normal, "The final inventory of a deleted cluster's guest ran.";
    Kept: Normal, "A recorded object stays for good, with the reason (also `gleaner.io/kept` on it).";
    Deleting: Normal, "gleaner is about to delete a recorded object, and why.";
    WouldDelete: Normal, "In a dry run: gleaner would delete this object.";
    WouldKeep: Normal, "In a dry run: gleaner would keep this object, with the reason.";
    MalformedOptOut: Warning, "The opt-out annotation does not parse: treated as opted out.";
    MalformedIntent: Warning, "A VM's `gleaner.io/intent` does not parse.";
    MalformedCredential: Warning, "A pool's cloud credential reference is not `namespace:name`.";
    FootprintNotWritten: Warning, "The cluster's Footprint cannot be written (no install-uuid, no CRD, no permission).";
    FootprintMissing: Warning, "A deleting Machine's cluster has no Footprint yet; it waits at most `--footprint-wait`.";
    FootprintFull: Warning, "The Footprint's status is full: objects found since are not recorded, so never deleted.";
    IntentNotWritten: Warning, "The best-effort intent of a scale-down could not be written.";
    HarvesterUnreachable: Warning, "A cluster deletion's hook waits: Harvester does not answer.";
    HarvesterMisconfigured: Warning, "A cluster deletion's hook waits: Harvester refuses the credential, or it is unusable.";
    HarvesterChanged: Warning, "A credential now reaches another Harvester than the one recorded: refused.";
    ProtectionLapsed: Warning, "`--hook-timeout` let a hook go without the intent: upstream may delete hot-plugged volumes.";
    GuestUnreachable: Warning, "The guest cluster does not answer, or its kubeconfig Secret is missing or unusable.";
    InventoryIncomplete: Warning, "The final inventory did not finish: what was learnt while the cluster lived stands.";
    AttributionConflict: Warning, "An object is tied to another cluster too: never deleted.";
    IdentityChanged: Warning, "Both Cluster objects exist with other UIDs while the VMs run (a Rancher restore?): nothing is deleted.";
    WebhookUnavailable: Warning, "Harvester's admission webhook cannot be called: the reclaim waits for it.";
    ReclaimFailed: Warning, "A reclaim pass failed; it deletes nothing on a guess and is tried again.";
}

impl From<gleaner_core::Reason> for EventReason {
    fn from(reason: gleaner_core::Reason) -> Self {
        match reason {
            gleaner_core::Reason::ClusterDeletion => Self::ClusterDeletion,
            gleaner_core::Reason::ScaleDown => Self::ScaleDown,
            gleaner_core::Reason::Unknown => Self::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intents_reason_is_its_events_reason() {
        for reason in [
            gleaner_core::Reason::ClusterDeletion,
            gleaner_core::Reason::ScaleDown,
            gleaner_core::Reason::Unknown,
        ] {
            assert_eq!(EventReason::from(reason).as_str(), reason.as_str());
        }
    }
}
