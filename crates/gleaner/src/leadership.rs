//! Leader election on a `coordination.k8s.io/v1` Lease: one replica writes, the others watch.
//!
//! Writers hold a [`watch::Receiver<bool>`] from [`Leadership::watch`] and check it before every
//! write (`*leader.borrow()`), or wait for it (`leader.wait_for(|leading| *leading)`).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{Error, Result, cli::LeaseArgs, metrics::Metrics};

/// This replica's part in the election. It renews the Lease while it leads; a standby takes
/// over at most one lease duration after the leader stops renewing. Dropping it (or
/// [`stop`](Leadership::stop)) gives the Lease up.
pub struct Leadership {
    state: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Joins the election on the Lease `lease.lease_name` in `namespace` (created if missing)
    /// as `identity`; the `gleaner_leader` gauge of `metrics` follows the outcome.
    pub async fn start(
        client: Client,
        namespace: &str,
        lease: &LeaseArgs,
        identity: String,
        metrics: Metrics,
    ) -> Result<Self> {
        let (duration, grace) = timings(lease.lease_duration);
        let manager = LeaseManagerBuilder::new(client, &lease.lease_name)
            .with_namespace(namespace)
            .with_identity(identity.clone())
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await
            .map_err(|source| Error::Lease {
                namespace: namespace.to_owned(),
                name: lease.lease_name.clone(),
                source,
            })?;
        let (mut lease_state, manager) = manager.watch().await;
        let (sender, state) = watch::channel(false);
        let (stop, mut stopped) = oneshot::channel();
        let lease_name = format!("{namespace}/{}", lease.lease_name);
        let task = tokio::spawn(async move {
            loop {
                let leading = *lease_state.borrow_and_update();
                if sender.send_replace(leading) != leading {
                    tracing::info!(lease = %lease_name, %identity, leading, "leadership changed");
                }
                metrics.leader(leading);
                tokio::select! {
                    // Stopped, or the handle dropped.
                    _ = &mut stopped => break,
                    changed = lease_state.changed() => if changed.is_err() { break },
                }
            }
            // Writers stop before the Lease is given up, never after.
            sender.send_replace(false);
            metrics.leader(false);
            // Closing the channel makes the manager release the Lease if it holds it.
            drop(lease_state);
            match manager.await {
                Ok(Ok(_)) => tracing::info!(lease = %lease_name, %identity, "left the election"),
                Ok(Err(error)) => {
                    tracing::warn!(lease = %lease_name, %error, "cannot release the Lease")
                }
                Err(error) => tracing::warn!(lease = %lease_name, %error, "Lease manager failed"),
            }
        });
        Ok(Self { state, stop, task })
    }

    /// Whether this replica holds the Lease now.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// A receiver that follows leadership, for writers to gate on (`changed()`, `wait_for`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Leaves the election: writers see `false` first, then the Lease is released if held.
    pub async fn stop(self) {
        let Self { stop, task, .. } = self;
        // An error means the task has ended already, which is what we want.
        let _ = stop.send(());
        if let Err(error) = task.await {
            tracing::warn!(%error, "leadership task failed");
        }
    }
}

/// The lease duration and the grace before expiry at which the holder renews, in seconds.
/// [`crate::cli`] guarantees at least two whole seconds, so `0 < grace < duration`.
fn timings(lease_duration: Duration) -> (u64, u64) {
    let duration = lease_duration.as_secs().max(2);
    (duration, (duration / 3).max(1))
}

/// This replica's identity in the Lease: the pod name (`POD_NAME`, from the downward API), else
/// `<hostname>-<pid>`.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|pod| !pod.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "gleaner".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_always_shorter_than_the_lease() {
        assert_eq!(timings(Duration::from_secs(2)), (2, 1));
        assert_eq!(timings(Duration::from_secs(15)), (15, 5));
        assert_eq!(timings(Duration::from_secs(0)), (2, 1));
    }

    #[test]
    fn identity_names_this_process() {
        let identity = identity();
        assert!(!identity.is_empty());
        if std::env::var_os("POD_NAME").is_none() {
            assert!(
                identity.ends_with(&format!("-{}", std::process::id())),
                "{identity}"
            );
        }
    }
}
