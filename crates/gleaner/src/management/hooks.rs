//! gleaner's pre-terminate hook on CAPI Machines backed by a HarvesterMachine, and what it does
//! when such a Machine is deleting: decide why (a live read), write the intent and
//! `removeAllPersistentVolumeClaims: "false"` on the VM, and let the Machine go (design.md §5).

use std::{sync::Arc, time::Duration};

use gleaner_core::{
    AddHook, ClusterIdentity, DeletingMachine, HookDecision, InfrastructureRef, Intent,
    MachineFacts, OptOut, PauseFacts, Reachability, Reason, add_hook, deleting_machine_hook, keys,
    machine_reason, opt_out, paused_by, vm_of,
};
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Error, Result,
    footprint::Footprint,
    management::{
        Context,
        capi::Capi,
        footprints,
        harvesters::virtual_machine,
        observe::{self, harvester_machine},
    },
};

/// How soon a waiting hook (paused cluster, Harvester unreachable) is looked at again.
const WAIT: Duration = Duration::from_secs(5);
/// How soon a standby replica looks again at what it may not write yet.
const STANDBY: Duration = Duration::from_secs(2);

fn annotation<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object.annotations().get(key).map(String::as_str)
}

pub async fn reconcile(machine: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    let hooked = annotation(&machine, keys::HOOK_ANNOTATION).is_some();
    let deleting = machine.metadata.deletion_timestamp.is_some();
    if deleting && hooked {
        return on_deletion(&machine, &context).await;
    }
    let (kind, group) = Capi::infrastructure_of(&machine);
    let facts = MachineFacts {
        infrastructure: InfrastructureRef {
            group: group.unwrap_or_default().to_owned(),
            kind: kind.unwrap_or_default().to_owned(),
        },
        deleting,
    };
    if !hooked && add_hook(&facts) == AddHook::Add {
        return add_the_hook(&machine, &context).await;
    }
    Ok(Action::await_change())
}

/// Adds the hook, guarded by the resourceVersion read, so a Machine that started deleting in
/// between is never hooked (safety rule 6).
async fn add_the_hook(machine: &DynamicObject, context: &Context) -> Result<Action> {
    if !context.may_write() {
        return Ok(Action::requeue(STANDBY));
    }
    let patch = json!({"metadata": {
        "annotations": {keys::HOOK_ANNOTATION: keys::HOOK_VALUE},
        "resourceVersion": machine.metadata.resource_version,
    }});
    patch_machine(machine, context, &patch, "add the hook to").await?;
    tracing::info!(machine = %machine.name_any(), "hook added");
    Ok(Action::await_change())
}

async fn remove_hook(machine: &DynamicObject, context: &Context) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {keys::HOOK_ANNOTATION: null}}});
    patch_machine(machine, context, &patch, "remove the hook from").await
}

async fn patch_machine(
    machine: &DynamicObject,
    context: &Context,
    patch: &serde_json::Value,
    what: &str,
) -> Result<()> {
    let namespace = machine.namespace().unwrap_or_default();
    context
        .capi
        .machines(&context.client, Some(&namespace))
        .patch(
            &machine.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot {what} Machine {namespace}/{}", machine.name_any()),
            source,
        })?;
    Ok(())
}

async fn on_deletion(machine: &DynamicObject, context: &Context) -> Result<Action> {
    if !context.may_write() {
        return Ok(Action::requeue(STANDBY));
    }
    let namespace = machine.namespace().unwrap_or_default();
    let cluster_name = machine.data["spec"]["clusterName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let capi_cluster = context
        .capi
        .clusters(&context.client, &namespace)
        .get_opt(&cluster_name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read CAPI Cluster {namespace}/{cluster_name}"),
            source,
        })?;
    let provisioning = Api::<DynamicObject>::namespaced_with(
        context.client.clone(),
        &namespace,
        &observe::provisioning_cluster(),
    )
    .get_opt(&cluster_name)
    .await
    .map_err(|source| Error::Kube {
        context: format!("cannot read provisioning Cluster {namespace}/{cluster_name}"),
        source,
    })?;
    let about = provisioning
        .as_ref()
        .map(|cluster| cluster.object_ref(&observe::provisioning_cluster()))
        .unwrap_or_else(|| machine.object_ref(&context.capi.machine()));
    let opt_out = opt_out(
        provisioning
            .as_ref()
            .and_then(|cluster| annotation(cluster, keys::SKIP_CLEANUP_ANNOTATION)),
        capi_cluster
            .as_ref()
            .and_then(|cluster| annotation(cluster, keys::SKIP_CLEANUP_ANNOTATION)),
    );
    if let OptOut::Malformed { object, value } = &opt_out {
        let note = format!(
            "{} on the {object:?} Cluster is {value:?}, not a boolean: it is ignored",
            keys::SKIP_CLEANUP_ANNOTATION
        );
        context.warn(&about, "MalformedOptOut", note).await;
    }
    let (footprint, reason, explanation) =
        decide(capi_cluster.as_ref(), &namespace, &cluster_name, context).await?;
    if footprint.is_none() && provisioning.is_some() {
        // The Footprint tracker has not recorded this cluster yet (gleaner just started):
        // wait for it rather than decide without the recorded identity.
        return Ok(Action::requeue(STANDBY));
    }
    let facts = DeletingMachine {
        reason,
        opt_out,
        paused_by: paused_by(&pause_facts(machine, capi_cluster.as_ref())),
        // Reachability is learnt by trying: every attempt writes, and only a failed write asks
        // the core again, with how long Harvester has been unreachable.
        harvester: Reachability::Reachable,
        hook_timeout: context.hook_timeout,
    };
    // The Footprint's condition makes the unreachable time outlive a restart of gleaner.
    let recorded_unreachable_for = footprint.as_ref().and_then(unreachable_for);
    let intent = Intent {
        footprint: footprint
            .as_ref()
            .map(ResourceExt::name_any)
            .unwrap_or_default(),
        reason,
        decided_at: Timestamp::now(),
    };
    let machine_name = machine.name_any();
    match deleting_machine_hook(&facts) {
        HookDecision::Wait(why) => {
            tracing::debug!(machine = %machine_name, ?why, "hook waits");
            Ok(Action::requeue(WAIT))
        }
        HookDecision::RemoveHookOptedOut { object } => {
            remove_hook(machine, context).await?;
            let note = format!(
                "the {object:?} Cluster opts out: hook removed from Machine {machine_name}, nothing written"
            );
            context.event(&about, "OptedOut", note).await;
            Ok(Action::await_change())
        }
        HookDecision::RemoveHookThenWriteIntent { reason } => {
            context.decided(reason);
            let note = format!("Machine {machine_name} goes for {reason}: {explanation}");
            context.event(&about, reason.as_str(), note).await;
            remove_hook(machine, context).await?;
            if let Err(error) = write_intent(machine, &intent, context).await {
                let note = format!(
                    "the intent for Machine {machine_name} was not written (best effort): {error}"
                );
                context.warn(&about, "IntentNotWritten", note).await;
            }
            Ok(Action::await_change())
        }
        HookDecision::WriteIntentThenRemoveHook => {
            if let Err(error) = write_intent(machine, &intent, context).await {
                context.mark_unreachable(machine);
                let harvester = match context.reachability(machine) {
                    Reachability::Unreachable { unreachable_for } => Reachability::Unreachable {
                        unreachable_for: unreachable_for
                            .max(recorded_unreachable_for.unwrap_or_default()),
                    },
                    Reachability::Reachable => Reachability::Reachable,
                };
                let retry = DeletingMachine { harvester, ..facts };
                return lapse_or_wait(machine, &about, &retry, &error, &intent.footprint, context)
                    .await;
            }
            context.mark_reachable(machine);
            context.decided(Reason::ClusterDeletion);
            let note = format!(
                "Machine {machine_name} goes for ClusterDeletion: {explanation}; intent written on its VM"
            );
            context.event(&about, "ClusterDeletion", note).await;
            remove_hook(machine, context).await?;
            Ok(Action::await_change())
        }
        // Only a failed write asks with Harvester unreachable (see `lapse_or_wait`).
        HookDecision::RemoveHookLapsed { .. } => Ok(Action::requeue(WAIT)),
    }
}

/// After a failed write for a cluster deletion: the hook waits (a Warning Event and the held
/// hooks metric say so), unless the hook timeout has passed, which removes it anyway.
async fn lapse_or_wait(
    machine: &DynamicObject,
    about: &ObjectReference,
    facts: &DeletingMachine,
    error: &Error,
    footprint: &str,
    context: &Context,
) -> Result<Action> {
    let machine_name = machine.name_any();
    if let HookDecision::RemoveHookLapsed { unreachable_for } = deleting_machine_hook(facts) {
        let note = format!(
            "Harvester unreachable for {}s ({error}): the hook timeout removed the hook from Machine {machine_name}; protection lapsed",
            unreachable_for.as_secs()
        );
        // The Footprint records it first: it is what outlives the cluster's objects.
        footprints::protection_lapsed(context, footprint, &note).await?;
        remove_hook(machine, context).await?;
        context.mark_reachable(machine);
        context.warn(about, "ProtectionLapsed", note).await;
        return Ok(Action::await_change());
    }
    let waited = match facts.harvester {
        Reachability::Unreachable { unreachable_for } => unreachable_for.as_secs(),
        Reachability::Reachable => 0,
    };
    let note =
        format!("the hook on Machine {machine_name} has waited {waited}s for Harvester: {error}");
    context.warn(about, "HarvesterUnreachable", note).await;
    Ok(Action::requeue(WAIT))
}

/// How long the Footprint has said its Harvester is unreachable, if it says so.
fn unreachable_for(footprint: &Footprint) -> Option<Duration> {
    let condition = footprint
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| {
            condition.type_ == "HarvesterUnreachable" && condition.status == "True"
        })?;
    Timestamp::now()
        .duration_since(condition.last_transition_time.0)
        .try_into()
        .ok()
}

fn pause_facts(machine: &DynamicObject, cluster: Option<&DynamicObject>) -> PauseFacts {
    PauseFacts {
        cluster_spec_paused: cluster
            .is_some_and(|cluster| cluster.data["spec"]["paused"] == serde_json::Value::Bool(true)),
        cluster_annotated: cluster
            .is_some_and(|cluster| annotation(cluster, keys::PAUSED_ANNOTATION).is_some()),
        machine_annotated: annotation(machine, keys::PAUSED_ANNOTATION).is_some(),
    }
}

/// The recorded identity (from the Footprint the CAPI Cluster's owner names) and a live read,
/// handed to the core.
async fn decide(
    capi_cluster: Option<&DynamicObject>,
    namespace: &str,
    cluster_name: &str,
    context: &Context,
) -> Result<(Option<Footprint>, Reason, String)> {
    let provisioning_uid = capi_cluster.and_then(|cluster| {
        cluster
            .owner_references()
            .iter()
            .find(|owner| {
                owner.kind == "Cluster" && owner.api_version.starts_with("provisioning.cattle.io/")
            })
            .map(|owner| owner.uid.clone())
    });
    let footprint = match &provisioning_uid {
        Some(uid) => context
            .footprints()
            .get_opt(uid)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read Footprint {uid}"),
                source,
            })?,
        None => None,
    };
    let Some(footprint) = footprint else {
        return Ok((
            None,
            Reason::Unknown,
            "gleaner has no Footprint for this cluster".into(),
        ));
    };
    let identity = &footprint.spec.identity;
    let recorded = ClusterIdentity {
        install_uuid: identity.install_uuid.clone(),
        namespace: identity.namespace.clone(),
        name: identity.name.clone(),
        provisioning_uid: identity.provisioning_cluster_uid.clone(),
        capi_uid: identity
            .capi_cluster_uid
            .clone()
            .or_else(|| capi_cluster.and_then(|cluster| cluster.metadata.uid.clone()))
            .unwrap_or_default(),
    };
    let live = observe::live(&context.client, &context.capi, namespace, cluster_name).await?;
    let decision = machine_reason(&recorded, &live);
    Ok((
        Some(footprint),
        decision.reason,
        decision.explanation.to_string(),
    ))
}

/// The intent and removeAll "false" on the Machine's VM, through the pool's own credential
/// (Rancher copies it into the HarvesterMachine). In a dry run, nothing is written.
async fn write_intent(machine: &DynamicObject, intent: &Intent, context: &Context) -> Result<()> {
    let namespace = machine.namespace().unwrap_or_default();
    let infrastructure = machine.data["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let harvester_machine = Api::<DynamicObject>::namespaced_with(
        context.client.clone(),
        &namespace,
        &harvester_machine(),
    )
    .get(infrastructure)
    .await
    .map_err(|source| Error::Kube {
        context: format!("cannot read HarvesterMachine {namespace}/{infrastructure}"),
        source,
    })?;
    let spec = &harvester_machine.data["spec"];
    let vm = vm_of(infrastructure, spec["vmNamespace"].as_str());
    let (vm_namespace, vm) = (vm.namespace, vm.name);
    if context.dry_run {
        tracing::info!(%vm_namespace, %vm, reason = intent.reason.as_str(), "dry run: would write the intent on the VM");
        if !intent.footprint.is_empty() {
            let what = format!(
                "would write intent {} and {}: \"{}\" on VM {vm_namespace}/{vm}",
                intent.reason.as_str(),
                keys::REMOVE_ALL_ANNOTATION,
                keys::REMOVE_ALL_VALUE
            );
            footprints::would(context, &intent.footprint, what).await?;
        }
        return Ok(());
    }
    let credential = spec["common"]["cloudCredentialSecretName"]
        .as_str()
        .unwrap_or_default();
    let harvester = context.harvesters.client(credential).await?;
    let patch = json!({"metadata": {"annotations": intent.to_annotations()}});
    Api::<DynamicObject>::namespaced_with(harvester, &vm_namespace, &virtual_machine())
        .patch(&vm, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot write the intent on VM {vm_namespace}/{vm}"),
            source,
        })?;
    tracing::info!(%vm_namespace, %vm, reason = intent.reason.as_str(), "intent written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        footprint::{FootprintSpec, FootprintStatus},
        management::footprints::set_condition,
    };

    #[test]
    fn the_footprint_says_how_long_its_harvester_has_been_unreachable() {
        let mut footprint = Footprint::new("uid", FootprintSpec::default());
        assert_eq!(unreachable_for(&footprint), None);
        let mut status = FootprintStatus::default();
        set_condition(
            &mut status.conditions,
            "HarvesterUnreachable",
            "True",
            "WatchFailing",
            "down",
        );
        status.conditions[0].last_transition_time =
            Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(90));
        footprint.status = Some(status.clone());
        let waited = unreachable_for(&footprint).unwrap();
        assert!(waited >= Duration::from_secs(90), "{waited:?}");
        status.conditions[0].status = "False".into();
        footprint.status = Some(status);
        assert_eq!(unreachable_for(&footprint), None);
    }
}
