//! One Footprint per Harvester-backed provisioning Cluster, named by its UID, created when
//! gleaner first sees the cluster and kept current; `Reclaiming` once its deletion is confirmed.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use gleaner_core::{
    ClusterIdentity, Deletion, OptOut, PauseFacts, confirm_deletion, keys, opt_out, paused_by,
    vm_of,
};
use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Error, Result,
    footprint::{Footprint, FootprintSpec, FootprintStatus, Identity, Phase, Pool, VmRecord},
    management::{
        Context,
        harvesters::{Health, VmLookup},
        observe::{self, harvester_machine, provisioning_cluster},
        vms::{self, IntentSeen, Named, Seen},
    },
};

const FIELD_MANAGER: &str = "gleaner/footprints";
/// How often a Footprint is looked at again without any event (a cluster may vanish while
/// gleaner is down, and a NotFound announces itself to no watch).
const RECHECK: Duration = Duration::from_secs(30);
/// How soon a standby replica looks again at what it may not write yet.
const STANDBY: Duration = Duration::from_secs(2);
/// How many dry-run entries a Footprint keeps.
const WOULD_KEPT: usize = 20;
/// How often a status write is tried again when another write came in between.
const CONFLICT_RETRIES: usize = 5;
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
const CAPI_MACHINE_NAME_LABEL: &str = "rke.cattle.io/capi-machine-name";

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
/// its VMs and its `OptedOut`, `Frozen` and `HarvesterUnreachable` conditions current, and
/// makes sure each of its Harvesters is watched.
pub async fn phase(footprint: Arc<Footprint>, context: Arc<Context>) -> Result<Action> {
    let status = footprint.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Reclaimed) {
        return Ok(Action::await_change());
    }
    for pool in &footprint.spec.pools {
        context.harvesters.watch(&pool.cloud_credential);
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
    let mut conditions = status.conditions.clone();
    let confirmed = status.phase == Some(Phase::Reclaiming) || {
        let live = observe::live(
            &context.client,
            &context.capi,
            &recorded.namespace,
            &recorded.name,
        )
        .await?;
        confirm_deletion(&recorded, &live) == Deletion::Confirmed
    };
    set_cluster_conditions(&mut conditions, &recorded, confirmed, &context).await?;
    let named = if confirmed {
        set_condition(
            &mut conditions,
            "DeletionConfirmed",
            "True",
            "BothClustersGone",
            "a live read showed both Cluster objects gone or deleting, in the recorded installation",
        );
        None
    } else {
        Some(named_vms(&recorded, &context).await?)
    };
    set_harvester_condition(&mut conditions, &footprint.spec.pools, &context);
    let vms = vms::record(
        &status.vms,
        named.as_deref(),
        |credential, namespace, name| match context.harvesters.vm(credential, namespace, name) {
            VmLookup::Unknown => Seen::Unknown,
            VmLookup::Absent => Seen::Absent,
            VmLookup::Present(vm) => Seen::Present {
                uid: vm.uid().unwrap_or_default(),
                intent: IntentSeen::of(&vm),
            },
        },
    );
    let phase = if confirmed {
        Phase::Reclaiming
    } else {
        Phase::Tracking
    };
    let malformed: Vec<VmRecord> = vms::newly_malformed(&status.vms, &vms)
        .into_iter()
        .cloned()
        .collect();
    let next = FootprintStatus {
        phase: Some(phase),
        conditions,
        vms,
        ..status.clone()
    };
    if status.phase == next.phase
        && same_conditions(&status.conditions, &next.conditions)
        && status.vms == next.vms
    {
        return Ok(Action::requeue(RECHECK));
    }
    if !context.may_write() {
        return Ok(Action::requeue(STANDBY));
    }
    if !write_status(&context, &footprint, &next).await? {
        return Ok(Action::requeue(STANDBY));
    }
    if status.phase != next.phase {
        tracing::info!(footprint = %footprint.name_any(), cluster = %recorded.readable(), ?phase, "footprint phase");
    }
    let about = cluster_reference(identity);
    for vm in malformed {
        let note = format!(
            "VM {}/{} carries a {} gleaner cannot read ({}): it is reported, not acted on",
            vm.namespace,
            vm.name,
            keys::INTENT_ANNOTATION,
            vm.intent_problem.unwrap_or_default()
        );
        context.warn(&about, "MalformedIntent", note).await;
    }
    Ok(Action::requeue(RECHECK))
}

/// The provisioning Cluster a Footprint records, as the object its Events are about (it may be
/// gone already).
pub fn cluster_reference(identity: &Identity) -> ObjectReference {
    ObjectReference {
        api_version: Some("provisioning.cattle.io/v1".into()),
        kind: Some("Cluster".into()),
        namespace: Some(identity.namespace.clone()),
        name: Some(identity.name.clone()),
        uid: Some(identity.provisioning_cluster_uid.clone()),
        ..ObjectReference::default()
    }
}

/// The VMs the cluster's HarvesterMachines name now (Rancher names each after its Machine).
async fn named_vms(recorded: &ClusterIdentity, context: &Context) -> Result<Vec<Named>> {
    let machines: Api<DynamicObject> = Api::namespaced_with(
        context.client.clone(),
        &recorded.namespace,
        &harvester_machine(),
    );
    let listed = machines
        .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={}", recorded.name)))
        .await
        .map_err(|source| Error::Kube {
            context: format!(
                "cannot list the HarvesterMachines of {}/{}",
                recorded.namespace, recorded.name
            ),
            source,
        })?;
    Ok(listed
        .items
        .iter()
        .map(|machine| {
            let spec = &machine.data["spec"];
            let vm = vm_of(&machine.name_any(), spec["vmNamespace"].as_str());
            Named {
                machine: machine
                    .labels()
                    .get(CAPI_MACHINE_NAME_LABEL)
                    .cloned()
                    .unwrap_or_else(|| machine.name_any()),
                cloud_credential: spec["common"]["cloudCredentialSecretName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                namespace: vm.namespace,
                name: vm.name,
            }
        })
        .collect())
}

/// `HarvesterUnreachable`: true while the watch on any of the cluster's Harvesters fails.
fn set_harvester_condition(conditions: &mut Vec<Condition>, pools: &[Pool], context: &Context) {
    let credentials: BTreeSet<&str> = pools
        .iter()
        .map(|pool| pool.cloud_credential.as_str())
        .collect();
    let mut unreachable = Vec::new();
    let mut syncing = false;
    for credential in credentials {
        match context.harvesters.health(credential) {
            Health::Unreachable { problem } => unreachable.push(format!("{credential}: {problem}")),
            Health::Syncing => syncing = true,
            Health::Reachable => {}
        }
    }
    if !unreachable.is_empty() {
        set_condition(
            conditions,
            "HarvesterUnreachable",
            "True",
            "WatchFailing",
            &unreachable.join("; "),
        );
    } else if !syncing {
        set_condition(
            conditions,
            "HarvesterUnreachable",
            "False",
            "Reachable",
            "every Harvester of the cluster answers",
        );
    }
}

/// Sets `ProtectionLapsed`: the hook timeout let a Machine go without its intent.
pub async fn protection_lapsed(context: &Context, footprint: &str, note: &str) -> Result<()> {
    update_status(context, footprint, |status| {
        set_condition(
            &mut status.conditions,
            "ProtectionLapsed",
            "True",
            "HookTimeout",
            note,
        );
    })
    .await
}

/// Records, most recent first, what a dry run would have done.
pub async fn would(context: &Context, footprint: &str, what: String) -> Result<()> {
    update_status(context, footprint, |status| {
        status.would.retain(|entry| *entry != what);
        status.would.insert(0, what.clone());
        status.would.truncate(WOULD_KEPT);
    })
    .await
}

/// Reads the Footprint, changes its status and writes it back, again if another write came in
/// between.
async fn update_status(
    context: &Context,
    name: &str,
    mut change: impl FnMut(&mut FootprintStatus),
) -> Result<()> {
    for _ in 0..CONFLICT_RETRIES {
        let footprint = context
            .footprints()
            .get(name)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read Footprint {name}"),
                source,
            })?;
        let mut status = footprint.status.clone().unwrap_or_default();
        change(&mut status);
        if write_status(context, &footprint, &status).await? {
            return Ok(());
        }
    }
    Err(Error::Conflict(format!("Footprint {name}")))
}

/// Writes the whole status, guarded by the resourceVersion read; `false` on a conflict.
async fn write_status(
    context: &Context,
    footprint: &Footprint,
    status: &FootprintStatus,
) -> Result<bool> {
    let mut body = serde_json::to_value(status).expect("a Footprint status always serializes");
    // A merge patch keeps what it does not name: name emptied lists, as null, to clear them.
    for list in ["conditions", "vms", "objects", "would"] {
        body.as_object_mut()
            .expect("a status is an object")
            .entry(list)
            .or_insert(serde_json::Value::Null);
    }
    let patch = json!({
        "metadata": {"resourceVersion": footprint.resource_version()},
        "status": body,
    });
    match context
        .footprints()
        .patch_status(
            &footprint.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            context: format!("cannot update Footprint {}", footprint.name_any()),
            source,
        }),
    }
}

/// `OptedOut` and `Frozen`, from the recorded Cluster objects as they are now (a same-named
/// successor is not this Footprint's cluster). Once deletion is confirmed an opt-out stays,
/// since the object that carried it may be gone; `Frozen` follows the CAPI Cluster while it
/// exists.
async fn set_cluster_conditions(
    conditions: &mut Vec<Condition>,
    recorded: &ClusterIdentity,
    confirmed: bool,
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
    let recorded_uid = |cluster: Option<DynamicObject>, uid: &str| {
        cluster.filter(|cluster| cluster.metadata.uid.as_deref() == Some(uid))
    };
    let provisioning = recorded_uid(provisioning, &recorded.provisioning_uid);
    let capi = recorded_uid(capi, &recorded.capi_uid);
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
    let opted_out_before = conditions
        .iter()
        .any(|condition| condition.type_ == "OptedOut" && condition.status == "True");
    if !(confirmed && opted_out_before) {
        set_condition(conditions, "OptedOut", status, reason, &message);
    }
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
        None if capi.is_none() => set_condition(
            conditions,
            "Frozen",
            "False",
            "ClusterGone",
            "the CAPI Cluster is gone",
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
