//! `gleaner plan CLUSTER`: every recorded host object of the cluster with what the reclaimer's
//! plan does with it and why, totals and bytes at the bottom.

use gleaner_core::{
    attribution::{Conflict, Evidence, HostKind, HostObjectRecord, ObjectClass},
    reclaim::{Plan, Verdict},
};
use kube::ResourceExt;
use serde::Serialize;

use super::{Decided, Question, Session, output::Table};
use crate::{Result, cli::PlanArgs, footprint::Phase};

/// What `gleaner plan` answers, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// `namespace/name` in Rancher.
    pub cluster: String,
    pub footprint: String,
    pub phase: Option<Phase>,
    pub question: Question,
    /// Set when the plan holds the whole cluster: then every object is `Hold`.
    pub hold: Option<Hold>,
    pub objects: Vec<PlannedObject>,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct Hold {
    pub reason: &'static str,
    pub message: String,
}

/// What the plan does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    Delete,
    Keep,
    /// Nothing of its name exists any more.
    Gone,
    /// The whole cluster is held.
    Hold,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    pub action: Action,
    /// Why it is kept (a `gleaner.io/kept` reason).
    pub reason: Option<&'static str>,
    pub kind: HostKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub class: ObjectClass,
    /// The cloud credential that reaches its Harvester.
    pub harvester: String,
    /// A PVC's storage request.
    pub bytes: Option<u64>,
    pub evidence: Vec<Evidence>,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub delete: usize,
    pub keep: usize,
    pub gone: usize,
    pub hold: usize,
    pub delete_bytes: u64,
    pub keep_bytes: u64,
}

/// Works out the plan of the cluster `args` names.
pub async fn report(args: &PlanArgs) -> Result<PlanReport> {
    let session = Session::open(&args.inspect, args.policy.policy_max_age).await?;
    let footprint = session.footprint_of(&args.namespace, &args.cluster).await?;
    let decided = session.decide(&footprint).await?;
    Ok(of(
        format!("{}/{}", args.namespace, args.cluster),
        footprint.name_any(),
        footprint.status.as_ref().and_then(|status| status.phase),
        decided,
    ))
}

fn of(cluster: String, footprint: String, phase: Option<Phase>, decided: Decided) -> PlanReport {
    let Decided {
        question,
        plan,
        records,
        bytes,
    } = decided;
    let planned =
        |record: HostObjectRecord, action: Action, reason: Option<&'static str>| PlannedObject {
            action,
            reason,
            kind: record.kind(),
            bytes: bytes.get(&record.uid).copied(),
            namespace: record.namespace,
            name: record.name,
            uid: record.uid,
            class: record.class,
            harvester: record.cloud_credential,
            evidence: record.evidence,
            conflicts: record.conflicts,
        };
    let (hold, objects): (Option<Hold>, Vec<PlannedObject>) = match plan {
        Plan::Hold(reason) => (
            Some(Hold {
                reason: reason.name(),
                message: reason.to_string(),
            }),
            records
                .into_iter()
                .map(|record| planned(record, Action::Hold, None))
                .collect(),
        ),
        Plan::Act(steps) => (
            None,
            steps
                .into_iter()
                .map(|(record, verdict)| match verdict {
                    Verdict::Delete => planned(record, Action::Delete, None),
                    Verdict::Keep(reason) => planned(record, Action::Keep, Some(reason.as_str())),
                    Verdict::Gone => planned(record, Action::Gone, None),
                })
                .collect(),
        ),
    };
    let mut totals = Totals::default();
    for object in &objects {
        let size = object.bytes.unwrap_or(0);
        match object.action {
            Action::Delete => {
                totals.delete += 1;
                totals.delete_bytes += size;
            }
            Action::Keep => {
                totals.keep += 1;
                totals.keep_bytes += size;
            }
            Action::Gone => totals.gone += 1,
            Action::Hold => totals.hold += 1,
        }
    }
    PlanReport {
        cluster,
        footprint,
        phase,
        question,
        hold,
        objects,
        totals,
    }
}

/// The report for people: a headline, one row per object, the totals.
pub fn table(report: &PlanReport, wide: bool) -> String {
    let mut out = String::new();
    let asked = match report.question {
        Question::IfDeletedNow => "if it were deleted now",
        Question::Now => "now that its deletion is confirmed (grace period aside)",
    };
    out.push_str(&format!(
        "Cluster {} (Footprint {}), {asked}:\n",
        report.cluster, report.footprint
    ));
    if let Some(hold) = &report.hold {
        out.push_str(&format!(
            "nothing is deleted: {} ({})\n",
            hold.message, hold.reason
        ));
    }
    let mut header = vec![
        "ACTION",
        "KIND",
        "NAMESPACE",
        "NAME",
        "CLASS",
        "REASON",
        "SIZE",
    ];
    if wide {
        header.extend(["UID", "HARVESTER", "EVIDENCE"]);
    }
    let mut table = Table::new(&header);
    for object in &report.objects {
        let mut row = vec![
            action_word(object.action).to_owned(),
            format!("{:?}", object.kind),
            object.namespace.clone(),
            object.name.clone(),
            format!("{:?}", object.class),
            object.reason.unwrap_or("-").to_owned(),
            object.bytes.map_or_else(|| "-".to_owned(), human_bytes),
        ];
        if wide {
            row.extend([
                object.uid.clone(),
                object.harvester.clone(),
                object
                    .evidence
                    .iter()
                    .map(|evidence| String::from(evidence.clone()))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        table.row(row, style_of(object.action));
    }
    if report.objects.is_empty() {
        out.push_str("The Footprint records no host object.\n");
    } else {
        out.push_str(&table.render());
    }
    let totals = &report.totals;
    out.push_str(&format!(
        "\n{} to delete ({}), {} to keep ({}), {} gone, {} held.\n",
        totals.delete,
        human_bytes(totals.delete_bytes),
        totals.keep,
        human_bytes(totals.keep_bytes),
        totals.gone,
        totals.hold,
    ));
    if report.question == Question::IfDeletedNow {
        out.push_str(
            "Only what the Footprint records so far is listed: gleaner takes one last inventory \
             of the guest when the deletion is confirmed.\n",
        );
    }
    out
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Delete => "delete",
        Action::Keep => "keep",
        Action::Gone => "gone",
        Action::Hold => "hold",
    }
}

fn style_of(action: Action) -> anstyle::Style {
    let colour = match action {
        Action::Delete => anstyle::AnsiColor::Red,
        Action::Keep => anstyle::AnsiColor::Green,
        Action::Gone => anstyle::AnsiColor::BrightBlack,
        Action::Hold => anstyle::AnsiColor::Yellow,
    };
    anstyle::Style::new().fg_color(Some(colour.into()))
}

/// Bytes in binary units, as Kubernetes quantities read (`10Gi`, `512Mi`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gleaner_core::reclaim::{HoldReason, KeepReason};

    use super::*;

    fn record(uid: &str, class: ObjectClass) -> HostObjectRecord {
        HostObjectRecord {
            cloud_credential: "cattle-global-data:hv".into(),
            namespace: "default".into(),
            name: format!("pvc-{uid}"),
            uid: uid.into(),
            class,
            evidence: vec![Evidence::HotPlugged {
                vm_uid: "vm-1".into(),
            }],
            guest_cluster_hint: None,
            conflicts: Vec::new(),
            guest_policy: None,
        }
    }

    #[test]
    fn totals_count_each_action_and_the_bytes_of_what_goes_and_stays() {
        let decided = Decided {
            question: Question::IfDeletedNow,
            plan: Plan::Act(vec![
                (record("a", ObjectClass::Volume), Verdict::Delete),
                (
                    record("b", ObjectClass::Volume),
                    Verdict::Keep(KeepReason::GuestRetain),
                ),
                (record("c", ObjectClass::Volume), Verdict::Gone),
            ]),
            records: Vec::new(),
            bytes: BTreeMap::from([("a".into(), 10 << 30), ("b".into(), 512 << 20)]),
        };
        let report = of("fleet-default/prod".into(), "fp".into(), None, decided);
        assert_eq!(
            (report.totals.delete, report.totals.keep, report.totals.gone),
            (1, 1, 1)
        );
        assert_eq!(report.totals.delete_bytes, 10 << 30);
        assert_eq!(report.objects[1].reason, Some("GuestRetain"));
        let text = table(&report, false);
        assert!(
            text.contains("1 to delete (10Gi), 1 to keep (512Mi), 1 gone"),
            "{text}"
        );
        assert!(text.contains("GuestRetain"), "{text}");
        assert!(!text.contains("HotPlugged:vm-1"), "{text}");
        assert!(table(&report, true).contains("HotPlugged:vm-1"));
    }

    #[test]
    fn a_held_cluster_lists_every_object_as_held_with_the_reason() {
        let decided = Decided {
            question: Question::IfDeletedNow,
            plan: Plan::Hold(HoldReason::Frozen),
            records: vec![record("a", ObjectClass::Volume)],
            bytes: BTreeMap::new(),
        };
        let report = of("fleet-default/prod".into(), "fp".into(), None, decided);
        assert_eq!(report.hold.as_ref().unwrap().reason, "Frozen");
        assert_eq!(report.objects[0].action, Action::Hold);
        assert!(table(&report, false).contains("the cluster is paused"));
    }

    #[test]
    fn bytes_read_as_kubernetes_quantities() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(10 << 30), "10Gi");
        assert_eq!(human_bytes(1536 << 20), "1.5Gi");
        assert_eq!(human_bytes(3 << 40), "3Ti");
    }
}
