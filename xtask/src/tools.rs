//! Builds the real Kubernetes components and etcd from their Go modules (`tools/*/go.mod`) into
//! a cache outside the clone, keyed by the pinned versions.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use gleaner_world::{
    Binaries, CAPI_V1BETA2_VERSION, CAPI_VERSION, CRANE_VERSION, ETCD_VERSION, HELM_VERSION,
    KUBERNETES_VERSION, Packaging, SNAPSHOTTER_VERSION, image::Crane,
};

use crate::workspace_root;

/// One Go module under `tools/` and what it builds.
struct Tool {
    module_dir: &'static str,
    module: &'static str,
    version: &'static str,
    packages: &'static [&'static str],
    binaries: &'static [&'static str],
    /// Files of the module the world reads beside the binaries, as (path in the module, name
    /// in the cache): a folder is copied with its YAML files.
    module_files: &'static [(&'static str, &'static str)],
    cache_dir: fn() -> PathBuf,
}

const KUBERNETES: Tool = Tool {
    module_dir: "tools/kubernetes",
    module: "k8s.io/kubernetes",
    version: KUBERNETES_VERSION,
    packages: &[
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kubectl",
    ],
    binaries: &["kube-apiserver", "kube-controller-manager", "kubectl"],
    module_files: &[],
    cache_dir: Binaries::kubernetes_dir,
};

const ETCD: Tool = Tool {
    module_dir: "tools/etcd",
    module: "go.etcd.io/etcd/server/v3",
    version: ETCD_VERSION,
    packages: &["go.etcd.io/etcd/server/v3"],
    binaries: &["etcd"],
    module_files: &[],
    cache_dir: Binaries::etcd_dir,
};

const SNAPSHOT_CONTROLLER: Tool = Tool {
    module_dir: "tools/snapshot-controller",
    module: "github.com/kubernetes-csi/external-snapshotter/v8",
    version: SNAPSHOTTER_VERSION,
    packages: &["github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"],
    binaries: &["snapshot-controller"],
    module_files: &[],
    cache_dir: Binaries::snapshot_controller_dir,
};

/// The core manager is the module's root package (`main.go`).
const CLUSTER_API: Tool = Tool {
    module_dir: "tools/cluster-api",
    module: "sigs.k8s.io/cluster-api",
    version: CAPI_VERSION,
    packages: &["sigs.k8s.io/cluster-api"],
    binaries: &["cluster-api"],
    module_files: &[
        ("config/crd/bases", "crds"),
        ("config/webhook/manifests.yaml", "webhooks.yaml"),
    ],
    cache_dir: Binaries::cluster_api_dir,
};

/// The same manager at the release that serves `v1beta2`, for the `v1beta2` worlds.
const CLUSTER_API_V1BETA2: Tool = Tool {
    module_dir: "tools/cluster-api-v1beta2",
    version: CAPI_V1BETA2_VERSION,
    cache_dir: Binaries::cluster_api_v1beta2_dir,
    ..CLUSTER_API
};

const HELM: Tool = Tool {
    module_dir: "tools/helm",
    module: "helm.sh/helm/v4",
    version: HELM_VERSION,
    packages: &["helm.sh/helm/v4/cmd/helm"],
    binaries: &["helm"],
    module_files: &[],
    cache_dir: Packaging::helm_dir,
};

const CRANE: Tool = Tool {
    module_dir: "tools/crane",
    module: "github.com/google/go-containerregistry",
    version: CRANE_VERSION,
    packages: &["github.com/google/go-containerregistry/cmd/crane"],
    binaries: &["crane"],
    module_files: &[],
    cache_dir: Packaging::crane_dir,
};

pub fn ensure_built() -> Result<()> {
    let mut built_any = false;
    for tool in [
        &KUBERNETES,
        &ETCD,
        &SNAPSHOT_CONTROLLER,
        &CLUSTER_API,
        &CLUSTER_API_V1BETA2,
        &HELM,
        &CRANE,
    ] {
        built_any |= ensure(tool)?;
    }
    if built_any {
        drop_build_cache();
    }
    Binaries::cached().check()?;
    Packaging::cached().check()?;
    Ok(())
}

/// crane alone, for `cargo xtask image`.
pub fn ensure_crane() -> Result<Crane> {
    if ensure(&CRANE)? {
        drop_build_cache();
    }
    Ok(Crane::cached()?)
}

/// The Go build cache of these builds, apart from the user's: the binaries are kept, so once
/// they are built its gigabytes (6 GB for all of them) only fill the disk.
fn go_build_cache() -> PathBuf {
    Binaries::cache_root().with_file_name("go-build")
}

fn drop_build_cache() {
    let cache = go_build_cache();
    if let Err(error) = std::fs::remove_dir_all(&cache)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("xtask: cannot remove {}: {error}", cache.display());
    }
}

/// Whether it had to build the tool.
fn ensure(tool: &Tool) -> Result<bool> {
    check_pin(tool)?;
    let dir = (tool.cache_dir)();
    if tool
        .binaries
        .iter()
        .all(|binary| dir.join(binary).is_file())
        && tool
            .module_files
            .iter()
            .all(|(_, name)| dir.join(name).exists())
    {
        return Ok(false);
    }
    build(tool, &dir)?;
    Ok(true)
}

fn build(tool: &Tool, dir: &Path) -> Result<()> {
    let go_version = go_version()?;
    eprintln!(
        "xtask: building {} {} with {go_version} into {} (a cold build takes several minutes on 2 cores; later runs reuse it)",
        tool.binaries.join(", "),
        tool.version,
        dir.display(),
    );
    let started = Instant::now();
    // Build into a fresh folder and rename it into place, so an interrupted build never leaves a
    // half-filled cache that a later run would trust.
    let staging = dir.with_extension(format!("partial-{}", std::process::id()));
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let mut command = go();
    command
        .current_dir(workspace_root().join(tool.module_dir))
        .args(["build", "-v", "-trimpath"])
        .arg(format!("-ldflags=-s -w {}", ldflags(tool)))
        .arg("-o")
        .arg(output_path(tool, &staging))
        .args(tool.packages)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("cannot run go build")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut compiled = 0usize;
    let mut errors = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        // `go build -v` names each package as it is compiled; anything else is a diagnostic.
        if line.contains(' ') || line.starts_with('#') {
            eprintln!("{line}");
            errors.push(line);
        } else {
            compiled += 1;
            if compiled.is_multiple_of(250) {
                eprintln!(
                    "xtask:   {compiled} packages compiled ({:.0}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let status = child.wait().context("go build did not finish")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "go build of {} {} failed ({status}); the errors are above",
            tool.module,
            tool.version
        );
    }
    if let Err(error) = copy_module_files(tool, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&staging, dir)
        .with_context(|| format!("cannot move the build into {}", dir.display()))?;
    eprintln!(
        "xtask: built {} {} in {:.0}s (cold build time; {compiled} packages)",
        tool.binaries.join(", "),
        tool.version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The module's files the world reads, from the module cache into the staging folder.
fn copy_module_files(tool: &Tool, staging: &Path) -> Result<()> {
    if tool.module_files.is_empty() {
        return Ok(());
    }
    let output = go()
        .current_dir(workspace_root().join(tool.module_dir))
        .args(["list", "-m", "-f", "{{.Dir}}", tool.module])
        .output()
        .context("cannot run go list")?;
    ensure!(
        output.status.success(),
        "go list cannot find {}: {}",
        tool.module,
        String::from_utf8_lossy(&output.stderr)
    );
    let module_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for (source, name) in tool.module_files {
        let source = module_dir.join(source);
        let target = staging.join(name);
        if source.is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            for entry in std::fs::read_dir(&source)
                .with_context(|| format!("cannot read {}", source.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|ext| ext == "yaml") {
                    let file = target.join(path.file_name().unwrap_or_default());
                    std::fs::copy(&path, &file)
                        .with_context(|| format!("cannot copy {}", path.display()))?;
                }
            }
        } else {
            std::fs::copy(&source, &target)
                .with_context(|| format!("cannot copy {}", source.display()))?;
        }
    }
    Ok(())
}

/// Several packages build into a folder, each binary named after its package; a single one is
/// named explicitly, since Go would call `go.etcd.io/etcd/server/v3` "server".
fn output_path(tool: &Tool, staging: &Path) -> PathBuf {
    match tool.binaries {
        [binary] => staging.join(binary),
        _ => PathBuf::from(format!("{}/", staging.display())),
    }
}

/// The version stamps `make` would set, so `/version` and `kubectl version` report the release.
fn ldflags(tool: &Tool) -> String {
    if tool.module == HELM.module {
        return format!(
            "-X helm.sh/helm/v4/internal/version.version={}",
            tool.version
        );
    }
    if tool.module == SNAPSHOT_CONTROLLER.module {
        return format!("-X main.version={}", tool.version);
    }
    if tool.module == CLUSTER_API.module {
        let (major, minor) = major_minor(tool.version);
        return format!(
            "-X sigs.k8s.io/cluster-api/version.gitVersion={} -X sigs.k8s.io/cluster-api/version.gitMajor={major} -X sigs.k8s.io/cluster-api/version.gitMinor={minor} -X sigs.k8s.io/cluster-api/version.gitTreeState=clean",
            tool.version
        );
    }
    if tool.module != KUBERNETES.module {
        return String::new();
    }
    let (major, minor) = major_minor(tool.version);
    let stamps = [
        ("gitVersion", tool.version.to_owned()),
        ("gitMajor", major),
        ("gitMinor", minor),
        ("gitTreeState", "clean".to_owned()),
        (
            "buildDate",
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        ),
    ];
    stamps
        .iter()
        .flat_map(|(key, value)| {
            [
                "k8s.io/client-go/pkg/version",
                "k8s.io/component-base/version",
            ]
            .map(|package| format!("-X {package}.{key}={value}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// The go.mod under `tools/` must require exactly the version the world expects.
fn check_pin(tool: &Tool) -> Result<()> {
    let path = workspace_root().join(tool.module_dir).join("go.mod");
    let go_mod = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let pinned = required_version(&go_mod, tool.module);
    ensure!(
        pinned.as_deref() == Some(tool.version),
        "{} pins {} at {:?} but gleaner-world expects {}: run `cargo xtask pin`",
        path.display(),
        tool.module,
        pinned,
        tool.version
    );
    Ok(())
}

fn required_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let line = line.trim().trim_start_matches("require").trim();
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next().map(str::to_owned))
            .flatten()
    })
}

/// Rewrites both go.mod files for the pinned versions. The Kubernetes `replace` block is read
/// from the release's own go.mod: every `k8s.io/<staging> => ./staging/src/k8s.io/<staging>` line
/// becomes `k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>`.
pub fn pin() -> Result<()> {
    let upstream_go_mod = download_go_mod(KUBERNETES.module, KUBERNETES.version)?;
    let staging_version = format!("v0{}", KUBERNETES.version.trim_start_matches("v1"));
    let replaces = staging_replaces(&upstream_go_mod, &staging_version);
    ensure!(
        !replaces.is_empty(),
        "k8s.io/kubernetes {} has no staging replace block",
        KUBERNETES.version
    );
    let path = workspace_root().join(KUBERNETES.module_dir).join("go.mod");
    let tools = KUBERNETES
        .packages
        .iter()
        .map(|package| format!("\t{package}\n"))
        .collect::<String>();
    let go_mod = format!(
        "// Builds kube-apiserver, kube-controller-manager and kubectl for the test world.\n\
         // The replace block is generated by `cargo xtask pin` from k8s.io/kubernetes' own go.mod.\n\
         module gleaner.test/tools/kubernetes\n\n\
         go 1.24.0\n\n\
         godebug default=go1.24\n\n\
         require {} {}\n\n\
         tool (\n{tools})\n\n\
         replace (\n{}\n)\n",
        KUBERNETES.module,
        KUBERNETES.version,
        replaces.join("\n"),
    );
    std::fs::write(&path, go_mod).with_context(|| format!("cannot write {}", path.display()))?;
    crate::run(
        go().current_dir(path.parent().expect("go.mod has a folder"))
            .args(["mod", "tidy"]),
    )?;
    for tool in [&ETCD, &HELM, &CRANE] {
        let dir = workspace_root().join(tool.module_dir);
        crate::run(
            go().current_dir(&dir)
                .args(["get", &format!("{}@{}", tool.module, tool.version)]),
        )?;
        crate::run(go().current_dir(&dir).args(["mod", "tidy"]))?;
    }
    eprintln!(
        "xtask: pinned {}, {}, {} and {}",
        KUBERNETES.version, ETCD.version, HELM.version, CRANE.version
    );
    Ok(())
}

fn staging_replaces(upstream_go_mod: &str, staging_version: &str) -> Vec<String> {
    upstream_go_mod
        .lines()
        .filter_map(|line| {
            let (module, target) = line.trim().split_once("=>")?;
            let module = module.trim();
            target
                .trim()
                .starts_with("./staging/")
                .then(|| format!("\t{module} => {module} {staging_version}"))
        })
        .collect()
}

fn download_go_mod(module: &str, version: &str) -> Result<String> {
    let output = go()
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output()
        .context("cannot run go mod download")?;
    ensure!(
        output.status.success(),
        "go mod download {module}@{version} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let path = info["GoMod"]
        .as_str()
        .context("go mod download printed no GoMod path")?;
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

fn go() -> Command {
    let mut command = Command::new("go");
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", go_build_cache())
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly -buildvcs=false");
    command
}

fn go_version() -> Result<String> {
    let output = go().arg("version").output().map_err(|error| {
        anyhow::anyhow!(
            "cannot run `go` ({error}): Go 1.24 or later is needed to build the Kubernetes components the tests run against"
        )
    })?;
    ensure!(output.status.success(), "`go version` failed");
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("go")
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_mods_pin_the_versions_the_world_expects() {
        check_pin(&KUBERNETES).unwrap();
        check_pin(&ETCD).unwrap();
        check_pin(&SNAPSHOT_CONTROLLER).unwrap();
        check_pin(&CLUSTER_API).unwrap();
        check_pin(&CLUSTER_API_V1BETA2).unwrap();
        check_pin(&HELM).unwrap();
        check_pin(&CRANE).unwrap();
    }

    #[test]
    fn staging_modules_are_replaced_by_their_published_versions() {
        let upstream = "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/kubectl => ./staging/src/k8s.io/kubectl\n)\nreplace go.etcd.io/x => ../x\n";
        assert_eq!(
            staging_replaces(upstream, "v0.34.4"),
            vec![
                "\tk8s.io/api => k8s.io/api v0.34.4",
                "\tk8s.io/kubectl => k8s.io/kubectl v0.34.4"
            ]
        );
    }

    #[test]
    fn the_committed_replace_block_is_the_one_the_release_implies() {
        let committed =
            std::fs::read_to_string(workspace_root().join("tools/kubernetes/go.mod")).unwrap();
        let upstream = download_go_mod(KUBERNETES.module, KUBERNETES.version).unwrap();
        let expected = staging_replaces(&upstream, "v0.34.4");
        assert!(expected.len() > 25, "{expected:?}");
        let committed_replaces: Vec<&str> = committed
            .lines()
            .filter(|line| line.contains("=>"))
            .collect();
        assert_eq!(committed_replaces, expected);
    }

    /// Needs the module in Go's module cache, where `cargo xtask tools` (run before every test
    /// run) leaves it.
    #[test]
    fn cluster_api_s_crds_and_webhooks_are_copied_from_its_module() {
        let staging = std::env::temp_dir().join(format!("xtask-capi-{}", std::process::id()));
        std::fs::create_dir_all(&staging).unwrap();
        copy_module_files(&CLUSTER_API, &staging).unwrap();
        assert!(
            staging
                .join("crds/cluster.x-k8s.io_machines.yaml")
                .is_file()
        );
        assert!(
            staging
                .join("crds/cluster.x-k8s.io_machinedrainrules.yaml")
                .is_file()
        );
        let webhooks = std::fs::read_to_string(staging.join("webhooks.yaml")).unwrap();
        assert!(webhooks.contains("kind: ValidatingWebhookConfiguration"));
        std::fs::remove_dir_all(&staging).unwrap();
    }

    #[test]
    fn release_numbers_split_into_major_and_minor() {
        assert_eq!(major_minor("v1.34.4"), ("1".into(), "34".into()));
    }
}
