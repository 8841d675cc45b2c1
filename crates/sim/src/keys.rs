//! Upstream's annotation, label and finalizer keys, quoted exactly (design.md §2-4).

/// Rancher's handler writes `"true"` here; the node driver and Harvester's load-balancer
/// controller act only on exactly `"true"`.
pub const REMOVE_ALL_PVCS: &str = "harvesterhci.io/removeAllPersistentVolumeClaims";
/// The node driver lists the PVCs to delete here (comma separated); Harvester's VM controller
/// deletes them when the VM goes.
pub const REMOVED_PVCS: &str = "harvesterhci.io/removedPersistentVolumeClaims";
pub const VOLUME_CLAIM_TEMPLATES: &str = "harvesterhci.io/volumeClaimTemplates";
pub const SKIP_CLEANUP: &str = "harvesterhci.io/skipHarvesterMachineProvisionCleanup";

pub const LABEL_CREATOR: &str = "harvesterhci.io/creator";
pub const CREATOR_DRIVER: &str = "docker-machine-driver-harvester";
pub const LABEL_MACHINE_SET_NAME: &str = "harvesterhci.io/machineSetName";
pub const LABEL_NODE_POOL: &str = "nodepool.harvesterhci.io/name";
pub const LABEL_GUEST_CLUSTER: &str = "guestcluster.harvesterhci.io/name";
pub const LABEL_VM_NAME: &str = "harvesterhci.io/vmName";

pub const FINALIZER_VM_CLEANUP: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";
pub const FINALIZER_KUBEVIRT_VM: &str = "kubevirt.io/virtualMachineControllerFinalize";
pub const FINALIZER_HARVESTER_PVC: &str = "wrangler.cattle.io/persistentvolumeclaim-controller";
pub const GOLDEN_IMAGE: &str = "harvesterhci.io/goldenImage";
/// On a PVC made from a VM image: that image, `namespace/name`.
pub const IMAGE_ID: &str = "harvesterhci.io/imageId";

pub const LABEL_CAPI_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
pub const LABEL_CAPI_DEPLOYMENT_NAME: &str = "cluster.x-k8s.io/deployment-name";
pub const LABEL_CAPI_SET_NAME: &str = "cluster.x-k8s.io/set-name";
pub const LABEL_RKE_CLUSTER_NAME: &str = "rke.cattle.io/cluster-name";
pub const LABEL_RKE_POOL_NAME: &str = "rke.cattle.io/rke-machine-pool-name";
pub const LABEL_RKE_CAPI_MACHINE_NAME: &str = "rke.cattle.io/capi-machine-name";
pub const CAPI_PAUSED: &str = "cluster.x-k8s.io/paused";
pub const PRE_TERMINATE_HOOK_PREFIX: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/";
pub const FINALIZER_CAPI_MACHINE: &str = "machine.cluster.x-k8s.io";
pub const FINALIZER_CAPI_CLUSTER: &str = "cluster.cluster.x-k8s.io";

/// The key of Rancher's `<cluster>-kubeconfig` Secret that holds the guest cluster's kubeconfig.
pub const GUEST_KUBECONFIG_KEY: &str = "value";

pub const CLOUD_CREDENTIAL_KUBECONFIG: &str = "harvestercredentialConfig-kubeconfigContent";
/// A test-only key of a cloud credential: the kubeconfig the simulated Rancher actors (node
/// driver, remove job, cleanup handler) use instead of the credential's own, so a test can give
/// gleaner a narrower Harvester identity than the driver's (in real Rancher both share one).
pub const SIMULATED_RANCHER_KUBECONFIG: &str = "gleaner-sim.rancher-kubeconfig";
pub const CLOUD_CREDENTIAL_NAMESPACE: &str = "cattle-global-data";
/// Rancher's machine-provision controller holds a HarvesterMachine until its remove job is done.
pub const FINALIZER_RANCHER_MACHINE: &str = "wrangler.cattle.io/machine-provision-remove";
/// Rancher holds a provisioning Cluster until its CAPI Cluster is gone.
pub const FINALIZER_RANCHER_CLUSTER: &str = "wrangler.cattle.io/provisioning-cluster-remove";

/// On a Harvester LoadBalancer: the guest cluster's name as its cloud provider was given it.
pub const LABEL_LB_CLUSTER: &str = "cloudprovider.harvesterhci.io/cluster";
/// On a Harvester LoadBalancer: the UID of the guest Service it serves.
pub const LB_SERVICE_UUID: &str = "cloudprovider.harvesterhci.io/service-uuid";
/// Harvester's load-balancer controller (a wrangler OnRemove handler) holds every LoadBalancer.
pub const FINALIZER_LB_CONTROLLER: &str = "wrangler.cattle.io/harvester-lb-controller";
/// Harvester's load-balancer VM controller (a wrangler OnRemove handler, v1.8+) holds every VM.
pub const FINALIZER_LB_VM_CONTROLLER: &str = "wrangler.cattle.io/harvester-lb-vm-controller";
/// The guest's service controller holds a LoadBalancer Service until its load balancer is gone.
pub const FINALIZER_SERVICE_LB_CLEANUP: &str = "service.kubernetes.io/load-balancer-cleanup";

/// On the host VolumeSnapshot the CSI driver's CreateSnapshot makes: the source host PVC's
/// StorageClass and volume mode.
pub const LABEL_SNAP_HOST_SC: &str = "harvesterhci.io/snapHostSC";
pub const LABEL_SNAP_HOST_VOLUME_MODE: &str = "harvesterhci.io/snapHostVolumeMode";
/// The external-snapshotter's snapshot controller protects a VolumeSnapshot with these.
pub const FINALIZER_SNAPSHOT_AS_SOURCE: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
pub const FINALIZER_SNAPSHOT_BOUND: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// The external-snapshotter's, on every bound VolumeSnapshotContent (the sidecar takes it off once a
/// deleted content's snapshot is gone from the storage).
pub const FINALIZER_SNAPSHOT_CONTENT_BOUND: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
