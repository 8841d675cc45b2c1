//! The facts the core decides on, read from the caches or, where a safety rule demands it
//! (confirming a deletion, deciding why a Machine goes), live.

use gleaner_core::{ClusterIdentity, ClusterObservation, LiveObservation, PauseFacts, keys};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

use crate::{
    Error, Result,
    management::{Context, capi::Capi},
};

pub const INSTALL_UUID_SETTING: &str = "install-uuid";

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

pub fn harvester_config() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rke-machine-config.cattle.io", "v1", "HarvesterConfig"),
        "harvesterconfigs",
    )
}

pub fn setting() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Setting"),
        "settings",
    )
}

/// The installation UUID an `install-uuid` Setting holds; `None` when missing or empty.
pub fn install_uuid_of(setting: Option<&DynamicObject>) -> Option<String> {
    setting
        .and_then(|setting| setting.data["value"].as_str())
        .filter(|uuid| !uuid.is_empty())
        .map(str::to_owned)
}

/// The installation UUID, read live from the `install-uuid` Setting.
pub async fn live_install_uuid(client: &Client) -> Result<Option<String>> {
    let setting = Api::<DynamicObject>::all_with(client.clone(), &setting())
        .get_opt(INSTALL_UUID_SETTING)
        .await
        .map_err(|source| Error::Kube {
            context: "cannot read the install-uuid Setting".into(),
            source,
        })?;
    Ok(install_uuid_of(setting.as_ref()))
}

/// Both Cluster objects of one cluster and the installation, as read at one time.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    pub install_uuid: Option<String>,
    pub provisioning: Option<DynamicObject>,
    pub capi: Option<DynamicObject>,
}

impl Clusters {
    /// Both Cluster objects of the recorded cluster's namespace and name, and the
    /// installation, read now.
    pub async fn live_of(context: &Context, recorded: &ClusterIdentity) -> Result<Self> {
        Self::live(
            &context.client,
            &context.capi,
            &recorded.namespace,
            &recorded.name,
        )
        .await
    }

    /// Both Cluster objects of `namespace/name` and the installation, read now.
    pub async fn live(client: &Client, capi: &Capi, namespace: &str, name: &str) -> Result<Self> {
        let install_uuid = live_install_uuid(client).await?;
        let read = |api: Api<DynamicObject>| async move {
            api.get_opt(name).await.map_err(|source| Error::Kube {
                context: format!("cannot read Cluster {namespace}/{name}"),
                source,
            })
        };
        Ok(Self {
            install_uuid,
            provisioning: read(Api::namespaced_with(
                client.clone(),
                namespace,
                &provisioning_cluster(),
            ))
            .await?,
            capi: read(capi.clusters(client, namespace)).await?,
        })
    }

    pub fn observation(&self) -> LiveObservation {
        LiveObservation {
            install_uuid: self.install_uuid.clone(),
            provisioning: observation(self.provisioning.as_ref()),
            capi: observation(self.capi.as_ref()),
        }
    }

    /// Only the objects with these UIDs: a same-named successor never speaks for a recorded
    /// cluster.
    pub fn recorded(&self, provisioning_uid: &str, capi_uid: &str) -> Self {
        let with_uid = |object: &Option<DynamicObject>, uid: &str| {
            object
                .clone()
                .filter(|object| object.metadata.uid.as_deref() == Some(uid))
        };
        Self {
            install_uuid: self.install_uuid.clone(),
            provisioning: with_uid(&self.provisioning, provisioning_uid),
            capi: with_uid(&self.capi, capi_uid),
        }
    }

    /// The opt-out annotation on the provisioning and the CAPI Cluster.
    pub fn skip_cleanup(&self) -> (Option<&str>, Option<&str>) {
        fn skip(object: Option<&DynamicObject>) -> Option<&str> {
            object?
                .annotations()
                .get(keys::SKIP_CLEANUP_ANNOTATION)
                .map(String::as_str)
        }
        (skip(self.provisioning.as_ref()), skip(self.capi.as_ref()))
    }

    /// What pauses the cluster, and the Machine if one is given.
    pub fn pause(&self, machine: Option<&DynamicObject>) -> PauseFacts {
        let capi = self.capi.as_ref();
        PauseFacts {
            cluster_spec_paused: capi.is_some_and(|cluster| {
                cluster.data["spec"]["paused"] == serde_json::Value::Bool(true)
            }),
            cluster_annotated: capi
                .is_some_and(|cluster| cluster.annotations().contains_key(keys::PAUSED_ANNOTATION)),
            machine_annotated: machine
                .is_some_and(|machine| machine.annotations().contains_key(keys::PAUSED_ANNOTATION)),
        }
    }

    /// The provisioning Cluster's UID: its own, or the one the CAPI Cluster's owner names.
    pub fn provisioning_uid(&self) -> Option<String> {
        self.provisioning
            .as_ref()
            .and_then(|cluster| cluster.metadata.uid.clone())
            .or_else(|| self.capi.as_ref().and_then(owning_provisioning_uid))
    }
}

/// The UID of the provisioning Cluster that owns a CAPI Cluster.
pub fn owning_provisioning_uid(capi: &DynamicObject) -> Option<String> {
    capi.owner_references()
        .iter()
        .find(|owner| {
            owner.kind == "Cluster" && owner.api_version.starts_with("provisioning.cattle.io/")
        })
        .map(|owner| owner.uid.clone())
}

fn observation(object: Option<&DynamicObject>) -> ClusterObservation {
    match object {
        None => ClusterObservation::NotFound,
        Some(cluster) => ClusterObservation::Found {
            uid: cluster.metadata.uid.clone().unwrap_or_default(),
            deleting: cluster.metadata.deletion_timestamp.is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster(uid: &str, annotations: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "fleet-default", "uid": uid,
                         "annotations": annotations},
        }))
        .unwrap()
    }

    #[test]
    fn a_same_named_successor_never_speaks_for_the_recorded_cluster() {
        let opted_out = json!({keys::SKIP_CLEANUP_ANNOTATION: "true", keys::PAUSED_ANNOTATION: ""});
        let live = Clusters {
            install_uuid: Some("u".into()),
            provisioning: Some(cluster("new-prov", opted_out.clone())),
            capi: Some(cluster("new-capi", opted_out)),
        };
        let recorded = live.recorded("old-prov", "old-capi");
        assert_eq!(recorded.skip_cleanup(), (None, None));
        assert_eq!(recorded.pause(None), PauseFacts::default());
        let same = live.recorded("new-prov", "new-capi");
        assert_eq!(same.skip_cleanup(), (Some("true"), Some("true")));
        assert!(same.pause(None).cluster_annotated);
    }
}
