//! The README's reference tables name every flag with its environment twin, every key gleaner
//! reads or writes, every Event reason and every metric: adding one without documenting it
//! fails here.

use clap::CommandFactory;
use gleaner::{
    cli::Cli,
    events::EventReason,
    metrics::{Kind, Metrics, WatchKind, WriteKind},
};
use gleaner_core::{attribution::ObjectClass, keys, reclaim::KeepReason};

fn reference() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README is beside the workspace's Cargo.toml");
    let start = readme
        .find("\n## Reference\n")
        .expect("the README has a Reference section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3);
    rest[..end].to_owned()
}

fn missing(reference: &str, names: impl IntoIterator<Item = String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| !reference.contains(&format!("`{name}`")))
        .collect()
}

#[test]
fn every_flag_and_its_environment_twin_is_in_the_reference() {
    let mut command = Cli::command();
    command.build();
    let mut names = Vec::new();
    let commands: Vec<&clap::Command> = std::iter::once(&command)
        .chain(command.get_subcommands())
        .collect();
    for subcommand in commands {
        for arg in subcommand.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            names.push(format!("--{long}"));
            if let Some(env) = arg.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    let missing = missing(&reference(), names);
    assert!(
        missing.is_empty(),
        "not in the README's Reference: {missing:?}"
    );
}

#[test]
fn every_key_event_reason_and_metric_is_in_the_reference() {
    let keys = [
        keys::HOOK_ANNOTATION,
        keys::INTENT_ANNOTATION,
        keys::REMOVE_ALL_ANNOTATION,
        keys::FOOTPRINT_LABEL,
        keys::CLUSTER_ANNOTATION,
        keys::KEPT_ANNOTATION,
        keys::RETAIN_ANNOTATION,
        keys::VMS_GONE_ANNOTATION,
        keys::SKIP_CLEANUP_ANNOTATION,
        keys::PAUSED_ANNOTATION,
    ]
    .map(str::to_owned);
    let reasons = EventReason::ALL
        .iter()
        .map(|reason| reason.as_str().to_owned());
    // A family without a sample is not exposed: give each one.
    let exposed = Metrics::default();
    exposed.failed(Kind::Machine, &gleaner::Error::Unanswerable(String::new()));
    exposed.wrote(WriteKind::MachineHook, "ok");
    exposed.watch_failed(WatchKind::Machine, "watch_failed");
    exposed.reclaimed(ObjectClass::Volume, Some(1));
    exposed.kept(ObjectClass::Volume, KeepReason::Conflict);
    exposed.reclaim_took(std::time::Duration::from_secs(1));
    exposed.audited([("cattle-global-data:hv".to_owned(), 1, 1)]);
    let exposition = exposed.encode().unwrap();
    let metrics: Vec<String> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [name, "counter"] => Some(format!("{name}_total")),
                [name, _] => Some(name.to_owned()),
                _ => None,
            },
        )
        .collect();
    assert!(metrics.len() > 10, "{exposition}");
    let reference = reference();
    let missing = missing(&reference, keys.into_iter().chain(reasons).chain(metrics));
    assert!(
        missing.is_empty(),
        "not in the README's Reference: {missing:?}"
    );
}
