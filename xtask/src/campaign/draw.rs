//! A campaign scenario drawn from its seed: the world it runs in, its guest clusters and every
//! step it takes, faults included. Pure: a seed always draws the same plan, so a failure
//! replays from its seed alone, and a shrunk failure is that seed without some steps.

use std::{collections::BTreeSet, fmt, time::Duration};

use gleaner_sim::rancher::DriverVersion;
use gleaner_world::CapiVersion;
// StdRng's algorithm may change between rand releases; Cargo.lock pins the release, which is
// all a replay needs.
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

/// Which Rancher installation a cluster belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Installation {
    Main,
    Second,
}

/// Which Rancher namespace (of its installation) a cluster lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    Fleet,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    Hotplugged,
    Unattached,
    NeverAttached,
    Rwx,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDraw {
    pub name: String,
    pub kind: VolumeKind,
    /// The guest StorageClass says `Retain`.
    pub retain: bool,
    /// The host PVC carries `gleaner.io/retain: "true"` from the start.
    pub annotated_retain: bool,
    pub snapshots: usize,
    /// Its snapshots' guest class says `Retain`.
    pub retained_snapshots: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDraw {
    pub name: String,
    pub installation: Installation,
    pub namespace: Namespace,
    /// Machines of its first pool, on the main Harvester.
    pub machines: usize,
    /// Machines of a second pool on the second Harvester.
    pub second_pool: Option<usize>,
    pub volumes: Vec<VolumeDraw>,
    pub load_balancers: usize,
}

/// One step of a scenario: something a user, Rancher or an operator does, or a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    DeleteCluster(usize),
    ScaleDown(usize),
    Reprovision(usize),
    AddVolume(usize, VolumeDraw),
    DetachVolume(usize, String),
    AttachVolume(usize, String),
    AnnotateRetain(usize, String),
    SetRetain(usize, String),
    Pause(usize),
    Unpause(usize),
    RotateCredential(usize),
    Wait(Duration),
    /// gleaner of that installation SIGKILLed (every replica) ...
    KillGleaner(Installation),
    /// ... and started again.
    StartGleaner(Installation),
    /// The leading replica of the main installation's gleaner SIGKILLed while a second runs;
    /// a fresh standby replaces it.
    KillLeader,
    /// A Harvester's apiserver stopped (0: the main one, 1: the second) ...
    StopHarvester(usize),
    /// ... and started again.
    StartHarvester(usize),
    StopGuest(usize),
    StartGuest(usize),
    /// Rancher's apiserver restarted: every watch on it drops.
    DropWatches,
    /// `<cluster>-kubeconfig` overwritten with garbage ...
    BreakCredential(usize),
    /// ... and put back.
    MendCredential(usize),
    /// Harvester's PVC webhook down: every PVC delete refused ...
    WebhookDown,
    /// ... and back.
    WebhookUp,
    /// Someone attaches the volume's host PVC to a VM of their own just before a deleter's
    /// delete: the webhook refuses it and the PVC belongs to the living from then on.
    RefuseDelete(usize, String),
    /// gleaner started with `--dry-run` restarted without it.
    DryRunOff,
}

/// The faults a campaign counts its results by.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    GleanerKilled,
    LeaderKilled,
    HarvesterStopped,
    GuestStopped,
    WatchesDropped,
    CredentialBroken,
    WebhookDown,
    DeleteRefused,
    DryRunSwitchedOff,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::GleanerKilled,
        FaultKind::LeaderKilled,
        FaultKind::HarvesterStopped,
        FaultKind::GuestStopped,
        FaultKind::WatchesDropped,
        FaultKind::CredentialBroken,
        FaultKind::WebhookDown,
        FaultKind::DeleteRefused,
        FaultKind::DryRunSwitchedOff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::GleanerKilled => "gleaner killed",
            FaultKind::LeaderKilled => "leader killed",
            FaultKind::HarvesterStopped => "Harvester stopped",
            FaultKind::GuestStopped => "guest stopped",
            FaultKind::WatchesDropped => "watches dropped",
            FaultKind::CredentialBroken => "credential broken",
            FaultKind::WebhookDown => "webhook down",
            FaultKind::DeleteRefused => "delete refused",
            FaultKind::DryRunSwitchedOff => "dry run switched off",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Step {
    /// The fault this step starts, if it is one.
    pub fn fault(&self) -> Option<FaultKind> {
        Some(match self {
            Step::KillGleaner(_) => FaultKind::GleanerKilled,
            Step::KillLeader => FaultKind::LeaderKilled,
            Step::StopHarvester(_) => FaultKind::HarvesterStopped,
            Step::StopGuest(_) => FaultKind::GuestStopped,
            Step::DropWatches => FaultKind::WatchesDropped,
            Step::BreakCredential(_) => FaultKind::CredentialBroken,
            Step::WebhookDown => FaultKind::WebhookDown,
            Step::RefuseDelete(..) => FaultKind::DeleteRefused,
            Step::DryRunOff => FaultKind::DryRunSwitchedOff,
            _ => return None,
        })
    }
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub capi: CapiVersion,
    pub driver: DriverVersion,
    pub cleanup_handler: bool,
    pub csi_cluster_label: bool,
    pub load_balancer_controller: bool,
    pub lookalikes: usize,
    /// Replicas of the main installation's gleaner.
    pub replicas: usize,
    /// gleaner starts with `--dry-run` (a [`Step::DryRunOff`] comes before any deletion).
    pub dry_run: bool,
    pub clusters: Vec<ClusterDraw>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The faults it injects, by kind.
    pub fn faults(&self) -> BTreeSet<FaultKind> {
        self.steps.iter().filter_map(Step::fault).collect()
    }

    /// The plan without the steps at `dropped` (indices into [`Plan::steps`]).
    pub fn without(&self, dropped: &BTreeSet<usize>) -> Plan {
        Plan {
            steps: self
                .steps
                .iter()
                .enumerate()
                .filter(|(index, _)| !dropped.contains(index))
                .map(|(_, step)| step.clone())
                .collect(),
            ..self.clone()
        }
    }

    /// Whether some Rancher installation's clusters use the second Harvester.
    pub fn uses_second_harvester(&self) -> bool {
        self.clusters
            .iter()
            .any(|cluster| cluster.second_pool.is_some())
    }
}

/// The state a plan's steps move through, as far as deciding which step makes sense next: the
/// drawer only draws steps it allows, and the runner skips those it does not (a shrunk plan may
/// have lost the step that made a later one possible).
#[derive(Clone, Debug)]
pub struct Model {
    deleted: Vec<bool>,
    paused: Vec<bool>,
    volumes: Vec<Vec<String>>,
    has_guest: Vec<bool>,
    second_pool: Vec<bool>,
    machines: Vec<usize>,
    guest_stopped: Vec<bool>,
    credential_broken: Vec<bool>,
    harvester_stopped: [bool; 2],
    gleaner_killed: BTreeSet<Installation>,
    webhook_down: bool,
    dry_run: bool,
    replicas: usize,
    next_volume: Vec<usize>,
}

impl Model {
    pub fn new(plan: &Plan) -> Self {
        let clusters = &plan.clusters;
        Self {
            deleted: vec![false; clusters.len()],
            paused: vec![false; clusters.len()],
            volumes: clusters
                .iter()
                .map(|cluster| cluster.volumes.iter().map(|v| v.name.clone()).collect())
                .collect(),
            has_guest: vec![true; clusters.len()],
            second_pool: clusters.iter().map(|c| c.second_pool.is_some()).collect(),
            machines: clusters.iter().map(|cluster| cluster.machines).collect(),
            guest_stopped: vec![false; clusters.len()],
            credential_broken: vec![false; clusters.len()],
            harvester_stopped: [false; 2],
            gleaner_killed: BTreeSet::new(),
            webhook_down: false,
            dry_run: plan.dry_run,
            replicas: plan.replicas,
            next_volume: clusters
                .iter()
                .map(|cluster| cluster.volumes.len())
                .collect(),
        }
    }

    fn living(&self, cluster: usize) -> bool {
        cluster < self.deleted.len() && !self.deleted[cluster]
    }

    /// Every Harvester the cluster's VMs run on answers.
    fn harvesters_up(&self, cluster: usize) -> bool {
        let second_stopped = self.second_pool[cluster] && self.harvester_stopped[1];
        !self.harvester_stopped[0] && !second_stopped
    }

    /// The cluster's guest can be worked in: alive, its apiserver and the main Harvester up.
    fn guest_usable(&self, cluster: usize) -> bool {
        self.living(cluster)
            && self.has_guest[cluster]
            && !self.guest_stopped[cluster]
            && !self.harvester_stopped[0]
    }

    fn has_volume(&self, cluster: usize, volume: &str) -> bool {
        self.volumes
            .get(cluster)
            .is_some_and(|volumes| volumes.iter().any(|name| name == volume))
    }

    /// Whether the step makes sense now.
    pub fn allows(&self, step: &Step) -> bool {
        match step {
            Step::DeleteCluster(c) => self.living(*c) && !self.dry_run,
            Step::ScaleDown(c) | Step::Reprovision(c) => {
                self.living(*c)
                    && !self.paused[*c]
                    && self.harvesters_up(*c)
                    && self.machines[*c] > 1
            }
            Step::AddVolume(c, volume) => {
                self.guest_usable(*c) && !self.has_volume(*c, &volume.name)
            }
            Step::DetachVolume(c, v)
            | Step::AttachVolume(c, v)
            | Step::AnnotateRetain(c, v)
            | Step::SetRetain(c, v) => self.guest_usable(*c) && self.has_volume(*c, v),
            Step::RefuseDelete(c, v) => self.has_volume(*c, v) && !self.deleted[*c],
            Step::Pause(c) => self.living(*c) && !self.paused[*c],
            Step::Unpause(c) => *c < self.paused.len() && self.paused[*c],
            Step::RotateCredential(c) => self.guest_usable(*c) && !self.credential_broken[*c],
            Step::Wait(_) => true,
            Step::KillGleaner(installation) => !self.gleaner_killed.contains(installation),
            Step::StartGleaner(installation) => self.gleaner_killed.contains(installation),
            Step::KillLeader => {
                self.replicas > 1 && !self.gleaner_killed.contains(&Installation::Main)
            }
            Step::StopHarvester(h) => *h < 2 && !self.harvester_stopped[*h],
            Step::StartHarvester(h) => *h < 2 && self.harvester_stopped[*h],
            Step::StopGuest(c) => {
                *c < self.guest_stopped.len() && self.has_guest[*c] && !self.guest_stopped[*c]
            }
            Step::StartGuest(c) => *c < self.guest_stopped.len() && self.guest_stopped[*c],
            Step::DropWatches => true,
            Step::BreakCredential(c) => {
                self.living(*c) && self.has_guest[*c] && !self.credential_broken[*c]
            }
            Step::MendCredential(c) => {
                *c < self.credential_broken.len() && self.credential_broken[*c]
            }
            Step::WebhookDown => !self.webhook_down,
            Step::WebhookUp => self.webhook_down,
            Step::DryRunOff => self.dry_run,
        }
    }

    /// The state after the step (which [`Model::allows`]).
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::DeleteCluster(c) => self.deleted[*c] = true,
            Step::ScaleDown(c) | Step::Reprovision(c) => self.machines[*c] -= 1,
            Step::AddVolume(c, volume) => {
                self.volumes[*c].push(volume.name.clone());
                self.next_volume[*c] += 1;
            }
            Step::Pause(c) => self.paused[*c] = true,
            Step::Unpause(c) => self.paused[*c] = false,
            Step::KillGleaner(installation) => {
                self.gleaner_killed.insert(*installation);
            }
            Step::StartGleaner(installation) => {
                self.gleaner_killed.remove(installation);
            }
            Step::StopHarvester(h) => self.harvester_stopped[*h] = true,
            Step::StartHarvester(h) => self.harvester_stopped[*h] = false,
            Step::StopGuest(c) => self.guest_stopped[*c] = true,
            Step::StartGuest(c) => self.guest_stopped[*c] = false,
            Step::BreakCredential(c) => self.credential_broken[*c] = true,
            Step::MendCredential(c) => self.credential_broken[*c] = false,
            Step::WebhookDown => self.webhook_down = true,
            Step::WebhookUp => self.webhook_down = false,
            Step::DryRunOff => self.dry_run = false,
            Step::DetachVolume(..)
            | Step::AttachVolume(..)
            | Step::AnnotateRetain(..)
            | Step::SetRetain(..)
            | Step::RefuseDelete(..)
            | Step::RotateCredential(_)
            | Step::Wait(_)
            | Step::KillLeader
            | Step::DropWatches => {}
        }
    }
}

/// Draws the scenario of `seed`.
pub fn draw(seed: u64) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let capi = if rng.random_bool(0.5) {
        CapiVersion::V1beta1
    } else {
        CapiVersion::V1beta2
    };
    let drivers = [
        DriverVersion::V1_0_2,
        DriverVersion::V1_0_3,
        DriverVersion::V1_0_4,
        DriverVersion::V1_0_5,
        DriverVersion::V1_0_6,
    ];
    let driver = drivers[rng.random_range(0..drivers.len())];
    let clusters = draw_clusters(&mut rng);
    let mut plan = Plan {
        seed,
        capi,
        driver,
        cleanup_handler: rng.random_bool(0.8),
        csi_cluster_label: rng.random_bool(0.3),
        load_balancer_controller: rng.random_bool(0.7),
        lookalikes: rng.random_range(0..=2),
        replicas: if rng.random_bool(0.3) { 2 } else { 1 },
        dry_run: rng.random_bool(0.2),
        clusters,
        steps: Vec::new(),
    };
    plan.steps = draw_steps(&mut rng, &plan);
    plan
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn draw_clusters(rng: &mut StdRng) -> Vec<ClusterDraw> {
    let count = rng.random_range(1..=4);
    let mut taken: BTreeSet<(Installation, Namespace, String)> = BTreeSet::new();
    let mut clusters = Vec::new();
    while clusters.len() < count {
        // Three names among up to four clusters: namesakes in another namespace or another
        // installation come often.
        let name = NAMES[rng.random_range(0..NAMES.len())].to_owned();
        let installation = if rng.random_bool(0.25) {
            Installation::Second
        } else {
            Installation::Main
        };
        let namespace = if rng.random_bool(0.25) {
            Namespace::Other
        } else {
            Namespace::Fleet
        };
        if !taken.insert((installation, namespace, name.clone())) {
            continue;
        }
        let volumes = (0..rng.random_range(0..=4))
            .map(|index| draw_volume(rng, &format!("v{index}")))
            .collect();
        clusters.push(ClusterDraw {
            name,
            installation,
            namespace,
            machines: rng.random_range(1..=3),
            second_pool: rng.random_bool(0.15).then_some(1),
            volumes,
            load_balancers: usize::from(rng.random_bool(0.3)),
        });
    }
    clusters
}

fn draw_volume(rng: &mut StdRng, name: &str) -> VolumeDraw {
    let kinds = [
        VolumeKind::Hotplugged,
        VolumeKind::Hotplugged,
        VolumeKind::Unattached,
        VolumeKind::NeverAttached,
        VolumeKind::Rwx,
    ];
    let snapshots = usize::from(rng.random_bool(0.25));
    VolumeDraw {
        name: name.to_owned(),
        kind: kinds[rng.random_range(0..kinds.len())],
        retain: rng.random_bool(0.15),
        annotated_retain: rng.random_bool(0.1),
        snapshots,
        retained_snapshots: snapshots > 0 && rng.random_bool(0.2),
    }
}

/// The faults that heal by a later step, and that step.
fn healing(step: &Step) -> Option<Step> {
    Some(match step {
        Step::KillGleaner(installation) => Step::StartGleaner(*installation),
        Step::StopHarvester(h) => Step::StartHarvester(*h),
        Step::StopGuest(c) => Step::StartGuest(*c),
        Step::BreakCredential(c) => Step::MendCredential(*c),
        Step::WebhookDown => Step::WebhookUp,
        Step::Pause(c) => Step::Unpause(*c),
        _ => return None,
    })
}

fn draw_steps(rng: &mut StdRng, plan: &Plan) -> Vec<Step> {
    let clusters = plan.clusters.len();
    let mut doomed: Vec<usize> = (0..clusters).filter(|_| rng.random_bool(0.6)).collect();
    if doomed.is_empty() {
        doomed.push(rng.random_range(0..clusters));
    }
    let length = rng.random_range(4..=10);
    let mut model = Model::new(plan);
    let mut steps = Vec::new();
    // (the step that heals a fault, how many more steps until it does)
    let mut pending: Vec<(Step, usize)> = Vec::new();
    let mut attempts = 0;
    while (steps.len() < length || !doomed.is_empty()) && attempts < 1_000 {
        attempts += 1;
        if let Some(due) = pending.iter().position(|(_, left)| *left == 0) {
            let (heal, _) = pending.remove(due);
            if model.allows(&heal) {
                model.apply(&heal);
                steps.push(heal);
            }
            continue;
        }
        let candidate = if model.dry_run && (rng.random_bool(0.3) || steps.len() + 2 >= length) {
            Step::DryRunOff
        } else if steps.len() + 1 >= length || rng.random_bool(0.15) {
            match doomed.first() {
                Some(&cluster) => Step::DeleteCluster(cluster),
                None => Step::Wait(Duration::from_millis(rng.random_range(200..=2_000))),
            }
        } else if rng.random_bool(0.45) {
            draw_fault(rng, plan, &model)
        } else {
            draw_action(rng, plan, &model)
        };
        if !model.allows(&candidate) {
            continue;
        }
        if let Step::DeleteCluster(cluster) = candidate {
            doomed.retain(|doomed| *doomed != cluster);
        }
        if let Some(heal) = healing(&candidate) {
            pending.push((heal, rng.random_range(1..=3)));
        }
        for (_, left) in &mut pending {
            *left = left.saturating_sub(1);
        }
        model.apply(&candidate);
        steps.push(candidate);
    }
    steps
}

fn pick_volume(rng: &mut StdRng, model: &Model, cluster: usize) -> Option<String> {
    let volumes = &model.volumes[cluster];
    (!volumes.is_empty()).then(|| volumes[rng.random_range(0..volumes.len())].clone())
}

fn draw_action(rng: &mut StdRng, plan: &Plan, model: &Model) -> Step {
    let cluster = rng.random_range(0..plan.clusters.len());
    let volume = pick_volume(rng, model, cluster);
    match (rng.random_range(0..10), volume) {
        (0, _) => Step::ScaleDown(cluster),
        (1, _) => Step::Reprovision(cluster),
        (2 | 3, _) | (_, None) => {
            let name = format!("v{}", model.next_volume[cluster]);
            Step::AddVolume(cluster, draw_volume(rng, &name))
        }
        (4, Some(volume)) => Step::DetachVolume(cluster, volume),
        (5, Some(volume)) => Step::AttachVolume(cluster, volume),
        (6, Some(volume)) => Step::AnnotateRetain(cluster, volume),
        (7, Some(volume)) => Step::SetRetain(cluster, volume),
        (8, _) => Step::Pause(cluster),
        _ => Step::RotateCredential(cluster),
    }
}

fn draw_fault(rng: &mut StdRng, plan: &Plan, model: &Model) -> Step {
    let cluster = rng.random_range(0..plan.clusters.len());
    let installation = plan.clusters[cluster].installation;
    match rng.random_range(0..9) {
        0 => Step::KillGleaner(installation),
        1 => Step::KillLeader,
        2 => Step::StopHarvester(usize::from(
            plan.uses_second_harvester() && rng.random_bool(0.3),
        )),
        3 => Step::StopGuest(cluster),
        4 => Step::DropWatches,
        5 => Step::BreakCredential(cluster),
        6 => Step::WebhookDown,
        7 => match pick_volume(rng, model, cluster) {
            Some(volume) => Step::RefuseDelete(cluster, volume),
            None => Step::WebhookDown,
        },
        _ => Step::Wait(Duration::from_millis(rng.random_range(500..=3_000))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_plan() {
        for seed in 0..50 {
            assert_eq!(draw(seed), draw(seed));
        }
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn every_drawn_step_is_allowed_where_it_stands_and_every_doomed_cluster_is_deleted() {
        for seed in 0..500 {
            let plan = draw(seed);
            assert!((1..=4).contains(&plan.clusters.len()), "{plan:?}");
            let mut model = Model::new(&plan);
            for step in &plan.steps {
                assert!(model.allows(step), "seed {seed}: {step:?} not allowed");
                model.apply(step);
            }
            assert!(
                plan.steps
                    .iter()
                    .any(|step| matches!(step, Step::DeleteCluster(_))),
                "seed {seed} deletes nothing"
            );
            assert!(!model.dry_run, "seed {seed} never leaves its dry run");
        }
    }

    #[test]
    fn a_dry_run_ends_before_the_first_deletion() {
        for plan in (0..500).map(draw).filter(|plan| plan.dry_run) {
            let off = plan.steps.iter().position(|s| *s == Step::DryRunOff);
            let deletion = plan
                .steps
                .iter()
                .position(|s| matches!(s, Step::DeleteCluster(_)));
            assert!(off < deletion, "{plan:?}");
        }
    }

    #[test]
    fn clusters_are_told_apart_by_installation_namespace_and_name_and_namesakes_occur() {
        let mut namesakes = 0;
        for plan in (0..300).map(draw) {
            let keys: BTreeSet<_> = plan
                .clusters
                .iter()
                .map(|c| (c.installation, c.namespace, c.name.clone()))
                .collect();
            assert_eq!(keys.len(), plan.clusters.len());
            let names: BTreeSet<_> = plan.clusters.iter().map(|c| &c.name).collect();
            namesakes += usize::from(names.len() < plan.clusters.len());
        }
        assert!(namesakes > 30, "{namesakes} plans with namesakes");
    }

    #[test]
    fn a_thousand_seeds_exercise_every_fault_and_both_capi_versions() {
        let plans: Vec<Plan> = (0..1_000).map(draw).collect();
        let faults: BTreeSet<FaultKind> = plans.iter().flat_map(Plan::faults).collect();
        assert_eq!(faults, FaultKind::ALL.into_iter().collect());
        for capi in [CapiVersion::V1beta1, CapiVersion::V1beta2] {
            assert!(plans.iter().any(|plan| plan.capi == capi));
        }
    }

    #[test]
    fn the_model_skips_what_a_dropped_step_made_possible() {
        let plan = draw(7);
        let volume = VolumeDraw {
            name: "late".into(),
            kind: VolumeKind::Hotplugged,
            retain: false,
            annotated_retain: false,
            snapshots: 0,
            retained_snapshots: false,
        };
        let mut model = Model::new(&plan);
        assert!(!model.allows(&Step::DetachVolume(0, "late".into())));
        model.apply(&Step::AddVolume(0, volume));
        assert!(model.allows(&Step::DetachVolume(0, "late".into())));
        model.apply(&Step::StopGuest(0));
        assert!(!model.allows(&Step::DetachVolume(0, "late".into())));
        assert!(!model.allows(&Step::StartHarvester(0)));
        assert!(!model.allows(&Step::DeleteCluster(9)));
    }

    #[test]
    fn without_drops_exactly_the_named_steps() {
        let plan = draw(3);
        let dropped = BTreeSet::from([0, plan.steps.len() - 1]);
        let shrunk = plan.without(&dropped);
        assert_eq!(shrunk.steps.len(), plan.steps.len() - 2);
        assert_eq!(shrunk.steps[0], plan.steps[1]);
    }
}
