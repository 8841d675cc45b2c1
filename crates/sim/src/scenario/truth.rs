//! Ground truth: which guest cluster made each host object, its class, and whether it must
//! survive; and the counting that judges a run against it, never against a controller's own
//! bookkeeping.

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

/// The classes of host objects, in the order that decides an object's class (first match wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    LivingCluster,
    OtherInstallation,
    SameNameOtherNamespace,
    AnnotatedRetain,
    Retained,
    Lookalike,
    Snapshot,
    LoadBalancer,
    Rwx,
    Hotplugged,
    Unattached,
    NeverAttached,
    VmDisk,
}

impl Class {
    pub const ALL: [Class; 13] = [
        Class::LivingCluster,
        Class::OtherInstallation,
        Class::SameNameOtherNamespace,
        Class::AnnotatedRetain,
        Class::Retained,
        Class::Lookalike,
        Class::Snapshot,
        Class::LoadBalancer,
        Class::Rwx,
        Class::Hotplugged,
        Class::Unattached,
        Class::NeverAttached,
        Class::VmDisk,
    ];

    /// The first six classes hold data that must outlive the deleted cluster.
    pub fn must_survive(self) -> bool {
        self <= Class::Lookalike
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::LivingCluster => "living_cluster",
            Class::OtherInstallation => "other_installation",
            Class::SameNameOtherNamespace => "same_name_other_namespace",
            Class::AnnotatedRetain => "annotated_retain",
            Class::Retained => "retained",
            Class::Lookalike => "lookalike",
            Class::Snapshot => "snapshot",
            Class::LoadBalancer => "load_balancer",
            Class::Rwx => "rwx",
            Class::Hotplugged => "hotplugged",
            Class::Unattached => "unattached",
            Class::NeverAttached => "never_attached",
            Class::VmDisk => "vm_disk",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the guest cluster that made an object relates to the deleted clusters, decided when the
/// run is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Relation {
    /// Its cluster was deleted.
    #[default]
    Deleted,
    /// Its cluster lives and shares no name with a deleted one.
    Living,
    /// Its cluster lives, in another Rancher installation, under a deleted cluster's name.
    OtherInstallation,
    /// Its cluster lives, in another namespace of the same installation, under a deleted
    /// cluster's name.
    SameNameOtherNamespace,
    /// No guest cluster made it (a lookalike).
    None,
}

/// What the scenario knows about a host object; [`Traits::class`] turns it into the class by the
/// first-match order. A snapshot carries its volume's traits plus `snapshot`, so the snapshot of
/// a protected volume takes that volume's class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traits {
    pub relation: Relation,
    /// The host PVC carries `gleaner.io/retain: "true"`.
    pub annotated_retain: bool,
    /// Its guest PV's reclaim policy is `Retain`.
    pub retained: bool,
    /// Shaped like a guest volume, in the same namespace, made by no deleted cluster.
    pub lookalike: bool,
    /// A host VolumeSnapshot made for a guest snapshot.
    pub snapshot: bool,
    /// A Harvester LoadBalancer made for a guest LoadBalancer Service.
    pub load_balancer: bool,
    /// A guest RWX volume's host PVC or NetworkFilesystem.
    pub rwx: bool,
    /// A VM's own disk (from the VM's volume claim templates).
    pub vm_disk: bool,
    pub attachment: Attachment,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attachment {
    /// Hot-plugged into a VM of its cluster when the cluster is deleted.
    Hotplugged,
    /// Was hot-plugged once, detached before the deletion.
    Unattached,
    #[default]
    NeverAttached,
}

impl Traits {
    pub fn class(&self) -> Class {
        match self.relation {
            Relation::Living => return Class::LivingCluster,
            Relation::OtherInstallation => return Class::OtherInstallation,
            Relation::SameNameOtherNamespace => return Class::SameNameOtherNamespace,
            Relation::Deleted | Relation::None => {}
        }
        let flags = [
            (self.annotated_retain, Class::AnnotatedRetain),
            (self.retained, Class::Retained),
            (self.lookalike, Class::Lookalike),
            (self.snapshot, Class::Snapshot),
            (self.load_balancer, Class::LoadBalancer),
            (self.rwx, Class::Rwx),
            (self.vm_disk, Class::VmDisk),
        ];
        if let Some((_, class)) = flags.into_iter().find(|(set, _)| *set) {
            return class;
        }
        match self.attachment {
            Attachment::Hotplugged => Class::Hotplugged,
            Attachment::Unattached => Class::Unattached,
            Attachment::NeverAttached => Class::NeverAttached,
        }
    }
}

/// One host object the scenario made, as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackedObject {
    pub class: Class,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub must_survive: bool,
    pub exists_at_end: bool,
}

/// Per-class counts. For a must-go class reclaimed + leaked = total; for a must-survive class
/// kept + wrongly deleted = total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassSummary {
    pub total: usize,
    pub reclaimed: usize,
    pub kept: usize,
    pub leaked: usize,
    pub wrongly_deleted: usize,
}

/// The judged outcome of one system's run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub objects: Vec<TrackedObject>,
    pub summary: BTreeMap<Class, ClassSummary>,
}

impl Report {
    pub fn judge(objects: Vec<TrackedObject>) -> Self {
        let mut summary: BTreeMap<Class, ClassSummary> = BTreeMap::new();
        for object in &objects {
            let counts = summary.entry(object.class).or_default();
            counts.total += 1;
            match (object.must_survive, object.exists_at_end) {
                (true, true) => counts.kept += 1,
                (true, false) => counts.wrongly_deleted += 1,
                (false, true) => counts.leaked += 1,
                (false, false) => counts.reclaimed += 1,
            }
        }
        Self { objects, summary }
    }

    pub fn class(&self, class: Class) -> ClassSummary {
        self.summary.get(&class).copied().unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<27} {:>6} {:>10} {:>6} {:>7} {:>16}",
            "class", "total", "reclaimed", "kept", "leaked", "wrongly deleted"
        )?;
        for (class, counts) in &self.summary {
            writeln!(
                f,
                "{:<27} {:>6} {:>10} {:>6} {:>7} {:>16}",
                class.as_str(),
                counts.total,
                counts.reclaimed,
                counts.kept,
                counts.leaked,
                counts.wrongly_deleted
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(class: Class, exists_at_end: bool) -> TrackedObject {
        TrackedObject {
            class,
            kind: "PersistentVolumeClaim".into(),
            namespace: "vms".into(),
            name: "pvc".into(),
            uid: "uid".into(),
            must_survive: class.must_survive(),
            exists_at_end,
        }
    }

    #[test]
    fn exactly_the_first_six_classes_must_survive() {
        let surviving: Vec<Class> = Class::ALL
            .into_iter()
            .filter(|c| c.must_survive())
            .collect();
        assert_eq!(surviving, Class::ALL[..6].to_vec());
    }

    #[test]
    fn the_first_matching_trait_decides_the_class() {
        let hotplugged_retain = Traits {
            retained: true,
            attachment: Attachment::Hotplugged,
            ..Traits::default()
        };
        assert_eq!(hotplugged_retain.class(), Class::Retained);
        let living_disk = Traits {
            relation: Relation::Living,
            vm_disk: true,
            ..Traits::default()
        };
        assert_eq!(living_disk.class(), Class::LivingCluster);
        let snapshot_of_retained = Traits {
            retained: true,
            snapshot: true,
            ..Traits::default()
        };
        assert_eq!(snapshot_of_retained.class(), Class::Retained);
        let snapshot_of_rwx = Traits {
            rwx: true,
            snapshot: true,
            ..Traits::default()
        };
        assert_eq!(snapshot_of_rwx.class(), Class::Snapshot);
        let same_name_retained = Traits {
            relation: Relation::SameNameOtherNamespace,
            annotated_retain: true,
            ..Traits::default()
        };
        assert_eq!(same_name_retained.class(), Class::SameNameOtherNamespace);
        let lookalike = Traits {
            relation: Relation::None,
            lookalike: true,
            ..Traits::default()
        };
        assert_eq!(lookalike.class(), Class::Lookalike);
        assert_eq!(Traits::default().class(), Class::NeverAttached);
    }

    #[test]
    fn counts_add_up_per_class() {
        let report = Report::judge(vec![
            object(Class::Hotplugged, false),
            object(Class::Hotplugged, true),
            object(Class::Retained, false),
            object(Class::LivingCluster, true),
        ]);
        let hotplugged = report.class(Class::Hotplugged);
        assert_eq!(
            (hotplugged.total, hotplugged.reclaimed, hotplugged.leaked),
            (2, 1, 1)
        );
        assert_eq!(report.class(Class::Retained).wrongly_deleted, 1);
        assert_eq!(report.class(Class::LivingCluster).kept, 1);
        assert_eq!(report.class(Class::Unattached), ClassSummary::default());
        for counts in report.summary.values() {
            assert_eq!(
                counts.total,
                counts.reclaimed + counts.kept + counts.leaked + counts.wrongly_deleted
            );
        }
    }

    #[test]
    fn classes_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Class::SameNameOtherNamespace).unwrap(),
            "\"same_name_other_namespace\""
        );
        for class in Class::ALL {
            assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
        }
    }
}
