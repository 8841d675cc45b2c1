//! One scenario cluster's own guest apiserver and what lives there: the credential Rancher
//! holds for it, the CSI driver and cloud provider acting in it, and its volumes by plan name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{RETAIN, VolumePlan};
use crate::{
    Error, Result,
    cloud_provider::{CloudProvider, GuestLoadBalancer},
    csi::{Csi, GuestVolume, HostObject, Reclaim, VolumeRequest},
    error::KubeContext,
    guest::{GuestApiserver, GuestCredential},
    scenario::{Attachment, Traits},
    tasks::Tasks,
};

/// The generation of the credential a guest starts with.
pub(super) const FIRST_CREDENTIAL: u32 = 1;

pub(super) struct ClusterGuest {
    pub(super) apiserver: GuestApiserver,
    /// The credential `<cluster>-kubeconfig` holds now, minted as [`FIRST_CREDENTIAL`] when
    /// the cluster was provisioned.
    pub(super) credential: GuestCredential,
    /// How many credentials were minted for this guest.
    generation: u32,
    /// The guest namespace of its volumes and Services.
    namespace: String,
    csi: Csi,
    provider: CloudProvider,
    /// Its VMs on the main Harvester, sorted: the volumes are hot-plugged into them in turn.
    attachable: Vec<String>,
    volumes: BTreeMap<String, MadeVolume>,
    /// The guest's csi-snapshotter sidecar, beside the world's real snapshot-controller.
    _snapshotter: Tasks,
}

/// A guest volume the scenario made, the plan it follows now, and the VM it is hot-plugged
/// into.
struct MadeVolume {
    plan: VolumePlan,
    volume: GuestVolume,
    attached_to: Option<String>,
}

impl ClusterGuest {
    pub(super) fn new(
        apiserver: GuestApiserver,
        credential: GuestCredential,
        namespace: String,
        csi: Csi,
        provider: CloudProvider,
        attachable: Vec<String>,
        snapshotter: Tasks,
    ) -> Self {
        Self {
            apiserver,
            credential,
            generation: FIRST_CREDENTIAL,
            namespace,
            csi,
            provider,
            attachable,
            volumes: BTreeMap::new(),
            _snapshotter: snapshotter,
        }
    }

    pub(super) fn volume(&self, name: &str) -> Option<&GuestVolume> {
        self.volumes.get(name).map(|made| &made.volume)
    }

    /// Makes the volume `plan` describes (attached, detached, annotated and snapshotted as it
    /// says) and returns its host objects with their traits.
    pub(super) async fn create_volume(
        &mut self,
        plan: &VolumePlan,
        harvester: &Client,
    ) -> Result<Vec<(HostObject, Traits)>> {
        if self.volumes.contains_key(&plan.name) {
            return Err(Error::Invalid(format!(
                "the cluster already has a volume named {}",
                plan.name
            )));
        }
        let request = if plan.rwx {
            VolumeRequest::rwx(&self.namespace, &plan.name, plan.reclaim)
        } else {
            VolumeRequest::rwo(&self.namespace, &plan.name, plan.reclaim)
        };
        let volume = self.csi.create_volume(&request).await?;
        if plan.annotated_retain {
            annotate_retain(harvester, &volume).await?;
        }
        let attached_to = self.attach_as_planned(plan, &volume).await?;
        let mut made: Vec<(HostObject, Traits)> = volume
            .host_objects()
            .into_iter()
            .map(|object| (object, plan.traits()))
            .collect();
        for index in 0..plan.snapshots {
            let snapshot = self
                .csi
                .snapshot(
                    &volume,
                    &format!("{}-snap-{index}", plan.name),
                    plan.snapshot_policy,
                )
                .await?;
            made.push((snapshot.host_object(), plan.snapshot_traits()));
        }
        self.volumes.insert(
            plan.name.clone(),
            MadeVolume {
                plan: plan.clone(),
                volume,
                attached_to,
            },
        );
        Ok(made)
    }

    /// Sets the reclaim policy of the volume made by the plan named `name` on its guest PV;
    /// returns the plan as it now stands.
    pub(super) async fn set_reclaim_policy(
        &mut self,
        name: &str,
        reclaim: Reclaim,
    ) -> Result<VolumePlan> {
        let made = made_mut(&mut self.volumes, name)?;
        self.csi.set_reclaim_policy(&made.volume, reclaim).await?;
        made.plan.reclaim = reclaim;
        Ok(made.plan.clone())
    }

    pub(super) async fn create_load_balancer(&self, service: &str) -> Result<GuestLoadBalancer> {
        self.provider
            .create_load_balancer(&self.namespace, service)
            .await
    }

    /// A credential with the next generation's ServiceAccount.
    pub(super) async fn mint_next_credential(&mut self) -> Result<GuestCredential> {
        self.generation += 1;
        self.apiserver.mint_credential(self.generation).await
    }

    /// The plan names of its volumes.
    pub(super) fn volume_names(&self) -> Vec<String> {
        self.volumes.keys().cloned().collect()
    }

    /// Unplugs the volume made by the plan named `name` from its VM; returns its plan as it now
    /// stands, or None if it was not hot-plugged.
    pub(super) async fn detach(&mut self, name: &str) -> Result<Option<VolumePlan>> {
        let made = made_mut(&mut self.volumes, name)?;
        let Some(vm) = made.attached_to.take() else {
            return Ok(None);
        };
        self.csi.detach(&vm, &made.volume).await?;
        made.plan.attachment = Attachment::Unattached;
        Ok(Some(made.plan.clone()))
    }

    /// Hot-plugs the volume made by the plan named `name` into one of the cluster's VMs; returns
    /// its plan as it now stands, or None if it cannot be (RWX, already plugged, no VM).
    pub(super) async fn attach(&mut self, name: &str) -> Result<Option<VolumePlan>> {
        let index = self.volumes.len();
        let Some(vm) = self.next_vm(index) else {
            return Ok(None);
        };
        let made = made_mut(&mut self.volumes, name)?;
        if made.plan.rwx || made.attached_to.is_some() {
            return Ok(None);
        }
        self.csi.attach(&vm, &made.volume).await?;
        made.attached_to = Some(vm);
        made.plan.attachment = Attachment::Hotplugged;
        Ok(Some(made.plan.clone()))
    }

    /// The VM `vm` is gone (scaled down, replaced): nothing is hot-plugged into it any more and
    /// no volume goes to it. Returns the plans of the volumes it held, as they now stand.
    pub(super) fn forget_vm(&mut self, vm: &str) -> Vec<VolumePlan> {
        self.attachable.retain(|candidate| candidate != vm);
        self.volumes
            .values_mut()
            .filter(|made| made.attached_to.as_deref() == Some(vm))
            .map(|made| {
                made.attached_to = None;
                made.plan.attachment = Attachment::Unattached;
                made.plan.clone()
            })
            .collect()
    }

    fn next_vm(&self, index: usize) -> Option<String> {
        (!self.attachable.is_empty())
            .then(|| self.attachable[index % self.attachable.len()].clone())
    }

    /// Hot-plugs the volume into one of the cluster's VMs (then unplugs it if the plan says it
    /// was detached); a cluster without a VM on the main Harvester attaches nothing. Returns the
    /// VM it stays plugged into.
    async fn attach_as_planned(
        &self,
        plan: &VolumePlan,
        volume: &GuestVolume,
    ) -> Result<Option<String>> {
        if plan.attachment == Attachment::NeverAttached {
            return Ok(None);
        }
        let Some(vm) = self.next_vm(self.volumes.len()) else {
            return Ok(None);
        };
        self.csi.attach(&vm, volume).await?;
        if plan.attachment == Attachment::Unattached {
            self.csi.detach(&vm, volume).await?;
            return Ok(None);
        }
        Ok(Some(vm))
    }
}

fn made_mut<'a>(
    volumes: &'a mut BTreeMap<String, MadeVolume>,
    name: &str,
) -> Result<&'a mut MadeVolume> {
    volumes
        .get_mut(name)
        .ok_or_else(|| Error::Invalid(format!("the cluster has no volume named {name}")))
}

pub(super) async fn annotate_retain(harvester: &Client, volume: &GuestVolume) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {RETAIN: "true"}}});
    let name = &volume.host_pvc.name;
    Api::<PersistentVolumeClaim>::namespaced(harvester.clone(), &volume.host_namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context(|| format!("cannot annotate {name}"))?;
    Ok(())
}
