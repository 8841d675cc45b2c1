//! Real Kubernetes control planes for gleaner's tests, demo and benchmarks.
//!
//! A [`World`] is one etcd, one kube-apiserver per cluster (each on its own etcd prefix), and a
//! kube-controller-manager for every management and Harvester cluster, all started from the
//! binaries `cargo xtask` builds from the upstream Go modules. Nothing here mocks the Kubernetes
//! API: admission, garbage collection, finalizers and RBAC are the real ones.
//!
//! Every child process is started so that the kernel kills it when the world's supervisor thread
//! ends, so no apiserver outlives the test binary that started it, even on a panic or a kill.
//!
//! [`image`] assembles gleaner's OCI image with crane, for `cargo xtask image` and its test.

mod binaries;
mod capi_manager;
mod cluster;
mod controller_manager;
mod crds;
mod error;
mod etcd;
pub mod image;
mod kubeconfig;
pub mod kubelet;
mod layout;
mod pki;
mod player;
mod ports;
mod process;
mod snapshot_controller;
pub mod testing;
mod world;

pub use binaries::{
    Binaries, CAPI_V1BETA2_VERSION, CAPI_VERSION, CRANE_VERSION, ETCD_VERSION, HELM_VERSION,
    KUBERNETES_VERSION, Packaging, SNAPSHOTTER_VERSION,
};
pub use cluster::{ClusterName, Role};
pub use crds::{CapiVersion, CrdSource};
pub use error::{Error, Result};
pub use kubeconfig::render as render_kubeconfig;
pub use pki::ServingCert;
pub use player::Player;
pub use world::{World, WorldBuilder};
