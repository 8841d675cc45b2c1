//! Scenarios: set up a world's Rancher installations, Harvesters and guest clusters, run
//! actions, then judge what is left against the ground truth the scenario itself recorded.

mod guest;
mod plan;
mod truth;

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use gleaner_world::testing::ensure_namespace;
use gleaner_world::{ClusterName, Player, World};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
};
use serde_json::json;

pub use plan::{ClusterPlan, VolumePlan};
pub use truth::{Attachment, Class, ClassSummary, Relation, Report, TrackedObject, Traits};

use crate::{
    Clock, Env, Error, Journal, Result,
    cloud_provider::CloudProvider,
    csi::{Csi, GuestVolume, HostObject, Reclaim},
    error::KubeContext,
    guest::{GuestApiserver, GuestCredential},
    harvester::{self, Harvester, HarvesterVersion},
    keys::VOLUME_CLAIM_TEMPLATES,
    kinds, naming,
    rancher::{GuestCluster, GuestClusterSpec, GuestMachine, PoolSpec, Rancher, RancherSettings},
    snapshots,
    snapshotter::{self, Storage},
    tasks::Tasks,
};
use guest::{ClusterGuest, FIRST_CREDENTIAL};

/// gleaner's own protection annotation on a host PVC.
pub const RETAIN: &str = "gleaner.io/retain";
const POOL: &str = "pool1";
const SECOND_POOL: &str = "pool2";
const SETTLE: Duration = Duration::from_secs(5);
const MIN_SETTLE: Duration = Duration::from_millis(300);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets up a scenario in namespaces named after `prefix`, so scenarios sharing a world keep
/// apart.
pub struct ScenarioBuilder {
    prefix: String,
    rancher: RancherSettings,
    harvester: HarvesterVersion,
    clock: Clock,
    csi_cluster_label: bool,
    load_balancer_controller: bool,
    lookalikes: usize,
    clusters: Vec<ClusterPlan>,
}

impl ScenarioBuilder {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            rancher: RancherSettings::default(),
            harvester: HarvesterVersion::default(),
            clock: Clock::real(),
            csi_cluster_label: false,
            load_balancer_controller: true,
            lookalikes: 0,
            clusters: Vec::new(),
        }
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn rancher(mut self, settings: RancherSettings) -> Self {
        self.rancher = settings;
        self
    }

    /// The unmerged CSI change: host PVCs labelled with their guest cluster's name.
    pub fn csi_cluster_label(mut self, on: bool) -> Self {
        self.csi_cluster_label = on;
        self
    }

    /// Harvester v1.8's load-balancer cleanup on VM removal (on by default).
    pub fn load_balancer_controller(mut self, on: bool) -> Self {
        self.load_balancer_controller = on;
        self
    }

    /// Host PVCs shaped like guest volumes, in the VM namespace, that no cluster made.
    pub fn lookalikes(mut self, count: usize) -> Self {
        self.lookalikes = count;
        self
    }

    pub fn cluster(mut self, plan: ClusterPlan) -> Self {
        self.clusters.push(plan);
        self
    }

    /// Starts the simulators and a guest apiserver for each cluster that needs one
    /// ([`ClusterPlan::needs_guest`]), provisions every cluster with its volumes, snapshots and
    /// load balancers, and records each host object it made with the traits that decide its
    /// class.
    pub async fn start(self, world: &World) -> Result<Scenario> {
        let env = Env {
            clock: self.clock,
            journal: Journal::default(),
        };
        let vm_namespace = format!("{}-vms", self.prefix);
        let mut scenario = Scenario {
            env,
            snapshots: world.snapshots(),
            vm_namespace,
            prefix: self.prefix.clone(),
            harvesters: HashMap::new(),
            ranchers: Vec::new(),
            clusters: Vec::new(),
            recorded: Vec::new(),
        };
        let mut harvester_names = vec![ClusterName::HARVESTER.to_owned()];
        for plan in &self.clusters {
            if let Some((harvester, _)) = &plan.second_pool
                && !harvester_names.contains(harvester)
            {
                harvester_names.push(harvester.clone());
            }
        }
        for name in &harvester_names {
            scenario
                .start_harvester(world, name, self.harvester, self.load_balancer_controller)
                .await?;
        }
        for plan in &self.clusters {
            scenario.ensure_rancher(world, plan, &self.rancher).await?;
        }
        let guests = start_guests(world, &self.clusters).await?;
        let started: Vec<String> = guests
            .iter()
            .flatten()
            .map(|guest| guest.cluster.clone())
            .collect();
        let provisioned = async {
            for (plan, guest) in self.clusters.iter().zip(guests) {
                scenario
                    .create_cluster(plan, guest, self.csi_cluster_label)
                    .await?;
            }
            scenario.create_lookalikes(self.lookalikes).await
        };
        if let Err(error) = provisioned.await {
            // A scenario that never started leaves no guest running behind it.
            for guest in started {
                world.stop_guest(&guest).ok();
            }
            return Err(error);
        }
        Ok(scenario)
    }
}

/// A fresh guest apiserver for each plan that needs one (started concurrently), None for the
/// others; in the plans' order. If one cannot start, the others are stopped again.
async fn start_guests(world: &World, plans: &[ClusterPlan]) -> Result<Vec<Option<GuestApiserver>>> {
    let started = join_all(plans.iter().map(|plan| async move {
        if plan.needs_guest() {
            GuestApiserver::start(world).await.map(Some)
        } else {
            Ok(None)
        }
    }))
    .await;
    if started.iter().any(Result::is_err) {
        for guest in started.iter().flatten().flatten() {
            world.stop_guest(&guest.cluster).ok();
        }
    }
    started.into_iter().collect()
}

/// Which guest cluster: the Rancher installation (its management cluster), namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    pub installation: String,
    pub namespace: String,
    pub name: String,
}

/// A host object the scenario made, with what it knows of it.
#[derive(Clone, Debug)]
struct Recorded {
    owner: Option<ClusterKey>,
    /// The plan name of the guest volume it belongs to (its host PVC, NetworkFilesystem or
    /// snapshot).
    volume: Option<String>,
    harvester: String,
    object: HostObject,
    traits: Traits,
    /// A VM of no deleted cluster took it (attached it): it belongs to the living from then on.
    taken_by_living_vm: bool,
    /// For a VM's own disk: that VM.
    vm: Option<String>,
    /// It went legitimately, by no reclaimer's hand (a VM's own disk with its scaled-down VM):
    /// not judged.
    released: bool,
}

/// A provisioned guest cluster, whether the user deleted it, and its guest apiserver if it
/// has one.
struct ScenarioCluster {
    key: ClusterKey,
    cluster: GuestCluster,
    deleted: bool,
    guest: Option<ClusterGuest>,
    /// Machines scaled down or replaced since provisioning.
    removed: Vec<String>,
}

struct SimulatedHarvester {
    client: Client,
    simulators: Harvester,
    /// The storage behind the csi-snapshotter sidecar, with the real snapshot-controller.
    snapshot_storage: Option<Storage>,
}

struct SimulatedRancher {
    installation: String,
    namespace: String,
    rancher: Rancher,
}

/// A running scenario: the simulators, the guest clusters, and the recorded ground truth.
pub struct Scenario {
    env: Env,
    /// Who plays the snapshot-controller in the world's Harvesters and guests.
    snapshots: Player,
    vm_namespace: String,
    prefix: String,
    harvesters: HashMap<String, SimulatedHarvester>,
    ranchers: Vec<SimulatedRancher>,
    clusters: Vec<ScenarioCluster>,
    recorded: Vec<Recorded>,
}

impl Scenario {
    /// The Rancher of the cluster named `cluster` (the first one if several share the name).
    pub fn rancher_of(&self, cluster: &str) -> Option<&Rancher> {
        let found = self
            .clusters
            .iter()
            .find(|found| found.key.name == cluster)?;
        rancher_for(&self.ranchers, &found.key).ok()
    }

    pub fn journal(&self) -> &Journal {
        &self.env.journal
    }

    pub fn vm_namespace(&self) -> &str {
        &self.vm_namespace
    }

    /// The first cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&GuestCluster> {
        self.clusters
            .iter()
            .find(|found| found.key.name == name)
            .map(|found| &found.cluster)
    }

    /// The cluster `key` names (namesakes apart).
    pub fn cluster_of(&self, key: &ClusterKey) -> Option<&GuestCluster> {
        self.clusters
            .iter()
            .find(|found| &found.key == key)
            .map(|found| &found.cluster)
    }

    pub fn cluster_keys(&self) -> impl Iterator<Item = &ClusterKey> {
        self.clusters.iter().map(|found| &found.key)
    }

    /// The world cluster name of the cluster's own guest apiserver (for
    /// `World::stop_apiserver` and the like); None if it has none.
    pub fn guest_of(&self, key: &ClusterKey) -> Option<String> {
        let found = self.clusters.iter().find(|found| &found.key == key)?;
        Some(found.guest.as_ref()?.apiserver.cluster.clone())
    }

    /// Where Rancher keeps the cluster's guest kubeconfig: the Secret's namespace and name.
    pub fn guest_kubeconfig_secret(&self, key: &ClusterKey) -> (String, String) {
        (
            key.namespace.clone(),
            naming::guest_kubeconfig_secret(&key.name),
        )
    }

    /// The guest volume the cluster made from its plan named `volume`.
    pub fn guest_volume(&self, key: &ClusterKey, volume: &str) -> Option<&GuestVolume> {
        let found = self.clusters.iter().find(|found| &found.key == key)?;
        found.guest.as_ref()?.volume(volume)
    }

    /// The user deletes a guest cluster: from now on its objects are judged as a deleted
    /// cluster's.
    pub async fn delete_cluster(&mut self, key: &ClusterKey) -> Result<()> {
        cluster_mut(&mut self.clusters, key)?.deleted = true;
        rancher_for(&self.ranchers, key)?
            .delete_cluster(&key.name)
            .await
    }

    /// Rancher is restored from a backup: the cluster's Cluster objects come back with new UIDs
    /// while its VMs run on. The cluster is alive; nothing of it may be deleted.
    pub async fn restore_rancher(&mut self, key: &ClusterKey) -> Result<()> {
        self.ranchers
            .iter_mut()
            .find(|r| r.installation == key.installation && r.namespace == key.namespace)
            .ok_or_else(|| Error::Invalid(format!("no Rancher for {key:?}")))?
            .rancher
            .restore_from_backup(&key.name)
            .await
    }

    /// A guest volume made in the cluster's guest after provisioning, as `plan` says (attached,
    /// detached, snapshotted), and recorded like the planned ones.
    pub async fn add_volume(&mut self, key: &ClusterKey, plan: VolumePlan) -> Result<()> {
        let harvester = self.harvesters[ClusterName::HARVESTER].client.clone();
        let made = guest_mut(&mut self.clusters, key)?
            .create_volume(&plan, &harvester)
            .await?;
        for (object, traits) in made {
            self.record(
                key,
                Some(&plan.name),
                ClusterName::HARVESTER,
                object,
                traits,
            );
        }
        Ok(())
    }

    /// The storage behind Harvester's snapshots stops answering CreateSnapshot (`true`), so new
    /// host snapshots stay being cut, or answers again. Only with the world's real
    /// snapshot-controller; an error with the stand-in, which cuts every snapshot at once.
    pub fn hold_snapshots(&self, held: bool) -> Result<()> {
        let storage = self.harvesters[ClusterName::HARVESTER]
            .snapshot_storage
            .as_ref()
            .ok_or_else(|| {
                Error::Invalid("holding snapshots needs the real snapshot-controller".into())
            })?;
        storage.hold(held);
        Ok(())
    }

    /// Harvester's PVC webhook goes down (`true`) or comes back: while down the apiserver
    /// refuses every PVC delete of the scenario's namespace (failing closed).
    pub fn set_webhook_down(&self, down: bool) {
        self.harvesters[ClusterName::HARVESTER]
            .simulators
            .webhook
            .set_down(down);
    }

    /// Someone attaches the host PVC of the cluster's volume `volume` to a new VM of their own
    /// between a deleter's last read and its delete (the next delete of it Harvester reviews):
    /// Harvester's webhook refuses that delete. The VM is `attacher`; from then on the PVC
    /// must survive.
    pub fn attach_before_delete(
        &mut self,
        key: &ClusterKey,
        volume: &str,
        attacher: &str,
    ) -> Result<()> {
        let found = self
            .guest_volume(key, volume)
            .ok_or_else(|| Error::Invalid(format!("{key:?} has no volume {volume}")))?;
        let (namespace, claim) = (found.host_namespace.clone(), found.host_pvc.name.clone());
        self.harvesters[ClusterName::HARVESTER]
            .simulators
            .webhook
            .attach_before_delete(&namespace, &claim, attacher);
        // A living VM's volume now: judged as a living cluster's.
        for recorded in self.recorded.iter_mut().filter(|recorded| {
            recorded.object.namespace == namespace
                && recorded.object.name == claim
                && recorded.object.resource.kind == "PersistentVolumeClaim"
        }) {
            recorded.taken_by_living_vm = true;
        }
        Ok(())
    }

    /// An operator adds `gleaner.io/retain: "true"` to the host PVC of the cluster's volume
    /// `volume` (after provisioning, e.g. during a grace period): from now on it and what
    /// hangs on it must survive.
    pub async fn annotate_retain(&mut self, key: &ClusterKey, volume: &str) -> Result<()> {
        let harvester = self.harvesters[ClusterName::HARVESTER].client.clone();
        let found = self
            .guest_volume(key, volume)
            .ok_or_else(|| Error::Invalid(format!("{key:?} has no volume {volume}")))?;
        guest::annotate_retain(&harvester, found).await?;
        for recorded in self.recorded.iter_mut().filter(|recorded| {
            recorded.owner.as_ref() == Some(key) && recorded.volume.as_deref() == Some(volume)
        }) {
            recorded.traits.annotated_retain = true;
        }
        Ok(())
    }

    /// The user changes the reclaim policy of the guest PV made from the cluster's plan named
    /// `volume`; the ground truth of its host objects and snapshots follows.
    pub async fn set_reclaim_policy(
        &mut self,
        key: &ClusterKey,
        volume: &str,
        reclaim: Reclaim,
    ) -> Result<()> {
        let plan = guest_mut(&mut self.clusters, key)?
            .set_reclaim_policy(volume, reclaim)
            .await?;
        self.retrait(key, &plan);
        Ok(())
    }

    /// Rancher rotates the cluster's guest credential: a new ServiceAccount, binding and token
    /// in the guest, written into `<cluster>-kubeconfig`; then the old ServiceAccount is
    /// deleted, so the old token is refused.
    pub async fn rotate_guest_kubeconfig(&mut self, key: &ClusterKey) -> Result<()> {
        let rancher = rancher_for(&self.ranchers, key)?;
        let guest = guest_mut(&mut self.clusters, key)?;
        let credential = guest.mint_next_credential().await?;
        rancher
            .rotate_guest_kubeconfig(&key.name, &credential)
            .await?;
        let old = std::mem::replace(&mut guest.credential, credential);
        guest.apiserver.revoke(&old).await
    }

    /// The key of the first cluster named `name` in the default installation and namespace.
    pub fn key(&self, name: &str) -> ClusterKey {
        ClusterKey {
            installation: ClusterName::RANCHER.to_owned(),
            namespace: self.rancher_namespace(plan::DEFAULT_NAMESPACE),
            name: name.to_owned(),
        }
    }

    /// Ground truth: every host object the cluster `key` made, with what the scenario knew of
    /// it when it made it.
    pub fn made_by(&self, key: &ClusterKey) -> Vec<(HostObject, Traits)> {
        self.recorded
            .iter()
            .filter(|recorded| recorded.owner.as_ref() == Some(key))
            .map(|recorded| (recorded.object.clone(), recorded.traits))
            .collect()
    }

    /// Waits until every VM of the deleted clusters is gone (or `timeout` passes), lets the
    /// world settle, then judges every recorded object: it exists at the end if an object with
    /// its UID still does.
    pub async fn measure(&self, timeout: Duration) -> Result<Report> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.deleted_vms_gone().await? && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(self.env.clock.scaled(SETTLE).max(MIN_SETTLE)).await;
        let mut objects = Vec::new();
        for recorded in self.recorded.iter().filter(|recorded| !recorded.released) {
            let object = &recorded.object;
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.harvesters[&recorded.harvester].client.clone(),
                &object.namespace,
                &object.resource,
            );
            let exists = api
                .get_opt(&object.name)
                .await
                .context(|| format!("cannot read {} {}", object.resource.kind, object.name))?
                .is_some_and(|found| found.metadata.uid.as_deref() == Some(&object.uid));
            let class = self.class_of(recorded);
            objects.push(TrackedObject {
                class,
                kind: object.resource.kind.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                uid: object.uid.clone(),
                must_survive: class.must_survive(),
                exists_at_end: exists,
            });
        }
        Ok(Report::judge(objects))
    }

    /// The class of a recorded object as the ground truth stands now.
    fn class_of(&self, recorded: &Recorded) -> Class {
        Traits {
            relation: if recorded.taken_by_living_vm {
                Relation::Living
            } else {
                self.relation(recorded.owner.as_ref())
            },
            ..recorded.traits
        }
        .class()
    }

    /// The class, as the ground truth stands now, of the recorded object with this UID; None for
    /// an object the scenario did not make or that went legitimately (a VM's own disk with its
    /// scaled-down VM). For judging a deletion the moment it is seen.
    pub fn class_now(&self, uid: &str) -> Option<Class> {
        self.recorded
            .iter()
            .find(|recorded| recorded.object.uid == uid && !recorded.released)
            .map(|recorded| self.class_of(recorded))
    }

    /// The host objects of the cluster's guest volume `volume` (its host PVC, NetworkFilesystem
    /// and snapshots), as recorded.
    pub fn objects_of_volume(&self, key: &ClusterKey, volume: &str) -> Vec<HostObject> {
        self.recorded
            .iter()
            .filter(|recorded| {
                recorded.owner.as_ref() == Some(key) && recorded.volume.as_deref() == Some(volume)
            })
            .map(|recorded| recorded.object.clone())
            .collect()
    }

    /// Every host object the scenario recorded (lookalikes too), with the Harvester it is on.
    pub fn recorded_objects(&self) -> Vec<(String, HostObject)> {
        self.recorded
            .iter()
            .map(|recorded| (recorded.harvester.clone(), recorded.object.clone()))
            .collect()
    }

    /// Whether the user deleted the cluster.
    pub fn is_deleted(&self, key: &ClusterKey) -> bool {
        self.clusters
            .iter()
            .any(|found| &found.key == key && found.deleted)
    }

    /// The plan names of the cluster's guest volumes (none without a guest apiserver).
    pub fn volume_names(&self, key: &ClusterKey) -> Vec<String> {
        self.clusters
            .iter()
            .find(|found| &found.key == key)
            .and_then(|found| found.guest.as_ref())
            .map(ClusterGuest::volume_names)
            .unwrap_or_default()
    }

    /// The user scales the cluster's first pool down by one Machine (the last by name of those on
    /// the main Harvester, keeping one): its VM and the VM's own disks go, as the node driver
    /// removes them; what was hot-plugged into it stays the cluster's, unplugged. Returns the
    /// Machine, None when the pool has only one left.
    pub async fn scale_down(&mut self, key: &ClusterKey) -> Result<Option<String>> {
        let candidates = self.removable_machines(key)?;
        if candidates.len() < 2 {
            return Ok(None);
        }
        let machine = candidates[candidates.len() - 1].clone();
        rancher_for(&self.ranchers, key)?
            .scale_down(&key.name, POOL, &machine.name)
            .await?;
        self.machine_gone(key, &machine)?;
        Ok(Some(machine.name))
    }

    /// Rancher replaces one of the cluster's first-pool Machines on the main Harvester (the last
    /// by name): as a scale-down, its VM and the VM's own disks go; its MachineSet makes a new
    /// one. Returns the Machine replaced, None when the pool has none left to replace.
    pub async fn reprovision(&mut self, key: &ClusterKey) -> Result<Option<String>> {
        let Some(machine) = self.removable_machines(key)?.pop() else {
            return Ok(None);
        };
        rancher_for(&self.ranchers, key)?
            .reprovision(&machine.name)
            .await?;
        self.machine_gone(key, &machine)?;
        Ok(Some(machine.name))
    }

    /// The cluster's first-pool Machines on the main Harvester not yet removed, by name.
    fn removable_machines(&self, key: &ClusterKey) -> Result<Vec<GuestMachine>> {
        let found = self
            .clusters
            .iter()
            .find(|found| &found.key == key)
            .ok_or_else(|| Error::Invalid(format!("no cluster {key:?} in this scenario")))?;
        let mut machines: Vec<GuestMachine> = found
            .cluster
            .machines
            .iter()
            .filter(|machine| {
                machine.pool == POOL
                    && machine.harvester == ClusterName::HARVESTER
                    && !found.removed.contains(&machine.name)
            })
            .cloned()
            .collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    fn machine_gone(&mut self, key: &ClusterKey, machine: &GuestMachine) -> Result<()> {
        let found = cluster_mut(&mut self.clusters, key)?;
        found.removed.push(machine.name.clone());
        let unplugged = found
            .guest
            .as_mut()
            .map(|guest| guest.forget_vm(&machine.vm))
            .unwrap_or_default();
        for recorded in self.recorded.iter_mut().filter(|recorded| {
            recorded.owner.as_ref() == Some(key) && recorded.vm.as_deref() == Some(&machine.vm)
        }) {
            recorded.released = true;
        }
        for plan in unplugged {
            self.retrait(key, &plan);
        }
        Ok(())
    }

    /// The user's workload lets go of the guest volume `volume`: the CSI driver unplugs its host
    /// PVC from its VM. False if it was not hot-plugged.
    pub async fn detach_volume(&mut self, key: &ClusterKey, volume: &str) -> Result<bool> {
        let plan = guest_mut(&mut self.clusters, key)?.detach(volume).await?;
        Ok(plan.map(|plan| self.retrait(key, &plan)).is_some())
    }

    /// A pod of the guest uses the volume `volume`: the CSI driver hot-plugs its host PVC into
    /// one of the cluster's VMs. False if it cannot be (RWX, already plugged, no VM left).
    pub async fn attach_volume(&mut self, key: &ClusterKey, volume: &str) -> Result<bool> {
        let plan = guest_mut(&mut self.clusters, key)?.attach(volume).await?;
        Ok(plan.map(|plan| self.retrait(key, &plan)).is_some())
    }

    /// The recorded traits of the volume's host objects follow its plan as it now stands; a
    /// `gleaner.io/retain` an operator added since stays.
    fn retrait(&mut self, key: &ClusterKey, plan: &VolumePlan) {
        for recorded in self.recorded.iter_mut().filter(|recorded| {
            recorded.owner.as_ref() == Some(key) && recorded.volume.as_deref() == Some(&plan.name)
        }) {
            let traits = if recorded.traits.snapshot {
                plan.snapshot_traits()
            } else {
                plan.traits()
            };
            recorded.traits = Traits {
                annotated_retain: traits.annotated_retain || recorded.traits.annotated_retain,
                ..traits
            };
        }
    }

    /// Pauses or resumes the cluster (`spec.paused` on its CAPI Cluster).
    pub async fn set_paused(&self, key: &ClusterKey, paused: bool) -> Result<()> {
        rancher_for(&self.ranchers, key)?
            .set_paused(&key.name, paused)
            .await
    }

    /// `<cluster>-kubeconfig` is overwritten with something that is no kubeconfig (a broken
    /// credential Secret); [`Scenario::mend_guest_kubeconfig`] puts the real one back.
    pub async fn break_guest_kubeconfig(&self, key: &ClusterKey) -> Result<()> {
        let broken = GuestCredential {
            account: "broken".to_owned(),
            kubeconfig: "this is not a kubeconfig".to_owned(),
        };
        rancher_for(&self.ranchers, key)?
            .rotate_guest_kubeconfig(&key.name, &broken)
            .await
    }

    pub async fn mend_guest_kubeconfig(&self, key: &ClusterKey) -> Result<()> {
        let found = self
            .clusters
            .iter()
            .find(|found| &found.key == key)
            .and_then(|found| found.guest.as_ref())
            .ok_or_else(|| Error::Invalid(format!("cluster {key:?} has no guest apiserver")))?;
        rancher_for(&self.ranchers, key)?
            .rotate_guest_kubeconfig(&key.name, &found.credential)
            .await
    }

    /// Stops the scenario's guest apiservers for good (once it is judged), giving their memory
    /// back to a world that runs scenario after scenario.
    pub fn stop_guests(&self, world: &World) -> Result<()> {
        for guest in self
            .clusters
            .iter()
            .filter_map(|found| found.guest.as_ref())
        {
            world.stop_guest(&guest.apiserver.cluster)?;
        }
        Ok(())
    }

    fn relation(&self, owner: Option<&ClusterKey>) -> Relation {
        let Some(owner) = owner else {
            return Relation::None;
        };
        let deleted: Vec<&ClusterKey> = self
            .clusters
            .iter()
            .filter(|found| found.deleted)
            .map(|found| &found.key)
            .collect();
        if deleted.contains(&owner) {
            Relation::Deleted
        } else if let Some(namesake) = deleted.iter().find(|key| key.name == owner.name) {
            if namesake.installation != owner.installation {
                Relation::OtherInstallation
            } else {
                Relation::SameNameOtherNamespace
            }
        } else {
            Relation::Living
        }
    }

    async fn deleted_vms_gone(&self) -> Result<bool> {
        for found in self.clusters.iter().filter(|found| found.deleted) {
            for machine in &found.cluster.machines {
                let vms = kinds::namespaced(
                    &self.harvesters[&machine.harvester].client,
                    &self.vm_namespace,
                    &kinds::virtual_machine(),
                );
                if vms
                    .get_opt(&machine.vm)
                    .await
                    .context(|| format!("cannot read VM {}", machine.vm))?
                    .is_some()
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn rancher_namespace(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    async fn start_harvester(
        &mut self,
        world: &World,
        name: &str,
        version: HarvesterVersion,
        load_balancer_controller: bool,
    ) -> Result<()> {
        let client = world.client(name).await?;
        ensure_namespace(&client, &self.vm_namespace).await?;
        let mut simulators =
            Harvester::start(world, name, &self.vm_namespace, version, &self.env).await?;
        let snapshot_storage = match world.snapshots() {
            Player::Real => Some(snapshotter::spawn(
                client.clone(),
                &self.vm_namespace,
                snapshotter::Driver::Longhorn,
                self.env.clone(),
                &mut simulators.tasks,
            )),
            Player::Sim => {
                snapshots::spawn(
                    client.clone(),
                    &self.vm_namespace,
                    self.env.clone(),
                    &mut simulators.tasks,
                );
                None
            }
        };
        if load_balancer_controller {
            harvester::load_balancer::spawn(
                client.clone(),
                &self.vm_namespace,
                self.env.clone(),
                &mut simulators.tasks,
            );
        }
        self.harvesters.insert(
            name.to_owned(),
            SimulatedHarvester {
                client,
                simulators,
                snapshot_storage,
            },
        );
        Ok(())
    }

    async fn ensure_rancher(
        &mut self,
        world: &World,
        plan: &ClusterPlan,
        settings: &RancherSettings,
    ) -> Result<()> {
        let namespace = self.rancher_namespace(&plan.rancher_namespace);
        if self
            .ranchers
            .iter()
            .any(|r| r.installation == plan.installation && r.namespace == namespace)
        {
            return Ok(());
        }
        let rancher = Rancher::start(
            world,
            &plan.installation,
            &namespace,
            settings.clone(),
            self.env.clone(),
        )
        .await?;
        self.ranchers.push(SimulatedRancher {
            installation: plan.installation.clone(),
            namespace,
            rancher,
        });
        Ok(())
    }

    async fn create_cluster(
        &mut self,
        plan: &ClusterPlan,
        apiserver: Option<GuestApiserver>,
        csi_cluster_label: bool,
    ) -> Result<()> {
        let key = ClusterKey {
            installation: plan.installation.clone(),
            namespace: self.rancher_namespace(&plan.rancher_namespace),
            name: plan.name.clone(),
        };
        let credential = match &apiserver {
            Some(apiserver) => Some(apiserver.mint_credential(FIRST_CREDENTIAL).await?),
            None => None,
        };
        let cluster = rancher_for(&self.ranchers, &key)?
            .provision(&GuestClusterSpec {
                name: plan.name.clone(),
                harvester: ClusterName::HARVESTER.to_owned(),
                vm_namespace: self.vm_namespace.clone(),
                guest: credential.clone(),
                pools: pools(plan),
            })
            .await?;
        for machine in &cluster.machines {
            self.record_vm_disks(&key, &machine.harvester, &machine.vm)
                .await?;
        }
        let guest = match (apiserver, credential) {
            (Some(apiserver), Some(credential)) => Some(
                self.set_up_guest(
                    &key,
                    plan,
                    &cluster,
                    apiserver,
                    credential,
                    csi_cluster_label,
                )
                .await?,
            ),
            _ => None,
        };
        self.clusters.push(ScenarioCluster {
            key: key.clone(),
            cluster,
            deleted: false,
            guest,
            removed: Vec::new(),
        });
        for volume in &plan.volumes {
            self.add_volume(&key, volume.clone()).await?;
        }
        for service in &plan.load_balancers {
            self.add_load_balancer(&key, service).await?;
        }
        Ok(())
    }

    /// The cluster's side of its guest apiserver: its guest namespace, the CSI driver and the
    /// cloud provider, which reach the main Harvester.
    async fn set_up_guest(
        &self,
        key: &ClusterKey,
        plan: &ClusterPlan,
        cluster: &GuestCluster,
        apiserver: GuestApiserver,
        credential: GuestCredential,
        csi_cluster_label: bool,
    ) -> Result<ClusterGuest> {
        let guest_client = apiserver.admin().clone();
        let namespace = format!(
            "{}-{}-{}-{}",
            self.prefix, key.installation, plan.rancher_namespace, plan.name
        );
        ensure_namespace(&guest_client, &namespace).await?;
        let main_harvester = self.harvesters[ClusterName::HARVESTER].client.clone();
        let mut csi = Csi::new(
            guest_client.clone(),
            main_harvester.clone(),
            &self.vm_namespace,
            self.env.clone(),
        )
        .with_guest_snapshots(self.snapshots);
        if csi_cluster_label {
            csi = csi.with_cluster_label(&plan.name);
        }
        let mut sidecar = Tasks::default();
        if self.snapshots == Player::Real {
            snapshotter::spawn(
                guest_client.clone(),
                &namespace,
                snapshotter::Driver::HarvesterCsi(Box::new(csi.clone())),
                self.env.clone(),
                &mut sidecar,
            );
        }
        let provider = CloudProvider::new(
            guest_client,
            main_harvester,
            &self.vm_namespace,
            &plan.name,
            self.env.clone(),
        );
        // Guest volumes are hot-plugged into the VMs on the cluster's own Harvester.
        let mut attachable: Vec<String> = cluster
            .machines
            .iter()
            .filter(|machine| machine.harvester == ClusterName::HARVESTER)
            .map(|machine| machine.vm.clone())
            .collect();
        attachable.sort();
        Ok(ClusterGuest::new(
            apiserver, credential, namespace, csi, provider, attachable, sidecar,
        ))
    }

    async fn add_load_balancer(&mut self, key: &ClusterKey, service: &str) -> Result<()> {
        let made = guest_mut(&mut self.clusters, key)?
            .create_load_balancer(service)
            .await?;
        let object = HostObject {
            resource: kinds::load_balancer(),
            namespace: made.host_namespace.clone(),
            name: made.load_balancer.name.clone(),
            uid: made.load_balancer.uid.clone(),
        };
        let traits = Traits {
            load_balancer: true,
            ..Traits::default()
        };
        self.record(key, None, ClusterName::HARVESTER, object, traits);
        Ok(())
    }

    fn record(
        &mut self,
        owner: &ClusterKey,
        volume: Option<&str>,
        harvester: &str,
        object: HostObject,
        traits: Traits,
    ) {
        self.recorded.push(Recorded {
            owner: Some(owner.clone()),
            volume: volume.map(str::to_owned),
            harvester: harvester.to_owned(),
            object,
            traits,
            taken_by_living_vm: false,
            vm: None,
            released: false,
        });
    }

    /// The VM's own disks are the PVCs Harvester creates from its volume claim templates.
    async fn record_vm_disks(
        &mut self,
        key: &ClusterKey,
        harvester: &str,
        vm_name: &str,
    ) -> Result<()> {
        let client = self.harvesters[harvester].client.clone();
        let vm = kinds::namespaced(&client, &self.vm_namespace, &kinds::virtual_machine())
            .get(vm_name)
            .await
            .context(|| format!("cannot read VM {vm_name}"))?;
        let templates: Vec<serde_json::Value> = vm
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(VOLUME_CLAIM_TEMPLATES))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &self.vm_namespace);
        for template in templates {
            let Some(name) = template["metadata"]["name"].as_str() else {
                continue;
            };
            let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
            let claim = loop {
                if let Some(claim) = claims
                    .get_opt(name)
                    .await
                    .context(|| format!("cannot read PVC {name}"))?
                {
                    break claim;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(format!(
                        "Harvester never created disk {name}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let object = HostObject {
                resource: kinds::persistent_volume_claim(),
                namespace: self.vm_namespace.clone(),
                name: name.to_owned(),
                uid: claim.metadata.uid.unwrap_or_default(),
            };
            let traits = Traits {
                vm_disk: true,
                ..Traits::default()
            };
            self.record(key, None, harvester, object, traits);
            if let Some(recorded) = self.recorded.last_mut() {
                recorded.vm = Some(vm_name.to_owned());
            }
        }
        Ok(())
    }

    /// PVCs named and shaped like the CSI driver's (`pvc-<uuid>`, RWX, Block) that no guest
    /// cluster made.
    async fn create_lookalikes(&mut self, count: usize) -> Result<()> {
        let client = self.harvesters[ClusterName::HARVESTER].client.clone();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &self.vm_namespace);
        for _ in 0..count {
            let name = format!("pvc-{}", uuid::Uuid::new_v4());
            let claim: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "volumeMode": "Block",
                    "storageClassName": crate::csi::HOST_STORAGE_CLASS,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }))
            .expect("a PVC is a valid object");
            let created = claims
                .create(&PostParams::default(), &claim)
                .await
                .context(|| format!("cannot create lookalike {name}"))?;
            self.recorded.push(Recorded {
                owner: None,
                volume: None,
                harvester: ClusterName::HARVESTER.to_owned(),
                object: HostObject {
                    resource: kinds::persistent_volume_claim(),
                    namespace: self.vm_namespace.clone(),
                    name,
                    uid: created.metadata.uid.unwrap_or_default(),
                },
                traits: Traits {
                    lookalike: true,
                    ..Traits::default()
                },
                taken_by_living_vm: false,
                vm: None,
                released: false,
            });
        }
        Ok(())
    }
}

/// The cluster's pools: the first on the main Harvester, a second with its own credential if
/// the plan has one.
fn pools(plan: &ClusterPlan) -> Vec<PoolSpec> {
    let mut first = PoolSpec::new(POOL, plan.machines);
    first.machine_names = plan.machine_names.clone();
    let mut pools = vec![first];
    if let Some((harvester, machines)) = &plan.second_pool {
        let mut pool = PoolSpec::new(SECOND_POOL, *machines);
        pool.harvester = Some(harvester.clone());
        pools.push(pool);
    }
    pools
}

fn rancher_for<'a>(ranchers: &'a [SimulatedRancher], key: &ClusterKey) -> Result<&'a Rancher> {
    ranchers
        .iter()
        .find(|r| r.installation == key.installation && r.namespace == key.namespace)
        .map(|r| &r.rancher)
        .ok_or_else(|| Error::Invalid(format!("no Rancher for {key:?}")))
}

fn cluster_mut<'a>(
    clusters: &'a mut [ScenarioCluster],
    key: &ClusterKey,
) -> Result<&'a mut ScenarioCluster> {
    clusters
        .iter_mut()
        .find(|found| &found.key == key)
        .ok_or_else(|| Error::Invalid(format!("no cluster {key:?} in this scenario")))
}

fn guest_mut<'a>(
    clusters: &'a mut [ScenarioCluster],
    key: &ClusterKey,
) -> Result<&'a mut ClusterGuest> {
    cluster_mut(clusters, key)?.guest.as_mut().ok_or_else(|| {
        Error::Invalid(format!(
            "cluster {key:?} has no guest apiserver (plan it with volumes, load balancers or ClusterPlan::with_guest)"
        ))
    })
}
