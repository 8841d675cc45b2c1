//! One Harvester client per cloud credential, built from the Secret's kubeconfig and rebuilt
//! when the Secret changes. Secrets are read one by one by name, never listed; no credential,
//! token or kubeconfig is ever logged.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{Error, Result};

/// The Secret key Rancher keeps a Harvester cloud credential's kubeconfig under.
const KUBECONFIG_KEY: &str = "harvestercredentialConfig-kubeconfigContent";

pub struct HarvesterClients {
    management: Client,
    cache: Mutex<HashMap<String, (String, Client)>>,
}

impl HarvesterClients {
    pub fn new(management: Client) -> Self {
        Self {
            management,
            cache: Mutex::default(),
        }
    }

    /// A client for the Harvester the credential `namespace:name` reaches. The Secret is read
    /// live each time (one GET by name); the client is rebuilt only when its resourceVersion
    /// changed.
    pub async fn client(&self, credential: &str) -> Result<Client> {
        let (namespace, name) = credential
            .split_once(':')
            .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
            .ok_or_else(|| Error::Credential {
                credential: credential.to_owned(),
                problem: "is not of the form namespace:name".into(),
            })?;
        let secret = Api::<Secret>::namespaced(self.management.clone(), namespace)
            .get(name)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read cloud credential {credential}"),
                source,
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some((cached_version, client)) = self.lock().get(credential)
            && *cached_version == version
        {
            return Ok(client.clone());
        }
        let client = build(credential, &secret).await?;
        self.lock()
            .insert(credential.to_owned(), (version, client.clone()));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Client)>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn build(credential: &str, secret: &Secret) -> Result<Client> {
    let problem = |problem: &str| Error::Credential {
        credential: credential.to_owned(),
        problem: problem.to_owned(),
    };
    let content = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .ok_or_else(|| problem(&format!("has no {KUBECONFIG_KEY}")))?;
    let text = std::str::from_utf8(&content.0)
        .map_err(|_| problem("holds a kubeconfig that is not UTF-8"))?;
    // The parser's messages can quote the input; say only that it failed, never what it read.
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| problem("holds a kubeconfig that does not parse"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| problem("holds a kubeconfig without a usable cluster, user and context"))?;
    Client::try_from(config)
        .map_err(|_| problem("holds a kubeconfig kube cannot build a client from"))
}
