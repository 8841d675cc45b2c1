use std::{
    fs::OpenOptions,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result, error::IoContext};

/// Starts every child process of a world from one dedicated thread, through
/// `setpriv --pdeathsig KILL`. The kernel delivers the parent-death signal when the *thread* that
/// forked a child ends, so the thread must live exactly as long as the world: it ends when the
/// world (and with it the last sender) is dropped, or with the process, whichever comes first.
pub(crate) struct Supervisor {
    requests: Mutex<mpsc::Sender<SpawnRequest>>,
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::SyncSender<std::io::Result<Child>>,
}

impl Supervisor {
    pub(crate) fn start() -> Result<Self> {
        Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(Error::MissingSetpriv)?;
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("world-supervisor".into())
            .spawn(move || {
                for mut request in incoming {
                    // The caller may have given up waiting; the child then dies with this thread.
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .context(|| "cannot start the world's supervisor thread".into())?;
        Ok(Self {
            requests: Mutex::new(requests),
        })
    }

    fn spawn(&self, spec: &ProcessSpec) -> Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .context(|| format!("cannot open {}", spec.log.display()))?;
        let stderr = log
            .try_clone()
            .context(|| format!("cannot open {}", spec.log.display()))?;
        let mut command = Command::new("setpriv");
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let (reply, response) = mpsc::sync_channel(1);
        self.requests
            .lock()
            .expect("supervisor lock poisoned")
            .send(SpawnRequest { command, reply })
            .map_err(|_| Error::SupervisorGone)?;
        response
            .recv()
            .map_err(|_| Error::SupervisorGone)?
            .context(|| format!("cannot start {}", spec.program.display()))
    }
}

/// What to run for one component and where its output goes.
#[derive(Clone, Debug)]
pub(crate) struct ProcessSpec {
    pub(crate) component: String,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) log: PathBuf,
}

/// One component's process. It can be stopped and started again with the same arguments (the
/// outage tests restart an apiserver on the same port with the same certificates).
pub(crate) struct Process {
    spec: ProcessSpec,
    child: Mutex<Option<Child>>,
}

impl Process {
    pub(crate) fn new(spec: ProcessSpec) -> Self {
        Self {
            spec,
            child: Mutex::new(None),
        }
    }

    pub(crate) fn component(&self) -> &str {
        &self.spec.component
    }

    pub(crate) fn log(&self) -> &Path {
        &self.spec.log
    }

    pub(crate) fn start(&self, supervisor: &Supervisor) -> Result<()> {
        let child = supervisor.spawn(&self.spec)?;
        tracing::debug!(component = %self.spec.component, pid = child.id(), "started");
        if let Some(mut previous) = self.lock().replace(child) {
            let _ = previous.kill();
            let _ = previous.wait();
        }
        Ok(())
    }

    /// Kills the process (SIGKILL: an outage, not a graceful shutdown) and reaps it.
    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(component = %self.spec.component, "stopped");
        }
    }

    /// Polls `probe` until it answers true, failing early with the log's tail if the process
    /// exits, or with the log's path when `timeout` passes.
    pub(crate) async fn wait_ready<F, Fut>(&self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.fail_if_exited()?;
            if probe().await {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Process::wait_ready`] for a probe that blocks, outside any runtime.
    pub(crate) fn wait_ready_blocking(
        &self,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            self.fail_if_exited()?;
            if probe() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready(timeout));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, timeout: Duration) -> Error {
        Error::NotReady {
            component: self.spec.component.clone(),
            seconds: timeout.as_secs(),
            log: self.spec.log.clone(),
        }
    }

    fn fail_if_exited(&self) -> Result<()> {
        let mut guard = self.lock();
        let Some(child) = guard.as_mut() else {
            return Err(self.exited("not running".into()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                guard.take();
                Err(self.exited(status.to_string()))
            }
            Err(error) => Err(self.exited(error.to_string())),
        }
    }

    fn exited(&self, status: String) -> Error {
        Error::Exited {
            component: self.spec.component.clone(),
            status,
            log: self.spec.log.clone(),
            tail: log_tail(&self.spec.log, 15),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
