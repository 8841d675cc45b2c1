//! Where a HarvesterMachine's VM lives (design.md §2, PROVENANCE.md §7.1 and §7.3): the
//! machine name with `.` replaced by `-`, shortened the way wrangler's `name.SafeConcatName`
//! does, in the HarvesterMachine's `vmNamespace`.

use sha2::{Digest, Sha256};

/// The node driver's default `vmNamespace` (its flag default).
pub const DEFAULT_VM_NAMESPACE: &str = "default";

/// Names of this many bytes or fewer are kept whole.
const MAX_NAME_LENGTH: usize = 63;
/// The byte whose kind chooses between a 57-byte prefix with 5 hex characters and a 56-byte
/// prefix with 6.
const CUT_CHECK_INDEX: usize = 56;

/// A VM's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmRef {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
}

/// The VM of a HarvesterMachine: [`vm_name`] in its `spec.vmNamespace`, or
/// [`DEFAULT_VM_NAMESPACE`] when that is unset or empty.
pub fn vm_of(harvester_machine: &str, vm_namespace: Option<&str>) -> VmRef {
    VmRef {
        namespace: self::vm_namespace(vm_namespace).to_owned(),
        name: vm_name(harvester_machine),
    }
}

/// A `vmNamespace` as the node driver reads it: [`DEFAULT_VM_NAMESPACE`] when unset or empty.
pub fn vm_namespace(vm_namespace: Option<&str>) -> &str {
    vm_namespace
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_VM_NAMESPACE)
}

/// The VM name of a HarvesterMachine: dots become dashes, then wrangler's shortening to at most
/// 63 bytes, with the hash taken over the dashed name.
pub fn vm_name(harvester_machine: &str) -> String {
    safe_concat_name(&harvester_machine.replace('.', "-"))
}

/// wrangler's `name.SafeConcatName` for a single part (PROVENANCE.md §7.1).
///
/// Kubernetes names are ASCII, so the cut never splits a character upstream; for other input
/// the cut moves back to a character boundary rather than split one.
fn safe_concat_name(name: &str) -> String {
    if name.len() <= MAX_NAME_LENGTH {
        return name.to_owned();
    }
    let (cut, hash_length) = match name.as_bytes()[CUT_CHECK_INDEX] {
        b'a'..=b'z' | b'0'..=b'9' => (CUT_CHECK_INDEX + 1, 5),
        _ => (CUT_CHECK_INDEX, 6),
    };
    let cut = (0..=cut)
        .rev()
        .find(|&index| name.is_char_boundary(index))
        .unwrap_or(0);
    let digest = Sha256::digest(name.as_bytes());
    let hex = format!("{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
    format!("{}-{}", &name[..cut], &hex[..hash_length])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
    fn sixty_four_letters_become_57_letters_and_five_hex() {
        assert_eq!(
            vm_name(&"a".repeat(64)),
            format!("{}-ffe05", "a".repeat(57))
        );
    }

    #[test]
    fn a_dot_becomes_a_dash() {
        assert_eq!(vm_name("a."), "a-");
    }

    #[test]
    fn sixty_three_characters_are_kept_whole() {
        let machine = "b".repeat(63);
        assert_eq!(vm_name(&machine), machine);
    }

    #[test]
    fn a_multi_byte_character_at_the_cut_is_not_split() {
        let name = vm_name(&format!("{}é{}", "a".repeat(56), "a".repeat(10)));
        assert!(name.len() <= 63);
        assert!(name.starts_with(&"a".repeat(56)));
    }

    #[test]
    fn the_vm_namespace_defaults_to_default() {
        assert_eq!(vm_of("m", None).namespace, "default");
        assert_eq!(vm_of("m", Some("")).namespace, "default");
        assert_eq!(
            vm_of("gc31-pool1.x", Some("guests")),
            VmRef {
                namespace: "guests".into(),
                name: "gc31-pool1-x".into()
            }
        );
    }

    /// A valid DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
    fn dotted_name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..8)
            .prop_map(|labels| labels.join("."))
            .prop_filter("at most 253 characters", |name| name.len() <= 253)
    }

    fn is_dns_label(name: &str) -> bool {
        let bytes = name.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    }

    proptest! {
        #[test]
        fn the_vm_name_is_never_longer_than_63(machine in ".{0,200}") {
            prop_assert!(vm_name(&machine).len() <= 63);
        }

        #[test]
        fn the_vm_name_is_deterministic(machine in "[a-z0-9.-]{0,120}") {
            prop_assert_eq!(vm_name(&machine), vm_name(&machine));
        }

        #[test]
        fn names_up_to_63_are_only_dot_replaced(machine in "[a-z0-9.-]{0,63}") {
            prop_assert_eq!(vm_name(&machine), machine.replace('.', "-"));
        }

        #[test]
        fn longer_names_are_cut_to_exactly_63(machine in "[a-z0-9.-]{64,200}") {
            let name = vm_name(&machine);
            prop_assert_eq!(name.len(), 63);
            prop_assert!(machine.replace('.', "-").starts_with(&name[..56]));
        }

        #[test]
        fn a_valid_dotted_name_gives_a_dns_label(machine in dotted_name()) {
            let name = vm_name(&machine);
            prop_assert!(is_dns_label(&name), "{} -> {}", machine, name);
        }
    }
}
