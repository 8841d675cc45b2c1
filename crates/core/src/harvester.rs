//! Which Harvester a machine pool runs on (design.md §2): the pool's own cloud credential if
//! set, else the cluster's.

use std::{fmt, str::FromStr};

/// A cloud credential Secret, written `namespace:name` in Rancher's objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialRef {
    /// The Secret's namespace, usually `cattle-global-data`.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
}

/// A cloud credential reference not of the form `namespace:name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cloud credential {0:?} is not of the form namespace:name")]
pub struct CredentialRefError(pub String);

impl FromStr for CredentialRef {
    type Err = CredentialRefError;

    /// Parses `namespace:name`: exactly one colon, neither part empty.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once(':') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(CredentialRefError(value.to_owned())),
        }
    }
}

impl fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

/// The cloud credential of a machine pool: the pool's `cloudCredentialSecretName` if set, else
/// the cluster's; `None` if neither is set. An empty string counts as unset (Rancher's fields are
/// plain strings, empty when omitted).
/// A malformed reference is an error, never a fallback to the other one.
pub fn pool_credential(
    pool: Option<&str>,
    cluster: Option<&str>,
) -> Result<Option<CredentialRef>, CredentialRefError> {
    [pool, cluster]
        .into_iter()
        .flatten()
        .find(|value| !value.is_empty())
        .map(str::parse)
        .transpose()
}

/// Whether the Harvester a pool's credential reaches now is the one its Footprint recorded (by
/// the UID of its `kube-system` namespace). A credential may be rotated, never repointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarvesterCheck {
    /// Nothing recorded yet: record this identity.
    Record(String),
    /// The recorded Harvester.
    Same,
    /// The identity could not be read now: nothing can be said.
    Unknown,
    /// Another Harvester: the credential is refused.
    Changed {
        /// What the Footprint recorded.
        recorded: String,
        /// What the credential reaches now.
        observed: String,
    },
}

/// Checks the identity a pool's credential reaches against the recorded one.
pub fn check_harvester(recorded: Option<&str>, observed: Option<&str>) -> HarvesterCheck {
    match (recorded, observed) {
        (_, None) => HarvesterCheck::Unknown,
        (None, Some(observed)) => HarvesterCheck::Record(observed.to_owned()),
        (Some(recorded), Some(observed)) if recorded == observed => HarvesterCheck::Same,
        (Some(recorded), Some(observed)) => HarvesterCheck::Changed {
            recorded: recorded.to_owned(),
            observed: observed.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn credential(namespace: &str, name: &str) -> CredentialRef {
        CredentialRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_pools_credential_wins() {
        assert_eq!(
            pool_credential(
                Some("cattle-global-data:cc-pool"),
                Some("cattle-global-data:cc-x")
            ),
            Ok(Some(credential("cattle-global-data", "cc-pool")))
        );
    }

    #[test]
    fn the_clusters_credential_is_the_fallback() {
        for pool in [None, Some("")] {
            assert_eq!(
                pool_credential(pool, Some("cattle-global-data:cc-abcde")),
                Ok(Some(credential("cattle-global-data", "cc-abcde")))
            );
        }
    }

    #[test]
    fn no_credential_is_none() {
        assert_eq!(pool_credential(None, None), Ok(None));
        assert_eq!(pool_credential(Some(""), Some("")), Ok(None));
    }

    #[test]
    fn a_malformed_pool_credential_is_an_error_not_a_fallback() {
        assert_eq!(
            pool_credential(Some("cc-pool"), Some("cattle-global-data:cc-x")),
            Err(CredentialRefError("cc-pool".into()))
        );
    }

    #[test]
    fn malformed_references_are_rejected() {
        for value in [
            "",
            "cc-abcde",
            ":cc-abcde",
            "cattle-global-data:",
            ":",
            "a:b:c",
        ] {
            assert_eq!(
                value.parse::<CredentialRef>(),
                Err(CredentialRefError(value.into())),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_reference_displays_as_written() {
        let written = "cattle-global-data:cc-abcde";
        assert_eq!(
            written.parse::<CredentialRef>().unwrap().to_string(),
            written
        );
    }

    #[test]
    fn a_credential_reaching_another_harvester_is_refused_and_a_rotated_one_accepted() {
        assert_eq!(
            check_harvester(None, Some("ks-1")),
            HarvesterCheck::Record("ks-1".into())
        );
        assert_eq!(
            check_harvester(Some("ks-1"), Some("ks-1")),
            HarvesterCheck::Same
        );
        assert_eq!(check_harvester(Some("ks-1"), None), HarvesterCheck::Unknown);
        assert_eq!(
            check_harvester(Some("ks-1"), Some("ks-2")),
            HarvesterCheck::Changed {
                recorded: "ks-1".into(),
                observed: "ks-2".into()
            }
        );
    }

    proptest! {
        /// A recorded identity is never replaced: only an identical one is accepted.
        #[test]
        fn a_recorded_harvester_is_never_replaced(
            recorded in proptest::option::of("[a-c]"),
            observed in proptest::option::of("[a-c]"),
        ) {
            let checked = check_harvester(recorded.as_deref(), observed.as_deref());
            if let Some(recorded) = &recorded {
                prop_assert!(!matches!(checked, HarvesterCheck::Record(_)));
                prop_assert_eq!(
                    checked == HarvesterCheck::Same,
                    observed.as_deref() == Some(recorded.as_str())
                );
            }
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_one_colon_between_non_empty_parts(
            value in ".*",
        ) {
            let valid = value.matches(':').count() == 1
                && !value.starts_with(':')
                && !value.ends_with(':');
            prop_assert_eq!(value.parse::<CredentialRef>().is_ok(), valid);
        }
    }
}
