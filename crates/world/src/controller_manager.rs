use std::path::Path;

use crate::{
    Result, ports,
    process::{Process, ProcessSpec},
};

/// The controllers whose real behaviour gleaner's world depends on: owner references
/// (garbage collector), namespace deletion, the PVC and PV protection finalizers, and what pods
/// and RBAC need (default ServiceAccounts, the root CA ConfigMap, aggregated ClusterRoles), and
/// what turns the chart's Deployment and uninstall Job into Pods for the world's stand-in kubelet.
const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "namespace-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
];

pub(crate) struct ControllerManager {
    pub(crate) process: Process,
    pub(crate) port: u16,
}

impl ControllerManager {
    pub(crate) fn new(
        cluster: &str,
        binary: &Path,
        kubeconfig: &Path,
        ca: &Path,
        log: &Path,
    ) -> Result<Self> {
        let port = ports::free_port()?;
        let kubeconfig = kubeconfig.display();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--controllers={}", CONTROLLERS.join(",")),
            // Each controller acts as its own ServiceAccount, so admission webhooks (Harvester's
            // PVC webhook) can tell the garbage collector's requests from everyone else's.
            "--use-service-account-credentials=true".into(),
            "--leader-elect=false".into(),
            format!("--root-ca-file={}", ca.display()),
            format!("--cluster-name={cluster}"),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
            "--v=1".into(),
        ];
        Ok(Self {
            process: Process::new(ProcessSpec {
                component: format!("kube-controller-manager-{cluster}"),
                program: binary.to_path_buf(),
                args,
                log: log.to_path_buf(),
            }),
            port,
        })
    }
}
