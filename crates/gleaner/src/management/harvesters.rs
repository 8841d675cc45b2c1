//! The Harvesters gleaner reaches, one per cloud credential.
//!
//! A client per credential is built from the Secret's kubeconfig and rebuilt when the Secret
//! changes. Harvesters come and go at run time, so each one a Footprint names gets a watch task
//! of its own: it follows the node driver's VMs into a shared index, keeps the Harvester's health
//! and tells the Footprints that use it (an index from credential to Footprints) what changed. A
//! task retires once no Footprint names its credential. Secrets are read one by one by name,
//! never listed; no credential, token or kubeconfig is ever logged.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::StreamExt;
use gleaner_core::{
    CredentialRef, Health, WriteFailure,
    attribution::{HostKind, ObservedObject, ObservedVm},
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use tokio::{
    sync::{Notify, mpsc},
    task::AbortHandle,
};

use crate::{
    Error, Result,
    error::ApiFailure,
    footprint::Footprint,
    management::{
        cache::FootprintQueue,
        host_objects::{self, Target},
        secrets,
    },
    metrics::{Metrics, RemoteState, WatchKind},
    timeouts,
};

/// The Secret key Rancher keeps a Harvester cloud credential's kubeconfig under.
const KUBECONFIG_KEY: &str = "harvestercredentialConfig-kubeconfigContent";
/// Only the VMs the node driver made are guest nodes.
const DRIVER_VMS: &str = "harvesterhci.io/creator=docker-machine-driver-harvester";
/// How often a watch task asks the index whether a Footprint still names its credential.
const RETIRE_CHECK: Duration = Duration::from_secs(10);
/// How soon a task whose credential cannot be used tries again.
const RETRY: Duration = Duration::from_secs(5);

pub fn virtual_machine() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// What a failure to reach a Harvester through its credential means.
pub fn failure_of(error: &Error) -> WriteFailure {
    match error {
        Error::Credential { .. } | Error::HarvesterChanged { .. } => WriteFailure::Misconfigured,
        Error::VmReplaced { .. } => WriteFailure::VmNotFound,
        Error::Kube { source, .. } if refuses_uid(source) => WriteFailure::VmNotFound,
        Error::Kube { source, .. } => match ApiFailure::of(source) {
            ApiFailure::NotFound | ApiFailure::Conflict => WriteFailure::VmNotFound,
            ApiFailure::Forbidden | ApiFailure::Rejected => WriteFailure::Misconfigured,
            ApiFailure::Unreachable | ApiFailure::ServerError | ApiFailure::Other => {
                WriteFailure::Unreachable
            }
        },
        _ => WriteFailure::Unreachable,
    }
}

/// Whether the apiserver refused a write because its UID precondition names another object.
fn refuses_uid(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 422 && status.message.contains("metadata.uid"))
}

/// The health a failure shows, with its message (never the credential's content).
fn health_of(failure: WriteFailure, problem: String) -> Health {
    match failure {
        WriteFailure::Misconfigured => Health::Misconfigured { problem },
        WriteFailure::Unreachable | WriteFailure::VmNotFound => Health::Unreachable { problem },
    }
}

fn watch_health(error: &watcher::Error) -> Health {
    let problem = error.to_string();
    let misconfigured = match error {
        watcher::Error::InitialListFailed(source)
        | watcher::Error::WatchStartFailed(source)
        | watcher::Error::WatchFailed(source) => ApiFailure::of(source) == ApiFailure::Forbidden,
        watcher::Error::WatchError(status) => matches!(status.code, 401 | 403),
        watcher::Error::NoResourceVersion => false,
    };
    if misconfigured {
        Health::Misconfigured { problem }
    } else {
        Health::Unreachable { problem }
    }
}

/// What the index knows of one VM.
#[derive(Clone, Debug)]
pub enum VmLookup {
    /// The Harvester's watch is not synced and reachable: nothing can be said.
    Unknown,
    Absent,
    Present(Arc<DynamicObject>),
}

struct Watched {
    vms: Store<DynamicObject>,
    /// The host objects of each kind and namespace followed now.
    objects: HashMap<Target, Store<DynamicObject>>,
    /// Whether every watch has listed since the last (re)start.
    synced: bool,
    /// The UID of the `kube-system` namespace the current client reaches.
    identity: Option<String>,
    /// Told when the VM namespaces the Footprints use here change.
    namespaces_changed: Arc<Notify>,
    /// What the watch shows.
    watch: Health,
    /// What the last failed write showed, until a write succeeds.
    write: Option<Health>,
    task: AbortHandle,
}

impl Watched {
    /// A failing watch speaks first; a failed write speaks while the watch looks fine.
    fn health(&self) -> Health {
        match (&self.watch, &self.write) {
            (Health::Reachable | Health::Syncing, Some(write)) => write.clone(),
            (watch, _) => watch.clone(),
        }
    }
}

/// The Footprints that use each credential, and the VM namespaces their pools run in there.
type FootprintIndex = HashMap<String, HashMap<String, BTreeSet<String>>>;

pub struct Harvesters {
    management: Client,
    metrics: Metrics,
    api_timeout: Duration,
    footprints: Store<Footprint>,
    clients: Mutex<HashMap<String, (String, Client)>>,
    watched: Mutex<HashMap<String, Watched>>,
    index: Mutex<FootprintIndex>,
    queue: FootprintQueue,
}

impl Harvesters {
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
            clients: Mutex::default(),
            watched: Mutex::default(),
            index: Mutex::default(),
            queue: FootprintQueue::default(),
        }
    }

    /// The names of the Footprints to look at again, for the one controller that follows them.
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.queue.take()
    }

    /// A client for the Harvester the credential `namespace:name` reaches. The Secret is read
    /// live each time (one GET by name); the client is rebuilt only when its resourceVersion
    /// changed.
    pub async fn client(&self, credential: &str) -> Result<Client> {
        Ok(self.versioned_client(credential).await?.1)
    }

    async fn versioned_client(&self, credential: &str) -> Result<(String, Client)> {
        let CredentialRef { namespace, name } =
            credential.parse().map_err(|_| Error::Credential {
                credential: credential.to_owned(),
                problem: "is not of the form namespace:name".into(),
            })?;
        let secret = Api::<Secret>::namespaced(self.management.clone(), &namespace)
            .get(&name)
            .await
            .map_err(|source| match ApiFailure::of(&source) {
                // Missing, or not ours to read: only an operator mends that.
                ApiFailure::NotFound | ApiFailure::Forbidden => Error::Credential {
                    credential: credential.to_owned(),
                    problem: format!("cannot be read: {source}"),
                },
                _ => Error::Kube {
                    context: format!("cannot read cloud credential {credential}"),
                    source,
                },
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some((cached_version, client)) = lock(&self.clients).get(credential)
            && *cached_version == version
        {
            return Ok((version, client.clone()));
        }
        let client = secrets::client_from(&secret, KUBECONFIG_KEY, self.api_timeout)
            .await
            .map_err(|problem| Error::Credential {
                credential: credential.to_owned(),
                problem,
            })?;
        lock(&self.clients).insert(credential.to_owned(), (version.clone(), client.clone()));
        Ok((version, client))
    }

    /// Records which credentials (and VM namespaces there) a Footprint's pools use, and makes
    /// sure each of those Harvesters is watched.
    pub fn follow_footprint(
        self: &Arc<Self>,
        footprint: &str,
        pools: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut uses: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (credential, namespace) in pools {
            uses.entry(credential).or_default().insert(namespace);
        }
        let before = self.namespaces_of_all();
        {
            let mut index = lock(&self.index);
            for footprints in index.values_mut() {
                footprints.remove(footprint);
            }
            for (credential, namespaces) in &uses {
                index
                    .entry(credential.clone())
                    .or_default()
                    .insert(footprint.to_owned(), namespaces.clone());
            }
            index.retain(|_, footprints| !footprints.is_empty());
        }
        for credential in uses.keys() {
            self.watch(credential);
        }
        let after = self.namespaces_of_all();
        for (credential, namespaces) in &after {
            if before.get(credential) != Some(namespaces)
                && let Some(entry) = lock(&self.watched).get(credential)
            {
                entry.namespaces_changed.notify_one();
            }
        }
    }

    /// The VM namespaces the Footprints use on each Harvester.
    fn namespaces_of_all(&self) -> HashMap<String, BTreeSet<String>> {
        lock(&self.index)
            .iter()
            .map(|(credential, footprints)| {
                (
                    credential.clone(),
                    footprints.values().flatten().cloned().collect(),
                )
            })
            .collect()
    }

    /// What attribution reads of the Harvesters of `credentials`: every VM there, and the host
    /// objects of the namespaces the Footprints use there; `None` while one of them is not
    /// synced and answering.
    pub fn observed(
        &self,
        credentials: &BTreeSet<String>,
    ) -> Option<(Vec<ObservedVm>, Vec<ObservedObject>)> {
        let watched = lock(&self.watched);
        let mut vms = Vec::new();
        let mut objects = Vec::new();
        for credential in credentials {
            let entry = watched.get(credential)?;
            if !entry.synced || entry.watch != Health::Reachable {
                return None;
            }
            vms.extend(
                entry
                    .vms
                    .state()
                    .iter()
                    .map(|vm| host_objects::observed_vm(credential, vm)),
            );
            for (target, store) in &entry.objects {
                if let Target::Objects { kind, .. } = target {
                    objects.extend(
                        store
                            .state()
                            .iter()
                            .map(|object| host_objects::observed_object(credential, *kind, object)),
                    );
                }
            }
        }
        Some((vms, objects))
    }

    /// Writes gleaner's label and annotation on a host object, only if it is still the object
    /// with `uid`.
    pub async fn mark(
        &self,
        credential: &str,
        kind: HostKind,
        namespace: &str,
        name: &str,
        uid: &str,
        marks: &BTreeMap<&'static str, String>,
    ) -> Result<()> {
        let client = self.client(credential).await?;
        let (label, annotation) = (
            &marks[gleaner_core::keys::FOOTPRINT_LABEL],
            &marks[gleaner_core::keys::CLUSTER_ANNOTATION],
        );
        let patch = serde_json::json!({"metadata": {
            "uid": uid,
            "labels": {gleaner_core::keys::FOOTPRINT_LABEL: label},
            "annotations": {gleaner_core::keys::CLUSTER_ANNOTATION: annotation},
        }});
        Api::<DynamicObject>::namespaced_with(client, namespace, &host_objects::resource(kind))
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                context: format!("cannot mark {kind:?} {namespace}/{name}"),
                source,
            })
    }

    fn watch(self: &Arc<Self>, credential: &str) {
        let mut watched = lock(&self.watched);
        if watched.contains_key(credential) {
            return;
        }
        let writer = Writer::new(virtual_machine());
        let vms = writer.as_reader();
        let task = tokio::spawn(self.clone().follow(credential.to_owned(), writer));
        watched.insert(
            credential.to_owned(),
            Watched {
                vms,
                objects: HashMap::new(),
                synced: false,
                identity: None,
                namespaces_changed: Arc::default(),
                watch: Health::Syncing,
                write: None,
                task: task.abort_handle(),
            },
        );
        drop(watched);
        tracing::info!(%credential, "watching a Harvester");
        self.report();
    }

    /// How the Harvester of `credential` fares: its watch, and the last failed write since one
    /// succeeded.
    pub fn health(&self, credential: &str) -> Health {
        lock(&self.watched)
            .get(credential)
            .map_or(Health::Syncing, Watched::health)
    }

    /// A write through `credential` succeeded (`None`) or failed: the Footprints of that
    /// Harvester hear of it when its health changes.
    pub fn wrote(&self, credential: &str, failure: Option<(WriteFailure, String)>) {
        let write = failure
            .filter(|(failure, _)| *failure != WriteFailure::VmNotFound)
            .map(|(failure, problem)| health_of(failure, problem));
        let mut watched = lock(&self.watched);
        let Some(entry) = watched.get_mut(credential) else {
            return;
        };
        let before = RemoteState::of(&entry.health());
        entry.write = write;
        let after = RemoteState::of(&entry.health());
        drop(watched);
        if before != after {
            self.notify(credential, None);
            self.report();
        }
    }

    pub fn vm(&self, credential: &str, namespace: &str, name: &str) -> VmLookup {
        let watched = lock(&self.watched);
        let Some(entry) = watched.get(credential) else {
            return VmLookup::Unknown;
        };
        if !entry.synced || entry.watch != Health::Reachable {
            return VmLookup::Unknown;
        }
        match entry
            .vms
            .get(&ObjectRef::new_with(name, virtual_machine()).within(namespace))
        {
            Some(vm) => VmLookup::Present(vm),
            None => VmLookup::Absent,
        }
    }

    /// One Harvester's watches, until it retires: its VMs and the host objects of the
    /// namespaces its Footprints use, with the credential's current client; they start again
    /// with a new client when the Secret changes, and with new namespaces when those change.
    async fn follow(self: Arc<Self>, credential: String, vms: Writer<DynamicObject>) {
        let mut writers = HashMap::from([(Target::Vms, vms)]);
        let mut secret_changes = std::pin::pin!(self.secret_versions(&credential));
        let mut retire_check = tokio::time::interval(RETIRE_CHECK);
        let namespaces_changed = lock(&self.watched)
            .get(&credential)
            .map(|entry| entry.namespaces_changed.clone())
            .unwrap_or_default();
        loop {
            if self.retire_if_unwanted(&credential) {
                return;
            }
            let (version, client) = match self.versioned_client(&credential).await {
                Ok(versioned) => versioned,
                Err(error) => {
                    self.set_health(
                        &credential,
                        health_of(failure_of(&error), error.to_string()),
                    );
                    // A credential is mended by changing its Secret, which the watch shows.
                    tokio::select! {
                        _ = secret_changes.next() => {}
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                    continue;
                }
            };
            self.learn_identity(&credential, &client).await;
            let namespaces = self
                .namespaces_of_all()
                .remove(&credential)
                .unwrap_or_default();
            let targets: Vec<Target> = std::iter::once(Target::Vms)
                .chain(Target::for_namespaces(&namespaces))
                .collect();
            writers.retain(|target, _| targets.contains(target));
            for target in &targets {
                writers
                    .entry(target.clone())
                    .or_insert_with(|| Writer::new(resource_of(target)));
            }
            self.publish(&credential, &writers);
            let mut listing: BTreeSet<Target> = targets.iter().cloned().collect();
            let mut events = futures::stream::select_all(
                targets
                    .iter()
                    .map(|target| self.watch_target(&client, target)),
            );
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some((target, Ok(event))) => {
                            if let Some(writer) = writers.get_mut(&target) {
                                self.apply(&credential, &target, writer, &event);
                            }
                            if matches!(event, watcher::Event::InitDone)
                                && listing.remove(&target)
                                && listing.is_empty()
                            {
                                self.set_synced(&credential);
                            }
                        }
                        Some((target, Err(error))) => {
                            // Its store is stale until its fresh list is done.
                            listing.insert(target);
                            self.set_unsynced(&credential);
                            self.metrics.watch_failed(
                                WatchKind::VirtualMachine,
                                match failure_of_watch(&error) {
                                    WriteFailure::Misconfigured => "forbidden",
                                    _ => "unreachable",
                                },
                            );
                            self.set_health(&credential, watch_health(&error));
                        }
                        None => break,
                    },
                    changed = secret_changes.next() => match changed {
                        Some(now) if now.as_ref() == Some(&version) => {}
                        _ => {
                            tracing::info!(%credential, "cloud credential changed: watching again");
                            break;
                        }
                    },
                    () = namespaces_changed.notified() => {
                        tracing::info!(%credential, "the Footprints' VM namespaces changed: watching again");
                        break;
                    }
                    _ = retire_check.tick() => {
                        if self.retire_if_unwanted(&credential) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reads which Harvester the client reaches: the UID of its `kube-system` namespace.
    async fn learn_identity(&self, credential: &str, client: &Client) {
        let identity = match Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
        {
            Ok(namespace) => namespace.metadata.uid,
            Err(error) => {
                tracing::warn!(%credential, %error, "cannot read which Harvester the credential reaches");
                None
            }
        };
        if let Some(entry) = lock(&self.watched).get_mut(credential) {
            entry.identity = identity;
        }
    }

    /// The UID of the `kube-system` namespace of the Harvester `credential` reaches now.
    pub fn identity(&self, credential: &str) -> Option<String> {
        lock(&self.watched)
            .get(credential)
            .and_then(|entry| entry.identity.clone())
    }

    /// The watch of one target, reduced on arrival to what attribution reads, started over with
    /// a fresh list after any error (see [`relisting`]).
    fn watch_target(
        &self,
        client: &Client,
        target: &Target,
    ) -> futures::stream::BoxStream<'static, (Target, watcher::Result<watcher::Event<DynamicObject>>)>
    {
        let config = timeouts::watcher_config(self.api_timeout);
        let (api, config) = match target {
            Target::Vms => (
                Api::<DynamicObject>::all_with(client.clone(), &virtual_machine()),
                config.labels(DRIVER_VMS),
            ),
            Target::Objects { kind, namespace } => (
                Api::namespaced_with(client.clone(), namespace, &host_objects::resource(*kind)),
                config,
            ),
        };
        let trimmed = target.clone();
        let tagged = target.clone();
        relisting(move || {
            let trimmed = trimmed.clone();
            watcher(api.clone(), config.clone())
                .modify(move |object| host_objects::trim(&trimmed, object))
                .boxed()
        })
        .map(move |event| (tagged.clone(), event))
        .boxed()
    }

    /// Makes the stores of `writers` the ones lookups read, not synced until every one lists.
    fn publish(&self, credential: &str, writers: &HashMap<Target, Writer<DynamicObject>>) {
        if let Some(entry) = lock(&self.watched).get_mut(credential) {
            entry.objects = writers
                .iter()
                .filter(|(target, _)| **target != Target::Vms)
                .map(|(target, writer)| (target.clone(), writer.as_reader()))
                .collect();
            entry.synced = false;
        }
    }

    fn set_synced(&self, credential: &str) {
        if let Some(entry) = lock(&self.watched).get_mut(credential) {
            entry.synced = true;
        }
        self.set_health(credential, Health::Reachable);
        self.notify(credential, None);
    }

    fn set_unsynced(&self, credential: &str) {
        if let Some(entry) = lock(&self.watched).get_mut(credential) {
            entry.synced = false;
        }
    }

    /// The resourceVersion of the credential's Secret each time the watch on it shows it;
    /// `None` once it is gone.
    fn secret_versions(
        &self,
        credential: &str,
    ) -> impl futures::Stream<Item = Option<String>> + Send + 'static {
        match credential.parse::<CredentialRef>() {
            Ok(secret) => secrets::versions(
                self.management.clone(),
                &secret.namespace,
                &secret.name,
                self.api_timeout,
                self.metrics.clone(),
            ),
            // A malformed reference has no Secret to watch: it never changes.
            Err(_) => futures::stream::pending().boxed(),
        }
    }

    /// Applies a watch event to its store, and tells the Footprints when an object came, went
    /// or changed what attribution reads of it (a VM's status changes often and matters not).
    fn apply(
        &self,
        credential: &str,
        target: &Target,
        writer: &mut Writer<DynamicObject>,
        event: &watcher::Event<DynamicObject>,
    ) {
        let changed = match event {
            watcher::Event::Apply(object) => writer
                .as_reader()
                .get(&ObjectRef::from_obj_with(object, resource_of(target)))
                .is_none_or(|before| !host_objects::same_facts(&before, object)),
            watcher::Event::Delete(_) => true,
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => false,
        };
        writer.apply_watcher_event(event);
        match event {
            watcher::Event::InitDone if *target == Target::Vms => {
                self.set_health(credential, Health::Reachable);
            }
            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                self.set_health(credential, Health::Reachable);
                if changed {
                    let namespace = match target {
                        // A NetworkFilesystem may belong to a Footprint of any namespace.
                        Target::Objects {
                            kind: HostKind::NetworkFilesystem,
                            ..
                        } => None,
                        _ => object.namespace(),
                    };
                    self.notify(credential, namespace);
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
        }
    }

    fn set_health(&self, credential: &str, health: Health) {
        let mut watched = lock(&self.watched);
        let Some(entry) = watched.get_mut(credential) else {
            return;
        };
        if entry.watch == health {
            return;
        }
        match &health {
            Health::Unreachable { problem } | Health::Misconfigured { problem } => {
                tracing::warn!(%credential, %problem, state = ?RemoteState::of(&health), "Harvester failing");
            }
            Health::Syncing | Health::Reachable => {
                tracing::info!(%credential, ?health, "Harvester");
            }
        }
        let before = RemoteState::of(&entry.health());
        entry.watch = health;
        let after = RemoteState::of(&entry.health());
        drop(watched);
        if before != after {
            self.notify(credential, None);
            self.report();
        }
    }

    /// Tells the Footprints that use `credential` (in `namespace`, or all of them) to look again.
    fn notify(&self, credential: &str, namespace: Option<String>) {
        let footprints: Vec<String> = lock(&self.index)
            .get(credential)
            .map(|footprints| {
                footprints
                    .iter()
                    .filter(|(_, namespaces)| {
                        namespace
                            .as_ref()
                            .is_none_or(|namespace| namespaces.contains(namespace))
                    })
                    .map(|(footprint, _)| footprint.clone())
                    .collect()
            })
            .unwrap_or_default();
        for footprint in footprints {
            self.queue.again(footprint);
        }
    }

    /// Removes the entry of a Harvester no existing Footprint names; `true` if it did.
    fn retire_if_unwanted(&self, credential: &str) -> bool {
        let wanted = lock(&self.index).get(credential).is_some_and(|footprints| {
            footprints.keys().any(|footprint| {
                self.footprints
                    .state()
                    .iter()
                    .any(|existing| existing.metadata.name.as_deref() == Some(footprint))
            })
        });
        if wanted {
            return false;
        }
        lock(&self.index).remove(credential);
        lock(&self.watched).remove(credential);
        tracing::info!(%credential, "no Footprint needs this Harvester: its watch stops");
        self.report();
        true
    }

    fn report(&self) {
        let states: Vec<RemoteState> = lock(&self.watched)
            .values()
            .map(|entry| RemoteState::of(&entry.health()))
            .collect();
        self.metrics.harvesters(states);
    }
}

impl Drop for Harvesters {
    fn drop(&mut self) {
        for entry in lock(&self.watched).values() {
            entry.task.abort();
        }
    }
}

fn resource_of(target: &Target) -> ApiResource {
    match target {
        Target::Vms => virtual_machine(),
        Target::Objects { kind, .. } => host_objects::resource(*kind),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn failure_of_watch(error: &watcher::Error) -> WriteFailure {
    match watch_health(error) {
        Health::Misconfigured { .. } => WriteFailure::Misconfigured,
        _ => WriteFailure::Unreachable,
    }
}

/// A watch started by `start`, started over (after kube's client-go-like backoff) with a fresh
/// list after each error. kube's watcher resumes a failed watch from its last resourceVersion
/// when it can, and a resumed watch that sees no change says nothing, so nothing would ever tell
/// that the store is current again; a fresh list ends with `InitDone`, which does.
fn relisting<K: Send + 'static>(
    start: impl Fn() -> futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>
    + Send
    + Sync
    + 'static,
) -> futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>> {
    use kube::runtime::utils::Backoff;
    let start = Arc::new(start);
    let first = start();
    let backoff = watcher::DefaultBackoff::default();
    futures::stream::unfold(
        (first, backoff, false),
        move |(mut stream, mut backoff, failed)| {
            let start = start.clone();
            async move {
                if failed {
                    tokio::time::sleep(backoff.next().unwrap_or(RETRY)).await;
                    stream = start();
                }
                let event = stream.next().await?;
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    backoff.reset();
                }
                let failed = event.is_err();
                Some((event, (stream, backoff, failed)))
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_failed_lists_afresh_and_says_when_it_is_done() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let events: Vec<_> = relisting(move || {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            let mut events: Vec<watcher::Result<watcher::Event<()>>> =
                vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)];
            if first {
                events.push(Err(watcher::Error::NoResourceVersion));
            }
            futures::stream::iter(events)
                .chain(futures::stream::pending())
                .boxed()
        })
        .take(5)
        .collect()
        .await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "one fresh start after the error"
        );
        assert!(events[2].is_err());
        assert!(matches!(events[3], Ok(watcher::Event::Init)));
        assert!(matches!(events[4], Ok(watcher::Event::InitDone)));
    }

    fn api(code: u16, message: &str) -> Error {
        Error::Kube {
            context: "cannot write the intent".into(),
            source: kube::Error::Api(Box::new(Status::failure(message, "Test").with_code(code))),
        }
    }

    #[test]
    fn write_failures_are_told_apart_by_what_they_mean() {
        for (error, failure) in [
            (api(404, "not found"), WriteFailure::VmNotFound),
            (
                api(409, "Precondition failed: UID"),
                WriteFailure::VmNotFound,
            ),
            (
                api(422, "metadata.uid: Invalid value: field is immutable"),
                WriteFailure::VmNotFound,
            ),
            (api(422, "denied by a webhook"), WriteFailure::Misconfigured),
            (api(403, "forbidden"), WriteFailure::Misconfigured),
            (api(401, "unauthorized"), WriteFailure::Misconfigured),
            (api(503, "unavailable"), WriteFailure::Unreachable),
            (api(500, "internal"), WriteFailure::Unreachable),
            (
                Error::Credential {
                    credential: "a:b".into(),
                    problem: "holds a kubeconfig that does not parse".into(),
                },
                WriteFailure::Misconfigured,
            ),
            (
                Error::VmReplaced {
                    vm: "ns/vm".into(),
                    recorded: "u1".into(),
                    found: "u2".into(),
                },
                WriteFailure::VmNotFound,
            ),
        ] {
            assert_eq!(failure_of(&error), failure, "{error}");
        }
    }

    #[test]
    fn a_failing_watch_speaks_first_and_a_failed_write_while_the_watch_looks_fine() {
        let mut watched = Watched {
            vms: Writer::new(virtual_machine()).as_reader(),
            objects: HashMap::new(),
            synced: true,
            identity: None,
            namespaces_changed: Arc::default(),
            watch: Health::Reachable,
            write: None,
            task: tokio::runtime::Runtime::new()
                .unwrap()
                .spawn(async {})
                .abort_handle(),
        };
        assert_eq!(watched.health(), Health::Reachable);
        let write = Health::Misconfigured {
            problem: "403".into(),
        };
        watched.write = Some(write.clone());
        assert_eq!(watched.health(), write);
        let watch = Health::Unreachable {
            problem: "timed out".into(),
        };
        watched.watch = watch.clone();
        assert_eq!(watched.health(), watch);
    }
}
