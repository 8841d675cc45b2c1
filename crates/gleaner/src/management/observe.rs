//! Live reads (never a cache) of the facts the core decides on.

use gleaner_core::{ClusterObservation, LiveObservation};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

use crate::{Error, Result, management::capi::Capi};

const INSTALL_UUID_SETTING: &str = "install-uuid";

pub fn provisioning_cluster() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("provisioning.cattle.io", "v1", "Cluster"),
        "clusters",
    )
}

pub fn harvester_machine() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            gleaner_core::hooks::HARVESTER_MACHINE_GROUP,
            "v1",
            gleaner_core::hooks::HARVESTER_MACHINE_KIND,
        ),
        "harvestermachines",
    )
}

fn setting() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Setting"),
        "settings",
    )
}

/// The Rancher installation UUID from the cluster-scoped `install-uuid` Setting; `None` when it
/// is missing or empty.
pub async fn install_uuid(client: &Client) -> Result<Option<String>> {
    let settings: Api<DynamicObject> = Api::all_with(client.clone(), &setting());
    let setting = settings
        .get_opt(INSTALL_UUID_SETTING)
        .await
        .map_err(|source| Error::Kube {
            context: "cannot read the install-uuid Setting".into(),
            source,
        })?;
    Ok(setting
        .and_then(|setting| setting.data["value"].as_str().map(str::to_owned))
        .filter(|uuid| !uuid.is_empty()))
}

/// Both Cluster objects of `namespace/name` and the installation, read now.
pub async fn live(
    client: &Client,
    capi: &Capi,
    namespace: &str,
    name: &str,
) -> Result<LiveObservation> {
    let provisioning = Api::namespaced_with(client.clone(), namespace, &provisioning_cluster());
    Ok(LiveObservation {
        install_uuid: install_uuid(client).await?,
        provisioning: observe(&provisioning, name).await?,
        capi: observe(&capi.clusters(client, namespace), name).await?,
    })
}

async fn observe(api: &Api<DynamicObject>, name: &str) -> Result<ClusterObservation> {
    let found = api.get_opt(name).await.map_err(|source| Error::Kube {
        context: format!("cannot read Cluster {name}"),
        source,
    })?;
    Ok(match found {
        None => ClusterObservation::NotFound,
        Some(cluster) => ClusterObservation::Found {
            uid: cluster.metadata.uid.unwrap_or_default(),
            deleting: cluster.metadata.deletion_timestamp.is_some(),
        },
    })
}
