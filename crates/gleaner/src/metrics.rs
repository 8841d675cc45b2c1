//! Prometheus metrics. Every label takes its values from a closed set, so the number of series
//! is fixed whatever the clusters look like.

use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use gleaner_core::{attribution::ObjectClass, reclaim::KeepReason};

use crate::{Error, footprint::Phase};

/// The kind of object a controller reconciles: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Kind {
    /// CAPI Machines (hooks and intent).
    Machine,
    /// Rancher provisioning Clusters (Footprint tracking).
    Cluster,
    /// Footprints (attribution and reclaiming).
    Footprint,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Machine, Kind::Cluster, Kind::Footprint];
}

/// What gleaner writes: the `kind` label of the write counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum WriteKind {
    /// gleaner's hook on a CAPI Machine, added or removed.
    MachineHook,
    /// The intent and removeAll "false" on a Harvester VM.
    VmIntent,
    /// A Footprint's spec.
    Footprint,
    /// A Footprint's status.
    FootprintStatus,
    /// gleaner's label and annotation on an attributed host object, or `gleaner.io/kept`.
    HostObjectMarks,
    /// The delete of a host object of a deleted cluster.
    HostObjectDelete,
}

/// Every watch gleaner keeps: the `watch` label of the watch error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum WatchKind {
    Machine,
    ProvisioningCluster,
    CapiCluster,
    HarvesterMachine,
    HarvesterConfig,
    Footprint,
    Setting,
    /// A cloud credential's Secret, by name.
    Secret,
    VirtualMachine,
    /// A guest cluster's PVs, VolumeSnapshotContents or LoadBalancer Services.
    Guest,
}

/// Why a machine is going away, as decided: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum DecisionReason {
    ClusterDeletion,
    ScaleDown,
    Unknown,
}

impl DecisionReason {
    const ALL: [DecisionReason; 3] = [
        DecisionReason::ClusterDeletion,
        DecisionReason::ScaleDown,
        DecisionReason::Unknown,
    ];
}

/// How gleaner's watch on a Harvester or a guest fares: the `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum RemoteState {
    /// Listing for the first time.
    Syncing,
    Reachable,
    Unreachable,
    /// It rejects the credential or kubeconfig, or that is unusable.
    Misconfigured,
}

impl RemoteState {
    pub fn of(health: &gleaner_core::Health) -> Self {
        match health {
            gleaner_core::Health::Syncing => Self::Syncing,
            gleaner_core::Health::Reachable => Self::Reachable,
            gleaner_core::Health::Unreachable { .. } => Self::Unreachable,
            gleaner_core::Health::Misconfigured { .. } => Self::Misconfigured,
        }
    }

    const ALL: [RemoteState; 4] = [
        RemoteState::Syncing,
        RemoteState::Reachable,
        RemoteState::Unreachable,
        RemoteState::Misconfigured,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: RemoteState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeptLabels {
    class: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HarvesterLabels {
    /// The first cloud credential (`namespace:name`) that reaches it.
    harvester: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuditLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InventoryLabels {
    outcome: InventoryOutcome,
}

/// How a final inventory ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum InventoryOutcome {
    Completed,
    Incomplete,
}

fn count_states(
    family: &Family<StateLabels, Gauge>,
    states: impl IntoIterator<Item = RemoteState>,
) {
    let states: Vec<RemoteState> = states.into_iter().collect();
    for state in RemoteState::ALL {
        let count = states.iter().filter(|each| **each == state).count();
        family
            .get_or_create(&StateLabels { state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: Kind,
    error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WriteLabels {
    kind: WriteKind,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    watch: WatchKind,
    error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: DecisionReason,
}

/// gleaner's metrics; cheap to clone, every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    writes: Family<WriteLabels, Counter>,
    watch_errors: Family<WatchLabels, Counter>,
    hooks_held: Gauge,
    oldest_hook_age: Gauge<f64, AtomicU64>,
    decisions: Family<ReasonLabels, Counter>,
    leader: Gauge,
    harvesters: Family<StateLabels, Gauge>,
    guests: Family<StateLabels, Gauge>,
    inventories: Family<InventoryLabels, Counter>,
    reclaimed: Family<ClassLabels, Counter>,
    kept: Family<KeptLabels, Counter>,
    reclaimed_bytes: Counter,
    footprints: Family<PhaseLabels, Gauge>,
    reclaim_durations: Histogram,
    orphans: Family<HarvesterLabels, Gauge>,
    orphan_bytes: Family<HarvesterLabels, Gauge>,
    audits: Family<AuditLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // From 5 ms to about 80 s: a reconcile reads caches, a deletion makes a few live calls.
        let durations: Family<KindLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 15)));
        let writes = Family::<WriteLabels, Counter>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let hooks_held = Gauge::default();
        let oldest_hook_age = Gauge::<f64, AtomicU64>::default();
        let decisions = Family::<ReasonLabels, Counter>::default();
        let leader = Gauge::default();
        let harvesters = Family::<StateLabels, Gauge>::default();
        let guests = Family::<StateLabels, Gauge>::default();
        let inventories = Family::<InventoryLabels, Counter>::default();
        let reclaimed = Family::<ClassLabels, Counter>::default();
        let kept = Family::<KeptLabels, Counter>::default();
        let reclaimed_bytes = Counter::default();
        let footprints = Family::<PhaseLabels, Gauge>::default();
        for phase in ["Tracking", "Reclaiming", "Reclaimed"] {
            drop(footprints.get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            }));
        }
        let orphans = Family::<HarvesterLabels, Gauge>::default();
        let orphan_bytes = Family::<HarvesterLabels, Gauge>::default();
        let audits = Family::<AuditLabels, Counter>::default();
        // From 1 s to about 9 hours: VMs go in minutes, a held cluster may wait for an operator.
        let reclaim_durations = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        // Every series that can exist without an error starts at zero, so dashboards and
        // alerts see it at once.
        for kind in Kind::ALL {
            drop(reconciles.get_or_create(&KindLabels { kind }));
            drop(durations.get_or_create(&KindLabels { kind }));
        }
        for reason in DecisionReason::ALL {
            drop(decisions.get_or_create(&ReasonLabels { reason }));
        }
        for state in RemoteState::ALL {
            drop(harvesters.get_or_create(&StateLabels { state }));
            drop(guests.get_or_create(&StateLabels { state }));
        }
        for outcome in [InventoryOutcome::Completed, InventoryOutcome::Incomplete] {
            drop(inventories.get_or_create(&InventoryLabels { outcome }));
        }
        let mut registry = Registry::with_prefix("gleaner");
        registry.register(
            "reconciles",
            "Reconciliations, by kind of object",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, by kind of object and error",
            errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "How long reconciliations take, by kind of object",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "writes",
            "Writes gleaner made, by what it wrote and how it ended",
            writes.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of gleaner's watches, by watch and error",
            watch_errors.clone(),
        );
        registry.register(
            "hooks_held",
            "Machines on which gleaner's pre-terminate hook is holding deletion",
            hooks_held.clone(),
        );
        registry.register_with_unit(
            "oldest_hook_age",
            "How long the oldest held hook has been holding its Machine",
            Unit::Seconds,
            oldest_hook_age.clone(),
        );
        registry.register(
            "decisions",
            "Why machines went away, as decided",
            decisions.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease and may write, else 0",
            leader.clone(),
        );
        registry.register(
            "harvesters",
            "Harvesters gleaner watches, by how their watch fares",
            harvesters.clone(),
        );
        registry.register(
            "guests",
            "Guest clusters gleaner watches through their kubeconfig Secret, by how their watch fares",
            guests.clone(),
        );
        registry.register(
            "final_inventories",
            "Final inventories of a deleted cluster's guest, by whether they completed",
            inventories.clone(),
        );
        registry.register(
            "reclaimed",
            "Host objects of deleted clusters gleaner deleted, by class",
            reclaimed.clone(),
        );
        registry.register(
            "kept",
            "Host objects of deleted clusters gleaner kept for good, by class and reason",
            kept.clone(),
        );
        registry.register_with_unit(
            "reclaimed",
            "Storage requested by the host PVCs gleaner deleted",
            Unit::Bytes,
            reclaimed_bytes.clone(),
        );
        registry.register(
            "footprints",
            "Footprints in gleaner's namespace, by phase",
            footprints.clone(),
        );
        registry.register_with_unit(
            "reclaim_duration",
            "How long from a cluster's confirmed deletion to its Footprint's Reclaimed",
            Unit::Seconds,
            reclaim_durations.clone(),
        );
        registry.register(
            "orphans",
            "Orphans the last periodic audit found on each Harvester (--audit-interval)",
            orphans.clone(),
        );
        registry.register_with_unit(
            "orphan",
            "Storage the orphans of the last periodic audit request, on each Harvester",
            Unit::Bytes,
            orphan_bytes.clone(),
        );
        registry.register(
            "audits",
            "Periodic audits, by whether they completed",
            audits.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                errors,
                durations,
                writes,
                watch_errors,
                hooks_held,
                oldest_hook_age,
                decisions,
                leader,
                harvesters,
                guests,
                inventories,
                reclaimed,
                kept,
                reclaimed_bytes,
                footprints,
                reclaim_durations,
                orphans,
                orphan_bytes,
                audits,
            }),
        }
    }
}

impl Metrics {
    /// One reconciliation of an object of `kind` finished.
    pub fn reconciled(&self, kind: Kind) {
        self.inner
            .reconciles
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// One reconciliation of an object of `kind` failed with `error`.
    pub fn failed(&self, kind: Kind, error: &Error) {
        let labels = ErrorLabels {
            kind,
            error: error.metric_label(),
        };
        self.inner.errors.get_or_create(&labels).inc();
    }

    /// A reconciliation of an object of `kind` took `elapsed`.
    pub fn reconcile_took(&self, kind: Kind, elapsed: Duration) {
        self.inner
            .durations
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// A write of `kind` ended with `result` (`ok`, or an error's metric label).
    pub fn wrote(&self, kind: WriteKind, result: &'static str) {
        self.inner
            .writes
            .get_or_create(&WriteLabels { kind, result })
            .inc();
    }

    /// A watch of `watch` failed with `error` (a bounded label).
    pub fn watch_failed(&self, watch: WatchKind, error: &'static str) {
        self.inner
            .watch_errors
            .get_or_create(&WatchLabels { watch, error })
            .inc();
    }

    /// `count` hooks are held now, the oldest since `oldest_age` (`None` when none is held).
    pub fn hooks_held(&self, count: usize, oldest_age: Option<Duration>) {
        self.inner
            .hooks_held
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.inner
            .oldest_hook_age
            .set(oldest_age.unwrap_or_default().as_secs_f64());
    }

    /// A machine's departure was classified as `reason`.
    pub fn decided(&self, reason: DecisionReason) {
        self.inner
            .decisions
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Whether this replica holds the Lease.
    pub fn leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// The state of every watched Harvester, counted by state.
    pub fn harvesters(&self, states: impl IntoIterator<Item = RemoteState>) {
        count_states(&self.inner.harvesters, states);
    }

    /// The state of every watched guest cluster, counted by state.
    pub fn guests(&self, states: impl IntoIterator<Item = RemoteState>) {
        count_states(&self.inner.guests, states);
    }

    /// Harvester accepted the delete of a host object of class `class`, which requested
    /// `bytes` of storage if it is a PVC.
    pub fn reclaimed(&self, class: ObjectClass, bytes: Option<u64>) {
        self.inner
            .reclaimed
            .get_or_create(&ClassLabels {
                class: format!("{class:?}"),
            })
            .inc();
        if let Some(bytes) = bytes {
            self.inner.reclaimed_bytes.inc_by(bytes);
        }
    }

    /// How many Footprints are in each phase.
    pub fn footprints(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let phases: Vec<Option<Phase>> = phases.into_iter().collect();
        for phase in [Phase::Tracking, Phase::Reclaiming, Phase::Reclaimed] {
            let count = phases.iter().filter(|each| **each == Some(phase)).count();
            self.inner
                .footprints
                .get_or_create(&PhaseLabels {
                    phase: format!("{phase:?}"),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// A host object of class `class` was kept for `reason`.
    pub fn kept(&self, class: ObjectClass, reason: KeepReason) {
        self.inner
            .kept
            .get_or_create(&KeptLabels {
                class: format!("{class:?}"),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A Footprint reached `Reclaimed` this long after its deletion was confirmed.
    pub fn reclaim_took(&self, took: Duration) {
        self.inner.reclaim_durations.observe(took.as_secs_f64());
    }

    /// A periodic audit found `orphans` orphans requesting `bytes` on each Harvester, named by
    /// its first credential; a Harvester no longer audited is dropped.
    pub fn audited(&self, harvesters: impl IntoIterator<Item = (String, usize, u64)>) {
        self.inner.orphans.clear();
        self.inner.orphan_bytes.clear();
        for (harvester, orphans, bytes) in harvesters {
            let labels = HarvesterLabels { harvester };
            self.inner
                .orphans
                .get_or_create(&labels)
                .set(i64::try_from(orphans).unwrap_or(i64::MAX));
            self.inner
                .orphan_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.inner
            .audits
            .get_or_create(&AuditLabels {
                outcome: "completed",
            })
            .inc();
    }

    /// A periodic audit could not be done; the last figures stand.
    pub fn audit_failed(&self) {
        self.inner
            .audits
            .get_or_create(&AuditLabels { outcome: "failed" })
            .inc();
    }

    /// A final inventory ran.
    pub fn inventoried(&self, outcome: InventoryOutcome) {
        self.inner
            .inventories
            .get_or_create(&InventoryLabels { outcome })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn every_bounded_series_is_exposed_from_the_start() {
        let text = Metrics::default().encode().unwrap();
        let series = samples(&text);
        for expected in [
            r#"gleaner_reconciles_total{kind="Machine"} 0"#,
            r#"gleaner_reconciles_total{kind="Cluster"} 0"#,
            r#"gleaner_reconciles_total{kind="Footprint"} 0"#,
            r#"gleaner_decisions_total{reason="ClusterDeletion"} 0"#,
            r#"gleaner_decisions_total{reason="ScaleDown"} 0"#,
            r#"gleaner_decisions_total{reason="Unknown"} 0"#,
            "gleaner_hooks_held 0",
            "gleaner_oldest_hook_age_seconds 0.0",
            "gleaner_leader 0",
            r#"gleaner_harvesters{state="Syncing"} 0"#,
            r#"gleaner_harvesters{state="Reachable"} 0"#,
            r#"gleaner_harvesters{state="Unreachable"} 0"#,
            r#"gleaner_harvesters{state="Misconfigured"} 0"#,
        ] {
            assert!(
                series.contains(&expected),
                "{expected} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn recordings_show_up_under_their_labels() {
        let metrics = Metrics::default();
        metrics.reconciled(Kind::Machine);
        metrics.reconciled(Kind::Machine);
        metrics.failed(
            Kind::Footprint,
            &Error::Signal(std::io::Error::other("test")),
        );
        metrics.hooks_held(3, Some(Duration::from_millis(1500)));
        metrics.decided(DecisionReason::ScaleDown);
        metrics.leader(true);
        metrics.reconcile_took(Kind::Machine, Duration::from_millis(7));
        metrics.wrote(WriteKind::VmIntent, "forbidden");
        metrics.watch_failed(WatchKind::VirtualMachine, "unreachable");
        metrics.harvesters([
            RemoteState::Reachable,
            RemoteState::Unreachable,
            RemoteState::Reachable,
        ]);
        let text = metrics.encode().unwrap();
        let series = samples(&text);
        for expected in [
            r#"gleaner_reconciles_total{kind="Machine"} 2"#,
            r#"gleaner_reconcile_errors_total{kind="Footprint",error="signal"} 1"#,
            "gleaner_hooks_held 3",
            "gleaner_oldest_hook_age_seconds 1.5",
            r#"gleaner_decisions_total{reason="ScaleDown"} 1"#,
            "gleaner_leader 1",
            r#"gleaner_harvesters{state="Reachable"} 2"#,
            r#"gleaner_harvesters{state="Unreachable"} 1"#,
            r#"gleaner_harvesters{state="Syncing"} 0"#,
            r#"gleaner_reconcile_duration_seconds_count{kind="Machine"} 1"#,
            r#"gleaner_writes_total{kind="VmIntent",result="forbidden"} 1"#,
            r#"gleaner_watch_errors_total{watch="VirtualMachine",error="unreachable"} 1"#,
        ] {
            assert!(
                series.contains(&expected),
                "{expected} missing from\n{text}"
            );
        }
        metrics.leader(false);
        metrics.hooks_held(0, None);
        let text = metrics.encode().unwrap();
        let series = samples(&text);
        assert!(series.contains(&"gleaner_leader 0"), "{text}");
        assert!(series.contains(&"gleaner_hooks_held 0"), "{text}");
    }
}
