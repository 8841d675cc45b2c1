//! Rancher's `harvester-machine-provision-cleanup` handler (an OnChange handler on
//! HarvesterMachine, since Rancher 2.11), as design.md §3 describes it.

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Env, Result,
    controller::{self, annotation, is_deleting, label, name},
    error::KubeContext,
    keys::{LABEL_CAPI_CLUSTER_NAME, REMOVE_ALL_PVCS, SKIP_CLEANUP},
    kinds::{self, Capi},
    rancher::{machine_provision::harvester_client, parse_bool_true},
};

const ACTOR: &str = "cleanup-handler";

pub(crate) struct CleanupContext {
    pub(crate) latency: Duration,
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) capi: Capi,
    pub(crate) env: Env,
}

pub(crate) fn spawn(context: Arc<CleanupContext>, tasks: &mut crate::tasks::Tasks) {
    tasks.spawn(controller::run(
        kinds::namespaced(
            &context.client,
            &context.namespace,
            &kinds::harvester_machine(),
        ),
        kinds::harvester_machine(),
        context,
        |machine, context| async move { on_change(&machine, &context).await },
    ));
}

/// When a HarvesterMachine is deleting and its CAPI Cluster is deleting and neither Cluster
/// object opts out, set removeAll "true" on the VM, only if the key is absent. The VM is looked
/// up by the raw machine name (so dotted or long names miss it, as upstream does).
async fn on_change(machine: &DynamicObject, context: &CleanupContext) -> Result<Action> {
    if !is_deleting(machine) {
        return Ok(Action::await_change());
    }
    let Some(cluster_name) = label(machine, LABEL_CAPI_CLUSTER_NAME) else {
        return Ok(Action::await_change());
    };
    let capi_clusters =
        kinds::namespaced(&context.client, &context.namespace, &context.capi.cluster());
    let Some(capi_cluster) = capi_clusters
        .get_opt(cluster_name)
        .await
        .context(|| format!("cannot read CAPI Cluster {cluster_name}"))?
    else {
        return Ok(Action::await_change());
    };
    if !is_deleting(&capi_cluster) {
        return Ok(Action::await_change());
    }
    let provisioning = kinds::namespaced(
        &context.client,
        &context.namespace,
        &kinds::provisioning_cluster(),
    )
    .get_opt(cluster_name)
    .await
    .context(|| format!("cannot read provisioning Cluster {cluster_name}"))?;
    let opted_out = [Some(&capi_cluster), provisioning.as_ref()]
        .into_iter()
        .flatten()
        .any(|cluster| annotation(cluster, SKIP_CLEANUP).is_some_and(parse_bool_true));
    if opted_out {
        return Ok(Action::await_change());
    }
    let Some(provisioning) = provisioning else {
        return Ok(Action::await_change());
    };
    context.env.clock.sleep(context.latency).await;
    let credential = provisioning.data["spec"]["cloudCredentialSecretName"]
        .as_str()
        .unwrap_or_default();
    let harvester = harvester_client(&context.client, credential).await?;
    let vm_namespace = machine.data["spec"]["vmNamespace"]
        .as_str()
        .unwrap_or("default");
    let vms = kinds::namespaced(&harvester, vm_namespace, &kinds::virtual_machine());
    let Some(vm) = vms
        .get_opt(name(machine))
        .await
        .context(|| format!("cannot read VM {vm_namespace}/{}", name(machine)))?
    else {
        context.env.journal.record(
            ACTOR,
            format!(
                "no VM named {vm_namespace}/{}: nothing marked",
                name(machine)
            ),
        );
        return Ok(Action::await_change());
    };
    if annotation(&vm, REMOVE_ALL_PVCS).is_none() {
        let patch = json!({"metadata": {"annotations": {REMOVE_ALL_PVCS: "true"}}});
        vms.patch(name(&vm), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot annotate VM {vm_namespace}/{}", name(&vm)))?;
        context.env.journal.record(
            ACTOR,
            format!("set removeAll=true on VM {vm_namespace}/{}", name(&vm)),
        );
    }
    Ok(Action::await_change())
}
