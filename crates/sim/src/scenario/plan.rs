use gleaner_world::ClusterName;

use crate::{
    csi::Reclaim,
    scenario::{Attachment, Traits},
};

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
    /// A guest apiserver even without volumes or load balancers.
    pub guest: bool,
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
            guest: false,
        }
    }

    /// Gives the cluster its own guest apiserver (and so its `<cluster>-kubeconfig` Secret)
    /// even if it plans no volume or load balancer, e.g. for volumes added later.
    pub fn with_guest(mut self) -> Self {
        self.guest = true;
        self
    }

    /// Whether the cluster gets a guest apiserver of its own: one that asks, or that has
    /// volumes or load balancers to live there.
    pub fn needs_guest(&self) -> bool {
        self.guest || !self.volumes.is_empty() || !self.load_balancers.is_empty()
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

/// A guest volume: RWO, reclaim `Delete`, never attached, no snapshot (snapshots deleted with
/// their guest VolumeSnapshot), unless told otherwise.
#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub name: String,
    pub reclaim: Reclaim,
    pub attachment: Attachment,
    pub rwx: bool,
    pub annotated_retain: bool,
    pub snapshots: usize,
    /// The deletionPolicy of its snapshots' guest VolumeSnapshotContents.
    pub snapshot_policy: Reclaim,
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
            snapshot_policy: Reclaim::Delete,
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

    /// Its snapshots are taken in a guest class with deletionPolicy `Retain`: their host
    /// VolumeSnapshots must outlive their guest VolumeSnapshots.
    pub fn retained_snapshots(mut self) -> Self {
        self.snapshot_policy = Reclaim::Retain;
        self
    }

    /// What the scenario knows of the volume's host objects (its host PVC, a NetworkFilesystem).
    /// A volume holding snapshots whose class says `Retain` is retained too: Longhorn keeps an
    /// in-cluster snapshot inside its volume, so deleting the volume would lose the snapshot
    /// the guest asked to keep.
    pub(crate) fn traits(&self) -> Traits {
        let holds_retained_snapshots =
            self.snapshots > 0 && self.snapshot_policy == Reclaim::Retain;
        Traits {
            annotated_retain: self.annotated_retain,
            retained: self.reclaim == Reclaim::Retain || holds_retained_snapshots,
            rwx: self.rwx,
            attachment: self.attachment,
            ..Traits::default()
        }
    }

    /// What the scenario knows of the host VolumeSnapshots of its snapshots: the volume's
    /// traits, retained also when the snapshots themselves are.
    pub(crate) fn snapshot_traits(&self) -> Traits {
        let volume = self.traits();
        Traits {
            snapshot: true,
            retained: volume.retained || self.snapshot_policy == Reclaim::Retain,
            ..volume
        }
    }
}
