//! `gleaner adopt`: the objects an audit finds orphans, handed to the reclaimer in an adopted
//! Footprint (design.md's Footprint, with `spec.adopted` and each record's evidence
//! `Adopted:<who>`). Each object named must be an orphan at that moment; the reclaimer checks
//! again, live, just before each delete.

use std::collections::BTreeSet;

use gleaner_core::{
    attribution::{Evidence, HostKind, HostObjectRecord, ObjectClass},
    audit::Verdict,
};
use k8s_openapi::{
    api::authentication::v1::SelfSubjectReview, apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::Serialize;

use super::{
    Session,
    audit::{Found, audit_with, credentials_of},
    output::Table,
    plan::human_bytes,
};
use crate::{
    Error, Result,
    cli::AdoptArgs,
    footprint::{Adoption, Footprint, FootprintSpec, FootprintStatus, Identity, Phase, Pool},
    management::{
        host_objects,
        observe::live_install_uuid,
        status::{STATUS_MANAGER, StatusWriter, owned},
    },
};

/// What `gleaner adopt` did, or would do.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptReport {
    /// The adopted Footprint made, with `--confirm`.
    pub footprint: Option<String>,
    pub objects: Vec<Found>,
}

/// Adopts what `args` names, if every one is an orphan now.
pub async fn report(args: &AdoptArgs) -> Result<AdoptReport> {
    let session = Session::open(&args.audit.inspect, std::time::Duration::ZERO).await?;
    let footprints = session.all_footprints().await?;
    let credentials: BTreeSet<String> = if args.audit.harvesters.is_empty() {
        credentials_of(&footprints)
    } else {
        args.audit.harvesters.iter().cloned().collect()
    };
    let audit = audit_with(&session.harvesters, &footprints, &credentials).await?;
    let selected = match &args.selector {
        Some(selector) => Some(labelled(&session, &audit.harvesters, selector).await?),
        None => None,
    };
    let chosen = chosen(args, selected.as_ref(), audit.findings)?;
    if chosen.is_empty() || !args.confirm {
        return Ok(AdoptReport {
            footprint: None,
            objects: chosen,
        });
    }
    let name = adopt(&session, &chosen, &audit.totals.orphans).await?;
    Ok(AdoptReport {
        footprint: Some(name),
        objects: chosen,
    })
}

/// The UIDs of the objects of every kind gleaner audits whose labels match `selector`, on the
/// audited Harvesters (one labelled LIST per kind and Harvester).
async fn labelled(
    session: &Session,
    harvesters: &[super::audit::Audited],
    selector: &str,
) -> Result<BTreeSet<String>> {
    let mut uids = BTreeSet::new();
    for audited in harvesters {
        let client = session.harvesters.client(&audited.credentials[0]).await?;
        for kind in [
            HostKind::PersistentVolumeClaim,
            HostKind::VolumeSnapshot,
            HostKind::NetworkFilesystem,
            HostKind::LoadBalancer,
        ] {
            let resource = host_objects::resource(kind);
            let found = Api::<kube::api::DynamicObject>::all_with(client.clone(), &resource)
                .list(&kube::api::ListParams::default().labels(selector))
                .await
                .map_err(|source| Error::Kube {
                    context: format!("cannot list {}s labelled {selector}", resource.kind),
                    source,
                })?;
            uids.extend(found.items.iter().filter_map(kube::ResourceExt::uid));
        }
    }
    Ok(uids)
}

/// The findings `args` names (or every orphan with `--all`, or every finding `selected` holds);
/// an error naming each one that is not an orphan, or not found.
fn chosen(
    args: &AdoptArgs,
    selected: Option<&BTreeSet<String>>,
    findings: Vec<Found>,
) -> Result<Vec<Found>> {
    if args.all {
        return Ok(findings
            .into_iter()
            .filter(|found| found.finding.verdict == Verdict::Orphan)
            .collect());
    }
    if let Some(selected) = selected {
        let (orphans, refused): (Vec<Found>, Vec<Found>) = findings
            .into_iter()
            .filter(|found| selected.contains(&found.finding.uid))
            .partition(|found| found.finding.verdict == Verdict::Orphan);
        if refused.is_empty() {
            return Ok(orphans);
        }
        return Err(Error::Unanswerable(format!(
            "nothing adopted; selected but not orphans now: {}",
            refused
                .iter()
                .map(|found| format!(
                    "{}: {}",
                    found.finding.name,
                    not_orphan(&found.finding.verdict)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let mut refused = Vec::new();
    let mut chosen = Vec::new();
    let mut findings: Vec<Option<Found>> = findings.into_iter().map(Some).collect();
    for wanted in &args.objects {
        let (kind, name) = match wanted.split_once('/') {
            Some((kind, name)) => (Some(super::explain::kind_of(kind)?), name),
            None => (None, wanted.as_str()),
        };
        let matching = findings.iter_mut().find(|found| {
            found.as_ref().is_some_and(|found| {
                found.finding.name == name && kind.is_none_or(|kind| found.finding.kind == kind)
            })
        });
        match matching.and_then(Option::take) {
            None => refused.push(format!(
                "{wanted}: the audit finds no such guest-made object"
            )),
            Some(found) if found.finding.verdict != Verdict::Orphan => {
                refused.push(format!("{wanted}: {}", not_orphan(&found.finding.verdict)));
            }
            Some(found) => chosen.push(found),
        }
    }
    if refused.is_empty() {
        Ok(chosen)
    } else {
        Err(Error::Unanswerable(format!(
            "nothing adopted; not orphans now: {}",
            refused.join("; ")
        )))
    }
}

/// Why a verdict is not an orphan's, in words.
fn not_orphan(verdict: &Verdict) -> String {
    match verdict {
        Verdict::InUse(why) => format!("in use, {why}"),
        Verdict::Unknown(why) => format!("unknown, {why}"),
        Verdict::Orphan => "an orphan".to_owned(),
    }
}

/// Makes the adopted Footprint: its spec, then its status (`Reclaiming`, the records), written
/// as the Footprint controller's own so the reclaimer owns it from there.
async fn adopt(session: &Session, chosen: &[Found], orphans: &usize) -> Result<String> {
    let install_uuid = live_install_uuid(&session.client)
        .await?
        .ok_or(Error::InstallUuidMissing)?;
    let by = Api::<SelfSubjectReview>::all(session.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|source| Error::Kube {
            context: "cannot ask the apiserver who you are (SelfSubjectReview)".into(),
            source,
        })?
        .status
        .and_then(|status| status.user_info)
        .and_then(|user| user.username)
        .unwrap_or_else(|| "unknown".to_owned());
    let now = Timestamp::now();
    let name = format!(
        "adopted-{}-{:05}",
        now.as_second(),
        rand::random_range(0..100_000)
    );
    let mut pools: Vec<Pool> = chosen
        .iter()
        .map(|found| (found.harvester.clone(), found.finding.namespace.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(index, (cloud_credential, vm_namespace))| Pool {
            name: format!("adopted-{index}"),
            cloud_credential,
            vm_namespace,
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let footprint = Footprint {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(session.gleaner_namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: FootprintSpec {
            identity: Identity {
                install_uuid,
                namespace: session.gleaner_namespace.clone(),
                name: name.clone(),
                provisioning_cluster_uid: name.clone(),
                capi_cluster_uid: Some(name.clone()),
            },
            pools,
            adopted: Some(Adoption {
                by: by.clone(),
                at: Time(now),
                audit: format!(
                    "{} of the {orphans} orphan(s) the audit found at {now}",
                    chosen.len()
                ),
            }),
        },
        status: None,
    };
    session
        .footprints
        .create(&PostParams::default(), &footprint)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot create the adopted Footprint {name}"),
            source,
        })?;
    let mut status = FootprintStatus {
        phase: Some(Phase::Reclaiming),
        ..FootprintStatus::default()
    };
    status.set_records(chosen.iter().map(|found| record(found, &by)).collect());
    let body = serde_json::json!({
        "apiVersion": Footprint::api_version(&()),
        "kind": Footprint::kind(&()),
        "metadata": {"name": name},
        "status": owned(StatusWriter::Footprints, &status),
    });
    session
        .footprints
        .patch_status(
            &name,
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot write the status of the adopted Footprint {name}"),
            source,
        })?;
    Ok(name)
}

fn record(found: &Found, by: &str) -> HostObjectRecord {
    let finding = &found.finding;
    HostObjectRecord {
        cloud_credential: found.harvester.clone(),
        namespace: finding.namespace.clone(),
        name: finding.name.clone(),
        uid: finding.uid.clone(),
        class: match finding.kind {
            HostKind::PersistentVolumeClaim => ObjectClass::Volume,
            HostKind::NetworkFilesystem => ObjectClass::NetworkFilesystem,
            HostKind::VolumeSnapshot => ObjectClass::Snapshot,
            HostKind::LoadBalancer => ObjectClass::LoadBalancer,
        },
        evidence: vec![Evidence::Adopted { by: by.to_owned() }],
        guest_cluster_hint: None,
        conflicts: Vec::new(),
        guest_policy: None,
    }
}

/// The report for people.
pub fn table(report: &AdoptReport) -> String {
    if report.objects.is_empty() {
        return "No orphan to adopt.\n".to_owned();
    }
    let mut table = Table::new(&["KIND", "NAMESPACE", "NAME", "SIZE", "HARVESTER"]);
    for found in &report.objects {
        table.row(
            vec![
                format!("{:?}", found.finding.kind),
                found.finding.namespace.clone(),
                found.finding.name.clone(),
                found
                    .finding
                    .bytes
                    .map_or_else(|| "-".to_owned(), human_bytes),
                found.harvester.clone(),
            ],
            anstyle::Style::new(),
        );
    }
    let mut out = table.render();
    match &report.footprint {
        Some(footprint) => out.push_str(&format!(
            "\nAdopted {} object(s) into Footprint {footprint}: the reclaimer deletes each once a \
             live audit still finds it an orphan (grace period, dry run and gleaner.io/retain \
             apply). Follow it with kubectl describe footprint {footprint}.\n",
            report.objects.len()
        )),
        None => out.push_str(&format!(
            "\nWould adopt {} object(s); nothing written. Run again with --confirm to adopt.\n",
            report.objects.len()
        )),
    }
    out
}
