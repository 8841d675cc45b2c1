//! The management-side controllers: hooks and intent on CAPI Machines, and one Footprint per
//! Harvester-backed guest cluster.

pub mod capi;
mod footprints;
mod harvesters;
mod hooks;
mod observe;
mod vms;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    FutureExt, StreamExt,
    future::{BoxFuture, try_join_all},
};
use gleaner_core::{Reachability, Reason, keys};
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;

use crate::{
    Error, Result,
    admin::WatchSynced,
    cli::WatchArgs,
    footprint::Footprint,
    leadership,
    metrics::{DecisionReason, Kind},
};

pub use capi::Capi;
use harvesters::Harvesters;

/// How often a watch's readiness is asked for again.
const SYNC_POLL: Duration = Duration::from_millis(200);
/// How often the held-hooks metrics are worked out again.
const HELD_HOOKS_REPORT: Duration = Duration::from_secs(5);

/// What every management controller shares.
pub struct Context {
    runtime: crate::Context,
    client: kube::Client,
    capi: Capi,
    harvesters: Arc<Harvesters>,
    recorder: Recorder,
    namespace: String,
    dry_run: bool,
    hook_timeout: Option<Duration>,
    /// When writing on each Machine's Harvester first failed (by Machine UID).
    unreachable_since: Mutex<HashMap<String, Instant>>,
}

impl Context {
    pub async fn new(runtime: crate::Context) -> Result<Self> {
        let client = runtime.client.clone();
        let capi = Capi::discover(&client).await?;
        tracing::info!(version = capi.version(), "Cluster API");
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "gleaner".into(),
                instance: Some(leadership::identity()),
            },
        );
        Ok(Self {
            harvesters: Arc::new(Harvesters::new(client.clone(), runtime.metrics.clone())),
            namespace: runtime.config.namespace.clone(),
            dry_run: runtime.config.dry_run,
            hook_timeout: runtime.config.hook_timeout,
            client,
            capi,
            recorder,
            unreachable_since: Mutex::default(),
            runtime,
        })
    }

    fn footprints(&self) -> Api<Footprint> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Only the Lease holder writes.
    fn may_write(&self) -> bool {
        *self.runtime.leader.borrow()
    }

    async fn event(&self, about: &ObjectReference, reason: &str, note: String) {
        self.publish(about, EventType::Normal, reason, note).await;
    }

    async fn warn(&self, about: &ObjectReference, reason: &str, note: String) {
        tracing::warn!(%reason, %note, "warning");
        self.publish(about, EventType::Warning, reason, note).await;
    }

    async fn publish(&self, about: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let note = if self.dry_run {
            format!("[dry run] {note}")
        } else {
            note
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Decide".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, about).await {
            tracing::warn!(%error, "cannot publish an Event");
        }
    }

    fn decided(&self, reason: Reason) {
        self.runtime.metrics.decided(match reason {
            Reason::ClusterDeletion => DecisionReason::ClusterDeletion,
            Reason::ScaleDown => DecisionReason::ScaleDown,
            Reason::Unknown => DecisionReason::Unknown,
        });
    }

    fn reachability(&self, machine: &DynamicObject) -> Reachability {
        match self.unreachable().get(&machine.uid().unwrap_or_default()) {
            Some(since) => Reachability::Unreachable {
                unreachable_for: since.elapsed(),
            },
            None => Reachability::Reachable,
        }
    }

    fn mark_unreachable(&self, machine: &DynamicObject) {
        self.unreachable()
            .entry(machine.uid().unwrap_or_default())
            .or_insert_with(Instant::now);
    }

    fn mark_reachable(&self, machine: &DynamicObject) {
        self.unreachable()
            .remove(&machine.uid().unwrap_or_default());
    }

    fn unreachable(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.unreachable_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs the hook, Footprint-tracking and Footprint-phase controllers until one fails. Each
/// watch flips its readiness once its cache has synced; `started` flips once they are all
/// registered.
pub async fn run(context: Arc<Context>, started: WatchSynced) -> Result<()> {
    let scopes = context.runtime.config.watch.scopes();
    let mut controllers: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
    let mut machine_stores = Vec::new();
    for scope in &scopes {
        let machines = capi::scoped(&context.client, scope.as_deref(), &context.capi.machine());
        let controller =
            Controller::new_with(machines, watcher::Config::default(), context.capi.machine());
        machine_stores.push(controller.store());
        controllers.push(drive(
            &context,
            format!("machines{}", suffix(scope)),
            controller,
            Kind::Machine,
            hooks::reconcile,
        ));
        let clusters = capi::scoped(
            &context.client,
            scope.as_deref(),
            &observe::provisioning_cluster(),
        );
        controllers.push(drive(
            &context,
            format!("clusters{}", suffix(scope)),
            Controller::new_with(
                clusters,
                watcher::Config::default(),
                observe::provisioning_cluster(),
            ),
            Kind::Cluster,
            footprints::track,
        ));
    }
    // A Footprint is looked at again whenever its provisioning Cluster changes (its name is
    // that Cluster's UID), so opt-out, pause and deletion show at once.
    let mut footprint_controller =
        Controller::new(context.footprints(), watcher::Config::default());
    for scope in &scopes {
        let clusters = capi::scoped(
            &context.client,
            scope.as_deref(),
            &observe::provisioning_cluster(),
        );
        let namespace = context.namespace.clone();
        footprint_controller = footprint_controller.watches_with(
            clusters,
            observe::provisioning_cluster(),
            watcher::Config::default(),
            move |cluster| {
                cluster
                    .uid()
                    .map(|uid| ObjectRef::new(&uid).within(&namespace))
            },
        );
    }
    // What the Harvester watches see sends the Footprints of that Harvester (and VM namespace)
    // to be looked at again.
    if let Some(mut changes) = context.harvesters.changes() {
        let footprints = footprint_controller.store();
        let changes = futures::stream::poll_fn(move |cx| changes.poll_recv(cx));
        let triggers = changes.flat_map(move |change| {
            let affected: Vec<ObjectRef<Footprint>> = footprints
                .state()
                .iter()
                .filter(|footprint| {
                    footprint.spec.pools.iter().any(|pool| {
                        pool.cloud_credential == change.credential
                            && change
                                .namespace
                                .as_ref()
                                .is_none_or(|namespace| *namespace == pool.vm_namespace)
                    })
                })
                .map(|footprint| ObjectRef::from_obj(footprint.as_ref()))
                .collect();
            futures::stream::iter(affected)
        });
        footprint_controller = footprint_controller.reconcile_on(triggers);
    }
    controllers.push(drive(
        &context,
        "footprints".into(),
        footprint_controller,
        Kind::Footprint,
        footprints::phase,
    ));
    controllers.push(report_held_hooks(
        machine_stores,
        context.runtime.metrics.clone(),
    ));
    started.synced();
    try_join_all(controllers).await?;
    Ok(())
}

/// Every few seconds, from the Machine caches: how many deleting Machines gleaner's hook holds,
/// and since when the oldest has been deleting.
fn report_held_hooks(
    stores: Vec<Store<DynamicObject>>,
    metrics: crate::metrics::Metrics,
) -> BoxFuture<'static, Result<()>> {
    async move {
        let mut every = tokio::time::interval(HELD_HOOKS_REPORT);
        loop {
            every.tick().await;
            let now = Timestamp::now();
            let ages: Vec<Duration> = stores
                .iter()
                .flat_map(Store::state)
                .filter(|machine| machine.annotations().contains_key(keys::HOOK_ANNOTATION))
                .filter_map(|machine| machine.metadata.deletion_timestamp.clone())
                .map(|since| {
                    now.duration_since(since.0)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                })
                .collect();
            metrics.hooks_held(ages.len(), ages.iter().max().copied());
        }
    }
    .boxed()
}

fn suffix(scope: &Option<String>) -> String {
    scope
        .as_ref()
        .map(|namespace| format!(" in {namespace}"))
        .unwrap_or_default()
}

/// Runs one controller: readiness (registered now) flips once its store is ready; every
/// reconcile is counted by kind, every failure by kind and error.
fn drive<K, F, Fut>(
    context: &Arc<Context>,
    watch: String,
    controller: Controller<K>,
    kind: Kind,
    reconcile: F,
) -> BoxFuture<'static, Result<()>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + std::fmt::Debug + Eq + std::hash::Hash + Unpin,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let synced = context.runtime.readiness.register(watch);
    let store = controller.store();
    let metrics = context.runtime.metrics.clone();
    let concurrency = context.runtime.config.concurrency;
    let context = context.clone();
    tokio::spawn(async move {
        // A `wait_until_ready` that starts waiting before the store's first list is in was never
        // woken here (kube-runtime 5, seen in this project's tests), while a fresh call after it
        // returns at once: so ask again every so often.
        loop {
            match tokio::time::timeout(SYNC_POLL, store.wait_until_ready()).await {
                Ok(Ok(())) => break synced.synced(),
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
    });
    async move {
        controller
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
            .run(
                reconcile,
                move |_object, error: &Error, _context| {
                    tracing::warn!(%error, "reconcile failed; retrying");
                    Action::requeue(Duration::from_secs(5))
                },
                context,
            )
            .for_each(move |result| {
                match &result {
                    Ok(_) => metrics.reconciled(kind),
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, _)) => {
                        metrics.failed(kind, error)
                    }
                    Err(_) => {}
                }
                async {}
            })
            .await;
        Ok(())
    }
    .boxed()
}

/// Removes gleaner's hook from every Machine it can see, so uninstalling gleaner never blocks
/// Rancher. Returns how many Machines it unhooked.
pub async fn unhook(client: &kube::Client, watch: &WatchArgs) -> Result<usize> {
    let capi = Capi::discover(client).await?;
    let mut unhooked = 0;
    for scope in watch.scopes() {
        let machines = capi::scoped(client, scope.as_deref(), &capi.machine());
        let listed = machines
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube {
                context: "cannot list Machines".into(),
                source,
            })?;
        for machine in listed {
            if !machine.annotations().contains_key(keys::HOOK_ANNOTATION) {
                continue;
            }
            let namespace = machine.namespace().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {keys::HOOK_ANNOTATION: null}}});
            capi::scoped(client, Some(&namespace), &capi.machine())
                .patch(
                    &machine.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|source| Error::Kube {
                    context: format!("cannot unhook Machine {namespace}/{}", machine.name_any()),
                    source,
                })?;
            tracing::info!(machine = %machine.name_any(), %namespace, "unhooked");
            unhooked += 1;
        }
    }
    Ok(unhooked)
}
