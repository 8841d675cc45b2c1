use std::path::PathBuf;

/// Everything that can go wrong while starting or driving a world. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{binary} not found at {path}: run `cargo xtask tools` (or `cargo xtask test`, which builds what is missing)"
    )]
    MissingBinary { binary: &'static str, path: PathBuf },

    #[error("`setpriv` (util-linux) is needed to tie child processes to the world's lifetime: {0}")]
    MissingSetpriv(std::io::Error),

    #[error("{component} cannot listen on 127.0.0.1:{port}: the port is in use by another process")]
    PortInUse { component: String, port: u16 },

    #[error("{component} exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    Exited {
        component: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{component} was not ready after {seconds}s; its log is {log}")]
    NotReady {
        component: String,
        seconds: u64,
        log: PathBuf,
    },

    #[error("world option {option}: {value:?} is not {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("no cluster named {0:?} in this world")]
    UnknownCluster(String),

    #[error("CRD directory {0} is missing or holds no CRD")]
    NoCrds(PathBuf),

    #[error("the fallback CRDs serve Cluster API v1beta1 only; a v1beta2 world needs ../shared")]
    FallbackV1beta2,

    #[error("CRD {name} was not established: {reason}")]
    CrdNotEstablished { name: String, reason: String },

    #[error("cannot parse {path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_norway::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("{context}: {source}")]
    Kube {
        context: String,
        source: kube::Error,
    },

    #[error("kubeconfig for {cluster}: {source}")]
    Kubeconfig {
        cluster: String,
        source: kube::config::KubeconfigError,
    },

    #[error("the world's supervisor thread is gone")]
    SupervisorGone,

    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("{binary} needs {library}, which the dynamic linker cannot find on this machine")]
    MissingLibrary { binary: PathBuf, library: String },

    #[error("{context}: no answer within {seconds}s")]
    Timeout { context: String, seconds: u64 },

    #[error("the stand-in kubelet is stopped")]
    KubeletStopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a component lost the race for the free port it was given: the port was in use
    /// before it started, or it exited because it could not bind it.
    pub fn is_port_race(&self) -> bool {
        match self {
            Error::PortInUse { .. } => true,
            Error::Exited { tail, .. } => tail.contains("address already in use"),
            _ => false,
        }
    }
}

pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

pub(crate) trait KubeContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for kube::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_port_race_is_told_from_other_failures() {
        let exited = |tail: &str| Error::Exited {
            component: "kube-apiserver-guest-1".into(),
            status: "exit status: 1".into(),
            log: PathBuf::from("apiserver.log"),
            tail: tail.into(),
        };
        assert!(exited("listen tcp 127.0.0.1:36423: bind: address already in use").is_port_race());
        assert!(!exited("etcd cluster is unavailable").is_port_race());
        assert!(
            Error::PortInUse {
                component: "etcd".into(),
                port: 1
            }
            .is_port_race()
        );
    }
}
