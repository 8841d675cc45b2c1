//! What leaked before gleaner came: which guest-made host objects on one Harvester no living
//! cluster accounts for, and for each whether it is an orphan, in use, or unknown, with why.
//! `orphan` is the only verdict an operator may adopt, and it needs every fact to agree: a
//! living cluster's volume is never an orphan, and what cannot be told is `unknown`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use crate::attribution::{HostKind, NETWORK_FILESYSTEM_NAMESPACE};

/// A Footprint, as the audit reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownCluster {
    /// The Footprint's name.
    pub footprint: String,
    /// `namespace/name` in Rancher.
    pub cluster: String,
    /// `Tracking`: the cluster lives.
    pub living: bool,
    /// The VM namespaces its pools use on this Harvester.
    pub vm_namespaces: BTreeSet<String>,
    /// The UIDs of the VMs it records.
    pub vms: BTreeSet<String>,
    /// The UIDs of the host objects it records.
    pub records: BTreeSet<String>,
    /// Its guest's watch is live and synced: what the guest names, it records.
    pub guest_complete: bool,
}

/// A VM on the Harvester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVm {
    /// Its namespace on Harvester.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// The claims it lists as `persistentVolumeClaim` volumes.
    pub claims: Vec<String>,
}

/// A host object that may be guest-made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostObject {
    /// Its namespace on Harvester.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// A PVC's access modes.
    pub access_modes: Vec<String>,
    /// A PVC's `spec.volumeName`; a VolumeSnapshot's source PVC; a NetworkFilesystem's own name.
    pub volume: Option<String>,
    /// `gleaner.io/retain` parses as true, or does not parse (kept as if true).
    pub retained: bool,
    /// `gleaner.io/kept` on it, written for its own UID.
    pub kept: Option<String>,
    /// `harvesterhci.io/goldenImage: "true"` with its image present, or an image export from
    /// it not imported yet.
    pub image_source: bool,
    /// Owned by a VirtualMachine.
    pub owned_by_vm: bool,
    /// A LoadBalancer's `cloudprovider.harvesterhci.io/service-uuid` with `workloadType: cluster`.
    pub service_uid: Option<String>,
    /// Where a cluster name is written on it (the CSI label, a load balancer's cluster label).
    pub cluster_label: Option<String>,
    /// A PVC's storage request.
    pub bytes: Option<u64>,
    /// When it was made.
    pub created: Option<Timestamp>,
    /// A VolumeSnapshot carries the labels the CSI driver puts on the host snapshots it makes.
    pub csi_labelled: bool,
}

/// Everything the audit of one Harvester rests on, read live.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    /// Every PVC.
    pub pvcs: Vec<HostObject>,
    /// Every VolumeSnapshot.
    pub snapshots: Vec<HostObject>,
    /// The NetworkFilesystems of `harvester-system`.
    pub filesystems: Vec<HostObject>,
    /// Every LoadBalancer.
    pub load_balancers: Vec<HostObject>,
    /// Every VM.
    pub vms: Vec<HostVm>,
    /// `(namespace, claim)` of each claim a Pod mounts.
    pub pod_claims: BTreeSet<(String, String)>,
    /// This installation's Footprints that use this Harvester (or recorded anything there).
    pub clusters: Vec<KnownCluster>,
}

/// What the audit says of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "why")]
pub enum Verdict {
    /// Guest-made, left by a cluster that is gone, used by nothing: it may be adopted.
    #[serde(rename = "orphan")]
    Orphan,
    /// Something living uses it.
    #[serde(rename = "in use")]
    InUse(InUse),
    /// It looks guest-made, but not every fact agrees: never a candidate.
    #[serde(rename = "unknown")]
    Unknown(Doubt),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
/// What uses it.
pub enum InUse {
    /// A VM lists it as a volume.
    AttachedTo {
        /// `namespace/name`.
        vm: String,
    },
    /// A Pod mounts it.
    MountedByPod,
    /// A living cluster's Footprint records it.
    RecordedByLivingCluster {
        /// Its name.
        footprint: String,
        /// `namespace/name` in Rancher.
        cluster: String,
    },
    /// Its PVC, or its source volume, is in use.
    VolumeInUse {
        /// The volume's name.
        volume: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
/// Why it cannot be told an orphan.
pub enum Doubt {
    /// Named `pvc-<uuid>` but not shaped as the CSI driver makes its PVCs (RWX on the host).
    NotCsiShaped,
    /// A golden image, or the source of an image export not yet imported.
    ImageSource,
    /// A VM owns it.
    OwnedByVm,
    /// A Footprint of a deleted cluster records it: its reclaimer decides (a kept object).
    RecordedBy {
        /// Its name.
        footprint: String,
        /// `namespace/name` in Rancher.
        cluster: String,
    },
    /// `gleaner.io/retain` on it.
    Retained,
    /// `gleaner.io/kept` on it.
    Kept {
        /// The reason written.
        reason: String,
    },
    /// A living cluster that uses this namespace has no complete guest inventory: it may name
    /// this object and gleaner would not know.
    GuestInventoryIncomplete {
        /// `namespace/name` in Rancher.
        cluster: String,
    },
    /// A VM of this namespace no Footprint of this installation records: its cluster (another
    /// Rancher's, or none) may own the object.
    ForeignVm {
        /// `namespace/name`.
        vm: String,
    },
    /// Its volume, or its source, is not an orphan.
    VolumeNotOrphan {
        /// The volume's name.
        volume: String,
    },
    /// A snapshot whose source volume is gone, without the CSI driver's labels: nothing tells
    /// whose it was.
    SourceGone,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AttachedTo { vm } => write!(f, "attached to VM {vm}"),
            Self::MountedByPod => f.write_str("mounted by a Pod"),
            Self::RecordedByLivingCluster { cluster, .. } => {
                write!(f, "recorded by living cluster {cluster}")
            }
            Self::VolumeInUse { volume } => write!(f, "its volume {volume} is in use"),
        }
    }
}

impl std::fmt::Display for Doubt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotCsiShaped => f.write_str("not shaped as the CSI driver makes PVCs"),
            Self::ImageSource => f.write_str("a golden image or an image export's source"),
            Self::OwnedByVm => f.write_str("owned by a VM"),
            Self::RecordedBy { cluster, .. } => {
                write!(f, "deleted cluster {cluster}'s Footprint records it")
            }
            Self::Retained => f.write_str("gleaner.io/retain on it"),
            Self::Kept { reason } => write!(f, "kept by gleaner: {reason}"),
            Self::GuestInventoryIncomplete { cluster } => {
                write!(f, "living cluster {cluster}'s guest is not fully seen")
            }
            Self::ForeignVm { vm } => write!(f, "VM {vm} is no cluster's gleaner knows"),
            Self::VolumeNotOrphan { volume } => write!(f, "its volume {volume} is not an orphan"),
            Self::SourceGone => f.write_str("its source volume is gone"),
        }
    }
}

/// One object's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is.
    pub kind: HostKind,
    /// Its namespace on Harvester.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    #[serde(flatten)]
    /// What the audit says of it.
    pub verdict: Verdict,
    /// The last cluster it can be tied to, and what says so.
    pub last_cluster: Option<String>,
    /// A PVC's storage request.
    pub bytes: Option<u64>,
    /// When it was made.
    pub created: Option<Timestamp>,
}

/// `pvc-<uuid>`: the name the CSI driver gives the host PVC of a guest PV.
pub fn csi_named(name: &str) -> bool {
    name.strip_prefix("pvc-").is_some_and(|uuid| {
        uuid.len() == 36
            && uuid.char_indices().all(|(index, char)| match index {
                8 | 13 | 18 | 23 => char == '-',
                _ => char.is_ascii_hexdigit() && !char.is_ascii_uppercase(),
            })
    })
}

/// The findings of one Harvester: every guest-made PVC, snapshot of one, NetworkFilesystem and
/// cluster load balancer, each with its verdict.
pub fn audit(facts: &AuditFacts) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut volumes: BTreeMap<(String, String), Verdict> = BTreeMap::new();
    for pvc in facts.pvcs.iter().filter(|pvc| csi_named(&pvc.name)) {
        let verdict = pvc_verdict(facts, pvc);
        volumes.insert((pvc.namespace.clone(), pvc.name.clone()), verdict.clone());
        findings.push(finding(
            facts,
            HostKind::PersistentVolumeClaim,
            pvc,
            verdict,
        ));
    }
    // What hangs on a volume follows it.
    let follows = |volume: &str, verdict: &Verdict| match verdict {
        Verdict::Orphan => Verdict::Orphan,
        Verdict::InUse(_) => Verdict::InUse(InUse::VolumeInUse {
            volume: volume.to_owned(),
        }),
        Verdict::Unknown(_) => Verdict::Unknown(Doubt::VolumeNotOrphan {
            volume: volume.to_owned(),
        }),
    };
    for snapshot in &facts.snapshots {
        let Some(source) = &snapshot.volume else {
            continue;
        };
        if !csi_named(source) {
            continue;
        }
        let verdict = match own_doubt(facts, snapshot) {
            Some(verdict) => verdict,
            None => match volumes.get(&(snapshot.namespace.clone(), source.clone())) {
                Some(source_verdict) => follows(source, source_verdict),
                // Its volume went without it: the CSI driver's, named by no guest gleaner sees.
                None if snapshot.csi_labelled => {
                    namespace_doubt(facts, &snapshot.namespace).unwrap_or(Verdict::Orphan)
                }
                None => Verdict::Unknown(Doubt::SourceGone),
            },
        };
        findings.push(finding(facts, HostKind::VolumeSnapshot, snapshot, verdict));
    }
    for filesystem in facts
        .filesystems
        .iter()
        .filter(|filesystem| filesystem.namespace == NETWORK_FILESYSTEM_NAMESPACE)
    {
        let pvc = facts
            .pvcs
            .iter()
            .find(|pvc| pvc.volume.as_deref() == Some(filesystem.name.as_str()));
        let verdict = match (own_doubt(facts, filesystem), pvc) {
            (Some(verdict), _) => verdict,
            (None, Some(pvc)) => match volumes.get(&(pvc.namespace.clone(), pvc.name.clone())) {
                Some(pvc_verdict) => follows(&pvc.name, pvc_verdict),
                None => Verdict::Unknown(Doubt::VolumeNotOrphan {
                    volume: pvc.name.clone(),
                }),
            },
            // Without its PVC, nothing serves it: left behind.
            (None, None) => Verdict::Orphan,
        };
        findings.push(finding(
            facts,
            HostKind::NetworkFilesystem,
            filesystem,
            verdict,
        ));
    }
    for balancer in facts
        .load_balancers
        .iter()
        .filter(|balancer| balancer.service_uid.is_some())
    {
        let verdict = own_doubt(facts, balancer)
            .or_else(|| namespace_doubt(facts, &balancer.namespace))
            .unwrap_or(Verdict::Orphan);
        findings.push(finding(facts, HostKind::LoadBalancer, balancer, verdict));
    }
    findings
}

fn pvc_verdict(facts: &AuditFacts, pvc: &HostObject) -> Verdict {
    if let Some(vm) = facts
        .vms
        .iter()
        .find(|vm| vm.namespace == pvc.namespace && vm.claims.contains(&pvc.name))
    {
        return Verdict::InUse(InUse::AttachedTo {
            vm: format!("{}/{}", vm.namespace, vm.name),
        });
    }
    if facts
        .pod_claims
        .contains(&(pvc.namespace.clone(), pvc.name.clone()))
    {
        return Verdict::InUse(InUse::MountedByPod);
    }
    if let Some(verdict) = own_doubt(facts, pvc) {
        return verdict;
    }
    if !pvc.access_modes.iter().any(|mode| mode == "ReadWriteMany") {
        return Verdict::Unknown(Doubt::NotCsiShaped);
    }
    if pvc.image_source {
        return Verdict::Unknown(Doubt::ImageSource);
    }
    if pvc.owned_by_vm {
        return Verdict::Unknown(Doubt::OwnedByVm);
    }
    namespace_doubt(facts, &pvc.namespace).unwrap_or(Verdict::Orphan)
}

/// What the object's own record and marks say: recorded by a Footprint, retained, kept.
fn own_doubt(facts: &AuditFacts, object: &HostObject) -> Option<Verdict> {
    if let Some(known) = facts
        .clusters
        .iter()
        .find(|known| known.records.contains(&object.uid))
    {
        let (footprint, cluster) = (known.footprint.clone(), known.cluster.clone());
        return Some(if known.living {
            Verdict::InUse(InUse::RecordedByLivingCluster { footprint, cluster })
        } else {
            Verdict::Unknown(Doubt::RecordedBy { footprint, cluster })
        });
    }
    if object.retained {
        return Some(Verdict::Unknown(Doubt::Retained));
    }
    object.kept.as_ref().map(|reason| {
        Verdict::Unknown(Doubt::Kept {
            reason: reason.clone(),
        })
    })
}

/// What the namespace says: a living cluster there whose guest gleaner cannot fully see, or a
/// VM no Footprint of this installation records.
fn namespace_doubt(facts: &AuditFacts, namespace: &str) -> Option<Verdict> {
    if let Some(blind) = facts.clusters.iter().find(|known| {
        known.living && known.vm_namespaces.contains(namespace) && !known.guest_complete
    }) {
        return Some(Verdict::Unknown(Doubt::GuestInventoryIncomplete {
            cluster: blind.cluster.clone(),
        }));
    }
    let recorded: BTreeSet<&String> = facts.clusters.iter().flat_map(|known| &known.vms).collect();
    facts
        .vms
        .iter()
        .find(|vm| vm.namespace == namespace && !recorded.contains(&vm.uid))
        .map(|vm| {
            Verdict::Unknown(Doubt::ForeignVm {
                vm: format!("{}/{}", vm.namespace, vm.name),
            })
        })
}

/// The last cluster the object can be tied to: a Footprint that records it, the cluster label
/// on it, else the deleted clusters whose pools used its namespace.
fn last_cluster(facts: &AuditFacts, object: &HostObject) -> Option<String> {
    if let Some(known) = facts
        .clusters
        .iter()
        .find(|known| known.records.contains(&object.uid))
    {
        return Some(format!("{} (Footprint {})", known.cluster, known.footprint));
    }
    if let Some(label) = &object.cluster_label {
        return Some(format!("{label} (its cluster label)"));
    }
    let deleted: Vec<&str> = facts
        .clusters
        .iter()
        .filter(|known| !known.living && known.vm_namespaces.contains(&object.namespace))
        .map(|known| known.cluster.as_str())
        .collect();
    (!deleted.is_empty()).then(|| format!("{} (its VM namespace)", deleted.join(" or ")))
}

fn finding(facts: &AuditFacts, kind: HostKind, object: &HostObject, verdict: Verdict) -> Finding {
    Finding {
        kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        last_cluster: last_cluster(facts, object),
        bytes: object.bytes,
        created: object.created,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LEFT: &str = "pvc-0b4c2a1e-9f7d-4c3e-8a51-2f6d7e9b0c13";

    fn pvc(name: &str, uid: &str) -> HostObject {
        HostObject {
            namespace: "vms".into(),
            name: name.into(),
            uid: uid.into(),
            access_modes: vec!["ReadWriteMany".into()],
            volume: Some(format!("pv-{uid}")),
            ..HostObject::default()
        }
    }

    fn living(vms: &[&str], records: &[&str], guest_complete: bool) -> KnownCluster {
        KnownCluster {
            footprint: "f-living".into(),
            cluster: "fleet-default/living".into(),
            living: true,
            vm_namespaces: BTreeSet::from(["vms".to_owned()]),
            vms: vms.iter().map(|vm| (*vm).to_owned()).collect(),
            records: records.iter().map(|uid| (*uid).to_owned()).collect(),
            guest_complete,
        }
    }

    fn vm(name: &str, uid: &str, claims: &[&str]) -> HostVm {
        HostVm {
            namespace: "vms".into(),
            name: name.into(),
            uid: uid.into(),
            claims: claims.iter().map(|claim| (*claim).to_owned()).collect(),
        }
    }

    fn verdict_of(findings: &[Finding], name: &str) -> Verdict {
        findings
            .iter()
            .find(|finding| finding.name == name)
            .unwrap()
            .verdict
            .clone()
    }

    #[test]
    fn only_the_pvc_names_the_csi_driver_gives_are_guest_made() {
        assert!(csi_named(LEFT));
        for name in [
            "pvc-0b4c2a1e",
            "vm-1-disk-0-abcde",
            "pvc-0B4C2A1E-9F7D-4C3E-8A51-2F6D7E9B0C13",
            "pvc-0b4c2a1e-9f7d-4c3e-8a51-2f6d7e9b0c1x",
            "pvc-0b4c2a1e9f7d-4c3e-8a51-2f6d7e9b0c13-",
        ] {
            assert!(!csi_named(name), "{name}");
        }
    }

    #[test]
    fn a_left_volume_is_an_orphan_and_its_snapshot_and_filesystem_with_it() {
        let left = pvc(LEFT, "u-left");
        let facts = AuditFacts {
            pvcs: vec![left.clone()],
            snapshots: vec![HostObject {
                namespace: "vms".into(),
                name: "snapshot-1".into(),
                uid: "u-snap".into(),
                volume: Some(LEFT.into()),
                ..HostObject::default()
            }],
            filesystems: vec![HostObject {
                namespace: NETWORK_FILESYSTEM_NAMESPACE.into(),
                name: "pv-u-left".into(),
                uid: "u-nfs".into(),
                ..HostObject::default()
            }],
            vms: vec![vm("living-1", "vm-l", &[])],
            clusters: vec![living(&["vm-l"], &[], true)],
            ..AuditFacts::default()
        };
        let findings = audit(&facts);
        assert_eq!(findings.len(), 3);
        assert!(
            findings
                .iter()
                .all(|finding| finding.verdict == Verdict::Orphan)
        );
    }

    #[test]
    fn a_snapshot_whose_volume_went_is_an_orphan_only_with_the_csi_drivers_labels() {
        let snapshot = |csi_labelled| HostObject {
            namespace: "vms".into(),
            name: "snapshot-1".into(),
            uid: "u-snap".into(),
            volume: Some(LEFT.into()),
            csi_labelled,
            ..HostObject::default()
        };
        for (labelled, verdict) in [
            (true, Verdict::Orphan),
            (false, Verdict::Unknown(Doubt::SourceGone)),
        ] {
            let facts = AuditFacts {
                snapshots: vec![snapshot(labelled)],
                ..AuditFacts::default()
            };
            assert_eq!(verdict_of(&audit(&facts), "snapshot-1"), verdict);
        }
    }

    #[test]
    fn what_a_living_cluster_uses_or_might_use_is_never_an_orphan() {
        let attached = pvc("pvc-00000000-0000-0000-0000-000000000001", "u-1");
        let recorded = pvc("pvc-00000000-0000-0000-0000-000000000002", "u-2");
        let mounted = pvc("pvc-00000000-0000-0000-0000-000000000003", "u-3");
        let facts = AuditFacts {
            pvcs: vec![attached.clone(), recorded.clone(), mounted.clone()],
            vms: vec![vm("living-1", "vm-l", &[&attached.name])],
            pod_claims: BTreeSet::from([("vms".to_owned(), mounted.name.clone())]),
            clusters: vec![living(&["vm-l"], &["u-2"], true)],
            ..AuditFacts::default()
        };
        let findings = audit(&facts);
        assert!(matches!(
            verdict_of(&findings, &attached.name),
            Verdict::InUse(InUse::AttachedTo { .. })
        ));
        assert!(matches!(
            verdict_of(&findings, &recorded.name),
            Verdict::InUse(InUse::RecordedByLivingCluster { .. })
        ));
        assert_eq!(
            verdict_of(&findings, &mounted.name),
            Verdict::InUse(InUse::MountedByPod)
        );
    }

    #[test]
    fn a_blind_spot_in_the_namespace_makes_every_unattached_volume_unknown() {
        let left = pvc(LEFT, "u-left");
        let blind = AuditFacts {
            pvcs: vec![left.clone()],
            vms: vec![vm("living-1", "vm-l", &[])],
            clusters: vec![living(&["vm-l"], &[], false)],
            ..AuditFacts::default()
        };
        assert!(matches!(
            verdict_of(&audit(&blind), LEFT),
            Verdict::Unknown(Doubt::GuestInventoryIncomplete { .. })
        ));
        let foreign = AuditFacts {
            vms: vec![vm("living-1", "vm-l", &[]), vm("theirs-1", "vm-x", &[])],
            clusters: vec![living(&["vm-l"], &[], true)],
            ..blind.clone()
        };
        assert_eq!(
            verdict_of(&audit(&foreign), LEFT),
            Verdict::Unknown(Doubt::ForeignVm {
                vm: "vms/theirs-1".into()
            })
        );
    }

    #[test]
    fn marks_images_owners_and_shape_each_make_it_unknown() {
        for (object, doubt) in [
            (
                HostObject {
                    retained: true,
                    ..pvc(LEFT, "u")
                },
                Doubt::Retained,
            ),
            (
                HostObject {
                    kept: Some("GuestRetain".into()),
                    ..pvc(LEFT, "u")
                },
                Doubt::Kept {
                    reason: "GuestRetain".into(),
                },
            ),
            (
                HostObject {
                    image_source: true,
                    ..pvc(LEFT, "u")
                },
                Doubt::ImageSource,
            ),
            (
                HostObject {
                    owned_by_vm: true,
                    ..pvc(LEFT, "u")
                },
                Doubt::OwnedByVm,
            ),
            (
                HostObject {
                    access_modes: vec!["ReadWriteOnce".into()],
                    ..pvc(LEFT, "u")
                },
                Doubt::NotCsiShaped,
            ),
        ] {
            let facts = AuditFacts {
                pvcs: vec![object],
                ..AuditFacts::default()
            };
            assert_eq!(verdict_of(&audit(&facts), LEFT), Verdict::Unknown(doubt));
        }
    }

    fn object() -> impl Strategy<Value = HostObject> {
        (
            0..6usize,
            "u[0-5]",
            any::<bool>(),
            proptest::option::of(Just("Conflict".to_owned())),
            any::<[bool; 3]>(),
        )
            .prop_map(
                |(index, uid, retained, kept, [image, owned, rwx])| HostObject {
                    namespace: if index.is_multiple_of(2) {
                        "vms"
                    } else {
                        "other"
                    }
                    .into(),
                    name: format!("pvc-00000000-0000-0000-0000-00000000000{index}"),
                    uid,
                    access_modes: vec![
                        if rwx {
                            "ReadWriteMany"
                        } else {
                            "ReadWriteOnce"
                        }
                        .into(),
                    ],
                    volume: None,
                    retained,
                    kept,
                    image_source: image,
                    owned_by_vm: owned,
                    service_uid: None,
                    cluster_label: None,
                    bytes: None,
                    created: None,
                    csi_labelled: false,
                },
            )
    }

    fn cluster() -> impl Strategy<Value = KnownCluster> {
        (
            any::<[bool; 3]>(),
            proptest::collection::btree_set("vm-[0-3]", 0..3),
            proptest::collection::btree_set("u[0-5]", 0..3),
        )
            .prop_map(
                |([living, complete, other_namespace], vms, records)| KnownCluster {
                    footprint: "f".into(),
                    cluster: "fleet/c".into(),
                    living,
                    vm_namespaces: BTreeSet::from([
                        if other_namespace { "other" } else { "vms" }.to_owned()
                    ]),
                    vms,
                    records,
                    guest_complete: complete,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// An orphan is guest-made, attached to no VM, mounted by no Pod, recorded by no
        /// Footprint, unmarked, and in a namespace where every living cluster is fully seen and
        /// every VM is this installation's.
        #[test]
        fn an_orphan_breaks_no_rule(
            pvcs in proptest::collection::vec(object(), 0..6),
            clusters in proptest::collection::vec(cluster(), 0..3),
            vms in proptest::collection::vec(("vm-[0-4]", 0..6usize, any::<bool>()), 0..4),
            mounted in proptest::collection::btree_set(0..6usize, 0..2),
        ) {
            let name = |index: usize| format!("pvc-00000000-0000-0000-0000-00000000000{index}");
            let namespace = |index: usize| if index.is_multiple_of(2) { "vms" } else { "other" };
            let facts = AuditFacts {
                vms: vms.iter().map(|(uid, claim, in_other)| HostVm {
                    namespace: if *in_other { "other" } else { "vms" }.into(),
                    name: format!("{uid}-vm"),
                    uid: uid.clone(),
                    claims: vec![name(*claim)],
                }).collect(),
                pod_claims: mounted.iter().map(|index| (namespace(*index).to_owned(), name(*index))).collect(),
                // Names are unique in a namespace, UIDs everywhere.
                pvcs: {
                    let (mut names, mut uids) = (BTreeSet::new(), BTreeSet::new());
                    pvcs.into_iter()
                        .filter(|pvc| names.insert((pvc.namespace.clone(), pvc.name.clone())) && uids.insert(pvc.uid.clone()))
                        .collect()
                },
                clusters,
                ..AuditFacts::default()
            };
            for finding in audit(&facts) {
                if finding.verdict != Verdict::Orphan {
                    continue;
                }
                let object = facts.pvcs.iter().find(|pvc| pvc.uid == finding.uid && pvc.name == finding.name).unwrap();
                prop_assert!(csi_named(&object.name));
                prop_assert!(!facts.vms.iter().any(|vm| vm.namespace == object.namespace && vm.claims.contains(&object.name)));
                prop_assert!(!facts.pod_claims.contains(&(object.namespace.clone(), object.name.clone())));
                prop_assert!(!facts.clusters.iter().any(|known| known.records.contains(&object.uid)));
                prop_assert!(!object.retained && object.kept.is_none() && !object.image_source && !object.owned_by_vm);
                prop_assert!(facts.clusters.iter().all(|known| !known.living || known.guest_complete || !known.vm_namespaces.contains(&object.namespace)));
                let recorded: BTreeSet<&String> = facts.clusters.iter().flat_map(|known| &known.vms).collect();
                prop_assert!(facts.vms.iter().filter(|vm| vm.namespace == object.namespace).all(|vm| recorded.contains(&vm.uid)));
            }
        }
    }
}
