//! A model of two guest clusters on one Harvester namespace, driven through random
//! interleavings of what happens (volumes made, hot-plugged and detached, guest policies
//! changed, objects replaced by namesakes, a volume plugged into the other cluster's VM, the
//! deletion of cluster A, its VMs going) and of what gleaner does (observe and attribute with
//! whatever it saw last, plan and delete). Whatever the order, no deletion breaks the safety
//! rules, judged against the model's truth rather than against gleaner's records.
//!
//! `GLEANER_MODEL_CASES` sets the number of cases (default 2,000; the full run is 100,000).

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    Retention,
    attribution::{
        HostKind, HostObjectRecord, Observation, ObservedObject, ObservedVm, OtherFootprint,
        ThisFootprint, attribute,
    },
    guest::{GUEST_DRIVER, GuestFacts, GuestPolicy, GuestVolume},
    reclaim::{LiveObject, Plan, ReclaimFacts, RecordedVm, Verdict, VmState, plan},
};
use jiff::Timestamp;
use proptest::prelude::*;

const CREDENTIAL: &str = "cattle-global-data:hv";
const NAMESPACE: &str = "vms";
const WEEK: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    A,
    B,
    /// Nobody's guest made it (a namesake restored by hand).
    Nobody,
}

#[derive(Debug, Clone)]
struct Volume {
    name: String,
    uid: String,
    /// The cluster whose guest made it: the truth gleaner must never get wrong.
    owner: Cluster,
    policy: GuestPolicy,
    /// The policy gleaner last saw through A's guest, if ever.
    seen_policy: Option<GuestPolicy>,
    retained: bool,
    /// A's guest has a PV naming it too (made by hand, pointing at another's volume).
    named_in_a: bool,
}

#[derive(Debug, Clone)]
struct Vm {
    uid: String,
    cluster: Cluster,
    state: VmState,
    plugged: Vec<String>,
}

#[derive(Debug, Clone)]
enum Step {
    MakeVolume { owner: bool, retain: bool },
    Plug { volume: usize, vm: usize },
    Unplug { vm: usize },
    SetPolicy { volume: usize, retain: bool },
    Annotate { volume: usize },
    NameInA { volume: usize },
    Replace { volume: usize },
    DeleteClusterA,
    VmGoes { vm: usize, gone: bool },
    Observe { guest_answers: bool },
    Reclaim,
}

fn step() -> impl Strategy<Value = Step> {
    // Weighted so that most runs see volumes made and observed, A deleted and its VMs gone
    // before the end: the interleavings where a deletion can happen at all.
    prop_oneof![
        3 => (any::<bool>(), any::<bool>())
            .prop_map(|(owner, retain)| Step::MakeVolume { owner, retain }),
        2 => (0usize..4, 0usize..4).prop_map(|(volume, vm)| Step::Plug { volume, vm }),
        1 => (0usize..4).prop_map(|vm| Step::Unplug { vm }),
        1 => (0usize..4, any::<bool>())
            .prop_map(|(volume, retain)| Step::SetPolicy { volume, retain }),
        1 => (0usize..4).prop_map(|volume| Step::Annotate { volume }),
        1 => (0usize..4).prop_map(|volume| Step::NameInA { volume }),
        1 => (0usize..4).prop_map(|volume| Step::Replace { volume }),
        1 => Just(Step::DeleteClusterA),
        3 => (0usize..2, any::<bool>()).prop_map(|(vm, gone)| Step::VmGoes { vm, gone }),
        3 => any::<bool>().prop_map(|guest_answers| Step::Observe { guest_answers }),
        2 => Just(Step::Reclaim),
    ]
}

struct Model {
    volumes: Vec<Volume>,
    /// vm-a1, vm-a2 are cluster A's; vm-b1, vm-b2 cluster B's.
    vms: Vec<Vm>,
    a_deleted: bool,
    /// A's Footprint as gleaner keeps it.
    records: Vec<HostObjectRecord>,
    recorded_vms: BTreeSet<String>,
    /// B's Footprint's records (B is observed every time too).
    b_records: Vec<HostObjectRecord>,
    next_uid: usize,
    deleted: Vec<Volume>,
}

impl Model {
    fn new() -> Self {
        let vm = |uid: &str, cluster| Vm {
            uid: uid.into(),
            cluster,
            state: VmState::Running,
            plugged: Vec::new(),
        };
        Self {
            volumes: Vec::new(),
            vms: vec![
                vm("vm-a1", Cluster::A),
                vm("vm-a2", Cluster::A),
                vm("vm-b1", Cluster::B),
                vm("vm-b2", Cluster::B),
            ],
            a_deleted: false,
            records: Vec::new(),
            recorded_vms: ["vm-a1", "vm-a2"].map(str::to_owned).into(),
            b_records: Vec::new(),
            next_uid: 0,
            deleted: Vec::new(),
        }
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("u{}", self.next_uid)
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::MakeVolume { owner, retain } if self.volumes.len() < 8 => {
                let owner = if owner { Cluster::A } else { Cluster::B };
                if owner == Cluster::A && self.a_deleted {
                    return;
                }
                let uid = self.uid();
                self.volumes.push(Volume {
                    name: format!("pvc-{uid}"),
                    uid,
                    owner,
                    policy: if retain {
                        GuestPolicy::Retain
                    } else {
                        GuestPolicy::Delete
                    },
                    seen_policy: None,
                    retained: false,
                    named_in_a: false,
                });
            }
            Step::MakeVolume { .. } => {}
            Step::Plug { volume, vm } => {
                let Some(name) = self.volumes.get(volume).map(|volume| volume.name.clone()) else {
                    return;
                };
                if let Some(vm) = self.vms.get_mut(vm)
                    && vm.state != VmState::Gone
                    && !vm.plugged.contains(&name)
                {
                    vm.plugged.push(name);
                }
            }
            Step::Unplug { vm } => {
                if let Some(vm) = self.vms.get_mut(vm) {
                    vm.plugged.pop();
                }
            }
            // A deleted cluster's guest changes nothing any more.
            Step::SetPolicy { .. } if self.a_deleted => {}
            Step::SetPolicy { volume, retain } => {
                if let Some(volume) = self.volumes.get_mut(volume) {
                    volume.policy = if retain {
                        GuestPolicy::Retain
                    } else {
                        GuestPolicy::Delete
                    };
                }
            }
            Step::NameInA { .. } if self.a_deleted => {}
            Step::NameInA { volume } => {
                if let Some(volume) = self.volumes.get_mut(volume) {
                    volume.named_in_a = true;
                }
            }
            Step::Annotate { volume } => {
                if let Some(volume) = self.volumes.get_mut(volume) {
                    volume.retained = true;
                }
            }
            Step::Replace { volume } => {
                let uid = self.uid();
                if let Some(volume) = self.volumes.get_mut(volume) {
                    volume.uid = uid;
                    volume.owner = Cluster::Nobody;
                    volume.seen_policy = None;
                    volume.named_in_a = false;
                }
            }
            Step::DeleteClusterA => self.a_deleted = true,
            Step::VmGoes { vm, gone } => {
                if let Some(vm) = self.vms.get_mut(vm)
                    && vm.cluster == Cluster::A
                    && self.a_deleted
                {
                    vm.state = if gone {
                        VmState::Gone
                    } else {
                        VmState::Deleting
                    };
                    if gone {
                        vm.plugged.clear();
                    }
                }
            }
            Step::Observe { guest_answers } => self.observe(guest_answers),
            Step::Reclaim => self.reclaim(),
        }
    }

    fn observed(&self) -> (Vec<ObservedVm>, Vec<ObservedObject>) {
        let vms = self
            .vms
            .iter()
            .filter(|vm| vm.state != VmState::Gone)
            .map(|vm| ObservedVm {
                cloud_credential: CREDENTIAL.into(),
                namespace: NAMESPACE.into(),
                uid: vm.uid.clone(),
                hotplugged: vm.plugged.clone(),
            })
            .collect();
        let objects = self
            .volumes
            .iter()
            .map(|volume| ObservedObject {
                cloud_credential: CREDENTIAL.into(),
                kind: Some(HostKind::PersistentVolumeClaim),
                namespace: NAMESPACE.into(),
                name: volume.name.clone(),
                uid: volume.uid.clone(),
                block: true,
                ..ObservedObject::default()
            })
            .collect();
        (vms, objects)
    }

    /// What a cluster's guest shows: the PVs of the volumes it made (a replaced volume's PV
    /// still names the old name, which now holds the namesake: the guest's PV lives on).
    fn guest(&self, cluster: Cluster) -> GuestFacts {
        GuestFacts {
            volumes: self
                .volumes
                .iter()
                .filter(|volume| {
                    volume.owner == cluster || (cluster == Cluster::A && volume.named_in_a)
                })
                .map(|volume| GuestVolume {
                    name: volume.name.clone(),
                    uid: format!("pv-{}", volume.uid),
                    driver: GUEST_DRIVER.into(),
                    volume_handle: volume.name.clone(),
                    read_write_many: false,
                    reclaim: Some(volume.policy),
                })
                .collect(),
            ..GuestFacts::default()
        }
    }

    fn observe(&mut self, guest_answers: bool) {
        let (vms, objects) = self.observed();
        let b_vms: BTreeSet<String> = ["vm-b1", "vm-b2"].map(str::to_owned).into();
        let a_guest = (guest_answers && !self.a_deleted).then(|| self.guest(Cluster::A));
        let b_guest = self.guest(Cluster::B);
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let other =
            |name: &str, vms: &BTreeSet<String>, records: &[HostObjectRecord]| OtherFootprint {
                name: name.into(),
                vm_uids: vms.clone(),
                object_uids: records.iter().map(|record| record.uid.clone()).collect(),
            };
        let a = attribute(
            &ThisFootprint {
                name: "fp-a",
                identity: "install/fleet/a",
                vm_uids: &self.recorded_vms,
                records: &self.records,
            },
            &[other("fp-b", &b_vms, &self.b_records)],
            &Observation {
                vms: &vms,
                objects: Some(&objects),
                guest: a_guest.as_ref(),
                now,
            },
        );
        let b = attribute(
            &ThisFootprint {
                name: "fp-b",
                identity: "install/fleet/b",
                vm_uids: &b_vms,
                records: &self.b_records,
            },
            &[other("fp-a", &self.recorded_vms, &a.records)],
            &Observation {
                vms: &vms,
                objects: Some(&objects),
                guest: Some(&b_guest),
                now,
            },
        );
        self.records = a.records;
        self.b_records = b.records;
        if a_guest.is_some() {
            for volume in self
                .volumes
                .iter_mut()
                .filter(|volume| volume.owner == Cluster::A || volume.named_in_a)
            {
                volume.seen_policy = Some(volume.policy);
            }
        }
    }

    /// One reclaimer pass for A, from the model's live truth, and its deletes applied.
    fn reclaim(&mut self) {
        let vms: Vec<RecordedVm> = self
            .vms
            .iter()
            .filter(|vm| self.recorded_vms.contains(&vm.uid))
            .map(|vm| RecordedVm {
                name: vm.uid.clone(),
                uid: vm.uid.clone(),
                state: vm.state,
            })
            .collect();
        let live: BTreeMap<String, LiveObject> = self
            .records
            .iter()
            .filter_map(|record| {
                let volume = self
                    .volumes
                    .iter()
                    .find(|volume| volume.name == record.name)?;
                Some((
                    record.uid.clone(),
                    LiveObject {
                        uid: volume.uid.clone(),
                        resource_version: "1".into(),
                        retention: Some(if volume.retained {
                            Retention::Retained
                        } else {
                            Retention::NotRetained
                        }),
                        attached_to: self
                            .vms
                            .iter()
                            .filter(|vm| vm.plugged.contains(&volume.name))
                            .map(|vm| vm.uid.clone())
                            .collect(),
                        owned_by: Vec::new(),
                        deleting: false,
                    },
                ))
            })
            .collect();
        let others: BTreeSet<String> = self
            .b_records
            .iter()
            .map(|record| record.uid.clone())
            .collect();
        let none = BTreeSet::new();
        let facts = ReclaimFacts {
            confirmed: self.a_deleted,
            identity_changed: false,
            frozen: false,
            opted_out: false,
            footprint_retention: Retention::NotRetained,
            vms_gone_by_operator: false,
            deletions_begin: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            vms: &vms,
            records: &self.records,
            live: &live,
            other_footprints: &others,
            denied: &none,
            unorphaned: &none,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            policy_max_age: WEEK,
        };
        let Plan::Act(steps) = plan(&facts) else {
            return;
        };
        for (record, verdict) in steps {
            if verdict != Verdict::Delete {
                continue;
            }
            let index = self
                .volumes
                .iter()
                .position(|volume| volume.uid == record.uid)
                .expect("a Delete names a live object by its UID");
            let volume = self.volumes.remove(index);
            self.judge(&volume);
            self.deleted.push(volume);
        }
    }

    /// The safety rules, against the truth at the moment of the delete.
    fn judge(&self, volume: &Volume) {
        // A volume nobody's guest made is A's once A's guest has a PV naming it (the evidence
        // design.md §5 gives): A's guest uses it.
        let adopted = volume.owner == Cluster::Nobody && volume.named_in_a;
        assert!(
            volume.owner == Cluster::A || adopted,
            "deleted another's volume: {volume:?}"
        );
        assert!(self.a_deleted, "deleted before A's deletion: {volume:?}");
        assert!(!volume.retained, "deleted a retained volume: {volume:?}");
        for vm in &self.vms {
            if vm.cluster == Cluster::A {
                assert_ne!(
                    vm.state,
                    VmState::Running,
                    "a VM of A still ran: {volume:?}"
                );
            } else {
                assert!(
                    !vm.plugged.contains(&volume.name),
                    "plugged into B's VM: {volume:?}"
                );
            }
        }
        assert_eq!(
            volume.seen_policy,
            Some(GuestPolicy::Delete),
            "deleted a volume whose guest policy was not last seen Delete: {volume:?}"
        );
    }
}

fn cases() -> u32 {
    std::env::var("GLEANER_MODEL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn no_interleaving_breaks_a_safety_rule(steps in proptest::collection::vec(step(), 1..40)) {
        let mut model = Model::new();
        for step in &steps {
            model.apply(step);
        }
        model.apply(&Step::Reclaim);
    }
}

/// The model can delete at all: a cluster's volume, seen `Delete`, goes once its VMs do.
#[test]
fn the_model_deletes_what_the_rules_allow() {
    let mut model = Model::new();
    for step in [
        Step::MakeVolume {
            owner: true,
            retain: false,
        },
        Step::MakeVolume {
            owner: true,
            retain: true,
        },
        Step::MakeVolume {
            owner: false,
            retain: false,
        },
        Step::Plug { volume: 0, vm: 0 },
        Step::Observe {
            guest_answers: true,
        },
        Step::DeleteClusterA,
        Step::Reclaim,
        Step::VmGoes { vm: 0, gone: true },
        Step::VmGoes { vm: 1, gone: false },
        Step::Reclaim,
    ] {
        model.apply(&step);
    }
    let deleted: Vec<&str> = model
        .deleted
        .iter()
        .map(|volume| volume.name.as_str())
        .collect();
    assert_eq!(
        deleted,
        ["pvc-u1"],
        "only A's Delete volume, once its VMs went"
    );
}

/// A PV made by hand in A's guest naming B's volume ties it to both: it is never deleted.
#[test]
fn a_volume_both_guests_name_is_never_deleted() {
    let mut model = Model::new();
    for step in [
        Step::MakeVolume {
            owner: false,
            retain: false,
        },
        Step::NameInA { volume: 0 },
        Step::Observe {
            guest_answers: true,
        },
        Step::Observe {
            guest_answers: true,
        },
        Step::DeleteClusterA,
        Step::VmGoes { vm: 0, gone: true },
        Step::VmGoes { vm: 1, gone: true },
        Step::Reclaim,
    ] {
        model.apply(&step);
    }
    assert!(model.deleted.is_empty(), "{:?}", model.deleted);
}
