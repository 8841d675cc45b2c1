//! A stand-in kubelet, so that the Pods of a world's Deployments and Jobs really run.
//!
//! A world has no scheduler and no kubelet: its controller-managers turn Deployments and Jobs
//! into Pods that nothing runs. A [`Kubelet`] watches the Pods of one namespace of one cluster,
//! binds each unbound one to the Node [`NODE_NAME`] (which it creates, `Ready`), runs the Pod's
//! container as a local process of an executable the test names for its image, and reports what
//! a kubelet reports: phase, IPs, container states, exit codes, restarts and readiness. When a
//! Pod is deleted it stops the process (SIGTERM, then SIGKILL after the grace period) and
//! removes the Pod for good, as a kubelet does.
//!
//! The process is the image's executable (the test maps images to executables) with the
//! container's `command` then `args` as its arguments, in a folder of its own, its output
//! appended to `<world>/logs/pod-<namespace>-<pod>.log`. Its environment is the container's
//! `env` (literal values and the simple `fieldRef`s), `PATH`, and the stand-in's own variables.
//! It reaches its apiserver through a kubeconfig with a token of its ServiceAccount bound to the
//! Pod (`KUBECONFIG`), never through `KUBERNETES_SERVICE_HOST`. Every Pod shares the host's
//! network, so a port named in the spec would collide between two replicas: each Pod gets a free
//! port of its own instead, given to its process as `GLEANER_ADMIN_ADDR=127.0.0.1:<port>`
//! (whatever the Pod says), and its readiness probe (`httpGet` or `tcpSocket`) knocks there.
//!
//! What it is not: there are no images, no volumes (they are ignored), no network namespaces,
//! no liveness or startup probes (ignored) and no resource limits. What it cannot fake (an
//! unknown image, `envFrom`, a Secret's value, init containers, an exec probe) it refuses
//! with a reason on the Pod rather than run it half-right: a Pod that restarts `Always` then
//! waits with the reason (a Failed one would have its ReplicaSet make another at once,
//! forever), any other Pod fails.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    fs::OpenOptions,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    thread,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{Binding, Container, Node, ObjectReference, Pod, Probe, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    sync::{oneshot, watch},
    task::JoinSet,
    time::Instant,
};

use crate::{
    Error, Result, World,
    error::{IoContext, KubeContext},
    kubeconfig,
    layout::write_file,
    ports,
};

/// The Node every Pod a stand-in kubelet runs is bound to.
pub const NODE_NAME: &str = "stand-in";

/// The environment variable that tells a Pod's process (gleaner's admin server) where to listen.
pub const ADMIN_ADDR_ENV: &str = "GLEANER_ADMIN_ADDR";

/// The field manager of every write.
const MANAGER: &str = "stand-in-kubelet";
/// The Pod and host IP: every Pod shares the host's network.
const HOST_IP: &str = "127.0.0.1";
/// Every API call is given up after this long (the world's clients have no read timeout).
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a Pod is looked at again without news: retries of failed writes, restarts.
const RESYNC: Duration = Duration::from_secs(1);
/// A readiness probe's period when the probe names none (a kubelet's is 10s).
const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(1);
/// A deleted Pod's process gets at most this long between SIGTERM and SIGKILL.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// How long a Pod's ServiceAccount token lives; longer than any test.
const TOKEN_SECONDS: i64 = 3600;
/// The first restart's back-off; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The exit code reported for a container that could not be run (as a kubelet's `StartError`).
const CANNOT_RUN_EXIT_CODE: i32 = 128;
/// What a Pod's process inherits from the test's environment: nothing else, so that neither the
/// test's `KUBECONFIG` nor its `GLEANER_*` settings leak in. `LLVM_PROFILE_FILE` keeps coverage.
const INHERITED_ENV: &[&str] = &["PATH", "LLVM_PROFILE_FILE"];

/// Runs the Pods of one namespace of one cluster as local processes; see the module's doc.
/// Dropping it kills every process it started and stops watching; the Pod objects stay.
pub struct Kubelet {
    namespace: String,
    log_dir: PathBuf,
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
    spawner: Spawner,
}

impl Kubelet {
    /// Creates the Node [`NODE_NAME`] in `cluster` (once; it may exist) and starts watching the
    /// Pods of `namespace`. `images` maps an image reference, or its repository without the tag
    /// (`ghcr.io/gleaner-dev/gleaner`), to the executable that stands for it; a Pod whose image
    /// is not there is refused with the reason `UnknownImage`.
    pub async fn start(
        world: &World,
        cluster: &str,
        namespace: &str,
        images: HashMap<String, PathBuf>,
    ) -> Result<Kubelet> {
        std::process::Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(Error::MissingSetpriv)?;
        let client = world.client(cluster).await?;
        ensure_node(&client).await?;
        let log_dir = world.dir().join("logs");
        let pods_dir = world
            .dir()
            .join("clusters")
            .join(cluster)
            .join("pods")
            .join(namespace);
        for dir in [&log_dir, &pods_dir] {
            std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
        }
        let spawner = Spawner::start()?;
        let registry = Arc::new(Registry::default());
        let context = Arc::new(Context {
            client,
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            server: world.server(cluster)?,
            ca_pem: world.ca_pem().to_owned(),
            images,
            log_dir: log_dir.clone(),
            pods_dir,
            spawner: spawner.handle(),
            registry: registry.clone(),
        });
        let task = tokio::spawn(Dispatcher::new(context).run());
        tracing::info!(cluster, namespace, "stand-in kubelet started");
        Ok(Kubelet {
            namespace: namespace.to_owned(),
            log_dir,
            registry,
            task,
            spawner,
        })
    }

    /// The names of the Pods whose process is alive, sorted.
    pub fn running(&self) -> Vec<String> {
        self.registry.running()
    }

    /// Where a Pod's process listens ([`ADMIN_ADDR_ENV`]) and is probed, once it was given a
    /// port.
    pub fn address(&self, pod: &str) -> Option<SocketAddr> {
        self.registry
            .port(pod)
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// The file a Pod's stdout and stderr go to (every run of it, appended).
    pub fn log(&self, pod: &str) -> PathBuf {
        log_path(&self.log_dir, &self.namespace, pod)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        kill_groups(&self.registry.pids());
        // The spawner thread ends, and the kernel kills whatever it started that still runs.
        self.spawner.stop();
    }
}

fn log_path(log_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    log_dir.join(format!("pod-{namespace}-{pod}.log"))
}

/// What every Pod worker shares.
struct Context {
    client: Client,
    cluster: String,
    namespace: String,
    server: String,
    ca_pem: String,
    images: HashMap<String, PathBuf>,
    log_dir: PathBuf,
    pods_dir: PathBuf,
    spawner: SpawnHandle,
    registry: Arc<Registry>,
}

impl Context {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// What the [`Kubelet`] handle tells tests: each Pod's port and, while it runs, its process id.
#[derive(Default)]
struct Registry(Mutex<BTreeMap<String, Entry>>);

/// One Pod in the [`Registry`], by UID.
struct Entry {
    name: String,
    port: u16,
    pid: Option<u32>,
}

impl Registry {
    fn add(&self, uid: &str, name: &str, port: u16) {
        self.lock().insert(
            uid.to_owned(),
            Entry {
                name: name.to_owned(),
                port,
                pid: None,
            },
        );
    }

    fn set_pid(&self, uid: &str, pid: Option<u32>) {
        if let Some(entry) = self.lock().get_mut(uid) {
            entry.pid = pid;
        }
    }

    fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .values()
            .filter(|entry| entry.pid.is_some())
            .map(|entry| entry.name.clone())
            .collect();
        names.sort();
        names
    }

    fn port(&self, pod: &str) -> Option<u16> {
        self.lock()
            .values()
            .find(|entry| entry.name == pod)
            .map(|entry| entry.port)
    }

    fn pids(&self) -> Vec<u32> {
        self.lock().values().filter_map(|entry| entry.pid).collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Bounds an API call by [`API_TIMEOUT`].
async fn bounded<T>(
    call: impl Future<Output = kube::Result<T>>,
    context: impl FnOnce() -> String,
) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result.context(context),
        Err(_) => Err(Error::Timeout {
            context: context(),
            seconds: API_TIMEOUT.as_secs(),
        }),
    }
}

/// The HTTP status code of an API error, if the call reached the apiserver.
fn api_code(error: &Error) -> Option<u16> {
    match error {
        Error::Kube {
            source: kube::Error::Api(status),
            ..
        } => Some(status.code),
        _ => None,
    }
}

const NOT_FOUND: u16 = 404;
const CONFLICT: u16 = 409;

// ------------------------------------------------------------------------------------------
// The Node
// ------------------------------------------------------------------------------------------

/// Creates the Node [`NODE_NAME`] unless it exists, and marks it `Ready`. Nothing watches its
/// heartbeat: the world's controller-managers run no node lifecycle controller.
async fn ensure_node(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(NODE_NAME.to_owned()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", NODE_NAME),
                    ("kubernetes.io/os", "linux"),
                ]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match bounded(nodes.create(&post_params(), &node), || {
        format!("cannot create the Node {NODE_NAME}")
    })
    .await
    {
        Err(error) if api_code(&error) != Some(CONFLICT) => return Err(error),
        _ => {}
    }
    let now = Time(Timestamp::now());
    let status = json!({"status": {
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "gleaner's stand-in kubelet runs this node's Pods as local processes",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }],
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "nodeInfo": {
            "kubeletVersion": crate::KUBERNETES_VERSION,
            "operatingSystem": "linux",
            "architecture": go_arch(),
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "", "containerRuntimeVersion": "stand-in", "kubeProxyVersion": "",
        },
    }});
    bounded(
        nodes.patch_status(NODE_NAME, &patch_params(), &Patch::Merge(status)),
        || format!("cannot mark the Node {NODE_NAME} Ready"),
    )
    .await
    .map(drop)
}

/// This machine's architecture as Kubernetes names it (Go's `GOARCH`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

// ------------------------------------------------------------------------------------------
// The watch: one worker per Pod
// ------------------------------------------------------------------------------------------

/// Watches the namespace's Pods and hands each one's latest state to its own worker, by UID.
struct Dispatcher {
    context: Arc<Context>,
    workers: HashMap<String, watch::Sender<Arc<Pod>>>,
    tasks: JoinSet<()>,
    /// The UIDs seen since the watch last (re)started listing.
    listed: HashSet<String>,
}

impl Dispatcher {
    fn new(context: Arc<Context>) -> Self {
        Self {
            context,
            workers: HashMap::new(),
            tasks: JoinSet::new(),
            listed: HashSet::new(),
        }
    }

    async fn run(mut self) {
        let events = watcher(self.context.pods(), watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod)) => self.dispatch(pod),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.listed.insert(uid.clone());
                    }
                    self.dispatch(pod);
                }
                // Dropping the sender tells the worker its Pod is gone.
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.workers.remove(uid);
                    }
                }
                Ok(watcher::Event::Init) => self.listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    let listed = &self.listed;
                    self.workers.retain(|uid, _| listed.contains(uid));
                }
                Err(error) => tracing::warn!(
                    namespace = %self.context.namespace,
                    %error,
                    "the stand-in kubelet's Pod watch failed; it retries"
                ),
            }
            while self.tasks.try_join_next().is_some() {}
        }
    }

    /// A worker lives as long as its Pod: it is started on the Pod's first event and told of
    /// every later one, even after it is done (a late event must not start a second one).
    fn dispatch(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        if let Some(worker) = self.workers.get(&uid) {
            let _ = worker.send(pod);
            return;
        }
        let (sender, updates) = watch::channel(pod);
        self.tasks.spawn(run_pod(self.context.clone(), updates));
        self.workers.insert(uid, sender);
    }
}

/// One Pod's life: syncs on each update, on its process's exit and every [`RESYNC`] at least,
/// until the Pod is deleted for good.
async fn run_pod(context: Arc<Context>, mut updates: watch::Receiver<Arc<Pod>>) {
    let mut pod = updates.borrow_and_update().clone();
    let Some(mut worker) = PodWorker::new(context, &pod) else {
        return;
    };
    loop {
        if worker.sync(&pod).await == Flow::Done {
            return;
        }
        let wake = worker.next_wake();
        tokio::select! {
            changed = updates.changed() => match changed {
                Ok(()) => pod = updates.borrow_and_update().clone(),
                Err(_) => {
                    worker.abandon().await;
                    return;
                }
            },
            status = worker.exited() => worker.record_exit(status, false),
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

// ------------------------------------------------------------------------------------------
// One Pod
// ------------------------------------------------------------------------------------------

/// Where a Pod's container is in its life.
enum Run {
    /// Not started yet, or its start failed for a reason worth retrying.
    Pending,
    /// The stand-in cannot run this spec; never retried.
    Refused(Refusal),
    Running(Box<Process>),
    /// Exited; started again at the instant (restartPolicy `Always`, or `OnFailure` after a
    /// failure).
    BackingOff(Instant),
    /// Exited for good ([`PodWorker::last`] says how).
    Terminated,
    /// Already terminal when this kubelet first saw it: never run, never reported.
    Finished,
}

/// A running process of a Pod.
struct Process {
    child: Child,
    pid: u32,
    started: Time,
    readiness: Option<Readiness>,
}

/// How a run of the container ended.
struct Exit {
    code: i32,
    pid: u32,
    started: Time,
    finished: Time,
}

/// Why the stand-in cannot run a Pod, as the Pod's and its container's `reason` and `message`.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn unsupported(message: impl Into<String>) -> Self {
        Self {
            reason: "StandInUnsupported",
            message: message.into(),
        }
    }
}

/// Why a start did not happen.
enum StartFailure {
    Refused(Refusal),
    Retry(Error),
}

impl From<Error> for StartFailure {
    fn from(error: Error) -> Self {
        StartFailure::Retry(error)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    fn of(pod: &Pod) -> Self {
        match pod
            .spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.as_deref())
        {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    fn restarts_after(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

/// A boolean condition and when it last changed.
struct Flag {
    value: bool,
    since: Time,
}

impl Flag {
    fn new(value: bool) -> Self {
        Self {
            value,
            since: Time(Timestamp::now()),
        }
    }

    fn set(&mut self, value: bool) {
        if value != self.value {
            *self = Self::new(value);
        }
    }
}

struct PodWorker {
    context: Arc<Context>,
    uid: String,
    name: String,
    policy: RestartPolicy,
    /// The Pod's own port for its whole life, across restarts (given on the first start).
    port: Option<u16>,
    run: Run,
    /// The executable that stands for the image, once known.
    program: Option<PathBuf>,
    restarts: i32,
    /// The last run's end, and the one before it.
    last: Option<Exit>,
    previous: Option<Exit>,
    start_time: Option<Time>,
    ready: Flag,
    /// The status last written, so that an unchanged one is not written again.
    reported: Option<Value>,
}

impl PodWorker {
    fn new(context: Arc<Context>, pod: &Pod) -> Option<Self> {
        Some(Self {
            uid: pod.metadata.uid.clone()?,
            name: pod.metadata.name.clone()?,
            policy: RestartPolicy::of(pod),
            context,
            port: None,
            run: Run::Pending,
            program: None,
            restarts: 0,
            last: None,
            previous: None,
            start_time: None,
            ready: Flag::new(false),
            reported: None,
        })
    }

    /// Does what the Pod's latest state asks: bind it, start (or restart) its process, probe
    /// it, report its status, or stop it and delete it for good.
    async fn sync(&mut self, pod: &Pod) -> Flow {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.finish(pod).await;
        }
        match pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) {
            None => {
                self.bind().await;
                return Flow::Continue;
            }
            Some(NODE_NAME) => {}
            Some(_) => return Flow::Continue,
        }
        if matches!(self.run, Run::Pending) && self.start_time.is_none() && is_terminal(pod) {
            self.run = Run::Finished;
        }
        self.start_if_due(pod).await;
        self.probe_if_due().await;
        self.report(pod).await;
        Flow::Continue
    }

    /// When the worker wants to look again without news.
    fn next_wake(&self) -> Instant {
        let resync = Instant::now() + RESYNC;
        match &self.run {
            Run::Running(process) => process
                .readiness
                .as_ref()
                .map_or(resync, |readiness| readiness.next.min(resync)),
            Run::BackingOff(restart_at) => (*restart_at).min(resync),
            _ => resync,
        }
    }

    /// The running process's exit; never, when none runs.
    async fn exited(&mut self) -> io::Result<ExitStatus> {
        match &mut self.run {
            Run::Running(process) => process.child.wait().await,
            _ => std::future::pending().await,
        }
    }

    fn record_exit(&mut self, status: io::Result<ExitStatus>, deleting: bool) {
        let Run::Running(process) = std::mem::replace(&mut self.run, Run::Pending) else {
            return;
        };
        self.context.registry.set_pid(&self.uid, None);
        let code = exit_code(&status);
        tracing::info!(pod = %self.name, code, "the pod's process exited");
        let restart = !deleting && self.policy.restarts_after(code);
        self.previous = self.last.replace(Exit {
            code,
            pid: process.pid,
            started: process.started,
            finished: Time(Timestamp::now()),
        });
        self.run = if restart {
            Run::BackingOff(Instant::now() + backoff(self.restarts))
        } else {
            Run::Terminated
        };
    }

    async fn bind(&self) {
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                uid: Some(self.uid.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(NODE_NAME.into()),
                ..ObjectReference::default()
            },
        };
        let pods = self.context.pods();
        let bound = bounded(
            pods.create_subresource::<_, Value>("binding", &self.name, &post_params(), &binding),
            || format!("cannot bind Pod {} to {NODE_NAME}", self.name),
        )
        .await;
        match bound {
            Ok(_) => tracing::debug!(pod = %self.name, "bound"),
            // Bound already (the watch will tell), or gone.
            Err(error) if matches!(api_code(&error), Some(CONFLICT | NOT_FOUND)) => {}
            Err(error) => tracing::warn!(%error, "the stand-in kubelet retries"),
        }
    }

    async fn start_if_due(&mut self, pod: &Pod) {
        let restart = match &self.run {
            Run::Pending => false,
            Run::BackingOff(restart_at) if Instant::now() >= *restart_at => true,
            _ => return,
        };
        match self.launch(pod).await {
            Ok(process) => {
                tracing::info!(pod = %self.name, pid = process.pid, restart, "the pod's process started");
                if restart {
                    self.restarts += 1;
                }
                self.context.registry.set_pid(&self.uid, Some(process.pid));
                self.run = Run::Running(Box::new(process));
            }
            Err(StartFailure::Refused(refusal)) => {
                tracing::warn!(pod = %self.name, reason = refusal.reason, message = %refusal.message, "the stand-in kubelet cannot run this pod");
                self.run = Run::Refused(refusal);
            }
            Err(StartFailure::Retry(error)) => {
                tracing::warn!(pod = %self.name, %error, "the pod did not start; the stand-in kubelet retries");
                return;
            }
        }
        self.start_time
            .get_or_insert_with(|| Time(Timestamp::now()));
    }

    async fn launch(&mut self, pod: &Pod) -> Result<Process, StartFailure> {
        let port = self.port()?;
        let dir = self.context.pods_dir.join(&self.name);
        std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        let kubeconfig = dir.join("kubeconfig");
        let launch =
            plan(pod, &self.context.images, port, &kubeconfig).map_err(StartFailure::Refused)?;
        self.program = Some(launch.program.clone());
        let token = self.mint_token(pod).await?;
        let context = &self.context;
        write_file(
            &kubeconfig,
            &kubeconfig::render(&context.cluster, &context.server, &context.ca_pem, &token),
        )?;
        let log = log_path(&context.log_dir, &context.namespace, &self.name);
        let child = context.spawner.spawn(launch.command(&dir, &log)?).await?;
        Ok(Process {
            pid: child.id().unwrap_or_default(),
            child,
            started: Time(Timestamp::now()),
            readiness: launch.readiness.map(Readiness::new),
        })
    }

    fn port(&mut self) -> Result<u16> {
        if let Some(port) = self.port {
            return Ok(port);
        }
        let port = ports::free_port()?;
        self.context.registry.add(&self.uid, &self.name, port);
        self.port = Some(port);
        Ok(port)
    }

    /// A token of the Pod's ServiceAccount, bound to the Pod: it stops working when the Pod
    /// is deleted.
    async fn mint_token(&self, pod: &Pod) -> Result<String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.as_deref())
            .unwrap_or("default");
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.context.client.clone(), &self.context.namespace);
        let response = bounded(
            accounts.create_token_request(account, &post_params(), &request),
            || format!("cannot mint a token of {account} for Pod {}", self.name),
        )
        .await?;
        Ok(response
            .status
            .map(|status| status.token)
            .unwrap_or_default())
    }

    async fn probe_if_due(&mut self) {
        let Some(port) = self.port else { return };
        let Run::Running(process) = &mut self.run else {
            return;
        };
        let Some(readiness) = &mut process.readiness else {
            return;
        };
        if Instant::now() < readiness.next {
            return;
        }
        let ok = readiness
            .spec
            .check
            .passes(port, readiness.spec.timeout)
            .await;
        readiness.record(ok, Instant::now());
    }

    /// Kills the process of a Pod gone from the API (deleted at once, by someone else).
    async fn abandon(&mut self) {
        if let Run::Running(process) = &mut self.run {
            let status = stop(process, Duration::ZERO).await;
            self.record_exit(status, true);
        }
    }

    /// Stops the process of a deleted Pod, reports its end and deletes the Pod for good.
    async fn finish(&mut self, pod: &Pod) -> Flow {
        if let Run::Running(process) = &mut self.run {
            let status = stop(process, grace_period(pod)).await;
            self.record_exit(status, true);
        }
        if matches!(self.run, Run::BackingOff(_)) {
            self.run = Run::Terminated;
        }
        // The end first, as a kubelet does, so the Job controller counts it.
        self.report(pod).await;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let pods = self.context.pods();
        match bounded(pods.delete(&self.name, &params), || {
            format!("cannot delete Pod {}", self.name)
        })
        .await
        {
            Ok(_) => Flow::Done,
            Err(error) if matches!(api_code(&error), Some(CONFLICT | NOT_FOUND)) => Flow::Done,
            Err(error) => {
                tracing::warn!(%error, "the stand-in kubelet retries");
                Flow::Continue
            }
        }
    }

    /// Writes the Pod's status when it changed since the last write (a failed write is tried
    /// again on the next sync).
    async fn report(&mut self, pod: &Pod) {
        self.ready.set(self.container_ready());
        let Some(status) = self.status(pod) else {
            return;
        };
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        // Strategic merge, as a kubelet writes: conditions merge by type, so the apiserver's
        // PodScheduled and other controllers' conditions stay.
        let patch = Patch::Strategic(json!({ "status": status }));
        let pods = self.context.pods();
        match bounded(
            pods.patch_status(&self.name, &patch_params(), &patch),
            || format!("cannot write the status of Pod {}", self.name),
        )
        .await
        {
            Ok(_) => self.reported = Some(status),
            Err(error) if api_code(&error) == Some(NOT_FOUND) => {}
            Err(error) => tracing::warn!(%error, "the stand-in kubelet retries"),
        }
    }

    fn container_ready(&self) -> bool {
        match &self.run {
            Run::Running(process) => process
                .readiness
                .as_ref()
                .is_none_or(|readiness| readiness.ready),
            _ => false,
        }
    }

    /// The phase, and whether the Pod has ended; `None` while there is nothing to report.
    fn phase(&self) -> Option<(&'static str, bool)> {
        match &self.run {
            Run::Pending | Run::Finished => None,
            Run::Refused(_) if self.policy == RestartPolicy::Always => Some(("Pending", false)),
            Run::Refused(_) => Some(("Failed", true)),
            Run::Running(_) | Run::BackingOff(_) => Some(("Running", false)),
            Run::Terminated => match &self.last {
                Some(exit) if exit.code == 0 => Some(("Succeeded", true)),
                _ => Some(("Failed", true)),
            },
        }
    }

    fn status(&self, pod: &Pod) -> Option<Value> {
        let (phase, ended) = self.phase()?;
        let start_time = self.start_time.as_ref()?;
        let ready = &self.ready;
        let unready_reason = if ended {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let mut status = json!({
            "phase": phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}],
            "startTime": start_time,
            "conditions": [
                condition("PodReadyToStartContainers", true, start_time, None),
                condition("Initialized", true, start_time, None),
                condition("ContainersReady", ready.value, &ready.since, Some(unready_reason)),
                condition("Ready", ready.value, &ready.since, Some(unready_reason)),
            ],
            "containerStatuses": [self.container_status(pod)],
        });
        if let Run::Refused(refusal) = &self.run {
            status["reason"] = refusal.reason.into();
            status["message"] = refusal.message.as_str().into();
        }
        Some(status)
    }

    fn container_status(&self, pod: &Pod) -> Value {
        let container = first_container(pod);
        let (state, pid) = match &self.run {
            Run::Running(process) => (
                container_state(Some(json!({"startedAt": process.started})), None, None),
                Some(process.pid),
            ),
            Run::BackingOff(_) => (
                container_state(
                    None,
                    Some(json!({
                        "reason": "CrashLoopBackOff",
                        "message": "back-off restarting the exited container",
                    })),
                    None,
                ),
                None,
            ),
            Run::Refused(refusal) => (refused_state(refusal, self.policy), None),
            _ => (
                container_state(None, None, self.last.as_ref().map(terminated)),
                self.last.as_ref().map(|exit| exit.pid),
            ),
        };
        let last_state = match &self.run {
            Run::Terminated => self.previous.as_ref(),
            _ => self.last.as_ref(),
        }
        .map(|exit| json!({"terminated": terminated(exit)}));
        json!({
            "name": container.map(|c| c.name.as_str()).unwrap_or_default(),
            "image": container.and_then(|c| c.image.as_deref()).unwrap_or_default(),
            "imageID": self.program.as_ref().map(|program| format!("stand-in://{}", program.display())).unwrap_or_default(),
            "containerID": pid.map(|pid| format!("stand-in://{pid}")),
            "ready": matches!(self.run, Run::Running(_)) && self.ready.value,
            "started": matches!(self.run, Run::Running(_)),
            "restartCount": self.restarts,
            "state": state,
            "lastState": last_state.unwrap_or_else(|| json!({})),
        })
    }
}

impl Drop for PodWorker {
    fn drop(&mut self) {
        // A running child is killed as it is dropped (`kill_on_drop`).
        self.context.registry.remove(&self.uid);
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn first_container(pod: &Pod) -> Option<&Container> {
    pod.spec.as_ref()?.containers.first()
}

/// A container state with exactly one of its three members; the others are written as null so
/// that a strategic merge removes the previous one.
fn container_state(running: Option<Value>, waiting: Option<Value>, ended: Option<Value>) -> Value {
    json!({"running": running, "waiting": waiting, "terminated": ended})
}

fn refused_state(refusal: &Refusal, policy: RestartPolicy) -> Value {
    let detail = json!({"reason": refusal.reason, "message": refusal.message});
    if policy == RestartPolicy::Always {
        // A Pod that restarts forever waits (as on an image pull error): a Failed one would
        // have its ReplicaSet make a new one at once, forever.
        container_state(None, Some(detail), None)
    } else {
        let mut ended = detail;
        ended["exitCode"] = CANNOT_RUN_EXIT_CODE.into();
        container_state(None, None, Some(ended))
    }
}

fn terminated(exit: &Exit) -> Value {
    json!({
        "exitCode": exit.code,
        "reason": if exit.code == 0 { "Completed" } else { "Error" },
        "startedAt": exit.started,
        "finishedAt": exit.finished,
        "containerID": format!("stand-in://{}", exit.pid),
    })
}

fn condition(kind: &str, value: bool, since: &Time, reason_if_false: Option<&str>) -> Value {
    json!({
        "type": kind,
        "status": if value { "True" } else { "False" },
        "lastTransitionTime": since,
        "lastProbeTime": null,
        "reason": if value { None } else { reason_if_false },
    })
}

/// An exit code as a kubelet reports it: 128 + the signal for a process killed by one.
fn exit_code(status: &io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(status) => status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .unwrap_or(CANNOT_RUN_EXIT_CODE),
        Err(_) => CANNOT_RUN_EXIT_CODE,
    }
}

fn backoff(restarts: i32) -> Duration {
    let doublings = u32::try_from(restarts.clamp(0, 8)).unwrap_or(0);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The time between SIGTERM and SIGKILL: what the deletion asked, else the spec's, at most
/// [`MAX_GRACE`].
fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
}

/// SIGTERM, then SIGKILL to its process group after `grace`; returns how it ended.
async fn stop(process: &mut Process, grace: Duration) -> io::Result<ExitStatus> {
    if let Ok(Some(status)) = process.child.try_wait() {
        return Ok(status);
    }
    signal(&["-s", "TERM", "--", &process.pid.to_string()]).await;
    if let Ok(status) = tokio::time::timeout(grace, process.child.wait()).await {
        return status;
    }
    tracing::info!(pid = process.pid, "the grace period is over: SIGKILL");
    signal(&["-s", "KILL", "--", &format!("-{}", process.pid)]).await;
    let _ = process.child.start_kill();
    process.child.wait().await
}

/// Runs `kill` (std has no way to send SIGTERM, and the workspace forbids unsafe code).
async fn signal(args: &[&str]) {
    let mut command = Command::new("kill");
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match tokio::time::timeout(API_TIMEOUT, command.status()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot run kill"),
        Err(_) => tracing::warn!("kill did not return"),
    }
}

/// SIGKILL to the process groups of `pids`, at once (for [`Kubelet`]'s drop).
fn kill_groups(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--"])
        .args(pids.iter().map(|pid| format!("-{pid}")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ------------------------------------------------------------------------------------------
// From a Pod's spec to a process
// ------------------------------------------------------------------------------------------

/// What to run for a Pod, decided from its spec alone.
#[derive(Debug)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    readiness: Option<ProbeSpec>,
}

impl Launch {
    fn command(&self, dir: &Path, log: &Path) -> Result<Command> {
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("cannot open {}", log.display()))?;
        let stderr = stdout
            .try_clone()
            .context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new("setpriv");
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(
                INHERITED_ENV.iter().filter_map(|name| {
                    std::env::var_os(name).map(|value| (name.to_string(), value))
                }),
            )
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, so that SIGKILL reaches what it started too.
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// The Pod's first container as a process: the image's executable, `command` then `args` as
/// its arguments, the Pod's environment and the stand-in's own variables.
fn plan(
    pod: &Pod,
    images: &HashMap<String, PathBuf>,
    port: u16,
    kubeconfig: &Path,
) -> Result<Launch, Refusal> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Refusal::unsupported("the Pod has no spec"))?;
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Refusal::unsupported(
            "the stand-in kubelet runs no init containers",
        ));
    }
    let container = spec
        .containers
        .first()
        .ok_or_else(|| Refusal::unsupported("the Pod has no container"))?;
    let image = container.image.as_deref().unwrap_or_default();
    let program = executable(images, image).ok_or_else(|| Refusal {
        reason: "UnknownImage",
        message: format!(
            "the stand-in kubelet was given no executable for the image {image:?} (nor its repository {:?})",
            repository(image)
        ),
    })?;
    let args = container
        .command
        .iter()
        .chain(&container.args)
        .flatten()
        .cloned()
        .collect();
    let mut env = environment(pod, container)?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    for (key, value) in [
        ("HOSTNAME", name),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        (ADMIN_ADDR_ENV, format!("{HOST_IP}:{port}")),
    ] {
        env.retain(|(existing, _)| existing != key);
        env.push((key.to_owned(), value));
    }
    Ok(Launch {
        program: program.clone(),
        args,
        env,
        readiness: readiness(container)?,
    })
}

/// The executable for an image: by the exact reference, else by its repository.
fn executable<'a>(images: &'a HashMap<String, PathBuf>, image: &str) -> Option<&'a PathBuf> {
    images.get(image).or_else(|| images.get(repository(image)))
}

/// An image reference without its digest and tag: `registry:5000/team/app:1.0` is
/// `registry:5000/team/app`.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The container's `env`: literal values, and the few `fieldRef`s a stand-in can answer.
fn environment(pod: &Pod, container: &Container) -> Result<Vec<(String, String)>, Refusal> {
    if container
        .env_from
        .as_ref()
        .is_some_and(|from| !from.is_empty())
    {
        return Err(Refusal::unsupported(
            "the stand-in kubelet supports no envFrom",
        ));
    }
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = match &var.value_from {
                None => var.value.clone().unwrap_or_default(),
                Some(source) => source
                    .field_ref
                    .as_ref()
                    .and_then(|field| pod_field(pod, &field.field_path))
                    .ok_or_else(|| {
                        Refusal::unsupported(format!(
                            "env {}: the stand-in kubelet supports valueFrom.fieldRef of \
                             metadata.name, metadata.namespace, metadata.uid, \
                             spec.serviceAccountName, spec.nodeName, status.podIP and \
                             status.hostIP only",
                            var.name
                        ))
                    })?,
            };
            Ok((var.name.clone(), value))
        })
        .collect()
}

fn pod_field(pod: &Pod, path: &str) -> Option<String> {
    let metadata = &pod.metadata;
    match path {
        "metadata.name" => metadata.name.clone(),
        "metadata.namespace" => metadata.namespace.clone(),
        "metadata.uid" => metadata.uid.clone(),
        "spec.serviceAccountName" => Some(
            pod.spec
                .as_ref()
                .and_then(|spec| spec.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "spec.nodeName" => Some(NODE_NAME.into()),
        "status.podIP" | "status.hostIP" => Some(HOST_IP.into()),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// Readiness
// ------------------------------------------------------------------------------------------

/// A readiness probe, always aimed at the Pod's own port on 127.0.0.1 whatever port it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProbeSpec {
    check: Check,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Http {
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp,
}

fn readiness(container: &Container) -> Result<Option<ProbeSpec>, Refusal> {
    let Some(probe) = &container.readiness_probe else {
        return Ok(None);
    };
    Ok(Some(ProbeSpec {
        check: check(probe)?,
        initial_delay: seconds(probe.initial_delay_seconds.unwrap_or(0)),
        period: probe
            .period_seconds
            .map_or(DEFAULT_PROBE_PERIOD, seconds)
            .max(Duration::from_secs(1)),
        timeout: seconds(probe.timeout_seconds.unwrap_or(1)).max(Duration::from_secs(1)),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
    }))
}

fn check(probe: &Probe) -> Result<Check, Refusal> {
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("HTTPS"))
        {
            return Err(Refusal::unsupported(
                "the stand-in kubelet probes over HTTP only",
            ));
        }
        let headers = http
            .http_headers
            .iter()
            .flatten()
            .map(|header| (header.name.clone(), header.value.clone()))
            .collect();
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return Ok(Check::Http { path, headers });
    }
    if probe.tcp_socket.is_some() {
        return Ok(Check::Tcp);
    }
    Err(Refusal::unsupported(
        "the stand-in kubelet supports httpGet and tcpSocket readiness probes only",
    ))
}

fn seconds(value: i32) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

fn threshold(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|value| u32::try_from(value).ok())
        .unwrap_or(default)
        .max(1)
}

/// A readiness probe's state, as a kubelet keeps it: unready until `successThreshold` passes in
/// a row, unready again after `failureThreshold` failures in a row.
#[derive(Debug)]
struct Readiness {
    spec: ProbeSpec,
    ready: bool,
    successes: u32,
    failures: u32,
    next: Instant,
}

impl Readiness {
    fn new(spec: ProbeSpec) -> Self {
        Self {
            next: Instant::now() + spec.initial_delay,
            spec,
            ready: false,
            successes: 0,
            failures: 0,
        }
    }

    fn record(&mut self, passed: bool, now: Instant) {
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.spec.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.spec.failure_threshold {
                self.ready = false;
            }
        }
        self.next = now + self.spec.period;
    }
}

impl Check {
    async fn passes(&self, port: u16, timeout: Duration) -> bool {
        let attempt = async {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
            match self {
                Check::Tcp => Ok(true),
                Check::Http { path, headers } => http_get(stream, port, path, headers).await,
            }
        };
        matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
    }
}

/// Whether a GET answers 200 to 399, which is success for a kubelet's HTTP probe.
async fn http_get(
    mut stream: TcpStream,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> io::Result<bool> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {HOST_IP}:{port}\r\nUser-Agent: kube-probe/stand-in\r\n\
         Accept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .take(1024)
        .read_line(&mut status_line)
        .await?;
    Ok(status_code(&status_line).is_some_and(|code| (200..400).contains(&code)))
}

/// The code of an HTTP status line (`HTTP/1.1 200 OK`).
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

// ------------------------------------------------------------------------------------------
// Starting processes
// ------------------------------------------------------------------------------------------

/// Starts every Pod process from one dedicated thread, through `setpriv --pdeathsig KILL`: the
/// kernel kills them when that thread ends, which is when the [`Kubelet`] is dropped (or the
/// test process ends), whatever happens to the tokio tasks that wait on them.
struct Spawner {
    requests: Arc<Mutex<Option<mpsc::Sender<SpawnRequest>>>>,
    thread: Option<thread::JoinHandle<()>>,
}

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// What Pod workers start processes through.
#[derive(Clone)]
struct SpawnHandle(Arc<Mutex<Option<mpsc::Sender<SpawnRequest>>>>);

impl Spawner {
    /// Needs a tokio runtime: the processes are tokio's, so that workers can await their exit.
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        let thread = thread::Builder::new()
            .name("stand-in-kubelet".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for mut request in incoming {
                    // If the worker is gone, the child is dropped, and so killed.
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .context(|| "cannot start the stand-in kubelet's thread".into())?;
        Ok(Self {
            requests: Arc::new(Mutex::new(Some(requests))),
            thread: Some(thread),
        })
    }

    fn handle(&self) -> SpawnHandle {
        SpawnHandle(self.requests.clone())
    }

    fn stop(&mut self) {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SpawnHandle {
    async fn spawn(&self, command: Command) -> Result<Child> {
        let program = format!("{:?}", command.as_std());
        let (reply, response) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .ok_or(Error::KubeletStopped)?
            .send(SpawnRequest { command, reply })
            .map_err(|_| Error::KubeletStopped)?;
        response
            .await
            .map_err(|_| Error::KubeletStopped)?
            .context(|| format!("cannot start {program}"))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec, SecretKeySelector,
    };

    use super::*;

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("gleaner-7d9c-abcde".into()),
                namespace: Some("gleaner-system".into()),
                uid: Some("6d1f".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                service_account_name: Some("gleaner".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn container(image: &str) -> Container {
        Container {
            name: "gleaner".into(),
            image: Some(image.into()),
            ..Container::default()
        }
    }

    fn images() -> HashMap<String, PathBuf> {
        [
            ("ghcr.io/gleaner-dev/gleaner", "/bin/gleaner"),
            ("registry:5000/tools:2", "/bin/tools-2"),
        ]
        .into_iter()
        .map(|(image, path)| (image.to_owned(), PathBuf::from(path)))
        .collect()
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    #[test]
    fn an_image_is_found_by_its_reference_or_its_repository() {
        let images = images();
        let found = |image| executable(&images, image).map(|path| path.display().to_string());
        assert_eq!(
            found("ghcr.io/gleaner-dev/gleaner:0.1.0").as_deref(),
            Some("/bin/gleaner")
        );
        assert_eq!(
            found("ghcr.io/gleaner-dev/gleaner@sha256:0123").as_deref(),
            Some("/bin/gleaner")
        );
        assert_eq!(
            found("registry:5000/tools:2").as_deref(),
            Some("/bin/tools-2")
        );
        assert_eq!(found("registry:5000/tools:3"), None);
        assert_eq!(repository("registry:5000/tools"), "registry:5000/tools");
    }

    #[test]
    fn a_pod_runs_its_image_with_command_args_and_the_stand_ins_env() {
        let mut spec = container("ghcr.io/gleaner-dev/gleaner:0.1.0");
        spec.command = Some(vec!["unhook".into()]);
        spec.args = Some(vec!["--stop-deployment".into(), "gleaner".into()]);
        spec.env = Some(vec![
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                ..EnvVar::default()
            },
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            field("ACCOUNT", "spec.serviceAccountName"),
            field("NODE", "spec.nodeName"),
            field("IP", "status.podIP"),
            EnvVar {
                name: ADMIN_ADDR_ENV.into(),
                value: Some("0.0.0.0:9090".into()),
                ..EnvVar::default()
            },
        ]);
        let launch = plan(&pod(spec), &images(), 4242, Path::new("/w/kubeconfig")).unwrap();
        assert_eq!(launch.program, PathBuf::from("/bin/gleaner"));
        assert_eq!(launch.args, ["unhook", "--stop-deployment", "gleaner"]);
        let env: BTreeMap<&str, &str> = launch
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            env,
            BTreeMap::from([
                ("ACCOUNT", "gleaner"),
                (ADMIN_ADDR_ENV, "127.0.0.1:4242"),
                ("HOSTNAME", "gleaner-7d9c-abcde"),
                ("IP", "127.0.0.1"),
                ("KUBECONFIG", "/w/kubeconfig"),
                ("NODE", NODE_NAME),
                ("POD_NAME", "gleaner-7d9c-abcde"),
                ("POD_NAMESPACE", "gleaner-system"),
                ("RUST_LOG", "info"),
            ])
        );
        assert_eq!(launch.readiness, None);
    }

    #[test]
    fn what_the_stand_in_cannot_do_refuses_the_pod_with_a_reason() {
        let refusal = |spec: Container| {
            plan(&pod(spec), &images(), 1, Path::new("k"))
                .map(drop)
                .unwrap_err()
        };
        assert_eq!(
            refusal(container("docker.io/nginx:1")).reason,
            "UnknownImage"
        );
        let mut secret = container("ghcr.io/gleaner-dev/gleaner");
        secret.env = Some(vec![EnvVar {
            name: "TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "token".into(),
                    key: "token".into(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]);
        let refused = refusal(secret);
        assert_eq!(refused.reason, "StandInUnsupported");
        assert!(refused.message.contains("env TOKEN"), "{}", refused.message);
        let mut labels = container("ghcr.io/gleaner-dev/gleaner");
        labels.env = Some(vec![field("LABELS", "metadata.labels")]);
        assert_eq!(refusal(labels).reason, "StandInUnsupported");
        let mut https = container("ghcr.io/gleaner-dev/gleaner");
        https.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                scheme: Some("HTTPS".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        });
        assert_eq!(refusal(https).reason, "StandInUnsupported");
    }

    #[test]
    fn readiness_follows_the_probes_thresholds() {
        let mut probed = container("ghcr.io/gleaner-dev/gleaner");
        probed.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        });
        let spec = readiness(&probed).unwrap().unwrap();
        assert_eq!(spec.period, Duration::from_secs(5));
        assert_eq!(
            spec.check,
            Check::Http {
                path: "/readyz".into(),
                headers: Vec::new()
            }
        );
        let mut readiness = Readiness::new(spec);
        let now = Instant::now();
        let mut record = |passed| {
            readiness.record(passed, now);
            readiness.ready
        };
        assert!(!record(false));
        assert!(record(true));
        assert!(record(false), "one failure of two allowed");
        assert!(!record(false));
        assert!(record(true));
    }

    #[test]
    fn restarts_back_off_and_exit_codes_read_as_a_kubelets() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert!(RestartPolicy::OnFailure.restarts_after(3));
        assert!(!RestartPolicy::OnFailure.restarts_after(0));
        assert!(!RestartPolicy::Never.restarts_after(3));
        assert_eq!(exit_code(&Ok(ExitStatus::from_raw(3 << 8))), 3);
        assert_eq!(exit_code(&Ok(ExitStatus::from_raw(9))), 137);
        assert_eq!(status_code("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code("garbage"), None);
    }
}
