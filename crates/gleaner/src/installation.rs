//! One gleaner installation per Rancher. Two installations (or a dry-run one beside a real one)
//! watching the same Rancher namespaces would share the hook key and remove each other's hooks,
//! so each marks its Lease with the namespaces it watches, and a new one refuses to start while
//! another installation whose namespaces overlap its own holds its Lease.

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{Error, Result, cli::WatchArgs};

/// The label on gleaner's Lease; its value is the installation's namespace.
const INSTALLATION_LABEL: &str = "gleaner.io/installation";
/// The annotation on gleaner's Lease: the Rancher namespaces it watches, comma-separated, or
/// [`EVERY_NAMESPACE`].
const WATCHES_ANNOTATION: &str = "gleaner.io/watch-namespaces";
const EVERY_NAMESPACE: &str = "*";

/// Fails with [`Error::AnotherInstallation`] if a gleaner Lease outside `namespace`, of an
/// installation watching a namespace this one watches too, is held now. Replicas of this
/// installation share `namespace`, so they never count.
pub async fn refuse_another(client: &Client, namespace: &str, watch: &WatchArgs) -> Result<()> {
    let leases: Api<Lease> = Api::all(client.clone());
    let listed = match leases
        .list(&ListParams::default().labels(INSTALLATION_LABEL))
        .await
    {
        Ok(listed) => listed,
        Err(error) => {
            // Narrower RBAC must not keep gleaner from starting; say what was not checked.
            tracing::warn!(%error, "cannot list Leases to look for another gleaner installation");
            return Ok(());
        }
    };
    let now = Timestamp::now();
    match listed
        .items
        .iter()
        .filter(|lease| lease.namespace().as_deref() != Some(namespace))
        .filter(|lease| {
            let theirs = lease
                .annotations()
                .get(WATCHES_ANNOTATION)
                .map_or(EVERY_NAMESPACE, String::as_str);
            overlap(&watched(watch), theirs)
        })
        .find_map(|lease| held_by(lease, now).map(|holder| (lease, holder)))
    {
        Some((lease, holder)) => Err(Error::AnotherInstallation {
            namespace: lease.namespace().unwrap_or_default(),
            name: lease.name_any(),
            holder,
        }),
        None => Ok(()),
    }
}

/// Labels this installation's Lease so that another installation finds it.
pub async fn mark(client: &Client, namespace: &str, lease: &str, watch: &WatchArgs) -> Result<()> {
    let patch = json!({"metadata": {
        "labels": {INSTALLATION_LABEL: namespace},
        "annotations": {WATCHES_ANNOTATION: watched(watch)},
    }});
    Api::<Lease>::namespaced(client.clone(), namespace)
        .patch(lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot label Lease {namespace}/{lease}"),
            source,
        })?;
    Ok(())
}

fn watched(watch: &WatchArgs) -> String {
    if watch.watch_namespaces.is_empty() {
        EVERY_NAMESPACE.to_owned()
    } else {
        watch.watch_namespaces.join(",")
    }
}

/// Whether two installations' watched namespaces (as in [`WATCHES_ANNOTATION`]) share one.
fn overlap(ours: &str, theirs: &str) -> bool {
    ours == EVERY_NAMESPACE
        || theirs == EVERY_NAMESPACE
        || ours
            .split(',')
            .any(|namespace| theirs.split(',').any(|other| other == namespace))
}

/// The holder of a Lease whose claim has not expired at `now`.
fn held_by(lease: &Lease, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec
        .holder_identity
        .clone()
        .filter(|holder| !holder.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or_default());
    let expires = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
        .ok()?;
    (expires > now).then_some(holder)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::SignedDuration,
    };

    use super::*;

    fn lease(holder: Option<&str>, renewed_ago: i64, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(MicroTime(
                    Timestamp::now() - SignedDuration::from_secs(renewed_ago),
                )),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn installations_conflict_only_when_their_namespaces_overlap() {
        assert!(overlap("*", "fleet-a"));
        assert!(overlap("fleet-a", "*"));
        assert!(overlap("fleet-a,fleet-b", "fleet-c,fleet-b"));
        assert!(!overlap("fleet-a", "fleet-b"));
        assert!(!overlap("fleet-a", "fleet-ab"));
    }

    #[test]
    fn a_lease_counts_only_while_its_claim_lasts() {
        let now = Timestamp::now();
        assert_eq!(held_by(&lease(Some("a"), 1, 15), now).as_deref(), Some("a"));
        assert_eq!(held_by(&lease(Some("a"), 20, 15), now), None);
        assert_eq!(held_by(&lease(None, 1, 15), now), None);
        assert_eq!(held_by(&lease(Some(""), 1, 15), now), None);
        assert_eq!(held_by(&Lease::default(), now), None);
    }
}
