use std::path::Path;

use crate::{
    Result, ports,
    process::{Process, ProcessSpec},
};

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
