//! The Harvester CSI driver and a guest cluster's volumes (design.md §2): what the guest's PV
//! controller, the external-provisioner with the driver's CreateVolume and DeleteVolume, Longhorn
//! and KubeVirt's hotplug do, as objects in the real apiservers. Neither the guest nor the
//! Harvester apiserver runs a PV binder here, so binding and releasing are done by hand, with
//! status written through the status subresource.
//!
//! Guest RWX volumes ([`GuestAccess::ReadWriteMany`]) also get their `NetworkFilesystem`;
//! guest snapshots come with their guest VolumeSnapshotContents and the host VolumeSnapshots
//! CreateSnapshot makes ([`GuestSnapshot`]).

pub(crate) mod api;
mod hotplug;
mod network_fs;
mod snapshot;

pub use network_fs::NETWORK_FILESYSTEM_NAMESPACE;
pub use snapshot::{
    GUEST_RETAINED_SNAPSHOT_CLASS, GUEST_SNAPSHOT_CLASS, GuestSnapshot, HOST_SNAPSHOT_CLASS,
};

use std::collections::BTreeMap;

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
    api::{ApiResource, ObjectMeta, Patch, PatchParams},
};
use serde_json::json;

use gleaner_world::Player;

use crate::{Env, Error, Result, error::KubeContext, keys, kinds};
use api::{create_or_get, delete, drop_finalizer, get_opt, patch_status, wait_gone};

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

/// What a guest class says of the storage behind its objects: a StorageClass's reclaim policy,
/// which its PVs inherit, or a VolumeSnapshotClass's deletion policy, which its
/// VolumeSnapshotContents inherit.
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

/// A guest volume's access mode. Every host PVC is ReadWriteMany; RWO guest volumes are Block
/// host volumes, hot-plugged into the VM that runs the pod; RWX ones are Filesystem host volumes
/// served over NFS through a `NetworkFilesystem`, never hot-plugged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccess {
    ReadWriteOnce,
    ReadWriteMany,
}

impl GuestAccess {
    fn guest_mode(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadWriteMany => "ReadWriteMany",
        }
    }

    fn host_volume_mode(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "Block",
            Self::ReadWriteMany => "Filesystem",
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

    /// A 1 GiB RWX volume.
    pub fn rwx(namespace: &str, name: &str, reclaim: Reclaim) -> Self {
        Self {
            access: GuestAccess::ReadWriteMany,
            ..Self::rwo(namespace, name, reclaim)
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
    /// RWX only: in [`NETWORK_FILESYSTEM_NAMESPACE`], named like the host PV.
    pub network_filesystem: Option<Named>,
}

impl GuestVolume {
    /// What the volume has on Harvester, as made: the host PVC and, for RWX, its
    /// NetworkFilesystem. (The host PV is Longhorn's, which deletes it with the host PVC.)
    pub fn host_objects(&self) -> Vec<HostObject> {
        let claim = HostObject::new(
            kinds::persistent_volume_claim(),
            &self.host_namespace,
            &self.host_pvc,
        );
        let network_fs = self.network_filesystem.as_ref().map(|named| {
            HostObject::new(
                kinds::network_filesystem(),
                NETWORK_FILESYSTEM_NAMESPACE,
                named,
            )
        });
        std::iter::once(claim).chain(network_fs).collect()
    }
}

/// An object made on Harvester, enough to look it up again (and tell a same-named successor
/// apart by its UID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostObject {
    pub resource: ApiResource,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl HostObject {
    fn new(resource: ApiResource, namespace: &str, named: &Named) -> Self {
        Self {
            resource,
            namespace: namespace.to_owned(),
            name: named.name.clone(),
            uid: named.uid.clone(),
        }
    }
}

/// The Harvester CSI driver of one guest cluster, with its share of the guest's and Harvester's
/// controllers.
#[derive(Clone)]
pub struct Csi {
    guest: Client,
    harvester: Client,
    /// Where the driver's Harvester kubeconfig points: the VM namespace.
    host_namespace: String,
    /// The unmerged CSI change: host PVCs labelled with their guest cluster.
    cluster_label: Option<String>,
    /// Who plays the guest's snapshot-controller: the world's real one (then the guest's
    /// csi-snapshotter sidecar, [`crate::snapshotter`], calls this driver), or this driver,
    /// playing the guest's whole external-snapshotter in one step.
    guest_snapshots: Player,
    env: Env,
}

impl Csi {
    pub fn new(guest: Client, harvester: Client, host_namespace: &str, env: Env) -> Self {
        Self {
            guest,
            harvester,
            host_namespace: host_namespace.to_owned(),
            cluster_label: None,
            guest_snapshots: Player::Sim,
            env,
        }
    }

    /// The guest runs the real snapshot-controller (`Player::Real`), whose contents the guest's
    /// sidecar must bring to this driver's CreateSnapshot and DeleteSnapshot.
    pub fn with_guest_snapshots(self, guest_snapshots: Player) -> Self {
        Self {
            guest_snapshots,
            ..self
        }
    }

    /// Turns on the unmerged CSI change (off by default, as upstream ships): CreateVolume labels
    /// host PVCs `guestcluster.harvesterhci.io/name=<cluster_name>`.
    pub fn with_cluster_label(self, cluster_name: &str) -> Self {
        Self {
            cluster_label: Some(cluster_name.to_owned()),
            ..self
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
        let network_filesystem = match request.access {
            GuestAccess::ReadWriteOnce => None,
            GuestAccess::ReadWriteMany => Some(self.create_network_fs(&host_pv.name).await?),
        };
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
            network_filesystem,
        })
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

    /// A user changes the guest PV's reclaim policy (`kubectl patch pv`), e.g. to keep a
    /// volume's data once its claim goes.
    pub async fn set_reclaim_policy(&self, volume: &GuestVolume, reclaim: Reclaim) -> Result<()> {
        let name = &volume.guest_pv.name;
        let patch = json!({"spec": {"persistentVolumeReclaimPolicy": reclaim.as_str()}});
        Api::<PersistentVolume>::all(self.guest.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot set the reclaim policy of guest PV {name}"))?;
        self.env.journal.record(
            GUEST_USER,
            format!(
                "set the reclaim policy of guest PV {name} to {}",
                reclaim.as_str()
            ),
        );
        Ok(())
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

    /// The driver's CreateVolume: a host PVC named like the guest PV (labelled with the guest
    /// cluster when the unmerged change is on).
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
        let labels = self.cluster_label.as_ref().map(|cluster| {
            BTreeMap::from([(keys::LABEL_GUEST_CLUSTER.to_owned(), cluster.clone())])
        });
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                labels,
                ..named(&pv_name(guest_claim)?)
            },
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

    /// The driver's DeleteVolume: deletes the NetworkFilesystem of an RWX volume, then the host
    /// PVC. Returns the host PV it was bound to.
    async fn delete_host_volume(&self, handle: &str) -> Result<Option<String>> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.host_namespace);
        let Some(claim) = get_opt(&claims, handle, "host PVC").await? else {
            return Ok(None);
        };
        let host_pv = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_name.clone());
        if let Some(host_pv) = host_pv.as_deref().filter(|_| network_fs::serves(&claim)) {
            self.delete_network_fs(host_pv).await?;
        }
        delete(&claims, handle, "host PVC").await?;
        self.env.journal.record(
            HARVESTER_CSI,
            format!(
                "DeleteVolume: deleted host PVC {}/{handle}",
                self.host_namespace
            ),
        );
        Ok(host_pv)
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
