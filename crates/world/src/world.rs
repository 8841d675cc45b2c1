use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::try_join_all;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::OnceCell;

use crate::{
    Binaries, CapiVersion, ClusterName, CrdSource, Error, Result, Role, capi_manager,
    cluster::ControlPlane,
    cluster::Controllers,
    crds,
    error::{IoContext, KubeContext},
    etcd::Etcd,
    kubeconfig,
    layout::{Layout, write_file},
    pki::{Pki, ServingCert},
    player::Player,
    process::Supervisor,
};

/// How long a minted ServiceAccount token lives; longer than any test.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

/// Sets up a [`World`]: which clusters, which Cluster API version, where CRDs and binaries come
/// from. The default is one management cluster (`rancher`) and one Harvester (`harvester`).
pub struct WorldBuilder {
    clusters: Vec<(String, Role)>,
    capi: CapiVersion,
    snapshots: Option<Player>,
    capi_controllers: Option<Player>,
    audit: bool,
    crd_source: Option<CrdSource>,
    binaries: Option<Binaries>,
    extra_crds: Vec<(Role, CustomResourceDefinition)>,
}

impl Default for WorldBuilder {
    fn default() -> Self {
        Self {
            clusters: vec![
                (ClusterName::RANCHER.to_owned(), Role::Management),
                (ClusterName::HARVESTER.to_owned(), Role::Harvester),
            ],
            capi: CapiVersion::default(),
            snapshots: None,
            capi_controllers: None,
            audit: false,
            crd_source: None,
            binaries: None,
            extra_crds: Vec::new(),
        }
    }
}

impl WorldBuilder {
    /// A builder with no cluster at all, for worlds that need other clusters than the default.
    pub fn empty() -> Self {
        Self {
            clusters: Vec::new(),
            ..Self::default()
        }
    }

    /// Adds a cluster; names must be unique within a world.
    pub fn cluster(mut self, name: &str, role: Role) -> Self {
        self.clusters.push((name.to_owned(), role));
        self
    }

    /// Adds guest-cluster apiservers `guest-1` ... `guest-<count>`.
    pub fn guests(mut self, count: usize) -> Self {
        for index in 1..=count {
            self.clusters.push((format!("guest-{index}"), Role::Guest));
        }
        self
    }

    pub fn capi(mut self, version: CapiVersion) -> Self {
        self.capi = version;
        self
    }

    /// Who plays the snapshot-controller on the Harvester and guest clusters. Real: the
    /// external-snapshotter's ([`crate::SNAPSHOTTER_VERSION`]), one per Harvester and per guest,
    /// watching every namespace, while the simulators play only its csi-snapshotter sidecar
    /// and the driver behind it (Longhorn on a Harvester, the Harvester CSI driver in a guest).
    /// Sim: the simulators' stand-in on Harvester, and in a guest the simulated CSI driver
    /// plays the whole external-snapshotter in one step. Unset: `$GLEANER_WORLD_SNAPSHOTS`
    /// (`real` or `sim`), else real.
    pub fn snapshots(mut self, snapshots: Player) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Who plays Cluster API's core controllers on the management clusters. Real: the core
    /// manager ([`crate::CAPI_VERSION`] for `v1beta1`, [`crate::CAPI_V1BETA2_VERSION`] for
    /// `v1beta2`), watching every namespace, with its admission webhooks served over TLS from the
    /// world's CA and its own CRDs in place of the testenv ones (serving `v1beta2` only in a
    /// `v1beta2` world); the simulated Rancher then plays only what Rancher plays around it.
    /// Unset: `$GLEANER_WORLD_CAPI` (`real` or `sim`), else the real manager.
    pub fn capi_controllers(mut self, controllers: Player) -> Self {
        self.capi_controllers = Some(controllers);
        self
    }

    /// Every apiserver also writes an audit log ([`World::audit_log`]): one JSON line per
    /// request with its user and user agent, so a benchmark can tell one client's requests from
    /// the rest. Off by default: it costs every request a write.
    pub fn audit_log(mut self, on: bool) -> Self {
        self.audit = on;
        self
    }

    pub fn crd_source(mut self, source: CrdSource) -> Self {
        self.crd_source = Some(source);
        self
    }

    /// Also installs `crds` in every cluster of `role` (e.g. gleaner's own, from `gleaner crd`).
    pub fn with_crds(mut self, role: Role, crds: Vec<CustomResourceDefinition>) -> Self {
        self.extra_crds
            .extend(crds.into_iter().map(|crd| (role, crd)));
        self
    }

    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Starts etcd, every apiserver (in parallel), installs each cluster's CRDs, then starts the
    /// controller-managers. Fails with the component, its log and what to do.
    pub async fn start(self) -> Result<World> {
        let started = Instant::now();
        let binaries = self.binaries.unwrap_or_else(Binaries::from_env);
        binaries.check()?;
        let snapshots = match self.snapshots {
            Some(snapshots) => snapshots,
            None => Player::from_env("GLEANER_WORLD_SNAPSHOTS", Player::Real)?,
        };
        let capi_controllers = match self.capi_controllers {
            Some(controllers) => controllers,
            None => Player::from_env("GLEANER_WORLD_CAPI", Player::Real)?,
        };
        let controllers = Controllers {
            snapshots,
            capi: capi_controllers,
            capi_version: self.capi,
            audit: self.audit,
        };
        let crd_source = self.crd_source.unwrap_or_else(CrdSource::detect);
        let crd_files = self
            .clusters
            .iter()
            .map(|(_, role)| {
                let mut files = crd_source.files(*role, self.capi)?;
                if *role == Role::Management && capi_controllers == Player::Real {
                    // The manager's own CRDs, every kind it watches; they replace the testenv
                    // ones of the same name.
                    files.extend(crds::yaml_files(&capi_manager::crd_dir(
                        binaries.cluster_api_for(self.capi),
                    ))?);
                }
                Ok(files)
            })
            .collect::<Result<Vec<_>>>()?;
        let supervisor = Supervisor::start()?;
        let layout = Layout::create()?;
        let pki = Pki::new()?;
        let etcd = Etcd::start(&binaries, &layout, &supervisor).await?;
        let clusters = try_join_all(self.clusters.iter().map(|(name, role)| {
            ControlPlane::start(
                name,
                *role,
                &etcd.url,
                &pki,
                &binaries,
                controllers,
                &layout,
                &supervisor,
            )
        }))
        .await?;
        let installed = try_join_all(clusters.iter().zip(&crd_files).map(|(plane, files)| {
            finish_starting(plane, files, &self.extra_crds, self.capi, &supervisor)
        }))
        .await?;
        let started_clusters = clusters
            .into_iter()
            .zip(installed)
            .map(|(plane, crds)| Arc::new(Started { plane, crds }))
            .collect();
        let world = World {
            clusters: RwLock::new(started_clusters),
            guests_started: AtomicU32::new(0),
            extra_crds: self.extra_crds,
            etcd,
            pki,
            capi: self.capi,
            controllers,
            crd_source,
            binaries,
            layout,
            supervisor,
            start_time: started.elapsed(),
        };
        tracing::info!(
            dir = %world.dir().display(),
            seconds = world.start_time.as_secs_f32(),
            "world started"
        );
        Ok(world)
    }
}

/// Installs a freshly started cluster's CRDs (from `files`, plus the extra ones for its role),
/// then starts the controllers it runs (controller-manager, snapshot-controller). Returns the names of the CRDs.
async fn finish_starting(
    plane: &ControlPlane,
    files: &[PathBuf],
    extra_crds: &[(Role, CustomResourceDefinition)],
    capi: CapiVersion,
    supervisor: &Supervisor,
) -> Result<Vec<String>> {
    let mut crds = crds::load(files)?;
    if plane.role == Role::Management && capi == CapiVersion::V1beta2 {
        crds::serve_only_v1beta2(&mut crds);
    }
    crds.extend(
        extra_crds
            .iter()
            .filter(|(role, _)| *role == plane.role)
            .map(|(_, crd)| crd.clone()),
    );
    let crds = crds::last_of_each_name(crds);
    let client = kubeconfig::client(&plane.name, &plane.kubeconfig).await?;
    crds::install(&client, &crds).await?;
    plane.start_controllers(supervisor).await?;
    Ok(crds
        .iter()
        .filter_map(|crd| crd.metadata.name.clone())
        .collect())
}

/// A running cluster and the names of the CRDs installed in it.
struct Started {
    plane: ControlPlane,
    crds: Vec<String>,
}

/// Running control planes: one etcd, one apiserver per cluster, a controller-manager per
/// management and Harvester cluster. Guest apiservers can be added while it runs
/// ([`World::start_guest`]). Dropping a world stops every process; its folder under
/// `target/gleaner-worlds` (logs, kubeconfigs) stays if the thread is panicking.
pub struct World {
    clusters: RwLock<Vec<Arc<Started>>>,
    /// How many guests [`World::start_guest`] named so far.
    guests_started: AtomicU32,
    extra_crds: Vec<(Role, CustomResourceDefinition)>,
    etcd: Etcd,
    pki: Pki,
    capi: CapiVersion,
    controllers: Controllers,
    crd_source: CrdSource,
    binaries: Binaries,
    layout: Layout,
    start_time: Duration,
    // Declared last so that it is dropped last: the processes above are killed first.
    supervisor: Supervisor,
}

impl World {
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The default world plus one guest apiserver (`guest-1`), shared by every test of one test
    /// binary (tests stay apart by namespace and unique names). Started by the first test that asks; never dropped, so its processes
    /// end with the test binary. Tests that stop an apiserver must build their own world.
    pub async fn shared() -> &'static World {
        static SHARED: OnceCell<World> = OnceCell::const_new();
        match SHARED
            .get_or_try_init(|| World::builder().guests(1).start())
            .await
        {
            Ok(world) => world,
            Err(error) => panic!("the shared test world did not start: {error}"),
        }
    }

    /// Starts one more guest-cluster apiserver (the guest CRDs, the world's PKI and etcd) and
    /// returns its cluster name (`guest-d<n>`), which every other method then takes like a
    /// builder-made cluster's. Its processes stop when the world is dropped.
    pub async fn start_guest(&self) -> Result<String> {
        let name = self.fresh_guest_name();
        let files = self.crd_source.files(Role::Guest, self.capi)?;
        let plane = ControlPlane::start(
            &name,
            Role::Guest,
            &self.etcd.url,
            &self.pki,
            &self.binaries,
            self.controllers,
            &self.layout,
            &self.supervisor,
        )
        .await?;
        let crds = finish_starting(
            &plane,
            &files,
            &self.extra_crds,
            self.capi,
            &self.supervisor,
        )
        .await?;
        self.clusters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::new(Started { plane, crds }));
        tracing::info!(cluster = %name, "guest apiserver started");
        Ok(name)
    }

    /// Stops a guest apiserver started by [`World::start_guest`] and its controllers for good,
    /// and forgets it: long runs that start guests scenario after scenario give their memory
    /// back. Its data stays in etcd, under its own prefix.
    pub fn stop_guest(&self, cluster: &str) -> Result<()> {
        let mut clusters = self
            .clusters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = clusters
            .iter()
            .position(|started| started.plane.name == cluster && started.plane.role == Role::Guest)
            .ok_or_else(|| Error::UnknownCluster(cluster.to_owned()))?;
        clusters.remove(index).plane.stop();
        tracing::info!(%cluster, "guest apiserver stopped for good");
        Ok(())
    }

    /// A client acting as the cluster's admin (`system:masters`).
    pub async fn client(&self, cluster: &str) -> Result<Client> {
        let started = self.started(cluster)?;
        kubeconfig::client(&started.plane.name, &started.plane.kubeconfig).await
    }

    /// The admin kubeconfig of a cluster, for kubectl or for a binary under test.
    pub fn kubeconfig(&self, cluster: &str) -> Result<PathBuf> {
        Ok(self.started(cluster)?.plane.kubeconfig.clone())
    }

    /// Where a cluster's apiserver listens: `https://127.0.0.1:<port>`, serving a certificate
    /// of the world's CA ([`World::ca_pem`]).
    pub fn server(&self, cluster: &str) -> Result<String> {
        Ok(self.started(cluster)?.plane.server())
    }

    /// A client acting as the ServiceAccount `namespace/name` (created if missing), with a token
    /// minted through the TokenRequest API: what RBAC allows that account is all it can do.
    pub async fn service_account_client(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Client> {
        let path = self
            .service_account_kubeconfig(cluster, namespace, name)
            .await?;
        kubeconfig::client(cluster, &path).await
    }

    /// The kubeconfig of [`World::service_account_client`], written under the cluster's folder.
    pub async fn service_account_kubeconfig(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf> {
        let server = self.server(cluster)?;
        let admin = self.client(cluster).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(source) => {
                return Err(Error::Kube {
                    context: format!("cannot create ServiceAccount {namespace}/{name}"),
                    source,
                });
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .context(|| format!("cannot mint a token for {namespace}/{name}"))?
            .status
            .map(|status| status.token)
            .unwrap_or_default();
        let path = self
            .layout
            .cluster_dir(cluster)?
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        write_file(
            &path,
            &kubeconfig::render(cluster, &server, self.pki.ca_pem(), &token),
        )?;
        Ok(path)
    }

    /// Kills a cluster's apiserver (an outage). Its controller-manager keeps running and retries,
    /// as a real one would.
    pub fn stop_apiserver(&self, cluster: &str) -> Result<()> {
        self.started(cluster)?.plane.stop_apiserver();
        Ok(())
    }

    /// Starts a stopped apiserver again on the same port with the same certificates and data.
    pub async fn start_apiserver(&self, cluster: &str) -> Result<()> {
        let started = self.started(cluster)?;
        started.plane.start_apiserver(&self.supervisor).await
    }

    /// Runs the world's kubectl against a cluster as its admin.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> Result<Output> {
        let kubeconfig = self.kubeconfig(cluster)?;
        std::process::Command::new(&self.binaries.kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .context(|| format!("cannot run {}", self.binaries.kubectl.display()))
    }

    /// A serving certificate for 127.0.0.1 from the world's CA, for servers the apiservers call
    /// (admission webhooks).
    pub fn serving_cert(&self, common_name: &str) -> Result<ServingCert> {
        self.pki.serving_cert(common_name)
    }

    /// The world's CA bundle (PEM), which every apiserver and world-issued server certificate
    /// chains to.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// The clusters in the order they were declared (then the guests started since), with
    /// their roles.
    pub fn clusters(&self) -> Vec<(String, Role)> {
        self.read_clusters()
            .iter()
            .map(|started| (started.plane.name.clone(), started.plane.role))
            .collect()
    }

    /// The names of the CRDs installed in a cluster.
    pub fn crds(&self, cluster: &str) -> Result<Vec<String>> {
        Ok(self.started(cluster)?.crds.clone())
    }

    pub fn capi_version(&self) -> CapiVersion {
        self.capi
    }

    pub fn crd_source(&self) -> &CrdSource {
        &self.crd_source
    }

    /// Who plays the snapshot-controller on the Harvester and guest clusters.
    pub fn snapshots(&self) -> Player {
        self.controllers.snapshots
    }

    /// Who plays Cluster API's core controllers on the management clusters.
    pub fn capi_controllers(&self) -> Player {
        self.controllers.capi
    }

    /// The world's folder: certificates, kubeconfigs and every component's log.
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// The log of a cluster's apiserver.
    /// A cluster's audit log, written when the world was built with
    /// [`WorldBuilder::audit_log`].
    pub fn audit_log(&self, cluster: &str) -> Result<PathBuf> {
        self.started(cluster)?;
        Ok(self.layout.audit_log(cluster))
    }

    pub fn apiserver_log(&self, cluster: &str) -> Result<PathBuf> {
        Ok(self.started(cluster)?.plane.apiserver_log().to_path_buf())
    }

    /// How long [`WorldBuilder::start`] took.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// The etcd URL (all clusters share it, each under `/<cluster name>`).
    pub fn etcd_url(&self) -> &str {
        &self.etcd.url
    }

    /// A guest name no cluster of this world has.
    fn fresh_guest_name(&self) -> String {
        loop {
            let index = self.guests_started.fetch_add(1, Ordering::Relaxed) + 1;
            let name = format!("guest-d{index}");
            if self.started(&name).is_err() {
                return name;
            }
        }
    }

    fn started(&self, cluster: &str) -> Result<Arc<Started>> {
        self.read_clusters()
            .iter()
            .find(|started| started.plane.name == cluster)
            .cloned()
            .ok_or_else(|| Error::UnknownCluster(cluster.to_owned()))
    }

    fn read_clusters(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Started>>> {
        self.clusters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let clusters = self
            .clusters
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for started in clusters.iter() {
            started.plane.stop();
        }
        self.etcd.stop();
        self.layout.remove(std::thread::panicking());
    }
}
