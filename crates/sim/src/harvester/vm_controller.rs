//! Harvester's VM controller and KubeVirt's virt-controller, for what matters to gleaner: the
//! finalizers a VM carries, its disk PVCs, its VirtualMachineInstance, and what each does when
//! the VM goes. Two controllers, as upstream: each owns its finalizer.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::PersistentVolumeClaim, apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ObjectMeta, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use super::{Context, add_finalizer, drive, has_finalizer, is_deleting, remove_finalizer};
use crate::{
    Error, Result,
    error::KubeContext,
    keys::{FINALIZER_KUBEVIRT_VM, FINALIZER_VM_CLEANUP, REMOVED_PVCS, VOLUME_CLAIM_TEMPLATES},
    kinds::{virtual_machine, virtual_machine_instance},
};

/// How often (upstream) KubeVirt looks again while a deleting VM's instance is still there.
const VMI_GONE_POLL: Duration = Duration::from_secs(1);

pub(super) async fn run_harvester(context: Arc<Context>) {
    let resource = virtual_machine();
    let controller = Controller::new_with(
        context.dynamic_api(&resource),
        watcher::Config::default(),
        resource,
    );
    drive(controller, reconcile_harvester, context).await;
}

pub(super) async fn run_kubevirt(context: Arc<Context>) {
    let vm = virtual_machine();
    let vmi = virtual_machine_instance();
    let controller = Controller::new_with(context.dynamic_api(&vm), watcher::Config::default(), vm)
        .owns_with(context.dynamic_api(&vmi), vmi, watcher::Config::default());
    drive(controller, reconcile_kubevirt, context).await;
}

/// Harvester's part: the cleanup finalizer, the disk PVCs, and on removal (a wrangler OnRemove
/// handler) the PVCs the VM lists, waiting for nothing.
async fn reconcile_harvester(vm: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let vms = context.dynamic_api(&virtual_machine());
    let vm_path = context.path(&vm.name_any());
    if is_deleting(vm.as_ref()) {
        if has_finalizer(&vm.metadata, FINALIZER_VM_CLEANUP) {
            for claim in removed_pvcs(&vm) {
                delete_removed_pvc(&context, &vm_path, claim).await?;
            }
            remove_finalizer(&vms, vm.as_ref(), FINALIZER_VM_CLEANUP)
                .await
                .context(|| format!("cannot remove {FINALIZER_VM_CLEANUP} from VM {vm_path}"))?;
            context.record(format!(
                "removed finalizer {FINALIZER_VM_CLEANUP} from VM {vm_path}"
            ));
        }
        return Ok(Action::await_change());
    }
    if add_finalizer(&vms, vm.as_ref(), FINALIZER_VM_CLEANUP)
        .await
        .context(|| format!("cannot add {FINALIZER_VM_CLEANUP} to VM {vm_path}"))?
    {
        context.record(format!(
            "added finalizer {FINALIZER_VM_CLEANUP} to VM {vm_path}"
        ));
    }
    for template in disk_templates(&vm, &vm_path) {
        create_disk_pvc(&context, &vm_path, template).await?;
    }
    Ok(Action::await_change())
}

/// The names in the removed-PVC annotation (comma separated; blanks skipped).
fn removed_pvcs(vm: &DynamicObject) -> impl Iterator<Item = &str> {
    vm.annotations()
        .get(REMOVED_PVCS)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

async fn delete_removed_pvc(context: &Context, vm_path: &str, claim: &str) -> Result<()> {
    let claim_path = context.path(claim);
    match context
        .api::<PersistentVolumeClaim>()
        .delete(claim, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            context.record(format!("deleted PVC {claim_path} listed by VM {vm_path}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            context.record(format!(
                "PVC {claim_path} listed by VM {vm_path} is already gone"
            ));
            Ok(())
        }
        Err(error) => {
            context.record(format!(
                "cannot delete PVC {claim_path} listed by VM {vm_path}: {error}"
            ));
            Err(error).context(|| format!("cannot delete PVC {claim_path}"))
        }
    }
}

/// The VM's disk PVC templates; an unreadable annotation is skipped (upstream's VM webhook
/// would have refused it), not retried.
fn disk_templates(vm: &DynamicObject, vm_path: &str) -> Vec<PersistentVolumeClaim> {
    let Some(templates) = vm.annotations().get(VOLUME_CLAIM_TEMPLATES) else {
        return Vec::new();
    };
    serde_json::from_str(templates).unwrap_or_else(|error| {
        tracing::warn!(vm = vm_path, %error, "ignoring unreadable {VOLUME_CLAIM_TEMPLATES}");
        Vec::new()
    })
}

/// Creates a disk PVC if missing: the template's name, labels, annotations and spec, in the
/// VM's namespace, with no owner reference (as upstream).
async fn create_disk_pvc(
    context: &Context,
    vm_path: &str,
    template: PersistentVolumeClaim,
) -> Result<()> {
    let Some(name) = template.metadata.name else {
        tracing::warn!(
            vm = vm_path,
            "ignoring a volume claim template without a name"
        );
        return Ok(());
    };
    let claim_path = context.path(&name);
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(context.namespace.clone()),
            labels: template.metadata.labels,
            annotations: template.metadata.annotations,
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    match context
        .api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
    {
        Ok(_) => {
            context.record(format!("created PVC {claim_path} for VM {vm_path}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error).context(|| format!("cannot create PVC {claim_path}")),
    }
}

/// KubeVirt's part: its finalizer and the VirtualMachineInstance (owned by the VM); on removal
/// it deletes the instance and lets the VM go once the instance is gone.
async fn reconcile_kubevirt(vm: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    if is_deleting(vm.as_ref()) {
        return finalize_kubevirt(&vm, &context).await;
    }
    let vm_path = context.path(&vm.name_any());
    if add_finalizer(
        &context.dynamic_api(&virtual_machine()),
        vm.as_ref(),
        FINALIZER_KUBEVIRT_VM,
    )
    .await
    .context(|| format!("cannot add {FINALIZER_KUBEVIRT_VM} to VM {vm_path}"))?
    {
        context.record(format!(
            "added finalizer {FINALIZER_KUBEVIRT_VM} to VM {vm_path}"
        ));
    }
    if is_halted(&vm) {
        stop_instance(&context, &vm_path, &vm.name_any()).await?;
    } else {
        start_instance(&context, &vm).await?;
    }
    Ok(Action::await_change())
}

async fn finalize_kubevirt(vm: &DynamicObject, context: &Context) -> Result<Action> {
    if !has_finalizer(&vm.metadata, FINALIZER_KUBEVIRT_VM) {
        return Ok(Action::await_change());
    }
    let name = vm.name_any();
    let vm_path = context.path(&name);
    let instances = context.dynamic_api(&virtual_machine_instance());
    let instance = instances
        .get_opt(&name)
        .await
        .context(|| format!("cannot read VMI {vm_path}"))?;
    if let Some(instance) = instance {
        if !is_deleting(&instance) {
            stop_instance(context, &vm_path, &name).await?;
        }
        return Ok(context.poll_again(VMI_GONE_POLL));
    }
    remove_finalizer(
        &context.dynamic_api(&virtual_machine()),
        vm,
        FINALIZER_KUBEVIRT_VM,
    )
    .await
    .context(|| format!("cannot remove {FINALIZER_KUBEVIRT_VM} from VM {vm_path}"))?;
    context.record(format!(
        "removed finalizer {FINALIZER_KUBEVIRT_VM} from VM {vm_path}"
    ));
    Ok(Action::await_change())
}

fn is_halted(vm: &DynamicObject) -> bool {
    vm.data["spec"]["runStrategy"] == "Halted"
}

async fn stop_instance(context: &Context, vm_path: &str, name: &str) -> Result<()> {
    match context
        .dynamic_api(&virtual_machine_instance())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            context.record(format!("deleted VMI {vm_path}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error).context(|| format!("cannot delete VMI {vm_path}")),
    }
}

/// Creates the VM's instance if missing: its template, owned by the VM as its controller.
async fn start_instance(context: &Context, vm: &DynamicObject) -> Result<()> {
    let vm_path = context.path(&vm.name_any());
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..vm.controller_owner_ref(&virtual_machine())
            .ok_or_else(|| Error::Invalid(format!("VM {vm_path} has no uid")))?
    };
    let template = &vm.data["spec"]["template"];
    let instance: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm.name_any(),
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [owner],
        },
        "spec": template["spec"],
    }))
    .map_err(|error| Error::Invalid(format!("VM {vm_path} has an unusable template: {error}")))?;
    match context
        .dynamic_api(&virtual_machine_instance())
        .create(&PostParams::default(), &instance)
        .await
    {
        Ok(_) => {
            context.record(format!("created VMI {vm_path}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error).context(|| format!("cannot create VMI {vm_path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_with(annotations: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm", "annotations": annotations},
        }))
        .unwrap()
    }

    #[test]
    fn removed_pvcs_are_comma_separated_and_blanks_are_skipped() {
        let vm = vm_with(json!({REMOVED_PVCS: " a, b,,c ,"}));
        assert_eq!(removed_pvcs(&vm).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(removed_pvcs(&vm_with(json!({}))).count(), 0);
    }

    #[test]
    fn unreadable_disk_templates_are_skipped() {
        let vm = vm_with(json!({VOLUME_CLAIM_TEMPLATES: "not json"}));
        assert!(disk_templates(&vm, "ns/vm").is_empty());
        let vm =
            vm_with(json!({VOLUME_CLAIM_TEMPLATES: r#"[{"metadata":{"name":"d0"},"spec":{}}]"#}));
        assert_eq!(
            disk_templates(&vm, "ns/vm")[0].metadata.name.as_deref(),
            Some("d0")
        );
    }
}
