use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    Binaries, CapiVersion, Result,
    capi_manager::CapiManager,
    controller_manager::ControllerManager,
    kubeconfig,
    layout::{Layout, write_file},
    pki::{Pki, SigningKey, random_token},
    player::Player,
    ports,
    process::{Process, ProcessSpec, Supervisor},
    snapshot_controller::SnapshotController,
};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How many ports an apiserver is started on before a port race counts as a failure.
const PORT_ATTEMPTS: u32 = 3;

/// Well-known cluster names. A world may hold more (`guest-1`, `guest-d1`, `harvester-2`, ...).
pub struct ClusterName;

impl ClusterName {
    /// Rancher's local (management) cluster.
    pub const RANCHER: &'static str = "rancher";
    /// The Harvester cluster the guest clusters' VMs and volumes live on.
    pub const HARVESTER: &'static str = "harvester";
}

/// What a cluster stands for; it decides which CRDs it serves and whether it runs a
/// kube-controller-manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Rancher's local cluster: Cluster API, Rancher's CRDs, gleaner's own.
    Management,
    /// A Harvester cluster: KubeVirt, snapshots, load balancers, network filesystems.
    Harvester,
    /// An RKE2 guest cluster's apiserver (only what the CSI driver's side needs).
    Guest,
}

impl Role {
    pub(crate) fn runs_controller_manager(self) -> bool {
        !matches!(self, Role::Guest)
    }
}

/// Who plays the upstream controllers beside the apiservers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Controllers {
    /// The external-snapshotter's snapshot-controller, on every Harvester and guest cluster.
    pub(crate) snapshots: Player,
    /// Cluster API's core manager, on every management cluster.
    pub(crate) capi: Player,
    /// The Cluster API version the management clusters serve, which picks the manager's release.
    pub(crate) capi_version: CapiVersion,
    /// Whether each apiserver also writes an audit log: one JSON line per request, with its
    /// user agent (costly: only benchmarks that tell clients apart ask for it).
    pub(crate) audit: bool,
}

/// One event per request, when it completes: who, what, and nothing of the bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
";

/// One cluster's control plane: its apiserver, and its controller-manager unless it is a guest.
pub(crate) struct ControlPlane {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) port: u16,
    pub(crate) kubeconfig: PathBuf,
    apiserver: Process,
    controller_manager: Option<ControllerManager>,
    snapshot_controller: Option<SnapshotController>,
    capi_manager: Option<CapiManager>,
}

impl ControlPlane {
    /// Writes the cluster's certificates, keys, token file and kubeconfigs, then starts its
    /// apiserver and waits for `/readyz`. The controller-manager starts later, once the CRDs are
    /// in (so its garbage collector discovers them on its first sync, not 30 seconds later).
    ///
    /// The port is one the kernel just handed out, then closed: another process (an outgoing
    /// connection takes from the same range) can take it before the apiserver binds it. That
    /// race is retried on a new port, a few times.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        name: &str,
        role: Role,
        etcd_url: &str,
        pki: &Pki,
        binaries: &Binaries,
        controllers: Controllers,
        layout: &Layout,
        supervisor: &Supervisor,
    ) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(
                name,
                role,
                etcd_url,
                pki,
                binaries,
                controllers,
                layout,
                supervisor,
            )
            .await
            {
                Err(error) if error.is_port_race() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "the apiserver's port was taken: trying another");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_once(
        name: &str,
        role: Role,
        etcd_url: &str,
        pki: &Pki,
        binaries: &Binaries,
        controllers: Controllers,
        layout: &Layout,
        supervisor: &Supervisor,
    ) -> Result<Self> {
        let dir = layout.cluster_dir(name)?;
        let port = ports::free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let files = ClusterFiles::write(&dir, name, pki)?;
        let admin_token = random_token()?;
        let controller_manager_token = random_token()?;
        // Static tokens: the admin, and the controller-manager as the user the bootstrap RBAC
        // policy already binds (system:kube-controller-manager), as kubeadm's client cert does.
        write_file(
            &files.tokens,
            &format!(
                "{admin_token},admin,admin,system:masters\n\
                 {controller_manager_token},system:kube-controller-manager,kube-controller-manager,\n"
            ),
        )?;
        let kubeconfig = dir.join("kubeconfig");
        write_file(
            &kubeconfig,
            &kubeconfig::render(name, &server, pki.ca_pem(), &admin_token),
        )?;
        let mut args = apiserver_args(name, port, &server, etcd_url, &files);
        if controllers.audit {
            let policy = dir.join("audit-policy.yaml");
            write_file(&policy, AUDIT_POLICY)?;
            args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", layout.audit_log(name).display()),
                "--audit-log-format=json".into(),
            ]);
        }
        let apiserver = Process::new(ProcessSpec {
            component: format!("kube-apiserver-{name}"),
            program: binaries.kube_apiserver.clone(),
            args,
            log: layout.log(&format!("kube-apiserver-{name}")),
        });
        let controller_manager = if role.runs_controller_manager() {
            let controller_manager_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
            write_file(
                &controller_manager_kubeconfig,
                &kubeconfig::render(name, &server, pki.ca_pem(), &controller_manager_token),
            )?;
            Some(ControllerManager::new(
                name,
                &binaries.kube_controller_manager,
                &controller_manager_kubeconfig,
                &files.ca,
                &layout.log(&format!("kube-controller-manager-{name}")),
            )?)
        } else {
            None
        };
        let snapshot_controller = if matches!(role, Role::Harvester | Role::Guest)
            && controllers.snapshots == Player::Real
        {
            Some(SnapshotController::new(
                name,
                &binaries.snapshot_controller,
                &kubeconfig,
                &layout.log(&format!("snapshot-controller-{name}")),
            )?)
        } else {
            None
        };
        let capi_manager = if role == Role::Management && controllers.capi == Player::Real {
            Some(CapiManager::new(
                name,
                binaries.cluster_api_for(controllers.capi_version),
                &kubeconfig,
                pki,
                &dir,
                &layout.log(&format!("capi-manager-{name}")),
            )?)
        } else {
            None
        };
        let plane = Self {
            name: name.to_owned(),
            role,
            port,
            kubeconfig,
            apiserver,
            controller_manager,
            snapshot_controller,
            capi_manager,
        };
        plane.start_apiserver(supervisor).await?;
        Ok(plane)
    }

    pub(crate) async fn start_apiserver(&self, supervisor: &Supervisor) -> Result<()> {
        ports::ensure_free(self.apiserver.component(), self.port)?;
        self.apiserver.start(supervisor)?;
        let client = kubeconfig::client(&self.name, &self.kubeconfig).await?;
        self.apiserver
            .wait_ready(READY_TIMEOUT, || {
                let client = client.clone();
                async move { probe(&client, "/readyz").await }
            })
            .await
    }

    pub(crate) fn stop_apiserver(&self) {
        self.apiserver.stop();
    }

    pub(crate) fn stop(&self) {
        if let Some(controller_manager) = &self.controller_manager {
            controller_manager.process.stop();
        }
        if let Some(snapshot_controller) = &self.snapshot_controller {
            snapshot_controller.process.stop();
        }
        if let Some(capi_manager) = &self.capi_manager {
            capi_manager.process.stop();
        }
        self.apiserver.stop();
    }

    /// Starts the controllers that run against this cluster, once its CRDs are in.
    pub(crate) async fn start_controllers(&self, supervisor: &Supervisor) -> Result<()> {
        self.start_controller_manager(supervisor).await?;
        self.start_snapshot_controller(supervisor).await?;
        self.start_capi_manager(supervisor).await
    }

    /// Ready once `/readyz` answers (its webhook server is up); then its webhooks are
    /// registered, so nothing is refused for want of a server.
    async fn start_capi_manager(&self, supervisor: &Supervisor) -> Result<()> {
        let Some(manager) = &self.capi_manager else {
            return Ok(());
        };
        let process = &manager.process;
        ports::ensure_free(process.component(), manager.health_port)?;
        process.start(supervisor)?;
        let url = format!("http://127.0.0.1:{}", manager.health_port);
        wait_healthy(process, &url, "/readyz", false).await?;
        let client = kubeconfig::client(&self.name, &self.kubeconfig).await?;
        manager.register_webhooks(&client).await
    }

    /// Ready once its diagnostics server listens: it starts after the informers are built, and
    /// the snapshot CRDs it waits for are installed before it starts.
    async fn start_snapshot_controller(&self, supervisor: &Supervisor) -> Result<()> {
        let Some(SnapshotController { process, port }) = &self.snapshot_controller else {
            return Ok(());
        };
        ports::ensure_free(process.component(), *port)?;
        process.start(supervisor)?;
        let port = *port;
        process
            .wait_ready(READY_TIMEOUT, || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await
    }

    async fn start_controller_manager(&self, supervisor: &Supervisor) -> Result<()> {
        let Some(ControllerManager { process, port }) = &self.controller_manager else {
            return Ok(());
        };
        ports::ensure_free(process.component(), *port)?;
        process.start(supervisor)?;
        // The controller-manager serves /healthz with a certificate it made itself.
        wait_healthy(
            process,
            &format!("https://127.0.0.1:{port}"),
            "/healthz",
            true,
        )
        .await
    }

    pub(crate) fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub(crate) fn apiserver_log(&self) -> &Path {
        self.apiserver.log()
    }
}

/// Waits until `process` answers `ok` on `path` of `url`.
async fn wait_healthy(
    process: &Process,
    url: &str,
    path: &'static str,
    accept_invalid_certs: bool,
) -> Result<()> {
    let mut config = kube::Config::new(url.parse().expect("a valid URI"));
    config.accept_invalid_certs = accept_invalid_certs;
    let client = kube::Client::try_from(config).map_err(|source| crate::Error::Kube {
        context: format!("cannot build a health client for {}", process.component()),
        source,
    })?;
    process
        .wait_ready(READY_TIMEOUT, || {
            let client = client.clone();
            async move { probe(&client, path).await }
        })
        .await
}

async fn probe(client: &kube::Client, path: &str) -> bool {
    match http::Request::get(path).body(Vec::new()) {
        Ok(request) => client
            .request_text(request)
            .await
            .is_ok_and(|body| body.trim() == "ok"),
        Err(_) => false,
    }
}

/// The files one apiserver needs, written once so a restart reuses them.
pub(crate) struct ClusterFiles {
    pub(crate) ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_public: PathBuf,
    service_account_private: PathBuf,
    tokens: PathBuf,
}

impl ClusterFiles {
    fn write(dir: &Path, cluster: &str, pki: &Pki) -> Result<Self> {
        let serving = pki.serving_cert(&format!("kube-apiserver-{cluster}"))?;
        let signing = SigningKey::generate()?;
        let files = Self {
            ca: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_public: dir.join("service-account.pub"),
            service_account_private: dir.join("service-account.key"),
            tokens: dir.join("tokens.csv"),
        };
        write_file(&files.ca, pki.ca_pem())?;
        write_file(&files.serving_cert, &serving.cert_pem)?;
        write_file(&files.serving_key, &serving.key_pem)?;
        write_file(&files.service_account_public, &signing.public_pem)?;
        write_file(&files.service_account_private, &signing.private_pem)?;
        Ok(files)
    }
}

fn apiserver_args(
    cluster: &str,
    port: u16,
    server: &str,
    etcd_url: &str,
    files: &ClusterFiles,
) -> Vec<String> {
    vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-prefix=/{cluster}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", files.serving_cert.display()),
        format!("--tls-private-key-file={}", files.serving_key.display()),
        format!("--client-ca-file={}", files.ca.display()),
        format!("--token-auth-file={}", files.tokens.display()),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={server}"),
        format!(
            "--service-account-key-file={}",
            files.service_account_public.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            files.service_account_private.display()
        ),
        "--service-cluster-ip-range=10.96.0.0/24".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}
