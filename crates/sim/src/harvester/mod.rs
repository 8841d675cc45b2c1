//! Harvester's side, one Harvester namespace at a time (so tests sharing a world stay apart):
//! the VM controller with KubeVirt's part of it, the PVC controller, and the PVC admission
//! webhook, really in the harvester apiserver's request path (design.md §2).

pub mod load_balancer;
mod pvc_controller;
mod vm_controller;
mod webhook;

use std::{fmt::Debug, hash::Hash, sync::Arc, time::Duration};

use futures::StreamExt;
use gleaner_world::World;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, ObjectMeta, Patch, PatchParams},
    runtime::{Controller, controller::Action},
};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use webhook::PvcWebhook;

use crate::{Env, Error, Result, tasks::Tasks};

/// Journal actor of Harvester's VM controller (disk PVCs, the removed-PVC cleanup).
pub const VM_CONTROLLER: &str = "harvester-vm-controller";
/// Journal actor of KubeVirt's virt-controller (the VirtualMachineInstance).
pub const KUBEVIRT: &str = "kubevirt-virt-controller";
/// Journal actor of Harvester's PVC controller (its PVC finalizer).
pub const PVC_CONTROLLER: &str = "harvester-pvc-controller";
/// Journal actor of Harvester's PVC admission webhook (one entry per reviewed delete).
pub const PVC_WEBHOOK: &str = "harvester-pvc-webhook";

/// The Harvester release simulated, where behaviour changed between releases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum HarvesterVersion {
    V1_4,
    V1_5,
    V1_6,
    V1_7,
    #[default]
    V1_8,
}

impl HarvesterVersion {
    /// Since v1.5 every PVC carries [`crate::keys::FINALIZER_HARVESTER_PVC`].
    pub fn has_pvc_finalizer(self) -> bool {
        self >= Self::V1_5
    }

    /// Since v1.8 the webhook refuses deleting a PVC owned by a VM only while that VM exists
    /// and is not being deleted; before, it refuses for an owner reference to any VM.
    pub fn spares_pvcs_of_gone_vms(self) -> bool {
        self >= Self::V1_8
    }
}

/// The simulated Harvester of one namespace. Dropping it stops the controllers and the webhook
/// server; [`Harvester::shutdown`] also removes the webhook's configuration.
pub struct Harvester {
    pub tasks: Tasks,
    pub webhook: PvcWebhook,
}

impl Harvester {
    /// Starts every Harvester actor for `namespace` of the Harvester cluster `cluster`, and
    /// returns once the webhook is in the apiserver's request path.
    pub async fn start(
        world: &World,
        cluster: &str,
        namespace: &str,
        version: HarvesterVersion,
        env: &Env,
    ) -> Result<Self> {
        let client = world.client(cluster).await?;
        let context = |actor| Context::new(&client, namespace, env, actor);
        let mut tasks = Tasks::default();
        tasks.spawn(vm_controller::run_harvester(context(VM_CONTROLLER)));
        tasks.spawn(vm_controller::run_kubevirt(context(KUBEVIRT)));
        if version.has_pvc_finalizer() {
            tasks.spawn(pvc_controller::run(context(PVC_CONTROLLER)));
        }
        let webhook = PvcWebhook::start(world, client, namespace, version, env.clone()).await?;
        Ok(Self { tasks, webhook })
    }

    /// Stops everything and deletes the webhook's configuration from the apiserver.
    pub async fn shutdown(self) -> Result<()> {
        drop(self.tasks);
        self.webhook.shutdown().await
    }
}

/// What one simulated controller works with.
struct Context {
    client: Client,
    namespace: String,
    env: Env,
    actor: &'static str,
}

impl Context {
    fn new(client: &Client, namespace: &str, env: &Env, actor: &'static str) -> Arc<Self> {
        Arc::new(Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            env: env.clone(),
            actor,
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn dynamic_api(&self, resource: &ApiResource) -> Api<kube::api::DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    fn record(&self, what: impl Into<String>) {
        self.env.journal.record(self.actor, what);
    }

    /// `namespace/name`, as the journal and messages name objects.
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    /// Look again after `upstream` (scaled, but never in a hot loop), for waits no watch event
    /// ends.
    fn poll_again(&self, upstream: Duration) -> Action {
        Action::requeue(self.env.clock.scaled(upstream).max(MIN_REQUEUE))
    }
}

/// The shortest wait before a controller looks at an object again.
const MIN_REQUEUE: Duration = Duration::from_millis(50);
/// How long (upstream) a controller waits to retry after a failed reconcile.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Runs a controller until aborted: failed reconciles (conflicts included) are retried.
async fn drive<K, F, Fut>(controller: Controller<K>, reconcile: F, context: Arc<Context>)
where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Eq + Hash + Clone + Unpin,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .run(reconcile, retry, context)
        .for_each(|_| async {})
        .await;
}

fn retry<K: Resource>(object: Arc<K>, error: &Error, context: Arc<Context>) -> Action {
    let name = object.name_any();
    if is_conflict(error) {
        tracing::debug!(actor = context.actor, %name, %error, "retrying after a conflict");
    } else {
        tracing::warn!(actor = context.actor, %name, %error, "retrying");
    }
    context.poll_again(RETRY_AFTER_ERROR)
}

fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Kube { source: kube::Error::Api(status), .. } if status.is_conflict())
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|present| present == finalizer)
}

fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

/// Adds `finalizer` unless present; whether it patched.
async fn add_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> kube::Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has_finalizer(object.meta(), finalizer) {
        return Ok(false);
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.to_owned());
    patch_finalizers(api, object, &finalizers).await?;
    Ok(true)
}

/// Removes `finalizer` if present; whether it patched.
async fn remove_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> kube::Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !has_finalizer(object.meta(), finalizer) {
        return Ok(false);
    }
    let finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|present| *present != finalizer)
        .cloned()
        .collect();
    patch_finalizers(api, object, &finalizers).await?;
    Ok(true)
}

/// A merge patch carrying the resourceVersion it read: a concurrent change (the garbage
/// collector's `foregroundDeletion`, another controller's finalizer) fails it with a conflict
/// instead of being overwritten.
async fn patch_finalizers<K>(api: &Api<K>, object: &K, finalizers: &[String]) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({"metadata": {
        "resourceVersion": object.meta().resource_version,
        "finalizers": finalizers,
    }});
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
