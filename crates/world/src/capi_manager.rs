use std::path::{Path, PathBuf};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Error, Result,
    error::KubeContext,
    layout::write_file,
    pki::Pki,
    ports,
    process::{Process, ProcessSpec},
};

const FIELD_MANAGER: &str = "gleaner-world";
/// Where the Cluster API's webhook configurations are named in the world, as clusterctl
/// prefixes them.
const WEBHOOK_PREFIX: &str = "capi-";

/// The real Cluster API core manager of one management cluster.
pub(crate) struct CapiManager {
    pub(crate) process: Process,
    pub(crate) health_port: u16,
    webhook_port: u16,
    webhooks: PathBuf,
    ca_pem: String,
}

impl CapiManager {
    /// Writes the webhook server's certificate (127.0.0.1, from the world's CA) into `dir`.
    pub(crate) fn new(
        cluster: &str,
        binary: &Path,
        kubeconfig: &Path,
        pki: &Pki,
        dir: &Path,
        log: &Path,
    ) -> Result<Self> {
        let webhook_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let diagnostics_port = ports::free_port()?;
        let cert_dir = dir.join("capi-webhook-certs");
        std::fs::create_dir_all(&cert_dir).map_err(|source| Error::Io {
            context: format!("cannot create {}", cert_dir.display()),
            source,
        })?;
        let serving = pki.serving_cert(&format!("capi-webhook-{cluster}"))?;
        write_file(&cert_dir.join("tls.crt"), &serving.cert_pem)?;
        write_file(&cert_dir.join("tls.key"), &serving.key_pem)?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".into(),
            format!("--webhook-port={webhook_port}"),
            format!("--webhook-cert-dir={}", cert_dir.display()),
            format!("--health-addr=127.0.0.1:{health_port}"),
            format!("--diagnostics-address=127.0.0.1:{diagnostics_port}"),
            "--insecure-diagnostics=true".into(),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ];
        Ok(Self {
            process: Process::new(ProcessSpec {
                component: format!("capi-manager-{cluster}"),
                program: binary.to_path_buf(),
                args,
                log: log.to_path_buf(),
            }),
            health_port,
            webhook_port,
            webhooks: webhook_manifests(binary),
            ca_pem: pki.ca_pem().to_owned(),
        })
    }

    /// Registers the manager's mutating and validating webhooks (from its release's
    /// `config/webhook/manifests.yaml`) to call it on 127.0.0.1, trusting the world's CA.
    pub(crate) async fn register_webhooks(&self, client: &Client) -> Result<()> {
        let text = std::fs::read_to_string(&self.webhooks).map_err(|source| Error::Io {
            context: format!("cannot read {}", self.webhooks.display()),
            source,
        })?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for document in serde_norway::Deserializer::from_str(&text) {
            let mut value = Value::deserialize(document).map_err(|source| Error::Yaml {
                path: self.webhooks.clone(),
                source,
            })?;
            let Some(kind) = value["kind"].as_str().map(str::to_owned) else {
                continue;
            };
            for webhook in value["webhooks"].as_array_mut().into_iter().flatten() {
                let path = webhook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                webhook["clientConfig"] = json!({
                    "url": format!("https://127.0.0.1:{}{path}", self.webhook_port),
                    "caBundle": BASE64.encode(&self.ca_pem),
                });
            }
            let name = format!(
                "{WEBHOOK_PREFIX}{}",
                value["metadata"]["name"].as_str().unwrap_or_default()
            );
            value["metadata"]["name"] = json!(name);
            let configuration: DynamicObject =
                serde_json::from_value(value).map_err(|source| Error::Io {
                    context: format!("{} holds an invalid {kind}", self.webhooks.display()),
                    source: source.into(),
                })?;
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                &kind,
            ));
            Api::<DynamicObject>::all_with(client.clone(), &resource)
                .patch(&name, &params, &Patch::Apply(&configuration))
                .await
                .context(|| format!("cannot register the webhooks {name}"))?;
        }
        Ok(())
    }
}

/// The CRDs of the release the manager was built from, which `cargo xtask tools` copies beside
/// it (`config/crd/bases`).
pub(crate) fn crd_dir(binary: &Path) -> PathBuf {
    beside(binary).join("crds")
}

fn webhook_manifests(binary: &Path) -> PathBuf {
    beside(binary).join("webhooks.yaml")
}

fn beside(binary: &Path) -> PathBuf {
    binary.parent().map(Path::to_path_buf).unwrap_or_default()
}
