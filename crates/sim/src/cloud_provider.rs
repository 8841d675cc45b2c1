//! The guest cluster's Harvester cloud provider (`harvester/cloud-provider-harvester`, run by the
//! guest's cloud-controller-manager) with the guest's service controller around it: a guest
//! Service of type LoadBalancer is held by the service controller's cleanup finalizer and gets
//! a Harvester `LoadBalancer` in the VM namespace; when the Service is deleted the provider
//! deletes that LoadBalancer and the service controller lets the Service go. The LoadBalancer
//! itself goes once Harvester's load-balancer controller
//! ([`crate::harvester::load_balancer`]) has released its finalizer.
//!
//! Not simulated: the address Harvester allocates and the provider copies into the Service,
//! listeners (the v1beta1 provider writes none), secondary Services sharing a load balancer.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    Env, Error, Result,
    csi::Named,
    error::KubeContext,
    keys::{FINALIZER_SERVICE_LB_CLEANUP, LABEL_LB_CLUSTER, LB_SERVICE_UUID},
    kinds::{self, load_balancer},
};

/// Journal actor of the guest's cloud-controller-manager (service controller and provider).
pub const CLOUD_PROVIDER: &str = "harvester-cloud-provider";
/// Journal actor of the guest cluster's user.
const GUEST_USER: &str = "guest-user";

/// Labels the provider puts on a LoadBalancer besides the cluster's: the Service it serves.
const LABEL_SERVICE_NAMESPACE: &str = "cloudprovider.harvesterhci.io/serviceNamespace";
const LABEL_SERVICE_NAME: &str = "cloudprovider.harvesterhci.io/serviceName";
/// Annotations copied from the Service's `cloudprovider.harvesterhci.io/<key>` (empty when it
/// has none) onto the LoadBalancer as `loadbalancer.harvesterhci.io/<key>`, for IP pool
/// selection; `cluster` is the cluster name.
const POOL_SELECTION_KEYS: [&str; 3] = ["network", "project", "namespace"];
const SERVICE_ANNOTATION_PREFIX: &str = "cloudprovider.harvesterhci.io/";
const LB_ANNOTATION_PREFIX: &str = "loadbalancer.harvesterhci.io/";
/// The provider's IPAM mode for a Service without `cloudprovider.harvesterhci.io/ipam`.
const DEFAULT_IPAM: &str = "pool";
/// `spec.workloadType` of a guest cluster's LoadBalancer.
const WORKLOAD_CLUSTER: &str = "cluster";

/// Longest Kubernetes name the provider makes, and its hash suffix's length.
const MAX_NAME_LENGTH: usize = 63;
const SUFFIX_LENGTH: usize = 8;

/// A guest LoadBalancer Service and the Harvester LoadBalancer made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLoadBalancer {
    pub guest_namespace: String,
    pub service: Named,
    pub host_namespace: String,
    pub load_balancer: Named,
}

/// The Harvester cloud provider of one guest cluster.
#[derive(Clone)]
pub struct CloudProvider {
    guest: Client,
    harvester: Client,
    /// Where the provider's Harvester kubeconfig points: the VM namespace.
    host_namespace: String,
    /// The cluster name the cloud-controller-manager is given (Rancher passes the guest
    /// cluster's name); LoadBalancers carry it bare.
    cluster_name: String,
    env: Env,
}

impl CloudProvider {
    pub fn new(
        guest: Client,
        harvester: Client,
        host_namespace: &str,
        cluster_name: &str,
        env: Env,
    ) -> Self {
        Self {
            guest,
            harvester,
            host_namespace: host_namespace.to_owned(),
            cluster_name: cluster_name.to_owned(),
            env,
        }
    }

    /// A user's guest LoadBalancer Service and the Harvester LoadBalancer the provider makes
    /// for it. Idempotent: an existing Service or LoadBalancer of the same name is taken as is.
    pub async fn create_load_balancer(
        &self,
        guest_namespace: &str,
        service_name: &str,
    ) -> Result<GuestLoadBalancer> {
        let services = Api::namespaced(self.guest.clone(), guest_namespace);
        let path = format!("{guest_namespace}/{service_name}");
        let service = self.create_service(&services, &path, service_name).await?;
        let service = self.hold_service(&services, service).await?;
        let lb = self.ensure_load_balancer(&service).await?;
        Ok(GuestLoadBalancer {
            guest_namespace: guest_namespace.to_owned(),
            service: named(&service)?,
            host_namespace: self.host_namespace.clone(),
            load_balancer: named(&lb)?,
        })
    }

    /// A user deletes the guest Service; the provider deletes its LoadBalancer and the service
    /// controller lets the Service go. Idempotent.
    pub async fn delete_load_balancer(&self, lb: &GuestLoadBalancer) -> Result<()> {
        let services: Api<Service> = Api::namespaced(self.guest.clone(), &lb.guest_namespace);
        let path = format!("{}/{}", lb.guest_namespace, lb.service.name);
        match services
            .delete(&lb.service.name, &DeleteParams::default())
            .await
        {
            Ok(_) => self
                .env
                .journal
                .record(GUEST_USER, format!("deleted guest Service {path}")),
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
            Err(error) => return Err(error).context(|| format!("cannot delete Service {path}")),
        }
        let service = services
            .get_opt(&lb.service.name)
            .await
            .context(|| format!("cannot read Service {path}"))?;
        match service {
            Some(service) if service.uid().as_deref() == Some(lb.service.uid.as_str()) => {
                self.ensure_load_balancer_deleted(&service).await?;
                self.release_service(&services, &service).await
            }
            _ => Ok(()),
        }
    }

    async fn create_service(
        &self,
        services: &Api<Service>,
        path: &str,
        name: &str,
    ) -> Result<Service> {
        let service = match services
            .create(&PostParams::default(), &load_balancer_service(name))
            .await
        {
            Ok(created) => {
                self.env
                    .journal
                    .record(GUEST_USER, format!("created guest Service {path}"));
                created
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => services
                .get(name)
                .await
                .context(|| format!("cannot read Service {path}"))?,
            Err(error) => return Err(error).context(|| format!("cannot create Service {path}")),
        };
        if service_type(&service) != Some("LoadBalancer") {
            return Err(Error::Invalid(format!(
                "guest Service {path} exists and is not of type LoadBalancer"
            )));
        }
        Ok(service)
    }

    /// The service controller's finalizer, put on before the load balancer is made.
    async fn hold_service(&self, services: &Api<Service>, service: Service) -> Result<Service> {
        let mut finalizers = service.finalizers().to_vec();
        if finalizers.iter().any(|f| f == FINALIZER_SERVICE_LB_CLEANUP) {
            return Ok(service);
        }
        finalizers.push(FINALIZER_SERVICE_LB_CLEANUP.to_owned());
        let held = patch_finalizers(services, &service, &finalizers).await?;
        self.record(format!(
            "added finalizer {FINALIZER_SERVICE_LB_CLEANUP} to guest Service {}",
            service_path(&service)
        ));
        Ok(held)
    }

    async fn release_service(&self, services: &Api<Service>, service: &Service) -> Result<()> {
        let remaining: Vec<String> = service
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER_SERVICE_LB_CLEANUP)
            .cloned()
            .collect();
        if remaining.len() == service.finalizers().len() {
            return Ok(());
        }
        patch_finalizers(services, service, &remaining).await?;
        self.record(format!(
            "removed finalizer {FINALIZER_SERVICE_LB_CLEANUP} from guest Service {}",
            service_path(service)
        ));
        Ok(())
    }

    /// EnsureLoadBalancer: creates the Service's LoadBalancer unless it exists.
    async fn ensure_load_balancer(&self, service: &Service) -> Result<DynamicObject> {
        let lb = self.load_balancer_object(service)?;
        let name = lb.name_any();
        let lb_path = format!("{}/{name}", self.host_namespace);
        let api = self.load_balancers();
        match api.create(&PostParams::default(), &lb).await {
            Ok(created) => {
                self.record(format!(
                    "created LoadBalancer {lb_path} for guest Service {}",
                    service_path(service)
                ));
                Ok(created)
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => api
                .get(&name)
                .await
                .context(|| format!("cannot read LoadBalancer {lb_path}")),
            Err(error) => Err(error).context(|| format!("cannot create LoadBalancer {lb_path}")),
        }
    }

    /// EnsureLoadBalancerDeleted: deletes the Service's LoadBalancer if it exists.
    ///
    /// The request is journaled before it is sent: Harvester's controller reacts to the
    /// deletion on its own task, and a record made after the response could land after its.
    async fn ensure_load_balancer_deleted(&self, service: &Service) -> Result<()> {
        let name = self.load_balancer_name(service)?;
        let lb_path = format!("{}/{name}", self.host_namespace);
        self.record(format!(
            "deleting LoadBalancer {lb_path} of guest Service {}",
            service_path(service)
        ));
        match self
            .load_balancers()
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(error).context(|| format!("cannot delete LoadBalancer {lb_path}")),
        }
    }

    /// The LoadBalancer as the v1beta1 provider constructs it, plus the Service's UID
    /// annotation that earlier providers and upstream's example manifests carry.
    fn load_balancer_object(&self, service: &Service) -> Result<DynamicObject> {
        let cluster = &self.cluster_name;
        let uid = service.uid().unwrap_or_default();
        let mut annotations: BTreeMap<String, String> = POOL_SELECTION_KEYS
            .iter()
            .map(|key| {
                let value = service
                    .annotations()
                    .get(&format!("{SERVICE_ANNOTATION_PREFIX}{key}"))
                    .cloned()
                    .unwrap_or_default();
                (format!("{LB_ANNOTATION_PREFIX}{key}"), value)
            })
            .collect();
        annotations.insert(format!("{LB_ANNOTATION_PREFIX}cluster"), cluster.clone());
        annotations.insert(LB_SERVICE_UUID.to_owned(), uid);
        serde_json::from_value(json!({
            "apiVersion": "loadbalancer.harvesterhci.io/v1beta1",
            "kind": "LoadBalancer",
            "metadata": {
                "name": self.load_balancer_name(service)?,
                "namespace": self.host_namespace,
                "labels": {
                    LABEL_LB_CLUSTER: cluster,
                    LABEL_SERVICE_NAMESPACE: service.namespace(),
                    LABEL_SERVICE_NAME: service.name_any(),
                },
                "annotations": annotations,
            },
            "spec": {"ipam": DEFAULT_IPAM, "workloadType": WORKLOAD_CLUSTER},
        }))
        .map_err(|error| Error::Invalid(format!("cannot build a LoadBalancer: {error}")))
    }

    fn load_balancer_name(&self, service: &Service) -> Result<String> {
        let Service {
            metadata:
                ObjectMeta {
                    namespace: Some(namespace),
                    name: Some(name),
                    uid: Some(uid),
                    ..
                },
            ..
        } = service
        else {
            return Err(Error::Invalid(format!(
                "a guest Service without namespace, name or UID: {:?}",
                service.metadata
            )));
        };
        Ok(load_balancer_name(&self.cluster_name, namespace, name, uid))
    }

    fn load_balancers(&self) -> Api<DynamicObject> {
        kinds::namespaced(&self.harvester, &self.host_namespace, &load_balancer())
    }

    fn record(&self, what: String) {
        self.env.journal.record(CLOUD_PROVIDER, what);
    }
}

/// The name the provider gives a Service's LoadBalancer:
/// `<cluster>-<namespace>-<service>-` (cut to 55 bytes) and the CRC-32 (IEEE) of that uncut
/// prefix followed by the Service's UID, as 8 hex digits. A cluster name that is not an
/// RFC 1035 label gets an `a` in front.
pub fn load_balancer_name(cluster: &str, namespace: &str, service: &str, uid: &str) -> String {
    let cluster = if is_dns1035_label(cluster) {
        cluster.to_owned()
    } else {
        format!("a{cluster}")
    };
    let mut base = format!("{cluster}-{namespace}-{service}-");
    let suffix = format!("{:08x}", crc32(format!("{base}{uid}").as_bytes()));
    truncate(&mut base, MAX_NAME_LENGTH - SUFFIX_LENGTH);
    base + &suffix
}

/// Go's `validation.IsDNS1035Label`: at most 63 characters of lowercase letters, digits and
/// `-`, starting with a letter and ending with a letter or digit.
fn is_dns1035_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_NAME_LENGTH
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Cuts `value` to at most `max` bytes (never inside a character).
fn truncate(value: &mut String, max: usize) {
    let mut end = max.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
}

/// CRC-32 with the IEEE polynomial (Go's `crc32.ChecksumIEEE`).
fn crc32(bytes: &[u8]) -> u32 {
    const POLYNOMIAL: u32 = 0xEDB8_8320;
    !bytes.iter().fold(!0u32, |crc, &byte| {
        (0..8).fold(crc ^ u32::from(byte), |crc, _| {
            if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            }
        })
    })
}

/// A user's LoadBalancer Service: one TCP port to the pods labelled `app: <name>`.
fn load_balancer_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            selector: Some(BTreeMap::from([("app".to_owned(), name.to_owned())])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                protocol: Some("TCP".to_owned()),
                target_port: Some(IntOrString::Int(8080)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_type(service: &Service) -> Option<&str> {
    service.spec.as_ref()?.type_.as_deref()
}

fn service_path(service: &Service) -> String {
    format!(
        "{}/{}",
        service.namespace().unwrap_or_default(),
        service.name_any()
    )
}

/// A merge patch of the finalizers carrying the resourceVersion it read, so a concurrent change
/// fails it with a conflict instead of being overwritten.
async fn patch_finalizers(
    services: &Api<Service>,
    service: &Service,
    finalizers: &[String],
) -> Result<Service> {
    let patch = json!({"metadata": {
        "resourceVersion": service.meta().resource_version,
        "finalizers": finalizers,
    }});
    services
        .patch(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .context(|| {
            format!(
                "cannot patch the finalizers of Service {}",
                service_path(service)
            )
        })
}

fn named(object: &impl Resource) -> Result<Named> {
    let (Some(name), Some(uid)) = (&object.meta().name, &object.meta().uid) else {
        return Err(Error::Invalid(format!(
            "the apiserver returned an object without name or UID: {:?}",
            object.meta()
        )));
    };
    Ok(Named {
        name: name.clone(),
        uid: uid.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_checksum() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_short_name_is_the_whole_prefix_and_the_checksum() {
        assert_eq!(
            load_balancer_name("alpha", "default", "web", "uid-1"),
            "alpha-default-web-6f82d300"
        );
    }

    #[test]
    fn a_long_name_is_cut_to_63_and_keeps_its_checksum_of_the_uncut_prefix() {
        let service = "s".repeat(60);
        let name = load_balancer_name("alpha", "default", &service, "uid-1");
        assert_eq!(name.len(), 63);
        assert_eq!(name, format!("alpha-default-{}6c59cce0", "s".repeat(41)));
    }

    #[test]
    fn a_cluster_name_that_is_no_dns1035_label_gets_an_a_in_front() {
        assert!(load_balancer_name("1st", "ns", "web", "u").starts_with("a1st-ns-web-"));
        assert!(load_balancer_name("alpha", "ns", "web", "u").starts_with("alpha-ns-web-"));
        assert!(is_dns1035_label("a-1"));
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1035_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let mut value = "aé".to_owned();
        truncate(&mut value, 2);
        assert_eq!(value, "a");
    }
}
