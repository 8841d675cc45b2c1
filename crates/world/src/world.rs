use std::{
    path::Path,
    process::Output,
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
    Binaries, CapiVersion, ClusterName, CrdSource, Error, Result, Role,
    cluster::ControlPlane,
    crds,
    error::{IoContext, KubeContext},
    etcd::Etcd,
    kubeconfig,
    layout::{Layout, write_file},
    pki::{Pki, ServingCert},
    process::Supervisor,
};

/// How long a minted ServiceAccount token lives; longer than any test.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

/// Sets up a [`World`]: which clusters, which Cluster API version, where CRDs and binaries come
/// from. The default is one management cluster (`rancher`) and one Harvester (`harvester`).
pub struct WorldBuilder {
    clusters: Vec<(String, Role)>,
    capi: CapiVersion,
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
        let crd_source = self.crd_source.unwrap_or_else(CrdSource::detect);
        let crd_files = self
            .clusters
            .iter()
            .map(|(_, role)| crd_source.files(*role, self.capi))
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
                &layout,
                &supervisor,
            )
        }))
        .await?;
        let extra_crds = &self.extra_crds;
        let installed = try_join_all(clusters.iter().zip(&crd_files).map(|(plane, files)| {
            let supervisor = &supervisor;
            async move {
                let mut crds = crds::load(files)?;
                crds.extend(
                    extra_crds
                        .iter()
                        .filter(|(role, _)| *role == plane.role)
                        .map(|(_, crd)| crd.clone()),
                );
                let client = kubeconfig::client(&plane.name, &plane.kubeconfig).await?;
                crds::install(&client, &crds).await?;
                plane.start_controller_manager(supervisor).await?;
                Ok::<_, Error>(
                    crds.iter()
                        .filter_map(|crd| crd.metadata.name.clone())
                        .collect::<Vec<_>>(),
                )
            }
        }))
        .await?;
        let world = World {
            clusters: clusters.into_iter().zip(installed).collect(),
            etcd,
            pki,
            capi: self.capi,
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

/// Running control planes: one etcd, one apiserver per cluster, a controller-manager per
/// management and Harvester cluster. Dropping a world stops every process; its folder under
/// `target/gleaner-worlds` (logs, kubeconfigs) stays if the thread is panicking.
pub struct World {
    clusters: Vec<(ControlPlane, Vec<String>)>,
    etcd: Etcd,
    pki: Pki,
    capi: CapiVersion,
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

    /// A client acting as the cluster's admin (`system:masters`).
    pub async fn client(&self, cluster: &str) -> Result<Client> {
        let plane = self.plane(cluster)?;
        kubeconfig::client(&plane.name, &plane.kubeconfig).await
    }

    /// The admin kubeconfig of a cluster, for kubectl or for a binary under test.
    pub fn kubeconfig(&self, cluster: &str) -> Result<&Path> {
        Ok(&self.plane(cluster)?.kubeconfig)
    }

    /// A client acting as the ServiceAccount `namespace/name` (created if missing), with a token
    /// minted through the TokenRequest API: what RBAC allows that account is all it can do.
    pub async fn service_account_client(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Client> {
        let plane = self.plane(cluster)?;
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
        let server = format!("https://127.0.0.1:{}", plane.port);
        let path = self
            .layout
            .cluster_dir(cluster)?
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        write_file(
            &path,
            &kubeconfig::render(cluster, &server, self.pki.ca_pem(), &token),
        )?;
        kubeconfig::client(cluster, &path).await
    }

    /// Kills a cluster's apiserver (an outage). Its controller-manager keeps running and retries,
    /// as a real one would.
    pub fn stop_apiserver(&self, cluster: &str) -> Result<()> {
        self.plane(cluster)?.stop_apiserver();
        Ok(())
    }

    /// Starts a stopped apiserver again on the same port with the same certificates and data.
    pub async fn start_apiserver(&self, cluster: &str) -> Result<()> {
        self.plane(cluster)?.start_apiserver(&self.supervisor).await
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

    /// The clusters in the order they were declared, with their roles.
    pub fn clusters(&self) -> impl Iterator<Item = (&str, Role)> {
        self.clusters
            .iter()
            .map(|(plane, _)| (plane.name.as_str(), plane.role))
    }

    /// The names of the CRDs installed in a cluster.
    pub fn crds(&self, cluster: &str) -> Result<&[String]> {
        self.clusters
            .iter()
            .find(|(plane, _)| plane.name == cluster)
            .map(|(_, crds)| crds.as_slice())
            .ok_or_else(|| Error::UnknownCluster(cluster.to_owned()))
    }

    pub fn capi_version(&self) -> CapiVersion {
        self.capi
    }

    pub fn crd_source(&self) -> &CrdSource {
        &self.crd_source
    }

    /// The world's folder: certificates, kubeconfigs and every component's log.
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// The log of a cluster's apiserver.
    pub fn apiserver_log(&self, cluster: &str) -> Result<&Path> {
        Ok(self.plane(cluster)?.apiserver_log())
    }

    /// How long [`WorldBuilder::start`] took.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// The etcd URL (all clusters share it, each under `/<cluster name>`).
    pub fn etcd_url(&self) -> &str {
        &self.etcd.url
    }

    fn plane(&self, cluster: &str) -> Result<&ControlPlane> {
        self.clusters
            .iter()
            .map(|(plane, _)| plane)
            .find(|plane| plane.name == cluster)
            .ok_or_else(|| Error::UnknownCluster(cluster.to_owned()))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (plane, _) in &self.clusters {
            plane.stop();
        }
        self.etcd.stop();
        self.layout.remove(std::thread::panicking());
    }
}
