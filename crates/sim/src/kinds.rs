//! The foreign kinds the simulators read and write, as dynamic API resources (their upstream
//! CRDs are what the apiservers validate against; no Rust type could say more).

use gleaner_world::CapiVersion;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn persistent_volume_claim() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&())
}

pub fn provisioning_cluster() -> ApiResource {
    resource("provisioning.cattle.io", "v1", "Cluster", "clusters")
}

pub fn harvester_machine() -> ApiResource {
    resource(
        "rke-machine.cattle.io",
        "v1",
        "HarvesterMachine",
        "harvestermachines",
    )
}

pub fn harvester_machine_template() -> ApiResource {
    resource(
        "rke-machine.cattle.io",
        "v1",
        "HarvesterMachineTemplate",
        "harvestermachinetemplates",
    )
}

pub fn harvester_config() -> ApiResource {
    resource(
        "rke-machine-config.cattle.io",
        "v1",
        "HarvesterConfig",
        "harvesterconfigs",
    )
}

/// `rke.cattle.io/v1` kinds Rancher gives Cluster API: the infrastructure cluster, the control
/// plane, and the bootstrap configs (CRDs in `crates/world/crds/rancher` and upstream's).
pub fn rke_cluster() -> ApiResource {
    resource("rke.cattle.io", "v1", "RKECluster", "rkeclusters")
}

pub fn rke_control_plane() -> ApiResource {
    resource("rke.cattle.io", "v1", "RKEControlPlane", "rkecontrolplanes")
}

pub fn rke_bootstrap() -> ApiResource {
    resource("rke.cattle.io", "v1", "RKEBootstrap", "rkebootstraps")
}

pub fn rke_bootstrap_template() -> ApiResource {
    resource(
        "rke.cattle.io",
        "v1",
        "RKEBootstrapTemplate",
        "rkebootstraptemplates",
    )
}

pub fn setting() -> ApiResource {
    resource("management.cattle.io", "v3", "Setting", "settings")
}

pub fn virtual_machine() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

pub fn virtual_machine_instance() -> ApiResource {
    resource(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}

/// `harvesterhci.io/v1beta1` `VirtualMachineImage` (the CRD in `crates/world/crds/harvester`).
pub fn virtual_machine_image() -> ApiResource {
    resource(
        "harvesterhci.io",
        "v1beta1",
        "VirtualMachineImage",
        "virtualmachineimages",
    )
}

/// Cluster API kinds at the version the management cluster serves.
#[derive(Clone, Copy, Debug)]
pub struct Capi {
    pub version: CapiVersion,
}

impl Capi {
    pub fn api_version(&self) -> &'static str {
        match self.version {
            CapiVersion::V1beta1 => "v1beta1",
            CapiVersion::V1beta2 => "v1beta2",
        }
    }

    fn kind(&self, kind: &str, plural: &str) -> ApiResource {
        resource("cluster.x-k8s.io", self.api_version(), kind, plural)
    }

    pub fn cluster(&self) -> ApiResource {
        self.kind("Cluster", "clusters")
    }

    pub fn machine_deployment(&self) -> ApiResource {
        self.kind("MachineDeployment", "machinedeployments")
    }

    pub fn machine_set(&self) -> ApiResource {
        self.kind("MachineSet", "machinesets")
    }

    pub fn machine(&self) -> ApiResource {
        self.kind("Machine", "machines")
    }
}

pub fn namespaced(client: &Client, namespace: &str, resource: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, resource)
}

/// `loadbalancer.harvesterhci.io/v1beta1` `LoadBalancer` (Harvester's load balancers).
pub fn load_balancer() -> ApiResource {
    resource(
        "loadbalancer.harvesterhci.io",
        "v1beta1",
        "LoadBalancer",
        "loadbalancers",
    )
}

/// `harvesterhci.io/v1beta1` `NetworkFilesystem` (networkfs-manager's CRD).
pub fn network_filesystem() -> ApiResource {
    resource(
        "harvesterhci.io",
        "v1beta1",
        "NetworkFilesystem",
        "networkfilesystems",
    )
}

/// `snapshot.storage.k8s.io/v1` kinds (external-snapshotter v8.3.0's CRDs).
pub fn volume_snapshot() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

pub fn volume_snapshot_class() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}

pub fn volume_snapshot_content() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}
