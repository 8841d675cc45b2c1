//! Rancher and Cluster API: provisioning a guest cluster, the CAPI controllers that delete and
//! replace machines (or, beside the world's real Cluster API manager, Rancher's bootstrap
//! provider and a watch that journals what the manager did), Rancher's machine-provision jobs
//! with the Harvester node driver, and Rancher's `harvester-machine-provision-cleanup` handler.

mod bootstrap;
mod capi;
mod capi_observer;
mod cleanup_handler;
mod driver;
mod machine_provision;
mod provisioning;

use std::time::Duration;

use gleaner_world::CapiVersion;
use serde_json::{Value, json};

use crate::kinds::Capi;

pub use driver::DriverVersion;
pub use provisioning::{GuestCluster, GuestClusterSpec, GuestMachine, PoolSpec, Rancher};

/// How the simulated Rancher behaves.
#[derive(Clone, Debug)]
pub struct RancherSettings {
    /// The node driver version Rancher ships (`1.0.3` with Rancher 2.12, `1.0.6` with 2.14).
    pub driver: DriverVersion,
    /// Rancher's `harvester-machine-provision-cleanup` handler (since Rancher 2.11).
    pub cleanup_handler: bool,
    /// How long after a HarvesterMachine starts deleting the remove job's pod runs `Remove()`.
    pub remove_job_delay: Duration,
    /// How long the cleanup handler takes from the HarvesterMachine's change to its write on the
    /// VM: its work queue, reading the cloud credential, building a Harvester client.
    pub handler_latency: Duration,
}

impl Default for RancherSettings {
    fn default() -> Self {
        Self {
            driver: DriverVersion::V1_0_6,
            cleanup_handler: true,
            remove_job_delay: REALISTIC_REMOVE_JOB_DELAY,
            handler_latency: REALISTIC_HANDLER_LATENCY,
        }
    }
}

/// The time from a HarvesterMachine's deletion to its remove job's pod running the driver:
/// creating the Job, scheduling the pod, pulling the image and starting rancher-machine
/// (inference: several seconds on a healthy cluster).
pub const REALISTIC_REMOVE_JOB_DELAY: Duration = Duration::from_secs(10);

/// `n` characters from the alphabet Kubernetes' name generators use (no vowels, no look-alikes).
pub(crate) fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The cleanup handler's own time to act (inference: a queue hop, two reads, a new client).
pub const REALISTIC_HANDLER_LATENCY: Duration = Duration::from_millis(500);

/// Go's `strconv.ParseBool` truth values: what upstream treats as "true" in an annotation.
pub(crate) fn parse_bool_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// A provider object's readiness as Rancher writes it: `ready`, which the `v1beta1` contract
/// reads, and from Rancher 2.14 (a `v1beta2` world) also `initialization.<initialized>`, which
/// the `v1beta2` contract reads.
pub(crate) fn ready_status(capi: Capi, initialized: &str) -> Value {
    let mut status = json!({"ready": true});
    if capi.version == CapiVersion::V1beta2 {
        status["initialization"] = json!({initialized: true});
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_go_parse_bool_truths_are_true() {
        for truth in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_bool_true(truth), "{truth}");
        }
        for other in ["", "yes", "tRUE", " true", "0", "false", "on"] {
            assert!(!parse_bool_true(other), "{other}");
        }
    }

    #[test]
    fn rancher_2_14_reports_readiness_in_both_contracts_and_earlier_ones_in_v1beta1_s() {
        let v1beta1 = Capi {
            version: CapiVersion::V1beta1,
        };
        let v1beta2 = Capi {
            version: CapiVersion::V1beta2,
        };
        assert_eq!(ready_status(v1beta1, "provisioned"), json!({"ready": true}));
        assert_eq!(
            ready_status(v1beta2, "provisioned"),
            json!({"ready": true, "initialization": {"provisioned": true}})
        );
    }
}
