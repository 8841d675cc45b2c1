//! Why a deleting Machine goes (design.md §1 and §5): the whole cluster is deleted, or it is a
//! scale-down or a reprovision whose guest volumes must survive, or gleaner cannot tell.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{ClusterIdentity, Deletion, LiveObservation, NotConfirmed, confirm_deletion};

/// Why a deleting Machine goes; serialized as exactly the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Reason {
    /// The cluster's deletion is confirmed: guest volumes may go.
    ClusterDeletion,
    /// Both Cluster objects live: a scale-down or a reprovision; guest volumes must survive.
    ScaleDown,
    /// Neither could be established; guest volumes must survive.
    Unknown,
}

impl Reason {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterDeletion => "ClusterDeletion",
            Self::ScaleDown => "ScaleDown",
            Self::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason {0:?}; expected ClusterDeletion, ScaleDown or Unknown")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [Self::ClusterDeletion, Self::ScaleDown, Self::Unknown]
            .into_iter()
            .find(|reason| reason.as_str() == value)
            .ok_or_else(|| UnknownReason(value.to_owned()))
    }
}

/// A [`Reason`] with what established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineReason {
    /// Why the Machine goes.
    pub reason: Reason,
    /// What the live read showed.
    pub explanation: Explanation,
}

/// What established a [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    /// The cluster's deletion is confirmed.
    DeletionConfirmed,
    /// The installation matches and both Cluster objects live with their recorded UIDs.
    ClustersLive,
    /// The deletion is not confirmed, and the Cluster objects do not both live: the installation
    /// is unknown or differs, or exactly one Cluster object is gone (the one not named here).
    Uncertain(NotConfirmed),
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeletionConfirmed => f.write_str("the cluster's deletion is confirmed"),
            Self::ClustersLive => f.write_str("both Cluster objects live with their recorded UIDs"),
            Self::Uncertain(
                why @ (NotConfirmed::ProvisioningClusterLives | NotConfirmed::CapiClusterLives),
            ) => write!(f, "{why}, but the other Cluster object is gone or deleting"),
            Self::Uncertain(why) => write!(f, "{why}"),
        }
    }
}

/// Decides why a deleting Machine of the recorded cluster goes, from a live read.
///
/// `ClusterDeletion` only when [`confirm_deletion`] confirms; `ScaleDown` when the installation
/// matches and both Cluster objects live with the recorded UIDs; `Unknown` otherwise.
pub fn machine_reason(recorded: &ClusterIdentity, live: &LiveObservation) -> MachineReason {
    let (reason, explanation) = match confirm_deletion(recorded, live) {
        Deletion::Confirmed => (Reason::ClusterDeletion, Explanation::DeletionConfirmed),
        Deletion::NotConfirmed(
            NotConfirmed::ProvisioningClusterLives | NotConfirmed::CapiClusterLives,
        ) if !live.provisioning.is_gone(&recorded.provisioning_uid)
            && !live.capi.is_gone(&recorded.capi_uid) =>
        {
            (Reason::ScaleDown, Explanation::ClustersLive)
        }
        Deletion::NotConfirmed(why) => (Reason::Unknown, Explanation::Uncertain(why)),
    };
    MachineReason {
        reason,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        ClusterObservation,
        testing::{INSTALL, deleting, identity, live, live_observation},
    };

    fn reason_of(
        install_uuid: Option<&str>,
        provisioning: ClusterObservation,
        capi: ClusterObservation,
    ) -> MachineReason {
        let live = LiveObservation {
            install_uuid: install_uuid.map(str::to_owned),
            provisioning,
            capi,
        };
        machine_reason(&identity(), &live)
    }

    #[test]
    fn reasons_serialize_as_their_names() {
        for (reason, name) in [
            (Reason::ClusterDeletion, "\"ClusterDeletion\""),
            (Reason::ScaleDown, "\"ScaleDown\""),
            (Reason::Unknown, "\"Unknown\""),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), name);
            assert_eq!(serde_json::from_str::<Reason>(name).unwrap(), reason);
            assert_eq!(name.trim_matches('"').parse::<Reason>(), Ok(reason));
        }
    }

    #[test]
    fn reason_names_are_case_sensitive() {
        assert_eq!(
            "scaledown".parse::<Reason>(),
            Err(UnknownReason("scaledown".into()))
        );
    }

    #[test]
    fn both_clusters_gone_is_cluster_deletion() {
        let decided = reason_of(
            Some(INSTALL),
            ClusterObservation::NotFound,
            deleting("capi-uid"),
        );
        assert_eq!(decided.reason, Reason::ClusterDeletion);
        assert_eq!(decided.explanation, Explanation::DeletionConfirmed);
    }

    #[test]
    fn both_clusters_live_is_scale_down() {
        let decided = reason_of(Some(INSTALL), live("prov-uid"), live("capi-uid"));
        assert_eq!(decided.reason, Reason::ScaleDown);
        assert_eq!(decided.explanation, Explanation::ClustersLive);
    }

    #[test]
    fn a_deleting_capi_cluster_with_a_living_provisioning_cluster_is_unknown() {
        let decided = reason_of(Some(INSTALL), live("prov-uid"), deleting("capi-uid"));
        assert_eq!(decided.reason, Reason::Unknown);
        assert_eq!(
            decided.explanation.to_string(),
            "the provisioning Cluster lives with its recorded UID, but the other Cluster object \
             is gone or deleting"
        );
    }

    #[test]
    fn a_re_created_capi_cluster_with_a_living_provisioning_cluster_is_unknown() {
        let decided = reason_of(Some(INSTALL), live("prov-uid"), live("capi-uid-new"));
        assert_eq!(decided.reason, Reason::Unknown);
    }

    #[test]
    fn an_unknown_installation_is_unknown_even_with_both_clusters_live() {
        let decided = reason_of(None, live("prov-uid"), live("capi-uid"));
        assert_eq!(decided.reason, Reason::Unknown);
        assert_eq!(
            decided.explanation,
            Explanation::Uncertain(NotConfirmed::InstallationUnknown)
        );
    }

    #[test]
    fn another_installation_is_unknown_even_with_both_clusters_gone() {
        let decided = reason_of(
            Some("other"),
            ClusterObservation::NotFound,
            ClusterObservation::NotFound,
        );
        assert_eq!(decided.reason, Reason::Unknown);
    }

    proptest! {
        #[test]
        fn cluster_deletion_only_when_deletion_is_confirmed(live in live_observation()) {
            let decided = machine_reason(&identity(), &live);
            prop_assert_eq!(
                decided.reason == Reason::ClusterDeletion,
                confirm_deletion(&identity(), &live) == Deletion::Confirmed
            );
        }

        #[test]
        fn scale_down_only_when_installation_matches_and_both_clusters_live(
            observed in live_observation(),
        ) {
            let decided = machine_reason(&identity(), &observed);
            let both_live = observed.install_uuid.as_deref() == Some(INSTALL)
                && observed.provisioning == live("prov-uid")
                && observed.capi == live("capi-uid");
            prop_assert_eq!(decided.reason == Reason::ScaleDown, both_live);
        }
    }
}
