//! The Harvester node driver's `Remove()` (docker-machine-driver-harvester), as design.md §3
//! describes it for the versions Rancher ships.

use std::{fmt, str::FromStr, time::Duration};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
};
use serde_json::Value;

use crate::{
    Env, Error, Result,
    error::KubeContext,
    keys::{LABEL_GUEST_CLUSTER, REMOVE_ALL_PVCS, REMOVED_PVCS},
    kinds,
};

const ACTOR: &str = "node-driver";
const POLL: Duration = Duration::from_secs(5);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(600);

/// A node driver release Rancher ships: 2.11 → 1.0.2, 2.12 → 1.0.3, 2.13 → 1.0.4, 2.14 → 1.0.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DriverVersion {
    V1_0_2,
    V1_0_3,
    V1_0_4,
    V1_0_5,
    V1_0_6,
}

impl DriverVersion {
    /// Since v1.0.5 `Remove()` also lists the PVCs labelled with the guest cluster's name.
    fn lists_pvcs_by_cluster_label(self) -> bool {
        self >= Self::V1_0_5
    }
}

impl FromStr for DriverVersion {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim_start_matches('v') {
            "1.0.2" => Ok(Self::V1_0_2),
            "1.0.3" => Ok(Self::V1_0_3),
            "1.0.4" => Ok(Self::V1_0_4),
            "1.0.5" => Ok(Self::V1_0_5),
            "1.0.6" => Ok(Self::V1_0_6),
            _ => Err(Error::Invalid(format!(
                "unknown Harvester node driver version {text:?}: the simulator knows 1.0.2 to 1.0.6"
            ))),
        }
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patch = match self {
            Self::V1_0_2 => 2,
            Self::V1_0_3 => 3,
            Self::V1_0_4 => 4,
            Self::V1_0_5 => 5,
            Self::V1_0_6 => 6,
        };
        write!(f, "1.0.{patch}")
    }
}

/// The VM a HarvesterMachine stands for, as the driver sees it.
pub(crate) struct DriverTarget<'a> {
    pub(crate) vm_namespace: &'a str,
    pub(crate) vm_name: &'a str,
    /// The driver's `--harvester-cluster-name` (Rancher passes the provisioning Cluster's name).
    pub(crate) cluster_name: Option<&'a str>,
}

/// `Remove()`: list the VM's PVCs to delete, write them on the VM, delete the VM (foreground) and
/// poll until it is gone. Harvester's VM controller deletes the listed PVCs.
pub(crate) async fn remove(
    harvester: &Client,
    target: &DriverTarget<'_>,
    version: DriverVersion,
    env: &Env,
) -> Result<()> {
    let vms = kinds::namespaced(harvester, target.vm_namespace, &kinds::virtual_machine());
    let vm_ref = format!("{}/{}", target.vm_namespace, target.vm_name);
    let Some(mut vm) = vms
        .get_opt(target.vm_name)
        .await
        .context(|| format!("driver {version}: cannot read VM {vm_ref}"))?
    else {
        env.journal
            .record(ACTOR, format!("VM {vm_ref} not found: nothing to remove"));
        return Ok(());
    };
    let remove_all = vm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REMOVE_ALL_PVCS))
        == Some(&"true".to_owned());
    let mut claims = volume_claims(&vm, remove_all);
    if remove_all
        && version.lists_pvcs_by_cluster_label()
        && let Some(cluster) = target.cluster_name
    {
        for claim in labelled_claims(harvester, target.vm_namespace, cluster).await? {
            if !claims.contains(&claim) {
                claims.push(claim);
            }
        }
    }
    vm.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REMOVED_PVCS.to_owned(), claims.join(","));
    // A PUT of the whole object, with the resourceVersion it read, as the driver does.
    vms.replace(target.vm_name, &PostParams::default(), &vm)
        .await
        .context(|| format!("driver {version}: cannot update VM {vm_ref}"))?;
    env.journal.record(
        ACTOR,
        format!(
            "driver {version} marked VM {vm_ref} (removeAll={remove_all}) to remove PVCs [{}]",
            claims.join(",")
        ),
    );
    vms.delete(target.vm_name, &DeleteParams::foreground())
        .await
        .context(|| format!("driver {version}: cannot delete VM {vm_ref}"))?;
    env.journal.record(ACTOR, format!("deleted VM {vm_ref}"));
    wait_gone(&vms, target.vm_name, env).await?;
    env.journal.record(ACTOR, format!("VM {vm_ref} is gone"));
    Ok(())
}

/// Own disks always; hot-plugged volumes only when removeAll is exactly "true".
fn volume_claims(vm: &DynamicObject, remove_all: bool) -> Vec<String> {
    let volumes = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes
        .iter()
        .filter_map(|volume| {
            let claim = &volume["persistentVolumeClaim"];
            let name = claim["claimName"].as_str()?;
            let hotpluggable = claim["hotpluggable"] == Value::Bool(true);
            (!hotpluggable || remove_all).then(|| name.to_owned())
        })
        .collect()
}

async fn labelled_claims(
    harvester: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<String>> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(harvester.clone(), namespace);
    let listed = claims
        .list(&ListParams::default().labels(&format!("{LABEL_GUEST_CLUSTER}={cluster}")))
        .await
        .context(|| format!("cannot list PVCs labelled for {cluster} in {namespace}"))?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|claim| claim.metadata.name)
        .collect())
}

async fn wait_gone(vms: &Api<DynamicObject>, name: &str, env: &Env) -> Result<()> {
    let deadline = tokio::time::Instant::now() + env.clock.scaled(REMOVE_TIMEOUT);
    loop {
        let gone = vms
            .get_opt(name)
            .await
            .context(|| format!("cannot poll VM {name}"))?
            .is_none();
        if gone {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "VM {name} still exists after Remove()"
            )));
        }
        env.clock.sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(volumes: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm"},
            "spec": {"template": {"spec": {"volumes": volumes}}},
        }))
        .unwrap()
    }

    #[test]
    fn own_disks_always_and_hotplugged_volumes_only_with_remove_all() {
        let vm = vm(json!([
            {"name": "cloudinitdisk", "cloudInitNoCloud": {}},
            {"name": "disk-0", "persistentVolumeClaim": {"claimName": "vm-disk-0-abcde"}},
            {"name": "pvc-1", "persistentVolumeClaim": {"claimName": "pvc-1", "hotpluggable": true}},
        ]));
        assert_eq!(volume_claims(&vm, false), vec!["vm-disk-0-abcde"]);
        assert_eq!(volume_claims(&vm, true), vec!["vm-disk-0-abcde", "pvc-1"]);
    }

    #[test]
    fn shipped_versions_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            "1.0.6".parse::<DriverVersion>().unwrap(),
            DriverVersion::V1_0_6
        );
        assert_eq!(
            "v1.0.3".parse::<DriverVersion>().unwrap(),
            DriverVersion::V1_0_3
        );
        let error = "1.1.0".parse::<DriverVersion>().unwrap_err().to_string();
        assert!(
            error.contains("unknown Harvester node driver version \"1.1.0\""),
            "{error}"
        );
        assert!(!DriverVersion::V1_0_4.lists_pvcs_by_cluster_label());
        assert!(DriverVersion::V1_0_5.lists_pvcs_by_cluster_label());
        assert_eq!(DriverVersion::V1_0_6.to_string(), "1.0.6");
    }
}
