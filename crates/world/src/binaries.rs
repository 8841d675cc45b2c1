use std::path::{Path, PathBuf};

use crate::{CapiVersion, Error, Result};

/// The Kubernetes release the world runs (kube-apiserver, kube-controller-manager, kubectl).
/// `tools/kubernetes/go.mod` pins the same release; a test keeps the two in step.
pub const KUBERNETES_VERSION: &str = "v1.34.4";
/// The etcd release the world runs; `tools/etcd/go.mod` pins the same one.
pub const ETCD_VERSION: &str = "v3.6.16";
/// The helm release the chart's tests run (`tools/helm/go.mod` pins the same one).
pub const HELM_VERSION: &str = "v4.3.2";
/// The go-containerregistry release whose `crane` assembles gleaner's image (`tools/crane/go.mod`).
pub const CRANE_VERSION: &str = "v0.22.1";
/// The external-snapshotter release whose snapshot-controller the world runs
/// (`tools/snapshot-controller/go.mod`): the one whose CRDs Harvester v1.7 ships, as in
/// `../shared/upstream/crds/original/external-snapshotter-v8.3.0`.
pub const SNAPSHOTTER_VERSION: &str = "v8.3.0";
/// The Cluster API release whose core manager the world can run (`tools/cluster-api/go.mod`):
/// the one Rancher 2.13 builds against (2.12 uses v1.10.2, 2.14 v1.12.2, which serves
/// `v1beta2`). `cargo xtask tools` copies its CRDs and webhook manifests beside the binary.
pub const CAPI_VERSION: &str = "v1.10.6";
/// The Cluster API release whose core manager plays the `v1beta2` management clusters
/// (`tools/cluster-api-v1beta2/go.mod`): the one Rancher 2.14 builds against, whose controllers
/// work on `v1beta2` and still accept providers of the `v1beta1` contract.
pub const CAPI_V1BETA2_VERSION: &str = "v1.12.2";

/// Where the control-plane binaries are. Built once per machine into a cache outside any clone,
/// keyed by the pinned versions, so a fresh clone (and CI right after a session) reuses them.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub snapshot_controller: PathBuf,
    /// Cluster API's core manager for `v1beta1` management clusters.
    pub cluster_api: PathBuf,
    /// Cluster API's core manager for `v1beta2` management clusters.
    pub cluster_api_v1beta2: PathBuf,
}

impl Binaries {
    /// `$GLEANER_BIN_DIR` when set (all seven binaries in one folder), else the version-keyed cache.
    pub fn from_env() -> Self {
        match std::env::var_os("GLEANER_BIN_DIR") {
            Some(dir) => Self::in_dir(Path::new(&dir)),
            None => Self::cached(),
        }
    }

    /// The binaries as `cargo xtask tools` leaves them in the cache.
    pub fn cached() -> Self {
        let kubernetes = Self::kubernetes_dir();
        let etcd = Self::etcd_dir();
        Self {
            etcd: etcd.join("etcd"),
            kube_apiserver: kubernetes.join("kube-apiserver"),
            kube_controller_manager: kubernetes.join("kube-controller-manager"),
            kubectl: kubernetes.join("kubectl"),
            snapshot_controller: Self::snapshot_controller_dir().join("snapshot-controller"),
            cluster_api: Self::cluster_api_dir().join("cluster-api"),
            cluster_api_v1beta2: Self::cluster_api_v1beta2_dir().join("cluster-api"),
        }
    }

    /// All seven binaries in one folder; the `v1beta2` manager, with its CRDs and webhooks
    /// beside it, in its subfolder `cluster-api-v1beta2`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kubectl: dir.join("kubectl"),
            snapshot_controller: dir.join("snapshot-controller"),
            cluster_api: dir.join("cluster-api"),
            cluster_api_v1beta2: dir.join("cluster-api-v1beta2").join("cluster-api"),
        }
    }

    /// `$XDG_CACHE_HOME/gleaner/bin`, else `~/.cache/gleaner/bin`.
    pub fn cache_root() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("gleaner").join("bin")
    }

    pub fn kubernetes_dir() -> PathBuf {
        Self::cache_root().join(format!("kubernetes-{KUBERNETES_VERSION}"))
    }

    pub fn etcd_dir() -> PathBuf {
        Self::cache_root().join(format!("etcd-{ETCD_VERSION}"))
    }

    pub fn cluster_api_dir() -> PathBuf {
        Self::cache_root().join(format!("cluster-api-{CAPI_VERSION}"))
    }

    pub fn cluster_api_v1beta2_dir() -> PathBuf {
        Self::cache_root().join(format!("cluster-api-{CAPI_V1BETA2_VERSION}"))
    }

    /// The core manager for management clusters serving `capi`.
    pub fn cluster_api_for(&self, capi: CapiVersion) -> &Path {
        match capi {
            CapiVersion::V1beta1 => &self.cluster_api,
            CapiVersion::V1beta2 => &self.cluster_api_v1beta2,
        }
    }

    pub fn snapshot_controller_dir() -> PathBuf {
        Self::cache_root().join(format!("snapshot-controller-{SNAPSHOTTER_VERSION}"))
    }

    /// Fails with the first missing binary and the command that builds it.
    pub fn check(&self) -> Result<()> {
        all_present(self.all())
    }

    pub fn all(&self) -> [(&'static str, &PathBuf); 7] {
        [
            ("etcd", &self.etcd),
            ("kube-apiserver", &self.kube_apiserver),
            ("kube-controller-manager", &self.kube_controller_manager),
            ("kubectl", &self.kubectl),
            ("snapshot-controller", &self.snapshot_controller),
            ("cluster-api", &self.cluster_api),
            ("cluster-api (v1beta2)", &self.cluster_api_v1beta2),
        ]
    }
}

/// The tools that package gleaner rather than run the world: helm for the chart, crane for the
/// image. Built by `cargo xtask tools` into the same cache as the control plane.
#[derive(Clone, Debug)]
pub struct Packaging {
    pub helm: PathBuf,
    pub crane: PathBuf,
}

impl Packaging {
    pub fn cached() -> Self {
        Self {
            helm: Self::helm_dir().join("helm"),
            crane: Self::crane_dir().join("crane"),
        }
    }

    pub fn helm_dir() -> PathBuf {
        Binaries::cache_root().join(format!("helm-{HELM_VERSION}"))
    }

    pub fn crane_dir() -> PathBuf {
        Binaries::cache_root().join(format!("crane-{CRANE_VERSION}"))
    }

    /// Fails with the first missing tool and the command that builds it.
    pub fn check(&self) -> Result<()> {
        all_present([("helm", &self.helm), ("crane", &self.crane)])
    }
}

pub(crate) fn all_present<'a>(
    binaries: impl IntoIterator<Item = (&'static str, &'a PathBuf)>,
) -> Result<()> {
    match binaries.into_iter().find(|(_, path)| !path.is_file()) {
        Some((binary, path)) => Err(Error::MissingBinary {
            binary,
            path: path.clone(),
        }),
        None => Ok(()),
    }
}
