//! Every label and annotation key gleaner reads or writes (design.md §4 and §5).

/// The prefix of every Cluster API pre-terminate hook annotation on a Machine.
pub const HOOK_PREFIX: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/";
/// gleaner's own pre-terminate hook annotation on a CAPI Machine.
pub const HOOK_ANNOTATION: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/gleaner";
/// The value of [`HOOK_ANNOTATION`].
pub const HOOK_VALUE: &str = "gleaner";

/// The VM annotation holding gleaner's [`Intent`](crate::Intent) as JSON.
pub const INTENT_ANNOTATION: &str = "gleaner.io/intent";
/// The VM annotation that tells the node driver and Harvester to remove guest volumes too.
/// gleaner always writes [`REMOVE_ALL_VALUE`].
pub const REMOVE_ALL_ANNOTATION: &str = "harvesterhci.io/removeAllPersistentVolumeClaims";
/// The value gleaner writes for [`REMOVE_ALL_ANNOTATION`]: upstream then deletes only the VM's
/// own disks, and gleaner alone reclaims guest objects.
pub const REMOVE_ALL_VALUE: &str = "false";

/// The label naming the Footprint that attributed a host object.
pub const FOOTPRINT_LABEL: &str = "gleaner.io/footprint";
/// The annotation with the readable identity of the cluster a host object belongs to.
pub const CLUSTER_ANNOTATION: &str = "gleaner.io/cluster";
/// The annotation on a host object gleaner kept, with the reason as its value.
pub const KEPT_ANNOTATION: &str = "gleaner.io/kept";

/// On a host PVC or a Footprint: ParseBool true means never delete.
pub const RETAIN_ANNOTATION: &str = "gleaner.io/retain";
/// On a Footprint that never recorded a VM: ParseBool true is an operator saying the cluster's
/// VMs are gone, which releases the `NoVmsRecorded` hold (design.md §5: an empty list of VMs is
/// not "all gone" on gleaner's word alone).
pub const VMS_GONE_ANNOTATION: &str = "gleaner.io/vms-gone";
/// On either Cluster object: ParseBool true opts the cluster out of cleanup.
pub const SKIP_CLEANUP_ANNOTATION: &str = "harvesterhci.io/skipHarvesterMachineProvisionCleanup";
/// Cluster API's pause annotation: its presence, whatever the value, pauses the object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gleaners_hook_carries_the_cluster_api_prefix() {
        assert_eq!(HOOK_ANNOTATION.strip_prefix(HOOK_PREFIX), Some(HOOK_VALUE));
    }
}
