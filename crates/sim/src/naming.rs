//! The node driver's and Rancher's naming rules (PROVENANCE.md §7), re-implemented from the
//! written facts: this is the simulators' truth, independent of gleaner's own copy.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Names shorter than this are returned unchanged by [`safe_concat_name`].
const MAX_NAME_LENGTH: usize = 63;
/// Where [`safe_concat_name`] looks to choose between a 57- and a 56-byte prefix.
const CUT_CHECK_INDEX: usize = 56;
const MAX_LABEL_VALUE_LENGTH: usize = 63;

/// wrangler's `name.SafeConcatName` (§7.1): the parts joined with `-`; when that is 64 bytes or
/// longer, a 63-byte prefix-and-hash instead.
pub fn safe_concat_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    if joined.len() <= MAX_NAME_LENGTH {
        return joined;
    }
    let hash = hex(&Sha256::digest(joined.as_bytes()));
    // Only the byte at the cut is checked; upstream slices bytes, so a multi-byte character
    // there could be split. Names are ASCII in practice; a lossy cut keeps this panic-free.
    let bytes = joined.as_bytes();
    if bytes[CUT_CHECK_INDEX].is_ascii_lowercase() || bytes[CUT_CHECK_INDEX].is_ascii_digit() {
        format!("{}-{}", lossy(&bytes[..57]), &hash[..5])
    } else {
        format!("{}-{}", lossy(&bytes[..56]), &hash[..6])
    }
}

/// The VM (rancher-machine instance) name of a HarvesterMachine (§7.3): dots become dashes,
/// then [`safe_concat_name`], so the hash covers the dashed name.
pub fn vm_name(harvester_machine: &str) -> String {
    safe_concat_name(&[&harvester_machine.replace('.', "-")])
}

/// The Secret, beside its provisioning Cluster, in which Rancher keeps a guest cluster's
/// kubeconfig (the Cluster API convention).
pub fn guest_kubeconfig_secret(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// Rancher's MachineDeployment name for a machine pool.
pub fn machine_deployment_name(cluster: &str, pool: &str) -> String {
    safe_concat_name(&[cluster, pool])
}

/// The driver's `harvesterhci.io/machineSetName` label value (§7.3): the VM namespace and the
/// VM name's `-`-separated parts, without the last two parts, label-formatted.
pub fn machine_set_label(vm_namespace: &str, vm_name: &str) -> String {
    let parts: Vec<&str> = std::iter::once(vm_namespace)
        .chain(vm_name.split('-'))
        .collect();
    format_label_value(&parts[..parts.len().saturating_sub(2)].join("-"))
}

/// The driver's `nodepool.harvesterhci.io/name` label value (§7.3): the VM name without its last
/// `-` part, without the cluster-name prefix (a plain string prefix) and leading dashes. `None`
/// for a name without a dash, where the driver would crash.
pub fn node_pool_label(cluster: &str, vm_name: &str) -> Option<String> {
    let (without_suffix, _) = vm_name.rsplit_once('-')?;
    let without_cluster = without_suffix
        .strip_prefix(cluster)
        .unwrap_or(without_suffix);
    Some(without_cluster.trim_start_matches('-').to_owned())
}

/// The driver's `formatLabelValue`: a valid label value unchanged, anything else replaced by
/// `hash_<base64url(FNV-1a 32)>_z`.
pub fn format_label_value(value: &str) -> String {
    if is_valid_label_value(value) {
        return value.to_owned();
    }
    let hash = fnv1a32(value.as_bytes()).to_be_bytes();
    format!("hash_{}_z", URL_SAFE_NO_PAD.encode(hash))
}

/// Kubernetes' label value rule: at most 63 characters, empty or alphanumeric at both ends with
/// only alphanumerics, `-`, `_` and `.` between.
fn is_valid_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return true;
    };
    bytes.len() <= MAX_LABEL_VALUE_LENGTH
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

    use super::*;

    #[test]
    fn sixty_four_letters_are_cut_to_57_plus_five_hex() {
        let name = safe_concat_name(&[&"a".repeat(64)]);
        assert_eq!(name, format!("{}-ffe05", "a".repeat(57)));
        assert_eq!(name.len(), 63);
    }

    #[test]
    fn a_dot_becomes_a_dash() {
        assert_eq!(vm_name("a."), "a-");
    }

    #[test]
    fn worked_example_a_alphanumeric_at_the_cut() {
        let machine = "prod.eu-west.example.com-harvester-workers-pool1-7d9f8c6b5x-abcdefghij";
        assert_eq!(machine.len(), 70);
        assert_eq!(
            vm_name(machine),
            "prod-eu-west-example-com-harvester-workers-pool1-7d9f8c6b-9aa96"
        );
    }

    #[test]
    fn worked_example_b_dash_at_the_cut() {
        let machine = "infra.prod.eu-central.example.org-harvester-worker-pool1.x7k2p-9fzqw-a";
        assert_eq!(machine.len(), 70);
        assert_eq!(
            vm_name(machine),
            "infra-prod-eu-central-example-org-harvester-worker-pool1-cb4593"
        );
    }

    #[test]
    fn names_up_to_63_are_only_dot_replaced() {
        for name in ["a", "gc31-pool1-g4nfh-5hv8l", "x.y.z", &"b".repeat(63)] {
            assert_eq!(vm_name(name), name.replace('.', "-"));
        }
    }

    #[test]
    fn parts_are_joined_with_dashes() {
        assert_eq!(machine_deployment_name("gc31", "pool1"), "gc31-pool1");
        let long = machine_deployment_name(&"c".repeat(40), &"p".repeat(40));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with(&format!("{}-{}", "c".repeat(40), "p".repeat(16))));
    }

    #[test]
    fn generated_names_are_short_deterministic_and_unchanged_below_64() {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            let length = rng.random_range(1..=120);
            let machine: String = (0..length)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            let name = vm_name(&machine);
            assert!(name.len() <= 63, "{machine} -> {name}");
            assert_eq!(name, vm_name(&machine), "deterministic for {machine}");
            assert!(!name.contains('.'), "{machine} -> {name}");
            if length < 64 {
                assert_eq!(name, machine.replace('.', "-"));
            } else {
                assert_eq!(name.len(), 63, "{machine} -> {name}");
            }
        }
    }

    #[test]
    fn labels_match_the_example_vm() {
        let vm = "gc31-pool1-g4nfh-5hv8l";
        assert_eq!(machine_set_label("default", vm), "default-gc31-pool1");
        assert_eq!(node_pool_label("gc31", vm).as_deref(), Some("pool1-g4nfh"));
    }

    #[test]
    fn the_cluster_prefix_is_a_plain_string_prefix() {
        assert_eq!(
            node_pool_label("gc3", "gc31-pool1-g4nfh-5hv8l").as_deref(),
            Some("1-pool1-g4nfh")
        );
        assert_eq!(node_pool_label("gc31", "nodash"), None);
    }

    #[test]
    fn short_vm_names_lose_the_namespace_too() {
        assert_eq!(machine_set_label("default", "a-b"), "default");
        assert_eq!(machine_set_label("default", "vm"), "");
    }

    #[test]
    fn invalid_label_values_are_hashed() {
        assert_eq!(format_label_value(""), "");
        assert_eq!(format_label_value("machineSetName"), "machineSetName");
        assert_eq!(
            format_label_value(&"machineSetName".repeat(12)),
            "hash_FR_ghQ_z"
        );
        assert_eq!(format_label_value("-leading").len(), "hash_123456_z".len());
    }
}
