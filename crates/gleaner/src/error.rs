//! The crate's one error type. Every variant says what failed and, where it helps, what to do.

use std::{net::SocketAddr, path::PathBuf};

/// Everything that can stop gleaner, each with a bounded [`Error::metric_label`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RUST_LOG is not a valid log filter: {0}")]
    LogFilter(#[from] tracing_subscriber::filter::FromEnvError),

    #[error("cannot install the log subscriber: {0}")]
    Telemetry(#[source] Box<dyn std::error::Error + Send + Sync>),

    #[error("cannot load the kubeconfig {path} (--kubeconfig): {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },

    #[error(
        "no --kubeconfig given and no Kubernetes configuration could be inferred \
         (not in a pod, no KUBECONFIG, no ~/.kube/config): {0}"
    )]
    InferConfig(#[source] kube::config::InferConfigError),

    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    #[error("{context}: {source}")]
    Kube {
        context: String,
        source: kube::Error,
    },

    #[error("cloud credential {credential} {problem}")]
    Credential { credential: String, problem: String },

    #[error("{0}")]
    Unsupported(String),

    #[error("{0} kept changing while gleaner wrote it; it will try again")]
    Conflict(String),

    #[error("cannot take part in the election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },

    #[error("cannot listen on {addr} for the admin server (--admin-addr): {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("the admin server failed: {0}")]
    AdminServe(#[source] std::io::Error),

    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for the `error` label of the error counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::LogFilter(_) | Error::Telemetry(_) => "telemetry",
            Error::Kubeconfig { .. } | Error::InferConfig(_) => "kubeconfig",
            Error::Client(_) => "client",
            Error::Kube { .. } => "kube_api",
            Error::Credential { .. } => "credential",
            Error::Unsupported(_) => "unsupported",
            Error::Conflict(_) => "conflict",
            Error::Lease { .. } => "lease",
            Error::AdminBind { .. } | Error::AdminServe(_) => "admin",
            Error::Signal(_) => "signal",
        }
    }
}
