//! The cluster opt-out (design.md §5 "Keys gleaner reads"): Rancher's
//! `harvesterhci.io/skipHarvesterMachineProvisionCleanup`, read with Go's `strconv.ParseBool`.

/// A value Go's `strconv.ParseBool` rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)")]
pub struct ParseBoolError(pub String);

/// Go's `strconv.ParseBool`: exactly `1 t T TRUE true True` or `0 f F FALSE false False`.
pub fn parse_bool(value: &str) -> Result<bool, ParseBoolError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ParseBoolError(value.to_owned())),
    }
}

/// One of a guest cluster's two Cluster objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterObject {
    /// The `provisioning.cattle.io` Cluster.
    Provisioning,
    /// The `cluster.x-k8s.io` Cluster.
    Capi,
}

/// Whether a cluster opted out of cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptOut {
    /// Neither Cluster object opts out.
    No,
    /// This Cluster object's annotation parses true.
    OptedOut {
        /// The object carrying the opt-out.
        object: ClusterObject,
    },
    /// No annotation parses true and this one does not parse at all: neither an opt-out nor
    /// consent. The caller warns.
    Malformed {
        /// The object carrying the malformed value.
        object: ClusterObject,
        /// The value as written.
        value: String,
    },
}

/// Reads the opt-out annotation of both Cluster objects. A true on either opts out, whatever
/// the other says; otherwise the first malformed value (provisioning first) is reported.
pub fn opt_out(provisioning: Option<&str>, capi: Option<&str>) -> OptOut {
    let annotations = [
        (ClusterObject::Provisioning, provisioning),
        (ClusterObject::Capi, capi),
    ];
    let mut annotated = annotations
        .into_iter()
        .filter_map(|(object, value)| Some((object, value?)));
    if let Some((object, _)) = annotated
        .clone()
        .find(|(_, value)| parse_bool(value) == Ok(true))
    {
        return OptOut::OptedOut { object };
    }
    annotated
        .find(|(_, value)| parse_bool(value).is_err())
        .map_or(OptOut::No, |(object, value)| OptOut::Malformed {
            object,
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TRUE: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];
    const FALSE: [&str; 6] = ["0", "f", "F", "FALSE", "false", "False"];

    #[test]
    fn parse_bool_accepts_exactly_gos_spellings() {
        for value in TRUE {
            assert_eq!(parse_bool(value), Ok(true), "{value}");
        }
        for value in FALSE {
            assert_eq!(parse_bool(value), Ok(false), "{value}");
        }
        for value in ["", "yes", "no", "tRUE", "True ", " 1", "2", "on", "y"] {
            assert_eq!(
                parse_bool(value),
                Err(ParseBoolError(value.into())),
                "{value:?}"
            );
        }
    }

    #[test]
    fn true_on_either_object_opts_out() {
        assert_eq!(
            opt_out(Some("true"), None),
            OptOut::OptedOut {
                object: ClusterObject::Provisioning
            }
        );
        assert_eq!(
            opt_out(Some("false"), Some("1")),
            OptOut::OptedOut {
                object: ClusterObject::Capi
            }
        );
    }

    #[test]
    fn true_wins_over_a_malformed_value() {
        assert_eq!(
            opt_out(Some("yes"), Some("T")),
            OptOut::OptedOut {
                object: ClusterObject::Capi
            }
        );
    }

    #[test]
    fn absent_or_false_does_not_opt_out() {
        assert_eq!(opt_out(None, None), OptOut::No);
        assert_eq!(opt_out(Some("0"), Some("False")), OptOut::No);
    }

    #[test]
    fn a_malformed_value_is_reported_with_its_object() {
        assert_eq!(
            opt_out(Some("false"), Some("yes")),
            OptOut::Malformed {
                object: ClusterObject::Capi,
                value: "yes".into()
            }
        );
        assert_eq!(
            opt_out(Some(""), Some("nope")),
            OptOut::Malformed {
                object: ClusterObject::Provisioning,
                value: String::new()
            }
        );
    }

    fn annotation() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            proptest::sample::select(TRUE.to_vec()).prop_map(str::to_owned),
            proptest::sample::select(FALSE.to_vec()).prop_map(str::to_owned),
            ".{0,8}",
        ])
    }

    proptest! {
        #[test]
        fn opted_out_exactly_when_one_object_parses_true(
            provisioning in annotation(),
            capi in annotation(),
        ) {
            let decided = opt_out(provisioning.as_deref(), capi.as_deref());
            let parses_true = |value: &Option<String>| {
                value.as_deref().is_some_and(|value| TRUE.contains(&value))
            };
            prop_assert_eq!(
                matches!(decided, OptOut::OptedOut { .. }),
                parses_true(&provisioning) || parses_true(&capi)
            );
        }

        #[test]
        fn a_malformed_value_never_opts_out(value in ".{0,8}") {
            prop_assume!(parse_bool(&value).is_err());
            let alone = opt_out(Some(&value), None);
            prop_assert!(!matches!(alone, OptOut::OptedOut { .. }), "{:?}", alone);
            let beside_false = opt_out(Some("false"), Some(&value));
            let reported = matches!(beside_false, OptOut::Malformed { .. });
            prop_assert!(reported, "{:?}", beside_false);
        }
    }
}
