use std::path::Path;

use base64::prelude::*;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::{Error, Result};

/// A kubeconfig with one cluster, one user (a bearer token) and one context, all named `cluster`.
pub fn render(cluster: &str, server: &str, ca_pem: &str, token: &str) -> String {
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": BASE64_STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": cluster, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    });
    serde_norway::to_string(&document).expect("a JSON value always serialises as YAML")
}

/// A client acting as the kubeconfig's user. Built anew for each caller: a `kube::Client` is tied
/// to the tokio runtime it first runs on, and each test has its own runtime.
pub(crate) async fn client(cluster: &str, path: &Path) -> Result<kube::Client> {
    let config = config(cluster, path).await?;
    kube::Client::try_from(config).map_err(|source| Error::Kube {
        context: format!("cannot build a client for {cluster}"),
        source,
    })
}

pub(crate) async fn config(cluster: &str, path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        cluster: cluster.to_owned(),
        source,
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            cluster: cluster.to_owned(),
            source,
        })
}
