//! `gleaner audit`: on each Harvester the cloud credentials reach, every guest-made host object
//! no living cluster accounts for, with the core's verdict. A handful of LISTs per Harvester
//! (PVCs, VMs, Pods, VolumeSnapshots, images, load balancers, `harvester-system`'s
//! NetworkFilesystems), whatever its size; nothing is written.

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    ConditionType,
    attribution::{HostKind, NETWORK_FILESYSTEM_NAMESPACE},
    audit::{AuditFacts, Finding, HostObject, HostVm, KnownCluster, Verdict, audit},
    keys, quantity, retention,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde::Serialize;

use super::{Session, output::Table, plan::human_bytes};
use crate::{
    Error, Result,
    cli::AuditArgs,
    footprint::{Footprint, Phase},
    management::{
        harvesters::{Harvesters, virtual_machine},
        host_objects::{self, GUEST_CLUSTER_LABEL},
    },
};

/// The annotation a load balancer carries with its guest Service's UID.
const SERVICE_UID_ANNOTATION: &str = "cloudprovider.harvesterhci.io/service-uuid";
/// The label a load balancer carries with its guest cluster's name.
const LOAD_BALANCER_CLUSTER_LABEL: &str = "cloudprovider.harvesterhci.io/cluster";
/// The label the CSI driver puts on the host VolumeSnapshots it makes.
const SNAPSHOT_CLASS_LABEL: &str = "harvesterhci.io/snapHostSC";
const GOLDEN_IMAGE_ANNOTATION: &str = "harvesterhci.io/goldenImage";
const IMAGE_ID_ANNOTATION: &str = "harvesterhci.io/imageId";

/// What `gleaner audit` answers, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub harvesters: Vec<Audited>,
    pub findings: Vec<Found>,
    pub totals: AuditTotals,
}

/// One Harvester, told by its `kube-system` UID, and the credentials that reach it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audited {
    pub credentials: Vec<String>,
    pub kube_system_uid: String,
}

#[derive(Debug, Serialize)]
pub struct Found {
    /// The credential it was read through.
    pub harvester: String,
    #[serde(flatten)]
    pub finding: Finding,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditTotals {
    pub orphans: usize,
    pub orphan_bytes: u64,
    pub in_use: usize,
    pub unknown: usize,
}

/// Audits the Harvesters `args` names, or every one the Footprints use.
pub async fn report(args: &AuditArgs) -> Result<AuditReport> {
    let session = Session::open(&args.inspect, std::time::Duration::ZERO).await?;
    let footprints = session.all_footprints().await?;
    let credentials: BTreeSet<String> = if args.harvesters.is_empty() {
        credentials_of(&footprints)
    } else {
        args.harvesters.iter().cloned().collect()
    };
    if credentials.is_empty() {
        return Err(Error::Unanswerable(format!(
            "no Footprint in {} names a Harvester: give --harvester NAMESPACE:NAME",
            session.gleaner_namespace
        )));
    }
    audit_with(&session.harvesters, &footprints, &credentials).await
}

/// The credentials every Footprint's pools use.
pub fn credentials_of(footprints: &[Footprint]) -> BTreeSet<String> {
    footprints
        .iter()
        .flat_map(|footprint| &footprint.spec.pools)
        .map(|pool| pool.cloud_credential.clone())
        .collect()
}

/// Audits the Harvesters `credentials` reach, against what `footprints` record.
pub async fn audit_with(
    clients: &Harvesters,
    footprints: &[Footprint],
    credentials: &BTreeSet<String>,
) -> Result<AuditReport> {
    // Several credentials may reach one Harvester: audit it once.
    let mut harvesters: BTreeMap<String, (Vec<String>, Client)> = BTreeMap::new();
    for credential in credentials {
        let client = clients.client(credential).await?;
        let uid = Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read kube-system on the Harvester of {credential}"),
                source,
            })?
            .uid()
            .unwrap_or_default();
        harvesters
            .entry(uid)
            .or_insert_with(|| (Vec::new(), client))
            .0
            .push(credential.clone());
    }
    let mut report = AuditReport {
        harvesters: Vec::new(),
        findings: Vec::new(),
        totals: AuditTotals::default(),
    };
    for (uid, (credentials, client)) in harvesters {
        let facts = read(&client, &credentials, &uid, footprints).await?;
        for finding in audit(&facts) {
            match &finding.verdict {
                Verdict::Orphan => {
                    report.totals.orphans += 1;
                    report.totals.orphan_bytes += finding.bytes.unwrap_or(0);
                }
                Verdict::InUse(_) => report.totals.in_use += 1,
                Verdict::Unknown(_) => report.totals.unknown += 1,
            }
            report.findings.push(Found {
                harvester: credentials[0].clone(),
                finding,
            });
        }
        report.harvesters.push(Audited {
            credentials,
            kube_system_uid: uid,
        });
    }
    Ok(report)
}

fn virtual_machine_image() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "VirtualMachineImage"),
        "virtualmachineimages",
    )
}

async fn list(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Result<Vec<DynamicObject>> {
    let api = match namespace {
        Some(namespace) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource)
        }
        None => Api::all_with(client.clone(), resource),
    };
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot list {}s on Harvester", resource.kind),
            source,
        })?
        .items)
}

/// The live facts of one Harvester and what this installation's Footprints know of it.
async fn read(
    client: &Client,
    credentials: &[String],
    kube_system_uid: &str,
    footprints: &[Footprint],
) -> Result<AuditFacts> {
    let images = list(client, &virtual_machine_image(), None).await?;
    let pvcs = list(
        client,
        &host_objects::resource(HostKind::PersistentVolumeClaim),
        None,
    )
    .await?;
    let snapshots = list(
        client,
        &host_objects::resource(HostKind::VolumeSnapshot),
        None,
    )
    .await?;
    let filesystems = list(
        client,
        &host_objects::resource(HostKind::NetworkFilesystem),
        Some(NETWORK_FILESYSTEM_NAMESPACE),
    )
    .await?;
    let load_balancers = list(
        client,
        &host_objects::resource(HostKind::LoadBalancer),
        None,
    )
    .await?;
    let vms = list(client, &virtual_machine(), None).await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: "cannot list Pods on Harvester".to_owned(),
            source,
        })?;
    let pod_claims = pods
        .items
        .iter()
        .flat_map(|pod| {
            let namespace = pod.namespace().unwrap_or_default();
            pod.spec
                .iter()
                .flat_map(|spec| spec.volumes.iter().flatten())
                .filter_map(|volume| volume.persistent_volume_claim.as_ref())
                .map(move |claim| (namespace.clone(), claim.claim_name.clone()))
        })
        .collect();
    Ok(AuditFacts {
        pvcs: pvcs.iter().map(|pvc| pvc_of(pvc, &images)).collect(),
        snapshots: snapshots
            .iter()
            .map(|snapshot| HostObject {
                volume: snapshot.data["spec"]["source"]["persistentVolumeClaimName"]
                    .as_str()
                    .map(str::to_owned),
                csi_labelled: snapshot.labels().contains_key(SNAPSHOT_CLASS_LABEL),
                ..marked(snapshot)
            })
            .collect(),
        filesystems: filesystems.iter().map(marked).collect(),
        load_balancers: load_balancers
            .iter()
            .map(|balancer| HostObject {
                service_uid: (balancer.data["spec"]["workloadType"] == "cluster")
                    .then(|| balancer.annotations().get(SERVICE_UID_ANNOTATION).cloned())
                    .flatten(),
                cluster_label: balancer.labels().get(LOAD_BALANCER_CLUSTER_LABEL).cloned(),
                ..marked(balancer)
            })
            .collect(),
        vms: vms
            .iter()
            .map(|vm| HostVm {
                namespace: vm.namespace().unwrap_or_default(),
                name: vm.name_any(),
                uid: vm.uid().unwrap_or_default(),
                claims: vm.data["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|volume| volume["persistentVolumeClaim"]["claimName"].as_str())
                    .map(str::to_owned)
                    .collect(),
            })
            .collect(),
        pod_claims,
        clusters: footprints
            .iter()
            .map(|footprint| known(footprint, credentials, kube_system_uid))
            .collect(),
    })
}

/// The object's identity and gleaner's marks on it.
fn marked(object: &DynamicObject) -> HostObject {
    let uid = object.uid().unwrap_or_default();
    let annotations = object.annotations();
    // A kept mark counts only when gleaner wrote it for this very object (a copy carries the
    // original's identity annotation, with the original's UID).
    let ours = annotations
        .get(keys::CLUSTER_ANNOTATION)
        .is_none_or(|identity| identity.ends_with(&format!("@{uid}")));
    HostObject {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        retained: retention(annotations.get(keys::RETAIN_ANNOTATION).map(String::as_str)).holds(),
        kept: annotations
            .get(keys::KEPT_ANNOTATION)
            .filter(|_| ours)
            .cloned(),
        owned_by_vm: object
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "VirtualMachine"),
        created: object.creation_timestamp().map(|time| time.0),
        uid,
        ..HostObject::default()
    }
}

fn pvc_of(pvc: &DynamicObject, images: &[DynamicObject]) -> HostObject {
    let (namespace, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
    let golden = pvc
        .annotations()
        .get(GOLDEN_IMAGE_ANNOTATION)
        .is_some_and(|value| value == "true")
        && pvc
            .annotations()
            .get(IMAGE_ID_ANNOTATION)
            .is_some_and(|id| {
                images.iter().any(|image| {
                    format!(
                        "{}/{}",
                        image.namespace().unwrap_or_default(),
                        image.name_any()
                    ) == *id
                })
            });
    let exported = images.iter().any(|image| {
        image.data["spec"]["sourceType"] == "export-from-volume"
            && image.data["spec"]["pvcNamespace"] == namespace.as_str()
            && image.data["spec"]["pvcName"] == name.as_str()
            && !image.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|condition| condition["type"] == "Imported" && condition["status"] == "True")
    });
    HostObject {
        access_modes: pvc.data["spec"]["accessModes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|mode| mode.as_str())
            .map(str::to_owned)
            .collect(),
        volume: pvc.data["spec"]["volumeName"].as_str().map(str::to_owned),
        image_source: golden || exported,
        cluster_label: pvc.labels().get(GUEST_CLUSTER_LABEL).cloned(),
        bytes: pvc.data["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(quantity::bytes),
        ..marked(pvc)
    }
}

/// What a Footprint knows of this Harvester.
fn known(footprint: &Footprint, credentials: &[String], kube_system_uid: &str) -> KnownCluster {
    let identity = &footprint.spec.identity;
    let status = footprint.status.clone().unwrap_or_default();
    let on_this_harvester = |pool: &str, credential: &str| {
        status
            .harvesters
            .iter()
            .find(|harvester| harvester.pool == pool)
            .map_or(
                credentials.iter().any(|ours| ours == credential),
                |harvester| harvester.kube_system_uid == kube_system_uid,
            )
    };
    KnownCluster {
        footprint: footprint.name_any(),
        cluster: format!("{}/{}", identity.namespace, identity.name),
        living: matches!(status.phase, None | Some(Phase::Tracking)),
        vm_namespaces: footprint
            .spec
            .pools
            .iter()
            .filter(|pool| on_this_harvester(&pool.name, &pool.cloud_credential))
            .map(|pool| pool.vm_namespace.clone())
            .collect(),
        vms: status.vms.iter().filter_map(|vm| vm.uid.clone()).collect(),
        records: status
            .records()
            .into_iter()
            .map(|record| record.uid)
            .collect(),
        guest_complete: status.conditions.iter().any(|condition| {
            condition.type_ == ConditionType::GuestUnreachable.to_string()
                && condition.status == "False"
        }),
    }
}

/// The report for people: one row per finding, orphans first, then the totals.
pub fn table(report: &AuditReport, wide: bool) -> String {
    let mut header = vec![
        "VERDICT",
        "KIND",
        "NAMESPACE",
        "NAME",
        "SIZE",
        "WHY",
        "LAST CLUSTER",
    ];
    if wide {
        header.extend(["UID", "HARVESTER", "CREATED"]);
    }
    let mut table = Table::new(&header);
    let rank = |found: &&Found| match found.finding.verdict {
        Verdict::Orphan => 0,
        Verdict::Unknown(_) => 1,
        Verdict::InUse(_) => 2,
    };
    let mut findings: Vec<&Found> = report.findings.iter().collect();
    findings.sort_by_key(rank);
    for found in findings {
        let finding = &found.finding;
        let (word, why, colour) = match &finding.verdict {
            Verdict::Orphan => ("orphan", "-".to_owned(), anstyle::AnsiColor::Red),
            Verdict::InUse(why) => ("in use", why.to_string(), anstyle::AnsiColor::Green),
            Verdict::Unknown(why) => ("unknown", why.to_string(), anstyle::AnsiColor::Yellow),
        };
        let mut row = vec![
            word.to_owned(),
            format!("{:?}", finding.kind),
            finding.namespace.clone(),
            finding.name.clone(),
            finding.bytes.map_or_else(|| "-".to_owned(), human_bytes),
            why,
            finding
                .last_cluster
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ];
        if wide {
            row.extend([
                finding.uid.clone(),
                found.harvester.clone(),
                finding
                    .created
                    .map_or_else(|| "-".to_owned(), |time| time.to_string()),
            ]);
        }
        table.row(row, anstyle::Style::new().fg_color(Some(colour.into())));
    }
    let mut out = if report.findings.is_empty() {
        "No guest-made host object found.\n".to_owned()
    } else {
        table.render()
    };
    let totals = &report.totals;
    out.push_str(&format!(
        "\n{} orphan(s) ({}), {} unknown, {} in use, on {} Harvester(s).\n",
        totals.orphans,
        human_bytes(totals.orphan_bytes),
        totals.unknown,
        totals.in_use,
        report.harvesters.len()
    ));
    out
}
