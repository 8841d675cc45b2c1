//! Stopping gleaner's own Deployment before its hooks are removed (`gleaner unhook
//! --stop-deployment`): a replica left running would hook the next deleting Machine again.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{Error, Result};

/// How often the Deployment's Pods are counted while they go.
const POLL: Duration = Duration::from_secs(1);

/// Scales `namespace/name` to 0 and waits up to `timeout` for its Pods to go. A Deployment that
/// does not exist has nothing running. Returns the Pods still there at the deadline.
pub async fn stop(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let deployment = match deployments.get_opt(name).await {
        Ok(Some(deployment)) => deployment,
        Ok(None) => {
            tracing::warn!(%namespace, %name, "no such Deployment: nothing to stop");
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(Error::Kube {
                context: format!("cannot read Deployment {namespace}/{name}"),
                source,
            });
        }
    };
    let selector = selector(&deployment).ok_or_else(|| {
        Error::Unsupported(format!(
            "Deployment {namespace}/{name} has no matchLabels selector to find its Pods by"
        ))
    })?;
    deployments
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot scale Deployment {namespace}/{name} to 0"),
            source,
        })?;
    tracing::info!(%namespace, %name, "scaled to 0; waiting for its Pods to go");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left: Vec<String> = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot list the Pods of Deployment {namespace}/{name}"),
                source,
            })?
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Deployment's `matchLabels` as a label selector; `None` without any.
fn selector(deployment: &Deployment) -> Option<String> {
    let labels = deployment
        .spec
        .as_ref()?
        .selector
        .match_labels
        .as_ref()
        .filter(|labels| !labels.is_empty())?;
    Some(
        labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn deployment(labels: &[(&str, &str)]) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    ),
                    ..LabelSelector::default()
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn the_pods_are_found_by_every_match_label() {
        assert_eq!(
            selector(&deployment(&[
                ("app.kubernetes.io/instance", "gleaner"),
                ("app.kubernetes.io/name", "gleaner")
            ]))
            .as_deref(),
            Some("app.kubernetes.io/instance=gleaner,app.kubernetes.io/name=gleaner")
        );
    }

    #[test]
    fn a_deployment_without_match_labels_names_no_pods() {
        assert_eq!(selector(&deployment(&[])), None);
        assert_eq!(selector(&Deployment::default()), None);
    }
}
