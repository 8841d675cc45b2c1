//! Harvester's PVC validating admission webhook, really in the harvester apiserver's request
//! path: an HTTPS server on 127.0.0.1 with a certificate from the world's CA, and a
//! ValidatingWebhookConfiguration for PVC deletes in one namespace only, failing closed.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use axum_server::tls_rustls::RustlsConfig;
use gleaner_world::World;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{
            RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
            WebhookClientConfig,
        },
        core::v1::PersistentVolumeClaim,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::Deserialize;
use serde_json::json;

use super::{HarvesterVersion, PVC_WEBHOOK};
use crate::{
    Env, Error, Result,
    error::KubeContext,
    keys::{GOLDEN_IMAGE, IMAGE_ID},
    kinds::{self, virtual_machine_image},
    tasks::Tasks,
};

/// Whose deletes the webhook always lets through (the controller-manager runs with
/// `--use-service-account-credentials`).
const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
/// The image a golden-image PVC belongs to, as `namespace/name`.
const EXPORT_FROM_VOLUME: &str = "export-from-volume";
const PATH: &str = "/v1/webhook/validation/persistentvolumeclaims";
const FIELD_MANAGER: &str = "gleaner-sim-harvester";
/// A PVC of the namespace's own, deleted (dry run) until the webhook sees it: the proof that
/// the apiserver calls the webhook. Really deleted afterwards.
const PROBE_PVC: &str = "gleaner-sim-webhook-probe";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The running webhook of one namespace. Dropping it stops the server, after which the
/// apiserver refuses every PVC delete in that namespace (failing closed, as upstream) until
/// [`PvcWebhook::shutdown`] deletes the configuration.
pub struct PvcWebhook {
    client: Client,
    reviewer: Arc<Reviewer>,
    config_name: String,
    url: String,
    _server: Tasks,
}

impl PvcWebhook {
    pub(super) async fn start(
        world: &World,
        client: Client,
        namespace: &str,
        version: HarvesterVersion,
        env: Env,
    ) -> Result<Self> {
        let reviewer = Arc::new(Reviewer {
            client: client.clone(),
            version,
            env: env.clone(),
            down: AtomicBool::new(false),
            ambushes: Mutex::default(),
        });
        let (url, server) = serve(world, reviewer.clone()).await?;
        let webhook = Self {
            client,
            reviewer,
            config_name: format!("gleaner-sim-harvester-pvc-validator-{namespace}"),
            url,
            _server: server,
        };
        webhook.register(world.ca_pem(), namespace).await?;
        webhook.wait_until_called(namespace, &env).await?;
        Ok(webhook)
    }

    /// The name of the ValidatingWebhookConfiguration.
    pub fn config_name(&self) -> &str {
        &self.config_name
    }

    /// Where the apiserver sends its reviews.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Takes the webhook down (every review answered 503, so the apiserver, failing closed,
    /// refuses every PVC delete in the namespace with a 500 "failed calling webhook") or
    /// brings it back.
    pub fn set_down(&self, down: bool) {
        self.reviewer.down.store(down, Ordering::SeqCst);
        let state = if down { "down" } else { "back" };
        self.reviewer
            .env
            .journal
            .record(PVC_WEBHOOK, format!("the webhook is {state}"));
    }

    /// The race between a deleter's last read and its delete: when the delete of the PVC
    /// `namespace/claim` is next reviewed, someone has just created the living VM `vm`, which
    /// lists it as a volume, so the webhook refuses it (rule (c)).
    pub fn attach_before_delete(&self, namespace: &str, claim: &str, vm: &str) {
        self.reviewer
            .ambushes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((namespace.to_owned(), claim.to_owned()), vm.to_owned());
    }

    /// Deletes the webhook's configuration, then stops the server.
    pub async fn shutdown(self) -> Result<()> {
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        match configs
            .delete(&self.config_name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(error).context(|| format!("cannot delete {}", self.config_name)),
        }
    }

    async fn register(&self, ca_pem: &str, namespace: &str) -> Result<()> {
        let config = configuration(&self.config_name, &self.url, ca_pem, namespace);
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .patch(
                &self.config_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config),
            )
            .await
            .context(|| format!("cannot apply {}", self.config_name))?;
        Ok(())
    }

    /// The apiserver picks a new configuration up asynchronously; until a dry-run delete of the
    /// probe PVC reaches the server, the webhook is not in the request path yet.
    async fn wait_until_called(&self, namespace: &str, env: &Env) -> Result<()> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let probe: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": PROBE_PVC},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
        }))
        .map_err(|error| Error::Invalid(format!("the probe PVC: {error}")))?;
        match claims.create(&PostParams::default(), &probe).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error).context(|| format!("cannot create {PROBE_PVC}")),
        }
        let seen = format!("PVC {namespace}/{PROBE_PVC}");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("no review arrived");
        while env.journal.position(PVC_WEBHOOK, &seen).is_none() {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "the harvester apiserver never called the PVC webhook at {} ({last_error})",
                    self.url
                )));
            }
            if let Err(error) = claims
                .delete(PROBE_PVC, &DeleteParams::default().dry_run())
                .await
            {
                last_error = error.to_string();
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        self.remove_probe(&claims).await
    }

    /// Its own deadline: the PVC controller's finalizer decides when the probe goes, and a
    /// slow first review must not leave that no time.
    async fn remove_probe(&self, claims: &Api<PersistentVolumeClaim>) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        match claims.delete(PROBE_PVC, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
            Err(error) => return Err(error).context(|| format!("cannot delete {PROBE_PVC}")),
        }
        while let Some(probe) = claims
            .get_opt(PROBE_PVC)
            .await
            .context(|| format!("cannot read {PROBE_PVC}"))?
        {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "{PROBE_PVC} is still there, with finalizers {:?}",
                    probe.metadata.finalizers.unwrap_or_default()
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        Ok(())
    }
}

/// Starts the HTTPS server on a free port of 127.0.0.1; its URL and the task serving it.
async fn serve(world: &World, reviewer: Arc<Reviewer>) -> Result<(String, Tasks)> {
    let cert = world.serving_cert("gleaner-sim-harvester-pvc-webhook")?;
    let io_error = |context: &str| {
        let context = context.to_owned();
        move |source| Error::Io { context, source }
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error("cannot bind the PVC webhook to 127.0.0.1"))?;
    let address = listener
        .local_addr()
        .map_err(io_error("cannot read the PVC webhook's address"))?;
    let tls = RustlsConfig::from_pem(cert.cert_pem.into_bytes(), cert.key_pem.into_bytes())
        .await
        .map_err(io_error("cannot load the PVC webhook's certificate"))?;
    let server = axum_server::from_tcp_rustls(listener, tls)
        .map_err(io_error("cannot serve the PVC webhook"))?;
    let app = Router::new().route(PATH, post(review)).with_state(reviewer);
    let mut tasks = Tasks::default();
    tasks.spawn(async move {
        if let Err(error) = server.serve(app.into_make_service()).await {
            tracing::warn!(%error, "the PVC webhook server stopped");
        }
    });
    Ok((format!("https://{address}{PATH}"), tasks))
}

fn configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
    namespace: &str,
) -> ValidatingWebhookConfiguration {
    let strings = |values: &[&str]| Some(values.iter().map(|value| value.to_string()).collect());
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: format!("{namespace}.pvc-validator.harvesterhci.io"),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(url.to_owned()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: strings(&[""]),
                api_versions: strings(&["v1"]),
                operations: strings(&["DELETE"]),
                resources: strings(&["persistentvolumeclaims"]),
                scope: Some("Namespaced".to_owned()),
            }]),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            // Only this namespace: a configuration left behind by a dead test binary can block
            // nothing else.
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    namespace.to_owned(),
                )])),
                match_expressions: None,
            }),
            ..ValidatingWebhook::default()
        }]),
    }
}

#[derive(Deserialize)]
struct AdmissionReview {
    request: AdmissionRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    user_info: UserInfo,
    old_object: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

async fn review(
    State(reviewer): State<Arc<Reviewer>>,
    Json(review): Json<AdmissionReview>,
) -> Response {
    if reviewer.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the webhook is down").into_response();
    }
    let request = review.request;
    let refusal = reviewer.refusal(&request).await;
    reviewer.record(&request, refusal.as_ref());
    let response = match refusal {
        None => json!({"uid": request.uid, "allowed": true}),
        Some(refusal) => json!({
            "uid": request.uid,
            "allowed": false,
            "status": {"code": 422, "reason": "Invalid", "message": refusal.to_string()},
        }),
    };
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .into_response()
}

struct Reviewer {
    client: Client,
    version: HarvesterVersion,
    env: Env,
    /// Answering nothing but 503.
    down: AtomicBool,
    /// PVC (`namespace`, `name`) → the VM attached to it right before its delete is reviewed.
    ambushes: Mutex<BTreeMap<(String, String), String>>,
}

impl Reviewer {
    /// Why the delete is refused, if it is; what cannot be read refuses it (failing closed).
    async fn refusal(&self, request: &AdmissionRequest) -> Option<Refusal> {
        if request.user_info.username == GARBAGE_COLLECTOR {
            return None;
        }
        let pvc_path = format!("{}/{}", request.namespace, request.name);
        let unreviewable = |reason: String| {
            Some(Refusal::Unreviewable {
                pvc: pvc_path.clone(),
                reason,
            })
        };
        let Some(old_object) = &request.old_object else {
            return unreviewable("the review carries no PVC".to_owned());
        };
        let pvc = match PersistentVolumeClaim::deserialize(old_object) {
            Ok(pvc) => pvc,
            Err(error) => return unreviewable(error.to_string()),
        };
        if let Err(error) = self.spring_ambush(&request.namespace, &request.name).await {
            return unreviewable(error.to_string());
        }
        match Facts::read(&self.client, &request.namespace).await {
            Ok(facts) => refusal(&pvc, &facts, self.version),
            Err(error) => unreviewable(error.to_string()),
        }
    }

    /// Creates the VM waiting to attach the PVC, if one is.
    async fn spring_ambush(&self, namespace: &str, claim: &str) -> Result<()> {
        let vm = self
            .ambushes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(namespace.to_owned(), claim.to_owned()));
        let Some(vm) = vm else {
            return Ok(());
        };
        let attached: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": vm, "namespace": namespace},
            "spec": {
                "runStrategy": "Halted",
                "template": {"spec": {
                    "domain": {"devices": {"disks": [{"name": "data", "disk": {"bus": "virtio"}}]}},
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                }},
            },
        }))
        .expect("the attaching VM is a valid object");
        kinds::namespaced(&self.client, namespace, &kinds::virtual_machine())
            .create(&PostParams::default(), &attached)
            .await
            .context(|| format!("cannot create VM {namespace}/{vm}"))?;
        self.env.journal.record(
            PVC_WEBHOOK,
            format!("VM {namespace}/{vm} attached PVC {namespace}/{claim} just before its delete"),
        );
        Ok(())
    }

    fn record(&self, request: &AdmissionRequest, refusal: Option<&Refusal>) {
        let dry_run = if request.dry_run { " (dry run)" } else { "" };
        let verdict = match refusal {
            None => "allowed".to_owned(),
            Some(refusal) => format!("refused: {refusal}"),
        };
        self.env.journal.record(
            PVC_WEBHOOK,
            format!(
                "DELETE PVC {}/{} by {}{dry_run}: {verdict}",
                request.namespace, request.name, request.user_info.username
            ),
        );
    }
}

/// The live state a review reads: the VMs of the PVC's namespace and the images of every
/// namespace.
struct Facts {
    vms: Vec<DynamicObject>,
    images: Vec<DynamicObject>,
}

impl Facts {
    async fn read(client: &Client, namespace: &str) -> Result<Self> {
        let vms = kinds::namespaced(client, namespace, &kinds::virtual_machine())
            .list(&ListParams::default())
            .await
            .context(|| format!("cannot list VMs in {namespace}"))?
            .items;
        let images = Api::<DynamicObject>::all_with(client.clone(), &virtual_machine_image())
            .list(&ListParams::default())
            .await
            .context(|| "cannot list VirtualMachineImages".to_owned())?
            .items;
        Ok(Self { vms, images })
    }
}

/// Why Harvester refuses deleting a PVC (design.md §2, rules (a) to (d)).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    GoldenImage { pvc: String, image: String },
    ExportSource { pvc: String, image: String },
    AttachedToLiveVm { pvc: String, vm: String },
    OwnedByVm { pvc: String, vm: String, live: bool },
    Unreviewable { pvc: String, reason: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GoldenImage { pvc, image } => write!(
                f,
                "cannot delete PVC {pvc}: it is the golden image of VirtualMachineImage {image}, which still exists"
            ),
            Self::ExportSource { pvc, image } => write!(
                f,
                "cannot delete PVC {pvc}: VirtualMachineImage {image} is exported from it and not imported yet"
            ),
            Self::AttachedToLiveVm { pvc, vm } => write!(
                f,
                "cannot delete PVC {pvc}: it is attached to VM {vm}, which is not being deleted"
            ),
            Self::OwnedByVm { pvc, vm, live } => {
                write!(f, "cannot delete PVC {pvc}: it is owned by VM {vm}")?;
                if *live {
                    write!(f, ", which is not being deleted")?;
                }
                Ok(())
            }
            Self::Unreviewable { pvc, reason } => {
                write!(f, "cannot review deleting PVC {pvc}: {reason}")
            }
        }
    }
}

fn refusal(
    pvc: &PersistentVolumeClaim,
    facts: &Facts,
    version: HarvesterVersion,
) -> Option<Refusal> {
    let namespace = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let pvc_path = format!("{namespace}/{name}");
    if let Some(image) = golden_image(pvc, &facts.images) {
        return Some(Refusal::GoldenImage {
            pvc: pvc_path,
            image,
        });
    }
    if let Some(image) = exporting_image(&namespace, &name, &facts.images) {
        return Some(Refusal::ExportSource {
            pvc: pvc_path,
            image,
        });
    }
    if let Some(vm) = live_vm_attached_to(&name, &facts.vms) {
        return Some(Refusal::AttachedToLiveVm {
            pvc: pvc_path,
            vm: format!("{namespace}/{vm}"),
        });
    }
    owning_vm(pvc, &facts.vms, version).map(|(vm, live)| Refusal::OwnedByVm {
        pvc: pvc_path,
        vm: format!("{namespace}/{vm}"),
        live,
    })
}

/// (a) The image, as `namespace/name`, of a golden-image PVC whose image still exists.
fn golden_image(pvc: &PersistentVolumeClaim, images: &[DynamicObject]) -> Option<String> {
    let annotations = pvc.annotations();
    if annotations.get(GOLDEN_IMAGE).map(String::as_str) != Some("true") {
        return None;
    }
    let (namespace, name) = annotations.get(IMAGE_ID)?.split_once('/')?;
    images
        .iter()
        .any(|image| image.namespace().as_deref() == Some(namespace) && image.name_any() == name)
        .then(|| format!("{namespace}/{name}"))
}

/// (b) An image being exported from the PVC and not imported yet, as `namespace/name`.
fn exporting_image(namespace: &str, name: &str, images: &[DynamicObject]) -> Option<String> {
    images
        .iter()
        .find(|image| {
            let spec = &image.data["spec"];
            spec["sourceType"] == EXPORT_FROM_VOLUME
                && spec["pvcNamespace"] == namespace
                && spec["pvcName"] == name
                && !is_imported(image)
        })
        .map(|image| {
            format!(
                "{}/{}",
                image.namespace().unwrap_or_default(),
                image.name_any()
            )
        })
}

fn is_imported(image: &DynamicObject) -> bool {
    image.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Imported" && condition["status"] == "True")
}

/// (c) The VM, not being deleted, that lists the PVC as a `persistentVolumeClaim` volume.
fn live_vm_attached_to(claim: &str, vms: &[DynamicObject]) -> Option<String> {
    vms.iter()
        .find(|vm| {
            vm.metadata.deletion_timestamp.is_none() && claim_names(vm).any(|name| name == claim)
        })
        .map(ResourceExt::name_any)
}

fn claim_names(vm: &DynamicObject) -> impl Iterator<Item = &str> {
    vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| volume["persistentVolumeClaim"]["claimName"].as_str())
}

/// (d) The VM owning the PVC that forbids deleting it, and whether it is live: from v1.8 only
/// an existing VM (same uid) not being deleted; before, any VM owner reference.
fn owning_vm(
    pvc: &PersistentVolumeClaim,
    vms: &[DynamicObject],
    version: HarvesterVersion,
) -> Option<(String, bool)> {
    pvc.owner_references()
        .iter()
        .filter(|owner| owner.kind == "VirtualMachine")
        .find_map(|owner| {
            let live = vms.iter().any(|vm| {
                vm.name_any() == owner.name
                    && vm.metadata.uid.as_deref() == Some(owner.uid.as_str())
                    && vm.metadata.deletion_timestamp.is_none()
            });
            (live || !version.spares_pvcs_of_gone_vms()).then(|| (owner.name.clone(), live))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn pvc(value: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(value).unwrap()
    }

    fn vm(name: &str, deleting: bool, claims: &[&str]) -> DynamicObject {
        let volumes: Vec<_> = claims
            .iter()
            .map(|claim| json!({"name": claim, "persistentVolumeClaim": {"claimName": claim}}))
            .collect();
        let mut metadata = json!({"name": name, "namespace": "ns", "uid": format!("uid-{name}")});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        object(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": metadata,
            "spec": {"template": {"spec": {"volumes": volumes}}},
        }))
    }

    fn image(name: &str, spec: serde_json::Value, status: serde_json::Value) -> DynamicObject {
        object(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
            "metadata": {"name": name, "namespace": "images"}, "spec": spec, "status": status,
        }))
    }

    fn owned_by(owner: &str, uid: &str) -> PersistentVolumeClaim {
        pvc(
            json!({"metadata": {"name": "data", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": owner, "uid": uid},
            ]}}),
        )
    }

    fn facts(vms: Vec<DynamicObject>, images: Vec<DynamicObject>) -> Facts {
        Facts { vms, images }
    }

    #[test]
    fn a_plain_pvc_may_go() {
        let plain = pvc(json!({"metadata": {"name": "data", "namespace": "ns"}}));
        let facts = facts(vec![vm("other", false, &["other-disk"])], Vec::new());
        assert_eq!(refusal(&plain, &facts, HarvesterVersion::V1_8), None);
    }

    #[test]
    fn a_golden_image_stays_while_its_image_exists() {
        let golden = pvc(
            json!({"metadata": {"name": "data", "namespace": "ns", "annotations": {
                GOLDEN_IMAGE: "true", IMAGE_ID: "images/ubuntu",
            }}}),
        );
        let ubuntu = image("ubuntu", json!({"sourceType": "download"}), json!({}));
        let refused = refusal(
            &golden,
            &facts(Vec::new(), vec![ubuntu]),
            HarvesterVersion::V1_8,
        );
        assert_eq!(
            refused,
            Some(Refusal::GoldenImage {
                pvc: "ns/data".into(),
                image: "images/ubuntu".into()
            })
        );
        assert_eq!(
            refusal(
                &golden,
                &facts(Vec::new(), Vec::new()),
                HarvesterVersion::V1_8
            ),
            None
        );
    }

    #[test]
    fn an_export_source_stays_until_imported() {
        let source = pvc(json!({"metadata": {"name": "data", "namespace": "ns"}}));
        let spec =
            json!({"sourceType": EXPORT_FROM_VOLUME, "pvcNamespace": "ns", "pvcName": "data"});
        let exporting = image("export", spec.clone(), json!({}));
        let refused = refusal(
            &source,
            &facts(Vec::new(), vec![exporting]),
            HarvesterVersion::V1_8,
        );
        assert!(
            refused.unwrap().to_string().contains("images/export"),
            "names the image"
        );
        let imported = image(
            "export",
            spec,
            json!({"conditions": [{"type": "Imported", "status": "True"}]}),
        );
        assert_eq!(
            refusal(
                &source,
                &facts(Vec::new(), vec![imported]),
                HarvesterVersion::V1_8
            ),
            None
        );
    }

    #[test]
    fn an_attached_pvc_stays_until_its_vm_is_deleting() {
        let data = pvc(json!({"metadata": {"name": "data", "namespace": "ns"}}));
        let live = facts(vec![vm("node-1", false, &["disk", "data"])], Vec::new());
        assert_eq!(
            refusal(&data, &live, HarvesterVersion::V1_8),
            Some(Refusal::AttachedToLiveVm {
                pvc: "ns/data".into(),
                vm: "ns/node-1".into()
            })
        );
        let deleting = facts(vec![vm("node-1", true, &["disk", "data"])], Vec::new());
        assert_eq!(refusal(&data, &deleting, HarvesterVersion::V1_8), None);
    }

    #[test]
    fn an_owned_pvc_stays_while_its_owner_lives_and_before_v1_8_always() {
        let live = facts(vec![vm("node-1", false, &[])], Vec::new());
        let deleting = facts(vec![vm("node-1", true, &[])], Vec::new());
        let gone = facts(Vec::new(), Vec::new());
        let owned = owned_by("node-1", "uid-node-1");
        assert!(refusal(&owned, &live, HarvesterVersion::V1_8).is_some());
        assert_eq!(refusal(&owned, &deleting, HarvesterVersion::V1_8), None);
        assert_eq!(refusal(&owned, &gone, HarvesterVersion::V1_8), None);
        assert_eq!(
            refusal(
                &owned_by("node-1", "uid-of-a-former-node-1"),
                &live,
                HarvesterVersion::V1_8
            ),
            None
        );
        let before = refusal(&owned, &gone, HarvesterVersion::V1_7).unwrap();
        assert_eq!(
            before.to_string(),
            "cannot delete PVC ns/data: it is owned by VM ns/node-1"
        );
    }
}
