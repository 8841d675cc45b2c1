//! A Footprint's VMs: the ones its Machines name while the cluster lives, kept while they exist
//! on Harvester, with what each carries of gleaner's intent. The Harvester index is asked
//! through a lookup function.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Intent, Reason};

/// One VM of a cluster as its Footprint records it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VmRecord {
    /// The CAPI Machine that last named it.
    pub machine: String,
    /// `namespace:name` of the cloud credential that reaches its Harvester.
    pub cloud_credential: String,
    /// Its namespace on Harvester.
    pub namespace: String,
    /// Its name on Harvester.
    pub name: String,
    /// Its UID on Harvester, once seen there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The reason of gleaner's intent on it, if it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Reason>,
    /// Why its intent annotation could not be read, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_problem: Option<String>,
}

/// A VM a Machine of the cluster names now (from its HarvesterMachine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The CAPI Machine.
    pub machine: String,
    /// `namespace:name` of the cloud credential its HarvesterMachine names.
    pub cloud_credential: String,
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
}

/// What the Harvester index says of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The Harvester is not synced or not reachable.
    Unknown,
    /// The Harvester is synced and shows no such VM.
    Absent,
    /// The VM exists.
    Present {
        /// Its UID.
        uid: String,
        /// What it carries of gleaner's intent.
        intent: IntentSeen,
    },
}

/// gleaner's intent annotation on a VM, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentSeen {
    /// No intent annotation.
    None,
    /// The reason it names.
    Reason(Reason),
    /// It does not parse; the parser's message.
    Malformed(String),
}

impl IntentSeen {
    /// Reads the value of a VM's [`INTENT_ANNOTATION`](crate::keys::INTENT_ANNOTATION).
    pub fn of(annotation: Option<&str>) -> Self {
        match annotation {
            None => IntentSeen::None,
            Some(json) => match Intent::parse(json) {
                Ok(intent) => IntentSeen::Reason(intent.reason),
                Err(error) => IntentSeen::Malformed(error.to_string()),
            },
        }
    }
}

/// The VMs to record: every VM in `previous` or in `named`, each updated from `lookup`; a VM
/// the index shows absent is dropped unless a Machine still names it (its VM may not be made
/// yet). A record's UID, once seen, never changes: a namesake with another UID never takes a
/// record over. `named` is `None` once the cluster's Machines no longer speak for it (deletion
/// confirmed): then no VM is added. Sorted by Harvester, namespace and name.
pub fn record(
    previous: &[VmRecord],
    named: Option<&[Named]>,
    lookup: impl Fn(&str, &str, &str) -> Seen,
) -> Vec<VmRecord> {
    let key = |record: &VmRecord| {
        (
            record.cloud_credential.clone(),
            record.namespace.clone(),
            record.name.clone(),
        )
    };
    let mut records: BTreeMap<(String, String, String), (VmRecord, bool)> = previous
        .iter()
        .map(|record| (key(record), (record.clone(), false)))
        .collect();
    for vm in named.unwrap_or_default() {
        let fresh = VmRecord {
            machine: vm.machine.clone(),
            cloud_credential: vm.cloud_credential.clone(),
            namespace: vm.namespace.clone(),
            name: vm.name.clone(),
            ..VmRecord::default()
        };
        records
            .entry(key(&fresh))
            .and_modify(|(record, named)| {
                record.machine.clone_from(&vm.machine);
                *named = true;
            })
            .or_insert((fresh, true));
    }
    records
        .into_values()
        .filter_map(|(mut record, named)| {
            match lookup(&record.cloud_credential, &record.namespace, &record.name) {
                Seen::Unknown => {}
                Seen::Absent if !named => return None,
                // Its UID stays: a VM of that name made later is another VM.
                Seen::Absent => {
                    record.intent = None;
                    record.intent_problem = None;
                }
                // A namesake with another UID stands where the recorded VM was: the record keeps
                // the UID of the VM it came from, so nothing meant for that VM is ever written
                // on the namesake, and it goes once nothing of that name is left.
                Seen::Present { uid, .. }
                    if record.uid.as_ref().is_some_and(|recorded| *recorded != uid) =>
                {
                    record.intent = None;
                    record.intent_problem = None;
                }
                Seen::Present { uid, intent } => {
                    record.uid = Some(uid);
                    (record.intent, record.intent_problem) = match intent {
                        IntentSeen::None => (None, None),
                        IntentSeen::Reason(reason) => (Some(reason), None),
                        IntentSeen::Malformed(problem) => (None, Some(problem)),
                    };
                }
            }
            Some(record)
        })
        .collect()
}

/// What the cluster's HarvesterMachines name once its deletion is confirmed: only those made
/// no later than its recorded Cluster objects started deleting (`deletion_started`, the
/// earliest deletionTimestamp of the ones the caches still hold with the recorded UIDs). A
/// namesake cluster can only be made once the deleted one is gone, so its machines are made
/// later and never taken for the deleted cluster's; a cluster first seen while deleting still
/// records the VMs it had. Timestamps have whole seconds, and a cluster deleted within a second
/// of its machines is common (a script, a failed create): the second the deletion began
/// counts. A namesake provisioned down to its HarvesterMachines within that same second, with
/// the caches still holding the deleted cluster, would need its VM gone before anything is
/// reclaimed, and its volumes would be claimed by two Footprints (a conflict, deletable by
/// neither). Unknown start or creation time: nothing is named, as when the Machines no longer
/// speak for the cluster at all.
pub fn named_before_deletion(
    named: Vec<(Named, Option<Timestamp>)>,
    deletion_started: Option<Timestamp>,
) -> Option<Vec<Named>> {
    let started = deletion_started?;
    Some(
        named
            .into_iter()
            .filter(|(_, created)| created.is_some_and(|created| created <= started))
            .map(|(vm, _)| vm)
            .collect(),
    )
}

/// The VMs of `after` whose intent became malformed since `before`.
pub fn newly_malformed<'a>(before: &[VmRecord], after: &'a [VmRecord]) -> Vec<&'a VmRecord> {
    after
        .iter()
        .filter(|vm| vm.intent_problem.is_some())
        .filter(|vm| {
            !before.iter().any(|old| {
                old.cloud_credential == vm.cloud_credential
                    && old.namespace == vm.namespace
                    && old.name == vm.name
                    && old.intent_problem.is_some()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Named {
        Named {
            machine: format!("m-{name}"),
            cloud_credential: "cattle-global-data:hv".into(),
            namespace: "vms".into(),
            name: name.into(),
        }
    }

    fn at(second: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_deleting_cluster_keeps_naming_only_the_machines_made_before_its_deletion() {
        let machines = vec![(named("own"), at(10)), (named("namesake"), at(30))];
        assert_eq!(
            named_before_deletion(machines, at(20)),
            Some(vec![named("own")])
        );
    }

    #[test]
    fn a_machine_made_in_the_second_the_deletion_started_is_taken() {
        assert_eq!(
            named_before_deletion(vec![(named("same-second"), at(20))], at(20)),
            Some(vec![named("same-second")])
        );
    }

    #[test]
    fn without_the_deletion_start_or_a_creation_time_nothing_is_named() {
        assert_eq!(
            named_before_deletion(vec![(named("own"), at(10))], None),
            None
        );
        assert_eq!(
            named_before_deletion(vec![(named("unknown"), None)], at(20)),
            Some(vec![])
        );
    }

    fn recorded(name: &str) -> VmRecord {
        VmRecord {
            machine: format!("m-{name}"),
            cloud_credential: "cattle-global-data:hv".into(),
            namespace: "vms".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            ..VmRecord::default()
        }
    }

    fn present(intent: IntentSeen) -> impl Fn(&str, &str, &str) -> Seen {
        move |_, _, name| Seen::Present {
            uid: format!("uid-{name}"),
            intent: intent.clone(),
        }
    }

    fn names(records: &[VmRecord]) -> Vec<&str> {
        records.iter().map(|record| record.name.as_str()).collect()
    }

    #[test]
    fn a_named_vm_is_recorded_with_its_uid_and_intent() {
        let records = record(
            &[],
            Some(&[named("a")]),
            present(IntentSeen::Reason(Reason::ScaleDown)),
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].uid.as_deref(), Some("uid-a"));
        assert_eq!(records[0].intent, Some(Reason::ScaleDown));
        assert_eq!(records[0].machine, "m-a");
    }

    #[test]
    fn a_vm_no_machine_names_stays_while_it_exists_and_goes_when_absent() {
        let previous = [recorded("a"), recorded("b")];
        let kept = record(&previous, Some(&[named("a")]), present(IntentSeen::None));
        assert_eq!(names(&kept), ["a", "b"]);
        let dropped = record(&previous, Some(&[named("a")]), |_, _, name| {
            if name == "b" {
                Seen::Absent
            } else {
                Seen::Present {
                    uid: "uid-a".into(),
                    intent: IntentSeen::None,
                }
            }
        });
        assert_eq!(names(&dropped), ["a"]);
    }

    #[test]
    fn a_named_vm_not_made_yet_stays_without_a_uid() {
        let records = record(&[], Some(&[named("a")]), |_, _, _| Seen::Absent);
        assert_eq!(names(&records), ["a"]);
        assert_eq!(records[0].uid, None);
    }

    #[test]
    fn a_namesake_with_another_uid_never_takes_over_a_record() {
        let namesake = |_: &str, _: &str, _: &str| Seen::Present {
            uid: "uid-other".into(),
            intent: IntentSeen::None,
        };
        for named_now in [Some(&[named("a")][..]), Some(&[]), None] {
            let kept = record(&[recorded("a")], named_now, namesake);
            assert_eq!(kept[0].uid.as_deref(), Some("uid-a"), "{named_now:?}");
        }
    }

    #[test]
    fn an_unknown_harvester_changes_nothing() {
        let previous = [VmRecord {
            intent: Some(Reason::ClusterDeletion),
            ..recorded("a")
        }];
        assert_eq!(record(&previous, None, |_, _, _| Seen::Unknown), previous);
    }

    #[test]
    fn without_machines_no_vm_is_added() {
        let records = record(&[recorded("a")], None, present(IntentSeen::None));
        assert_eq!(names(&records), ["a"]);
    }

    #[test]
    fn a_malformed_intent_is_recorded_as_a_problem_and_reported_once() {
        let before = [recorded("a")];
        let after = record(
            &before,
            None,
            present(IntentSeen::Malformed("not JSON".into())),
        );
        assert_eq!(after[0].intent, None);
        assert_eq!(after[0].intent_problem.as_deref(), Some("not JSON"));
        assert_eq!(
            names(
                &newly_malformed(&before, &after)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            ),
            ["a"]
        );
        assert!(newly_malformed(&after, &after).is_empty());
    }

    #[test]
    fn the_intent_is_read_from_the_annotation() {
        assert_eq!(IntentSeen::of(None), IntentSeen::None);
        assert!(matches!(
            IntentSeen::of(Some("{not json")),
            IntentSeen::Malformed(_)
        ));
        assert_eq!(
            IntentSeen::of(Some(
                r#"{"footprint":"f","reason":"ClusterDeletion","decidedAt":"2026-11-24T00:00:00Z"}"#
            )),
            IntentSeen::Reason(Reason::ClusterDeletion)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn seen() -> impl Strategy<Value = Seen> {
            prop_oneof![
                Just(Seen::Unknown),
                Just(Seen::Absent),
                Just(Seen::Present {
                    uid: "uid".into(),
                    intent: IntentSeen::None
                }),
                Just(Seen::Present {
                    uid: "uid".into(),
                    intent: IntentSeen::Malformed("bad".into())
                }),
            ]
        }

        proptest! {
            /// Whatever Harvester says, a VM a Machine names is never dropped, a VM only absent
            /// from Harvester is, and with Harvester unknown nothing is dropped or changed.
            #[test]
            fn named_vms_stay_and_only_absent_ones_go(
                previous in proptest::collection::btree_set("[a-e]", 0..5),
                named_now in proptest::collection::btree_set("[a-e]", 0..5),
                lookups in proptest::collection::vec(seen(), 5),
            ) {
                let previous: Vec<VmRecord> = previous.iter().map(|name| recorded(name)).collect();
                let named_now: Vec<Named> = named_now.iter().map(|name| named(name)).collect();
                let lookup = |_: &str, _: &str, name: &str| {
                    lookups[usize::from(name.as_bytes()[0] - b'a')].clone()
                };
                let records = record(&previous, Some(&named_now), lookup);
                for vm in &named_now {
                    prop_assert!(records.iter().any(|record| record.name == vm.name));
                }
                for old in &previous {
                    let kept = records.iter().any(|record| record.name == old.name);
                    let named = named_now.iter().any(|vm| vm.name == old.name);
                    prop_assert_eq!(kept, named || lookup("", "", &old.name) != Seen::Absent);
                }
                prop_assert_eq!(record(&previous, None, |_, _, _| Seen::Unknown), previous);
            }

            /// Safety: once a cluster is deleting, no machine made after the second its deletion
            /// began (a namesake's) ever names a VM for it, and no machine of unknown age does.
            #[test]
            fn no_machine_made_after_the_deletion_began_speaks_for_the_cluster(
                machines in proptest::collection::vec((0..40i64, any::<bool>()), 0..8),
                started in proptest::option::of(0..40i64),
            ) {
                let named_machines: Vec<(Named, Option<Timestamp>)> = machines
                    .iter()
                    .enumerate()
                    .map(|(index, (created, known))| {
                        let created = known.then(|| Timestamp::from_second(*created).unwrap());
                        (named(&format!("vm-{index}")), created)
                    })
                    .collect();
                let started_at = started.map(|second| Timestamp::from_second(second).unwrap());
                let speaking = named_before_deletion(named_machines.clone(), started_at);
                prop_assert_eq!(speaking.is_none(), started.is_none());
                for vm in speaking.unwrap_or_default() {
                    let (_, created) = named_machines
                        .iter()
                        .find(|(machine, _)| *machine == vm)
                        .unwrap();
                    prop_assert!(created.is_some_and(|created| Some(created) <= started_at));
                }
            }

            /// A record's UID, once seen, is never replaced by another nor forgotten, whatever
            /// Harvester shows (the VM gone, a namesake in its place).
            #[test]
            fn a_recorded_uid_never_changes(
                previous in proptest::collection::btree_set("[a-e]", 0..5),
                named_now in proptest::collection::btree_set("[a-e]", 0..5),
                uids in proptest::collection::vec(proptest::option::of("uid-[a-e]|uid-new"), 5),
            ) {
                let previous: Vec<VmRecord> = previous.iter().map(|name| recorded(name)).collect();
                let named_now: Vec<Named> = named_now.iter().map(|name| named(name)).collect();
                let records = record(&previous, Some(&named_now), |_, _, name| {
                    match &uids[usize::from(name.as_bytes()[0] - b'a')] {
                        Some(uid) => Seen::Present { uid: uid.clone(), intent: IntentSeen::None },
                        None => Seen::Absent,
                    }
                });
                for after in &records {
                    if let Some(before) = previous.iter().find(|old| old.name == after.name) {
                        prop_assert_eq!(&after.uid, &before.uid);
                    }
                }
            }
        }
    }
}
