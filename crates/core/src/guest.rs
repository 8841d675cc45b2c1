//! What a guest cluster tells about its own objects (design.md §2 and §5): its PVs of the
//! Harvester CSI driver with their reclaim policies, the VolumeSnapshotContents of that driver
//! with their deletion policies, and the UIDs of its LoadBalancer Services. Only the guest knows
//! these; once its VMs are gone nobody can ask it, so gleaner learns them while it lives and once
//! more when its deletion is confirmed.

use std::{collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The guest's CSI driver: only its PVs and snapshot contents name host objects.
pub const GUEST_DRIVER: &str = "driver.harvesterhci.io";

/// How often a policy that stays the same is stamped seen again: often enough for
/// `--policy-max-age`, rarely enough that an idle cluster costs no status writes.
pub const POLICY_REFRESH: Duration = Duration::from_secs(3600);

/// What the guest says should happen to the host object when its guest object goes: a PV's
/// `persistentVolumeReclaimPolicy` or a VolumeSnapshotContent's `deletionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GuestPolicy {
    /// The host object may go with the guest's.
    Delete,
    /// The host object must stay.
    Retain,
}

impl GuestPolicy {
    /// Reads a policy as the guest wrote it; anything else (the retired `Recycle`, a typo) is no
    /// policy at all, which keeps the host object as a policy never seen does.
    pub fn parse(written: &str) -> Option<Self> {
        match written {
            "Delete" => Some(Self::Delete),
            "Retain" => Some(Self::Retain),
            _ => None,
        }
    }
}

/// A guest policy and when gleaner last saw it in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySeen {
    /// The policy.
    pub policy: GuestPolicy,
    /// When gleaner last saw it (refreshed at most every [`POLICY_REFRESH`] while it stays).
    #[schemars(with = "String")]
    pub seen_at: Timestamp,
}

/// The policy to record: what the guest shows now (stamped `now` when it changed or its stamp
/// is older than [`POLICY_REFRESH`]), else what was recorded.
pub fn policy_seen(
    recorded: Option<PolicySeen>,
    observed: Option<GuestPolicy>,
    now: Timestamp,
) -> Option<PolicySeen> {
    let Some(policy) = observed else {
        return recorded;
    };
    match recorded {
        Some(seen)
            if seen.policy == policy
                && now.duration_since(seen.seen_at).unsigned_abs() < POLICY_REFRESH =>
        {
            Some(seen)
        }
        _ => Some(PolicySeen {
            policy,
            seen_at: now,
        }),
    }
}

/// A guest policy as it stands at a moment (the confirmation of a deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAt {
    /// Seen `Delete`, recently enough.
    Delete,
    /// Seen `Retain`: the host object stays, however old the sighting.
    Retain,
    /// Never seen: the host object stays.
    NeverSeen,
    /// Seen `Delete` longer ago than the maximum age: the host object stays.
    Stale {
        /// How long ago it was seen.
        age: Duration,
    },
}

impl PolicyAt {
    /// Whether the guest's policy lets its host object go.
    pub fn allows_deletion(self) -> bool {
        self == Self::Delete
    }
}

/// What the recorded policy means at `at`: `Retain` always keeps; a `Delete` older than
/// `max_age` counts as never seen.
pub fn policy_at(seen: Option<PolicySeen>, at: Timestamp, max_age: Duration) -> PolicyAt {
    match seen {
        None => PolicyAt::NeverSeen,
        Some(PolicySeen {
            policy: GuestPolicy::Retain,
            ..
        }) => PolicyAt::Retain,
        Some(PolicySeen {
            policy: GuestPolicy::Delete,
            seen_at,
        }) => {
            let age = at.duration_since(seen_at).unsigned_abs();
            if age > max_age {
                PolicyAt::Stale { age }
            } else {
                PolicyAt::Delete
            }
        }
    }
}

/// A guest PV, reduced to what attribution reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// `spec.csi.driver`: only [`GUEST_DRIVER`]'s PVs count.
    pub driver: String,
    /// `spec.csi.volumeHandle`: the host PVC's name.
    pub volume_handle: String,
    /// Its access modes include `ReadWriteMany`.
    pub read_write_many: bool,
    /// `spec.persistentVolumeReclaimPolicy`, if gleaner can read it.
    pub reclaim: Option<GuestPolicy>,
}

/// A guest VolumeSnapshotContent, reduced to what attribution reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSnapshotContent {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// `spec.driver`: only [`GUEST_DRIVER`]'s contents count.
    pub driver: String,
    /// `status.snapshotHandle`: the host VolumeSnapshot's name, possibly `namespace/name`.
    pub snapshot_handle: Option<String>,
    /// `spec.deletionPolicy`, if gleaner can read it.
    pub deletion: Option<GuestPolicy>,
}

impl GuestSnapshotContent {
    /// The host VolumeSnapshot its handle names: `(namespace, name)`, the namespace when the
    /// handle says it.
    pub fn host_snapshot(&self) -> Option<(Option<&str>, &str)> {
        let handle = self.snapshot_handle.as_deref().filter(|h| !h.is_empty())?;
        Some(match handle.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, handle),
        })
    }
}

/// Everything one guest cluster shows, as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestFacts {
    /// Its PVs.
    pub volumes: Vec<GuestVolume>,
    /// Its VolumeSnapshotContents.
    pub contents: Vec<GuestSnapshotContent>,
    /// The UIDs of its Services of `type: LoadBalancer`, including ones seen before and gone
    /// since: a LoadBalancer made for a Service that was deleted and re-created stays its.
    pub load_balancer_services: BTreeSet<String>,
}

impl GuestFacts {
    /// The PVs of the Harvester CSI driver.
    pub fn driver_volumes(&self) -> impl Iterator<Item = &GuestVolume> {
        self.volumes
            .iter()
            .filter(|volume| volume.driver == GUEST_DRIVER && !volume.volume_handle.is_empty())
    }

    /// The VolumeSnapshotContents of the Harvester CSI driver.
    pub fn driver_contents(&self) -> impl Iterator<Item = &GuestSnapshotContent> {
        self.contents
            .iter()
            .filter(|content| content.driver == GUEST_DRIVER)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    #[test]
    fn only_delete_and_retain_are_policies() {
        assert_eq!(GuestPolicy::parse("Delete"), Some(GuestPolicy::Delete));
        assert_eq!(GuestPolicy::parse("Retain"), Some(GuestPolicy::Retain));
        for other in ["Recycle", "retain", ""] {
            assert_eq!(GuestPolicy::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_policy_is_stamped_when_it_changes_and_at_most_hourly_while_it_stays() {
        let first = policy_seen(None, Some(GuestPolicy::Delete), at(0)).unwrap();
        assert_eq!(first.seen_at, at(0));
        assert_eq!(
            policy_seen(Some(first), Some(GuestPolicy::Delete), at(60)),
            Some(first)
        );
        assert_eq!(
            policy_seen(Some(first), Some(GuestPolicy::Delete), at(3600))
                .unwrap()
                .seen_at,
            at(3600)
        );
        let changed = policy_seen(Some(first), Some(GuestPolicy::Retain), at(60)).unwrap();
        assert_eq!(changed.policy, GuestPolicy::Retain);
        assert_eq!(changed.seen_at, at(60));
        assert_eq!(policy_seen(Some(first), None, at(60)), Some(first));
        assert_eq!(policy_seen(None, None, at(60)), None);
    }

    #[test]
    fn a_delete_older_than_the_maximum_age_is_stale_and_a_retain_never_is() {
        let delete = PolicySeen {
            policy: GuestPolicy::Delete,
            seen_at: at(0),
        };
        assert_eq!(policy_at(Some(delete), at(3600), WEEK), PolicyAt::Delete);
        assert_eq!(
            policy_at(Some(delete), at(8 * 24 * 3600), WEEK),
            PolicyAt::Stale {
                age: Duration::from_secs(8 * 24 * 3600)
            }
        );
        let retain = PolicySeen {
            policy: GuestPolicy::Retain,
            seen_at: at(0),
        };
        assert_eq!(
            policy_at(Some(retain), at(100 * 24 * 3600), WEEK),
            PolicyAt::Retain
        );
        assert_eq!(policy_at(None, at(0), WEEK), PolicyAt::NeverSeen);
    }

    #[test]
    fn a_snapshot_handle_names_a_host_snapshot_with_or_without_its_namespace() {
        let content = |handle: Option<&str>| GuestSnapshotContent {
            name: "snapcontent-1".into(),
            uid: "u".into(),
            driver: GUEST_DRIVER.into(),
            snapshot_handle: handle.map(str::to_owned),
            deletion: None,
        };
        assert_eq!(
            content(Some("snapshot-1")).host_snapshot(),
            Some((None, "snapshot-1"))
        );
        assert_eq!(
            content(Some("vms/snapshot-1")).host_snapshot(),
            Some((Some("vms"), "snapshot-1"))
        );
        assert_eq!(content(Some("")).host_snapshot(), None);
        assert_eq!(content(None).host_snapshot(), None);
    }

    fn policy() -> impl Strategy<Value = Option<GuestPolicy>> {
        proptest::option::of(prop_oneof![
            Just(GuestPolicy::Delete),
            Just(GuestPolicy::Retain)
        ])
    }

    proptest! {
        /// Only a recent `Delete` lets a host object go: never a `Retain`, a policy never seen
        /// or one seen too long ago.
        #[test]
        fn only_a_recent_delete_allows_deletion(
            policy in policy(),
            seen in 0i64..1_000_000,
            later in 0i64..2_000_000,
            max_age in 0u64..1_000_000,
        ) {
            let sighting = policy.map(|policy| PolicySeen { policy, seen_at: at(seen) });
            let verdict = policy_at(sighting, at(seen + later), Duration::from_secs(max_age));
            let recent_delete = policy == Some(GuestPolicy::Delete) && later.unsigned_abs() <= max_age;
            prop_assert_eq!(verdict.allows_deletion(), recent_delete);
        }

        /// What the guest shows now always wins, and nothing shown keeps the record.
        #[test]
        fn the_latest_sighting_wins(recorded in policy(), observed in policy(), now in 0i64..10_000) {
            let recorded = recorded.map(|policy| PolicySeen { policy, seen_at: at(0) });
            let next = policy_seen(recorded, observed, at(now));
            match observed {
                Some(policy) => prop_assert_eq!(next.map(|seen| seen.policy), Some(policy)),
                None => prop_assert_eq!(next, recorded),
            }
        }
    }
}
