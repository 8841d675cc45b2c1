//! Cluster API kinds at the version the management cluster serves, discovered at start.

use gleaner_core::InfrastructureRef;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    discovery,
};

use crate::{Error, Result};

const GROUP: &str = "cluster.x-k8s.io";

/// The CAPI version gleaner talks: `v1beta2` when served (Rancher 2.14), else `v1beta1`.
#[derive(Clone, Debug)]
pub struct Capi {
    version: String,
}

impl Capi {
    pub async fn discover(client: &Client) -> Result<Self> {
        let group = discovery::group(client, GROUP)
            .await
            .map_err(|source| Error::Kube {
                context: format!("{GROUP} is not served: is this Rancher's local cluster?"),
                source,
            })?;
        let served: Vec<String> = group.versions().map(str::to_owned).collect();
        let version = ["v1beta2", "v1beta1"]
            .into_iter()
            .find(|wanted| served.iter().any(|served| served == wanted))
            .ok_or_else(|| {
                Error::Unsupported(format!("{GROUP} serves {served:?}, not v1beta1 or v1beta2"))
            })?;
        Ok(Self {
            version: version.to_owned(),
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn resource(&self, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, &self.version, kind),
            plural,
        )
    }

    pub fn machine(&self) -> ApiResource {
        self.resource("Machine", "machines")
    }

    pub fn cluster(&self) -> ApiResource {
        self.resource("Cluster", "clusters")
    }

    pub fn machines(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        scoped(client, namespace, &self.machine())
    }

    pub fn clusters(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.cluster())
    }

    /// A Machine's infrastructure reference, in either version's shape (`apiVersion` in
    /// v1beta1, `apiGroup` in v1beta2).
    pub fn infrastructure_of(machine: &DynamicObject) -> InfrastructureRef {
        let reference = &machine.data["spec"]["infrastructureRef"];
        InfrastructureRef::from_reference(
            reference["apiGroup"].as_str(),
            reference["apiVersion"].as_str(),
            reference["kind"].as_str(),
        )
    }
}

pub fn scoped(
    client: &Client,
    namespace: Option<&str>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(reference: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
            "metadata": {"name": "m"}, "spec": {"infrastructureRef": reference},
        }))
        .unwrap()
    }

    #[test]
    fn infrastructure_kind_and_group_read_from_either_version() {
        let harvester_machine = InfrastructureRef {
            group: "rke-machine.cattle.io".into(),
            kind: "HarvesterMachine".into(),
        };
        let v1beta1 = machine(
            json!({"apiVersion": "rke-machine.cattle.io/v1", "kind": "HarvesterMachine", "name": "m"}),
        );
        assert_eq!(Capi::infrastructure_of(&v1beta1), harvester_machine);
        let v1beta2 = machine(
            json!({"apiGroup": "rke-machine.cattle.io", "kind": "HarvesterMachine", "name": "m"}),
        );
        assert_eq!(Capi::infrastructure_of(&v1beta2), harvester_machine);
        let core = machine(json!({"apiVersion": "v1", "kind": "HarvesterMachine", "name": "m"}));
        assert_eq!(Capi::infrastructure_of(&core).group, "");
        assert_eq!(Capi::infrastructure_of(&machine(json!(null))).kind, "");
    }
}
