//! The live reads the safety rules demand before a delete (design.md §5, rule 2): every VM a
//! Footprint records, each recorded object by name with the VMs of its namespace that list it,
//! and what every other Footprint records. Never a cache. The reclaimer and `gleaner plan`
//! read the same way, so they plan from the same facts.

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    attribution::{HostKind, HostObjectRecord},
    keys, quantity,
    reclaim::{LiveObject, RecordedVm, VmState},
    retention,
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};

use crate::{
    Error, Result,
    footprint::{Footprint, FootprintStatus},
    management::{
        harvesters::{Harvesters, virtual_machine},
        host_objects,
    },
};

/// An object whose delete was asked already: since when, and what it waits for.
pub struct Pending {
    pub since: Timestamp,
    pub finalizers: Vec<String>,
}

/// Each VM the Footprint records, read live by name: gone when absent or replaced.
pub async fn recorded_vms(
    harvesters: &Harvesters,
    status: &FootprintStatus,
) -> Result<Vec<RecordedVm>> {
    let mut vms = Vec::new();
    for vm in &status.vms {
        let harvester = harvesters.client(&vm.cloud_credential).await?;
        let found =
            Api::<DynamicObject>::namespaced_with(harvester, &vm.namespace, &virtual_machine())
                .get_opt(&vm.name)
                .await
                .map_err(|source| Error::Kube {
                    context: format!("cannot read VM {}/{}", vm.namespace, vm.name),
                    source,
                })?;
        let state = match found {
            Some(found) if vm.uid.is_none() || found.uid() == vm.uid => {
                if found.metadata.deletion_timestamp.is_some() {
                    VmState::Deleting
                } else {
                    VmState::Running
                }
            }
            _ => VmState::Gone,
        };
        vms.push(RecordedVm {
            name: format!("{}/{}", vm.namespace, vm.name),
            uid: vm.uid.clone().unwrap_or_default(),
            state,
        });
    }
    Ok(vms)
}

/// What the live reads of a pass found, each keyed by record UID.
pub struct LiveReads {
    /// Each recorded object found by name, with the VMs of its namespace that list it.
    pub objects: BTreeMap<String, LiveObject>,
    /// Those whose delete was asked already.
    pub pending: BTreeMap<String, Pending>,
    /// The PVCs' storage requests.
    pub bytes: BTreeMap<String, u64>,
}

/// Each recorded object as found by name now.
pub async fn objects(harvesters: &Harvesters, records: &[HostObjectRecord]) -> Result<LiveReads> {
    let mut pending = BTreeMap::new();
    let mut bytes = BTreeMap::new();
    let mut attachments: BTreeMap<(String, String), Vec<VmClaims>> = BTreeMap::new();
    let mut live = BTreeMap::new();
    for record in records {
        let harvester = harvesters.client(&record.cloud_credential).await?;
        let api = Api::<DynamicObject>::namespaced_with(
            harvester.clone(),
            &record.namespace,
            &host_objects::resource(record.kind()),
        );
        let Some(object) = api
            .get_opt(&record.name)
            .await
            .map_err(|source| Error::Kube {
                context: format!(
                    "cannot read {:?} {}/{}",
                    record.kind(),
                    record.namespace,
                    record.name
                ),
                source,
            })?
        else {
            continue;
        };
        let attached_to = if record.kind() == HostKind::PersistentVolumeClaim {
            let key = (record.cloud_credential.clone(), record.namespace.clone());
            if !attachments.contains_key(&key) {
                attachments.insert(
                    key.clone(),
                    claims_by_vm(harvester, &record.namespace).await?,
                );
            }
            attachments[&key]
                .iter()
                .filter(|(_, claims)| claims.contains(&record.name))
                .map(|(uid, _)| uid.clone())
                .collect()
        } else {
            Vec::new()
        };
        if let Some(requested) = object.data["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(quantity::bytes)
        {
            bytes.insert(record.uid.clone(), requested);
        }
        if let Some(since) = &object.metadata.deletion_timestamp {
            pending.insert(
                record.uid.clone(),
                Pending {
                    since: since.0,
                    finalizers: object.finalizers().to_vec(),
                },
            );
        }
        live.insert(
            record.uid.clone(),
            LiveObject {
                uid: object.uid().unwrap_or_default(),
                resource_version: object.resource_version().unwrap_or_default(),
                retention: Some(retention(
                    object
                        .annotations()
                        .get(keys::RETAIN_ANNOTATION)
                        .map(String::as_str),
                )),
                attached_to,
                owned_by: object
                    .owner_references()
                    .iter()
                    .filter(|owner| owner.kind == "VirtualMachine")
                    .map(|owner| owner.uid.clone())
                    .collect(),
                deleting: object.metadata.deletion_timestamp.is_some(),
            },
        );
    }
    Ok(LiveReads {
        objects: live,
        pending,
        bytes,
    })
}

/// A VM's UID and the claims it lists as volumes.
type VmClaims = (String, Vec<String>);

/// Every VM of the namespace (any creator) with the claims it lists as volumes.
async fn claims_by_vm(harvester: kube::Client, namespace: &str) -> Result<Vec<VmClaims>> {
    let vms = Api::<DynamicObject>::namespaced_with(harvester, namespace, &virtual_machine())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot list the VMs of {namespace}"),
            source,
        })?;
    Ok(vms
        .items
        .iter()
        .map(|vm| {
            let claims = vm.data["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|volume| volume["persistentVolumeClaim"]["claimName"].as_str())
                .map(str::to_owned)
                .collect();
            (vm.uid().unwrap_or_default(), claims)
        })
        .collect())
}

/// The UIDs every other Footprint records, from a live list (just before deleting).
pub async fn other_footprints(footprints: &Api<Footprint>, name: &str) -> Result<BTreeSet<String>> {
    let list = footprints
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: "cannot list the Footprints".to_owned(),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter(|other| other.name_any() != name)
        .filter_map(|other| other.status.as_ref())
        .flat_map(|status| status.records())
        .map(|record| record.uid)
        .collect())
}
