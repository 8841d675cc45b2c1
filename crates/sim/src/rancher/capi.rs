//! Cluster API's core controllers, reduced to what decides when a guest node's infrastructure
//! goes: Cluster deletion, MachineSet replicas, and Machine deletion with pre-terminate hooks
//! and pause (design.md §4).

use std::{sync::Arc, time::Duration};

use gleaner_world::Player;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use crate::{
    Env, Result,
    controller::{self, annotation, is_deleting, label, name, poll_again, remove_finalizer},
    error::KubeContext,
    keys::{
        CAPI_PAUSED, FINALIZER_CAPI_CLUSTER, FINALIZER_CAPI_MACHINE, LABEL_CAPI_CLUSTER_NAME,
        LABEL_CAPI_DEPLOYMENT_NAME, LABEL_CAPI_SET_NAME, LABEL_RKE_CLUSTER_NAME,
        LABEL_RKE_POOL_NAME, PRE_TERMINATE_HOOK_PREFIX,
    },
    kinds::{self, Capi},
    rancher::machine_provision,
};

const ACTOR: &str = "capi";
/// CAPI's annotation that marks the Machine a MachineSet deletes first when scaling down.
pub(crate) const DELETE_MACHINE: &str = "cluster.x-k8s.io/delete-machine";
const WAIT: Duration = Duration::from_secs(1);
/// The simulator's own knob (no upstream key): names, comma separated, that a MachineSet gives
/// its next Machines instead of generated ones, so scenarios can express dotted names.
pub(crate) const MACHINE_NAMES: &str = "sim.gleaner.io/machine-names";

pub(crate) struct CapiContext {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) capi: Capi,
    /// Who plays Cluster API's controllers: these simulators, or the world's real manager (then
    /// Rancher only creates what it creates and provides what CAPI waits for).
    pub(crate) controllers: Player,
    pub(crate) env: Env,
}

impl CapiContext {
    fn api(&self, resource: &kube::api::ApiResource) -> Api<DynamicObject> {
        kinds::namespaced(&self.client, &self.namespace, resource)
    }

    /// An object reference in the shape this CAPI version uses.
    pub(crate) fn reference(&self, api_version: &str, kind: &str, name: &str) -> Value {
        match self.capi.api_version() {
            "v1beta1" => json!({
                "apiVersion": api_version, "kind": kind, "name": name, "namespace": self.namespace,
            }),
            _ => json!({
                "apiGroup": api_version.split('/').next().unwrap_or_default(),
                "kind": kind,
                "name": name,
            }),
        }
    }

    async fn cluster(&self, name: &str) -> Result<Option<DynamicObject>> {
        self.api(&self.capi.cluster())
            .get_opt(name)
            .await
            .context(|| format!("cannot read CAPI Cluster {name}"))
    }
}

/// Starts the Cluster, MachineSet and Machine controllers for one namespace.
pub(crate) fn spawn(context: Arc<CapiContext>, tasks: &mut crate::tasks::Tasks) {
    let capi = context.capi;
    tasks.spawn(controller::run(
        context.api(&capi.cluster()),
        capi.cluster(),
        context.clone(),
        |cluster, context| async move { reconcile_cluster(&cluster, &context).await },
    ));
    tasks.spawn(controller::run(
        context.api(&capi.machine_set()),
        capi.machine_set(),
        context.clone(),
        |set, context| async move { reconcile_machine_set(&set, &context).await },
    ));
    tasks.spawn(controller::run(
        context.api(&capi.machine()),
        capi.machine(),
        context,
        |machine, context| async move { reconcile_machine(&machine, &context).await },
    ));
}

fn paused_cluster(cluster: &DynamicObject) -> bool {
    cluster.data["spec"]["paused"] == Value::Bool(true)
}

/// A deleting Cluster deletes its MachineDeployments (the garbage collector takes their
/// MachineSets and Machines) and waits for every Machine to be gone.
async fn reconcile_cluster(cluster: &DynamicObject, context: &CapiContext) -> Result<Action> {
    if !is_deleting(cluster) {
        return Ok(Action::await_change());
    }
    if paused_cluster(cluster) || annotation(cluster, CAPI_PAUSED).is_some() {
        return Ok(poll_again(&context.env.clock, WAIT));
    }
    let selector =
        ListParams::default().labels(&format!("{LABEL_CAPI_CLUSTER_NAME}={}", name(cluster)));
    let deployments = context.api(&context.capi.machine_deployment());
    for deployment in deployments
        .list(&selector)
        .await
        .context(|| "cannot list MachineDeployments".into())?
    {
        if !is_deleting(&deployment) {
            deployments
                .delete(name(&deployment), &DeleteParams::background())
                .await
                .context(|| format!("cannot delete MachineDeployment {}", name(&deployment)))?;
            context.env.journal.record(
                ACTOR,
                format!("deleted MachineDeployment {}", name(&deployment)),
            );
        }
    }
    let machines = context
        .api(&context.capi.machine())
        .list(&selector)
        .await
        .context(|| "cannot list Machines".into())?;
    if !machines.items.is_empty() {
        return Ok(poll_again(&context.env.clock, WAIT));
    }
    remove_finalizer(
        &context.api(&context.capi.cluster()),
        cluster,
        FINALIZER_CAPI_CLUSTER,
    )
    .await?;
    context.env.journal.record(
        ACTOR,
        format!("Cluster {} finished deleting", name(cluster)),
    );
    Ok(Action::await_change())
}

/// Keeps as many live Machines as the owning MachineDeployment wants: replaces a deleted one
/// (reprovisioning), deletes one when scaled down (the one marked `delete-machine` first).
async fn reconcile_machine_set(set: &DynamicObject, context: &CapiContext) -> Result<Action> {
    if is_deleting(set) {
        return Ok(Action::await_change());
    }
    let cluster_name = label(set, LABEL_CAPI_CLUSTER_NAME).unwrap_or_default();
    match context.cluster(cluster_name).await? {
        Some(cluster) if !is_deleting(&cluster) && !paused_cluster(&cluster) => {}
        _ => return Ok(poll_again(&context.env.clock, WAIT)),
    }
    let Some(deployment_name) = label(set, LABEL_CAPI_DEPLOYMENT_NAME) else {
        return Ok(Action::await_change());
    };
    let Some(deployment) = context
        .api(&context.capi.machine_deployment())
        .get_opt(deployment_name)
        .await
        .context(|| format!("cannot read MachineDeployment {deployment_name}"))?
    else {
        return Ok(Action::await_change());
    };
    if is_deleting(&deployment) {
        return Ok(Action::await_change());
    }
    let wanted = deployment.data["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let machines = context.api(&context.capi.machine());
    // Deleting Machines count, as in CAPI: a replacement comes once the old Machine is gone.
    let owned = machines
        .list(&ListParams::default().labels(&format!("{LABEL_CAPI_SET_NAME}={}", name(set))))
        .await
        .context(|| "cannot list Machines".into())?
        .items;
    if owned.len() < wanted {
        let machine = create_machine(context, set).await?;
        context.env.journal.record(
            ACTOR,
            format!("MachineSet {} created Machine {machine}", name(set)),
        );
    } else if owned.len() > wanted {
        // CAPI's deletion priority: Machines already deleting first, then the ones marked
        // `delete-machine`, then the oldest; deleting an already deleting one is a no-op.
        let mut candidates: Vec<&DynamicObject> = owned.iter().collect();
        candidates.sort_by_key(|machine| {
            (
                !is_deleting(machine),
                annotation(machine, DELETE_MACHINE).is_none(),
                machine
                    .metadata
                    .creation_timestamp
                    .clone()
                    .map(|time| time.0),
            )
        });
        for victim in candidates[..owned.len() - wanted]
            .iter()
            .filter(|m| !is_deleting(m))
        {
            let victim = name(victim).to_owned();
            machines
                .delete(&victim, &DeleteParams::background())
                .await
                .context(|| format!("cannot delete Machine {victim}"))?;
            context.env.journal.record(
                ACTOR,
                format!("MachineSet {} deleted Machine {victim}", name(set)),
            );
        }
    }
    Ok(poll_again(&context.env.clock, WAIT))
}

/// A deleting Machine waits while paused or while any pre-terminate hook is on it, then deletes
/// its infrastructure machine, waits for it to be gone, and finishes.
async fn reconcile_machine(machine: &DynamicObject, context: &CapiContext) -> Result<Action> {
    if !is_deleting(machine) {
        return Ok(Action::await_change());
    }
    let cluster_name = machine.data["spec"]["clusterName"]
        .as_str()
        .unwrap_or_default();
    let cluster_paused = context
        .cluster(cluster_name)
        .await?
        .is_some_and(|cluster| paused_cluster(&cluster));
    if cluster_paused || annotation(machine, CAPI_PAUSED).is_some() {
        return Ok(poll_again(&context.env.clock, WAIT));
    }
    let hooks = pre_terminate_hooks(machine);
    if !hooks.is_empty() {
        let what = format!("Machine {} waits on hooks {hooks:?}", name(machine));
        if context.env.journal.position(ACTOR, &what).is_none() {
            context.env.journal.record(ACTOR, what);
        }
        return Ok(poll_again(&context.env.clock, WAIT));
    }
    let infrastructure = context.api(&kinds::harvester_machine());
    let infra_name = machine.data["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default();
    match infrastructure
        .get_opt(infra_name)
        .await
        .context(|| format!("cannot read HarvesterMachine {infra_name}"))?
    {
        Some(infra) if !is_deleting(&infra) => {
            let deleted = infrastructure
                .delete(infra_name, &DeleteParams::background())
                .await
                .context(|| format!("cannot delete HarvesterMachine {infra_name}"))?;
            // The revision of the deletion lets tests order it against writes in other
            // clusters of the world, which share one etcd.
            let revision = deleted
                .left()
                .and_then(|machine| machine.metadata.resource_version)
                .unwrap_or_default();
            context.env.journal.record(
                ACTOR,
                format!("deleted HarvesterMachine {infra_name} at revision {revision}"),
            );
            Ok(poll_again(&context.env.clock, WAIT))
        }
        Some(_) => Ok(poll_again(&context.env.clock, WAIT)),
        None => {
            remove_finalizer(
                &context.api(&context.capi.machine()),
                machine,
                FINALIZER_CAPI_MACHINE,
            )
            .await?;
            context.env.journal.record(
                ACTOR,
                format!("Machine {} finished deleting", name(machine)),
            );
            Ok(Action::await_change())
        }
    }
}

/// The pre-terminate hook annotations on a Machine, as CAPI finds them.
pub(crate) fn pre_terminate_hooks(machine: &DynamicObject) -> Vec<&String> {
    machine
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(key, _)| key.starts_with(PRE_TERMINATE_HOOK_PREFIX).then_some(key))
        .collect()
}

/// Creates a Machine of `set` and its HarvesterMachine from the pool's template, as the
/// MachineSet controller does. The Machine takes the next of the set's requested names (used
/// up one by one), else `<set>-<5 random>`. Returns the Machine's name.
async fn create_machine(context: &CapiContext, set: &DynamicObject) -> Result<String> {
    let set_name = name(set);
    let requested = annotation(set, MACHINE_NAMES).unwrap_or_default();
    let (machine_name, remaining) = match requested.split_once(',') {
        _ if requested.is_empty() => (format!("{set_name}-{}", super::random_suffix(5)), None),
        Some((next, rest)) => (next.to_owned(), Some(rest)),
        None => (requested.to_owned(), Some("")),
    };
    let labels = set.data["spec"]["template"]["metadata"]["labels"].clone();
    let mut machine_labels: serde_json::Map<String, Value> =
        labels.as_object().cloned().unwrap_or_default();
    machine_labels.insert(LABEL_CAPI_SET_NAME.into(), set_name.into());
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("cluster.x-k8s.io/{}", context.capi.api_version()),
        "kind": "Machine",
        "metadata": {
            "name": machine_name,
            "labels": machine_labels,
            "finalizers": [FINALIZER_CAPI_MACHINE],
            "ownerReferences": [owner(set, "MachineSet", context)],
        },
        "spec": {
            "clusterName": set.data["spec"]["clusterName"],
            "bootstrap": {"dataSecretName": format!("{machine_name}-machine-bootstrap")},
            "infrastructureRef": context.reference("rke-machine.cattle.io/v1", "HarvesterMachine", &machine_name),
        },
    }))
    .expect("a Machine is a valid object");
    let created = context
        .api(&context.capi.machine())
        .create(&PostParams::default(), &machine)
        .await
        .context(|| format!("cannot create Machine {machine_name}"))?;
    let template = set.data["spec"]["template"]["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default();
    machine_provision::create_harvester_machine(context, &created, template).await?;
    if let Some(remaining) = remaining {
        let patch = json!({"metadata": {"annotations": {MACHINE_NAMES: remaining}}});
        context
            .api(&context.capi.machine_set())
            .patch(set_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot update MachineSet {set_name}"))?;
    }
    Ok(machine_name)
}

pub(crate) fn owner(object: &DynamicObject, kind: &str, context: &CapiContext) -> Value {
    let api_version = match kind {
        "HarvesterMachine" => "rke-machine.cattle.io/v1".to_owned(),
        _ => format!("cluster.x-k8s.io/{}", context.capi.api_version()),
    };
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name(object),
        "uid": object.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The labels Rancher puts on a pool's machine template (PROVENANCE.md §2.1).
pub(crate) fn machine_template_labels(cluster: &str, deployment: &str, pool: &str) -> Value {
    json!({
        LABEL_CAPI_CLUSTER_NAME: cluster,
        LABEL_RKE_CLUSTER_NAME: cluster,
        LABEL_CAPI_DEPLOYMENT_NAME: deployment,
        LABEL_RKE_POOL_NAME: pool,
    })
}
