//! Harvester's load-balancer controllers (`harvester/load-balancer-harvester`), for what matters
//! to gleaner (design.md §2): the LoadBalancer controller, whose only trace here is the finalizer
//! it keeps on every LoadBalancer, and, from Harvester v1.8, the VM controller that deletes a
//! guest cluster's LoadBalancers when one of the cluster's VMs is removed with
//! `harvesterhci.io/removeAllPersistentVolumeClaims: "true"`. Both are wrangler OnRemove
//! handlers: each keeps its finalizer (`wrangler.cattle.io/<handler name>`) on every object of
//! its kind, runs when such an object is being deleted, and lets it go once it succeeded.

use std::sync::Arc;

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams},
    runtime::{Controller, controller::Action, watcher},
};

use super::{Context, add_finalizer, drive, has_finalizer, is_deleting, remove_finalizer};
use crate::{
    Env, Result,
    error::KubeContext,
    keys::{
        CREATOR_DRIVER, FINALIZER_LB_CONTROLLER, FINALIZER_LB_VM_CONTROLLER, LABEL_CREATOR,
        LABEL_GUEST_CLUSTER, LABEL_LB_CLUSTER, REMOVE_ALL_PVCS,
    },
    kinds::{load_balancer, virtual_machine},
    tasks::Tasks,
};

/// Journal actor of Harvester's LoadBalancer controller (its LoadBalancer finalizer).
pub const LB_CONTROLLER: &str = "harvester-lb-controller";
/// Journal actor of Harvester's load-balancer VM controller (the cleanup on VM removal).
pub const LB_VM_CONTROLLER: &str = "harvester-lb-vm-controller";

/// `spec.workloadType` of the LoadBalancers a guest cluster's cloud provider makes.
const WORKLOAD_CLUSTER: &str = "cluster";

/// Starts Harvester v1.8's load-balancer controllers for `namespace`: the LoadBalancer
/// controller's finalizer and the cleanup on VM removal. Not starting them is Harvester without
/// the cleanup, and LoadBalancers that nothing holds.
pub fn spawn(client: Client, namespace: &str, env: Env, tasks: &mut Tasks) {
    let context = |actor| Context::new(&client, namespace, &env, actor);
    tasks.spawn(run_load_balancers(context(LB_CONTROLLER)));
    tasks.spawn(run_vms(context(LB_VM_CONTROLLER)));
}

async fn run_load_balancers(context: Arc<Context>) {
    let resource = load_balancer();
    let controller = Controller::new_with(
        context.dynamic_api(&resource),
        watcher::Config::default(),
        resource,
    );
    drive(controller, reconcile_load_balancer, context).await;
}

async fn run_vms(context: Arc<Context>) {
    let resource = virtual_machine();
    let controller = Controller::new_with(
        context.dynamic_api(&resource),
        watcher::Config::default(),
        resource,
    );
    drive(controller, reconcile_vm, context).await;
}

/// The LoadBalancer controller's OnRemove: on removal it releases the address it allocated
/// from an IP pool (none is allocated here), then lets the LoadBalancer go.
async fn reconcile_load_balancer(lb: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let api = context.dynamic_api(&load_balancer());
    if is_deleting(lb.as_ref()) {
        release(&context, &api, &lb, "LoadBalancer", FINALIZER_LB_CONTROLLER).await?;
    } else {
        hold(&context, &api, &lb, "LoadBalancer", FINALIZER_LB_CONTROLLER).await?;
    }
    Ok(Action::await_change())
}

/// The VM controller's OnRemove: when a guest-cluster VM goes during its cluster's deletion,
/// the cluster's LoadBalancers go first.
async fn reconcile_vm(vm: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let vms = context.dynamic_api(&virtual_machine());
    if !is_deleting(vm.as_ref()) {
        hold(&context, &vms, &vm, "VM", FINALIZER_LB_VM_CONTROLLER).await?;
        return Ok(Action::await_change());
    }
    if !has_finalizer(&vm.metadata, FINALIZER_LB_VM_CONTROLLER) {
        return Ok(Action::await_change());
    }
    let vm_path = context.path(&vm.name_any());
    if let Some(cluster) = cluster_being_removed(&vm, &vm_path) {
        delete_cluster_load_balancers(&context, &vm_path, cluster).await?;
    }
    release(&context, &vms, &vm, "VM", FINALIZER_LB_VM_CONTROLLER).await?;
    Ok(Action::await_change())
}

/// The guest cluster whose LoadBalancers the VM's removal deletes, checked as upstream does:
/// the node driver made the VM, its removeAll annotation is exactly `"true"`, and it names its
/// cluster (upstream only logs a VM that does not).
fn cluster_being_removed<'a>(vm: &'a DynamicObject, vm_path: &str) -> Option<&'a str> {
    let labels = vm.labels();
    if labels.get(LABEL_CREATOR).map(String::as_str) != Some(CREATOR_DRIVER)
        || vm.annotations().get(REMOVE_ALL_PVCS).map(String::as_str) != Some("true")
    {
        return None;
    }
    let cluster = labels.get(LABEL_GUEST_CLUSTER).map(String::as_str);
    if cluster.is_none() {
        tracing::warn!(
            vm = vm_path,
            "a guest-cluster VM being removed names no cluster; no load balancer is cleaned"
        );
    }
    cluster
}

/// Deletes the `cluster` workload LoadBalancers of the namespace labelled with the bare cluster
/// name, so a same-named cluster's go too. Every one is tried; the last failure is returned.
async fn delete_cluster_load_balancers(
    context: &Context,
    vm_path: &str,
    cluster: &str,
) -> Result<()> {
    let api = context.dynamic_api(&load_balancer());
    let selector = format!("{LABEL_LB_CLUSTER}={cluster}");
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .context(|| {
            format!(
                "cannot list LoadBalancers {selector} in {}",
                context.namespace
            )
        })?;
    let mut failure = None;
    for lb in listed
        .iter()
        .filter(|lb| is_cluster_workload(lb) && !is_deleting(*lb))
    {
        if let Err(error) = delete_load_balancer(context, &api, vm_path, cluster, lb).await {
            failure = Some(error);
        }
    }
    failure.map_or(Ok(()), Err)
}

fn is_cluster_workload(lb: &DynamicObject) -> bool {
    lb.data["spec"]["workloadType"] == WORKLOAD_CLUSTER
}

async fn delete_load_balancer(
    context: &Context,
    api: &Api<DynamicObject>,
    vm_path: &str,
    cluster: &str,
    lb: &DynamicObject,
) -> Result<()> {
    let lb_path = context.path(&lb.name_any());
    match api.delete(&lb.name_any(), &DeleteParams::default()).await {
        Ok(_) => {
            context.record(format!(
                "deleted LoadBalancer {lb_path} of guest cluster {cluster} on removal of VM {vm_path}"
            ));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => {
            context.record(format!(
                "cannot delete LoadBalancer {lb_path} on removal of VM {vm_path}: {error}"
            ));
            Err(error).context(|| format!("cannot delete LoadBalancer {lb_path}"))
        }
    }
}

/// Puts the handler's finalizer on a live object, as wrangler's OnRemove does for every object.
async fn hold(
    context: &Context,
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    kind: &str,
    finalizer: &str,
) -> Result<()> {
    let path = context.path(&object.name_any());
    if add_finalizer(api, object, finalizer)
        .await
        .context(|| format!("cannot add {finalizer} to {kind} {path}"))?
    {
        context.record(format!("added finalizer {finalizer} to {kind} {path}"));
    }
    Ok(())
}

/// Takes the handler's finalizer off an object whose removal it has handled.
async fn release(
    context: &Context,
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    kind: &str,
    finalizer: &str,
) -> Result<()> {
    let path = context.path(&object.name_any());
    if remove_finalizer(api, object, finalizer)
        .await
        .context(|| format!("cannot remove {finalizer} from {kind} {path}"))?
    {
        context.record(format!("removed finalizer {finalizer} from {kind} {path}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vm(labels: serde_json::Value, annotations: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm", "labels": labels, "annotations": annotations},
        }))
        .unwrap()
    }

    fn driver_vm(annotations: serde_json::Value) -> DynamicObject {
        vm(
            json!({LABEL_CREATOR: CREATOR_DRIVER, LABEL_GUEST_CLUSTER: "alpha"}),
            annotations,
        )
    }

    #[test]
    fn only_a_driver_vm_with_remove_all_exactly_true_names_its_cluster() {
        let removing = driver_vm(json!({REMOVE_ALL_PVCS: "true"}));
        assert_eq!(cluster_being_removed(&removing, "ns/vm"), Some("alpha"));
        for value in ["false", "True", "1", ""] {
            let vm = driver_vm(json!({REMOVE_ALL_PVCS: value}));
            assert_eq!(cluster_being_removed(&vm, "ns/vm"), None, "{value:?}");
        }
        assert_eq!(cluster_being_removed(&driver_vm(json!({})), "ns/vm"), None);
    }

    #[test]
    fn a_vm_not_made_by_the_driver_or_naming_no_cluster_names_none() {
        let foreign = vm(
            json!({LABEL_GUEST_CLUSTER: "alpha"}),
            json!({REMOVE_ALL_PVCS: "true"}),
        );
        assert_eq!(cluster_being_removed(&foreign, "ns/vm"), None);
        let anonymous = vm(
            json!({LABEL_CREATOR: CREATOR_DRIVER}),
            json!({REMOVE_ALL_PVCS: "true"}),
        );
        assert_eq!(cluster_being_removed(&anonymous, "ns/vm"), None);
    }

    #[test]
    fn only_cluster_workloads_are_cleaned() {
        let lb = |spec| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "loadbalancer.harvesterhci.io/v1beta1",
                "kind": "LoadBalancer",
                "metadata": {"name": "lb"},
                "spec": spec,
            }))
            .unwrap()
        };
        assert!(is_cluster_workload(&lb(json!({"workloadType": "cluster"}))));
        assert!(!is_cluster_workload(&lb(json!({"workloadType": "vm"}))));
        assert!(!is_cluster_workload(&lb(json!({"ipam": "pool"}))));
    }
}
