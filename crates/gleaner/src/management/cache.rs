//! The management cluster as gleaner sees it: one watch per kind and namespace scope, kept in a
//! reflector store and fanned out to every controller that follows that kind. Decisions read
//! these stores; only a deletion's confirmation and the writes it gates read live.

use std::{
    fmt::Debug,
    hash::Hash,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::{
    Result,
    admin::{Readiness, WatchSynced},
    error::ApiFailure,
    metrics::{Metrics, WatchKind},
};

/// One watched kind in one scope: its store, and the controllers it tells of every object that
/// comes, changes or goes (after the store has it).
pub struct Shared<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    writer: Writer<K>,
    api: Api<K>,
    watch: WatchKind,
    name: String,
    synced: WatchSynced,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
}

impl<K> Shared<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// A watch of `api`, registered with `readiness` under `name`; it starts with [`run`].
    ///
    /// [`run`]: Shared::run
    pub fn new(api: Api<K>, watch: WatchKind, readiness: &Readiness, name: String) -> Self {
        Self::new_with(api, K::DynamicType::default(), watch, readiness, name)
    }
}

impl<K> Shared<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// [`Shared::new`] for a kind known only at run time.
    pub fn new_with(
        api: Api<K>,
        dyntype: K::DynamicType,
        watch: WatchKind,
        readiness: &Readiness,
        name: String,
    ) -> Self {
        let writer = Writer::new(dyntype);
        Self {
            store: writer.as_reader(),
            writer,
            api,
            watch,
            synced: readiness.register(name.clone()),
            name,
            subscribers: Mutex::default(),
        }
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object that comes, changes or goes from now on (deleted ones too, as last seen).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sender);
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    /// Follows the watch for as long as gleaner runs: each event goes to the store first, then
    /// to the subscribers; readiness flips once the first list is in. Errors are logged and counted,
    /// and the watch goes on with kube's backoff.
    pub fn run(self, config: watcher::Config, metrics: Metrics) -> BoxFuture<'static, Result<()>> {
        let Self {
            mut writer,
            api,
            watch,
            name,
            synced,
            subscribers,
            ..
        } = self;
        let subscribers = subscribers
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        async move {
            let mut synced = Some(synced);
            let mut events = std::pin::pin!(
                watcher(api, config)
                    .default_backoff()
                    .modify(|object| object.managed_fields_mut().clear())
            );
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(watch = %name, %error, "watch failed; it starts again after a backoff");
                        metrics.watch_failed(watch, watch_error_label(&error));
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                let touched = match event {
                    watcher::Event::InitDone => {
                        if let Some(synced) = synced.take() {
                            tracing::debug!(watch = %name, "synced");
                            synced.synced();
                        }
                        continue;
                    }
                    watcher::Event::Init => continue,
                    watcher::Event::InitApply(object)
                    | watcher::Event::Apply(object)
                    | watcher::Event::Delete(object) => Arc::new(object),
                };
                for subscriber in &subscribers {
                    // A subscriber that stopped needs no news.
                    let _ = subscriber.send(touched.clone());
                }
            }
            Ok(())
        }
        .boxed()
    }
}

fn watch_error_label(error: &watcher::Error) -> &'static str {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => ApiFailure::of(error).metric_label(),
        watcher::Error::WatchError(_) => "watch_error",
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

/// The stores of one kind across gleaner's namespace scopes.
#[derive(Clone)]
pub struct Scoped<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    stores: Vec<Store<K>>,
    dyntype: K::DynamicType,
}

impl<K> Scoped<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    pub fn new(stores: Vec<Store<K>>, dyntype: K::DynamicType) -> Self {
        Self { stores, dyntype }
    }

    /// The object `namespace/name`, if a scope has it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new_with(name, self.dyntype.clone()).within(namespace);
        self.stores.iter().find_map(|store| store.get(&key))
    }

    /// Every object of `namespace` that `keep` keeps.
    pub fn in_namespace(&self, namespace: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.stores
            .iter()
            .flat_map(Store::state)
            .filter(|object| object.namespace().as_deref() == Some(namespace) && keep(object))
            .collect()
    }
}

/// The names of Footprints to look at again, sent by watch tasks that run beside the
/// controllers (a Harvester's, a guest's) to the one controller that follows them.
pub struct FootprintQueue {
    sender: mpsc::UnboundedSender<String>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for FootprintQueue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl FootprintQueue {
    /// Asks for the Footprint to be looked at again.
    pub fn again(&self, footprint: String) {
        // The receiver lives as long as the controllers; once they stop nobody needs to know.
        let _ = self.sender.send(footprint);
    }

    /// The receiving end, for the one controller that follows these Footprints.
    pub fn take(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.receiver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}
