use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{Clock, Error, Result, error::KubeContext};

/// The shortest wait between two looks at an object that is waiting on something.
const MIN_REQUEUE: Duration = Duration::from_millis(50);

/// Runs a level-triggered reconcile loop over one kind in one namespace until aborted, the way
/// the simulated upstream controllers (wrangler handlers, controller-runtime reconcilers) run.
pub(crate) async fn run<C, F, Fut>(
    api: Api<DynamicObject>,
    resource: ApiResource,
    context: Arc<C>,
    reconcile: F,
) where
    C: Send + Sync + 'static,
    F: FnMut(Arc<DynamicObject>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    Controller::new_with(api, watcher::Config::default(), resource)
        .run(
            reconcile,
            |object, error: &Error, _| {
                tracing::debug!(name = ?object.metadata.name, %error, "simulator retries");
                Action::requeue(Duration::from_millis(200))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
}

/// Look again after `upstream` (scaled), for objects waiting on something no event announces.
pub(crate) fn poll_again(clock: &Clock, upstream: Duration) -> Action {
    Action::requeue(clock.scaled(upstream).max(MIN_REQUEUE))
}

pub(crate) fn name(object: &DynamicObject) -> &str {
    object.metadata.name.as_deref().unwrap_or_default()
}

pub(crate) fn annotation<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

pub(crate) fn label<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .map(String::as_str)
}

pub(crate) fn has_finalizer(object: &DynamicObject, finalizer: &str) -> bool {
    object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|present| present == finalizer)
}

pub(crate) fn is_deleting(object: &DynamicObject) -> bool {
    object.metadata.deletion_timestamp.is_some()
}

/// Removes one finalizer with a merge patch that carries the resourceVersion it read, so a
/// concurrent change fails the patch with a conflict (and the reconcile retries) instead of
/// being overwritten.
pub(crate) async fn remove_finalizer(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    finalizer: &str,
) -> Result<()> {
    let finalizers = object.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {
        "finalizers": remaining,
        "resourceVersion": object.metadata.resource_version,
    }});
    match api
        .patch(name(object), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error)
            .context(|| format!("cannot remove finalizer {finalizer} from {}", name(object))),
    }
}
