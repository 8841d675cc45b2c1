//! The Footprint's status, shared by server-side apply: each writer (the Footprint controller,
//! the hooks) has its own field manager and applies every field it owns. The lists are maps
//! (conditions by type, VMs by Harvester, namespace and name, objects by Harvester and
//! namespace, then UID), so each writer's entries are its own.

use gleaner_core::{ConditionState, ConditionType, conditions};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    Error, Result,
    footprint::{Footprint, FootprintStatus, ReleaseReason, ReleasedMachine},
    management::Context,
    metrics::WriteKind,
};

pub(crate) const STATUS_MANAGER: &str = "gleaner/footprint-status";
const HOOKS_MANAGER: &str = "gleaner/hooks";
/// How many dry-run entries a Footprint keeps.
const WOULD_KEPT: usize = 100;
/// How many released Machines a Footprint keeps, most recent first.
const RELEASED_KEPT: usize = 100;
/// How often a status write is tried again when another write came in between.
const CONFLICT_RETRIES: usize = 5;

/// Sets `ProtectionLapsed` and records the Machine that went without its intent.
pub async fn protection_lapsed(
    context: &Context,
    footprint: &str,
    machine: &str,
    vm: &str,
    note: &str,
) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        set_condition(
            &mut status.conditions,
            conditions::protection_lapsed(note.to_owned()),
        );
        record_release(status, machine, vm, ReleaseReason::HookTimeout, note);
    })
    .await
}

/// Records a Machine whose VM was not on Harvester: its hook went with nothing to protect.
pub async fn vm_not_found(
    context: &Context,
    footprint: &str,
    machine: &str,
    vm: &str,
    note: &str,
) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        record_release(status, machine, vm, ReleaseReason::VmNotFound, note);
    })
    .await
}

fn record_release(
    status: &mut FootprintStatus,
    machine: &str,
    vm: &str,
    reason: ReleaseReason,
    note: &str,
) {
    status
        .released
        .retain(|released| released.machine != machine);
    status.released.insert(
        0,
        ReleasedMachine {
            machine: machine.to_owned(),
            vm: vm.to_owned(),
            reason,
            message: note.to_owned(),
            time: Time(Timestamp::now()),
        },
    );
    status.released.truncate(RELEASED_KEPT);
}

/// Records, most recent first, what a dry run would have done.
pub async fn would(context: &Context, footprint: &str, whats: Vec<String>) -> Result<()> {
    update_hooks_status(context, footprint, |status| {
        status.would.retain(|entry| !whats.contains(entry));
        status.would.splice(0..0, whats.iter().cloned());
        status.would.truncate(WOULD_KEPT);
    })
    .await
}

/// Reads the Footprint live, changes what the hooks own of its status and applies it, guarded
/// by the resourceVersion read, again if another write came in between.
async fn update_hooks_status(
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
        let version = footprint.resource_version();
        if apply_status(
            context,
            &footprint,
            version.as_deref(),
            StatusWriter::Hooks,
            &status,
        )
        .await?
        .is_some()
        {
            return Ok(());
        }
    }
    Err(Error::Conflict(format!("Footprint {name}")))
}

/// The writers of a Footprint's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWriter {
    /// The Footprint controller.
    Footprints,
    /// The hook controller.
    Hooks,
}

impl StatusWriter {
    fn manager(self) -> &'static str {
        match self {
            Self::Footprints => STATUS_MANAGER,
            Self::Hooks => HOOKS_MANAGER,
        }
    }

    fn owns(self, condition: &Condition) -> bool {
        let hooks = condition.type_ == ConditionType::ProtectionLapsed.to_string();
        hooks == (self == Self::Hooks)
    }
}

/// What `writer` owns of `status`, as it applies it.
pub fn owned(writer: StatusWriter, status: &FootprintStatus) -> serde_json::Value {
    let conditions: Vec<&Condition> = status
        .conditions
        .iter()
        .filter(|condition| writer.owns(condition))
        .collect();
    match writer {
        StatusWriter::Footprints => json!({
            "phase": status.phase,
            "conditions": conditions,
            "vms": status.vms,
            "objects": status.objects,
            "counts": status.counts,
            "harvesters": status.harvesters,
            "lookalikes": status.lookalikes,
            "unmatchedGuestVolumes": status.unmatched_guest_volumes,
            "ledger": status.ledger,
            "graceStartedAt": status.grace_started_at,
        }),
        StatusWriter::Hooks => json!({
            "conditions": conditions,
            "released": status.released,
            "would": status.would,
        }),
    }
}

/// Applies what `writer` owns of `status`, only over `version`, the resourceVersion its
/// content was decided from: a writer working from a stale cache must never put back what a
/// later write changed (the ledger, the phase). The resourceVersion written, or `None` on a
/// conflict.
pub async fn apply_status(
    context: &Context,
    footprint: &Footprint,
    version: Option<&str>,
    writer: StatusWriter,
    status: &FootprintStatus,
) -> Result<Option<String>> {
    let metadata = json!({"name": footprint.name_any(), "resourceVersion": version});
    let body = json!({
        "apiVersion": Footprint::api_version(&()),
        "kind": Footprint::kind(&()),
        "metadata": metadata,
        "status": owned(writer, status),
    });
    let result = context
        .footprints()
        .patch_status(
            &footprint.name_any(),
            &PatchParams::apply(writer.manager()).force(),
            &Patch::Apply(&body),
        )
        .await;
    let outcome = match result {
        Ok(written) => Ok(Some(written.resource_version().unwrap_or_default())),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(source) => Err(Error::Kube {
            context: format!(
                "cannot write the status of Footprint {}",
                footprint.name_any()
            ),
            source,
        }),
    };
    let label = match &outcome {
        Ok(Some(_)) => "ok",
        Ok(None) => "conflict",
        Err(error) => error.metric_label(),
    };
    context.metrics().wrote(WriteKind::FootprintStatus, label);
    outcome
}

pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == type_.to_string() && condition.status == "True")
}

/// Sets a condition as the core decided it, keeping its transition time when its status does
/// not change.
pub fn set_condition(conditions: &mut Vec<Condition>, decided: ConditionState) {
    let status = if decided.status { "True" } else { "False" };
    let type_ = decided.type_.to_string();
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
            condition.reason = decided.reason.to_string();
            condition.message = decided.message;
        }
        None => conditions.push(Condition {
            type_,
            status: status.to_owned(),
            reason: decided.reason.to_string(),
            message: decided.message,
            last_transition_time: now,
            observed_generation: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gleaner_core::{ConditionReason, VmRecord};

    use super::*;
    use crate::footprint::Phase;

    fn state(type_: ConditionType, status: bool) -> ConditionState {
        ConditionState::new(type_, status, ConditionReason::WatchFailing, "down".into())
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, state(ConditionType::Frozen, true));
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(2));
        set_condition(&mut conditions, state(ConditionType::Frozen, true));
        assert_eq!(conditions[0].last_transition_time, first);
        set_condition(&mut conditions, state(ConditionType::Frozen, false));
        assert_ne!(conditions[0].last_transition_time, first);
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn each_writer_applies_only_what_it_owns() {
        let mut status = FootprintStatus {
            phase: Some(Phase::Tracking),
            would: vec!["would write".into()],
            vms: vec![VmRecord::default()],
            ..FootprintStatus::default()
        };
        set_condition(&mut status.conditions, state(ConditionType::Frozen, false));
        set_condition(
            &mut status.conditions,
            state(ConditionType::ProtectionLapsed, true),
        );
        let footprints = owned(StatusWriter::Footprints, &status);
        assert_eq!(footprints["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(footprints["conditions"][0]["type"], "Frozen");
        assert!(footprints.get("would").is_none());
        let hooks = owned(StatusWriter::Hooks, &status);
        assert_eq!(hooks["conditions"][0]["type"], "ProtectionLapsed");
        assert_eq!(hooks["would"][0], "would write");
        assert!(hooks.get("vms").is_none() && hooks.get("phase").is_none());
    }
}
