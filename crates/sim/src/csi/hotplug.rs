//! KubeVirt's hotplug of host PVCs into VMs (`addvolume` / `removevolume`).

use kube::api::PostParams;
use serde_json::{Value, json};

use super::{Csi, GuestAccess, GuestVolume, HOTPLUG, UPDATE_ATTEMPTS};
use crate::{Error, Result, error::KubeContext, kinds};

impl Csi {
    /// Hot-plugs the volume's host PVC into a VM of the host namespace, as KubeVirt's
    /// `addvolume` does. Idempotent. RWX volumes are refused: they are served over NFS and the
    /// driver never hot-plugs them.
    pub async fn attach(&self, vm: &str, volume: &GuestVolume) -> Result<()> {
        let claim = &volume.host_pvc.name;
        if volume.access == GuestAccess::ReadWriteMany {
            return Err(Error::Invalid(format!(
                "guest RWX volume {}/{} (host PVC {claim}) is served over NFS, never hot-plugged",
                volume.guest_namespace, volume.guest_pvc.name
            )));
        }
        match self.update_vm(vm, |data| plug(data, claim)).await? {
            VmUpdate::Changed => {
                self.env.journal.record(
                    HOTPLUG,
                    format!(
                        "hot-plugged PVC {claim} into VM {}/{vm}",
                        self.host_namespace
                    ),
                );
                Ok(())
            }
            VmUpdate::Unchanged => Ok(()),
            VmUpdate::Missing => Err(Error::Invalid(format!(
                "no VM {}/{vm} to hot-plug PVC {claim} into",
                self.host_namespace
            ))),
        }
    }

    /// Removes the volume's hot-plugged volume and disk from a VM, as KubeVirt's `removevolume`
    /// does. Idempotent; a missing VM has nothing attached.
    pub async fn detach(&self, vm: &str, volume: &GuestVolume) -> Result<()> {
        let claim = &volume.host_pvc.name;
        if let VmUpdate::Changed = self.update_vm(vm, |data| unplug(data, claim)).await? {
            self.env.journal.record(
                HOTPLUG,
                format!("unplugged PVC {claim} from VM {}/{vm}", self.host_namespace),
            );
        }
        Ok(())
    }

    async fn update_vm(
        &self,
        vm: &str,
        change: impl Fn(&mut Value) -> Result<bool>,
    ) -> Result<VmUpdate> {
        let vms = kinds::namespaced(
            &self.harvester,
            &self.host_namespace,
            &kinds::virtual_machine(),
        );
        let context = || format!("cannot update VM {}/{vm}", self.host_namespace);
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(mut object) = vms.get_opt(vm).await.context(context)? else {
                return Ok(VmUpdate::Missing);
            };
            if !change(&mut object.data)? {
                return Ok(VmUpdate::Unchanged);
            }
            // The object carries the resourceVersion it was read at: a concurrent writer makes
            // this a 409, and the change is made again on what that writer left.
            match vms.replace(vm, &PostParams::default(), &object).await {
                Ok(_) => return Ok(VmUpdate::Changed),
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(source) => {
                    return Err(Error::Kube {
                        context: context(),
                        source,
                    });
                }
            }
        }
        Err(Error::Timeout(format!(
            "VM {}/{vm} changed under every one of {UPDATE_ATTEMPTS} updates",
            self.host_namespace
        )))
    }
}

enum VmUpdate {
    Changed,
    Unchanged,
    Missing,
}

const VOLUMES: &[&str] = &["spec", "template", "spec", "volumes"];
const DISKS: &[&str] = &["spec", "template", "spec", "domain", "devices", "disks"];

/// Adds the hotplug volume and its SCSI disk to a VM's data; whether anything was missing.
fn plug(vm: &mut Value, claim: &str) -> Result<bool> {
    let volume = json!({
        "name": claim,
        "persistentVolumeClaim": {"claimName": claim, "hotpluggable": true},
    });
    let disk = json!({"name": claim, "disk": {"bus": "scsi"}});
    let added_volume = push_unless_named(array_entry(vm, VOLUMES)?, claim, volume);
    let added_disk = push_unless_named(array_entry(vm, DISKS)?, claim, disk);
    Ok(added_volume || added_disk)
}

/// Removes the hotplug volume and its disk from a VM's data; whether anything was there.
fn unplug(vm: &mut Value, claim: &str) -> Result<bool> {
    let removed_volume = remove_named(vm, VOLUMES, claim);
    let removed_disk = remove_named(vm, DISKS, claim);
    Ok(removed_volume || removed_disk)
}

fn push_unless_named(entries: &mut Vec<Value>, name: &str, entry: Value) -> bool {
    if entries.iter().any(|existing| existing["name"] == name) {
        return false;
    }
    entries.push(entry);
    true
}

fn remove_named(vm: &mut Value, path: &[&str], name: &str) -> bool {
    let pointer = format!("/{}", path.join("/"));
    let Some(entries) = vm.pointer_mut(&pointer).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = entries.len();
    entries.retain(|entry| entry["name"] != name);
    entries.len() != before
}

/// The array at `path`, made (with the objects leading to it) if missing.
fn array_entry<'a>(value: &'a mut Value, path: &[&str]) -> Result<&'a mut Vec<Value>> {
    let mut current = value;
    for (depth, key) in path.iter().enumerate() {
        let empty = if depth + 1 == path.len() {
            Value::Array(Vec::new())
        } else {
            Value::Object(serde_json::Map::new())
        };
        current = current
            .as_object_mut()
            .ok_or_else(|| not_shaped(path))?
            .entry(*key)
            .or_insert(empty);
    }
    current.as_array_mut().ok_or_else(|| not_shaped(path))
}

fn not_shaped(path: &[&str]) -> Error {
    Error::Invalid(format!("the VM's {} is not a list", path.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Value {
        json!({"spec": {"template": {"spec": {
            "domain": {"devices": {"disks": [{"name": "disk-0", "disk": {"bus": "virtio"}}]}},
            "volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": "vm-disk-0"}}],
        }}}})
    }

    #[test]
    fn plugging_adds_a_hotpluggable_volume_and_a_scsi_disk_once() {
        let mut data = vm();
        assert!(plug(&mut data, "pvc-1").unwrap());
        assert!(!plug(&mut data, "pvc-1").unwrap());
        let spec = &data["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"][1],
            json!({"name": "pvc-1", "persistentVolumeClaim": {"claimName": "pvc-1", "hotpluggable": true}})
        );
        assert_eq!(
            spec["domain"]["devices"]["disks"][1],
            json!({"name": "pvc-1", "disk": {"bus": "scsi"}})
        );
    }

    #[test]
    fn unplugging_restores_the_vm() {
        let mut data = vm();
        plug(&mut data, "pvc-1").unwrap();
        assert!(unplug(&mut data, "pvc-1").unwrap());
        assert!(!unplug(&mut data, "pvc-1").unwrap());
        assert_eq!(data, vm());
    }

    #[test]
    fn plugging_into_a_vm_without_lists_makes_them() {
        let mut data = json!({"spec": {"template": {"spec": {}}}});
        assert!(plug(&mut data, "pvc-1").unwrap());
        assert_eq!(
            data["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_misshapen_vm_is_an_error_not_a_panic() {
        let mut data = json!({"spec": {"template": {"spec": {"volumes": "nope"}}}});
        assert!(matches!(plug(&mut data, "pvc-1"), Err(Error::Invalid(_))));
    }
}
