//! The Harvester CSI driver and a guest cluster's volumes (design.md §2): what the guest's PV
//! controller, the external-provisioner with the driver's CreateVolume and DeleteVolume, Longhorn
//! and KubeVirt's hotplug do, as objects in the real apiservers. Neither the guest nor the
//! Harvester apiserver runs a PV binder here, so binding and releasing are done by hand, with
//! status written through the status subresource.

use std::{collections::BTreeMap, fmt::Debug, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{
            CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
        },
        storage::v1::StorageClass,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{Env, Error, Result, error::KubeContext, kinds};

/// The guest's CSI driver: the provisioner of guest StorageClasses, the driver of guest PVs.
pub const GUEST_DRIVER: &str = "driver.harvesterhci.io";
/// Longhorn's CSI driver, which provisions the host PVs.
pub const LONGHORN_DRIVER: &str = "driver.longhorn.io";
/// The Harvester StorageClass guest volumes land on unless the guest StorageClass names another.
pub const HOST_STORAGE_CLASS: &str = "longhorn";
/// The guest StorageClass parameter naming the Harvester StorageClass.
pub const HOST_STORAGE_CLASS_PARAMETER: &str = "hostStorageClass";

const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Put on by the apiserver's admission; only the protection controllers take them off.
const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

const GUEST_USER: &str = "guest-user";
const GUEST_PV_CONTROLLER: &str = "guest-pv-controller";
const GUEST_PROTECTION: &str = "guest-protection-controller";
const HARVESTER_CSI: &str = "harvester-csi";
const LONGHORN: &str = "longhorn";
const HOTPLUG: &str = "kubevirt-hotplug";

/// How many times an update is tried when others keep changing the object.
const UPDATE_ATTEMPTS: usize = 10;
/// How long a deleted PVC may take to go (the real protection controllers release it).
const GONE_DEADLINE: Duration = Duration::from_secs(60);
const GONE_POLL: Duration = Duration::from_millis(100);

/// A guest StorageClass's reclaim policy, which its PVs inherit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    Delete,
    Retain,
}

impl Reclaim {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "Delete",
            Self::Retain => "Retain",
        }
    }

    /// The guest StorageClass with this policy.
    pub fn storage_class(self) -> &'static str {
        match self {
            Self::Delete => "harvester",
            Self::Retain => "harvester-retain",
        }
    }

    fn parse(policy: &str) -> Option<Self> {
        match policy {
            "Delete" => Some(Self::Delete),
            "Retain" => Some(Self::Retain),
            _ => None,
        }
    }
}

/// A guest volume's access mode. Only RWO so far; RWX (served over NFS, never hot-plugged) will
/// add a Filesystem host volume and the `NetworkFilesystem` that CreateVolume makes and
/// DeleteVolume removes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccess {
    ReadWriteOnce,
}

impl GuestAccess {
    fn guest_mode(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
        }
    }

    fn host_volume_mode(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "Block",
        }
    }
}

/// A guest PVC to create.
#[derive(Clone, Debug)]
pub struct VolumeRequest {
    pub namespace: String,
    pub name: String,
    /// A quantity, e.g. `1Gi`.
    pub size: String,
    pub reclaim: Reclaim,
    pub access: GuestAccess,
}

impl VolumeRequest {
    /// A 1 GiB RWO volume.
    pub fn rwo(namespace: &str, name: &str, reclaim: Reclaim) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            size: "1Gi".to_owned(),
            reclaim,
            access: GuestAccess::ReadWriteOnce,
        }
    }
}

/// An object's name and UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub uid: String,
}

impl Named {
    fn of(object: &impl Resource) -> Result<Self> {
        let (Some(name), Some(uid)) = (&object.meta().name, &object.meta().uid) else {
            return Err(Error::Invalid(format!(
                "the apiserver returned an object without name or UID: {:?}",
                object.meta()
            )));
        };
        Ok(Self {
            name: name.clone(),
            uid: uid.clone(),
        })
    }
}

/// A provisioned guest volume: both clusters' claims and volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestVolume {
    pub guest_namespace: String,
    pub guest_pvc: Named,
    /// `pvc-<guest PVC uid>`.
    pub guest_pv: Named,
    pub storage_class: String,
    pub access: GuestAccess,
    pub host_namespace: String,
    /// Named like the guest PV.
    pub host_pvc: Named,
    /// `pvc-<host PVC uid>`.
    pub host_pv: Named,
}

/// The Harvester CSI driver of one guest cluster, with its share of the guest's and Harvester's
/// controllers.
#[derive(Clone)]
pub struct Csi {
    guest: Client,
    harvester: Client,
    /// Where the driver's Harvester kubeconfig points: the VM namespace.
    host_namespace: String,
    env: Env,
}

impl Csi {
    pub fn new(guest: Client, harvester: Client, host_namespace: &str, env: Env) -> Self {
        Self {
            guest,
            harvester,
            host_namespace: host_namespace.to_owned(),
            env,
        }
    }

    /// A user's guest PVC and everything that provisioning it makes, all bound. Idempotent: an
    /// existing claim or volume of the same name is taken as is.
    pub async fn create_volume(&self, request: &VolumeRequest) -> Result<GuestVolume> {
        let class = self.ensure_storage_class(request.reclaim).await?;
        let guest_claim = self.create_guest_claim(request).await?;
        let host_claim = self
            .create_host_claim(&guest_claim, &class, request.access)
            .await?;
        let host_pv = self.provision_host_volume(&host_claim).await?;
        let guest_pv = self
            .provision_guest_volume(&guest_claim, &host_claim, &class)
            .await?;
        Ok(GuestVolume {
            guest_namespace: request.namespace.clone(),
            guest_pvc: Named::of(&guest_claim)?,
            guest_pv,
            storage_class: class.name_any(),
            access: request.access,
            host_namespace: self.host_namespace.clone(),
            host_pvc: Named::of(&host_claim)?,
            host_pv,
        })
    }

    /// Hot-plugs the volume's host PVC into a VM of the host namespace, as KubeVirt's
    /// `addvolume` does. Idempotent.
    pub async fn attach(&self, vm: &str, volume: &GuestVolume) -> Result<()> {
        let claim = &volume.host_pvc.name;
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

    /// A user deletes the guest PVC; then what follows by the guest PV's reclaim policy (read
    /// now, so a policy changed since creation counts): `Retain` leaves the guest PV Released
    /// and the host PVC in place; `Delete` runs DeleteVolume (the host PVC goes, and Longhorn
    /// then deletes the host PV) and deletes the guest PV. Detach first, as the guest's PVC
    /// protection would ensure: Harvester refuses to delete a PVC a VM still lists.
    pub async fn delete_volume(&self, volume: &GuestVolume) -> Result<()> {
        self.delete_guest_claim(volume).await?;
        let guest_pvs: Api<PersistentVolume> = Api::all(self.guest.clone());
        let Some(guest_pv) = get_opt(&guest_pvs, &volume.guest_pv.name, "guest PV").await? else {
            return Ok(());
        };
        release(
            &guest_pvs,
            &guest_pv.name_any(),
            &self.env,
            GUEST_PV_CONTROLLER,
        )
        .await?;
        match reclaim_policy(&guest_pv)? {
            Reclaim::Retain => Ok(()),
            Reclaim::Delete => {
                let handle = volume_handle(&guest_pv)?;
                let host_pv = self.delete_host_volume(&handle).await?;
                self.delete_guest_volume(&guest_pvs, &guest_pv.name_any())
                    .await?;
                match host_pv {
                    Some(host_pv) => self.reclaim_host_volume(&handle, &host_pv).await,
                    None => Ok(()),
                }
            }
        }
    }

    async fn ensure_storage_class(&self, reclaim: Reclaim) -> Result<StorageClass> {
        let classes: Api<StorageClass> = Api::all(self.guest.clone());
        let class = StorageClass {
            metadata: named(reclaim.storage_class()),
            provisioner: GUEST_DRIVER.to_owned(),
            parameters: Some(BTreeMap::from([(
                HOST_STORAGE_CLASS_PARAMETER.to_owned(),
                HOST_STORAGE_CLASS.to_owned(),
            )])),
            reclaim_policy: Some(reclaim.as_str().to_owned()),
            volume_binding_mode: Some("Immediate".to_owned()),
            allow_volume_expansion: Some(true),
            ..StorageClass::default()
        };
        create_or_get(&classes, &class, "guest StorageClass").await
    }

    async fn create_guest_claim(&self, request: &VolumeRequest) -> Result<PersistentVolumeClaim> {
        let claims = Api::namespaced(self.guest.clone(), &request.namespace);
        let claim = PersistentVolumeClaim {
            metadata: named(&request.name),
            spec: Some(claim_spec(
                request.access.guest_mode(),
                "Filesystem",
                request.reclaim.storage_class(),
                &request.size,
            )),
            ..PersistentVolumeClaim::default()
        };
        let claim = create_or_get(&claims, &claim, "guest PVC").await?;
        self.env.journal.record(
            GUEST_USER,
            format!("created guest PVC {}/{}", request.namespace, request.name),
        );
        Ok(claim)
    }

    /// The driver's CreateVolume: a host PVC named like the guest PV.
    async fn create_host_claim(
        &self,
        guest_claim: &PersistentVolumeClaim,
        class: &StorageClass,
        access: GuestAccess,
    ) -> Result<PersistentVolumeClaim> {
        let host_class = class
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.get(HOST_STORAGE_CLASS_PARAMETER))
            .map_or(HOST_STORAGE_CLASS, String::as_str);
        let claim = PersistentVolumeClaim {
            metadata: named(&pv_name(guest_claim)?),
            spec: Some(claim_spec(
                "ReadWriteMany",
                access.host_volume_mode(),
                host_class,
                &requested_size(guest_claim)?,
            )),
            ..PersistentVolumeClaim::default()
        };
        let claims = Api::namespaced(self.harvester.clone(), &self.host_namespace);
        let claim = create_or_get(&claims, &claim, "host PVC").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "CreateVolume: created host PVC {}/{}",
                self.host_namespace,
                claim.name_any()
            ),
        );
        Ok(claim)
    }

    /// Longhorn's provisioner and Harvester's PV controller: a host PV bound to the host PVC.
    async fn provision_host_volume(&self, claim: &PersistentVolumeClaim) -> Result<Named> {
        let volume = PersistentVolume {
            metadata: provisioned(&pv_name(claim)?, LONGHORN_DRIVER),
            spec: Some(volume_spec(
                claim,
                "Delete",
                LONGHORN_DRIVER,
                &pv_name(claim)?,
            )?),
            ..PersistentVolume::default()
        };
        bind(
            &self.harvester,
            claim,
            volume,
            LONGHORN_DRIVER,
            &self.env,
            LONGHORN,
        )
        .await
    }

    /// The guest's external-provisioner and PV controller: a guest PV whose volume handle is the
    /// host PVC, bound to the guest PVC.
    async fn provision_guest_volume(
        &self,
        guest_claim: &PersistentVolumeClaim,
        host_claim: &PersistentVolumeClaim,
        class: &StorageClass,
    ) -> Result<Named> {
        let policy = class.reclaim_policy.as_deref().unwrap_or("Delete");
        let mut spec = volume_spec(guest_claim, policy, GUEST_DRIVER, &host_claim.name_any())?;
        if let Some(csi) = spec.csi.as_mut() {
            csi.fs_type = Some("ext4".to_owned());
        }
        let volume = PersistentVolume {
            metadata: provisioned(&pv_name(guest_claim)?, GUEST_DRIVER),
            spec: Some(spec),
            ..PersistentVolume::default()
        };
        bind(
            &self.guest,
            guest_claim,
            volume,
            GUEST_DRIVER,
            &self.env,
            GUEST_PV_CONTROLLER,
        )
        .await
    }

    async fn delete_guest_claim(&self, volume: &GuestVolume) -> Result<()> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.guest.clone(), &volume.guest_namespace);
        let name = &volume.guest_pvc.name;
        delete(&claims, name, "guest PVC").await?;
        self.env.journal.record(
            GUEST_USER,
            format!("deleted guest PVC {}/{name}", volume.guest_namespace),
        );
        // The guest runs no controller-manager: its PVC protection (no pod uses the claim) is
        // played here.
        drop_finalizer(&claims, name, PVC_PROTECTION, "guest PVC").await?;
        self.env.journal.record(
            GUEST_PROTECTION,
            format!(
                "released the protection of guest PVC {}/{name}",
                volume.guest_namespace
            ),
        );
        wait_gone(&claims, name, "guest PVC").await
    }

    /// The guest's external-provisioner after DeleteVolume, and its PV protection (the PV is no
    /// longer Bound).
    async fn delete_guest_volume(&self, volumes: &Api<PersistentVolume>, name: &str) -> Result<()> {
        delete(volumes, name, "guest PV").await?;
        self.env
            .journal
            .record(GUEST_PV_CONTROLLER, format!("deleted guest PV {name}"));
        drop_finalizer(volumes, name, PV_PROTECTION, "guest PV").await?;
        self.env.journal.record(
            GUEST_PROTECTION,
            format!("released the protection of guest PV {name}"),
        );
        wait_gone(volumes, name, "guest PV").await
    }

    /// The driver's DeleteVolume: deletes the host PVC. Returns the host PV it was bound to.
    async fn delete_host_volume(&self, handle: &str) -> Result<Option<String>> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.host_namespace);
        let Some(claim) = get_opt(&claims, handle, "host PVC").await? else {
            return Ok(None);
        };
        delete(&claims, handle, "host PVC").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "DeleteVolume: deleted host PVC {}/{handle}",
                self.host_namespace
            ),
        );
        Ok(claim.spec.and_then(|spec| spec.volume_name))
    }

    /// Harvester's PV controller and Longhorn once the host PVC is gone: the host PV is Released,
    /// then deleted if its own policy says so.
    async fn reclaim_host_volume(&self, claim: &str, volume: &str) -> Result<()> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.host_namespace);
        wait_gone(&claims, claim, "host PVC").await?;
        let volumes: Api<PersistentVolume> = Api::all(self.harvester.clone());
        let Some(host_pv) = get_opt(&volumes, volume, "host PV").await? else {
            return Ok(());
        };
        release(&volumes, volume, &self.env, LONGHORN).await?;
        if reclaim_policy(&host_pv)? == Reclaim::Delete {
            delete(&volumes, volume, "host PV").await?;
            self.env
                .journal
                .record(LONGHORN, format!("deleted host PV {volume}"));
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

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn provisioned(name: &str, provisioner: &str) -> ObjectMeta {
    ObjectMeta {
        annotations: Some(BTreeMap::from([(
            PROVISIONED_BY.to_owned(),
            provisioner.to_owned(),
        )])),
        ..named(name)
    }
}

fn claim_spec(
    access_mode: &str,
    volume_mode: &str,
    storage_class: &str,
    size: &str,
) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec![access_mode.to_owned()]),
        volume_mode: Some(volume_mode.to_owned()),
        storage_class_name: Some(storage_class.to_owned()),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(size.to_owned()),
            )])),
            ..VolumeResourceRequirements::default()
        }),
        ..PersistentVolumeClaimSpec::default()
    }
}

/// A PV for `claim` (same modes, class and size), pointing back at it.
fn volume_spec(
    claim: &PersistentVolumeClaim,
    reclaim_policy: &str,
    driver: &str,
    volume_handle: &str,
) -> Result<PersistentVolumeSpec> {
    let spec = claim.spec.clone().unwrap_or_default();
    Ok(PersistentVolumeSpec {
        access_modes: spec.access_modes,
        volume_mode: spec.volume_mode,
        storage_class_name: spec.storage_class_name,
        capacity: Some(BTreeMap::from([(
            "storage".to_owned(),
            Quantity(requested_size(claim)?),
        )])),
        persistent_volume_reclaim_policy: Some(reclaim_policy.to_owned()),
        claim_ref: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("PersistentVolumeClaim".to_owned()),
            namespace: claim.namespace(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        csi: Some(CSIPersistentVolumeSource {
            driver: driver.to_owned(),
            volume_handle: volume_handle.to_owned(),
            ..CSIPersistentVolumeSource::default()
        }),
        ..PersistentVolumeSpec::default()
    })
}

/// `pvc-<uid>`: the name provisioners give the volume of a claim.
fn pv_name(claim: &PersistentVolumeClaim) -> Result<String> {
    Ok(format!("pvc-{}", Named::of(claim)?.uid))
}

fn requested_size(claim: &PersistentVolumeClaim) -> Result<String> {
    claim
        .spec
        .as_ref()
        .and_then(|spec| spec.resources.as_ref())
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .map(|quantity| quantity.0.clone())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "PVC {} requests no storage",
                claim.metadata.name.as_deref().unwrap_or_default()
            ))
        })
}

fn reclaim_policy(volume: &PersistentVolume) -> Result<Reclaim> {
    let policy = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Delete");
    Reclaim::parse(policy).ok_or_else(|| {
        Error::Invalid(format!(
            "PV {} has reclaim policy {policy}, which CSI volumes do not support",
            volume.name_any()
        ))
    })
}

fn volume_handle(volume: &PersistentVolume) -> Result<String> {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.csi.as_ref())
        .map(|csi| csi.volume_handle.clone())
        .ok_or_else(|| Error::Invalid(format!("PV {} is not a CSI volume", volume.name_any())))
}

/// A PV controller's bind of a freshly provisioned `volume` to `claim`: the PV is created and
/// Bound, then the claim names it and is Bound too.
async fn bind(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volume: PersistentVolume,
    provisioner: &str,
    env: &Env,
    actor: &'static str,
) -> Result<Named> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume = create_or_get(&volumes, &volume, "PV").await?;
    let volume_name = volume.name_any();
    patch_status(&volumes, &volume_name, json!({"phase": "Bound"}), "PV").await?;

    let namespace = claim.namespace().unwrap_or_default();
    let claim_name = claim.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let binding = json!({
        "metadata": {"annotations": {
            BIND_COMPLETED: "yes",
            BOUND_BY_CONTROLLER: "yes",
            STORAGE_PROVISIONER: provisioner,
            BETA_STORAGE_PROVISIONER: provisioner,
        }},
        "spec": {"volumeName": volume_name},
    });
    claims
        .patch(
            &claim_name,
            &PatchParams::default(),
            &Patch::Merge(&binding),
        )
        .await
        .context(|| format!("cannot bind PVC {namespace}/{claim_name}"))?;
    let spec = claim.spec.clone().unwrap_or_default();
    let status = json!({
        "phase": "Bound",
        "accessModes": spec.access_modes,
        "capacity": {"storage": requested_size(claim)?},
    });
    patch_status(&claims, &claim_name, status, "PVC").await?;
    env.journal.record(
        actor,
        format!("bound PVC {namespace}/{claim_name} to PV {volume_name}"),
    );
    Named::of(&volume)
}

/// A PV controller's answer to its claim going: the PV is Released (it keeps its claimRef).
async fn release(
    volumes: &Api<PersistentVolume>,
    name: &str,
    env: &Env,
    actor: &'static str,
) -> Result<()> {
    patch_status(volumes, name, json!({"phase": "Released"}), "PV").await?;
    env.journal.record(actor, format!("released PV {name}"));
    Ok(())
}

async fn patch_status<K>(api: &Api<K>, name: &str, status: Value, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .context(|| format!("cannot set the status of {what} {name}"))?;
    Ok(())
}

/// What a protection controller does once nothing uses the object: it takes its finalizer off,
/// with optimistic concurrency so finalizers others add meanwhile stay.
async fn drop_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let context = || format!("cannot remove finalizer {finalizer} from {what} {name}");
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(object) = get_opt(api, name, what).await? else {
            return Ok(());
        };
        let finalizers = object.finalizers();
        if !finalizers.iter().any(|present| present == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|present| *present != finalizer)
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": object.resource_version(),
            "finalizers": kept,
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
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
        "{} ({what} changed under every one of {UPDATE_ATTEMPTS} updates)",
        context()
    )))
}

async fn create_or_get<K>(api: &Api<K>, object: &K, what: &str) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => api.get(&name).await,
        other => other,
    }
    .context(|| format!("cannot create {what} {name}"))
}

async fn get_opt<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .context(|| format!("cannot read {what} {name}"))
}

/// Deletes an object; one already gone counts as deleted.
async fn delete<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Kube {
            context: format!("cannot delete {what} {name}"),
            source,
        }),
    }
}

async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + GONE_DEADLINE;
    while get_opt(api, name, what).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{what} {name} still exists {}s after its deletion",
                GONE_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(GONE_POLL).await;
    }
    Ok(())
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
