//! When a guest cluster's deletion counts as confirmed (design.md §5, safety rule 1).

use std::fmt;

use crate::ClusterIdentity;

/// What a live read (never a cache) showed for one Cluster object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterObservation {
    /// The object does not exist.
    NotFound,
    /// The object exists.
    Found {
        /// Its UID.
        uid: String,
        /// Whether it carries a deletionTimestamp.
        deleting: bool,
    },
}

impl ClusterObservation {
    /// Whether the recorded cluster is gone as far as this object shows: NotFound, replaced by
    /// an object with a different UID, or deleting with the recorded UID.
    pub fn is_gone(&self, recorded_uid: &str) -> bool {
        match self {
            Self::NotFound => true,
            Self::Found { uid, deleting } => uid != recorded_uid || *deleting,
        }
    }
}

/// One live read of the facts that confirm a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObservation {
    /// The Rancher installation UUID read now, `None` when it could not be read.
    pub install_uuid: Option<String>,
    /// The `provisioning.cattle.io` Cluster with the recorded namespace and name.
    pub provisioning: ClusterObservation,
    /// The `cluster.x-k8s.io` Cluster with the recorded namespace and name.
    pub capi: ClusterObservation,
}

/// Whether a cluster's deletion is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The installation matches and both Cluster objects are gone.
    Confirmed,
    /// The deletion is not confirmed, for the first reason found.
    NotConfirmed(NotConfirmed),
}

/// Why a deletion is not confirmed; the installation is checked first, then the provisioning
/// Cluster, then the CAPI Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotConfirmed {
    /// The live installation UUID could not be read.
    InstallationUnknown,
    /// The live installation UUID is not the recorded one.
    InstallationDiffers {
        /// The UUID in the Footprint.
        recorded: String,
        /// The UUID read now.
        observed: String,
    },
    /// The provisioning Cluster exists with the recorded UID and is not deleting.
    ProvisioningClusterLives,
    /// The CAPI Cluster exists with the recorded UID and is not deleting.
    CapiClusterLives,
}

impl fmt::Display for NotConfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InstallationUnknown => f.write_str("the Rancher installation UUID is unknown"),
            Self::InstallationDiffers { recorded, observed } => write!(
                f,
                "the Rancher installation UUID is {observed}, not the recorded {recorded}"
            ),
            Self::ProvisioningClusterLives => {
                f.write_str("the provisioning Cluster lives with its recorded UID")
            }
            Self::CapiClusterLives => f.write_str("the CAPI Cluster lives with its recorded UID"),
        }
    }
}

/// Confirms a cluster's deletion from a live read: the same installation UUID as recorded, and
/// each Cluster object NotFound, with a different UID, or deleting with the recorded UID.
pub fn confirm_deletion(recorded: &ClusterIdentity, live: &LiveObservation) -> Deletion {
    let reason = match live.install_uuid.as_deref() {
        None => Some(NotConfirmed::InstallationUnknown),
        Some(observed) if observed != recorded.install_uuid => {
            Some(NotConfirmed::InstallationDiffers {
                recorded: recorded.install_uuid.clone(),
                observed: observed.to_owned(),
            })
        }
        Some(_) if !live.provisioning.is_gone(&recorded.provisioning_uid) => {
            Some(NotConfirmed::ProvisioningClusterLives)
        }
        Some(_) if !live.capi.is_gone(&recorded.capi_uid) => Some(NotConfirmed::CapiClusterLives),
        Some(_) => None,
    };
    reason.map_or(Deletion::Confirmed, Deletion::NotConfirmed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::{
        INSTALL, deleting, identity, live, live_observation, observation, other_install,
    };

    fn observe(provisioning: ClusterObservation, capi: ClusterObservation) -> LiveObservation {
        LiveObservation {
            install_uuid: Some(INSTALL.into()),
            provisioning,
            capi,
        }
    }

    #[test]
    fn both_clusters_not_found_confirms() {
        let live = observe(ClusterObservation::NotFound, ClusterObservation::NotFound);
        assert_eq!(confirm_deletion(&identity(), &live), Deletion::Confirmed);
    }

    #[test]
    fn both_clusters_deleting_with_recorded_uids_confirms() {
        let live = observe(deleting("prov-uid"), deleting("capi-uid"));
        assert_eq!(confirm_deletion(&identity(), &live), Deletion::Confirmed);
    }

    #[test]
    fn a_re_created_same_name_cluster_counts_as_gone() {
        let live = observe(live("prov-uid-new"), live("capi-uid-new"));
        assert_eq!(confirm_deletion(&identity(), &live), Deletion::Confirmed);
    }

    #[test]
    fn a_re_created_provisioning_cluster_with_the_old_capi_cluster_deleting_confirms() {
        let live = observe(live("prov-uid-new"), deleting("capi-uid"));
        assert_eq!(confirm_deletion(&identity(), &live), Deletion::Confirmed);
    }

    #[test]
    fn a_living_provisioning_cluster_blocks() {
        let live = observe(live("prov-uid"), ClusterObservation::NotFound);
        assert_eq!(
            confirm_deletion(&identity(), &live),
            Deletion::NotConfirmed(NotConfirmed::ProvisioningClusterLives)
        );
    }

    #[test]
    fn a_living_capi_cluster_blocks() {
        let live = observe(deleting("prov-uid"), live("capi-uid"));
        assert_eq!(
            confirm_deletion(&identity(), &live),
            Deletion::NotConfirmed(NotConfirmed::CapiClusterLives)
        );
    }

    #[test]
    fn an_unknown_installation_blocks() {
        let live = LiveObservation {
            install_uuid: None,
            ..observe(ClusterObservation::NotFound, ClusterObservation::NotFound)
        };
        assert_eq!(
            confirm_deletion(&identity(), &live),
            Deletion::NotConfirmed(NotConfirmed::InstallationUnknown)
        );
    }

    #[test]
    fn another_installation_blocks_and_names_both_uuids() {
        let live = LiveObservation {
            install_uuid: Some("other-install".into()),
            ..observe(ClusterObservation::NotFound, ClusterObservation::NotFound)
        };
        let Deletion::NotConfirmed(reason) = confirm_deletion(&identity(), &live) else {
            panic!("confirmed on another installation");
        };
        assert_eq!(
            reason.to_string(),
            format!("the Rancher installation UUID is other-install, not the recorded {INSTALL}")
        );
    }

    proptest! {
        #[test]
        fn confirmed_exactly_when_installation_matches_and_both_clusters_are_gone(
            live in live_observation(),
        ) {
            let recorded = identity();
            let gone = |observed: &ClusterObservation, uid: &str| match observed {
                ClusterObservation::NotFound => true,
                ClusterObservation::Found { uid: found, deleting } => found != uid || *deleting,
            };
            let expected = live.install_uuid.as_deref() == Some(INSTALL)
                && gone(&live.provisioning, "prov-uid")
                && gone(&live.capi, "capi-uid");
            prop_assert_eq!(confirm_deletion(&recorded, &live) == Deletion::Confirmed, expected);
        }

        #[test]
        fn another_or_unknown_installation_never_confirms(
            install in other_install(),
            provisioning in observation("prov-uid"),
            capi in observation("capi-uid"),
        ) {
            let live = LiveObservation { install_uuid: install, provisioning, capi };
            prop_assert_ne!(confirm_deletion(&identity(), &live), Deletion::Confirmed);
        }
    }
}
