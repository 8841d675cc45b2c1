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

pub use driver::DriverVersion;
pub use provisioning::{GuestCluster, GuestClusterSpec, PoolSpec, Rancher};

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
}
