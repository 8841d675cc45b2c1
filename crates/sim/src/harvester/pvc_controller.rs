//! Harvester's PVC controller (v1.5+), for what matters to gleaner: every PVC carries its
//! finalizer, which it removes once the PVC is deleting (after its own cleanup, which has no
//! effect here). `kubernetes.io/pvc-protection` is the real controller-manager's business.

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action, watcher},
};

use super::{Context, add_finalizer, drive, is_deleting, remove_finalizer};
use crate::{Result, error::KubeContext, keys::FINALIZER_HARVESTER_PVC};

pub(super) async fn run(context: Arc<Context>) {
    let controller = Controller::new(context.api(), watcher::Config::default());
    drive(controller, reconcile, context).await;
}

async fn reconcile(claim: Arc<PersistentVolumeClaim>, context: Arc<Context>) -> Result<Action> {
    let claims = context.api::<PersistentVolumeClaim>();
    let claim_path = context.path(&claim.name_any());
    if is_deleting(claim.as_ref()) {
        if remove_finalizer(&claims, claim.as_ref(), FINALIZER_HARVESTER_PVC)
            .await
            .context(|| format!("cannot remove {FINALIZER_HARVESTER_PVC} from PVC {claim_path}"))?
        {
            context.record(format!(
                "removed finalizer {FINALIZER_HARVESTER_PVC} from PVC {claim_path}"
            ));
        }
    } else if add_finalizer(&claims, claim.as_ref(), FINALIZER_HARVESTER_PVC)
        .await
        .context(|| format!("cannot add {FINALIZER_HARVESTER_PVC} to PVC {claim_path}"))?
    {
        context.record(format!(
            "added finalizer {FINALIZER_HARVESTER_PVC} to PVC {claim_path}"
        ));
    }
    Ok(Action::await_change())
}
