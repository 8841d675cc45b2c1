//! The guest clusters gleaner reads, one per living Footprint (design.md §2 and §5): their PVs
//! of the Harvester CSI driver, VolumeSnapshotContents and LoadBalancer Services, which only the
//! guest knows.
//!
//! Each guest is reached through its `<cluster>-kubeconfig` Secret, in the cluster's Rancher
//! namespace. Rancher writes that Secret (pkg/controllers/provisioningv2/kubeconfig) with its own
//! proxy as the server, `<internal server URL>/k8s/clusters/<management cluster id>`, and a
//! Rancher token: gleaner talks to Rancher, which tunnels to the guest's cattle-cluster-agent. So
//! a guest that is down shows as a 5xx from the proxy, not as a refused connection, and a guest
//! whose agent hangs as a call that never ends; every call is bounded, and the final inventory
//! as a whole by `--inventory-timeout`.
//!
//! One task per guest watches those three kinds into projections (only the fields the core
//! reads) that outlive the watch: when the guest stops answering, the last known facts stand.
//! The Secret is watched by name, metadata only, and read by name when its version changes: a
//! rotated token is followed without ever listing or watching Secret content.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use gleaner_core::{
    Health, Inventory,
    guest::{GUEST_DRIVER, GuestFacts, GuestPolicy, GuestSnapshotContent, GuestVolume},
};
use k8s_openapi::api::core::v1::{PersistentVolume, Secret, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    runtime::{WatchStreamExt, reflector::Store, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    Error, Result,
    error::ApiFailure,
    footprint::Footprint,
    management::{cache::FootprintQueue, secrets},
    metrics::{Metrics, RemoteState, WatchKind},
    timeouts,
};

/// The key of the guest kubeconfig in Rancher's `<cluster>-kubeconfig` Secret.
const KUBECONFIG_KEY: &str = "value";
/// How soon a guest whose Secret could not be read for a passing reason is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How soon a guest whose Secret is missing or unusable is tried again, if the Secret's watch
/// does not show a change first.
const RETRY_UNUSABLE: Duration = Duration::from_secs(60);
/// How often a task checks that its Footprint still exists.
const RETIRE_CHECK: Duration = Duration::from_secs(10);

fn volume_snapshot_content() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// Where a guest's kubeconfig is: `<cluster>-kubeconfig` in the cluster's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSecret {
    pub namespace: String,
    pub name: String,
}

impl GuestSecret {
    pub fn of(namespace: &str, cluster: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: format!("{cluster}-kubeconfig"),
        }
    }
}

impl std::fmt::Display for GuestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The three kinds a guest is watched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Volumes,
    Contents,
    Services,
}

/// One guest object as the core reads it; `None` for an object that does not count (another
/// driver's PV, a Service of another type).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fact {
    Volume(GuestVolume),
    Content(GuestSnapshotContent),
    LoadBalancerService,
}

type Projected = (String, Option<Fact>);

/// The projected objects of one kind, by UID; a re-list replaces them when it completes.
#[derive(Debug, Default)]
struct Projection {
    items: BTreeMap<String, Fact>,
    relisting: Option<BTreeMap<String, Fact>>,
    listed: bool,
    /// What the watch's last error said, until it answers again.
    failing: Option<Health>,
}

impl Projection {
    /// Applies a watch event; `true` when what the core reads changed.
    fn apply(&mut self, event: watcher::Event<Projected>) -> bool {
        self.failing = None;
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply((uid, fact)) => {
                if let (Some(relisting), Some(fact)) = (self.relisting.as_mut(), fact) {
                    relisting.insert(uid, fact);
                }
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                let changed = !self.listed || fresh != self.items;
                self.items = fresh;
                self.listed = true;
                changed
            }
            watcher::Event::Apply((uid, Some(fact))) => {
                self.items.insert(uid, fact.clone()) != Some(fact)
            }
            watcher::Event::Apply((uid, None)) | watcher::Event::Delete((uid, _)) => {
                self.items.remove(&uid).is_some()
            }
        }
    }

    /// An API the guest does not serve (no snapshot CRDs): nothing of that kind exists.
    fn not_served(&mut self) -> bool {
        let changed = !self.listed || !self.items.is_empty();
        self.items.clear();
        self.relisting = None;
        self.listed = true;
        self.failing = None;
        changed
    }
}

fn facts_of(projections: &BTreeMap<Target, Projection>) -> GuestFacts {
    let mut facts = GuestFacts::default();
    for (uid, fact) in projections
        .values()
        .flat_map(|projection| &projection.items)
    {
        match fact {
            Fact::Volume(volume) => facts.volumes.push(volume.clone()),
            Fact::Content(content) => facts.contents.push(content.clone()),
            Fact::LoadBalancerService => {
                facts.load_balancer_services.insert(uid.clone());
            }
        }
    }
    facts
}

fn volume(pv: &PersistentVolume) -> Projected {
    let uid = pv.uid().unwrap_or_default();
    let spec = pv.spec.as_ref();
    let fact = spec
        .and_then(|spec| spec.csi.as_ref())
        .filter(|csi| csi.driver == GUEST_DRIVER)
        .map(|csi| {
            Fact::Volume(GuestVolume {
                name: pv.name_any(),
                uid: uid.clone(),
                driver: csi.driver.clone(),
                volume_handle: csi.volume_handle.clone(),
                read_write_many: spec
                    .and_then(|spec| spec.access_modes.as_ref())
                    .is_some_and(|modes| modes.iter().any(|mode| mode == "ReadWriteMany")),
                reclaim: spec
                    .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
                    .and_then(GuestPolicy::parse),
            })
        });
    (uid, fact)
}

fn content(object: &DynamicObject) -> Projected {
    let uid = object.uid().unwrap_or_default();
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    let driver = text(&object.data["spec"]["driver"]).unwrap_or_default();
    let fact = (driver == GUEST_DRIVER).then(|| {
        Fact::Content(GuestSnapshotContent {
            name: object.name_any(),
            uid: uid.clone(),
            driver,
            snapshot_handle: text(&object.data["status"]["snapshotHandle"]),
            deletion: object.data["spec"]["deletionPolicy"]
                .as_str()
                .and_then(GuestPolicy::parse),
        })
    });
    (uid, fact)
}

fn service(service: &Service) -> Projected {
    let load_balancer =
        service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer");
    (
        service.uid().unwrap_or_default(),
        load_balancer.then_some(Fact::LoadBalancerService),
    )
}

fn projected<K>(
    event: watcher::Event<K>,
    project: fn(&K) -> Projected,
) -> watcher::Event<Projected> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(project(&object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(object) => watcher::Event::Apply(project(&object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(project(&object)),
    }
}

/// What a failed call or watch to a guest means: the token or its rights (a rotation not
/// followed yet, a revoked token), or a guest (or Rancher's proxy to it) that does not answer.
fn health_of(error: &kube::Error) -> Health {
    let problem = error.to_string();
    match ApiFailure::of(error) {
        ApiFailure::Forbidden => Health::Misconfigured { problem },
        _ => Health::Unreachable { problem },
    }
}

fn watch_health(error: &watcher::Error) -> Health {
    match error {
        watcher::Error::InitialListFailed(source)
        | watcher::Error::WatchStartFailed(source)
        | watcher::Error::WatchFailed(source) => health_of(source),
        watcher::Error::WatchError(status) if matches!(status.code, 401 | 403) => {
            Health::Misconfigured {
                problem: error.to_string(),
            }
        }
        _ => Health::Unreachable {
            problem: error.to_string(),
        },
    }
}

/// Whether the guest does not serve the API at all (a 404 on the list: no snapshot CRDs).
fn not_served(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

struct Watched {
    secret: GuestSecret,
    /// The last known facts: `None` until the first complete list.
    facts: Option<GuestFacts>,
    health: Health,
    /// The client of the current Secret version, for the final inventory.
    client: Option<Client>,
    task: AbortHandle,
}

pub struct Guests {
    management: Client,
    metrics: Metrics,
    api_timeout: Duration,
    footprints: Store<Footprint>,
    watched: Mutex<HashMap<String, Watched>>,
    /// What stopped guests showed last: a reclaim that could not attribute yet still needs it.
    last_facts: Mutex<HashMap<String, GuestFacts>>,
    queue: FootprintQueue,
}

impl Guests {
    pub fn new(
        management: Client,
        metrics: Metrics,
        api_timeout: Duration,
        footprints: Store<Footprint>,
    ) -> Self {
        Self {
            management,
            metrics,
            api_timeout,
            footprints,
            watched: Mutex::default(),
            last_facts: Mutex::default(),
            queue: FootprintQueue::default(),
        }
    }

    /// The names of the Footprints to look at again, for the one controller that follows them.
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.queue.take()
    }

    /// Makes sure the guest of `footprint` is watched through `secret`.
    pub fn follow(self: &Arc<Self>, footprint: &str, secret: GuestSecret) {
        let mut watched = lock(&self.watched);
        if watched
            .get(footprint)
            .is_some_and(|entry| entry.secret == secret)
        {
            return;
        }
        if let Some(previous) = watched.remove(footprint) {
            previous.task.abort();
        }
        let task = tokio::spawn(self.clone().watch(footprint.to_owned(), secret.clone()));
        tracing::info!(%footprint, %secret, "watching a guest cluster");
        watched.insert(
            footprint.to_owned(),
            Watched {
                secret,
                facts: None,
                health: Health::Syncing,
                client: None,
                task: task.abort_handle(),
            },
        );
        drop(watched);
        self.report();
    }

    /// Stops watching the guest of `footprint` (its deletion is confirmed and inventoried, or
    /// the Footprint is gone).
    /// Its last facts stay for the reclaim of `footprint` until [`Guests::forget`].
    pub fn stop(&self, footprint: &str) {
        let removed = lock(&self.watched).remove(footprint);
        if let Some(entry) = removed {
            entry.task.abort();
            if let Some(facts) = entry.facts {
                lock(&self.last_facts).insert(footprint.to_owned(), facts);
            }
            tracing::info!(%footprint, "the guest cluster's watch stops");
            self.report();
        }
    }

    /// Stops watching the guest of `footprint` and drops what it showed (the Footprint is
    /// reclaimed or gone).
    pub fn forget(&self, footprint: &str) {
        self.stop(footprint);
        lock(&self.last_facts).remove(footprint);
    }

    /// The last known facts of the guest of `footprint`, if it was ever listed since gleaner
    /// started watching it.
    pub fn facts(&self, footprint: &str) -> Option<GuestFacts> {
        lock(&self.watched)
            .get(footprint)
            .and_then(|entry| entry.facts.clone())
            .or_else(|| lock(&self.last_facts).get(footprint).cloned())
    }

    pub fn health(&self, footprint: &str) -> Health {
        lock(&self.watched)
            .get(footprint)
            .map_or(Health::Syncing, |entry| entry.health.clone())
    }

    /// One fresh live read of the guest, bounded by `timeout` as a whole: its PVs, snapshot
    /// contents and Services. Completed, the result becomes the known facts; otherwise the last
    /// known facts stand.
    pub async fn inventory(
        &self,
        footprint: &str,
        secret: &GuestSecret,
        timeout: Duration,
    ) -> (Inventory, Option<GuestFacts>) {
        let listed = tokio::time::timeout(timeout, self.list_all(footprint, secret)).await;
        let inventory = match listed {
            Ok(Ok(facts)) => {
                let inventory = Inventory::Completed {
                    volumes: facts.driver_volumes().count(),
                    contents: facts.driver_contents().count(),
                    services: facts.load_balancer_services.len(),
                };
                if let Some(entry) = lock(&self.watched).get_mut(footprint) {
                    entry.facts = Some(facts);
                }
                inventory
            }
            Ok(Err(error)) => Inventory::Incomplete {
                problem: error.to_string(),
            },
            Err(_) => Inventory::Incomplete {
                problem: format!("the guest did not answer within {}s", timeout.as_secs()),
            },
        };
        (inventory, self.facts(footprint))
    }

    async fn list_all(&self, footprint: &str, secret: &GuestSecret) -> Result<GuestFacts> {
        let current = lock(&self.watched)
            .get(footprint)
            .and_then(|entry| entry.client.clone());
        let client = match current {
            Some(client) => client,
            None => self.client_for(secret).await?.1,
        };
        let context = |what: &str| format!("cannot list the {what} of the guest of {secret}");
        let params = ListParams::default();
        let volumes = async {
            Api::<PersistentVolume>::all(client.clone())
                .list(&params)
                .await
                .map_err(|source| Error::Kube {
                    context: context("PersistentVolumes"),
                    source,
                })
        };
        let contents = async {
            match Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_content())
                .list(&params)
                .await
            {
                Ok(list) => Ok(list.items),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
                Err(source) => Err(Error::Kube {
                    context: context("VolumeSnapshotContents"),
                    source,
                }),
            }
        };
        let services = async {
            Api::<Service>::all(client.clone())
                .list(&params)
                .await
                .map_err(|source| Error::Kube {
                    context: context("Services"),
                    source,
                })
        };
        let (volumes, contents, services) = tokio::try_join!(volumes, contents, services)?;
        let mut projections = BTreeMap::new();
        let mut fill = |target, items: Vec<Projected>| {
            let projection: &mut Projection = projections.entry(target).or_default();
            projection.items = items
                .into_iter()
                .filter_map(|(uid, fact)| Some((uid, fact?)))
                .collect();
        };
        fill(Target::Volumes, volumes.items.iter().map(volume).collect());
        fill(Target::Contents, contents.iter().map(content).collect());
        fill(
            Target::Services,
            services.items.iter().map(service).collect(),
        );
        Ok(facts_of(&projections))
    }

    /// Reads the guest's Secret by name and builds a client from it, with its version.
    async fn client_for(&self, secret: &GuestSecret) -> Result<(String, Client)> {
        let unusable = |problem: String| Error::GuestKubeconfig {
            secret: secret.to_string(),
            problem,
        };
        let read = Api::<Secret>::namespaced(self.management.clone(), &secret.namespace)
            .get(&secret.name)
            .await
            .map_err(|source| match ApiFailure::of(&source) {
                ApiFailure::NotFound | ApiFailure::Forbidden => {
                    unusable(format!("cannot be read: {source}"))
                }
                _ => Error::Kube {
                    context: format!("cannot read the guest kubeconfig {secret}"),
                    source,
                },
            })?;
        let client = secrets::client_from(&read, KUBECONFIG_KEY, self.api_timeout)
            .await
            .map_err(unusable)?;
        Ok((read.metadata.resource_version.unwrap_or_default(), client))
    }

    /// One guest's watches until its Footprint goes or it is stopped: they start again with a
    /// new client whenever the Secret changes.
    async fn watch(self: Arc<Self>, footprint: String, secret: GuestSecret) {
        let mut versions = secrets::versions(
            self.management.clone(),
            &secret.namespace,
            &secret.name,
            self.api_timeout,
            self.metrics.clone(),
        );
        let mut retire_check = tokio::time::interval(RETIRE_CHECK);
        loop {
            let (version, client) = match self.client_for(&secret).await {
                Ok(versioned) => versioned,
                Err(error) => {
                    let (health, retry) = match &error {
                        Error::GuestKubeconfig { .. } => (
                            Health::Misconfigured {
                                problem: error.to_string(),
                            },
                            RETRY_UNUSABLE,
                        ),
                        _ => (
                            Health::Unreachable {
                                problem: error.to_string(),
                            },
                            RETRY,
                        ),
                    };
                    self.set_health(&footprint, health);
                    tokio::select! {
                        _ = versions.next() => {}
                        () = tokio::time::sleep(retry) => {}
                    }
                    continue;
                }
            };
            if let Some(entry) = lock(&self.watched).get_mut(&footprint) {
                entry.client = Some(client.clone());
            }
            let mut projections: BTreeMap<Target, Projection> = [
                (Target::Volumes, Projection::default()),
                (Target::Contents, Projection::default()),
                (Target::Services, Projection::default()),
            ]
            .into();
            let mut events = futures::stream::select_all(
                [Target::Volumes, Target::Contents, Target::Services]
                    .map(|target| self.watch_target(&client, target)),
            );
            loop {
                tokio::select! {
                    event = events.next() => {
                        let Some((target, event)) = event else { break };
                        let Some(projection) = projections.get_mut(&target) else { continue };
                        let changed = match event {
                            Ok(event) => projection.apply(event),
                            Err(error) if target == Target::Contents && not_served(&error) => {
                                projection.not_served()
                            }
                            Err(error) => {
                                self.metrics.watch_failed(WatchKind::Guest, "watch_failed");
                                projection.failing = Some(watch_health(&error));
                                false
                            }
                        };
                        self.observed(&footprint, &projections, changed);
                    }
                    changed = versions.next() => match changed {
                        Some(now) if now.as_ref() == Some(&version) => {}
                        _ => {
                            tracing::info!(%footprint, %secret, "guest kubeconfig changed: watching again");
                            break;
                        }
                    },
                    _ = retire_check.tick() => {
                        if self.retire_if_gone(&footprint) {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn watch_target(
        &self,
        client: &Client,
        target: Target,
    ) -> BoxStream<'static, (Target, watcher::Result<watcher::Event<Projected>>)> {
        let config = timeouts::watcher_config(self.api_timeout);
        let tagged = move |event: watcher::Result<watcher::Event<Projected>>| (target, event);
        match target {
            Target::Volumes => watcher(Api::<PersistentVolume>::all(client.clone()), config)
                .default_backoff()
                .map(move |event| tagged(event.map(|event| projected(event, volume))))
                .boxed(),
            Target::Contents => watcher(
                Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_content()),
                config,
            )
            .default_backoff()
            .map(move |event| tagged(event.map(|event| projected(event, content))))
            .boxed(),
            Target::Services => watcher(Api::<Service>::all(client.clone()), config)
                .default_backoff()
                .map(move |event| tagged(event.map(|event| projected(event, service))))
                .boxed(),
        }
    }

    /// Takes in what the watches show: the guest's health, and once every kind has listed, its
    /// facts; the Footprint hears of what changed.
    fn observed(&self, footprint: &str, projections: &BTreeMap<Target, Projection>, changed: bool) {
        let failing = projections
            .values()
            .find_map(|projection| projection.failing.clone());
        let listed = projections.values().all(|projection| projection.listed);
        let health = match failing {
            Some(failing) => failing,
            None if listed => Health::Reachable,
            None => Health::Syncing,
        };
        if listed && changed {
            if let Some(entry) = lock(&self.watched).get_mut(footprint) {
                entry.facts = Some(facts_of(projections));
            }
            self.notify(footprint);
        }
        self.set_health(footprint, health);
    }

    fn set_health(&self, footprint: &str, health: Health) {
        let mut watched = lock(&self.watched);
        let Some(entry) = watched.get_mut(footprint) else {
            return;
        };
        // Syncing again after a failure says nothing new: the failure stands until it answers.
        if entry.health == health
            || (health == Health::Syncing && entry.health != Health::Reachable)
        {
            return;
        }
        match &health {
            Health::Unreachable { problem } | Health::Misconfigured { problem } => {
                tracing::warn!(%footprint, %problem, "guest cluster failing");
            }
            Health::Syncing | Health::Reachable => {
                tracing::info!(%footprint, ?health, "guest cluster");
            }
        }
        entry.health = health;
        drop(watched);
        self.notify(footprint);
        self.report();
    }

    fn notify(&self, footprint: &str) {
        self.queue.again(footprint.to_owned());
    }

    /// Removes the entry of a Footprint that no longer exists; `true` if it did.
    fn retire_if_gone(&self, footprint: &str) -> bool {
        let exists = self
            .footprints
            .state()
            .iter()
            .any(|existing| existing.meta().name.as_deref() == Some(footprint));
        if exists {
            return false;
        }
        self.forget(footprint);
        true
    }

    fn report(&self) {
        let states: Vec<RemoteState> = lock(&self.watched)
            .values()
            .map(|entry| RemoteState::of(&entry.health))
            .collect();
        self.metrics.guests(states);
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        for entry in lock(&self.watched).values() {
            entry.task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, PersistentVolumeSpec, ServiceSpec,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn pv(name: &str, driver: &str, policy: &str, modes: &[&str]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: driver.into(),
                    volume_handle: format!("host-{name}"),
                    ..CSIPersistentVolumeSource::default()
                }),
                persistent_volume_reclaim_policy: Some(policy.into()),
                access_modes: Some(modes.iter().map(|mode| (*mode).to_owned()).collect()),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn a_pv_of_the_driver_keeps_its_handle_policy_and_access_and_others_do_not_count() {
        let (uid, fact) = volume(&pv("pvc-1", GUEST_DRIVER, "Retain", &["ReadWriteMany"]));
        assert_eq!(uid, "uid-pvc-1");
        assert_eq!(
            fact,
            Some(Fact::Volume(GuestVolume {
                name: "pvc-1".into(),
                uid: "uid-pvc-1".into(),
                driver: GUEST_DRIVER.into(),
                volume_handle: "host-pvc-1".into(),
                read_write_many: true,
                reclaim: Some(GuestPolicy::Retain),
            }))
        );
        assert_eq!(
            volume(&pv("pvc-2", "driver.longhorn.io", "Delete", &[])).1,
            None
        );
        let Some(Fact::Volume(recycled)) =
            volume(&pv("pvc-3", GUEST_DRIVER, "Recycle", &["ReadWriteOnce"])).1
        else {
            panic!("a driver PV counts")
        };
        assert_eq!(recycled.reclaim, None);
        assert!(!recycled.read_write_many);
    }

    #[test]
    fn only_load_balancer_services_count() {
        let of_type = |type_: &str| Service {
            metadata: ObjectMeta {
                uid: Some("svc".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(
            service(&of_type("LoadBalancer")).1,
            Some(Fact::LoadBalancerService)
        );
        assert_eq!(service(&of_type("ClusterIP")).1, None);
    }

    #[test]
    fn a_content_keeps_its_handle_and_deletion_policy() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1", "uid": "c1"},
            "spec": {"driver": GUEST_DRIVER, "deletionPolicy": "Retain"},
            "status": {"snapshotHandle": "snapshot-1"},
        }))
        .unwrap();
        assert_eq!(
            content(&object).1,
            Some(Fact::Content(GuestSnapshotContent {
                name: "snapcontent-1".into(),
                uid: "c1".into(),
                driver: GUEST_DRIVER.into(),
                snapshot_handle: Some("snapshot-1".into()),
                deletion: Some(GuestPolicy::Retain),
            }))
        );
    }

    #[test]
    fn a_relist_replaces_the_projection_only_when_it_completes() {
        let fact = |uid: &str| (uid.to_owned(), Some(Fact::LoadBalancerService));
        let mut projection = Projection::default();
        assert!(!projection.apply(watcher::Event::Init));
        assert!(!projection.apply(watcher::Event::InitApply(fact("a"))));
        assert!(projection.apply(watcher::Event::InitDone), "the first list");
        assert!(projection.apply(watcher::Event::Apply(fact("b"))));
        assert!(
            !projection.apply(watcher::Event::Apply(fact("b"))),
            "no change"
        );
        projection.failing = Some(Health::Unreachable {
            problem: "down".into(),
        });
        projection.apply(watcher::Event::Init);
        projection.apply(watcher::Event::InitApply(fact("b")));
        assert_eq!(
            projection.items.len(),
            2,
            "the old facts stand while it re-lists"
        );
        assert!(projection.apply(watcher::Event::InitDone), "a is gone");
        assert_eq!(projection.items.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(projection.failing, None);
        assert!(projection.apply(watcher::Event::Apply(("b".into(), None))));
        assert!(projection.items.is_empty());
    }
}
