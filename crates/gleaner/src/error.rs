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

    #[error("guest kubeconfig Secret {secret} {problem}")]
    GuestKubeconfig { secret: String, problem: String },

    #[error(
        "VM {vm} is not the one gleaner recorded: its UID is {found}, the recorded VM's was \
         {recorded}"
    )]
    VmReplaced {
        vm: String,
        recorded: String,
        found: String,
    },

    #[error(
        "cloud credential {credential} reaches the Harvester whose kube-system namespace is \
         {observed}, not the recorded {recorded}: it is refused"
    )]
    HarvesterChanged {
        credential: String,
        recorded: String,
        observed: String,
    },

    #[error("the install-uuid Setting is missing or empty: is this Rancher's local cluster?")]
    InstallUuidMissing,

    #[error("{0}")]
    Unsupported(String),

    /// What `gleaner plan` or `gleaner explain` cannot answer as asked.
    #[error("{0}")]
    Unanswerable(String),

    #[error("Footprint {footprint} {problem}")]
    Footprint { footprint: String, problem: String },

    #[error(
        "another gleaner installation is running: Lease {namespace}/{name} is held by {holder}; \
         two installations against one Rancher would remove each other's hooks (stop it, or \
         run gleaner unhook after removing it)"
    )]
    AnotherInstallation {
        namespace: String,
        name: String,
        holder: String,
    },

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

    #[error(
        "Deployment {deployment} still has Pod(s) {pods:?} after {waited}: gleaner's hooks were removed, but a replica still running may add them again"
    )]
    ReplicasLingered {
        deployment: String,
        pods: Vec<String>,
        waited: String,
    },

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
            Error::Kube { source, .. } => ApiFailure::of(source).metric_label(),
            Error::Credential { .. } => "credential",
            Error::GuestKubeconfig { .. } => "guest_kubeconfig",
            Error::VmReplaced { .. } => "vm_replaced",
            Error::HarvesterChanged { .. } => "harvester_changed",
            Error::InstallUuidMissing => "install_uuid_missing",
            Error::Unsupported(_) => "unsupported",
            Error::Footprint { .. } => "footprint",
            Error::Unanswerable(_) => "unanswerable",
            Error::AnotherInstallation { .. } => "another_installation",
            Error::Conflict(_) => "conflict",
            Error::Lease { .. } => "lease",
            Error::AdminBind { .. } | Error::AdminServe(_) => "admin",
            Error::ReplicasLingered { .. } => "replicas_lingered",
            Error::Signal(_) => "signal",
        }
    }
}

/// What a failed Kubernetes API call means: each class leads to a different decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFailure {
    NotFound,
    /// 401 or 403: the credential or its permissions.
    Forbidden,
    /// 409: a precondition (UID or resourceVersion) or a concurrent write.
    Conflict,
    /// 400 or 422: the request was refused as it is (an admission webhook, a schema).
    Rejected,
    /// The call timed out, or the connection failed.
    Unreachable,
    /// 429 or 5xx: the server is there but failing.
    ServerError,
    Other,
}

impl ApiFailure {
    pub fn of(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                404 => Self::NotFound,
                401 | 403 => Self::Forbidden,
                409 => Self::Conflict,
                400 | 422 => Self::Rejected,
                429 | 500..=599 => Self::ServerError,
                _ => Self::Other,
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Self::Unreachable,
            kube::Error::Auth(_) => Self::Forbidden,
            _ => Self::Other,
        }
    }

    pub fn metric_label(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Unreachable => "unreachable",
            Self::ServerError => "server_error",
            Self::Other => "kube_api",
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("test", "Test").with_code(code)))
    }

    #[test]
    fn api_failures_are_told_apart_by_status_code() {
        for (code, failure) in [
            (404, ApiFailure::NotFound),
            (401, ApiFailure::Forbidden),
            (403, ApiFailure::Forbidden),
            (409, ApiFailure::Conflict),
            (422, ApiFailure::Rejected),
            (429, ApiFailure::ServerError),
            (503, ApiFailure::ServerError),
            (418, ApiFailure::Other),
        ] {
            assert_eq!(ApiFailure::of(&api(code)), failure, "{code}");
        }
    }

    #[test]
    fn a_kube_error_is_counted_by_its_class() {
        let error = Error::Kube {
            context: "cannot read".into(),
            source: api(403),
        };
        assert_eq!(error.metric_label(), "forbidden");
    }
}
