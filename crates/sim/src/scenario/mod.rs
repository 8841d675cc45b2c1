//! Scenarios: set up a world's Rancher, Harvester and guest clusters, run actions, then judge
//! what is left against the ground truth the scenario itself recorded.

mod truth;

use std::{collections::BTreeSet, time::Duration};

use gleaner_world::{ClusterName, World};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};

pub use truth::{Attachment, Class, ClassSummary, Report, TrackedObject, Traits};

use crate::{
    Clock, Env, Error, Journal, Result,
    controller::ensure_namespace,
    csi::{Csi, Reclaim, VolumeRequest},
    error::KubeContext,
    harvester::{Harvester, HarvesterVersion},
    keys::VOLUME_CLAIM_TEMPLATES,
    kinds,
    rancher::{GuestCluster, GuestClusterSpec, PoolSpec, Rancher, RancherSettings},
};

/// The guest apiserver the scenario's guest clusters share (each in namespaces of its own).
pub const GUEST: &str = "guest-1";
const POOL: &str = "pool1";
const SETTLE: Duration = Duration::from_secs(5);
const MIN_SETTLE: Duration = Duration::from_millis(300);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A guest cluster to create: one pool of `machines`, and its guest volumes.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub name: String,
    pub machines: usize,
    pub volumes: Vec<VolumePlan>,
}

impl ClusterPlan {
    pub fn new(name: &str, machines: usize) -> Self {
        Self {
            name: name.to_owned(),
            machines,
            volumes: Vec::new(),
        }
    }

    pub fn volume(mut self, name: &str, reclaim: Reclaim, attachment: Attachment) -> Self {
        self.volumes.push(VolumePlan {
            name: name.to_owned(),
            reclaim,
            attachment,
        });
        self
    }
}

#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub name: String,
    pub reclaim: Reclaim,
    pub attachment: Attachment,
}

/// Sets up a scenario in namespaces named after `prefix`, so scenarios sharing a world keep
/// apart.
pub struct ScenarioBuilder {
    prefix: String,
    rancher: RancherSettings,
    harvester: HarvesterVersion,
    clock: Clock,
    clusters: Vec<ClusterPlan>,
}

impl ScenarioBuilder {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            rancher: RancherSettings::default(),
            harvester: HarvesterVersion::default(),
            clock: Clock::real(),
            clusters: Vec::new(),
        }
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn rancher(mut self, settings: RancherSettings) -> Self {
        self.rancher = settings;
        self
    }

    pub fn cluster(mut self, plan: ClusterPlan) -> Self {
        self.clusters.push(plan);
        self
    }

    /// Starts the simulators, provisions every cluster and its volumes, and records each host
    /// object it made with the traits that decide its class.
    pub async fn start(self, world: &World) -> Result<Scenario> {
        let env = Env {
            clock: self.clock,
            journal: Journal::default(),
        };
        let vm_namespace = format!("{}-vms", self.prefix);
        let harvester_client = world.client(ClusterName::HARVESTER).await?;
        let guest_client = world.client(GUEST).await?;
        ensure_namespace(&harvester_client, &vm_namespace).await?;
        let harvester = Harvester::start(
            world,
            ClusterName::HARVESTER,
            &vm_namespace,
            self.harvester,
            &env,
        )
        .await?;
        let rancher = Rancher::start(
            world,
            &format!("{}-fleet", self.prefix),
            self.rancher.clone(),
            env.clone(),
        )
        .await?;
        let csi = Csi::new(
            guest_client.clone(),
            harvester_client.clone(),
            &vm_namespace,
            env.clone(),
        );
        let mut scenario = Scenario {
            rancher,
            _harvester: harvester,
            csi,
            harvester: harvester_client,
            env,
            vm_namespace,
            clusters: Vec::new(),
            deleted: BTreeSet::new(),
            recorded: Vec::new(),
        };
        for plan in &self.clusters {
            let guest_namespace = format!("{}-{}", self.prefix, plan.name);
            ensure_namespace(&guest_client, &guest_namespace).await?;
            scenario.create_cluster(plan, &guest_namespace).await?;
        }
        Ok(scenario)
    }
}

/// A host object the scenario made, with what it knew when it made it.
#[derive(Clone, Debug)]
struct Recorded {
    cluster: String,
    traits: Traits,
    name: String,
    uid: String,
}

/// A running scenario: the simulators, the guest clusters, and the recorded ground truth.
pub struct Scenario {
    rancher: Rancher,
    _harvester: Harvester,
    csi: Csi,
    harvester: Client,
    env: Env,
    vm_namespace: String,
    clusters: Vec<GuestCluster>,
    deleted: BTreeSet<String>,
    recorded: Vec<Recorded>,
}

impl Scenario {
    pub fn rancher(&self) -> &Rancher {
        &self.rancher
    }

    pub fn journal(&self) -> &Journal {
        &self.env.journal
    }

    pub fn vm_namespace(&self) -> &str {
        &self.vm_namespace
    }

    pub fn cluster(&self, name: &str) -> Option<&GuestCluster> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    /// The user deletes a guest cluster: from now on its objects are judged as a deleted
    /// cluster's.
    pub async fn delete_cluster(&mut self, name: &str) -> Result<()> {
        self.deleted.insert(name.to_owned());
        self.rancher.delete_cluster(name).await
    }

    /// Waits until every VM of the deleted clusters is gone (or `timeout` passes), lets the
    /// world settle, then judges every recorded object: it exists at the end if an object with
    /// its UID still does.
    pub async fn measure(&self, timeout: Duration) -> Result<Report> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.deleted_vms_gone().await? && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(self.env.clock.scaled(SETTLE).max(MIN_SETTLE)).await;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.vm_namespace);
        let mut objects = Vec::new();
        for recorded in &self.recorded {
            let exists = claims
                .get_opt(&recorded.name)
                .await
                .context(|| format!("cannot read PVC {}", recorded.name))?
                .is_some_and(|claim| claim.metadata.uid.as_deref() == Some(&recorded.uid));
            let traits = Traits {
                living_cluster: !self.deleted.contains(&recorded.cluster),
                ..recorded.traits
            };
            let class = traits.class();
            objects.push(TrackedObject {
                class,
                kind: "PersistentVolumeClaim".into(),
                namespace: self.vm_namespace.clone(),
                name: recorded.name.clone(),
                uid: recorded.uid.clone(),
                must_survive: class.must_survive(),
                exists_at_end: exists,
            });
        }
        Ok(Report::judge(objects))
    }

    async fn deleted_vms_gone(&self) -> Result<bool> {
        let vms = kinds::namespaced(
            &self.harvester,
            &self.vm_namespace,
            &kinds::virtual_machine(),
        );
        for cluster in self
            .clusters
            .iter()
            .filter(|c| self.deleted.contains(&c.name))
        {
            for vm in cluster.vms.values() {
                if vms
                    .get_opt(vm)
                    .await
                    .context(|| format!("cannot read VM {vm}"))?
                    .is_some()
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    async fn create_cluster(&mut self, plan: &ClusterPlan, guest_namespace: &str) -> Result<()> {
        let cluster = self
            .rancher
            .provision(&GuestClusterSpec {
                name: plan.name.clone(),
                harvester: ClusterName::HARVESTER.to_owned(),
                vm_namespace: self.vm_namespace.clone(),
                guest: Some(GUEST.to_owned()),
                pools: vec![PoolSpec::new(POOL, plan.machines)],
            })
            .await?;
        let mut vm_names: Vec<String> = cluster.vms.values().cloned().collect();
        vm_names.sort();
        for vm in &vm_names {
            self.record_vm_disks(&plan.name, vm).await?;
        }
        for (index, volume) in plan.volumes.iter().enumerate() {
            let made = self
                .csi
                .create_volume(&VolumeRequest::rwo(
                    guest_namespace,
                    &volume.name,
                    volume.reclaim,
                ))
                .await?;
            if volume.attachment != Attachment::NeverAttached {
                let vm = &vm_names[index % vm_names.len()];
                self.csi.attach(vm, &made).await?;
                if volume.attachment == Attachment::Unattached {
                    self.csi.detach(vm, &made).await?;
                }
            }
            self.recorded.push(Recorded {
                cluster: plan.name.clone(),
                traits: Traits {
                    retained: volume.reclaim == Reclaim::Retain,
                    attachment: volume.attachment,
                    ..Traits::default()
                },
                name: made.host_pvc.name.clone(),
                uid: made.host_pvc.uid.clone(),
            });
        }
        self.clusters.push(cluster);
        Ok(())
    }

    /// The VM's own disks are the PVCs Harvester creates from its volume claim templates.
    async fn record_vm_disks(&mut self, cluster: &str, vm_name: &str) -> Result<()> {
        let vm = kinds::namespaced(
            &self.harvester,
            &self.vm_namespace,
            &kinds::virtual_machine(),
        )
        .get(vm_name)
        .await
        .context(|| format!("cannot read VM {vm_name}"))?;
        let templates: Vec<serde_json::Value> = vm
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(VOLUME_CLAIM_TEMPLATES))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.harvester.clone(), &self.vm_namespace);
        for template in templates {
            let Some(name) = template["metadata"]["name"].as_str() else {
                continue;
            };
            let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
            let claim = loop {
                if let Some(claim) = claims
                    .get_opt(name)
                    .await
                    .context(|| format!("cannot read PVC {name}"))?
                {
                    break claim;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(format!(
                        "Harvester never created disk {name}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            self.recorded.push(Recorded {
                cluster: cluster.to_owned(),
                traits: Traits {
                    vm_disk: true,
                    ..Traits::default()
                },
                name: name.to_owned(),
                uid: claim.metadata.uid.unwrap_or_default(),
            });
        }
        Ok(())
    }
}
