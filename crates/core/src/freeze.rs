//! Cluster API pause as a freeze (design.md §4): while frozen gleaner neither acts nor removes
//! its hook. Pause is never an opt-out.

/// The pause facts of a Machine and its CAPI Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PauseFacts {
    /// The CAPI Cluster has `spec.paused: true`.
    pub cluster_spec_paused: bool,
    /// The CAPI Cluster carries `cluster.x-k8s.io/paused`, whatever its value.
    pub cluster_annotated: bool,
    /// The Machine carries `cluster.x-k8s.io/paused`, whatever its value.
    pub machine_annotated: bool,
}

/// What froze a Machine; the first that applies, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausedBy {
    /// The CAPI Cluster's `spec.paused`.
    ClusterSpec,
    /// The CAPI Cluster's `cluster.x-k8s.io/paused` annotation.
    ClusterAnnotation,
    /// The Machine's `cluster.x-k8s.io/paused` annotation.
    MachineAnnotation,
}

/// What freezes the Machine, or `None` when nothing does.
pub fn paused_by(facts: &PauseFacts) -> Option<PausedBy> {
    [
        (facts.cluster_spec_paused, PausedBy::ClusterSpec),
        (facts.cluster_annotated, PausedBy::ClusterAnnotation),
        (facts.machine_annotated, PausedBy::MachineAnnotation),
    ]
    .into_iter()
    .find_map(|(paused, by)| paused.then_some(by))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn nothing_paused_is_not_frozen() {
        assert_eq!(paused_by(&PauseFacts::default()), None);
    }

    #[test]
    fn each_pause_freezes_and_is_named() {
        let cases = [
            (
                PauseFacts {
                    cluster_spec_paused: true,
                    ..PauseFacts::default()
                },
                PausedBy::ClusterSpec,
            ),
            (
                PauseFacts {
                    cluster_annotated: true,
                    ..PauseFacts::default()
                },
                PausedBy::ClusterAnnotation,
            ),
            (
                PauseFacts {
                    machine_annotated: true,
                    ..PauseFacts::default()
                },
                PausedBy::MachineAnnotation,
            ),
        ];
        for (facts, by) in cases {
            assert_eq!(paused_by(&facts), Some(by));
        }
    }

    proptest! {
        #[test]
        fn frozen_exactly_when_any_pause_is_present(
            cluster_spec_paused: bool,
            cluster_annotated: bool,
            machine_annotated: bool,
        ) {
            let facts = PauseFacts { cluster_spec_paused, cluster_annotated, machine_annotated };
            prop_assert_eq!(
                paused_by(&facts).is_some(),
                cluster_spec_paused || cluster_annotated || machine_annotated
            );
        }
    }
}
