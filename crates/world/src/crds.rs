use std::{
    path::{Path, PathBuf},
    sync::Once,
    time::Duration,
};

use futures::future::try_join_all;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::wait::{await_condition, conditions},
};
use serde::Deserialize;

use crate::{Error, Result, Role, error::KubeContext};

const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
const FIELD_MANAGER: &str = "gleaner-world";

/// Which Cluster API version the management cluster serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CapiVersion {
    /// Rancher 2.11 to 2.13 (CAPI v1.9 / v1.10).
    #[default]
    V1beta1,
    /// Rancher 2.14 (CAPI v1.12), where `v1beta2` is the storage version.
    V1beta2,
}

/// Where the foreign CRDs come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdSource {
    /// The real upstream manifests in `../shared/upstream/crds` (the given folder is `shared`).
    Upstream(PathBuf),
    /// The project's own reduced CRDs, for a clone without `../shared`: the fields gleaner and the
    /// simulators use, everything else preserved. They serve CAPI `v1beta1` only.
    Fallback,
}

impl CrdSource {
    /// `$GLEANER_SHARED_DIR`, else `../shared` beside the workspace; the fallback CRDs when
    /// neither holds the upstream manifests (said once per process).
    pub fn detect() -> Self {
        let shared = std::env::var_os("GLEANER_SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
        if shared.join("upstream/crds").is_dir() {
            return Self::Upstream(shared);
        }
        static WARNING: Once = Once::new();
        WARNING.call_once(|| {
            tracing::warn!(
                shared = %shared.display(),
                "upstream CRDs not found: the world uses gleaner's fallback CRDs, which check far less than the real schemas"
            );
        });
        Self::Fallback
    }

    /// The CRD manifest files a cluster of `role` gets.
    pub(crate) fn files(&self, role: Role, capi: CapiVersion) -> Result<Vec<PathBuf>> {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut files = match role {
            Role::Management => yaml_files(&project.join("rancher"))?,
            Role::Harvester => yaml_files(&project.join("harvester"))?,
            Role::Guest => Vec::new(),
        };
        match self {
            Self::Upstream(shared) => {
                let crds = shared.join("upstream/crds");
                for dir in upstream_dirs(role, capi) {
                    files.extend(yaml_files(&crds.join(dir))?);
                }
            }
            Self::Fallback => {
                if capi == CapiVersion::V1beta2 && role == Role::Management {
                    return Err(Error::FallbackV1beta2);
                }
                for file in yaml_files(&project.join("fallback"))? {
                    if fallback_groups(role).iter().any(|group| {
                        file.file_name().is_some_and(|name| {
                            name.to_string_lossy().ends_with(&format!(".{group}.yaml"))
                        })
                    }) {
                        files.push(file);
                    }
                }
            }
        }
        Ok(files)
    }
}

fn upstream_dirs(role: Role, capi: CapiVersion) -> &'static [&'static str] {
    match (role, capi) {
        (Role::Management, CapiVersion::V1beta1) => &["testenv", "original/rancher-v2.12.12"],
        (Role::Management, CapiVersion::V1beta2) => {
            &["testenv-v1beta2", "original/rancher-head-59bd052e44"]
        }
        (Role::Harvester, _) => &[
            "derived/kubevirt-v1.5.0",
            "original/external-snapshotter-v8.3.0",
            "original/load-balancer-harvester-v1.6.1",
            "original/networkfs-manager",
        ],
        (Role::Guest, _) => &["original/external-snapshotter-v8.3.0"],
    }
}

fn fallback_groups(role: Role) -> &'static [&'static str] {
    match role {
        Role::Management => &[
            "cluster.x-k8s.io",
            "provisioning.cattle.io",
            "rke.cattle.io",
        ],
        Role::Harvester => &[
            "kubevirt.io",
            "snapshot.storage.k8s.io",
            "loadbalancer.harvesterhci.io",
            "harvesterhci.io",
        ],
        Role::Guest => &["snapshot.storage.k8s.io"],
    }
}

pub(crate) fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|_| Error::NoCrds(dir.to_path_buf()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    if files.is_empty() {
        return Err(Error::NoCrds(dir.to_path_buf()));
    }
    files.sort();
    Ok(files)
}

/// One CRD per name: a later one replaces an earlier one, in the earlier one's place.
pub(crate) fn last_of_each_name(
    crds: Vec<CustomResourceDefinition>,
) -> Vec<CustomResourceDefinition> {
    let mut kept: Vec<CustomResourceDefinition> = Vec::with_capacity(crds.len());
    for crd in crds {
        match kept
            .iter_mut()
            .find(|existing| existing.metadata.name == crd.metadata.name)
        {
            Some(existing) => *existing = crd,
            None => kept.push(crd),
        }
    }
    kept
}

/// Every CRD in `files` (multi-document files allowed).
/// In a `v1beta2` world Cluster API's CRDs serve `v1beta2` alone. A release's own CRDs also
/// serve the deprecated `v1beta1`, which without the conversion webhook (clusterctl wires it, the
/// world does not) would hand out `v1beta2` data under the `v1beta1` name.
pub(crate) fn serve_only_v1beta2(crds: &mut [CustomResourceDefinition]) {
    for crd in crds
        .iter_mut()
        .filter(|crd| crd.spec.group.ends_with(".x-k8s.io"))
    {
        let versions = &mut crd.spec.versions;
        if versions.iter().any(|version| version.name == "v1beta2") {
            versions.retain(|version| version.name == "v1beta2");
            for version in versions.iter_mut() {
                version.served = true;
                version.storage = true;
            }
        }
    }
}

pub(crate) fn load(files: &[PathBuf]) -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("cannot read {}", path.display()),
            source,
        })?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let crd =
                Option::<CustomResourceDefinition>::deserialize(document).map_err(|source| {
                    Error::Yaml {
                        path: path.clone(),
                        source,
                    }
                })?;
            crds.extend(crd);
        }
    }
    Ok(crds)
}

/// Applies the CRDs (server-side, so a second install is a no-op) and waits until each is
/// established.
pub(crate) async fn install(client: &Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    try_join_all(crds.iter().map(|crd| {
        let api = api.clone();
        let params = params.clone();
        async move {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .context(|| format!("cannot install CRD {name}"))?;
            let established = await_condition(api, &name, conditions::is_crd_established());
            match tokio::time::timeout(ESTABLISHED_TIMEOUT, established).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(Error::CrdNotEstablished {
                    name,
                    reason: error.to_string(),
                }),
                Err(_) => Err(Error::CrdNotEstablished {
                    name,
                    reason: format!("not established after {}s", ESTABLISHED_TIMEOUT.as_secs()),
                }),
            }
        }
    }))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(group: &str, versions: &[(&str, bool, bool)]) -> CustomResourceDefinition {
        let versions: Vec<_> = versions
            .iter()
            .map(|(name, served, storage)| {
                serde_json::json!({"name": name, "served": served, "storage": storage})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("things.{group}")},
            "spec": {
                "group": group,
                "names": {"plural": "things", "kind": "Thing"},
                "scope": "Namespaced",
                "versions": versions,
            },
        }))
        .unwrap()
    }

    fn versions(crd: &CustomResourceDefinition) -> Vec<(&str, bool, bool)> {
        crd.spec
            .versions
            .iter()
            .map(|version| (version.name.as_str(), version.served, version.storage))
            .collect()
    }

    #[test]
    fn cluster_api_crds_keep_only_v1beta2_and_others_are_left_alone() {
        let mut crds = [
            crd(
                "cluster.x-k8s.io",
                &[
                    ("v1alpha4", false, false),
                    ("v1beta1", true, false),
                    ("v1beta2", true, true),
                ],
            ),
            crd("ipam.cluster.x-k8s.io", &[("v1alpha1", true, true)]),
            crd(
                "rke.cattle.io",
                &[("v1beta1", true, false), ("v1beta2", true, true)],
            ),
        ];
        serve_only_v1beta2(&mut crds);
        assert_eq!(versions(&crds[0]), [("v1beta2", true, true)]);
        assert_eq!(versions(&crds[1]), [("v1alpha1", true, true)]);
        assert_eq!(versions(&crds[2]).len(), 2);
    }
}
