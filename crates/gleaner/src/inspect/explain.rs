//! `gleaner explain KIND/NAME`: one Harvester object's story. Which Footprint records it (its
//! UID, not a label, is what makes an object a cluster's) and on what evidence, its guest
//! policy, its ledger entries and the Events about it, and what the plan says of it now; or,
//! when no Footprint records it, why it looks the way it does and why gleaner leaves it alone.

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    attribution::{
        Conflict, Evidence, HostKind, HostObjectRecord, NETWORK_FILESYSTEM_NAMESPACE, ObjectClass,
    },
    guest::PolicySeen,
    keys,
    reclaim::{Plan, Verdict},
};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};
use serde::Serialize;

use super::{
    Session,
    plan::{Action, Hold},
};
use crate::{
    Error, Result,
    cli::ExplainArgs,
    footprint::{Footprint, LedgerEntry, Phase},
    management::host_objects::{self, GUEST_CLUSTER_LABEL},
};

/// What `gleaner explain` answers, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainReport {
    pub object: Seen,
    /// Some Footprint records this very object (its UID).
    pub attributed: bool,
    pub recorded_by: Vec<Recording>,
    /// The story in sentences, in the order the table prints them.
    pub story: Vec<String>,
}

/// The object as a live read shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub kind: HostKind,
    pub namespace: String,
    pub name: String,
    /// The cloud credential whose Harvester was read.
    pub harvester: String,
    pub exists: bool,
    pub uid: Option<String>,
    pub deleting: bool,
    /// Its `gleaner.io/*` labels and annotations, and the hints people read it by.
    pub marks: BTreeMap<String, String>,
}

/// One Footprint's record of an object of that name.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub footprint: String,
    /// `namespace/name` in Rancher.
    pub cluster: String,
    pub phase: Option<Phase>,
    /// The recorded UID is the live object's (false: it recorded an earlier object of the name).
    pub same_object: bool,
    pub uid: String,
    pub class: ObjectClass,
    pub evidence: Vec<Said<Evidence>>,
    pub conflicts: Vec<Said<Conflict>>,
    pub guest_policy: Option<PolicySeen>,
    pub ledger: Vec<LedgerEntry>,
    pub events: Vec<EventSeen>,
    pub plan: PlanSays,
}

/// A recorded fact and what it means, in words.
#[derive(Debug, Serialize)]
pub struct Said<T> {
    pub fact: T,
    pub says: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSeen {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub time: Option<String>,
}

/// What the plan of the recording Footprint does with the object now.
#[derive(Debug, Serialize)]
pub struct PlanSays {
    pub action: Action,
    pub reason: Option<&'static str>,
    pub hold: Option<Hold>,
}

/// Tells the story of the object `args` names.
pub async fn report(args: &ExplainArgs) -> Result<ExplainReport> {
    let (kind, name) = parse_object(&args.object)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| match kind {
        HostKind::NetworkFilesystem => NETWORK_FILESYSTEM_NAMESPACE.to_owned(),
        _ => gleaner_core::DEFAULT_VM_NAMESPACE.to_owned(),
    });
    let session = Session::open(&args.inspect, args.policy.policy_max_age).await?;
    let footprints = session.all_footprints().await?;
    let named = |record: &HostObjectRecord| {
        record.kind() == kind && record.namespace == namespace && record.name == name
    };
    let credentials: BTreeSet<String> = match &args.harvester {
        Some(credential) => BTreeSet::from([credential.clone()]),
        None => {
            let recorded: BTreeSet<String> = footprints
                .iter()
                .flat_map(records_of)
                .filter(|record| named(record))
                .map(|record| record.cloud_credential)
                .collect();
            if recorded.is_empty() {
                footprints
                    .iter()
                    .flat_map(|footprint| &footprint.spec.pools)
                    .map(|pool| pool.cloud_credential.clone())
                    .collect()
            } else {
                recorded
            }
        }
    };
    let described = format!("{kind:?} {namespace}/{name}");
    let mut found = Vec::new();
    for credential in &credentials {
        let harvester = session.harvesters.client(credential).await?;
        let object = Api::<DynamicObject>::namespaced_with(
            harvester,
            &namespace,
            &host_objects::resource(kind),
        )
        .get_opt(&name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read {described} on the Harvester of {credential}"),
            source,
        })?;
        found.push((credential.clone(), object));
    }
    // Several credentials may reach one Harvester: the same UID is the same object.
    let mut uids = BTreeSet::new();
    let existing: Vec<&(String, Option<DynamicObject>)> = found
        .iter()
        .filter(|(_, object)| {
            object
                .as_ref()
                .is_some_and(|object| uids.insert(object.uid().unwrap_or_default()))
        })
        .collect();
    let (credential, object) = match (existing.as_slice(), found.as_slice()) {
        ([(credential, object)], _) => (credential.clone(), object.clone()),
        ([], [(credential, None)]) => (credential.clone(), None),
        ([], []) => {
            return Err(Error::Unanswerable(format!(
                "no Footprint in {} names a Harvester: give --harvester NAMESPACE:NAME",
                session.gleaner_namespace
            )));
        }
        ([], _) => {
            return Err(Error::Unanswerable(format!(
                "no {described} on any Harvester the Footprints use ({}): give --harvester \
                 NAMESPACE:NAME to say which one",
                credentials.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        (_, _) => {
            return Err(Error::Unanswerable(format!(
                "{described} exists on several Harvesters ({}): give --harvester NAMESPACE:NAME",
                existing
                    .iter()
                    .map(|(credential, _)| credential.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let seen = seen_of(kind, &namespace, &name, &credential, object.as_ref());
    // A record of this object, through any credential to its Harvester; or of an earlier
    // object of its name there; or, when it is gone, of any object of its name where it was
    // looked for.
    let about_it = |record: &HostObjectRecord| {
        named(record)
            && match &seen.uid {
                Some(uid) => record.uid == *uid || record.cloud_credential == credential,
                None => credentials.contains(&record.cloud_credential),
            }
    };
    let mut recorded_by = Vec::new();
    for footprint in &footprints {
        for record in records_of(footprint).into_iter().filter(about_it) {
            recorded_by.push(recording(&session, footprint, &seen, record).await?);
        }
    }
    let attributed = recorded_by.iter().any(|recording| recording.same_object);
    let story = story(&seen, attributed, &recorded_by);
    Ok(ExplainReport {
        object: seen,
        attributed,
        recorded_by,
        story,
    })
}

/// `KIND/NAME`, with kubectl's short names for the kinds gleaner knows.
fn parse_object(object: &str) -> Result<(HostKind, String)> {
    let (kind, name) = object
        .split_once('/')
        .filter(|(kind, name)| !kind.is_empty() && !name.is_empty())
        .ok_or_else(|| {
            Error::Unanswerable(format!("{object:?} is not KIND/NAME (e.g. pvc/pvc-0b4c…)"))
        })?;
    Ok((kind_of(kind)?, name.to_owned()))
}

/// A kind as kubectl names it, with its short names.
pub(crate) fn kind_of(kind: &str) -> Result<HostKind> {
    Ok(match kind.to_ascii_lowercase().as_str() {
        "pvc" | "pvcs" | "persistentvolumeclaim" | "persistentvolumeclaims" => {
            HostKind::PersistentVolumeClaim
        }
        "vs" | "volumesnapshot" | "volumesnapshots" => HostKind::VolumeSnapshot,
        "nfs" | "networkfilesystem" | "networkfilesystems" => HostKind::NetworkFilesystem,
        "lb" | "loadbalancer" | "loadbalancers" => HostKind::LoadBalancer,
        other => {
            return Err(Error::Unanswerable(format!(
                "gleaner knows PVCs, VolumeSnapshots, NetworkFilesystems and LoadBalancers, \
                 not {other:?} (kinds: pvc, vs, nfs, lb)"
            )));
        }
    })
}

fn records_of(footprint: &Footprint) -> Vec<HostObjectRecord> {
    footprint
        .status
        .as_ref()
        .map(|status| status.records())
        .unwrap_or_default()
}

fn seen_of(
    kind: HostKind,
    namespace: &str,
    name: &str,
    credential: &str,
    object: Option<&DynamicObject>,
) -> Seen {
    let mut marks = BTreeMap::new();
    if let Some(object) = object {
        let read = |pairs: &BTreeMap<String, String>, marks: &mut BTreeMap<String, String>| {
            for (key, value) in pairs {
                if key.starts_with("gleaner.io/") || key == GUEST_CLUSTER_LABEL {
                    marks.insert(key.clone(), value.clone());
                }
            }
        };
        read(object.labels(), &mut marks);
        read(object.annotations(), &mut marks);
    }
    Seen {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        harvester: credential.to_owned(),
        exists: object.is_some(),
        uid: object.and_then(ResourceExt::uid),
        deleting: object.is_some_and(|object| object.metadata.deletion_timestamp.is_some()),
        marks,
    }
}

async fn recording(
    session: &Session,
    footprint: &Footprint,
    seen: &Seen,
    record: HostObjectRecord,
) -> Result<Recording> {
    let identity = &footprint.spec.identity;
    let status = footprint.status.clone().unwrap_or_default();
    let needle = format!("({})", record.uid);
    let ledger = status
        .ledger
        .iter()
        .flat_map(|ledger| &ledger.entries)
        .filter(|entry| entry.object.ends_with(&needle))
        .cloned()
        .collect();
    let events = events_about(session, footprint, &record.uid).await?;
    let decided = session.decide(footprint).await?;
    let plan = match decided.plan {
        Plan::Hold(reason) => PlanSays {
            action: Action::Hold,
            reason: None,
            hold: Some(Hold {
                reason: reason.name(),
                message: reason.to_string(),
            }),
        },
        Plan::Act(steps) => {
            let verdict = steps
                .iter()
                .find(|(step, _)| step.uid == record.uid)
                .map(|(_, verdict)| *verdict);
            let (action, reason) = match verdict {
                Some(Verdict::Delete) => (Action::Delete, None),
                Some(Verdict::Keep(reason)) => (Action::Keep, Some(reason.as_str())),
                Some(Verdict::Gone) | None => (Action::Gone, None),
            };
            PlanSays {
                action,
                reason,
                hold: None,
            }
        }
    };
    Ok(Recording {
        footprint: footprint.name_any(),
        cluster: format!("{}/{}", identity.namespace, identity.name),
        phase: status.phase,
        same_object: seen.uid.as_ref().is_none_or(|uid| *uid == record.uid),
        evidence: record
            .evidence
            .iter()
            .map(|evidence| Said {
                says: evidence_says(evidence),
                fact: evidence.clone(),
            })
            .collect(),
        conflicts: record
            .conflicts
            .iter()
            .map(|conflict| Said {
                says: conflict_says(conflict),
                fact: conflict.clone(),
            })
            .collect(),
        uid: record.uid,
        class: record.class,
        guest_policy: record.guest_policy,
        ledger,
        events,
        plan,
    })
}

/// gleaner's Events about the cluster that name the object's UID.
async fn events_about(
    session: &Session,
    footprint: &Footprint,
    uid: &str,
) -> Result<Vec<EventSeen>> {
    let identity = &footprint.spec.identity;
    let selector = format!("involvedObject.uid={}", identity.provisioning_cluster_uid);
    let events = Api::<Event>::namespaced(session.client.clone(), &identity.namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|source| Error::Kube {
            context: format!(
                "cannot list the Events of cluster {}/{}",
                identity.namespace, identity.name
            ),
            source,
        })?;
    let mut seen: Vec<(Option<String>, EventSeen)> = events
        .items
        .into_iter()
        .filter(|event| {
            event
                .message
                .as_deref()
                .is_some_and(|note| note.contains(uid))
        })
        .map(|event| {
            let time = event
                .event_time
                .map(|time| time.0.to_string())
                .or_else(|| event.last_timestamp.map(|time| time.0.to_string()))
                .or_else(|| event.first_timestamp.map(|time| time.0.to_string()));
            (
                time.clone(),
                EventSeen {
                    type_: event.type_.unwrap_or_default(),
                    reason: event.reason.unwrap_or_default(),
                    note: event.message.unwrap_or_default(),
                    time,
                },
            )
        })
        .collect();
    seen.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(seen.into_iter().map(|(_, event)| event).collect())
}

fn evidence_says(evidence: &Evidence) -> String {
    match evidence {
        Evidence::HotPlugged { vm_uid } => {
            format!("hot-plugged into the cluster's VM {vm_uid}")
        }
        Evidence::VolumeOf { pvc_uid } => {
            format!("the NetworkFilesystem of the attributed PVC {pvc_uid}")
        }
        Evidence::SnapshotOf { pvc_uid } => format!("a snapshot of the attributed PVC {pvc_uid}"),
        Evidence::GuestVolume { pv_uid } => {
            format!("the guest's PV {pv_uid} names it as its volumeHandle")
        }
        Evidence::GuestSnapshot { content_uid } => {
            format!("the guest's VolumeSnapshotContent {content_uid} names it as its handle")
        }
        Evidence::GuestService { service_uid } => {
            format!("made for the guest's LoadBalancer Service {service_uid}")
        }
        Evidence::Adopted { by } => format!("adopted as an orphan by {by}"),
    }
}

fn conflict_says(conflict: &Conflict) -> String {
    match conflict {
        Conflict::OtherFootprint { footprint } => {
            format!("Footprint {footprint} has evidence for it too")
        }
        Conflict::LabelledForOtherFootprint { footprint } => {
            format!("it is labelled for Footprint {footprint}")
        }
        Conflict::AnnotatedForOtherCluster { identity } => {
            format!("it is annotated for cluster {identity}")
        }
    }
}

/// The story in sentences.
fn story(seen: &Seen, attributed: bool, recorded_by: &[Recording]) -> Vec<String> {
    let mut lines = Vec::new();
    let what = format!("{:?} {}/{}", seen.kind, seen.namespace, seen.name);
    lines.push(match (&seen.uid, seen.deleting) {
        (Some(uid), false) => format!("{what} (uid {uid}) exists on the Harvester of {}.", seen.harvester),
        (Some(uid), true) => format!(
            "{what} (uid {uid}) is being deleted on the Harvester of {}: its finalizers decide when it goes.",
            seen.harvester
        ),
        (None, _) => format!("No {what} exists on the Harvester of {}.", seen.harvester),
    });
    for recording in recorded_by {
        if !recording.same_object {
            lines.push(format!(
                "Footprint {} (cluster {}) recorded an earlier object of this name (uid {}), not \
                 this one: a record is by UID, so nothing it says applies here.",
                recording.footprint, recording.cluster, recording.uid
            ));
            continue;
        }
        let phase = recording
            .phase
            .map_or_else(|| "no phase yet".to_owned(), |phase| format!("{phase:?}"));
        lines.push(format!(
            "Footprint {} (cluster {}, {phase}) records it as {:?}, on this evidence: {}.",
            recording.footprint,
            recording.cluster,
            recording.class,
            recording
                .evidence
                .iter()
                .map(|said| said.says.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
        if !recording.conflicts.is_empty() {
            lines.push(format!(
                "It is tied to another cluster too ({}): neither Footprint may delete it.",
                recording
                    .conflicts
                    .iter()
                    .map(|said| said.says.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if let Some(policy) = &recording.guest_policy {
            lines.push(format!(
                "Its guest policy was last seen {:?} at {}.",
                policy.policy, policy.seen_at
            ));
        } else if matches!(
            recording.class,
            ObjectClass::Volume | ObjectClass::RwxVolume | ObjectClass::Snapshot
        ) {
            lines.push("Its guest policy was never seen.".to_owned());
        }
        for entry in &recording.ledger {
            lines.push(format!(
                "Ledger, {}: {:?} ({}).",
                entry.time.0, entry.action, entry.reason
            ));
        }
        for event in &recording.events {
            lines.push(format!(
                "Event {} {}{}: {}",
                event.type_,
                event.reason,
                event
                    .time
                    .as_ref()
                    .map(|time| format!(" at {time}"))
                    .unwrap_or_default(),
                event.note
            ));
        }
        lines.push(match (&recording.plan.hold, recording.plan.action) {
            (Some(hold), _) => format!(
                "The plan now: nothing of the cluster is deleted: {}.",
                hold.message
            ),
            (None, Action::Delete) => "The plan now: delete it.".to_owned(),
            (None, Action::Keep) => format!(
                "The plan now: keep it ({}).",
                recording.plan.reason.unwrap_or("kept")
            ),
            (None, Action::Gone | Action::Hold) => {
                "The plan now: nothing to do, it is gone.".to_owned()
            }
        });
    }
    if !attributed && seen.exists {
        lines.push(format!(
            "No Footprint records uid {}: gleaner never deletes it (only an object whose UID a \
             Footprint records can be deleted).",
            seen.uid.as_deref().unwrap_or_default()
        ));
        if let Some(footprint) = seen.marks.get(keys::FOOTPRINT_LABEL) {
            lines.push(format!(
                "It is labelled {}={footprint}, yet that Footprint does not record its UID: \
                 Harvester's clones and restores copy labels, so a label proves nothing.",
                keys::FOOTPRINT_LABEL
            ));
        }
        if let Some(cluster) = seen.marks.get(GUEST_CLUSTER_LABEL) {
            lines.push(format!(
                "Harvester's CSI driver labelled it for guest cluster {cluster:?}: a hint, never \
                 evidence."
            ));
        }
        if looks_like_a_guest_volume(seen) {
            lines.push(
                "Its name is shaped like a volume Harvester's CSI driver makes for a guest: it may \
                 have been left by a cluster deleted before gleaner was installed, or belong to a \
                 cluster gleaner does not watch."
                    .to_owned(),
            );
        }
    }
    lines
}

/// `pvc-<uuid>`, the name the CSI driver gives the host PVC of a guest PV.
fn looks_like_a_guest_volume(seen: &Seen) -> bool {
    seen.kind == HostKind::PersistentVolumeClaim
        && seen.name.strip_prefix("pvc-").is_some_and(|uuid| {
            uuid.len() == 36
                && uuid
                    .chars()
                    .all(|char| char.is_ascii_hexdigit() || char == '-')
        })
}

/// The story for people: the object, then each sentence.
pub fn table(report: &ExplainReport) -> String {
    let mut out = String::new();
    for line in &report.story {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_as_kubectl_names_them() {
        assert_eq!(
            parse_object("pvc/pvc-1").unwrap(),
            (HostKind::PersistentVolumeClaim, "pvc-1".into())
        );
        assert_eq!(
            parse_object("LoadBalancer/web").unwrap().0,
            HostKind::LoadBalancer
        );
        assert_eq!(parse_object("vs/s").unwrap().0, HostKind::VolumeSnapshot);
        assert_eq!(
            parse_object("nfs/n").unwrap().0,
            HostKind::NetworkFilesystem
        );
        for bad in ["pvc", "pvc/", "/x", "pod/x"] {
            let error = parse_object(bad).unwrap_err().to_string();
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(
            parse_object("pod/x")
                .unwrap_err()
                .to_string()
                .contains("not \"pod\"")
        );
    }

    fn seen(name: &str, marks: &[(&str, &str)]) -> Seen {
        Seen {
            kind: HostKind::PersistentVolumeClaim,
            namespace: "default".into(),
            name: name.into(),
            harvester: "cattle-global-data:hv".into(),
            exists: true,
            uid: Some("u-1".into()),
            deleting: false,
            marks: marks
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn an_object_no_footprint_records_is_left_alone_and_a_copied_label_is_called_out() {
        let lines = story(
            &seen(
                "pvc-0b4c2a1e-9f7d-4c3e-8a51-2f6d7e9b0c13",
                &[(keys::FOOTPRINT_LABEL, "f-1")],
            ),
            false,
            &[],
        );
        let text = lines.join("\n");
        assert!(text.contains("gleaner never deletes it"), "{text}");
        assert!(text.contains("a label proves nothing"), "{text}");
        assert!(text.contains("shaped like a volume"), "{text}");
        let plain = story(&seen("data", &[]), false, &[]).join("\n");
        assert!(!plain.contains("shaped like"), "{plain}");
    }
}
