use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde::Deserialize;

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

/// Who plays Cluster API's core controllers on the management clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CapiControllers {
    /// The simulators' Cluster, MachineSet and Machine controllers, per namespace, where a
    /// test starts them.
    #[default]
    Sim,
    /// The real core manager ([`crate::CAPI_VERSION`], `v1beta1` only), one per management
    /// cluster, watching every namespace, with its admission webhooks served over TLS from the
    /// world's CA, and its own CRDs in place of the testenv ones.
    Real,
}

impl CapiControllers {
    /// `$GLEANER_WORLD_CAPI` (`real` or `sim`), else the simulators.
    pub fn from_env() -> Result<Self> {
        match std::env::var("GLEANER_WORLD_CAPI") {
            Ok(value) => value.parse(),
            Err(_) => Ok(Self::default()),
        }
    }
}

impl FromStr for CapiControllers {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "real" => Ok(Self::Real),
            "sim" => Ok(Self::Sim),
            other => Err(Error::InvalidOption {
                option: "capi",
                value: other.to_owned(),
                expected: "real or sim",
            }),
        }
    }
}

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
            let value = serde_json::Value::deserialize(document).map_err(|source| Error::Yaml {
                path: self.webhooks.clone(),
                source,
            })?;
            match value["kind"].as_str() {
                Some("MutatingWebhookConfiguration") => {
                    let mut configuration: MutatingWebhookConfiguration = self.parse(value)?;
                    for webhook in configuration.webhooks.iter_mut().flatten() {
                        self.point_at_manager(&mut webhook.client_config);
                    }
                    let name = self.rename(&mut configuration.metadata);
                    Api::<MutatingWebhookConfiguration>::all(client.clone())
                        .patch(&name, &params, &Patch::Apply(&configuration))
                        .await
                        .context(|| format!("cannot register webhooks {name}"))?;
                }
                Some("ValidatingWebhookConfiguration") => {
                    let mut configuration: ValidatingWebhookConfiguration = self.parse(value)?;
                    for webhook in configuration.webhooks.iter_mut().flatten() {
                        self.point_at_manager(&mut webhook.client_config);
                    }
                    let name = self.rename(&mut configuration.metadata);
                    Api::<ValidatingWebhookConfiguration>::all(client.clone())
                        .patch(&name, &params, &Patch::Apply(&configuration))
                        .await
                        .context(|| format!("cannot register webhooks {name}"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn parse<K: serde::de::DeserializeOwned>(&self, value: serde_json::Value) -> Result<K> {
        serde_json::from_value(value).map_err(|source| Error::Io {
            context: format!(
                "{} holds an invalid webhook configuration",
                self.webhooks.display()
            ),
            source: source.into(),
        })
    }

    fn rename(&self, metadata: &mut kube::api::ObjectMeta) -> String {
        let name = format!(
            "{WEBHOOK_PREFIX}{}",
            metadata.name.as_deref().unwrap_or_default()
        );
        metadata.name = Some(name.clone());
        name
    }

    fn point_at_manager(&self, config: &mut WebhookClientConfig) {
        let path = config
            .service
            .take()
            .and_then(|service| service.path)
            .unwrap_or_default();
        config.url = Some(format!("https://127.0.0.1:{}{path}", self.webhook_port));
        config.ca_bundle = Some(ByteString(self.ca_pem.clone().into_bytes()));
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
