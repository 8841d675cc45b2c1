use std::{path::Path, str::FromStr};

use crate::{
    Error, Result, ports,
    process::{Process, ProcessSpec},
};

/// Who plays the external-snapshotter's snapshot-controller on the Harvester clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Snapshots {
    /// The real snapshot-controller ([`crate::SNAPSHOTTER_VERSION`]), one per Harvester cluster,
    /// watching every namespace; the simulators play only its csi-snapshotter sidecar (and the
    /// storage behind it). Guest clusters keep the stand-in: there the simulated Harvester CSI
    /// driver plays the guest's whole external-snapshotter in one step.
    #[default]
    Real,
    /// The simulators' stand-in, per namespace, where a test starts one.
    Sim,
}

impl Snapshots {
    /// `$GLEANER_WORLD_SNAPSHOTS` (`real` or `sim`), else real.
    pub fn from_env() -> Result<Self> {
        match std::env::var("GLEANER_WORLD_SNAPSHOTS") {
            Ok(value) => value.parse(),
            Err(_) => Ok(Self::default()),
        }
    }
}

impl FromStr for Snapshots {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "real" => Ok(Self::Real),
            "sim" => Ok(Self::Sim),
            other => Err(Error::InvalidOption {
                option: "snapshots",
                value: other.to_owned(),
                expected: "real or sim",
            }),
        }
    }
}

/// The real snapshot-controller of one cluster.
pub(crate) struct SnapshotController {
    pub(crate) process: Process,
    pub(crate) port: u16,
}

impl SnapshotController {
    pub(crate) fn new(cluster: &str, binary: &Path, kubeconfig: &Path, log: &Path) -> Result<Self> {
        let port = ports::free_port()?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-election=false".into(),
            format!("--http-endpoint=127.0.0.1:{port}"),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
            // Upstream backs a failed creation or deletion off up to 5 minutes; tests that make
            // one fail on purpose (a snapshot still being cut) must see it retried within seconds.
            "--retry-interval-max=5s".into(),
            "--v=2".into(),
        ];
        Ok(Self {
            process: Process::new(ProcessSpec {
                component: format!("snapshot-controller-{cluster}"),
                program: binary.to_path_buf(),
                args,
                log: log.to_path_buf(),
            }),
            port,
        })
    }
}
