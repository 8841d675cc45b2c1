//! Rancher's machine-provision controller: for each HarvesterMachine it runs a create job (the
//! node driver's `Create()`: the VM in Harvester) and, when the HarvesterMachine is deleted, a
//! remove job that starts after a delay and runs the driver's `Remove()`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::controller::Action,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    Env, Error, Result,
    controller::{self, has_finalizer, is_deleting, label, name, remove_finalizer},
    error::KubeContext,
    keys::{
        CLOUD_CREDENTIAL_KUBECONFIG, CREATOR_DRIVER, FINALIZER_RANCHER_MACHINE,
        LABEL_CAPI_CLUSTER_NAME, LABEL_CREATOR, LABEL_GUEST_CLUSTER, LABEL_MACHINE_SET_NAME,
        LABEL_NODE_POOL, LABEL_RKE_CAPI_MACHINE_NAME, LABEL_VM_NAME, SIMULATED_RANCHER_KUBECONFIG,
        VOLUME_CLAIM_TEMPLATES,
    },
    kinds::{self, Capi},
    naming,
    rancher::{
        RancherSettings,
        capi::{CapiContext, owner},
        driver::{self, DriverTarget},
        random_suffix, ready_status,
    },
};

const ACTOR: &str = "remove-job";
const CREATE_ACTOR: &str = "create-job";

pub(crate) struct ProvisionContext {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) settings: RancherSettings,
    pub(crate) capi: Capi,
    pub(crate) env: Env,
    /// When each deleting HarvesterMachine (by UID) was first seen: its remove job's start.
    deletions_seen: Mutex<HashMap<String, Instant>>,
}

impl ProvisionContext {
    pub(crate) fn new(
        client: Client,
        namespace: &str,
        settings: RancherSettings,
        capi: Capi,
        env: Env,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            settings,
            capi,
            env,
            deletions_seen: Mutex::default(),
        }
    }

    fn machines(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.client, &self.namespace, &kinds::harvester_machine())
    }
}

pub(crate) fn spawn(context: Arc<ProvisionContext>, tasks: &mut crate::tasks::Tasks) {
    tasks.spawn(controller::run(
        context.machines(),
        kinds::harvester_machine(),
        context,
        |machine, context| async move { reconcile(&machine, &context).await },
    ));
}

async fn reconcile(machine: &DynamicObject, context: &ProvisionContext) -> Result<Action> {
    if is_deleting(machine) {
        return remove_job(machine, context).await;
    }
    if !has_finalizer(machine, FINALIZER_RANCHER_MACHINE) {
        // Cluster API's MachineSet made it: Rancher takes it (the change wakes this again).
        adopt(machine, context).await?;
        return Ok(Action::await_change());
    }
    if machine.data["status"]["ready"] != Value::Bool(true) {
        create_job(machine, context).await?;
    }
    Ok(Action::await_change())
}

/// The remove job: starts `remove_job_delay` after the HarvesterMachine began deleting, runs the
/// driver's `Remove()`, and lets the HarvesterMachine go.
async fn remove_job(machine: &DynamicObject, context: &ProvisionContext) -> Result<Action> {
    let uid = machine.metadata.uid.clone().unwrap_or_default();
    let first_seen = *context
        .deletions_seen
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(uid)
        .or_insert_with(Instant::now);
    let start = first_seen + context.env.clock.scaled(context.settings.remove_job_delay);
    if Instant::now() < start {
        return Ok(Action::requeue(start - Instant::now()));
    }
    let spec = &machine.data["spec"];
    let vm_namespace = spec["vmNamespace"].as_str().unwrap_or("default");
    let vm_name = naming::vm_name(name(machine));
    let credential = spec["common"]["cloudCredentialSecretName"]
        .as_str()
        .unwrap_or_default();
    let harvester = harvester_client(&context.client, credential).await?;
    context.env.journal.record(
        ACTOR,
        format!("remove job for HarvesterMachine {} starts", name(machine)),
    );
    let target = DriverTarget {
        vm_namespace,
        vm_name: &vm_name,
        cluster_name: label(machine, LABEL_CAPI_CLUSTER_NAME),
    };
    driver::remove(&harvester, &target, context.settings.driver, &context.env).await?;
    remove_finalizer(&context.machines(), machine, FINALIZER_RANCHER_MACHINE).await?;
    context.env.journal.record(
        ACTOR,
        format!("HarvesterMachine {} released", name(machine)),
    );
    Ok(Action::await_change())
}

/// Rancher's hold on a HarvesterMachine Cluster API created: its remove finalizer, the label
/// naming its Machine (the same name, as CAPI names them), and its machine-state Secret.
async fn adopt(machine: &DynamicObject, context: &ProvisionContext) -> Result<()> {
    let mut finalizers = machine.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER_RANCHER_MACHINE.to_owned());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "labels": {LABEL_RKE_CAPI_MACHINE_NAME: name(machine)},
        "resourceVersion": machine.metadata.resource_version,
    }});
    let adopted = context
        .machines()
        .patch(
            name(machine),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .context(|| format!("cannot take HarvesterMachine {}", name(machine)))?;
    create_machine_state(&context.client, &context.namespace, &adopted).await
}

/// The create job: the driver's `Create()` makes the VM, then Rancher marks the machine ready
/// and gives it the VM's provider ID.
async fn create_job(machine: &DynamicObject, context: &ProvisionContext) -> Result<()> {
    let spec = &machine.data["spec"];
    let credential = spec["common"]["cloudCredentialSecretName"]
        .as_str()
        .unwrap_or_default();
    let harvester = harvester_client(&context.client, credential).await?;
    let vm_namespace = spec["vmNamespace"].as_str().unwrap_or("default");
    let vm = driver_vm(
        name(machine),
        vm_namespace,
        label(machine, LABEL_CAPI_CLUSTER_NAME),
        spec,
    );
    let vms = kinds::namespaced(&harvester, vm_namespace, &kinds::virtual_machine());
    let created = match vms.create(&PostParams::default(), &vm).await {
        Ok(created) => {
            context.env.journal.record(
                CREATE_ACTOR,
                format!("created VM {vm_namespace}/{}", name(&vm)),
            );
            created
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => vms
            .get(name(&vm))
            .await
            .context(|| format!("cannot read VM {vm_namespace}/{}", name(&vm)))?,
        Err(error) => {
            return Err(error).context(|| format!("cannot create VM {vm_namespace}/{}", name(&vm)));
        }
    };
    if spec["providerID"].as_str().unwrap_or_default().is_empty() {
        // The guest has no Node to take it from: the form Harvester's providers fall back to
        // (`harvester://<VM UID>`, as cluster-api-provider-harvester writes it).
        let provider_id = format!(
            "harvester://{}",
            created.metadata.uid.as_deref().unwrap_or_default()
        );
        let patch = json!({"spec": {"providerID": provider_id}});
        context
            .machines()
            .patch(
                name(machine),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .context(|| format!("cannot set the provider ID of {}", name(machine)))?;
    }
    let mut status = ready_status(context.capi, "provisioned");
    status["jobName"] = json!(format!("{}-machine-provision", name(machine)));
    status["cloudCredentialSecretName"] = json!(credential);
    let status = json!({ "status": status });
    context
        .machines()
        .patch_status(
            name(machine),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .context(|| format!("cannot mark HarvesterMachine {} ready", name(machine)))?;
    Ok(())
}

/// The VM the node driver creates for a machine: its name rule, its labels, one root disk from a
/// volume claim template (Harvester creates that PVC) and a cloud-init disk.
fn driver_vm(
    machine_name: &str,
    vm_namespace: &str,
    cluster: Option<&str>,
    spec: &Value,
) -> DynamicObject {
    let vm_name = naming::vm_name(machine_name);
    let disk_claim = format!("{vm_name}-disk-0-{}", random_suffix(5));
    let image = spec["imageName"].as_str().unwrap_or("default/image-ubuntu");
    let disk_size = match spec["diskSize"].as_str() {
        Some(size) if size != "0" && !size.is_empty() => format!("{size}Gi"),
        _ => "40Gi".to_owned(),
    };
    let template = json!([{
        "metadata": {"name": disk_claim, "annotations": {"harvesterhci.io/imageId": image}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": disk_size}},
            "storageClassName": format!("longhorn-{}", image.rsplit('/').next().unwrap_or(image)),
            "volumeMode": "Block",
        },
    }]);
    let mut labels = serde_json::Map::new();
    labels.insert(LABEL_CREATOR.into(), CREATOR_DRIVER.into());
    labels.insert(LABEL_VM_NAME.into(), vm_name.clone().into());
    labels.insert(
        LABEL_MACHINE_SET_NAME.into(),
        naming::machine_set_label(vm_namespace, &vm_name).into(),
    );
    if let Some(cluster) = cluster {
        labels.insert(LABEL_GUEST_CLUSTER.into(), cluster.into());
        if let Some(pool) = naming::node_pool_label(cluster, &vm_name) {
            labels.insert(LABEL_NODE_POOL.into(), pool.into());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": vm_name,
            "namespace": vm_namespace,
            "labels": labels,
            "annotations": {
                VOLUME_CLAIM_TEMPLATES: template.to_string(),
                "harvesterhci.io/vmRunStrategy": "RerunOnFailure",
            },
        },
        "spec": {
            "runStrategy": "RerunOnFailure",
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "domain": {
                        "cpu": {"cores": spec["cpuCount"].as_str().and_then(|c| c.parse::<u32>().ok()).unwrap_or(2)},
                        "memory": {"guest": format!("{}Gi", spec["memorySize"].as_str().unwrap_or("4"))},
                        "devices": {
                            "disks": [
                                {"name": "disk-0", "bootOrder": 1, "disk": {"bus": "virtio"}},
                                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
                            ],
                        },
                    },
                    "volumes": [
                        {"name": "disk-0", "persistentVolumeClaim": {"claimName": disk_claim}},
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": format!("{vm_name}-cloudinit")}}},
                    ],
                },
            },
        },
    }))
    .expect("the driver's VM is a valid object")
}

/// Creates the HarvesterMachine for a new Machine from the pool's HarvesterMachineTemplate, as
/// CAPI's MachineSet controller does (labels and an owner reference to the Machine).
pub(crate) async fn create_harvester_machine(
    context: &CapiContext,
    machine: &DynamicObject,
    template_name: &str,
) -> Result<()> {
    let templates = kinds::namespaced(
        &context.client,
        &context.namespace,
        &kinds::harvester_machine_template(),
    );
    let template = templates
        .get(template_name)
        .await
        .context(|| format!("cannot read HarvesterMachineTemplate {template_name}"))?;
    let machine_name = name(machine);
    let harvester_machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rke-machine.cattle.io/v1",
        "kind": "HarvesterMachine",
        "metadata": {
            "name": machine_name,
            "labels": {
                LABEL_CAPI_CLUSTER_NAME: label(machine, LABEL_CAPI_CLUSTER_NAME),
                LABEL_RKE_CAPI_MACHINE_NAME: machine_name,
            },
            "finalizers": [FINALIZER_RANCHER_MACHINE],
            "ownerReferences": [owner(machine, "Machine", context)],
        },
        "spec": template.data["spec"]["template"]["spec"],
    }))
    .expect("a HarvesterMachine is a valid object");
    let created = kinds::namespaced(
        &context.client,
        &context.namespace,
        &kinds::harvester_machine(),
    )
    .create(&PostParams::default(), &harvester_machine)
    .await
    .context(|| format!("cannot create HarvesterMachine {machine_name}"))?;
    create_machine_state(&context.client, &context.namespace, &created).await
}

/// The Secret `<machine>-machine-state` where Rancher keeps the driver's state (there is none in
/// the HarvesterMachine's status); owned by the HarvesterMachine, so it goes with it.
async fn create_machine_state(
    client: &Client,
    namespace: &str,
    machine: &DynamicObject,
) -> Result<()> {
    let name = format!("{}-machine-state", controller::name(machine));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "ownerReferences": [{
                "apiVersion": "rke-machine.cattle.io/v1",
                "kind": "HarvesterMachine",
                "name": controller::name(machine),
                "uid": machine.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "type": "rke.cattle.io/machine-state",
        "data": {},
    }))
    .expect("a Secret is a valid object");
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error).context(|| format!("cannot create Secret {name}")),
    }
}

/// A client for the Harvester a cloud credential (`namespace:name`) points at, built from the
/// kubeconfig the Secret holds, as Rancher and the driver do.
pub(crate) async fn harvester_client(management: &Client, credential: &str) -> Result<Client> {
    let (namespace, secret_name) = credential.split_once(':').ok_or_else(|| {
        Error::Invalid(format!(
            "cloud credential {credential:?} is not namespace:name"
        ))
    })?;
    let secret = Api::<Secret>::namespaced(management.clone(), namespace)
        .get(secret_name)
        .await
        .context(|| format!("cannot read cloud credential {credential}"))?;
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|data| {
            data.get(SIMULATED_RANCHER_KUBECONFIG)
                .or_else(|| data.get(CLOUD_CREDENTIAL_KUBECONFIG))
        })
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "cloud credential {credential} has no {CLOUD_CREDENTIAL_KUBECONFIG}"
            ))
        })?;
    let kubeconfig = Kubeconfig::from_yaml(&kubeconfig)
        .map_err(|error| Error::Invalid(format!("cloud credential {credential}: {error}")))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Invalid(format!("cloud credential {credential}: {error}")))?;
    Client::try_from(config).context(|| format!("cannot build a client from {credential}"))
}
