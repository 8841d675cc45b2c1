//! gleaner's pre-terminate hook on CAPI Machines backed by a HarvesterMachine, and what it does
//! when such a Machine is deleting (design.md §5): observe why it goes (a live read of both
//! Cluster objects, the Footprint and the HarvesterMachine from the caches), let the core
//! decide, then act: write the intent and `removeAllPersistentVolumeClaims: "false"` on the VM
//! and let the Machine go, or wait, saying why.

use std::{sync::Arc, time::Duration};

use crate::events::EventReason;
use gleaner_core::{
    AddHook, AfterFailedWrite, ClusterIdentity, ConditionType, DeletingMachine, FootprintState,
    HookDecision, Intent, InventoryState, MachineFacts, OptOut, Reason, WaitReason, WriteFailure,
    add_hook, after_failed_write, deleting_machine_hook, keys, machine_reason, opt_out, paused_by,
};
use k8s_openapi::{
    api::core::v1::{Namespace, ObjectReference},
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
    footprint::Footprint,
    management::{
        Context,
        capi::Capi,
        footprints,
        harvesters::{VmLookup, failure_of, virtual_machine},
        observe::{Clusters, provisioning_cluster},
        status,
    },
    metrics::WriteKind,
};

/// How soon a waiting hook (paused cluster, Harvester failing, Footprint missing) is looked at
/// again.
const WAIT: Duration = Duration::from_secs(5);
/// How soon a hook waiting for the final inventory is looked at again: the inventory is quick
/// when the guest answers, and the Machine's deletion waits on it.
const INVENTORY_WAIT: Duration = Duration::from_secs(1);

pub async fn reconcile(machine: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action> {
    // A standby decides nothing: winning the Lease brings every Machine back here.
    if !context.may_write() {
        return Ok(Action::await_change());
    }
    let hooked = machine.annotations().contains_key(keys::HOOK_ANNOTATION);
    let deleting = machine.metadata.deletion_timestamp.is_some();
    if deleting && hooked {
        return on_deletion(&machine, &context).await;
    }
    let facts = MachineFacts {
        infrastructure: Capi::infrastructure_of(&machine),
        deleting,
    };
    if !hooked && add_hook(&facts) == AddHook::Add {
        add_the_hook(&machine, &context).await?;
    }
    Ok(Action::await_change())
}

/// Adds the hook, guarded by the resourceVersion read, so a Machine that started deleting in
/// between is never hooked (safety rule 6).
async fn add_the_hook(machine: &DynamicObject, context: &Context) -> Result<()> {
    let patch = json!({"metadata": {
        "annotations": {keys::HOOK_ANNOTATION: keys::HOOK_VALUE},
        "resourceVersion": machine.metadata.resource_version,
    }});
    patch_machine(machine, context, &patch, "add the hook to").await?;
    tracing::info!(machine = %machine.name_any(), "hook added");
    Ok(())
}

async fn remove_hook(machine: &DynamicObject, context: &Context) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {keys::HOOK_ANNOTATION: null}}});
    patch_machine(machine, context, &patch, "remove the hook from").await?;
    tracing::info!(machine = %machine.name_any(), "hook removed");
    Ok(())
}

async fn patch_machine(
    machine: &DynamicObject,
    context: &Context,
    patch: &serde_json::Value,
    what: &str,
) -> Result<()> {
    let namespace = machine.namespace().unwrap_or_default();
    let result = context
        .capi
        .machines(&context.client, Some(&namespace))
        .patch(
            &machine.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Kube {
            context: format!("cannot {what} Machine {namespace}/{}", machine.name_any()),
            source,
        });
    context.wrote(WriteKind::MachineHook, &result);
    result
}

/// Where a Machine's VM is, and which one it is.
struct VmTarget {
    credential: String,
    namespace: String,
    name: String,
    /// Its UID as the Footprint or the Harvester watch know it: the write's precondition.
    uid: Option<String>,
}

impl std::fmt::Display for VmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything the decision about a deleting Machine rests on.
struct Observed {
    facts: DeletingMachine,
    explanation: String,
    footprint: Option<Arc<Footprint>>,
    /// The name of the Footprint the intent names: the recorded one, or the one the cluster
    /// would get.
    footprint_name: String,
    vm: Option<VmTarget>,
    /// What Events are about: the provisioning Cluster, else the Machine.
    about: ObjectReference,
}

async fn on_deletion(machine: &DynamicObject, context: &Context) -> Result<Action> {
    let observed = observe(machine, context).await?;
    if let OptOut::Malformed { object, value } = &observed.facts.opt_out {
        let note = format!(
            "{} on the {object:?} Cluster is {value:?}, not a boolean: it is ignored",
            keys::SKIP_CLEANUP_ANNOTATION
        );
        context
            .event(&observed.about, EventReason::MalformedOptOut, note)
            .await;
    }
    let decision = deleting_machine_hook(&observed.facts);
    act(machine, &observed, decision, context).await
}

/// A live read of both Cluster objects (why the Machine goes is decided live), the Footprint
/// and the HarvesterMachine from the caches.
async fn observe(machine: &DynamicObject, context: &Context) -> Result<Observed> {
    let namespace = machine.namespace().unwrap_or_default();
    let cluster_name = machine.data["spec"]["clusterName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let live = Clusters::live(&context.client, &context.capi, &namespace, &cluster_name).await?;
    let machine_name = machine.name_any();
    let footprint = find_footprint(context, &namespace, &cluster_name, &live, &machine_name);
    let live_capi_uid = live.capi.as_ref().and_then(|cluster| cluster.uid());
    let identity = match &footprint {
        Some(footprint) => {
            let mut identity = footprint.spec.identity.clone();
            identity.capi_cluster_uid = identity.capi_cluster_uid.or(live_capi_uid);
            identity.capi_cluster_uid.get_or_insert_default();
            ClusterIdentity::try_from(&identity)?
        }
        // Without a record, the live objects stand in for it: enough to tell a scale-down,
        // never enough to reclaim anything.
        None => ClusterIdentity {
            install_uuid: live.install_uuid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: cluster_name.clone(),
            provisioning_uid: live.provisioning_uid().unwrap_or_default(),
            capi_uid: live_capi_uid.unwrap_or_default(),
        },
    };
    let mut observation = live.observation();
    if footprint.is_none() {
        // Without a record there is no installation to compare with: whether both Cluster
        // objects live still tells a scale-down, and anything else waits for the Footprint.
        observation.install_uuid = Some(identity.install_uuid.clone());
    }
    let decided = machine_reason(&identity, &observation);
    let own = live.recorded(&identity.provisioning_uid, &identity.capi_uid);
    let (provisioning_skip, capi_skip) = own.skip_cleanup();
    let about = live
        .provisioning
        .as_ref()
        .map(|cluster| cluster.object_ref(&provisioning_cluster()))
        .unwrap_or_else(|| machine.object_ref(&context.capi.machine()));
    let deleting_for = machine
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|since| Timestamp::now().duration_since(since.0).try_into().ok())
        .unwrap_or_default();
    let facts = DeletingMachine {
        reason: decided.reason,
        opt_out: opt_out(provisioning_skip, capi_skip),
        paused_by: paused_by(&own.pause(Some(machine))),
        footprint: match &footprint {
            Some(footprint) => FootprintState::Recorded(footprints::harvester_record(footprint)),
            None => FootprintState::Missing {
                waited: deleting_for,
            },
        },
        hook_timeout: context.hook_timeout,
        footprint_wait: context.footprint_wait,
        inventory: match &footprint {
            Some(footprint) if !inventoried(footprint) => InventoryState::Pending {
                waited: deleting_for,
            },
            _ => InventoryState::Taken,
        },
        inventory_wait: context.inventory_timeout + context.runtime.api_timeout,
    };
    Ok(Observed {
        facts,
        explanation: decided.explanation.to_string(),
        vm: vm_target(machine, footprint.as_deref(), context),
        footprint_name: footprint
            .as_ref()
            .map_or(identity.provisioning_uid.clone(), |footprint| {
                footprint.name_any()
            }),
        footprint,
        about,
    })
}

/// Whether the final inventory of the cluster's guest ran (completed or not).
fn inventoried(footprint: &Footprint) -> bool {
    footprint.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|condition| condition.type_ == ConditionType::Inventoried.to_string())
    })
}

/// The cluster's Footprint from the cache: the one of its provisioning Cluster's UID, else (both
/// Cluster objects gone) the one of that namespace and name that recorded this Machine's VM.
fn find_footprint(
    context: &Context,
    namespace: &str,
    cluster: &str,
    live: &Clusters,
    machine: &str,
) -> Option<Arc<Footprint>> {
    if let Some(uid) = live.provisioning_uid() {
        return context.caches.footprint(&context.namespace, &uid);
    }
    context
        .caches
        .footprints
        .state()
        .into_iter()
        .find(|footprint| {
            let identity = &footprint.spec.identity;
            identity.namespace == namespace
                && identity.name == cluster
                && footprint
                    .status
                    .as_ref()
                    .is_some_and(|status| status.vms.iter().any(|vm| vm.machine == machine))
        })
}

/// Where the Machine's VM is: from its HarvesterMachine, else from the Footprint's record of it;
/// with its UID as the Footprint recorded it, else as the Harvester watch shows it.
fn vm_target(
    machine: &DynamicObject,
    footprint: Option<&Footprint>,
    context: &Context,
) -> Option<VmTarget> {
    let namespace = machine.namespace().unwrap_or_default();
    let infrastructure = machine.data["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let recorded = footprint
        .and_then(|footprint| footprint.status.as_ref())
        .map(|status| status.vms.as_slice())
        .unwrap_or_default();
    let (credential, namespace, name) = match context
        .caches
        .harvester_machines
        .get(&namespace, infrastructure)
    {
        Some(harvester_machine) => {
            let (credential, vm) = footprints::vm_target(&harvester_machine);
            (credential, vm.namespace, vm.name)
        }
        None => {
            let vm = recorded
                .iter()
                .find(|vm| vm.machine == machine.name_any())?;
            (
                vm.cloud_credential.clone(),
                vm.namespace.clone(),
                vm.name.clone(),
            )
        }
    };
    let uid = recorded
        .iter()
        .find(|vm| {
            vm.cloud_credential == credential && vm.namespace == namespace && vm.name == name
        })
        .and_then(|vm| vm.uid.clone())
        .or_else(
            || match context.harvesters.vm(&credential, &namespace, &name) {
                VmLookup::Present(vm) => vm.uid(),
                VmLookup::Absent | VmLookup::Unknown => None,
            },
        );
    Some(VmTarget {
        credential,
        namespace,
        name,
        uid,
    })
}

async fn act(
    machine: &DynamicObject,
    observed: &Observed,
    decision: HookDecision,
    context: &Context,
) -> Result<Action> {
    let machine_name = machine.name_any();
    let about = &observed.about;
    match decision {
        HookDecision::Wait(WaitReason::FootprintMissing { waited }) => {
            let note = format!(
                "Machine {machine_name} is deleting and gleaner has no Footprint for its cluster \
                 (see the FootprintNotWritten Events): its hook waits, {}s so far, at most {}s, \
                 then gleaner writes the protective intent Unknown and lets it go",
                waited.as_secs(),
                context.footprint_wait.as_secs()
            );
            context
                .event(about, EventReason::FootprintMissing, note)
                .await;
            Ok(Action::requeue(WAIT))
        }
        HookDecision::Wait(WaitReason::InventoryPending { waited }) => {
            tracing::info!(
                machine = %machine_name,
                waited = waited.as_secs(),
                "hook waits for the final inventory of the guest"
            );
            Ok(Action::requeue(INVENTORY_WAIT))
        }
        HookDecision::Wait(why) => {
            tracing::debug!(machine = %machine_name, ?why, "hook waits");
            Ok(Action::requeue(WAIT))
        }
        HookDecision::RemoveHookOptedOut { object } => {
            remove_hook(machine, context).await?;
            let note = format!(
                "the {object:?} Cluster opts out: hook removed from Machine {machine_name}, nothing written"
            );
            context.event(about, EventReason::OptedOut, note).await;
            Ok(Action::await_change())
        }
        HookDecision::RemoveHookThenWriteIntent { reason } => {
            context.decided(reason);
            let note = format!(
                "Machine {machine_name} goes for {reason}: {}",
                observed.explanation
            );
            context.event(about, reason.into(), note).await;
            remove_hook(machine, context).await?;
            if let Err((failure, error)) = write_intent(observed, reason, context).await {
                let note = format!(
                    "the intent for Machine {machine_name} was not written (best effort, {failure:?}): {error}"
                );
                context
                    .event(about, EventReason::IntentNotWritten, note)
                    .await;
            }
            Ok(Action::await_change())
        }
        HookDecision::WriteIntentThenRemoveHook { reason } => {
            match write_intent(observed, reason, context).await {
                Ok(()) => {
                    context.decided(reason);
                    let note = match &observed.footprint {
                        Some(_) => format!(
                            "Machine {machine_name} goes for {reason}: {}; intent written on its VM",
                            observed.explanation
                        ),
                        None => format!(
                            "Machine {machine_name} goes: gleaner has no Footprint for its cluster \
                             after {}s, so it wrote the protective intent {reason} on its VM",
                            context.footprint_wait.as_secs()
                        ),
                    };
                    context.event(about, reason.into(), note).await;
                    remove_hook(machine, context).await?;
                    Ok(Action::await_change())
                }
                Err((failure, error)) => {
                    let after = after_failed_write(&observed.facts, failure);
                    failed_write(machine, observed, after, &error, context).await
                }
            }
        }
    }
}

/// After the intent of a [`HookDecision::WriteIntentThenRemoveHook`] failed.
async fn failed_write(
    machine: &DynamicObject,
    observed: &Observed,
    after: AfterFailedWrite,
    error: &Error,
    context: &Context,
) -> Result<Action> {
    let machine_name = machine.name_any();
    let about = &observed.about;
    let vm = observed
        .vm
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
    match after {
        AfterFailedWrite::Wait {
            failure,
            failing_for,
        } => {
            let (reason, what) = match failure {
                WriteFailure::Misconfigured => (
                    EventReason::HarvesterMisconfigured,
                    "for its Harvester to accept the credential",
                ),
                WriteFailure::Unreachable | WriteFailure::VmNotFound => {
                    (EventReason::HarvesterUnreachable, "for Harvester")
                }
            };
            let limit = context.hook_timeout.map_or_else(
                || "no hook timeout".to_owned(),
                |timeout| format!("hook timeout {}s", timeout.as_secs()),
            );
            let note = format!(
                "the hook on Machine {machine_name} has waited {}s {what} ({limit}): {error}",
                failing_for.as_secs()
            );
            context.event(about, reason, note).await;
            Ok(Action::requeue(WAIT))
        }
        AfterFailedWrite::RemoveHookNothingToProtect => {
            let note = format!(
                "the VM {vm} of Machine {machine_name} is not on Harvester ({error}): nothing to \
                 protect, hook removed"
            );
            // The Footprint records it first: it is what outlives the cluster's objects.
            status::vm_not_found(context, &observed.footprint_name, &machine_name, &vm, &note)
                .await?;
            remove_hook(machine, context).await?;
            context.event(about, EventReason::VmNotFound, note).await;
            Ok(Action::await_change())
        }
        AfterFailedWrite::RemoveHookFootprintMissing => {
            remove_hook(machine, context).await?;
            let note = format!(
                "Machine {machine_name} goes without gleaner's intent: no Footprint after {}s, and \
                 the intent could not be written on VM {vm}: {error}",
                context.footprint_wait.as_secs()
            );
            context
                .event(about, EventReason::FootprintMissing, note)
                .await;
            Ok(Action::await_change())
        }
        AfterFailedWrite::RemoveHookLapsed { failing_for } => {
            let note = format!(
                "Harvester failing for {}s ({error}): the hook timeout removed the hook from \
                 Machine {machine_name}; protection lapsed",
                failing_for.as_secs()
            );
            status::protection_lapsed(context, &observed.footprint_name, &machine_name, &vm, &note)
                .await?;
            remove_hook(machine, context).await?;
            context
                .event(about, EventReason::ProtectionLapsed, note)
                .await;
            Ok(Action::await_change())
        }
    }
}

/// The intent and removeAll "false" on the Machine's VM, through the pool's own credential
/// (Rancher copies it into the HarvesterMachine), with the VM's UID as a precondition when it is
/// known, so a re-created namesake never gets another cluster's intent. In a dry run, nothing is
/// written. A failure comes with what it means.
async fn write_intent(
    observed: &Observed,
    reason: Reason,
    context: &Context,
) -> std::result::Result<(), (WriteFailure, Error)> {
    let Some(vm) = &observed.vm else {
        return Err((
            WriteFailure::VmNotFound,
            Error::Unsupported(
                "neither its HarvesterMachine nor its Footprint says where its VM is".into(),
            ),
        ));
    };
    let intent = Intent {
        footprint: observed.footprint_name.clone(),
        reason,
        decided_at: Timestamp::now(),
    };
    if context.dry_run {
        tracing::info!(%vm, %reason, "dry run: would write the intent on the VM");
        if observed.footprint.is_some() {
            let what = format!(
                "would write intent {reason} and {}: \"{}\" on VM {vm}",
                keys::REMOVE_ALL_ANNOTATION,
                keys::REMOVE_ALL_VALUE
            );
            status::would(context, &observed.footprint_name, vec![what])
                .await
                .map_err(|error| (WriteFailure::Unreachable, error))?;
        }
        return Ok(());
    }
    let result = patch_vm(vm, &intent, observed.footprint.as_deref(), context).await;
    context.wrote(WriteKind::VmIntent, &result);
    let failure = result
        .as_ref()
        .err()
        .map(|error| (failure_of(error), error.to_string()));
    context.harvesters.wrote(&vm.credential, failure.clone());
    result.map_err(|error| (failure_of(&error), error))?;
    tracing::info!(%vm, %reason, "intent written");
    Ok(())
}

/// A live read, just before a write, of which Harvester `credential` reaches: it must be one
/// the Footprint recorded for its pools (the HarvesterMachine may name an older credential than
/// the pools do). A Footprint that recorded none yet says nothing.
async fn verify_harvester(
    harvester: &kube::Client,
    credential: &str,
    footprint: &Footprint,
) -> Result<()> {
    let recorded: Vec<&str> = footprint
        .status
        .iter()
        .flat_map(|status| &status.harvesters)
        .map(|known| known.kube_system_uid.as_str())
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let observed = Api::<Namespace>::all(harvester.clone())
        .get("kube-system")
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read which Harvester cloud credential {credential} reaches"),
            source,
        })?
        .metadata
        .uid
        .unwrap_or_default();
    if recorded.contains(&observed.as_str()) {
        Ok(())
    } else {
        Err(Error::HarvesterChanged {
            credential: credential.to_owned(),
            recorded: recorded.join(", "),
            observed,
        })
    }
}

async fn patch_vm(
    vm: &VmTarget,
    intent: &Intent,
    footprint: Option<&Footprint>,
    context: &Context,
) -> Result<()> {
    let harvester = context.harvesters.client(&vm.credential).await?;
    if let Some(footprint) = footprint {
        verify_harvester(&harvester, &vm.credential, footprint).await?;
    }
    let mut metadata = json!({"annotations": intent.to_annotations()});
    if let Some(uid) = &vm.uid {
        metadata["uid"] = json!(uid);
    }
    Api::<DynamicObject>::namespaced_with(harvester, &vm.namespace, &virtual_machine())
        .patch(
            &vm.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": metadata})),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Kube {
            context: format!("cannot write the intent on VM {vm}"),
            source,
        })
}
