//! Reading and writing objects the way the simulated controllers do: idempotent creates,
//! deletes where NotFound counts as done, finalizers taken off with optimistic concurrency.

use std::{fmt::Debug, time::Duration};

use kube::{
    Api, Resource, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::UPDATE_ATTEMPTS;
use crate::{Error, Result, error::KubeContext};

/// How long a deleted object may take to go (the real protection controllers release it).
const GONE_DEADLINE: Duration = Duration::from_secs(60);
const GONE_POLL: Duration = Duration::from_millis(100);

pub(crate) async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    status: Value,
    what: &str,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .context(|| format!("cannot set the status of {what} {name}"))?;
    Ok(())
}

/// What a protection controller does once nothing uses the object: it takes its finalizer off,
/// with optimistic concurrency so finalizers others add meanwhile stay.
pub(crate) async fn drop_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    what: &str,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let context = || format!("cannot remove finalizer {finalizer} from {what} {name}");
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(object) = get_opt(api, name, what).await? else {
            return Ok(());
        };
        let finalizers = object.finalizers();
        if !finalizers.iter().any(|present| present == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|present| *present != finalizer)
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": object.resource_version(),
            "finalizers": kept,
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
            Err(source) => {
                return Err(Error::Kube {
                    context: context(),
                    source,
                });
            }
        }
    }
    Err(Error::Timeout(format!(
        "{} ({what} changed under every one of {UPDATE_ATTEMPTS} updates)",
        context()
    )))
}

pub(crate) async fn create_or_get<K>(api: &Api<K>, object: &K, what: &str) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => api.get(&name).await,
        other => other,
    }
    .context(|| format!("cannot create {what} {name}"))
}

pub(crate) async fn get_opt<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .context(|| format!("cannot read {what} {name}"))
}

/// Deletes an object; one already gone counts as deleted.
pub(crate) async fn delete<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Kube {
            context: format!("cannot delete {what} {name}"),
            source,
        }),
    }
}

pub(crate) async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + GONE_DEADLINE;
    while get_opt(api, name, what).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{what} {name} still exists {}s after its deletion",
                GONE_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(GONE_POLL).await;
    }
    Ok(())
}
