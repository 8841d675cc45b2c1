//! Fixtures and proptest strategies shared by the unit tests.

use proptest::prelude::*;

use crate::{ClusterIdentity, ClusterObservation, LiveObservation};

/// The recorded installation UUID of [`identity`].
pub const INSTALL: &str = "install-uuid";

/// A recorded identity with UIDs `prov-uid` and `capi-uid`.
pub fn identity() -> ClusterIdentity {
    ClusterIdentity {
        install_uuid: INSTALL.into(),
        namespace: "fleet-default".into(),
        name: "gc31".into(),
        provisioning_uid: "prov-uid".into(),
        capi_uid: "capi-uid".into(),
    }
}

/// A Cluster object that exists and is not deleting.
pub fn live(uid: &str) -> ClusterObservation {
    ClusterObservation::Found {
        uid: uid.into(),
        deleting: false,
    }
}

/// A Cluster object that exists and is deleting.
pub fn deleting(uid: &str) -> ClusterObservation {
    ClusterObservation::Found {
        uid: uid.into(),
        deleting: true,
    }
}

/// Any observation of a Cluster object, biased towards the recorded UID.
pub fn observation(recorded_uid: &'static str) -> impl Strategy<Value = ClusterObservation> {
    let uid = prop_oneof![3 => Just(recorded_uid.to_owned()), 1 => "[a-z-]{1,12}"];
    prop_oneof![
        Just(ClusterObservation::NotFound),
        (uid, any::<bool>())
            .prop_map(|(uid, deleting)| ClusterObservation::Found { uid, deleting }),
    ]
}

/// An installation UUID that is not the recorded one, or unknown.
pub fn other_install() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z-]{0,12}".prop_filter("not the recorded UUID", |u| u != INSTALL))
}

/// Any live observation of [`identity`]'s cluster, biased towards the recorded installation.
pub fn live_observation() -> impl Strategy<Value = LiveObservation> {
    let install = prop_oneof![3 => Just(Some(INSTALL.to_owned())), 1 => other_install()];
    (install, observation("prov-uid"), observation("capi-uid")).prop_map(
        |(install_uuid, provisioning, capi)| LiveObservation {
            install_uuid,
            provisioning,
            capi,
        },
    )
}
