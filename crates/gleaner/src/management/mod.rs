//! The management-side controllers: hooks and intent on CAPI Machines, and one Footprint per
//! Harvester-backed guest cluster.
//!
//! Every kind is watched once per namespace scope into a store ([`cache`]); the controllers are
//! triggered by those watches, by the Harvester watches, and by winning the Lease, and read the
//! stores. A standby replica watches and decides nothing: winning the Lease looks at everything.

mod cache;
pub mod capi;
mod footprints;
mod guests;
pub(crate) mod harvesters;
mod hooks;
pub(crate) mod host_objects;
pub(crate) mod live;
pub(crate) mod observe;
pub(crate) mod reclaimer;
mod secrets;
pub(crate) mod status;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    FutureExt, Stream, StreamExt,
    future::{BoxFuture, try_join_all},
};
use gleaner_core::{Reason, attribution::HostObjectRecord, keys};

use crate::events::EventReason;
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    Error, Result,
    admin::WatchSynced,
    cli::WatchArgs,
    footprint::Footprint,
    leadership,
    metrics::{DecisionReason, Kind, Metrics, WatchKind, WriteKind},
    timeouts,
};

use cache::{Scoped, Shared};
pub use capi::Capi;
use guests::Guests;
use harvesters::Harvesters;
use observe::{harvester_config, harvester_machine, provisioning_cluster, setting};

/// How long the controllers wait for every watch to sync before they decide anyway.
const SYNC_WAIT: Duration = Duration::from_secs(60);
/// How often the held-hooks metrics are worked out again.
const HELD_HOOKS_REPORT: Duration = Duration::from_secs(5);
/// The first retry after a failed reconcile; each further failure doubles it, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// The management cluster as the caches show it.
pub struct Caches {
    provisioning: Scoped<DynamicObject>,
    capi_clusters: Scoped<DynamicObject>,
    harvester_machines: Scoped<DynamicObject>,
    harvester_configs: Scoped<DynamicObject>,
    footprints: Store<Footprint>,
    settings: Store<DynamicObject>,
}

impl Caches {
    /// The installation UUID as the `install-uuid` Setting's watch shows it.
    fn install_uuid(&self) -> Option<String> {
        observe::install_uuid_of(self.settings.state().first().map(AsRef::as_ref))
    }

    fn footprint(&self, namespace: &str, name: &str) -> Option<Arc<Footprint>> {
        self.footprints.get(&ObjectRef::new(name).within(namespace))
    }
}

/// The watches behind the caches, each started once every controller has subscribed.
struct Sources {
    machines: Vec<Shared<DynamicObject>>,
    provisioning: Vec<Shared<DynamicObject>>,
    capi_clusters: Vec<Shared<DynamicObject>>,
    harvester_machines: Vec<Shared<DynamicObject>>,
    harvester_configs: Vec<Shared<DynamicObject>>,
    footprints: Shared<Footprint>,
    settings: Shared<DynamicObject>,
}

/// What every management controller shares.
pub struct Context {
    runtime: crate::Context,
    client: kube::Client,
    capi: Capi,
    harvesters: Arc<Harvesters>,
    guests: Arc<Guests>,
    recorder: Recorder,
    namespace: String,
    dry_run: bool,
    hook_timeout: Option<Duration>,
    footprint_wait: Duration,
    inventory_timeout: Duration,
    policy_max_age: Duration,
    retention: Duration,
    grace_period: Duration,
    deletion_stuck_after: Duration,
    reclaim_pauses: reclaimer::Pauses,
    caches: Caches,
}

impl Context {
    fn footprints(&self) -> Api<Footprint> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn metrics(&self) -> &Metrics {
        &self.runtime.metrics
    }

    /// Only the Lease holder writes.
    fn may_write(&self) -> bool {
        *self.runtime.leader.borrow()
    }

    /// Counts a write by its outcome.
    fn wrote<T>(&self, kind: WriteKind, result: &Result<T>) {
        let label = match result {
            Ok(_) => "ok",
            Err(error) => error.metric_label(),
        };
        self.metrics().wrote(kind, label);
    }

    async fn event(&self, about: &ObjectReference, reason: EventReason, note: String) {
        self.publish(about, None, reason, note).await;
    }

    /// An Event about the cluster and one of its host objects, which is the Event's `related`
    /// object. kube's Recorder folds Events with the same regarding, related, reason and action
    /// into the first one's series, keeping only its note: without it, the second object kept
    /// in a cluster would be counted on the first one's Event and never named.
    async fn event_on(
        &self,
        about: &ObjectReference,
        object: &HostObjectRecord,
        reason: EventReason,
        note: String,
    ) {
        self.publish(about, Some(host_objects::reference(object)), reason, note)
            .await;
    }

    async fn publish(
        &self,
        about: &ObjectReference,
        related: Option<ObjectReference>,
        reason: EventReason,
        note: String,
    ) {
        let type_ = reason.type_();
        let reason = reason.as_str();
        match type_ {
            EventType::Warning => tracing::warn!(%reason, %note, "warning"),
            EventType::Normal => tracing::info!(%reason, %note, "event"),
        }
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
            secondary: related,
        };
        if let Err(error) = self.recorder.publish(&event, about).await {
            tracing::warn!(%error, "cannot publish an Event");
        }
    }

    fn decided(&self, reason: Reason) {
        self.metrics().decided(match reason {
            Reason::ClusterDeletion => DecisionReason::ClusterDeletion,
            Reason::ScaleDown => DecisionReason::ScaleDown,
            Reason::Unknown => DecisionReason::Unknown,
        });
    }

    /// Emits once each time this replica wins the Lease.
    fn leadership_won(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.runtime.leader.clone(), won)
    }
}

async fn won(mut leader: watch::Receiver<bool>) -> Option<((), watch::Receiver<bool>)> {
    loop {
        leader.changed().await.ok()?;
        if *leader.borrow_and_update() {
            return Some(((), leader));
        }
    }
}

/// Discovers Cluster API, starts every watch and runs the hook, Footprint-tracking and
/// Footprint controllers until one fails. `started` flips once they are all registered; each
/// watch flips its own readiness once its first list is in.
pub async fn start(runtime: crate::Context, started: WatchSynced) -> Result<()> {
    let client = runtime.client.clone();
    let capi = Capi::discover(&client).await?;
    tracing::info!(version = capi.version(), "Cluster API");
    let scopes = runtime.config.watch.scopes();
    let readiness = &runtime.readiness;
    let per_scope = |resource: &ApiResource, watch: WatchKind, name: &str| {
        scopes
            .iter()
            .map(|scope| {
                Shared::new_with(
                    capi::scoped(&client, scope.as_deref(), resource),
                    resource.clone(),
                    watch,
                    readiness,
                    format!("{name}{}", suffix(scope)),
                )
            })
            .collect::<Vec<_>>()
    };
    let sources = Sources {
        machines: per_scope(&capi.machine(), WatchKind::Machine, "machines"),
        provisioning: per_scope(
            &provisioning_cluster(),
            WatchKind::ProvisioningCluster,
            "clusters",
        ),
        capi_clusters: per_scope(&capi.cluster(), WatchKind::CapiCluster, "capi clusters"),
        harvester_machines: per_scope(
            &harvester_machine(),
            WatchKind::HarvesterMachine,
            "harvestermachines",
        ),
        harvester_configs: per_scope(
            &harvester_config(),
            WatchKind::HarvesterConfig,
            "harvesterconfigs",
        ),
        footprints: Shared::new(
            Api::namespaced(client.clone(), &runtime.config.namespace),
            WatchKind::Footprint,
            readiness,
            "footprints".into(),
        ),
        settings: Shared::new_with(
            Api::all_with(client.clone(), &setting()),
            setting(),
            WatchKind::Setting,
            readiness,
            "install-uuid setting".into(),
        ),
    };
    let stores = |sources: &[Shared<DynamicObject>], resource: ApiResource| {
        Scoped::new(sources.iter().map(Shared::store).collect(), resource)
    };
    let caches = Caches {
        provisioning: stores(&sources.provisioning, provisioning_cluster()),
        capi_clusters: stores(&sources.capi_clusters, capi.cluster()),
        harvester_machines: stores(&sources.harvester_machines, harvester_machine()),
        harvester_configs: stores(&sources.harvester_configs, harvester_config()),
        footprints: sources.footprints.store(),
        settings: sources.settings.store(),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "gleaner".into(),
            instance: Some(leadership::identity()),
        },
    );
    let context = Arc::new(Context {
        harvesters: Arc::new(Harvesters::new(
            client.clone(),
            runtime.metrics.clone(),
            runtime.api_timeout,
            caches.footprints.clone(),
        )),
        guests: Arc::new(Guests::new(
            client.clone(),
            runtime.metrics.clone(),
            runtime.api_timeout,
            caches.footprints.clone(),
        )),
        namespace: runtime.config.namespace.clone(),
        dry_run: runtime.config.dry_run,
        hook_timeout: runtime.config.hook_timeout,
        footprint_wait: runtime.config.footprint_wait,
        inventory_timeout: runtime.config.inventory_timeout,
        policy_max_age: runtime.config.policy_max_age,
        retention: runtime.config.retention,
        grace_period: runtime.config.grace_period,
        deletion_stuck_after: runtime.config.deletion_stuck_after,
        reclaim_pauses: reclaimer::Pauses::default(),
        client,
        capi,
        recorder,
        caches,
        runtime,
    });
    run(context, sources, scopes, started).await
}

fn run(
    context: Arc<Context>,
    sources: Sources,
    scopes: Vec<Option<String>>,
    started: WatchSynced,
) -> BoxFuture<'static, Result<()>> {
    let mut tasks: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
    for machines in &sources.machines {
        let controller = Controller::for_shared_stream_with(
            machines.subscribe(),
            machines.store(),
            context.capi.machine(),
        )
        .reconcile_all_on(context.leadership_won());
        tasks.push(drive(&context, controller, Kind::Machine, hooks::reconcile));
    }
    for (index, scope) in scopes.iter().enumerate() {
        tasks.push(drive(
            &context,
            tracking_controller(&context, &sources, index, scope.clone()),
            Kind::Cluster,
            footprints::track,
        ));
    }
    tasks.push(drive(
        &context,
        footprint_controller(&context, &sources),
        Kind::Footprint,
        footprints::phase,
    ));
    tasks.push(report_held_hooks(
        sources.machines.iter().map(Shared::store).collect(),
        context.metrics().clone(),
    ));
    if let Some(interval) = context.runtime.config.audit_interval {
        tasks.push(audit_periodically(context.clone(), interval));
    }
    let config = timeouts::watcher_config(context.runtime.api_timeout);
    let metrics = context.metrics().clone();
    let Sources {
        machines,
        provisioning,
        capi_clusters,
        harvester_machines,
        harvester_configs,
        footprints,
        settings,
    } = sources;
    for source in machines
        .into_iter()
        .chain(provisioning)
        .chain(capi_clusters)
        .chain(harvester_machines)
        .chain(harvester_configs)
    {
        tasks.push(source.run(config.clone(), metrics.clone()));
    }
    tasks.push(footprints.run(config.clone(), metrics.clone()));
    tasks.push(settings.run(
        config.fields(&format!("metadata.name={}", observe::INSTALL_UUID_SETTING)),
        metrics,
    ));
    started.synced();
    async move {
        try_join_all(tasks).await?;
        Ok(())
    }
    .boxed()
}

/// `--audit-interval`: the Lease holder audits every Harvester the Footprints use (from the
/// cache) and exports the orphans it finds; a failure is counted and logged, the last figures
/// stand, and the next audit is one interval later.
fn audit_periodically(context: Arc<Context>, interval: Duration) -> BoxFuture<'static, Result<()>> {
    async move {
        let mut leader = context.runtime.leader.clone();
        loop {
            // Audit only from a whole cache: an empty one would report no Harvester at all.
            if leader.wait_for(|leading| *leading).await.is_err()
                || context.caches.footprints.wait_until_ready().await.is_err()
            {
                return Ok(());
            }
            let footprints: Vec<Footprint> = context
                .caches
                .footprints
                .state()
                .iter()
                .map(|footprint| footprint.as_ref().clone())
                .collect();
            let credentials = crate::inspect::audit::credentials_of(&footprints);
            match crate::inspect::audit::audit_with(&context.harvesters, &footprints, &credentials)
                .await
            {
                Ok(report) => {
                    tracing::info!(orphans = report.totals.orphans, "audited");
                    context
                        .metrics()
                        .audited(report.harvesters.iter().map(|audited| {
                            let name = audited.credentials[0].clone();
                            let orphans = report.findings.iter().filter(|found| {
                                found.harvester == name
                                    && found.finding.verdict == gleaner_core::audit::Verdict::Orphan
                            });
                            let (count, bytes) = orphans.fold((0, 0), |(count, bytes), found| {
                                (count + 1, bytes + found.finding.bytes.unwrap_or(0))
                            });
                            (name, count, bytes)
                        }));
                }
                Err(error) => {
                    tracing::warn!(%error, "the periodic audit failed");
                    context.metrics().audit_failed();
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
    .boxed()
}

/// The Footprint-tracking controller of one scope: a provisioning Cluster is looked at again
/// when it, its CAPI Cluster, a HarvesterConfig of its namespace or its Footprint changes, when
/// the installation UUID changes, and when this replica wins the Lease.
fn tracking_controller(
    context: &Arc<Context>,
    sources: &Sources,
    index: usize,
    scope: Option<String>,
) -> Controller<DynamicObject> {
    let clusters = &sources.provisioning[index];
    let same_name = |object: Arc<DynamicObject>| {
        Some(
            ObjectRef::new_with(&object.name_any(), provisioning_cluster())
                .within(&object.namespace().unwrap_or_default()),
        )
    };
    let store = clusters.store();
    let using_config = move |config: Arc<DynamicObject>| {
        let namespace = config.namespace().unwrap_or_default();
        store
            .state()
            .into_iter()
            .filter(|cluster| {
                cluster.namespace().as_deref() == Some(&namespace)
                    && footprints::pools_of(cluster).iter().any(|pool| {
                        pool["machineConfigRef"]["name"].as_str() == Some(&config.name_any())
                    })
            })
            .map(|cluster| ObjectRef::from_obj_with(cluster.as_ref(), provisioning_cluster()))
            .collect::<Vec<_>>()
    };
    let of_footprint = move |footprint: Arc<Footprint>| {
        let identity = &footprint.spec.identity;
        scope
            .as_ref()
            .is_none_or(|scope| *scope == identity.namespace)
            .then(|| {
                ObjectRef::new_with(&identity.name, provisioning_cluster())
                    .within(&identity.namespace)
            })
    };
    Controller::for_shared_stream_with(
        clusters.subscribe(),
        clusters.store(),
        provisioning_cluster(),
    )
    .watches_shared_stream_with(
        sources.capi_clusters[index].subscribe(),
        same_name,
        context.capi.cluster(),
    )
    .watches_shared_stream_with(
        sources.harvester_configs[index].subscribe(),
        using_config,
        harvester_config(),
    )
    .watches_shared_stream(sources.footprints.subscribe(), of_footprint)
    .reconcile_all_on(futures::stream::select(
        context.leadership_won(),
        sources.settings.subscribe().map(|_| ()),
    ))
}

/// The Footprint controller: a Footprint is looked at again when it or its cluster's Rancher
/// objects change (its name is the provisioning Cluster's UID), when its Harvesters' watches
/// see a VM of its pools come, change or go, when its guest shows a change, when the
/// installation UUID changes, and when this replica wins the Lease.
fn footprint_controller(context: &Arc<Context>, sources: &Sources) -> Controller<Footprint> {
    let namespace = context.namespace.clone();
    let footprint =
        move |uid: Option<String>| uid.map(|uid| ObjectRef::new(&uid).within(&namespace));
    let mut controller =
        Controller::for_shared_stream(sources.footprints.subscribe(), sources.footprints.store());
    for index in 0..sources.provisioning.len() {
        let of_cluster = footprint.clone();
        let of_capi = footprint.clone();
        let of_machine = footprint.clone();
        let clusters = sources.provisioning[index].store();
        let capi_clusters = sources.capi_clusters[index].store();
        let capi = context.capi.cluster();
        controller = controller
            .watches_shared_stream_with(
                sources.provisioning[index].subscribe(),
                move |cluster| of_cluster(cluster.uid()),
                provisioning_cluster(),
            )
            .watches_shared_stream_with(
                sources.capi_clusters[index].subscribe(),
                move |cluster| of_capi(observe::owning_provisioning_uid(&cluster)),
                context.capi.cluster(),
            )
            .watches_shared_stream_with(
                sources.harvester_machines[index].subscribe(),
                move |machine| {
                    let namespace = machine.namespace().unwrap_or_default();
                    let cluster = machine.labels().get(CLUSTER_NAME_LABEL)?.clone();
                    let key = |resource| ObjectRef::new_with(&cluster, resource).within(&namespace);
                    let uid = clusters
                        .get(&key(provisioning_cluster()))
                        .and_then(|cluster| cluster.uid())
                        .or_else(|| {
                            capi_clusters
                                .get(&key(capi.clone()))
                                .and_then(|capi| observe::owning_provisioning_uid(&capi))
                        });
                    of_machine(uid)
                },
                harvester_machine(),
            );
    }
    for mut changes in [context.harvesters.changes(), context.guests.changes()]
        .into_iter()
        .flatten()
    {
        let namespace = context.namespace.clone();
        let changes = futures::stream::poll_fn(move |cx| changes.poll_recv(cx))
            .map(move |footprint| ObjectRef::new(&footprint).within(&namespace));
        controller = controller.reconcile_on(changes);
    }
    controller.reconcile_all_on(futures::stream::select(
        context.leadership_won(),
        sources.settings.subscribe().map(|_| ()),
    ))
}

/// Every few seconds, from the Machine caches: how many deleting Machines gleaner's hook holds,
/// and since when the oldest has been deleting.
fn report_held_hooks(
    stores: Vec<Store<DynamicObject>>,
    metrics: Metrics,
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

/// How long to wait before trying an object again after its `failures`-th failure in a row:
/// doubling from [`BACKOFF_FIRST`] up to [`BACKOFF_CAP`], with jitter so that many objects that
/// failed together (an apiserver restart) do not come back together.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    doubled.min(BACKOFF_CAP).mul_f64(jitter.clamp(0.5, 1.0))
}

/// Runs one controller once every watch has synced: every reconcile is timed and counted by kind
/// and runs in a span naming its object; a failure is counted by kind and error and retried
/// with [`backoff`].
fn drive<K, F, Fut>(
    context: &Arc<Context>,
    controller: Controller<K>,
    kind: Kind,
    mut reconcile: F,
) -> BoxFuture<'static, Result<()>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + std::fmt::Debug + Eq + std::hash::Hash + Unpin,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let metrics = context.metrics().clone();
    let timed_metrics = metrics.clone();
    let concurrency = context.runtime.config.concurrency;
    let context = context.clone();
    let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let failed = failures.clone();
    let readiness = context.runtime.readiness.clone();
    let key = |namespace: Option<String>, name: String| {
        format!("{}/{name}", namespace.unwrap_or_default())
    };
    async move {
        // Decisions read the caches: none before every watch has listed, unless one never does
        // (a missing CRD, a refused list): then decide from what the others show, whose
        // fallbacks are bounded, rather than hold every hook.
        if tokio::time::timeout(SYNC_WAIT, readiness.wait_until_synced())
            .await
            .is_err()
        {
            tracing::warn!(
                kind = ?kind,
                unsynced = ?readiness.unsynced(),
                "watches have not synced after {}s: deciding from what the others show",
                SYNC_WAIT.as_secs()
            );
        }
        controller
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
            .run(
                move |object: Arc<K>, context| {
                    let span = tracing::info_span!(
                        "reconcile",
                        kind = ?kind,
                        namespace = object.namespace().unwrap_or_default(),
                        name = object.name_any(),
                    );
                    let started = Instant::now();
                    let reconciled = reconcile(object, context);
                    let metrics = timed_metrics.clone();
                    async move {
                        let result = reconciled.await;
                        metrics.reconcile_took(kind, started.elapsed());
                        result
                    }
                    .instrument(span)
                },
                move |object, error: &Error, _context| {
                    let mut failures = failed.lock().unwrap_or_else(|p| p.into_inner());
                    let count = failures
                        .entry(key(object.namespace(), object.name_any()))
                        .or_default();
                    *count = count.saturating_add(1);
                    let delay = backoff(*count, rand::random_range(0.5..=1.0));
                    tracing::warn!(
                        kind = ?kind,
                        object = %object.name_any(),
                        %error,
                        failures = *count,
                        retry_in = ?delay,
                        "reconcile failed"
                    );
                    Action::requeue(delay)
                },
                context,
            )
            .for_each(move |result| {
                match &result {
                    Ok((object, _)) => {
                        metrics.reconciled(kind);
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key(object.namespace.clone(), object.name.clone()));
                    }
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, _)) => {
                        metrics.failed(kind, error)
                    }
                    // An object that went before its turn came: nothing to do.
                    Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                        tracing::debug!(kind = ?kind, %object, "gone before its reconcile");
                    }
                    Err(error) => tracing::warn!(kind = ?kind, %error, "controller"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_down_by_half_at_most() {
        assert_eq!(backoff(1, 1.0), BACKOFF_FIRST);
        assert_eq!(backoff(2, 1.0), BACKOFF_FIRST * 2);
        assert_eq!(backoff(4, 1.0), BACKOFF_FIRST * 8);
        assert_eq!(backoff(40, 1.0), BACKOFF_CAP);
        assert_eq!(backoff(3, 0.5), BACKOFF_FIRST * 2);
        assert_eq!(backoff(3, 0.1), BACKOFF_FIRST * 2);
        assert_eq!(backoff(0, 1.0), BACKOFF_FIRST);
    }
}
