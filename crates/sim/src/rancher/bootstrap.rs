//! Rancher's RKE bootstrap provider, reduced to what Cluster API waits for: each RKEBootstrap
//! (CAPI's MachineSet clones one per Machine from the pool's RKEBootstrapTemplate) gets its
//! bootstrap data Secret and is marked ready, so the Machine controller takes the Secret's name
//! into `spec.bootstrap.dataSecretName`. Runs only beside the real Cluster API manager; the
//! simulated one gives Machines their data Secret's name directly.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use crate::{
    Env, Result,
    controller::{self, is_deleting, name},
    error::KubeContext,
    kinds::{self, Capi},
    naming,
    rancher::ready_status,
};

const ACTOR: &str = "rke-bootstrap";

pub(crate) struct BootstrapContext {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) capi: Capi,
    pub(crate) env: Env,
}

impl BootstrapContext {
    fn bootstraps(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.client, &self.namespace, &kinds::rke_bootstrap())
    }
}

pub(crate) fn spawn(context: Arc<BootstrapContext>, tasks: &mut crate::tasks::Tasks) {
    tasks.spawn(controller::run(
        context.bootstraps(),
        kinds::rke_bootstrap(),
        context,
        |bootstrap, context| async move { reconcile(&bootstrap, &context).await },
    ));
}

async fn reconcile(bootstrap: &DynamicObject, context: &BootstrapContext) -> Result<Action> {
    if is_deleting(bootstrap) || bootstrap.data["status"]["ready"] == Value::Bool(true) {
        return Ok(Action::await_change());
    }
    let secret_name = naming::safe_concat_name(&[name(bootstrap), "machine", "bootstrap"]);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": secret_name,
            "ownerReferences": [{
                "apiVersion": "rke.cattle.io/v1",
                "kind": "RKEBootstrap",
                "name": name(bootstrap),
                "uid": bootstrap.metadata.uid,
                "controller": true,
            }],
        },
        "type": "rke.cattle.io/bootstrap",
        "data": {},
    }))
    .expect("a bootstrap Secret is a valid object");
    match Api::<Secret>::namespaced(context.client.clone(), &context.namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(error) => {
            return Err(error).context(|| format!("cannot create Secret {secret_name}"));
        }
    }
    let mut status = ready_status(context.capi, "dataSecretCreated");
    status["dataSecretName"] = json!(secret_name);
    let status = json!({ "status": status });
    context
        .bootstraps()
        .patch_status(
            name(bootstrap),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .context(|| format!("cannot mark RKEBootstrap {} ready", name(bootstrap)))?;
    context
        .env
        .journal
        .record(ACTOR, format!("RKEBootstrap {} is ready", name(bootstrap)));
    Ok(Action::await_change())
}
