//! One Footprint per Harvester-backed provisioning Cluster, named by its UID, created when
//! gleaner first sees the cluster and kept current; `Reclaiming` once its deletion is confirmed.

use std::{sync::Arc, time::Duration};

use gleaner_core::{
    ClusterIdentity, Deletion, OptOut, PauseFacts, confirm_deletion, keys, opt_out, paused_by,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Error, Result,
    footprint::{Footprint, FootprintSpec, FootprintStatus, Identity, Phase, Pool},
    management::{
        Context,
        observe::{self, provisioning_cluster},
    },
};

const FIELD_MANAGER: &str = "gleaner/footprints";
/// How often a Footprint is looked at again without any event (a cluster may vanish while
/// gleaner is down, and a NotFound announces itself to no watch).
const RECHECK: Duration = Duration::from_secs(30);
/// How soon a standby replica looks again at what it may not write yet.
const STANDBY: Duration = Duration::from_secs(2);

/// Whether a provisioning Cluster runs on Harvester: a pool made from a `HarvesterConfig`.
pub fn harvester_backed(cluster: &DynamicObject) -> bool {
    pools_of(cluster)
        .iter()
        .any(|pool| pool["machineConfigRef"]["kind"] == "HarvesterConfig")
}

fn pools_of(cluster: &DynamicObject) -> Vec<serde_json::Value> {
    cluster.data["spec"]["rkeConfig"]["machinePools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Keeps the Footprint's spec current from the provisioning Cluster.
pub async fn track(cluster: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    if !harvester_backed(&cluster) {
        return Ok(Action::await_change());
    }
    let Some(uid) = cluster.metadata.uid.clone() else {
        return Ok(Action::await_change());
    };
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let existing = context
        .footprints()
        .get_opt(&uid)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read Footprint {uid}"),
            source,
        })?;
    let install_uuid = match existing.as_ref() {
        Some(footprint) => footprint.spec.identity.install_uuid.clone(),
        None => observe::install_uuid(&context.client)
            .await?
            .ok_or_else(|| {
                Error::Unsupported(
                    "the install-uuid Setting is missing: is this Rancher's local cluster?".into(),
                )
            })?,
    };
    let capi_uid = context
        .capi
        .clusters(&context.client, &namespace)
        .get_opt(&name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read CAPI Cluster {namespace}/{name}"),
            source,
        })?
        .and_then(|capi| capi.metadata.uid)
        .or_else(|| {
            existing
                .as_ref()
                .and_then(|f| f.spec.identity.capi_cluster_uid.clone())
        });
    let spec = FootprintSpec {
        identity: Identity {
            install_uuid,
            namespace: namespace.clone(),
            name: name.clone(),
            provisioning_cluster_uid: uid.clone(),
            capi_cluster_uid: capi_uid,
        },
        pools: pools(&cluster, &context).await?,
    };
    if existing
        .as_ref()
        .is_some_and(|footprint| footprint.spec == spec)
        || !context.may_write()
    {
        return Ok(Action::requeue(RECHECK));
    }
    let footprint = Footprint::new(&uid, spec);
    context
        .footprints()
        .patch(
            &uid,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&footprint),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot write Footprint {uid}"),
            source,
        })?;
    if existing.is_none() {
        context
            .event(
                &cluster.object_ref(&provisioning_cluster()),
                "Tracking",
                format!(
                    "gleaner tracks this cluster in Footprint {}/{uid}",
                    context.namespace
                ),
            )
            .await;
    }
    Ok(Action::requeue(RECHECK))
}

/// Each pool's Harvester (its own cloud credential, else the cluster's) and VM namespace.
async fn pools(cluster: &DynamicObject, context: &Context) -> Result<Vec<Pool>> {
    let cluster_credential = cluster.data["spec"]["cloudCredentialSecretName"]
        .as_str()
        .unwrap_or_default();
    let namespace = cluster.namespace().unwrap_or_default();
    let configs: Api<DynamicObject> =
        Api::namespaced_with(context.client.clone(), &namespace, &harvester_config());
    let mut pools = Vec::new();
    for pool in pools_of(cluster) {
        let config_name = pool["machineConfigRef"]["name"]
            .as_str()
            .unwrap_or_default();
        let vm_namespace = configs
            .get_opt(config_name)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read HarvesterConfig {namespace}/{config_name}"),
                source,
            })?
            .and_then(|config| config.data["vmNamespace"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        pools.push(Pool {
            name: pool["name"].as_str().unwrap_or_default().to_owned(),
            cloud_credential: pool["cloudCredentialSecretName"]
                .as_str()
                .filter(|own| !own.is_empty())
                .unwrap_or(cluster_credential)
                .to_owned(),
            vm_namespace,
        });
    }
    Ok(pools)
}

fn harvester_config() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("rke-machine-config.cattle.io", "v1", "HarvesterConfig"),
        "harvesterconfigs",
    )
}

/// Moves a Footprint to `Reclaiming` once a live read confirms its cluster's deletion; keeps
/// its `OptedOut` and `Frozen` conditions current.
pub async fn phase(footprint: Arc<Footprint>, context: Arc<Context>) -> Result<Action> {
    let status = footprint.status.clone().unwrap_or_default();
    if matches!(status.phase, Some(Phase::Reclaiming | Phase::Reclaimed)) {
        return Ok(Action::await_change());
    }
    let identity = &footprint.spec.identity;
    let Some(capi_uid) = identity.capi_cluster_uid.clone() else {
        return Ok(Action::requeue(RECHECK));
    };
    let recorded = ClusterIdentity {
        install_uuid: identity.install_uuid.clone(),
        namespace: identity.namespace.clone(),
        name: identity.name.clone(),
        provisioning_uid: identity.provisioning_cluster_uid.clone(),
        capi_uid,
    };
    let live = observe::live(
        &context.client,
        &context.capi,
        &recorded.namespace,
        &recorded.name,
    )
    .await?;
    let phase = match confirm_deletion(&recorded, &live) {
        Deletion::Confirmed => Phase::Reclaiming,
        Deletion::NotConfirmed(_) => Phase::Tracking,
    };
    let mut conditions = status.conditions.clone();
    if phase == Phase::Reclaiming {
        set_condition(
            &mut conditions,
            "DeletionConfirmed",
            "True",
            "BothClustersGone",
            "a live read showed both Cluster objects gone or deleting, in the recorded installation",
        );
    }
    set_cluster_conditions(&mut conditions, &recorded, &context).await?;
    let unchanged = status.phase == Some(phase) && same_conditions(&status.conditions, &conditions);
    if unchanged {
        return Ok(Action::requeue(RECHECK));
    }
    if !context.may_write() {
        return Ok(Action::requeue(STANDBY));
    }
    let patch = json!({"status": FootprintStatus {
        phase: Some(phase),
        conditions,
        ..status
    }});
    context
        .footprints()
        .patch_status(
            &footprint.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot update Footprint {}", footprint.name_any()),
            source,
        })?;
    tracing::info!(footprint = %footprint.name_any(), cluster = %recorded.readable(), ?phase, "footprint phase");
    Ok(Action::requeue(RECHECK))
}

/// `OptedOut` and `Frozen`, from the two Cluster objects as they are now.
async fn set_cluster_conditions(
    conditions: &mut Vec<Condition>,
    recorded: &ClusterIdentity,
    context: &Context,
) -> Result<()> {
    let read = |api: Api<DynamicObject>| async move {
        api.get_opt(&recorded.name)
            .await
            .map_err(|source| Error::Kube {
                context: format!(
                    "cannot read Cluster {}/{}",
                    recorded.namespace, recorded.name
                ),
                source,
            })
    };
    let provisioning = read(Api::namespaced_with(
        context.client.clone(),
        &recorded.namespace,
        &provisioning_cluster(),
    ))
    .await?;
    let capi = read(context.capi.clusters(&context.client, &recorded.namespace)).await?;
    let skip = |cluster: &Option<DynamicObject>| {
        cluster.as_ref().and_then(|cluster| {
            cluster
                .annotations()
                .get(keys::SKIP_CLEANUP_ANNOTATION)
                .cloned()
        })
    };
    let (status, reason, message) =
        match opt_out(skip(&provisioning).as_deref(), skip(&capi).as_deref()) {
            OptOut::No => (
                "False",
                "NotOptedOut",
                "no Cluster object opts out".to_owned(),
            ),
            OptOut::OptedOut { object } => (
                "True",
                "SkipCleanupAnnotation",
                format!(
                    "the {object:?} Cluster carries {}",
                    keys::SKIP_CLEANUP_ANNOTATION
                ),
            ),
            OptOut::Malformed { object, value } => (
                "False",
                "MalformedAnnotation",
                format!(
                    "the {object:?} Cluster's {} is {value:?}, not a boolean",
                    keys::SKIP_CLEANUP_ANNOTATION
                ),
            ),
        };
    set_condition(conditions, "OptedOut", status, reason, &message);
    let paused = paused_by(&PauseFacts {
        cluster_spec_paused: capi
            .as_ref()
            .is_some_and(|cluster| cluster.data["spec"]["paused"] == serde_json::Value::Bool(true)),
        cluster_annotated: capi
            .as_ref()
            .is_some_and(|cluster| cluster.annotations().contains_key(keys::PAUSED_ANNOTATION)),
        machine_annotated: false,
    });
    match paused {
        Some(by) => set_condition(
            conditions,
            "Frozen",
            "True",
            "Paused",
            &format!("paused by {by:?}"),
        ),
        None => set_condition(
            conditions,
            "Frozen",
            "False",
            "NotPaused",
            "the cluster is not paused",
        ),
    }
    Ok(())
}

fn same_conditions(before: &[Condition], after: &[Condition]) -> bool {
    let key = |conditions: &[Condition]| {
        let mut keys: Vec<(String, String, String)> = conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        keys.sort();
        keys
    };
    key(before) == key(after)
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let now = Time(Timestamp::now());
    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == type_)
    {
        Some(condition) => {
            if condition.status != status {
                condition.last_transition_time = now;
            }
            condition.status = status.to_owned();
            condition.reason = reason.to_owned();
            condition.message = message.to_owned();
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now,
            observed_generation: None,
        }),
    }
}
