//! What gleaner writes on a VM once its Machine is deleting (design.md §5): the intent, and
//! always `removeAllPersistentVolumeClaims: "false"`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    Reason, UnknownReason,
    keys::{INTENT_ANNOTATION, REMOVE_ALL_ANNOTATION, REMOVE_ALL_VALUE},
};

/// gleaner's decision about one VM, as the JSON of [`INTENT_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// The name of the cluster's Footprint.
    pub footprint: String,
    /// Why the VM's Machine is going.
    pub reason: Reason,
    /// When gleaner decided.
    pub decided_at: Timestamp,
}

/// The annotation as read, before its fields are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIntent {
    footprint: String,
    reason: String,
    decided_at: String,
}

/// Why an intent annotation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// Not JSON, or a field is missing or of the wrong type.
    #[error("malformed intent: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The reason names no [`Reason`].
    #[error("intent: {0}")]
    UnknownReason(#[from] UnknownReason),
    /// `decidedAt` is not an RFC 3339 timestamp.
    #[error("intent: decidedAt {value:?} is not an RFC 3339 timestamp: {source}")]
    DecidedAt {
        /// The value as written.
        value: String,
        /// What the timestamp parser said.
        source: jiff::Error,
    },
}

impl Intent {
    /// The annotations to write on the VM: the intent, and `removeAllPersistentVolumeClaims:
    /// "false"` so that upstream deletes only the VM's own disks.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_string(self).expect("an intent always serializes");
        BTreeMap::from([
            (INTENT_ANNOTATION.to_owned(), json),
            (
                REMOVE_ALL_ANNOTATION.to_owned(),
                REMOVE_ALL_VALUE.to_owned(),
            ),
        ])
    }

    /// Reads the value of [`INTENT_ANNOTATION`]. Fields gleaner does not know are ignored.
    pub fn parse(json: &str) -> Result<Self, IntentError> {
        let raw: RawIntent = serde_json::from_str(json)?;
        let decided_at = raw
            .decided_at
            .parse()
            .map_err(|source| IntentError::DecidedAt {
                value: raw.decided_at.clone(),
                source,
            })?;
        Ok(Self {
            footprint: raw.footprint,
            reason: raw.reason.parse()?,
            decided_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn intent() -> Intent {
        Intent {
            footprint: "prov-uid".into(),
            reason: Reason::ClusterDeletion,
            decided_at: "2025-06-01T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn annotations_are_the_intent_and_remove_all_false() {
        let annotations = intent().to_annotations();
        assert_eq!(annotations.len(), 2);
        assert_eq!(
            annotations["gleaner.io/intent"],
            r#"{"footprint":"prov-uid","reason":"ClusterDeletion","decidedAt":"2025-06-01T12:00:00Z"}"#
        );
        assert_eq!(
            annotations["harvesterhci.io/removeAllPersistentVolumeClaims"],
            "false"
        );
    }

    #[test]
    fn an_intent_reads_back_what_was_written() {
        let annotations = intent().to_annotations();
        assert_eq!(
            Intent::parse(&annotations[INTENT_ANNOTATION]).unwrap(),
            intent()
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let json = r#"{"footprint":"f","reason":"ScaleDown","decidedAt":"2025-06-01T12:00:00Z","by":"v2"}"#;
        assert_eq!(Intent::parse(json).unwrap().reason, Reason::ScaleDown);
    }

    #[test]
    fn malformed_json_is_an_error() {
        for json in ["", "{", "true", r#"{"footprint":"f","reason":"ScaleDown"}"#] {
            assert!(
                matches!(Intent::parse(json), Err(IntentError::Malformed(_))),
                "{json:?}"
            );
        }
    }

    #[test]
    fn an_unknown_reason_is_an_error_naming_it() {
        let json = r#"{"footprint":"f","reason":"Whim","decidedAt":"2025-06-01T12:00:00Z"}"#;
        let error = Intent::parse(json).unwrap_err();
        assert!(matches!(error, IntentError::UnknownReason(_)));
        assert_eq!(
            error.to_string(),
            r#"intent: unknown reason "Whim"; expected ClusterDeletion, ScaleDown or Unknown"#
        );
    }

    #[test]
    fn a_bad_timestamp_is_an_error() {
        let json = r#"{"footprint":"f","reason":"Unknown","decidedAt":"yesterday"}"#;
        assert!(matches!(
            Intent::parse(json),
            Err(IntentError::DecidedAt { value, .. }) if value == "yesterday"
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(json in ".*") {
            let _ = Intent::parse(&json);
        }

        #[test]
        fn every_intent_round_trips(
            footprint in ".*",
            reason in prop_oneof![
                Just(Reason::ClusterDeletion),
                Just(Reason::ScaleDown),
                Just(Reason::Unknown),
            ],
            seconds in 0i64..4_000_000_000,
            nanos in 0i32..1_000_000_000,
        ) {
            let written = Intent {
                footprint,
                reason,
                decided_at: Timestamp::new(seconds, nanos).unwrap(),
            };
            let annotations = written.to_annotations();
            prop_assert_eq!(Intent::parse(&annotations[INTENT_ANNOTATION]).unwrap(), written);
            prop_assert_eq!(annotations[REMOVE_ALL_ANNOTATION].as_str(), "false");
        }
    }
}
