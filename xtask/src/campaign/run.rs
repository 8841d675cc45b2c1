//! Runs one drawn scenario in a world under the real gleaner binary and judges it by the
//! scenario's ground truth alone: a deletion of something that must survive fails the scenario
//! the step it is seen; at the end, with every fault healed and everything settled, every
//! object that must survive exists with its UID, and every other object of a deleted cluster is
//! gone, except those the harness marked "may be kept" (made while gleaner could not see its
//! guest, and deleted before it could).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use gleaner::footprint::{Footprint, Phase};
use gleaner_sim::{
    Clock,
    csi::Reclaim,
    demo,
    rancher::RancherSettings,
    scenario::{Class, ClusterKey, ClusterPlan, Report, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{CapiVersion, ClusterName, Role, World, testing::ensure_namespace};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};

use super::draw::{
    ClusterDraw, FaultKind, Installation, Model, Namespace, Plan, Step, VolumeDraw, VolumeKind,
};
use crate::demo::Running;

/// The world's second Harvester.
pub const SECOND_HARVESTER: &str = "harvester-2";
const TIME_SCALE: f64 = 0.05;
/// How long gleaner may take to record a cluster, or to reclaim every deleted cluster once
/// the faults healed.
const RECORD_TIMEOUT: Duration = Duration::from_secs(90);
const RECLAIM_TIMEOUT: Duration = Duration::from_secs(180);
/// After each step: time for gleaner and the simulators to act on it.
const SETTLE: Duration = Duration::from_millis(700);
/// A world serves this many scenarios, then a fresh one takes over (etcd only grows).
const SCENARIOS_PER_WORLD: usize = 40;

/// How a scenario ended.
#[derive(Clone, Debug)]
pub enum Verdict {
    Passed {
        reclaimed: usize,
        kept: usize,
        /// Objects made while gleaner could not see their guest, kept.
        kept_blind: usize,
    },
    /// Something that must survive was deleted (during the run or found gone at the end).
    WronglyDeleted(Vec<String>),
    /// Something of a deleted cluster that must go is still there.
    Leaked(Vec<String>),
    /// The scenario could not be run or gleaner never finished (a timeout).
    Broken(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed { .. })
    }
}

#[derive(Clone)]
pub struct Outcome {
    pub seed: u64,
    pub faults: BTreeSet<FaultKind>,
    pub elapsed: Duration,
    pub verdict: Verdict,
    /// What each step did, for the failure's story.
    pub story: Vec<String>,
}

/// One worker's worlds (one per Cluster API version, started when first needed) and the
/// gleaner binary it runs.
pub struct Runner {
    binary: PathBuf,
    worlds: BTreeMap<&'static str, (World, usize)>,
    /// Scenarios it ran: each run (a shrink reruns a seed) gets namespaces of its own.
    runs: usize,
}

impl Runner {
    pub fn new(binary: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
            worlds: BTreeMap::new(),
            runs: 0,
        }
    }

    async fn world(&mut self, capi: CapiVersion) -> Result<&World> {
        let key = match capi {
            CapiVersion::V1beta1 => "v1beta1",
            CapiVersion::V1beta2 => "v1beta2",
        };
        if self
            .worlds
            .get(key)
            .is_some_and(|(_, served)| *served >= SCENARIOS_PER_WORLD)
        {
            self.worlds.remove(key);
        }
        if !self.worlds.contains_key(key) {
            let world = demo::world()
                .cluster(SECOND_HARVESTER, Role::Harvester)
                .capi(capi)
                .with_crds(Role::Management, gleaner::footprint::crds())
                .start()
                .await
                .context("cannot start a campaign world")?;
            self.worlds.insert(key, (world, 0));
        }
        let (world, served) = self.worlds.get_mut(key).expect("inserted above");
        *served += 1;
        Ok(world)
    }

    pub async fn run(&mut self, plan: &Plan) -> Outcome {
        let started = Instant::now();
        let binary = self.binary.clone();
        self.runs += 1;
        let prefix = prefix(plan.seed, self.runs);
        let mut story = Vec::new();
        let mut journal = String::new();
        let verdict = match self.world(plan.capi).await {
            Ok(world) => {
                let played = run_in(world, &binary, plan, &prefix, &mut story, &mut journal).await;
                let verdict = match played {
                    Ok(verdict) => verdict,
                    Err(error) => Verdict::Broken(error_text(&error)),
                };
                if !verdict.passed() {
                    story.push(keep_logs(world, &prefix, &journal));
                }
                verdict
            }
            Err(error) => Verdict::Broken(error_text(&error)),
        };
        Outcome {
            seed: plan.seed,
            faults: plan.faults(),
            elapsed: started.elapsed(),
            verdict,
            story,
        }
    }
}

/// Copies the failed run's gleaner logs out of the world (whose folder goes with it) into
/// `target/campaign/<prefix>/`, with what the simulators did (`journal.log`); says where.
fn keep_logs(world: &World, prefix: &str, journal: &str) -> String {
    let kept = crate::workspace_root()
        .join("target")
        .join("campaign")
        .join(prefix);
    let copied = std::fs::create_dir_all(&kept).and_then(|()| {
        for entry in std::fs::read_dir(world.dir().join("logs"))? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(&format!("gleaner-{prefix}-")) {
                std::fs::copy(&path, kept.join(&*name))?;
            }
        }
        std::fs::write(kept.join("journal.log"), journal)
    });
    match copied {
        Ok(()) => format!("gleaner's logs: {}", kept.display()),
        Err(error) => format!("cannot keep gleaner's logs in {}: {error}", kept.display()),
    }
}

/// The simulators' journal, one entry a line, stamped with wall-clock time so it reads beside
/// gleaner's logs.
fn journal_text(journal: &gleaner_sim::Journal) -> String {
    let (now, wall) = (Instant::now(), jiff::Timestamp::now());
    journal
        .entries()
        .iter()
        .map(|entry| {
            let ago =
                jiff::SignedDuration::try_from(now.duration_since(entry.at)).unwrap_or_default();
            let at = wall.checked_sub(ago).unwrap_or(wall);
            format!("{at} {} {}\n", entry.actor, entry.what)
        })
        .collect()
}

/// The error and its causes, each once: the simulators' errors already name their source.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Namespaces and the gleaner's namespace are named after the seed and the run, so scenarios
/// sharing a world keep apart (and stay within 63 characters).
fn prefix(seed: u64, run: usize) -> String {
    format!("k{:x}-{run}", seed % 0x1_0000_0000)
}

fn management(installation: Installation) -> &'static str {
    match installation {
        Installation::Main => ClusterName::RANCHER,
        Installation::Second => demo::SECOND_RANCHER,
    }
}

fn namespace_suffix(namespace: Namespace) -> &'static str {
    match namespace {
        Namespace::Fleet => "fleet",
        Namespace::Other => "other",
    }
}

fn volume_plan(volume: &VolumeDraw) -> VolumePlan {
    let mut plan = VolumePlan::new(&volume.name).snapshots(volume.snapshots);
    plan = match volume.kind {
        VolumeKind::Hotplugged => plan.hotplugged(),
        VolumeKind::Unattached => plan.unattached(),
        VolumeKind::NeverAttached => plan,
        VolumeKind::Rwx => plan.rwx(),
    };
    if volume.retain {
        plan = plan.retain();
    }
    if volume.annotated_retain {
        plan = plan.annotated_retain();
    }
    if volume.retained_snapshots {
        plan = plan.retained_snapshots();
    }
    plan
}

fn cluster_plan(cluster: &ClusterDraw) -> ClusterPlan {
    let mut plan = ClusterPlan::new(&cluster.name, cluster.machines)
        .in_installation(management(cluster.installation))
        .in_namespace(namespace_suffix(cluster.namespace))
        .with_guest();
    if let Some(machines) = cluster.second_pool {
        plan = plan.pool_on(SECOND_HARVESTER, machines);
    }
    for volume in &cluster.volumes {
        plan = plan.volume(volume_plan(volume));
    }
    for index in 0..cluster.load_balancers {
        plan = plan.load_balancer(&format!("lb{index}"));
    }
    plan
}

fn builder(plan: &Plan, prefix: &str) -> ScenarioBuilder {
    plan.clusters.iter().fold(
        ScenarioBuilder::new(prefix)
            .clock(Clock::new(TIME_SCALE))
            .rancher(RancherSettings {
                driver: plan.driver,
                cleanup_handler: plan.cleanup_handler,
                ..RancherSettings::default()
            })
            .csi_cluster_label(plan.csi_cluster_label)
            .load_balancer_controller(plan.load_balancer_controller)
            .lookalikes(plan.lookalikes),
        |builder, cluster| builder.cluster(cluster_plan(cluster)),
    )
}

async fn run_in(
    world: &World,
    binary: &Path,
    plan: &Plan,
    prefix: &str,
    story: &mut Vec<String>,
    journal: &mut String,
) -> Result<Verdict> {
    let scenario = builder(plan, prefix)
        .start(world)
        .await
        .context("cannot set the scenario up")?;
    let keys: Vec<ClusterKey> = scenario.cluster_keys().cloned().collect();
    let namespace = format!("gleaner-{prefix}");
    let mut gleaners = Gleaners::new(world, binary, plan, &namespace, &keys);
    gleaners.prepare(world).await?;
    let mut run = Run {
        world,
        plan,
        gleaner_namespace: namespace.clone(),
        scenario,
        keys,
        deletions: Deletions::default(),
        blind: BTreeSet::new(),
        may_keep: BTreeSet::new(),
        broken: BTreeSet::new(),
        paused: BTreeSet::new(),
        stopped_guests: BTreeSet::new(),
        story,
    };
    let verdict = run.play(&mut gleaners).await;
    *journal = journal_text(run.scenario.journal());
    gleaners.stop_all();
    run.deletions.stop();
    let retired = run.scenario.stop_guests(world);
    let verdict = verdict?;
    retired.context("cannot stop the scenario's guests")?;
    Ok(verdict)
}

/// A scenario being played.
struct Run<'a> {
    world: &'a World,
    plan: &'a Plan,
    gleaner_namespace: String,
    scenario: Scenario,
    keys: Vec<ClusterKey>,
    deletions: Deletions,
    /// Volumes (cluster, plan name) made while gleaner could not see their guest.
    blind: BTreeSet<(usize, String)>,
    /// Host object UIDs that may be kept: blind volumes' objects whose cluster was deleted
    /// while still blind.
    may_keep: BTreeSet<String>,
    /// Clusters whose credential Secret is broken now.
    broken: BTreeSet<usize>,
    paused: BTreeSet<usize>,
    stopped_guests: BTreeSet<usize>,
    story: &'a mut Vec<String>,
}

impl Run<'_> {
    async fn play(&mut self, gleaners: &mut Gleaners) -> Result<Verdict> {
        gleaners.start_all()?;
        self.until_recorded().await?;
        self.deletions = Deletions::watch(self.world, &self.scenario).await?;
        let mut model = Model::new(self.plan);
        for (index, step) in self.plan.steps.iter().enumerate() {
            if !model.allows(step) {
                self.story.push(format!("{index}: skipped {step:?}"));
                continue;
            }
            let started = Instant::now();
            self.step(step, gleaners)
                .await
                .with_context(|| format!("step {index} ({step:?})"))?;
            model.apply(step);
            tokio::time::sleep(SETTLE).await;
            self.story.push(format!(
                "{index}: {step:?} ({:.1}s)",
                started.elapsed().as_secs_f64()
            ));
            if let Some(wrong) = self.wrongful_deletions() {
                return Ok(Verdict::WronglyDeleted(wrong));
            }
        }
        self.heal(gleaners).await?;
        self.story.push("healed every fault".to_owned());
        let reclaimed = self.until_reclaimed().await;
        if let Some(wrong) = self.wrongful_deletions() {
            return Ok(Verdict::WronglyDeleted(wrong));
        }
        reclaimed?;
        let report = self
            .scenario
            .measure(Duration::from_secs(60))
            .await
            .context("cannot judge the scenario")?;
        Ok(self.judge(&report))
    }

    fn key(&self, cluster: usize) -> &ClusterKey {
        &self.keys[cluster]
    }

    /// Whether gleaner cannot see the cluster's guest now.
    fn is_blind(&self, cluster: usize, gleaners: &Gleaners) -> bool {
        self.broken.contains(&cluster)
            || self.stopped_guests.contains(&cluster)
            || gleaners.is_down(self.plan.clusters[cluster].installation)
    }

    /// The blind volumes of clusters gleaner can see again become ordinary ones.
    fn regain_sight(&mut self, gleaners: &Gleaners) {
        let blind = std::mem::take(&mut self.blind);
        self.blind = blind
            .into_iter()
            .filter(|(cluster, _)| self.is_blind(*cluster, gleaners))
            .collect();
    }

    async fn step(&mut self, step: &Step, gleaners: &mut Gleaners) -> Result<()> {
        match step {
            Step::DeleteCluster(c) => {
                let key = self.key(*c).clone();
                for (_, volume) in self.blind.iter().filter(|(cluster, _)| cluster == c) {
                    for object in self.scenario.objects_of_volume(&key, volume) {
                        self.may_keep.insert(object.uid);
                    }
                }
                self.scenario.delete_cluster(&key).await?;
            }
            Step::ScaleDown(c) => {
                let key = self.key(*c).clone();
                self.scenario.scale_down(&key).await?;
            }
            Step::Reprovision(c) => {
                let key = self.key(*c).clone();
                self.scenario.reprovision(&key).await?;
            }
            Step::AddVolume(c, volume) => {
                let key = self.key(*c).clone();
                self.scenario.add_volume(&key, volume_plan(volume)).await?;
                if self.is_blind(*c, gleaners) {
                    self.blind.insert((*c, volume.name.clone()));
                }
            }
            Step::DetachVolume(c, volume) => {
                let key = self.key(*c).clone();
                self.scenario.detach_volume(&key, volume).await?;
            }
            Step::AttachVolume(c, volume) => {
                let key = self.key(*c).clone();
                self.scenario.attach_volume(&key, volume).await?;
            }
            Step::AnnotateRetain(c, volume) => {
                let key = self.key(*c).clone();
                self.scenario.annotate_retain(&key, volume).await?;
            }
            Step::SetRetain(c, volume) => {
                let key = self.key(*c).clone();
                self.scenario
                    .set_reclaim_policy(&key, volume, Reclaim::Retain)
                    .await?;
            }
            Step::Pause(c) => {
                self.scenario.set_paused(self.key(*c), true).await?;
                self.paused.insert(*c);
            }
            Step::Unpause(c) => {
                self.scenario.set_paused(self.key(*c), false).await?;
                self.paused.remove(c);
            }
            Step::RotateCredential(c) => {
                let key = self.key(*c).clone();
                self.scenario.rotate_guest_kubeconfig(&key).await?;
            }
            Step::Wait(duration) => tokio::time::sleep(*duration).await,
            Step::KillGleaner(installation) => gleaners.kill(*installation),
            Step::StartGleaner(installation) => {
                gleaners.start(*installation)?;
                self.regain_sight(gleaners);
            }
            Step::KillLeader => gleaners.kill_leader(self.world).await?,
            Step::StopHarvester(h) => self.world.stop_apiserver(harvester(*h))?,
            Step::StartHarvester(h) => self.world.start_apiserver(harvester(*h)).await?,
            Step::StopGuest(c) => {
                let guest = self.guest(*c)?;
                self.world.stop_apiserver(&guest)?;
                self.stopped_guests.insert(*c);
            }
            Step::StartGuest(c) => {
                let guest = self.guest(*c)?;
                self.world.start_apiserver(&guest).await?;
                self.stopped_guests.remove(c);
                self.regain_sight(gleaners);
            }
            Step::DropWatches => {
                self.world.stop_apiserver(ClusterName::RANCHER)?;
                self.world.start_apiserver(ClusterName::RANCHER).await?;
            }
            Step::BreakCredential(c) => {
                self.scenario.break_guest_kubeconfig(self.key(*c)).await?;
                self.broken.insert(*c);
            }
            Step::MendCredential(c) => {
                self.scenario.mend_guest_kubeconfig(self.key(*c)).await?;
                self.broken.remove(c);
                self.regain_sight(gleaners);
            }
            Step::WebhookDown => self.scenario.set_webhook_down(true),
            Step::WebhookUp => self.scenario.set_webhook_down(false),
            Step::RefuseDelete(c, volume) => {
                let key = self.key(*c).clone();
                let attacher = format!("thief-{c}-{volume}");
                self.scenario
                    .attach_before_delete(&key, volume, &attacher)?;
            }
            Step::DryRunOff => gleaners.leave_dry_run()?,
        }
        Ok(())
    }

    fn guest(&self, cluster: usize) -> Result<String> {
        self.scenario
            .guest_of(self.key(cluster))
            .ok_or_else(|| anyhow!("cluster {cluster} has no guest apiserver"))
    }

    /// Every fault healed: apiservers started, credentials mended, the webhook up, clusters
    /// unpaused, every gleaner running and out of its dry run.
    async fn heal(&mut self, gleaners: &mut Gleaners) -> Result<()> {
        for h in 0..2 {
            if self.plan.uses_second_harvester() || h == 0 {
                self.world.start_apiserver(harvester(h)).await.ok();
            }
        }
        for cluster in std::mem::take(&mut self.stopped_guests) {
            let guest = self.guest(cluster)?;
            self.world.start_apiserver(&guest).await?;
        }
        for cluster in std::mem::take(&mut self.broken) {
            self.scenario
                .mend_guest_kubeconfig(self.key(cluster))
                .await?;
        }
        self.scenario.set_webhook_down(false);
        for cluster in std::mem::take(&mut self.paused) {
            self.scenario.set_paused(self.key(cluster), false).await?;
        }
        gleaners.leave_dry_run()?;
        gleaners.start_all()?;
        Ok(())
    }

    /// Deletions seen so far of objects that must survive, as the ground truth stands now.
    fn wrongful_deletions(&self) -> Option<Vec<String>> {
        let wrong: Vec<String> = self
            .deletions
            .seen()
            .into_iter()
            .filter_map(|(uid, what)| {
                let class = self.scenario.class_now(&uid)?;
                class.must_survive().then(|| format!("{what} ({class})"))
            })
            .collect();
        (!wrong.is_empty()).then_some(wrong)
    }

    async fn footprint_api(&self, installation: Installation) -> Result<Api<Footprint>> {
        let client = self.world.client(management(installation)).await?;
        Ok(Api::namespaced(client, &self.gleaner_namespace))
    }

    /// Until every cluster's Footprint records every guest object it made: gleaner is in
    /// place before the steps begin.
    async fn until_recorded(&self) -> Result<()> {
        for (index, key) in self.keys.iter().enumerate() {
            let footprints = self
                .footprint_api(self.plan.clusters[index].installation)
                .await?;
            let uid = cluster_uid(&self.scenario, key)?;
            let made: BTreeSet<String> = self
                .scenario
                .made_by(key)
                .into_iter()
                .filter(|(_, traits)| !traits.vm_disk)
                .map(|(object, _)| object.uid)
                .collect();
            crate::demo::until(RECORD_TIMEOUT, "gleaner records every cluster", || async {
                let recorded: BTreeSet<String> = footprints
                    .get_opt(&uid)
                    .await?
                    .and_then(|footprint| footprint.status)
                    .map(|status| status.records().into_iter().map(|r| r.uid).collect())
                    .unwrap_or_default();
                Ok(made.is_subset(&recorded))
            })
            .await?;
        }
        Ok(())
    }

    /// Until every deleted cluster's Footprint is `Reclaimed`.
    async fn until_reclaimed(&self) -> Result<()> {
        for (index, key) in self.keys.iter().enumerate() {
            if !self.scenario.is_deleted(key) {
                continue;
            }
            let footprints = self
                .footprint_api(self.plan.clusters[index].installation)
                .await?;
            let uid = cluster_uid(&self.scenario, key)?;
            let reclaimed = crate::demo::until(
                RECLAIM_TIMEOUT,
                "gleaner reclaims every deleted cluster",
                || async {
                    let phase = footprints
                        .get_opt(&uid)
                        .await?
                        .and_then(|footprint| footprint.status)
                        .and_then(|status| status.phase);
                    Ok(phase == Some(Phase::Reclaimed))
                },
            )
            .await;
            if let Err(error) = reclaimed {
                let state = match footprints.get_opt(&uid).await {
                    Ok(Some(footprint)) => footprint_state(&footprint),
                    Ok(None) => "no Footprint".to_owned(),
                    Err(read) => format!("cannot read the Footprint: {read}"),
                };
                return Err(error.context(format!("Footprint {uid}: {state}")));
            }
        }
        Ok(())
    }

    fn judge(&self, report: &Report) -> Verdict {
        let describe = |object: &gleaner_sim::scenario::TrackedObject| {
            format!(
                "{} {}/{} ({})",
                object.kind, object.namespace, object.name, object.class
            )
        };
        let wrong: Vec<String> = report
            .objects
            .iter()
            .filter(|object| object.must_survive && !object.exists_at_end)
            .map(describe)
            .collect();
        if !wrong.is_empty() {
            return Verdict::WronglyDeleted(wrong);
        }
        let leaked: Vec<String> = report
            .objects
            .iter()
            .filter(|object| {
                !object.must_survive
                    && object.exists_at_end
                    && object.class != Class::VmDisk
                    && !self.may_keep.contains(&object.uid)
            })
            .map(describe)
            .collect();
        if !leaked.is_empty() {
            return Verdict::Leaked(leaked);
        }
        let count = |keep: fn(&gleaner_sim::scenario::TrackedObject) -> bool| {
            report.objects.iter().filter(|object| keep(object)).count()
        };
        Verdict::Passed {
            reclaimed: count(|object| !object.must_survive && !object.exists_at_end),
            kept: count(|object| object.must_survive && object.exists_at_end),
            kept_blind: report
                .objects
                .iter()
                .filter(|object| object.exists_at_end && self.may_keep.contains(&object.uid))
                .count(),
        }
    }
}

/// A Footprint's phase and its true conditions with their messages, for a failure's story.
fn footprint_state(footprint: &gleaner::footprint::Footprint) -> String {
    let status = footprint.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .filter(|condition| condition.status == "True")
        .map(|condition| {
            format!(
                "{} ({}: {})",
                condition.type_, condition.reason, condition.message
            )
        })
        .collect();
    format!("phase {:?}; {}", status.phase, conditions.join("; "))
}

/// The provisioning Cluster's UID: its Footprint's name.
fn cluster_uid(scenario: &Scenario, key: &ClusterKey) -> Result<String> {
    scenario
        .cluster_of(key)
        .map(|cluster| cluster.uid.clone())
        .with_context(|| format!("no cluster {key:?}"))
}

fn harvester(index: usize) -> &'static str {
    if index == 0 {
        ClusterName::HARVESTER
    } else {
        SECOND_HARVESTER
    }
}

/// Deletions of recorded host objects, as watches on the scenario's Harvester namespace see
/// them: (UID, what it was).
#[derive(Default)]
struct Deletions {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Deletions {
    async fn watch(world: &World, scenario: &Scenario) -> Result<Self> {
        let mut kinds: BTreeMap<(String, String), ApiResource> = BTreeMap::new();
        for (harvester, object) in scenario.recorded_objects() {
            kinds.insert((harvester, object.resource.plural.clone()), object.resource);
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for ((harvester, _), resource) in kinds {
            let client: Client = world.client(&harvester).await?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(client, scenario.vm_namespace(), &resource);
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    if let Ok(watcher::Event::Delete(object)) = event {
                        let what = format!("{} {}", resource.kind, object.name_any());
                        if let Some(uid) = object.uid() {
                            lock(&seen).push((uid, what));
                        }
                    }
                }
            }));
        }
        Ok(Self { seen, tasks })
    }

    fn seen(&self) -> Vec<(String, String)> {
        lock(&self.seen).clone()
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The scenario's gleaners: one per Rancher installation that has clusters, with
/// [`Plan::replicas`] replicas in the main one; real processes of the binary under test.
struct Gleaners {
    binary: PathBuf,
    logs: PathBuf,
    namespace: String,
    dry_run: bool,
    replicas: usize,
    /// Per installation: its kubeconfig, the namespaces it watches, the replicas running.
    installations: BTreeMap<Installation, Installed>,
    started: usize,
}

struct Installed {
    kubeconfig: PathBuf,
    watch: String,
    running: Vec<(String, Running)>,
}

impl Gleaners {
    fn new(
        world: &World,
        binary: &Path,
        plan: &Plan,
        namespace: &str,
        keys: &[ClusterKey],
    ) -> Self {
        let mut installations = BTreeMap::new();
        for (cluster, key) in plan.clusters.iter().zip(keys) {
            let installed = installations
                .entry(cluster.installation)
                .or_insert_with(|| Installed {
                    kubeconfig: world
                        .kubeconfig(management(cluster.installation))
                        .expect("every installation is a world cluster"),
                    watch: String::new(),
                    running: Vec::new(),
                });
            if !installed
                .watch
                .split(',')
                .any(|watched| watched == key.namespace)
            {
                if !installed.watch.is_empty() {
                    installed.watch.push(',');
                }
                installed.watch.push_str(&key.namespace);
            }
        }
        Self {
            binary: binary.to_owned(),
            logs: world.dir().join("logs"),
            namespace: namespace.to_owned(),
            dry_run: plan.dry_run,
            replicas: plan.replicas,
            installations,
            started: 0,
        }
    }

    /// gleaner's namespace in each installation, as its chart would make it.
    async fn prepare(&self, world: &World) -> Result<()> {
        for installation in self.installations.keys() {
            let client = world.client(management(*installation)).await?;
            ensure_namespace(&client, &self.namespace).await?;
        }
        Ok(())
    }

    fn is_down(&self, installation: Installation) -> bool {
        self.installations
            .get(&installation)
            .is_some_and(|installed| installed.running.is_empty())
    }

    /// Every installation's replicas that are not running.
    fn start_all(&mut self) -> Result<()> {
        let installations: Vec<Installation> = self.installations.keys().copied().collect();
        for installation in installations {
            self.start(installation)?;
        }
        Ok(())
    }

    fn start(&mut self, installation: Installation) -> Result<()> {
        let wanted = if installation == Installation::Main {
            self.replicas
        } else {
            1
        };
        while self
            .installations
            .get(&installation)
            .is_some_and(|installed| installed.running.len() < wanted)
        {
            self.spawn(installation)?;
        }
        Ok(())
    }

    fn spawn(&mut self, installation: Installation) -> Result<()> {
        self.started += 1;
        let name = format!("{}-{}", self.namespace, self.started);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let Some(installed) = self.installations.get_mut(&installation) else {
            return Ok(());
        };
        let mut command = Command::new("setpriv");
        // Killed with the campaign, even when it is killed before `Drop` runs.
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.binary)
            .args(["run", "--kubeconfig"])
            .arg(&installed.kubeconfig)
            .args([
                "--namespace",
                &self.namespace,
                "--watch-namespace",
                &installed.watch,
            ])
            .args(["--lease-duration", "2s", "--grace-period", "0s"])
            .args(["--inventory-timeout", "10s", "--admin-addr", "127.0.0.1:0"])
            .env("POD_NAME", &name)
            .env("RUST_LOG", "info,gleaner=debug")
            .stdout(Stdio::null())
            .stderr(log);
        if self.dry_run {
            command.arg("--dry-run");
        }
        let child = command.spawn().context("cannot start gleaner")?;
        installed.running.push((name, Running(child)));
        Ok(())
    }

    fn kill(&mut self, installation: Installation) {
        if let Some(installed) = self.installations.get_mut(&installation) {
            installed.running.clear();
        }
    }

    /// SIGKILLs the main installation's leading replica (the Lease's holder) and starts a fresh
    /// standby in its place.
    async fn kill_leader(&mut self, world: &World) -> Result<()> {
        let client = world.client(ClusterName::RANCHER).await?;
        let lease = Api::<Lease>::namespaced(client, &self.namespace)
            .get_opt("gleaner")
            .await?;
        let holder = lease
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity);
        if let Some(installed) = self.installations.get_mut(&Installation::Main) {
            installed
                .running
                .retain(|(name, _)| Some(name) != holder.as_ref());
        }
        self.start(Installation::Main)
    }

    /// Restarts every replica without `--dry-run`.
    fn leave_dry_run(&mut self) -> Result<()> {
        if !self.dry_run {
            return Ok(());
        }
        self.dry_run = false;
        for installed in self.installations.values_mut() {
            installed.running.clear();
        }
        self.start_all()
    }

    fn stop_all(&mut self) {
        for installed in self.installations.values_mut() {
            installed.running.clear();
        }
    }
}
