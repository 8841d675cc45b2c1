//! The Secrets gleaner reads kubeconfigs from (cloud credentials, guest kubeconfigs): which
//! version exists, watched by name and by metadata only (the content never reaches that stream,
//! and no Secret is ever listed), and the client a kubeconfig in one builds. Their content is
//! never logged, not even in a parser's error message.

use std::time::Duration;

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    metrics::{Metrics, WatchKind},
    timeouts, user_agent,
};

/// The Secret's resourceVersion each time the watch shows it; `None` while it does not exist.
pub fn versions(
    client: Client,
    namespace: &str,
    name: &str,
    api_timeout: Duration,
    metrics: Metrics,
) -> BoxStream<'static, Option<String>> {
    let api = Api::<PartialObjectMeta<Secret>>::namespaced(client, namespace);
    let config = timeouts::watcher_config(api_timeout).fields(&format!("metadata.name={name}"));
    let secret = format!("{namespace}/{name}");
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                    Some(secret.metadata.resource_version)
                }
                Ok(watcher::Event::Delete(_)) => Some(None),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(error) => {
                    tracing::warn!(%secret, %error, "cannot watch the Secret");
                    metrics.watch_failed(WatchKind::Secret, "watch_failed");
                    None
                }
            };
            std::future::ready(seen)
        })
        .boxed()
}

/// A client from the kubeconfig under `key` of `secret`, with gleaner's timeouts; else what is
/// wrong with it, without quoting it.
pub async fn client_from(
    secret: &Secret,
    key: &str,
    api_timeout: Duration,
) -> Result<Client, String> {
    let content = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| format!("has no {key}"))?;
    let text = std::str::from_utf8(&content.0)
        .map_err(|_| "holds a kubeconfig that is not UTF-8".to_owned())?;
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| "holds a kubeconfig that does not parse".to_owned())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| "holds a kubeconfig without a usable cluster, user and context".to_owned())?;
    Client::try_from(user_agent::identified(timeouts::bounded(
        config,
        api_timeout,
    )))
    .map_err(|_| "holds a kubeconfig kube cannot build a client from".to_owned())
}
