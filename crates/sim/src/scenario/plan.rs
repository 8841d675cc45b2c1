use gleaner_world::ClusterName;

use crate::{csi::Reclaim, scenario::Attachment};

/// The Rancher namespace suffix clusters go to unless they say otherwise.
pub(crate) const DEFAULT_NAMESPACE: &str = "fleet";

/// A guest cluster to create: where it lives in Rancher, its pools, volumes and load balancers.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub name: String,
    /// The management cluster of its Rancher installation.
    pub installation: String,
    /// Suffix of its Rancher namespace (`<prefix>-<suffix>`).
    pub rancher_namespace: String,
    /// Machines of its first pool, on the main Harvester.
    pub machines: usize,
    /// Explicit names for the first pool's first Machines (e.g. dotted ones), as
    /// [`PoolSpec::machine_names`](crate::rancher::PoolSpec::machine_names).
    pub machine_names: Vec<String>,
    /// A second pool with its own cloud credential: (Harvester world cluster, machines).
    pub second_pool: Option<(String, usize)>,
    pub volumes: Vec<VolumePlan>,
    /// Names of guest LoadBalancer Services.
    pub load_balancers: Vec<String>,
}

impl ClusterPlan {
    pub fn new(name: &str, machines: usize) -> Self {
        Self {
            name: name.to_owned(),
            installation: ClusterName::RANCHER.to_owned(),
            rancher_namespace: DEFAULT_NAMESPACE.to_owned(),
            machines,
            machine_names: Vec::new(),
            second_pool: None,
            volumes: Vec::new(),
            load_balancers: Vec::new(),
        }
    }

    pub fn in_namespace(mut self, suffix: &str) -> Self {
        self.rancher_namespace = suffix.to_owned();
        self
    }

    pub fn in_installation(mut self, management_cluster: &str) -> Self {
        self.installation = management_cluster.to_owned();
        self
    }

    /// Names the first pool's first Machines instead of letting the MachineSet generate them.
    pub fn machine_names(mut self, names: &[&str]) -> Self {
        self.machine_names = names.iter().map(|name| (*name).to_owned()).collect();
        self
    }

    pub fn pool_on(mut self, harvester: &str, machines: usize) -> Self {
        self.second_pool = Some((harvester.to_owned(), machines));
        self
    }

    pub fn volume(mut self, volume: VolumePlan) -> Self {
        self.volumes.push(volume);
        self
    }

    pub fn load_balancer(mut self, service: &str) -> Self {
        self.load_balancers.push(service.to_owned());
        self
    }
}

/// A guest volume: RWO, reclaim `Delete`, never attached, no snapshot, unless told otherwise.
#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub name: String,
    pub reclaim: Reclaim,
    pub attachment: Attachment,
    pub rwx: bool,
    pub annotated_retain: bool,
    pub snapshots: usize,
}

impl VolumePlan {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            reclaim: Reclaim::Delete,
            attachment: Attachment::NeverAttached,
            rwx: false,
            annotated_retain: false,
            snapshots: 0,
        }
    }

    pub fn hotplugged(mut self) -> Self {
        self.attachment = Attachment::Hotplugged;
        self
    }

    pub fn unattached(mut self) -> Self {
        self.attachment = Attachment::Unattached;
        self
    }

    /// The guest's StorageClass says `Retain`.
    pub fn retain(mut self) -> Self {
        self.reclaim = Reclaim::Retain;
        self
    }

    /// A guest RWX volume (Longhorn over NFS; never hot-plugged).
    pub fn rwx(mut self) -> Self {
        self.rwx = true;
        self
    }

    /// The host PVC carries `gleaner.io/retain: "true"`.
    pub fn annotated_retain(mut self) -> Self {
        self.annotated_retain = true;
        self
    }

    pub fn snapshots(mut self, count: usize) -> Self {
        self.snapshots = count;
        self
    }
}
