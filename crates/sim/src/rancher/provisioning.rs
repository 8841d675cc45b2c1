//! A simulated Rancher installation: it provisions Harvester-backed guest clusters the way
//! Rancher's provisioning controllers do and runs, with Cluster API, everything that reacts to
//! their deletion, scale-down and reprovisioning.

use std::{collections::HashMap, sync::Arc, time::Duration};

use gleaner_world::testing::ensure_namespace;
use gleaner_world::{CapiVersion, Player, Role, World};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;

use crate::{
    Env, Error, Result,
    controller::{self, has_finalizer, is_deleting, name, poll_again, remove_finalizer},
    error::KubeContext,
    guest::GuestCredential,
    keys::{
        CLOUD_CREDENTIAL_KUBECONFIG, CLOUD_CREDENTIAL_NAMESPACE, FINALIZER_CAPI_CLUSTER,
        FINALIZER_RANCHER_CLUSTER, GUEST_KUBECONFIG_KEY, LABEL_CAPI_CLUSTER_NAME,
        LABEL_CAPI_DEPLOYMENT_NAME, LABEL_RKE_POOL_NAME,
    },
    kinds::{self, Capi},
    naming,
    rancher::{
        RancherSettings,
        bootstrap::{self, BootstrapContext},
        capi::{self, CapiContext, DELETE_MACHINE, MACHINE_NAMES, machine_template_labels, owner},
        capi_observer,
        cleanup_handler::{self, CleanupContext},
        machine_provision::{self, ProvisionContext},
        random_suffix, ready_status,
    },
    tasks::Tasks,
};

const ACTOR: &str = "rancher";
const WAIT: Duration = Duration::from_secs(1);
const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);
const KUBERNETES_VERSION: &str = "v1.34.4+rke2r1";
/// The garbage collector's finalizer on an object deleted with Orphan propagation, until it has
/// taken the object off its dependents' owner references.
const ORPHAN_FINALIZER: &str = "orphan";
/// Cluster API skips draining the node of a Machine that carries it.
const EXCLUDE_NODE_DRAINING: &str = "machine.cluster.x-k8s.io/exclude-node-draining";

/// The real MachineSet controller names Machines only from a template: the first requested
/// name's form (all but its random tail, after the last `-`) gives every Machine of the pool.
fn naming_template(names: &[String]) -> Option<String> {
    let (form, _random) = names.first()?.rsplit_once('-')?;
    Some(format!("{form}-{{{{ .random }}}}"))
}

/// Whether Cluster API's `Paused` condition (v1beta2 conditions, which v1beta1 objects carry
/// under `status.v1beta2`) says `paused` for `generation` or later.
fn pause_observed(cluster: &DynamicObject, paused: bool, generation: i64) -> bool {
    let status = &cluster.data["status"];
    let conditions = status["v1beta2"]["conditions"]
        .as_array()
        .or_else(|| status["conditions"].as_array());
    conditions.into_iter().flatten().any(|condition| {
        condition["type"] == "Paused"
            && condition["status"] == if paused { "True" } else { "False" }
            && condition["observedGeneration"].as_i64().unwrap_or_default() >= generation
    })
}

/// Rancher's one RKEBootstrapTemplate per cluster.
fn bootstrap_template_name(cluster: &str) -> String {
    naming::safe_concat_name(&[cluster, "bootstrap", "template"])
}

/// A guest cluster to provision.
#[derive(Clone, Debug)]
pub struct GuestClusterSpec {
    pub name: String,
    /// The world cluster name of the Harvester its VMs run on.
    pub harvester: String,
    /// The Harvester namespace of its VMs (the pools' `vmNamespace`).
    pub vm_namespace: String,
    /// The credential for its guest apiserver, which Rancher writes into `<name>-kubeconfig`;
    /// None when the cluster runs no guest apiserver (then there is no such Secret).
    pub guest: Option<GuestCredential>,
    pub pools: Vec<PoolSpec>,
}

#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub name: String,
    pub quantity: usize,
    /// Explicit names for the pool's first Machines (e.g. dotted ones); the rest are generated.
    /// With the real Cluster API manager the first name's form (all but its random tail) names
    /// every Machine of the pool instead: it names Machines only from a template.
    pub machine_names: Vec<String>,
    /// A Harvester of its own (world cluster name), reached through the pool's own cloud
    /// credential; else the cluster's.
    pub harvester: Option<String>,
}

impl PoolSpec {
    pub fn new(name: &str, quantity: usize) -> Self {
        Self {
            name: name.to_owned(),
            quantity,
            machine_names: Vec::new(),
            harvester: None,
        }
    }
}

/// What Rancher made for a guest cluster.
#[derive(Clone, Debug)]
pub struct GuestCluster {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub capi_uid: String,
    /// `cattle-global-data:<secret>`.
    pub cloud_credential: String,
    pub vm_namespace: String,
    /// Every Machine at provisioning time.
    pub machines: Vec<GuestMachine>,
}

/// A guest node: its CAPI Machine, its VM, and the Harvester (world cluster) the VM runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestMachine {
    pub name: String,
    pub pool: String,
    pub vm: String,
    pub harvester: String,
    /// `namespace:name` of the credential that reaches that Harvester.
    pub cloud_credential: String,
}

impl GuestCluster {
    /// The VM of a Machine.
    pub fn vm(&self, machine: &str) -> Option<&str> {
        self.machines
            .iter()
            .find(|candidate| candidate.name == machine)
            .map(|machine| machine.vm.as_str())
    }

    /// The Machines named after `requested`, a [`PoolSpec::machine_names`] entry: that name
    /// itself with the simulated MachineSet, its form (all but the random tail) with the real one.
    pub fn machines_named_after(&self, requested: &str) -> Vec<&GuestMachine> {
        let form = requested
            .rsplit_once('-')
            .map_or(requested, |(form, _tail)| form);
        self.machines
            .iter()
            .filter(|machine| machine.name.starts_with(form))
            .collect()
    }
}

/// One simulated Rancher installation, acting in one namespace of the management cluster.
pub struct Rancher {
    client: Client,
    namespace: String,
    capi: Arc<CapiContext>,
    env: Env,
    install_uuid: String,
    kubeconfigs: HashMap<String, String>,
    settings: RancherSettings,
    controllers: Tasks,
}

/// Rancher's and Cluster API's controllers for one namespace.
fn controllers(capi: &Arc<CapiContext>, settings: &RancherSettings) -> Tasks {
    let client = &capi.client;
    let namespace = capi.namespace.as_str();
    let env = &capi.env;
    let mut controllers = Tasks::default();
    match capi.controllers {
        Player::Sim => capi::spawn(capi.clone(), &mut controllers),
        Player::Real => {
            capi_observer::spawn(capi, &mut controllers);
            bootstrap::spawn(
                Arc::new(BootstrapContext {
                    client: client.clone(),
                    namespace: namespace.to_owned(),
                    capi: capi.capi,
                    env: env.clone(),
                }),
                &mut controllers,
            );
        }
    }
    machine_provision::spawn(
        Arc::new(ProvisionContext::new(
            client.clone(),
            namespace,
            settings.clone(),
            capi.capi,
            env.clone(),
        )),
        &mut controllers,
    );
    if settings.cleanup_handler {
        cleanup_handler::spawn(
            Arc::new(CleanupContext {
                latency: settings.handler_latency,
                client: client.clone(),
                namespace: namespace.to_owned(),
                capi: capi.capi,
                env: env.clone(),
            }),
            &mut controllers,
        );
    }
    controllers.spawn(controller::run(
        kinds::namespaced(client, namespace, &kinds::provisioning_cluster()),
        kinds::provisioning_cluster(),
        capi.clone(),
        |cluster, context| async move { reconcile_cluster(&cluster, &context).await },
    ));
    controllers
}

/// An object as a backup restores it: what the apiserver assigns is assigned anew.
fn from_backup(mut object: DynamicObject) -> DynamicObject {
    let metadata = &mut object.metadata;
    metadata.uid = None;
    metadata.resource_version = None;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    metadata.generation = None;
    metadata.managed_fields = None;
    metadata.finalizers = None;
    object
}

impl Rancher {
    /// Starts Rancher's and Cluster API's controllers for `namespace` (e.g. `fleet-default`) of
    /// the world's management cluster `management` (each management cluster is one Rancher
    /// installation, with its own `install-uuid`).
    pub async fn start(
        world: &World,
        management: &str,
        namespace: &str,
        settings: RancherSettings,
        env: Env,
    ) -> Result<Self> {
        let client = world.client(management).await?;
        for name in [namespace, CLOUD_CREDENTIAL_NAMESPACE] {
            ensure_namespace(&client, name).await?;
        }
        let install_uuid = ensure_install_uuid(&client).await?;
        let mut kubeconfigs = HashMap::new();
        for (cluster, role) in world.clusters() {
            if role == Role::Harvester {
                let path = world.kubeconfig(&cluster)?;
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    Error::Invalid(format!("cannot read {}: {error}", path.display()))
                })?;
                kubeconfigs.insert(cluster, text);
            }
        }
        let capi = Arc::new(CapiContext {
            client: client.clone(),
            namespace: namespace.to_owned(),
            capi: Capi {
                version: world.capi_version(),
            },
            controllers: world.capi_controllers(),
            env: env.clone(),
        });
        let controllers = controllers(&capi, &settings);
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
            capi,
            env,
            install_uuid,
            kubeconfigs,
            settings,
            controllers,
        })
    }

    /// A Rancher restore from backup, as it looks from outside: Rancher is down, the cluster's
    /// provisioning and CAPI Cluster objects come back from the backup with new UIDs (and
    /// nothing sees them deleted: their finalizers are dropped, their dependents orphaned), and
    /// Rancher starts again. The Machines' VMs run on throughout.
    pub async fn restore_from_backup(&mut self, cluster: &str) -> Result<()> {
        self.controllers = Tasks::default();
        let provisioning = self.api(&kinds::provisioning_cluster());
        let capi = self.api(&self.capi.capi.cluster());
        let backup = provisioning
            .get(cluster)
            .await
            .context(|| format!("cannot read provisioning Cluster {cluster}"))?;
        let capi_backup = capi
            .get(cluster)
            .await
            .context(|| format!("cannot read CAPI Cluster {cluster}"))?;
        if self.capi.controllers == Player::Real {
            // Rancher being down takes the Cluster API it runs with it; the real manager runs on,
            // so the cluster is paused instead: a deleting Cluster it reconciled would take
            // its Machines with it. The backup above is of the unpaused cluster.
            self.set_paused(cluster, true).await?;
        }
        let orphan = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        // Deleted with Orphan first, so the garbage collector takes the Cluster off its
        // dependents; then without its finalizers (a deleting object gets none back).
        for api in [&capi, &provisioning] {
            api.delete(cluster, &orphan)
                .await
                .context(|| format!("cannot delete Cluster {cluster}"))?;
        }
        for api in [&capi, &provisioning] {
            let deadline = tokio::time::Instant::now() + PROVISION_TIMEOUT;
            while let Some(found) = api
                .get_opt(cluster)
                .await
                .context(|| format!("cannot read Cluster {cluster}"))?
            {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(format!(
                        "Cluster {cluster} is still there a minute after its delete"
                    )));
                }
                if !has_finalizer(&found, ORPHAN_FINALIZER) {
                    let unfinalized = json!({"metadata": {"finalizers": null}});
                    match api
                        .patch(
                            cluster,
                            &PatchParams::default(),
                            &Patch::Merge(&unfinalized),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.is_not_found() => break,
                        Err(error) => {
                            return Err(error).context(|| {
                                format!("cannot drop the finalizers of Cluster {cluster}")
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let restored = provisioning
            .create(&PostParams::default(), &from_backup(backup))
            .await
            .context(|| format!("cannot restore provisioning Cluster {cluster}"))?;
        let mut capi_restored = from_backup(capi_backup);
        for owner in capi_restored.metadata.owner_references.iter_mut().flatten() {
            if owner.kind == "Cluster" && owner.name == cluster {
                owner.uid = restored.metadata.uid.clone().unwrap_or_default();
            }
        }
        capi.create(&PostParams::default(), &capi_restored)
            .await
            .context(|| format!("cannot restore CAPI Cluster {cluster}"))?;
        self.env.journal.record(
            ACTOR,
            format!("Rancher restored cluster {cluster} from a backup (new UIDs)"),
        );
        self.controllers = controllers(&self.capi, &self.settings);
        Ok(())
    }

    pub fn install_uuid(&self) -> &str {
        &self.install_uuid
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates everything Rancher creates for a Harvester-backed guest cluster and waits until
    /// every VM exists in Harvester.
    pub async fn provision(&self, spec: &GuestClusterSpec) -> Result<GuestCluster> {
        let credential = self.create_cloud_credential(&spec.harvester).await?;
        let mut pool_credentials = HashMap::new();
        for pool in &spec.pools {
            let (harvester, own) = match &pool.harvester {
                Some(harvester) => (
                    harvester.clone(),
                    Some(self.create_cloud_credential(harvester).await?),
                ),
                None => (spec.harvester.clone(), None),
            };
            pool_credentials.insert(pool.name.clone(), (harvester, own));
        }
        let cluster = self
            .create_provisioning_cluster(spec, &credential, &pool_credentials)
            .await?;
        if let Some(credential) = &spec.guest {
            self.create_guest_kubeconfig_secret(&cluster, credential)
                .await?;
        }
        self.create_rke_objects(&cluster).await?;
        let capi_cluster = self.create_capi_cluster(&spec.name, &cluster).await?;
        let mut machines = Vec::new();
        for pool in &spec.pools {
            let (harvester, own) = &pool_credentials[&pool.name];
            let pool_credential = own.clone().unwrap_or_else(|| credential.clone());
            for machine in self.create_pool(spec, pool, &pool_credential).await? {
                machines.push(GuestMachine {
                    vm: naming::vm_name(&machine),
                    name: machine,
                    pool: pool.name.clone(),
                    harvester: harvester.clone(),
                    cloud_credential: pool_credential.clone(),
                });
            }
        }
        let guest = GuestCluster {
            name: spec.name.clone(),
            namespace: self.namespace.clone(),
            uid: cluster.metadata.uid.clone().unwrap_or_default(),
            capi_uid: capi_cluster.metadata.uid.clone().unwrap_or_default(),
            cloud_credential: credential,
            vm_namespace: spec.vm_namespace.clone(),
            machines,
        };
        self.wait_for_vms(&guest).await?;
        self.env.journal.record(
            ACTOR,
            format!("provisioned cluster {}/{}", self.namespace, spec.name),
        );
        Ok(guest)
    }

    /// The user deletes the guest cluster in Rancher.
    pub async fn delete_cluster(&self, cluster: &str) -> Result<()> {
        self.api(&kinds::provisioning_cluster())
            .delete(cluster, &DeleteParams::background())
            .await
            .context(|| format!("cannot delete provisioning Cluster {cluster}"))?;
        self.env
            .journal
            .record(ACTOR, format!("user deleted cluster {cluster}"));
        Ok(())
    }

    /// The user lowers a pool's quantity by one; CAPI deletes `machine` (marked for deletion).
    pub async fn scale_down(&self, cluster: &str, pool: &str, machine: &str) -> Result<()> {
        let mark = json!({"metadata": {"annotations": {DELETE_MACHINE: "yes"}}});
        self.api(&self.capi.capi.machine())
            .patch(machine, &PatchParams::default(), &Patch::Merge(&mark))
            .await
            .context(|| format!("cannot mark Machine {machine}"))?;
        let deployment = naming::machine_deployment_name(cluster, pool);
        let deployments = self.api(&self.capi.capi.machine_deployment());
        let current = deployments
            .get(&deployment)
            .await
            .context(|| format!("cannot read MachineDeployment {deployment}"))?;
        let replicas = current.data["spec"]["replicas"].as_u64().unwrap_or(1);
        let patch = json!({"spec": {"replicas": replicas.saturating_sub(1)}});
        deployments
            .patch(&deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot scale MachineDeployment {deployment}"))?;
        self.env.journal.record(
            ACTOR,
            format!("user scaled {cluster}/{pool} down, removing {machine}"),
        );
        Ok(())
    }

    /// Rancher replaces a machine (a rolling reprovision): the Machine is deleted and its
    /// MachineSet creates a new one.
    pub async fn reprovision(&self, machine: &str) -> Result<()> {
        self.api(&self.capi.capi.machine())
            .delete(machine, &DeleteParams::background())
            .await
            .context(|| format!("cannot delete Machine {machine}"))?;
        self.env
            .journal
            .record(ACTOR, format!("reprovisioning replaces Machine {machine}"));
        Ok(())
    }

    /// Pauses or resumes a cluster (`spec.paused` on the CAPI Cluster).
    /// With the real Cluster API manager it returns once the manager has seen the change (its
    /// `Paused` condition at the new generation): until then its Machine controller may still act
    /// on a Machine as if nothing changed, a race no user can win either.
    pub async fn set_paused(&self, cluster: &str, paused: bool) -> Result<()> {
        let patch = json!({"spec": {"paused": paused}});
        let clusters = self.api(&self.capi.capi.cluster());
        let patched = clusters
            .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot pause CAPI Cluster {cluster}"))?;
        if self.capi.controllers == Player::Sim {
            return Ok(());
        }
        let generation = patched.metadata.generation.unwrap_or_default();
        let deadline = tokio::time::Instant::now() + PROVISION_TIMEOUT;
        loop {
            let current = clusters
                .get(cluster)
                .await
                .context(|| format!("cannot read CAPI Cluster {cluster}"))?;
            if pause_observed(&current, paused, generation) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "Cluster API never saw CAPI Cluster {cluster} paused={paused}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The cluster's CAPI Machines, deleting ones included.
    pub async fn machines(&self, cluster: &str) -> Result<Vec<DynamicObject>> {
        Ok(self
            .api(&self.capi.capi.machine())
            .list(&ListParams::default().labels(&format!("{LABEL_CAPI_CLUSTER_NAME}={cluster}")))
            .await
            .context(|| format!("cannot list Machines of {cluster}"))?
            .items)
    }

    fn api(&self, resource: &kube::api::ApiResource) -> Api<DynamicObject> {
        kinds::namespaced(&self.client, &self.namespace, resource)
    }

    async fn create_cloud_credential(&self, harvester: &str) -> Result<String> {
        let kubeconfig = self.kubeconfigs.get(harvester).ok_or_else(|| {
            Error::Invalid(format!(
                "the world has no Harvester cluster named {harvester}"
            ))
        })?;
        let name = format!("cc-{}", random_suffix(5));
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(
                    [(
                        "provisioning.cattle.io/driver".to_owned(),
                        "harvester".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("provisioning.cattle.io/cloud-credential".into()),
            data: Some(
                [(
                    CLOUD_CREDENTIAL_KUBECONFIG.to_owned(),
                    ByteString(kubeconfig.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), CLOUD_CREDENTIAL_NAMESPACE)
            .create(&PostParams::default(), &secret)
            .await
            .context(|| format!("cannot create cloud credential {name}"))?;
        Ok(format!("{CLOUD_CREDENTIAL_NAMESPACE}:{name}"))
    }

    async fn create_provisioning_cluster(
        &self,
        spec: &GuestClusterSpec,
        credential: &str,
        pool_credentials: &HashMap<String, (String, Option<String>)>,
    ) -> Result<DynamicObject> {
        let mut pools = Vec::new();
        for pool in &spec.pools {
            let config = self.create_harvester_config(spec, pool).await?;
            let mut machine_pool = json!({
                "name": pool.name,
                "quantity": pool.quantity,
                "etcdRole": true, "controlPlaneRole": true, "workerRole": true,
                "machineConfigRef": {"kind": "HarvesterConfig", "name": config},
            });
            if let Some((_, Some(own))) = pool_credentials.get(&pool.name) {
                machine_pool["cloudCredentialSecretName"] = own.as_str().into();
            }
            pools.push(machine_pool);
        }
        let cluster: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "provisioning.cattle.io/v1",
            "kind": "Cluster",
            "metadata": {"name": spec.name, "finalizers": [FINALIZER_RANCHER_CLUSTER]},
            "spec": {
                "cloudCredentialSecretName": credential,
                "kubernetesVersion": KUBERNETES_VERSION,
                "rkeConfig": {"machinePools": pools},
            },
        }))
        .expect("a provisioning Cluster is a valid object");
        self.api(&kinds::provisioning_cluster())
            .create(&PostParams::default(), &cluster)
            .await
            .context(|| format!("cannot create provisioning Cluster {}", spec.name))
    }

    async fn create_harvester_config(
        &self,
        spec: &GuestClusterSpec,
        pool: &PoolSpec,
    ) -> Result<String> {
        let name = format!("nc-{}-{}-{}", spec.name, pool.name, random_suffix(5));
        let config: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "rke-machine-config.cattle.io/v1",
            "kind": "HarvesterConfig",
            "metadata": {"name": name},
            "vmNamespace": spec.vm_namespace,
            "cpuCount": "2",
            "memorySize": "4",
            "diskSize": "40",
            "imageName": "default/image-ubuntu",
            "networkName": "default/vlan1",
        }))
        .expect("a HarvesterConfig is a valid object");
        self.api(&kinds::harvester_config())
            .create(&PostParams::default(), &config)
            .await
            .context(|| format!("cannot create HarvesterConfig {name}"))?;
        Ok(name)
    }

    /// Rancher's `<cluster>-kubeconfig`: the guest credential's kubeconfig under `value`, owned
    /// by the provisioning Cluster (so it goes with it).
    async fn create_guest_kubeconfig_secret(
        &self,
        cluster: &DynamicObject,
        credential: &GuestCredential,
    ) -> Result<()> {
        let cluster_name = name(cluster);
        let secret_name = naming::guest_kubeconfig_secret(cluster_name);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": secret_name,
                "labels": {LABEL_CAPI_CLUSTER_NAME: cluster_name},
                "ownerReferences": [{
                    "apiVersion": "provisioning.cattle.io/v1",
                    "kind": "Cluster",
                    "name": cluster_name,
                    "uid": cluster.metadata.uid,
                }],
            },
            "data": {GUEST_KUBECONFIG_KEY: ByteString(credential.kubeconfig.as_bytes().to_vec())},
        }))
        .expect("a kubeconfig Secret is a valid object");
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .context(|| format!("cannot create Secret {}/{secret_name}", self.namespace))?;
        Ok(())
    }

    /// Rancher rotates a guest cluster's credential: `<cluster>-kubeconfig` holds `credential`'s
    /// kubeconfig from now on.
    pub async fn rotate_guest_kubeconfig(
        &self,
        cluster: &str,
        credential: &GuestCredential,
    ) -> Result<()> {
        let secret_name = naming::guest_kubeconfig_secret(cluster);
        let patch = json!({"data": {
            GUEST_KUBECONFIG_KEY: ByteString(credential.kubeconfig.as_bytes().to_vec()),
        }});
        self.secrets()
            .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context(|| format!("cannot update Secret {}/{secret_name}", self.namespace))?;
        self.env.journal.record(
            ACTOR,
            format!(
                "rotated the guest kubeconfig of {}/{cluster}",
                self.namespace
            ),
        );
        Ok(())
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create_capi_cluster(
        &self,
        name: &str,
        owner_cluster: &DynamicObject,
    ) -> Result<DynamicObject> {
        let capi = &self.capi.capi;
        let mut reference = owner(owner_cluster, "Cluster", &self.capi);
        reference["apiVersion"] = "provisioning.cattle.io/v1".into();
        let cluster: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("cluster.x-k8s.io/{}", capi.api_version()),
            "kind": "Cluster",
            "metadata": {
                "name": name,
                "finalizers": [FINALIZER_CAPI_CLUSTER],
                "ownerReferences": [reference],
            },
            "spec": {
                "controlPlaneRef": self.capi.reference("rke.cattle.io/v1", "RKEControlPlane", name),
                "infrastructureRef": self.capi.reference("rke.cattle.io/v1", "RKECluster", name),
            },
        }))
        .expect("a CAPI Cluster is a valid object");
        self.api(&capi.cluster())
            .create(&PostParams::default(), &cluster)
            .await
            .context(|| format!("cannot create CAPI Cluster {name}"))
    }

    /// What Rancher gives Cluster API beside the Cluster, owned by the provisioning Cluster: the
    /// RKECluster (infrastructure) and RKEControlPlane, both ready, and the
    /// RKEBootstrapTemplate every pool's Machines are bootstrapped from.
    async fn create_rke_objects(&self, cluster: &DynamicObject) -> Result<()> {
        let cluster_name = name(cluster);
        // Not the controller: Cluster API makes its Cluster the controller of the two it
        // references, and refuses to when another controller owns them.
        let owner = json!([{
            "apiVersion": "provisioning.cattle.io/v1",
            "kind": "Cluster",
            "name": cluster_name,
            "uid": cluster.metadata.uid,
        }]);
        let mut control_plane_ready = ready_status(self.capi.capi, "controlPlaneInitialized");
        control_plane_ready["initialized"] = json!(true);
        control_plane_ready["observedGeneration"] = json!(1);
        let objects = [
            (
                kinds::rke_cluster(),
                cluster_name.to_owned(),
                json!({}),
                Some(json!({ "status": ready_status(self.capi.capi, "provisioned") })),
            ),
            (
                kinds::rke_control_plane(),
                cluster_name.to_owned(),
                json!({
                    "clusterName": cluster_name,
                    "managementClusterName": cluster_name,
                    "kubernetesVersion": KUBERNETES_VERSION,
                }),
                Some(json!({ "status": control_plane_ready })),
            ),
            (
                kinds::rke_bootstrap_template(),
                bootstrap_template_name(cluster_name),
                json!({"clusterName": cluster_name, "template": {"spec": {"clusterName": cluster_name}}}),
                None,
            ),
        ];
        for (resource, object_name, spec, status) in objects {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": {"name": object_name, "ownerReferences": owner},
                "spec": spec,
            }))
            .expect("an rke.cattle.io object is a valid object");
            let api = self.api(&resource);
            api.create(&PostParams::default(), &object)
                .await
                .context(|| format!("cannot create {} {object_name}", resource.kind))?;
            if let Some(status) = status {
                api.patch_status(
                    &object_name,
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .context(|| format!("cannot mark {} {object_name} ready", resource.kind))?;
            }
        }
        Ok(())
    }

    /// A pool: its HarvesterMachineTemplate, MachineDeployment and, when these simulators play
    /// Cluster API, its MachineSet; then its Machines (whose names it returns).
    async fn create_pool(
        &self,
        spec: &GuestClusterSpec,
        pool: &PoolSpec,
        credential: &str,
    ) -> Result<Vec<String>> {
        let capi = &self.capi.capi;
        let deployment_name = naming::machine_deployment_name(&spec.name, &pool.name);
        let template_name = naming::safe_concat_name(&[&deployment_name, &random_suffix(8)]);
        let template: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "rke-machine.cattle.io/v1",
            "kind": "HarvesterMachineTemplate",
            "metadata": {"name": template_name},
            "spec": {
                "clusterName": spec.name,
                "template": {"spec": {
                    "vmNamespace": spec.vm_namespace,
                    "cpuCount": "2",
                    "memorySize": "4",
                    "diskSize": "40",
                    "imageName": "default/image-ubuntu",
                    "networkName": "default/vlan1",
                    "common": {"cloudCredentialSecretName": credential},
                }},
            },
        }))
        .expect("a HarvesterMachineTemplate is a valid object");
        self.api(&kinds::harvester_machine_template())
            .create(&PostParams::default(), &template)
            .await
            .context(|| format!("cannot create HarvesterMachineTemplate {template_name}"))?;
        let labels = machine_template_labels(&spec.name, &deployment_name, &pool.name);
        // Rancher lets Cluster API drain a node only when the pool asks for it
        // (`drainBeforeDelete`, unset here); it drains through its own plans otherwise.
        let machine_template = json!({
            "metadata": {"labels": labels, "annotations": {EXCLUDE_NODE_DRAINING: "true"}},
            "spec": {
                "clusterName": spec.name,
                "bootstrap": {"configRef": self.capi.reference("rke.cattle.io/v1", "RKEBootstrapTemplate", &bootstrap_template_name(&spec.name))},
                "infrastructureRef": self.capi.reference("rke-machine.cattle.io/v1", "HarvesterMachineTemplate", &template_name),
            },
        });
        let selector = json!({"matchLabels": {LABEL_CAPI_CLUSTER_NAME: spec.name, LABEL_RKE_POOL_NAME: pool.name}});
        let mut deployment: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("cluster.x-k8s.io/{}", capi.api_version()),
            "kind": "MachineDeployment",
            "metadata": {"name": deployment_name, "labels": {LABEL_CAPI_CLUSTER_NAME: spec.name}},
            "spec": {
                "clusterName": spec.name,
                "replicas": pool.quantity,
                "selector": selector,
                "template": machine_template,
            },
        }))
        .expect("a MachineDeployment is a valid object");
        if let (Player::Real, Some(template)) =
            (self.capi.controllers, naming_template(&pool.machine_names))
        {
            let field = match capi.version {
                CapiVersion::V1beta1 => "machineNamingStrategy",
                CapiVersion::V1beta2 => "machineNaming",
            };
            deployment.data["spec"][field] = json!({ "template": template });
        }
        let deployment = self
            .api(&capi.machine_deployment())
            .create(&PostParams::default(), &deployment)
            .await
            .context(|| format!("cannot create MachineDeployment {deployment_name}"))?;
        if self.capi.controllers == Player::Real {
            return self
                .wait_for_machines(&deployment_name, pool.quantity)
                .await;
        }
        let set_name = format!("{deployment_name}-{}", random_suffix(5));
        let set: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("cluster.x-k8s.io/{}", capi.api_version()),
            "kind": "MachineSet",
            "metadata": {
                "name": set_name,
                "labels": labels,
                "annotations": {MACHINE_NAMES: pool.machine_names.join(",")},
                "ownerReferences": [owner(&deployment, "MachineDeployment", &self.capi)],
            },
            "spec": {
                "clusterName": spec.name,
                "replicas": pool.quantity,
                "selector": selector,
                "template": machine_template,
            },
        }))
        .expect("a MachineSet is a valid object");
        self.api(&capi.machine_set())
            .create(&PostParams::default(), &set)
            .await
            .context(|| format!("cannot create MachineSet {set_name}"))?;
        self.wait_for_machines(&deployment_name, pool.quantity)
            .await
    }

    /// Waits until the MachineSet controller has created the pool's Machines; their names.
    async fn wait_for_machines(&self, deployment: &str, count: usize) -> Result<Vec<String>> {
        let machines = self.api(&self.capi.capi.machine());
        let selector =
            ListParams::default().labels(&format!("{LABEL_CAPI_DEPLOYMENT_NAME}={deployment}"));
        let deadline = tokio::time::Instant::now() + PROVISION_TIMEOUT;
        loop {
            let made = machines
                .list(&selector)
                .await
                .context(|| format!("cannot list Machines of {deployment}"))?
                .items;
            if made.len() >= count {
                return Ok(made
                    .iter()
                    .map(|machine| name(machine).to_owned())
                    .collect());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "MachineDeployment {deployment} never got {count} Machines"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_vms(&self, cluster: &GuestCluster) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PROVISION_TIMEOUT;
        for machine in &cluster.machines {
            let harvester =
                machine_provision::harvester_client(&self.client, &machine.cloud_credential)
                    .await?;
            let vms =
                kinds::namespaced(&harvester, &cluster.vm_namespace, &kinds::virtual_machine());
            while vms
                .get_opt(&machine.vm)
                .await
                .context(|| format!("cannot read VM {}", machine.vm))?
                .is_none()
            {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(format!(
                        "VM {} of {} was never created",
                        machine.vm, cluster.name
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// Rancher's provisioning-cluster remove handler: deletes the CAPI Cluster, waits for it to be
/// gone, then lets the provisioning Cluster go.
async fn reconcile_cluster(cluster: &DynamicObject, context: &CapiContext) -> Result<Action> {
    if !is_deleting(cluster) {
        return Ok(Action::await_change());
    }
    let capi_clusters =
        kinds::namespaced(&context.client, &context.namespace, &context.capi.cluster());
    match capi_clusters
        .get_opt(name(cluster))
        .await
        .context(|| format!("cannot read CAPI Cluster {}", name(cluster)))?
    {
        Some(capi_cluster) => {
            if !is_deleting(&capi_cluster) {
                capi_clusters
                    .delete(name(cluster), &DeleteParams::background())
                    .await
                    .context(|| format!("cannot delete CAPI Cluster {}", name(cluster)))?;
                context
                    .env
                    .journal
                    .record(ACTOR, format!("deleted CAPI Cluster {}", name(cluster)));
            }
            Ok(poll_again(&context.env.clock, WAIT))
        }
        None => {
            let clusters = kinds::namespaced(
                &context.client,
                &context.namespace,
                &kinds::provisioning_cluster(),
            );
            remove_finalizer(&clusters, cluster, FINALIZER_RANCHER_CLUSTER).await?;
            context
                .env
                .journal
                .record(ACTOR, format!("cluster {} is gone", name(cluster)));
            Ok(Action::await_change())
        }
    }
}

/// The cluster-scoped `install-uuid` Setting, created once per management cluster.
async fn ensure_install_uuid(client: &Client) -> Result<String> {
    let settings: Api<DynamicObject> = Api::all_with(client.clone(), &kinds::setting());
    if let Some(setting) = settings
        .get_opt("install-uuid")
        .await
        .context(|| "cannot read the install-uuid Setting".into())?
    {
        return Ok(setting.data["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned());
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let setting: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3",
        "kind": "Setting",
        "metadata": {"name": "install-uuid"},
        "value": uuid,
        "default": "",
    }))
    .expect("a Setting is a valid object");
    match settings.create(&PostParams::default(), &setting).await {
        Ok(_) => Ok(uuid),
        // Another Rancher simulator of the same world won the race: use its value.
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(settings
            .get("install-uuid")
            .await
            .context(|| "cannot read the install-uuid Setting".into())?
            .data["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        Err(error) => Err(error).context(|| "cannot create the install-uuid Setting".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_name_gives_its_form_to_the_real_machine_set() {
        let names = ["c1.eu-west.example-pool1-7d9f8c6b5x-abcde".to_owned()];
        assert_eq!(
            naming_template(&names).as_deref(),
            Some("c1.eu-west.example-pool1-7d9f8c6b5x-{{ .random }}")
        );
        assert_eq!(naming_template(&[]), None);
        assert_eq!(naming_template(&["plain".to_owned()]), None);
    }

    #[test]
    fn machines_are_named_after_a_request_by_its_form() {
        let machine = |name: &str| GuestMachine {
            name: name.to_owned(),
            pool: "pool1".to_owned(),
            vm: name.replace('.', "-"),
            harvester: "harvester".to_owned(),
            cloud_credential: "cattle-global-data:cc".to_owned(),
        };
        let cluster = GuestCluster {
            name: "c1".to_owned(),
            namespace: "fleet-default".to_owned(),
            uid: "u".to_owned(),
            capi_uid: "cu".to_owned(),
            cloud_credential: "cattle-global-data:cc".to_owned(),
            vm_namespace: "default".to_owned(),
            machines: vec![
                machine("c1.eu-west.pool1-7d9f8-abcde"),
                machine("c1.eu-west.pool1-7d9f8-x2k4m"),
                machine("c1-pool1-7d9f8-qrstv"),
            ],
        };
        let named: Vec<_> = cluster
            .machines_named_after("c1.eu-west.pool1-7d9f8-abcde")
            .into_iter()
            .map(|machine| machine.name.as_str())
            .collect();
        assert_eq!(
            named,
            [
                "c1.eu-west.pool1-7d9f8-abcde",
                "c1.eu-west.pool1-7d9f8-x2k4m"
            ]
        );
        assert!(cluster.machines_named_after("c2.pool1-abcde").is_empty());
    }

    #[test]
    fn a_pause_counts_as_seen_only_at_the_generation_that_asked_for_it() {
        let cluster: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "c1"},
            "status": {"v1beta2": {"conditions": [
                {"type": "Paused", "status": "True", "observedGeneration": 3},
            ]}},
        }))
        .unwrap();
        assert!(pause_observed(&cluster, true, 3));
        assert!(!pause_observed(&cluster, true, 4));
        assert!(!pause_observed(&cluster, false, 3));
    }
}
