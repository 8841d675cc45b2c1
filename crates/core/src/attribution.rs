//! Which host objects belong to a guest cluster (design.md §2 and §5, "Evidence that attributes
//! a host object…"): recorded by UID, each with the evidence that ties it to the cluster.
//! Evidence accumulates and is never overwritten: a volume once seen hot-plugged stays
//! attributed after it is detached. Labels never attribute; they can only veto. Evidence tying
//! one object to two Footprints is a conflict on both, and a conflict is never deletable.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use jiff::Timestamp;

use crate::{
    guest::{GuestFacts, GuestPolicy, PolicySeen, policy_seen},
    keys,
};

/// The namespace of Harvester's NetworkFilesystems.
pub const NETWORK_FILESYSTEM_NAMESPACE: &str = "harvester-system";

/// The kind of a host object.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum HostKind {
    /// A host PVC.
    PersistentVolumeClaim,
    /// A `harvesterhci.io` NetworkFilesystem.
    NetworkFilesystem,
    /// A `snapshot.storage.k8s.io` VolumeSnapshot.
    VolumeSnapshot,
    /// A `loadbalancer.harvesterhci.io` LoadBalancer.
    LoadBalancer,
}

/// What a host object is to its guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ObjectClass {
    /// A host PVC behind a guest RWO volume (`volumeMode: Block`).
    Volume,
    /// A host PVC behind a guest RWX volume (`volumeMode: Filesystem`, served over NFS).
    RwxVolume,
    /// The NetworkFilesystem of a guest RWX volume.
    NetworkFilesystem,
    /// A host VolumeSnapshot made for a guest snapshot.
    Snapshot,
    /// A LoadBalancer made for a guest LoadBalancer Service.
    LoadBalancer,
}

/// One piece of evidence that ties a host object to the cluster. Written `<Kind>:<uid>` (e.g.
/// `HotPlugged:<vm uid>`): a Footprint holds thousands of them and must stay small.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Evidence {
    /// The PVC was hot-plugged into a VM whose UID the Footprint records.
    HotPlugged {
        /// The VM's UID.
        vm_uid: String,
    },
    /// The NetworkFilesystem is named by an attributed PVC's `spec.volumeName`.
    VolumeOf {
        /// The PVC's UID.
        pvc_uid: String,
    },
    /// The VolumeSnapshot's source is an attributed PVC.
    SnapshotOf {
        /// The PVC's UID.
        pvc_uid: String,
    },
    /// A guest PV of the cluster (driver `driver.harvesterhci.io`) names the PVC as its
    /// `volumeHandle`.
    GuestVolume {
        /// The guest PV's UID.
        pv_uid: String,
    },
    /// A guest VolumeSnapshotContent of the cluster names the VolumeSnapshot as its handle.
    GuestSnapshot {
        /// The guest VolumeSnapshotContent's UID.
        content_uid: String,
    },
    /// The LoadBalancer's `cloudprovider.harvesterhci.io/service-uuid` is the UID of a
    /// LoadBalancer Service seen in the cluster.
    GuestService {
        /// The guest Service's UID.
        service_uid: String,
    },
    /// An operator adopted it (`gleaner adopt --confirm`) while `gleaner audit` found it an
    /// orphan: the one way an object is attributed without evidence from a cluster.
    Adopted {
        /// Who adopted it.
        by: String,
    },
}

impl From<Evidence> for String {
    fn from(evidence: Evidence) -> Self {
        match evidence {
            Evidence::HotPlugged { vm_uid } => format!("HotPlugged:{vm_uid}"),
            Evidence::VolumeOf { pvc_uid } => format!("VolumeOf:{pvc_uid}"),
            Evidence::SnapshotOf { pvc_uid } => format!("SnapshotOf:{pvc_uid}"),
            Evidence::GuestVolume { pv_uid } => format!("GuestVolume:{pv_uid}"),
            Evidence::GuestSnapshot { content_uid } => format!("GuestSnapshot:{content_uid}"),
            Evidence::GuestService { service_uid } => format!("GuestService:{service_uid}"),
            Evidence::Adopted { by } => format!("Adopted:{by}"),
        }
    }
}

/// A written piece of evidence or conflict gleaner cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not <Kind>:<value> of a kind gleaner knows")]
pub struct EvidenceError(pub String);

impl TryFrom<String> for Evidence {
    type Error = EvidenceError;

    fn try_from(written: String) -> Result<Self, Self::Error> {
        let (kind, uid) = kind_and_value(&written)?;
        match kind {
            "HotPlugged" => Ok(Self::HotPlugged { vm_uid: uid }),
            "VolumeOf" => Ok(Self::VolumeOf { pvc_uid: uid }),
            "SnapshotOf" => Ok(Self::SnapshotOf { pvc_uid: uid }),
            "GuestVolume" => Ok(Self::GuestVolume { pv_uid: uid }),
            "GuestSnapshot" => Ok(Self::GuestSnapshot { content_uid: uid }),
            "GuestService" => Ok(Self::GuestService { service_uid: uid }),
            "Adopted" => Ok(Self::Adopted { by: uid }),
            _ => Err(EvidenceError(written)),
        }
    }
}

/// `<Kind>:<value>` split, the value never empty.
fn kind_and_value(written: &str) -> Result<(&str, String), EvidenceError> {
    written
        .split_once(':')
        .filter(|(_, value)| !value.is_empty())
        .map(|(kind, value)| (kind, value.to_owned()))
        .ok_or_else(|| EvidenceError(written.to_owned()))
}

/// The schema of a type written as a string.
macro_rules! written_as_string {
    ($type:ty, $name:literal) => {
        impl JsonSchema for $type {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                String::json_schema(generator)
            }
        }
    };
}
written_as_string!(Evidence, "Evidence");
written_as_string!(Conflict, "Conflict");

/// Why an attributed object must never be deleted whatever else holds. Written
/// `<Kind>:<value>`, like [`Evidence`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Conflict {
    /// Another Footprint records it with evidence of its own.
    OtherFootprint {
        /// The other Footprint's name.
        footprint: String,
    },
    /// It carries `gleaner.io/footprint` naming another Footprint.
    LabelledForOtherFootprint {
        /// The other Footprint's name.
        footprint: String,
    },
    /// It carries `gleaner.io/cluster` naming another cluster identity (another installation).
    AnnotatedForOtherCluster {
        /// The annotation's identity part.
        identity: String,
    },
}

impl From<Conflict> for String {
    fn from(conflict: Conflict) -> Self {
        match conflict {
            Conflict::OtherFootprint { footprint } => format!("OtherFootprint:{footprint}"),
            Conflict::LabelledForOtherFootprint { footprint } => {
                format!("LabelledForOtherFootprint:{footprint}")
            }
            Conflict::AnnotatedForOtherCluster { identity } => {
                format!("AnnotatedForOtherCluster:{identity}")
            }
        }
    }
}

impl TryFrom<String> for Conflict {
    type Error = EvidenceError;

    fn try_from(written: String) -> Result<Self, Self::Error> {
        let (kind, value) = kind_and_value(&written)?;
        match kind {
            "OtherFootprint" => Ok(Self::OtherFootprint { footprint: value }),
            "LabelledForOtherFootprint" => Ok(Self::LabelledForOtherFootprint { footprint: value }),
            "AnnotatedForOtherCluster" => Ok(Self::AnnotatedForOtherCluster { identity: value }),
            _ => Err(EvidenceError(written)),
        }
    }
}

/// A host object attributed to the cluster, as its Footprint records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostObjectRecord {
    /// `namespace:name` of the cloud credential that reaches its Harvester.
    pub cloud_credential: String,
    /// Its namespace on Harvester.
    pub namespace: String,
    /// Its name on Harvester.
    pub name: String,
    /// The UID of the live object it came from: what makes it this cluster's.
    pub uid: String,
    /// What it is to the guest cluster.
    pub class: ObjectClass,
    /// Every piece of evidence seen, accumulated.
    pub evidence: Vec<Evidence>,
    /// The CSI driver's `guestcluster.harvesterhci.io/name` label, a hint and never enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cluster_hint: Option<String>,
    /// Set when evidence or a label ties it to another cluster too: never deletable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// A volume's guest reclaim policy, a snapshot's guest deletion policy, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<PolicySeen>,
}

impl ObjectClass {
    /// The kind of the objects of this class.
    pub fn kind(self) -> HostKind {
        match self {
            Self::Volume | Self::RwxVolume => HostKind::PersistentVolumeClaim,
            Self::NetworkFilesystem => HostKind::NetworkFilesystem,
            Self::Snapshot => HostKind::VolumeSnapshot,
            Self::LoadBalancer => HostKind::LoadBalancer,
        }
    }
}

impl HostObjectRecord {
    /// Its kind, which its class implies.
    pub fn kind(&self) -> HostKind {
        self.class.kind()
    }

    /// Whether the attribution alone allows a deletion (the reclaimer's other rules still apply).
    pub fn deletable(&self) -> bool {
        self.conflicts.is_empty() && !self.evidence.is_empty()
    }
}

/// A VM of the cluster's Harvesters as observed: which claims it hot-plugs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVm {
    /// `namespace:name` of the cloud credential that reaches its Harvester.
    pub cloud_credential: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID.
    pub uid: String,
    /// The claim names of its `hotpluggable` PVC volumes.
    pub hotplugged: Vec<String>,
}

/// A host object as observed on a Harvester: its metadata and the few fields attribution needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedObject {
    /// `namespace:name` of the cloud credential that reaches its Harvester.
    pub cloud_credential: String,
    /// Its kind; `None` reads as a PVC.
    pub kind: Option<HostKind>,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// A PVC's `spec.volumeName`.
    pub volume_name: Option<String>,
    /// A PVC's `spec.volumeMode` is `Block`.
    pub block: bool,
    /// A VolumeSnapshot's `spec.source.persistentVolumeClaimName`.
    pub snapshot_source: Option<String>,
    /// A LoadBalancer's `cloudprovider.harvesterhci.io/service-uuid`.
    pub service_uuid: Option<String>,
    /// `gleaner.io/footprint`.
    pub footprint_label: Option<String>,
    /// `gleaner.io/cluster`.
    pub cluster_annotation: Option<String>,
    /// `guestcluster.harvesterhci.io/name`.
    pub guest_cluster_label: Option<String>,
}

impl ObservedObject {
    fn kind(&self) -> HostKind {
        self.kind.unwrap_or(HostKind::PersistentVolumeClaim)
    }

    fn class(&self) -> ObjectClass {
        match self.kind() {
            HostKind::PersistentVolumeClaim if self.block => ObjectClass::Volume,
            HostKind::PersistentVolumeClaim => ObjectClass::RwxVolume,
            HostKind::NetworkFilesystem => ObjectClass::NetworkFilesystem,
            HostKind::VolumeSnapshot => ObjectClass::Snapshot,
            HostKind::LoadBalancer => ObjectClass::LoadBalancer,
        }
    }
}

/// What another Footprint says: its name, the VMs it records and the objects it attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherFootprint {
    /// Its name.
    pub name: String,
    /// The UIDs of the VMs it records.
    pub vm_uids: BTreeSet<String>,
    /// The UIDs of the objects it attributed.
    pub object_uids: BTreeSet<String>,
}

/// The Footprint being attributed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisFootprint<'a> {
    /// Its name.
    pub name: &'a str,
    /// `<install uuid>/<namespace>/<name>`.
    pub identity: &'a str,
    /// The UIDs of the VMs it records.
    pub vm_uids: &'a BTreeSet<String>,
    /// What it attributed so far.
    pub records: &'a [HostObjectRecord],
}

/// What attribution reads: the Harvesters' VMs and objects, and the guest cluster.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Every VM of the cluster's Harvesters.
    pub vms: &'a [ObservedVm],
    /// The host objects of the pools' namespaces; `None` while a Harvester is not synced.
    pub objects: Option<&'a [ObservedObject]>,
    /// What the guest cluster showed last; `None` while it was never observed.
    pub guest: Option<&'a GuestFacts>,
    /// Now, to stamp the guest policies seen.
    pub now: Timestamp,
}

/// A guest PV whose `volumeHandle` names no single host PVC of the pools' namespaces: reported,
/// never guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedGuestVolume {
    /// The guest PV's name.
    pub pv: String,
    /// The host PVC it names.
    pub volume_handle: String,
    /// How many host PVCs of that name the pools' namespaces hold (0, or more than one).
    pub found: usize,
}

/// What attribution found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attribution {
    /// Every attributed object, by UID, sorted by kind, namespace and name.
    pub records: Vec<HostObjectRecord>,
    /// Objects that carry this Footprint's label or identity but no evidence (restored or
    /// cloned copies): never attributed, reported.
    pub lookalikes: Vec<ObservedObject>,
    /// Guest PVs whose host PVC is not found (empty while the guest or a Harvester is unknown).
    pub unmatched: Vec<UnmatchedGuestVolume>,
}

/// The value of [`keys::CLUSTER_ANNOTATION`] gleaner writes on an attributed object:
/// `<install uuid>/<namespace>/<name>@<object uid>`.
pub fn cluster_annotation(identity: &str, uid: &str) -> String {
    format!("{identity}@{uid}")
}

/// Attributes the observed host objects to `this` Footprint. While a Harvester is not synced
/// the records stay as they are. A record stays while its object (by UID) exists; it gains
/// evidence, never loses any; a record whose object is gone goes. Without the guest's facts a
/// record keeps the guest policy it had.
pub fn attribute(
    this: &ThisFootprint<'_>,
    others: &[OtherFootprint],
    observed: &Observation<'_>,
) -> Attribution {
    let vms = observed.vms;
    let Some(objects) = observed.objects else {
        return Attribution {
            records: this.records.to_vec(),
            ..Attribution::default()
        };
    };
    let by_uid: BTreeMap<&str, &ObservedObject> = objects
        .iter()
        .map(|object| (object.uid.as_str(), object))
        .collect();
    let mut evidence: BTreeMap<String, BTreeSet<Evidence>> = this
        .records
        .iter()
        .filter(|record| by_uid.contains_key(record.uid.as_str()))
        .map(|record| {
            (
                record.uid.clone(),
                record.evidence.iter().cloned().collect(),
            )
        })
        .collect();
    let find = |credential: &str, kind: HostKind, namespace: &str, name: &str| {
        objects.iter().find(|object| {
            object.cloud_credential == credential
                && object.kind() == kind
                && object.namespace == namespace
                && object.name == name
        })
    };
    let guest = observed
        .guest
        .map(|facts| guest_evidence(facts, objects, &mut evidence))
        .unwrap_or_default();
    for vm in vms.iter().filter(|vm| this.vm_uids.contains(&vm.uid)) {
        for claim in &vm.hotplugged {
            if let Some(pvc) = find(
                &vm.cloud_credential,
                HostKind::PersistentVolumeClaim,
                &vm.namespace,
                claim,
            ) {
                evidence
                    .entry(pvc.uid.clone())
                    .or_default()
                    .insert(Evidence::HotPlugged {
                        vm_uid: vm.uid.clone(),
                    });
            }
        }
    }
    let pvcs: Vec<&ObservedObject> = evidence
        .keys()
        .filter_map(|uid| by_uid.get(uid.as_str()).copied())
        .filter(|object| object.kind() == HostKind::PersistentVolumeClaim)
        .collect();
    for pvc in pvcs {
        if let Some(volume) = &pvc.volume_name
            && let Some(filesystem) = find(
                &pvc.cloud_credential,
                HostKind::NetworkFilesystem,
                NETWORK_FILESYSTEM_NAMESPACE,
                volume,
            )
        {
            evidence
                .entry(filesystem.uid.clone())
                .or_default()
                .insert(Evidence::VolumeOf {
                    pvc_uid: pvc.uid.clone(),
                });
        }
        for snapshot in objects.iter().filter(|object| {
            object.kind() == HostKind::VolumeSnapshot
                && object.cloud_credential == pvc.cloud_credential
                && object.namespace == pvc.namespace
                && object.snapshot_source.as_deref() == Some(pvc.name.as_str())
        }) {
            evidence
                .entry(snapshot.uid.clone())
                .or_default()
                .insert(Evidence::SnapshotOf {
                    pvc_uid: pvc.uid.clone(),
                });
        }
    }
    let recorded_policy = |uid: &str| {
        this.records
            .iter()
            .find(|record| record.uid == uid)
            .and_then(|record| record.guest_policy)
    };
    let mut records: Vec<HostObjectRecord> = evidence
        .into_iter()
        .filter(|(_, evidence)| !evidence.is_empty())
        .filter_map(|(uid, evidence)| {
            let object = by_uid.get(uid.as_str())?;
            let class = match object.class() {
                ObjectClass::Volume if guest.read_write_many.contains(&uid) => {
                    ObjectClass::RwxVolume
                }
                class => class,
            };
            let guest_policy = policy_seen(
                recorded_policy(&uid),
                guest.policies.get(&uid).copied(),
                observed.now,
            );
            Some(HostObjectRecord {
                cloud_credential: object.cloud_credential.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                class,
                evidence: evidence.into_iter().collect(),
                guest_cluster_hint: object.guest_cluster_label.clone(),
                conflicts: conflicts(this, others, vms, object),
                guest_policy,
                uid,
            })
        })
        .collect();
    records.sort_by(|a, b| {
        (a.kind(), &a.namespace, &a.name, &a.uid).cmp(&(b.kind(), &b.namespace, &b.name, &b.uid))
    });
    let attributed: BTreeSet<&str> = records.iter().map(|record| record.uid.as_str()).collect();
    let lookalikes = objects
        .iter()
        .filter(|object| !attributed.contains(object.uid.as_str()))
        .filter(|object| {
            object.footprint_label.as_deref() == Some(this.name)
                || object
                    .cluster_annotation
                    .as_deref()
                    .is_some_and(|annotation| identity_of(annotation) == this.identity)
        })
        .cloned()
        .collect();
    Attribution {
        records,
        lookalikes,
        unmatched: guest.unmatched,
    }
}

/// What the guest's facts add: their evidence (into `evidence`), the policies they show by host
/// object UID, which volumes the guest mounts ReadWriteMany, and its unmatched PVs.
#[derive(Debug, Default)]
struct GuestFindings {
    policies: BTreeMap<String, GuestPolicy>,
    read_write_many: BTreeSet<String>,
    unmatched: Vec<UnmatchedGuestVolume>,
}

fn guest_evidence(
    facts: &GuestFacts,
    objects: &[ObservedObject],
    evidence: &mut BTreeMap<String, BTreeSet<Evidence>>,
) -> GuestFindings {
    let mut found = GuestFindings::default();
    let of_kind = |kind: HostKind| objects.iter().filter(move |object| object.kind() == kind);
    for volume in facts.driver_volumes() {
        let claims: Vec<&ObservedObject> = of_kind(HostKind::PersistentVolumeClaim)
            .filter(|claim| claim.name == volume.volume_handle)
            .collect();
        let [claim] = claims.as_slice() else {
            found.unmatched.push(UnmatchedGuestVolume {
                pv: volume.name.clone(),
                volume_handle: volume.volume_handle.clone(),
                found: claims.len(),
            });
            continue;
        };
        evidence
            .entry(claim.uid.clone())
            .or_default()
            .insert(Evidence::GuestVolume {
                pv_uid: volume.uid.clone(),
            });
        if let Some(policy) = volume.reclaim {
            found.policies.insert(claim.uid.clone(), policy);
        }
        if volume.read_write_many {
            found.read_write_many.insert(claim.uid.clone());
        }
    }
    for content in facts.driver_contents() {
        let Some((namespace, name)) = content.host_snapshot() else {
            continue;
        };
        let snapshots: Vec<&ObservedObject> = of_kind(HostKind::VolumeSnapshot)
            .filter(|snapshot| {
                snapshot.name == name && namespace.is_none_or(|ns| snapshot.namespace == ns)
            })
            .collect();
        // A handle that names no single snapshot proves nothing.
        let [snapshot] = snapshots.as_slice() else {
            continue;
        };
        evidence
            .entry(snapshot.uid.clone())
            .or_default()
            .insert(Evidence::GuestSnapshot {
                content_uid: content.uid.clone(),
            });
        if let Some(policy) = content.deletion {
            found.policies.insert(snapshot.uid.clone(), policy);
        }
    }
    for balancer in of_kind(HostKind::LoadBalancer) {
        if let Some(service) = balancer
            .service_uuid
            .as_ref()
            .filter(|uid| facts.load_balancer_services.contains(*uid))
        {
            evidence
                .entry(balancer.uid.clone())
                .or_default()
                .insert(Evidence::GuestService {
                    service_uid: service.clone(),
                });
        }
    }
    found
}

/// The identity part of a `gleaner.io/cluster` annotation.
fn identity_of(annotation: &str) -> &str {
    annotation
        .rsplit_once('@')
        .map_or(annotation, |(identity, _uid)| identity)
}

fn conflicts(
    this: &ThisFootprint<'_>,
    others: &[OtherFootprint],
    vms: &[ObservedVm],
    object: &ObservedObject,
) -> Vec<Conflict> {
    let mut found = Vec::new();
    for other in others.iter().filter(|other| other.name != this.name) {
        let hot_plugged_there = object.kind() == HostKind::PersistentVolumeClaim
            && vms.iter().any(|vm| {
                other.vm_uids.contains(&vm.uid)
                    && vm.cloud_credential == object.cloud_credential
                    && vm.namespace == object.namespace
                    && vm.hotplugged.contains(&object.name)
            });
        if hot_plugged_there || other.object_uids.contains(&object.uid) {
            found.push(Conflict::OtherFootprint {
                footprint: other.name.clone(),
            });
        }
    }
    if let Some(label) = &object.footprint_label
        && label != this.name
    {
        found.push(Conflict::LabelledForOtherFootprint {
            footprint: label.clone(),
        });
    }
    if let Some(annotation) = &object.cluster_annotation {
        let (identity, uid) = annotation.rsplit_once('@').unwrap_or((annotation, ""));
        // A copy (a restore or a clone) carries the original's annotation with another UID: it
        // speaks for the original, not for this object.
        if uid == object.uid && identity != this.identity {
            found.push(Conflict::AnnotatedForOtherCluster {
                identity: identity.to_owned(),
            });
        }
    }
    found
}

/// The label and annotation gleaner writes on an attributed object, unless another Footprint's
/// label is there (never written over) or they are there already.
pub fn marks_to_write(
    this: &ThisFootprint<'_>,
    record: &HostObjectRecord,
    object: &ObservedObject,
) -> Option<BTreeMap<&'static str, String>> {
    if !record.conflicts.is_empty() || record.uid != object.uid {
        return None;
    }
    let annotation = cluster_annotation(this.identity, &record.uid);
    let labelled = object.footprint_label.as_deref() == Some(this.name);
    let annotated = object.cluster_annotation.as_deref() == Some(annotation.as_str());
    if labelled && annotated {
        return None;
    }
    Some(BTreeMap::from([
        (keys::FOOTPRINT_LABEL, this.name.to_owned()),
        (keys::CLUSTER_ANNOTATION, annotation),
    ]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::guest::{GUEST_DRIVER, GuestSnapshotContent, GuestVolume};

    const CREDENTIAL: &str = "cattle-global-data:hv";
    const IDENTITY: &str = "install/fleet-default/c1";

    fn pvc(name: &str, uid: &str) -> ObservedObject {
        ObservedObject {
            cloud_credential: CREDENTIAL.into(),
            kind: Some(HostKind::PersistentVolumeClaim),
            namespace: "vms".into(),
            name: name.into(),
            uid: uid.into(),
            block: true,
            ..ObservedObject::default()
        }
    }

    fn vm(uid: &str, hotplugged: &[&str]) -> ObservedVm {
        ObservedVm {
            cloud_credential: CREDENTIAL.into(),
            namespace: "vms".into(),
            uid: uid.into(),
            hotplugged: hotplugged.iter().map(|claim| (*claim).to_owned()).collect(),
        }
    }

    fn this<'a>(
        vm_uids: &'a BTreeSet<String>,
        records: &'a [HostObjectRecord],
    ) -> ThisFootprint<'a> {
        ThisFootprint {
            name: "fp1",
            identity: IDENTITY,
            vm_uids,
            records,
        }
    }

    /// Attribution from the Harvesters alone, the guest never observed.
    fn harvester_only(
        this: &ThisFootprint<'_>,
        others: &[OtherFootprint],
        vms: &[ObservedVm],
        objects: Option<&[ObservedObject]>,
    ) -> Attribution {
        attribute(
            this,
            others,
            &Observation {
                vms,
                objects,
                guest: None,
                now: Timestamp::UNIX_EPOCH,
            },
        )
    }

    fn uids(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_volume_hot_plugged_into_a_recorded_vm_is_attributed_with_its_nfs_and_snapshot() {
        let vms = uids(&["vm-1"]);
        let rwx = ObservedObject {
            block: false,
            volume_name: Some("pv-rwx".into()),
            ..pvc("pvc-rwx", "u-rwx")
        };
        let filesystem = ObservedObject {
            kind: Some(HostKind::NetworkFilesystem),
            namespace: NETWORK_FILESYSTEM_NAMESPACE.into(),
            name: "pv-rwx".into(),
            uid: "u-nfs".into(),
            cloud_credential: CREDENTIAL.into(),
            ..ObservedObject::default()
        };
        let snapshot = ObservedObject {
            kind: Some(HostKind::VolumeSnapshot),
            name: "snap".into(),
            uid: "u-snap".into(),
            snapshot_source: Some("pvc-a".into()),
            ..pvc("", "")
        };
        let objects = [
            pvc("pvc-a", "u-a"),
            rwx,
            filesystem,
            snapshot,
            pvc("pvc-other", "u-o"),
        ];
        let found = harvester_only(
            &this(&vms, &[]),
            &[],
            &[vm("vm-1", &["pvc-a", "pvc-rwx"])],
            Some(&objects),
        );
        let classes: Vec<(&str, ObjectClass)> = found
            .records
            .iter()
            .map(|record| (record.uid.as_str(), record.class))
            .collect();
        assert_eq!(
            classes,
            [
                ("u-a", ObjectClass::Volume),
                ("u-rwx", ObjectClass::RwxVolume),
                ("u-nfs", ObjectClass::NetworkFilesystem),
                ("u-snap", ObjectClass::Snapshot),
            ]
        );
        assert!(found.records.iter().all(HostObjectRecord::deletable));
    }

    #[test]
    fn evidence_is_written_kind_colon_uid_and_reads_back() {
        for evidence in [
            Evidence::HotPlugged { vm_uid: "v".into() },
            Evidence::VolumeOf {
                pvc_uid: "p".into(),
            },
            Evidence::SnapshotOf {
                pvc_uid: "s".into(),
            },
            Evidence::GuestVolume {
                pv_uid: "pv".into(),
            },
            Evidence::GuestSnapshot {
                content_uid: "c".into(),
            },
            Evidence::GuestService {
                service_uid: "svc".into(),
            },
        ] {
            let written = serde_json::to_string(&evidence).unwrap();
            assert!(
                written.starts_with('"') && written.contains(':'),
                "{written}"
            );
            assert_eq!(
                serde_json::from_str::<Evidence>(&written).unwrap(),
                evidence
            );
        }
        for bad in ["\"HotPlugged\"", "\"HotPlugged:\"", "\"Whim:u\""] {
            assert!(serde_json::from_str::<Evidence>(bad).is_err(), "{bad}");
        }
        let conflict = Conflict::AnnotatedForOtherCluster {
            identity: "other/fleet-default/c1".into(),
        };
        let written = serde_json::to_string(&conflict).unwrap();
        assert_eq!(
            written,
            "\"AnnotatedForOtherCluster:other/fleet-default/c1\""
        );
        assert_eq!(
            serde_json::from_str::<Conflict>(&written).unwrap(),
            conflict
        );
    }

    #[test]
    fn a_class_implies_its_kind() {
        assert_eq!(
            ObjectClass::RwxVolume.kind(),
            HostKind::PersistentVolumeClaim
        );
        assert_eq!(ObjectClass::Snapshot.kind(), HostKind::VolumeSnapshot);
    }

    #[test]
    fn a_detached_volume_stays_attributed() {
        let vms = uids(&["vm-1"]);
        let objects = [pvc("pvc-a", "u-a")];
        let first = harvester_only(
            &this(&vms, &[]),
            &[],
            &[vm("vm-1", &["pvc-a"])],
            Some(&objects),
        );
        let later = harvester_only(
            &this(&vms, &first.records),
            &[],
            &[vm("vm-1", &[])],
            Some(&objects),
        );
        assert_eq!(later.records, first.records);
    }

    #[test]
    fn a_restored_copy_with_the_labels_but_a_new_uid_is_a_lookalike_not_attributed() {
        let vms = uids(&["vm-1"]);
        let copy = ObservedObject {
            footprint_label: Some("fp1".into()),
            cluster_annotation: Some(cluster_annotation(IDENTITY, "u-a")),
            ..pvc("pvc-restored", "u-copy")
        };
        let objects = [pvc("pvc-a", "u-a"), copy];
        let found = harvester_only(
            &this(&vms, &[]),
            &[],
            &[vm("vm-1", &["pvc-a"])],
            Some(&objects),
        );
        assert_eq!(found.records.len(), 1);
        assert_eq!(found.lookalikes.len(), 1);
        assert_eq!(found.lookalikes[0].uid, "u-copy");
    }

    #[test]
    fn a_volume_hot_plugged_into_vms_of_two_clusters_is_a_conflict_on_both() {
        let objects = [pvc("pvc-a", "u-a")];
        let ours = uids(&["vm-1"]);
        let theirs = uids(&["vm-2"]);
        let first = harvester_only(
            &this(&ours, &[]),
            &[],
            &[vm("vm-1", &["pvc-a"])],
            Some(&objects),
        );
        let other = OtherFootprint {
            name: "fp2".into(),
            vm_uids: theirs.clone(),
            object_uids: BTreeSet::new(),
        };
        // Now plugged into the other cluster's VM.
        let ours_now = harvester_only(
            &this(&ours, &first.records),
            &[other],
            &[vm("vm-2", &["pvc-a"])],
            Some(&objects),
        );
        assert_eq!(
            ours_now.records[0].conflicts,
            [Conflict::OtherFootprint {
                footprint: "fp2".into()
            }]
        );
        assert!(!ours_now.records[0].deletable());
        let theirs_now = harvester_only(
            &ThisFootprint {
                name: "fp2",
                identity: "install/fleet-default/c2",
                vm_uids: &theirs,
                records: &[],
            },
            &[OtherFootprint {
                name: "fp1".into(),
                vm_uids: ours,
                object_uids: uids(&["u-a"]),
            }],
            &[vm("vm-2", &["pvc-a"])],
            Some(&objects),
        );
        assert!(!theirs_now.records[0].deletable());
    }

    #[test]
    fn labels_of_another_footprint_or_installation_veto() {
        let vms = uids(&["vm-1"]);
        for (object, conflict) in [
            (
                ObservedObject {
                    footprint_label: Some("fp9".into()),
                    ..pvc("pvc-a", "u-a")
                },
                Conflict::LabelledForOtherFootprint {
                    footprint: "fp9".into(),
                },
            ),
            (
                ObservedObject {
                    cluster_annotation: Some(cluster_annotation("other/fleet-default/c1", "u-a")),
                    ..pvc("pvc-a", "u-a")
                },
                Conflict::AnnotatedForOtherCluster {
                    identity: "other/fleet-default/c1".into(),
                },
            ),
        ] {
            let found = harvester_only(
                &this(&vms, &[]),
                &[],
                &[vm("vm-1", &["pvc-a"])],
                Some(&[object]),
            );
            assert_eq!(found.records[0].conflicts, [conflict]);
        }
    }

    #[test]
    fn an_unsynced_harvester_keeps_the_records_and_a_gone_object_loses_its_record() {
        let vms = uids(&["vm-1"]);
        let objects = [pvc("pvc-a", "u-a")];
        let first = harvester_only(
            &this(&vms, &[]),
            &[],
            &[vm("vm-1", &["pvc-a"])],
            Some(&objects),
        );
        assert_eq!(
            harvester_only(&this(&vms, &first.records), &[], &[], None).records,
            first.records
        );
        assert!(
            harvester_only(&this(&vms, &first.records), &[], &[], Some(&[]))
                .records
                .is_empty()
        );
    }

    #[test]
    fn marks_are_written_once_and_never_over_another_footprint() {
        let vms = uids(&["vm-1"]);
        let objects = [pvc("pvc-a", "u-a")];
        let found = harvester_only(
            &this(&vms, &[]),
            &[],
            &[vm("vm-1", &["pvc-a"])],
            Some(&objects),
        );
        let footprint = this(&vms, &found.records);
        let marks = marks_to_write(&footprint, &found.records[0], &objects[0]).unwrap();
        assert_eq!(marks[keys::FOOTPRINT_LABEL], "fp1");
        assert_eq!(
            marks[keys::CLUSTER_ANNOTATION],
            "install/fleet-default/c1@u-a"
        );
        let marked = ObservedObject {
            footprint_label: Some("fp1".into()),
            cluster_annotation: Some(marks[keys::CLUSTER_ANNOTATION].clone()),
            ..objects[0].clone()
        };
        assert_eq!(marks_to_write(&footprint, &found.records[0], &marked), None);
    }

    fn guest_pv(name: &str, handle: &str, reclaim: Option<GuestPolicy>) -> GuestVolume {
        GuestVolume {
            name: name.into(),
            uid: format!("uid-{name}"),
            driver: GUEST_DRIVER.into(),
            volume_handle: handle.into(),
            read_write_many: false,
            reclaim,
        }
    }

    fn with_guest(
        this: &ThisFootprint<'_>,
        objects: &[ObservedObject],
        guest: &GuestFacts,
        now: i64,
    ) -> Attribution {
        attribute(
            this,
            &[],
            &Observation {
                vms: &[],
                objects: Some(objects),
                guest: Some(guest),
                now: Timestamp::from_second(now).unwrap(),
            },
        )
    }

    #[test]
    fn a_never_attached_volume_is_attributed_by_its_guest_pv_with_its_policy() {
        let vms = BTreeSet::new();
        let rwx = ObservedObject {
            block: false,
            volume_name: Some("pv-host-rwx".into()),
            ..pvc("pvc-rwx", "u-rwx")
        };
        let filesystem = ObservedObject {
            kind: Some(HostKind::NetworkFilesystem),
            namespace: NETWORK_FILESYSTEM_NAMESPACE.into(),
            name: "pv-host-rwx".into(),
            uid: "u-nfs".into(),
            cloud_credential: CREDENTIAL.into(),
            ..ObservedObject::default()
        };
        let objects = [pvc("pvc-a", "u-a"), rwx, filesystem, pvc("pvc-b", "u-b")];
        let guest = GuestFacts {
            volumes: vec![
                guest_pv("pvc-a", "pvc-a", Some(GuestPolicy::Retain)),
                GuestVolume {
                    read_write_many: true,
                    ..guest_pv("pvc-rwx", "pvc-rwx", Some(GuestPolicy::Delete))
                },
                GuestVolume {
                    driver: "driver.longhorn.io".into(),
                    ..guest_pv("pvc-b", "pvc-b", Some(GuestPolicy::Delete))
                },
            ],
            ..GuestFacts::default()
        };
        let found = with_guest(&this(&vms, &[]), &objects, &guest, 100);
        let got: Vec<(&str, ObjectClass, Option<GuestPolicy>)> = found
            .records
            .iter()
            .map(|record| {
                (
                    record.uid.as_str(),
                    record.class,
                    record.guest_policy.map(|seen| seen.policy),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("u-a", ObjectClass::Volume, Some(GuestPolicy::Retain)),
                ("u-rwx", ObjectClass::RwxVolume, Some(GuestPolicy::Delete)),
                ("u-nfs", ObjectClass::NetworkFilesystem, None),
            ],
            "another driver's PV attributes nothing"
        );
        assert_eq!(
            found.records[0].evidence,
            [Evidence::GuestVolume {
                pv_uid: "uid-pvc-a".into()
            }]
        );
    }

    #[test]
    fn a_guest_pv_whose_host_pvc_is_missing_or_ambiguous_is_reported_never_guessed() {
        let vms = BTreeSet::new();
        let twin = ObservedObject {
            namespace: "other-vms".into(),
            ..pvc("pvc-twin", "u-twin-2")
        };
        let objects = [pvc("pvc-twin", "u-twin-1"), twin];
        let guest = GuestFacts {
            volumes: vec![
                guest_pv("pvc-gone", "pvc-gone", Some(GuestPolicy::Delete)),
                guest_pv("pvc-twin", "pvc-twin", Some(GuestPolicy::Delete)),
            ],
            ..GuestFacts::default()
        };
        let found = with_guest(&this(&vms, &[]), &objects, &guest, 0);
        assert!(found.records.is_empty());
        assert_eq!(
            found
                .unmatched
                .iter()
                .map(|unmatched| (unmatched.pv.as_str(), unmatched.found))
                .collect::<Vec<_>>(),
            [("pvc-gone", 0), ("pvc-twin", 2)]
        );
    }

    #[test]
    fn a_load_balancer_is_attributed_by_its_service_uid_never_by_its_cluster_label() {
        let vms = BTreeSet::new();
        let balancer = |name: &str, uid: &str, service: &str| ObservedObject {
            kind: Some(HostKind::LoadBalancer),
            name: name.into(),
            uid: uid.into(),
            service_uuid: Some(service.into()),
            guest_cluster_label: Some("prod".into()),
            ..pvc("", "")
        };
        let objects = [
            balancer("prod-ingress", "u-lb", "svc-ours"),
            balancer("prod-web", "u-namesake", "svc-theirs"),
        ];
        let guest = GuestFacts {
            load_balancer_services: uids(&["svc-ours"]),
            ..GuestFacts::default()
        };
        let found = with_guest(&this(&vms, &[]), &objects, &guest, 0);
        assert_eq!(found.records.len(), 1);
        assert_eq!(found.records[0].uid, "u-lb");
        assert_eq!(found.records[0].class, ObjectClass::LoadBalancer);
        // The Service is deleted and re-created with a new UID: the record stays.
        let later = GuestFacts {
            load_balancer_services: uids(&["svc-new"]),
            ..GuestFacts::default()
        };
        let kept = with_guest(&this(&vms, &found.records), &objects, &later, 1);
        assert_eq!(kept.records, found.records);
    }

    #[test]
    fn a_snapshot_is_attributed_by_its_guest_content_with_its_deletion_policy() {
        let vms = BTreeSet::new();
        let snapshot = ObservedObject {
            kind: Some(HostKind::VolumeSnapshot),
            name: "snapshot-1".into(),
            uid: "u-snap".into(),
            snapshot_source: Some("pvc-unknown".into()),
            ..pvc("", "")
        };
        let guest = GuestFacts {
            contents: vec![GuestSnapshotContent {
                name: "snapcontent-1".into(),
                uid: "u-content".into(),
                driver: GUEST_DRIVER.into(),
                snapshot_handle: Some("snapshot-1".into()),
                deletion: Some(GuestPolicy::Retain),
            }],
            ..GuestFacts::default()
        };
        let found = with_guest(&this(&vms, &[]), &[snapshot], &guest, 0);
        assert_eq!(found.records.len(), 1);
        assert_eq!(
            found.records[0].guest_policy.map(|seen| seen.policy),
            Some(GuestPolicy::Retain)
        );
    }

    #[test]
    fn the_latest_policy_wins_and_an_unreachable_guest_keeps_the_last_one() {
        let vms = BTreeSet::new();
        let objects = [pvc("pvc-a", "u-a")];
        let delete = GuestFacts {
            volumes: vec![guest_pv("pvc-a", "pvc-a", Some(GuestPolicy::Delete))],
            ..GuestFacts::default()
        };
        let first = with_guest(&this(&vms, &[]), &objects, &delete, 0);
        let retain = GuestFacts {
            volumes: vec![guest_pv("pvc-a", "pvc-a", Some(GuestPolicy::Retain))],
            ..GuestFacts::default()
        };
        let second = with_guest(&this(&vms, &first.records), &objects, &retain, 10);
        let seen = second.records[0].guest_policy.unwrap();
        assert_eq!(seen.policy, GuestPolicy::Retain);
        assert_eq!(seen.seen_at, Timestamp::from_second(10).unwrap());
        let unreachable = harvester_only(&this(&vms, &second.records), &[], &[], Some(&objects));
        assert_eq!(unreachable.records, second.records);
    }

    /// Objects with distinct UIDs, as on any apiserver.
    fn objects() -> impl Strategy<Value = Vec<ObservedObject>> {
        proptest::collection::vec(object(), 0..6).prop_map(|objects| {
            let mut seen = BTreeSet::new();
            objects
                .into_iter()
                .filter(|object| seen.insert(object.uid.clone()))
                .collect()
        })
    }

    fn object() -> impl Strategy<Value = ObservedObject> {
        let name = "pvc-[a-c]";
        (
            name,
            "u-[a-e]",
            proptest::option::of("fp[12]"),
            proptest::option::of(prop_oneof![
                Just(IDENTITY.to_owned()),
                Just("other/x/y".to_owned())
            ]),
            proptest::option::of("c[12]"),
        )
            .prop_map(|(name, uid, label, identity, hint)| ObservedObject {
                cluster_annotation: identity.map(|identity| cluster_annotation(&identity, &uid)),
                footprint_label: label,
                guest_cluster_label: hint,
                ..pvc(&name, &uid)
            })
    }

    proptest! {
        /// Every record has evidence, and its UID is the UID of a live object it came from.
        #[test]
        fn never_attributed_without_evidence_and_always_by_a_live_uid(
            objects in objects(),
            plugged in proptest::collection::vec("pvc-[a-d]", 0..4),
            ours: bool,
        ) {
            let vms = uids(if ours { &["vm-1"] } else { &[] });
            let found = harvester_only(&this(&vms, &[]), &[], &[vm("vm-1", &plugged.iter().map(String::as_str).collect::<Vec<_>>())], Some(&objects));
            for record in &found.records {
                prop_assert!(!record.evidence.is_empty());
                let live = objects.iter().find(|object| object.uid == record.uid);
                prop_assert!(live.is_some());
                prop_assert_eq!(&live.unwrap().name, &record.name);
            }
            if !ours {
                prop_assert!(found.records.is_empty());
            }
        }

        /// Labels, annotations and the CSI hint alone never attribute anything.
        #[test]
        fn labels_alone_never_harvester_only(objects in objects()) {
            let vms = uids(&["vm-1"]);
            let found = harvester_only(&this(&vms, &[]), &[], &[vm("vm-1", &[])], Some(&objects));
            prop_assert!(found.records.is_empty());
        }

        /// A PVC is attributed from the guest only when a PV of the Harvester driver names
        /// exactly it; other drivers' PVs and labels never attribute.
        #[test]
        fn the_guest_attributes_only_what_a_driver_pv_names(
            objects in objects(),
            handles in proptest::collection::vec(("pvc-[a-d]", any::<bool>()), 0..4),
        ) {
            let vms = BTreeSet::new();
            let guest = GuestFacts {
                volumes: handles
                    .iter()
                    .enumerate()
                    .map(|(index, (handle, ours))| GuestVolume {
                        driver: if *ours { GUEST_DRIVER.into() } else { "other".into() },
                        ..guest_pv(&format!("pv-{index}"), handle, None)
                    })
                    .collect(),
                ..GuestFacts::default()
            };
            let found = with_guest(&this(&vms, &[]), &objects, &guest, 0);
            for record in &found.records {
                let named = handles.iter().filter(|(handle, ours)| *ours && *handle == record.name).count();
                prop_assert!(named > 0);
                prop_assert_eq!(objects.iter().filter(|object| object.name == record.name).count(), 1);
            }
        }

        /// A record with a conflict is never deletable.
        #[test]
        fn a_conflict_is_never_deletable(
            objects in objects(),
            plugged in proptest::collection::vec("pvc-[a-c]", 0..4),
            theirs in proptest::collection::btree_set("u-[a-e]", 0..3),
        ) {
            let vms = uids(&["vm-1"]);
            let other = OtherFootprint { name: "fp2".into(), vm_uids: BTreeSet::new(), object_uids: theirs.clone() };
            let found = harvester_only(&this(&vms, &[]), &[other], &[vm("vm-1", &plugged.iter().map(String::as_str).collect::<Vec<_>>())], Some(&objects));
            for record in &found.records {
                if theirs.contains(&record.uid) {
                    prop_assert!(!record.conflicts.is_empty());
                }
                if !record.conflicts.is_empty() {
                    prop_assert!(!record.deletable());
                }
            }
        }
    }
}
