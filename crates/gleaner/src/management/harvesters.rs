//! The Harvesters gleaner reaches, one per cloud credential.
//!
//! A client per credential is built from the Secret's kubeconfig and rebuilt when the Secret
//! changes. Harvesters come and go at run time, so each one a Footprint names gets a watch task
//! of its own: it follows the node driver's VMs into a shared index, keeps the Harvester's health
//! and tells the Footprint controller what changed. A task retires once no Footprint has asked
//! for its Harvester for a while. Secrets are read one by one by name, never listed; no
//! credential, token or kubeconfig is ever logged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    Error, Result,
    metrics::{HarvesterState, Metrics},
};

/// The Secret key Rancher keeps a Harvester cloud credential's kubeconfig under.
const KUBECONFIG_KEY: &str = "harvestercredentialConfig-kubeconfigContent";
/// Only the VMs the node driver made are guest nodes.
const DRIVER_VMS: &str = "harvesterhci.io/creator=docker-machine-driver-harvester";
/// How often a watch task reads its Secret again (one GET by name).
const SECRET_RECHECK: Duration = Duration::from_secs(10);
/// How soon a task whose credential cannot be used tries again.
const RETRY: Duration = Duration::from_secs(5);
/// A watch no Footprint asked for in this long stops. Footprints are looked at every 30 s.
const RETIRE_AFTER: Duration = Duration::from_secs(120);

pub fn virtual_machine() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// How gleaner's watch on one Harvester fares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Listing for the first time.
    Syncing,
    Reachable,
    /// The credential is unusable or the Harvester does not answer; `problem` says which
    /// (error messages, never the credential's content).
    Unreachable {
        problem: String,
    },
}

impl Health {
    fn state(&self) -> HarvesterState {
        match self {
            Health::Syncing => HarvesterState::Syncing,
            Health::Reachable => HarvesterState::Reachable,
            Health::Unreachable { .. } => HarvesterState::Unreachable,
        }
    }
}

/// What the index knows of one VM.
#[derive(Clone, Debug)]
pub enum VmLookup {
    /// The Harvester's watch is not synced and reachable: nothing can be said.
    Unknown,
    Absent,
    Present(Arc<DynamicObject>),
}

/// Something a Footprint may have to look at again: a VM changed in `namespace` of the
/// Harvester, or (`namespace: None`) the Harvester's health did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub credential: String,
    pub namespace: Option<String>,
}

struct Watched {
    vms: Store<DynamicObject>,
    health: Health,
    wanted: Instant,
    task: AbortHandle,
}

pub struct Harvesters {
    management: Client,
    metrics: Metrics,
    clients: Mutex<HashMap<String, (String, Client)>>,
    watched: Mutex<HashMap<String, Watched>>,
    changed: mpsc::UnboundedSender<Change>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Harvesters {
    pub fn new(management: Client, metrics: Metrics) -> Self {
        let (changed, changes) = mpsc::unbounded_channel();
        Self {
            management,
            metrics,
            clients: Mutex::default(),
            watched: Mutex::default(),
            changed,
            changes: Mutex::new(Some(changes)),
        }
    }

    /// The stream of changes, for the one controller that follows them.
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        lock(&self.changes).take()
    }

    /// A client for the Harvester the credential `namespace:name` reaches. The Secret is read
    /// live each time (one GET by name); the client is rebuilt only when its resourceVersion
    /// changed.
    pub async fn client(&self, credential: &str) -> Result<Client> {
        Ok(self.versioned_client(credential).await?.1)
    }

    async fn versioned_client(&self, credential: &str) -> Result<(String, Client)> {
        let (namespace, name) = credential
            .split_once(':')
            .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
            .ok_or_else(|| Error::Credential {
                credential: credential.to_owned(),
                problem: "is not of the form namespace:name".into(),
            })?;
        let secret = Api::<Secret>::namespaced(self.management.clone(), namespace)
            .get(name)
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot read cloud credential {credential}"),
                source,
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some((cached_version, client)) = lock(&self.clients).get(credential)
            && *cached_version == version
        {
            return Ok((version, client.clone()));
        }
        let client = build(credential, &secret).await?;
        lock(&self.clients).insert(credential.to_owned(), (version.clone(), client.clone()));
        Ok((version, client))
    }

    /// Makes sure the Harvester of `credential` is watched, and keeps its watch from retiring.
    pub fn watch(self: &Arc<Self>, credential: &str) {
        let mut watched = lock(&self.watched);
        if let Some(entry) = watched.get_mut(credential) {
            entry.wanted = Instant::now();
            return;
        }
        let writer = Writer::new(virtual_machine());
        let vms = writer.as_reader();
        let task = tokio::spawn(self.clone().follow(credential.to_owned(), writer));
        watched.insert(
            credential.to_owned(),
            Watched {
                vms,
                health: Health::Syncing,
                wanted: Instant::now(),
                task: task.abort_handle(),
            },
        );
        drop(watched);
        tracing::info!(%credential, "watching a Harvester");
        self.report();
    }

    pub fn health(&self, credential: &str) -> Health {
        lock(&self.watched)
            .get(credential)
            .map_or(Health::Syncing, |entry| entry.health.clone())
    }

    pub fn vm(&self, credential: &str, namespace: &str, name: &str) -> VmLookup {
        let watched = lock(&self.watched);
        let Some(entry) = watched.get(credential) else {
            return VmLookup::Unknown;
        };
        if entry.health != Health::Reachable {
            return VmLookup::Unknown;
        }
        match entry
            .vms
            .get(&ObjectRef::new_with(name, virtual_machine()).within(namespace))
        {
            Some(vm) => VmLookup::Present(vm),
            None => VmLookup::Absent,
        }
    }

    /// One Harvester's watch, until it retires: follows the VMs with the credential's current
    /// client, and starts again with a new one when the Secret changes.
    async fn follow(self: Arc<Self>, credential: String, mut writer: Writer<DynamicObject>) {
        loop {
            if self.retire_if_unwanted(&credential) {
                return;
            }
            let (version, client) = match self.versioned_client(&credential).await {
                Ok(versioned) => versioned,
                Err(error) => {
                    self.set_health(
                        &credential,
                        Health::Unreachable {
                            problem: error.to_string(),
                        },
                    );
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let vms = Api::<DynamicObject>::all_with(client, &virtual_machine());
            let mut events = std::pin::pin!(
                watcher(vms, watcher::Config::default().labels(DRIVER_VMS))
                    .default_backoff()
                    .modify(|vm| vm.managed_fields_mut().clear())
            );
            let mut recheck = tokio::time::interval(SECRET_RECHECK);
            recheck.tick().await;
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => self.apply(&credential, &mut writer, &event),
                        Some(Err(error)) => self.set_health(&credential, Health::Unreachable {
                            problem: error.to_string(),
                        }),
                        None => break,
                    },
                    _ = recheck.tick() => {
                        if self.retire_if_unwanted(&credential) {
                            return;
                        }
                        match self.versioned_client(&credential).await {
                            Ok((now, _)) if now == version => {}
                            Ok(_) => {
                                tracing::info!(%credential, "cloud credential changed: watching again");
                                break;
                            }
                            Err(error) => {
                                self.set_health(&credential, Health::Unreachable {
                                    problem: error.to_string(),
                                });
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies a watch event to the index, and tells the Footprints when a VM came, went or
    /// changed what gleaner records of it (a VM's status changes often and matters not).
    fn apply(
        &self,
        credential: &str,
        writer: &mut Writer<DynamicObject>,
        event: &watcher::Event<DynamicObject>,
    ) {
        let changed = match event {
            watcher::Event::Apply(vm) => {
                let before = writer
                    .as_reader()
                    .get(&ObjectRef::from_obj_with(vm, virtual_machine()));
                before.is_none_or(|before| !same_record(&before, vm))
            }
            watcher::Event::Delete(_) => true,
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => false,
        };
        writer.apply_watcher_event(event);
        match event {
            watcher::Event::InitDone => self.set_health(credential, Health::Reachable),
            watcher::Event::Apply(vm) | watcher::Event::Delete(vm) => {
                self.set_health(credential, Health::Reachable);
                if changed {
                    self.notify(credential, vm.namespace());
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    fn set_health(&self, credential: &str, health: Health) {
        let mut watched = lock(&self.watched);
        let Some(entry) = watched.get_mut(credential) else {
            return;
        };
        if entry.health == health {
            return;
        }
        if let Health::Unreachable { problem } = &health {
            tracing::warn!(%credential, %problem, "Harvester unreachable");
        } else {
            tracing::info!(%credential, ?health, "Harvester");
        }
        let changed_state = entry.health.state() != health.state();
        entry.health = health;
        drop(watched);
        if changed_state {
            self.notify(credential, None);
            self.report();
        }
    }

    fn notify(&self, credential: &str, namespace: Option<String>) {
        // The receiver lives as long as the controllers; once they stop nobody needs to know.
        let _ = self.changed.send(Change {
            credential: credential.to_owned(),
            namespace,
        });
    }

    /// Removes the entry of a Harvester no Footprint asked for lately; `true` if it did.
    fn retire_if_unwanted(&self, credential: &str) -> bool {
        let mut watched = lock(&self.watched);
        let unwanted = watched
            .get(credential)
            .is_none_or(|entry| entry.wanted.elapsed() > RETIRE_AFTER);
        if unwanted {
            watched.remove(credential);
            drop(watched);
            tracing::info!(%credential, "no Footprint needs this Harvester: its watch stops");
            self.report();
        }
        unwanted
    }

    fn report(&self) {
        let states: Vec<HarvesterState> = lock(&self.watched)
            .values()
            .map(|entry| entry.health.state())
            .collect();
        self.metrics.harvesters(states);
    }
}

impl Drop for Harvesters {
    fn drop(&mut self) {
        for entry in lock(&self.watched).values() {
            entry.task.abort();
        }
    }
}

/// Whether two versions of a VM look the same to a Footprint: same UID, annotations and
/// deletion state.
fn same_record(before: &DynamicObject, after: &DynamicObject) -> bool {
    before.metadata.uid == after.metadata.uid
        && before.metadata.annotations == after.metadata.annotations
        && before.metadata.deletion_timestamp.is_some()
            == after.metadata.deletion_timestamp.is_some()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn build(credential: &str, secret: &Secret) -> Result<Client> {
    let problem = |problem: &str| Error::Credential {
        credential: credential.to_owned(),
        problem: problem.to_owned(),
    };
    let content = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .ok_or_else(|| problem(&format!("has no {KUBECONFIG_KEY}")))?;
    let text = std::str::from_utf8(&content.0)
        .map_err(|_| problem("holds a kubeconfig that is not UTF-8"))?;
    // The parser's messages can quote the input; say only that it failed, never what it read.
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| problem("holds a kubeconfig that does not parse"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| problem("holds a kubeconfig without a usable cluster, user and context"))?;
    Client::try_from(config)
        .map_err(|_| problem("holds a kubeconfig kube cannot build a client from"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uid_annotations_and_deletion_make_a_vm_change_worth_telling() {
        let mut before = DynamicObject::new("vm", &virtual_machine());
        before.metadata.uid = Some("u1".into());
        let mut status_only = before.clone();
        status_only.data = serde_json::json!({"status": {"ready": true}});
        assert!(same_record(&before, &status_only));
        let mut annotated = before.clone();
        annotated
            .annotations_mut()
            .insert("gleaner.io/intent".into(), "{}".into());
        assert!(!same_record(&before, &annotated));
        let mut recreated = before.clone();
        recreated.metadata.uid = Some("u2".into());
        assert!(!same_record(&before, &recreated));
        let mut deleting = before.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!same_record(&before, &deleting));
    }
}
