//! gleaner's OCI image, assembled with crane from this build's binary on a registry served on
//! 127.0.0.1, then taken apart as a container runtime would: its config read, its root
//! filesystem extracted and gleaner run from it.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use gleaner_world::image::{self, Crane, ImageSpec, Registry};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One entry of a tar: its type, mode and owner.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
}

fn entries(tarball: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut archive = tar::Archive::new(File::open(tarball).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let header = entry.header();
            let path = entry.path().unwrap().into_owned();
            let described = Entry {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                owner: (header.uid().unwrap(), header.gid().unwrap()),
            };
            (path, described)
        })
        .collect()
}

/// A fresh folder under cargo's scratch space for integration tests, kept when the test fails
/// for a look at what failed.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect()
}

#[test]
fn the_image_runs_gleaner_as_a_non_root_user_from_a_minimal_root_filesystem() {
    let crane = Crane::cached().unwrap_or_else(|error| panic!("{error}"));
    let dir = scratch("image");
    let registry = Registry::start(&crane, &dir).unwrap_or_else(|error| panic!("{error}"));
    let reference = format!("{}:{VERSION}", registry.repository());
    let digest = image::build(
        &ImageSpec {
            binary: Path::new(env!("CARGO_BIN_EXE_gleaner")),
            version: VERSION,
            source: image::SOURCE,
            reference: &reference,
        },
        &crane,
        &dir,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(digest.starts_with("sha256:"), "{digest}");

    let config: Value = serde_json::from_str(&crane.run(&["config", &reference]).unwrap()).unwrap();
    let run = &config["config"];
    let user = run["User"].as_str().unwrap_or_default();
    assert!(
        !matches!(user.split(':').next(), Some("" | "0" | "root")),
        "the image runs as {user:?}"
    );
    let entrypoint = strings(&run["Entrypoint"]);
    assert_eq!(
        Path::new(entrypoint[0]).file_name(),
        Some("gleaner".as_ref()),
        "{entrypoint:?}"
    );
    assert_eq!(strings(&run["Cmd"]), ["run"]);
    assert_eq!(run["Labels"]["org.opencontainers.image.version"], VERSION);
    assert_eq!(
        run["Labels"]["org.opencontainers.image.source"],
        "https://github.com/gleaner-dev/gleaner"
    );
    assert_eq!(config["os"], "linux");
    assert!(
        config["architecture"]
            .as_str()
            .is_some_and(|arch| !arch.is_empty()),
        "{config}"
    );

    let flattened = dir.join("rootfs.tar");
    crane
        .run(&["export", &reference, &flattened.display().to_string()])
        .unwrap();
    let entries = entries(&flattened);
    let not_root: Vec<_> = entries
        .iter()
        .filter(|(_, entry)| entry.owner != (0, 0))
        .collect();
    assert!(not_root.is_empty(), "not owned by root: {not_root:?}");
    let binary = Path::new(entrypoint[0].trim_start_matches('/'));
    assert_eq!(entries[binary].mode, 0o755);
    let tmp = &entries[Path::new("tmp")];
    assert_eq!((tmp.kind, tmp.mode), (tar::EntryType::Directory, 0o1777));
    // Nothing but the binary, the libraries it loads and the few files it reads: no shell, no
    // package manager, nothing to run but gleaner.
    let data = [
        "etc/group",
        "etc/nsswitch.conf",
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
    ];
    for file in data {
        assert!(entries.contains_key(Path::new(file)), "{file} is missing");
    }
    let extra: Vec<_> = entries
        .iter()
        .filter(|(path, entry)| {
            entry.kind != tar::EntryType::Directory
                && *path != binary
                && !data.iter().any(|file| *path == Path::new(file))
                && !path.to_string_lossy().contains(".so")
        })
        .collect();
    assert!(extra.is_empty(), "more than gleaner needs: {extra:?}");
    assert!(!entries.contains_key(Path::new("bin/sh")));

    let rootfs = dir.join("rootfs");
    let mut archive = tar::Archive::new(File::open(&flattened).unwrap());
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(&rootfs).unwrap();
    let output = Command::new("chroot")
        .arg(format!("--userspec={user}"))
        .arg(&rootfs)
        .arg(entrypoint[0])
        .arg("--version")
        .output()
        .expect("chroot (coreutils) runs the image's entrypoint; it needs root");
    assert!(
        output.status.success(),
        "gleaner --version in the image failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("gleaner {VERSION}")),
        "gleaner --version printed {stdout:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
