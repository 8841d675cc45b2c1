//! `gleaner.io/retain` on a host PVC or a Footprint (design.md §5): ParseBool true means never
//! delete.

use crate::parse_bool;

/// What a `gleaner.io/retain` annotation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// Absent, or parses false.
    NotRetained,
    /// Parses true: never delete.
    Retained,
    /// Does not parse: held like [`Retention::Retained`]; the caller warns.
    Malformed {
        /// The value as written.
        value: String,
    },
}

impl Retention {
    /// Whether the object must not be deleted: retained, or retention is in doubt.
    pub fn holds(&self) -> bool {
        !matches!(self, Self::NotRetained)
    }
}

/// Reads a `gleaner.io/retain` annotation value.
pub fn retention(value: Option<&str>) -> Retention {
    match value.map(parse_bool) {
        None | Some(Ok(false)) => Retention::NotRetained,
        Some(Ok(true)) => Retention::Retained,
        Some(Err(error)) => Retention::Malformed { value: error.0 },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn true_retains() {
        assert_eq!(retention(Some("true")), Retention::Retained);
        assert!(retention(Some("1")).holds());
    }

    #[test]
    fn absent_or_false_does_not_retain() {
        assert!(!retention(None).holds());
        assert!(!retention(Some("False")).holds());
    }

    #[test]
    fn a_malformed_value_holds_and_is_reported() {
        let read = retention(Some("yes"));
        assert_eq!(
            read,
            Retention::Malformed {
                value: "yes".into()
            }
        );
        assert!(read.holds());
    }

    proptest! {
        #[test]
        fn only_absent_or_a_parsed_false_releases(value in proptest::option::of(".{0,8}")) {
            let released = !retention(value.as_deref()).holds();
            let parses_false = value.as_deref().map(parse_bool);
            prop_assert_eq!(released, matches!(parses_false, None | Some(Ok(false))));
        }
    }
}
