//! `cargo xtask image`: gleaner's OCI image, built without a Docker daemon.
//!
//! crane assembles the image on a registry served on 127.0.0.1 for the length of the task; what
//! is kept is an OCI layout, a tarball for `docker load` and `podman load`, and, on request, a
//! copy pushed to a registry the user names.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;
use gleaner_world::image::{self, ImageSpec, Registry};

#[derive(Args)]
pub struct ImageArgs {
    /// Put this gleaner binary in the image instead of building one with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Also push the image to this reference (with crane's credentials: `crane auth login`).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
}

pub fn run(args: ImageArgs) -> Result<()> {
    let crane = crate::tools::ensure_crane()?;
    let binary = match args.binary {
        Some(binary) => binary,
        None => crate::demo::build_gleaner(&["--release"])?,
    };
    let version = version_of(&binary)?;
    let started = Instant::now();
    let out = crate::workspace_root().join("target/image");
    let work = out.join("build");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot empty {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    let registry = Registry::start(&crane, &work)?;
    let local = format!("{}:{version}", registry.repository());
    let digest = image::build(
        &ImageSpec {
            binary: &binary,
            version: &version,
            source: image::SOURCE,
            reference: &local,
        },
        &crane,
        &work,
    )?;

    let layout = out.join("oci");
    // crane adds to a layout that exists: start from an empty one, so it holds this image only.
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("cannot replace {}", layout.display()))?;
    }
    crane.run(&[
        "pull",
        "--format=oci",
        &local,
        &layout.display().to_string(),
    ])?;
    // `crane pull` would name the tarball's image after the local registry's reference. A
    // mutate that changes nothing writes the same config and layers under the documented one.
    let documented = image::default_reference(&version);
    let tarball = out.join("gleaner.tar");
    crane.run(&[
        "mutate",
        &local,
        &format!("--tag={documented}"),
        &format!("--output={}", tarball.display()),
    ])?;
    if let Some(target) = &args.push {
        crane.run(&["copy", &local, target])?;
    }

    println!(
        "gleaner {version} image {} assembled in {:.1}s from {}",
        digest,
        started.elapsed().as_secs_f64(),
        binary.display()
    );
    println!("  OCI layout: {}", layout.display());
    println!(
        "  tarball:    {} (`docker load -i` or `podman load -i` names it {documented})",
        tarball.display()
    );
    match &args.push {
        Some(target) => println!("  pushed:     {target} ({digest})"),
        None => println!(
            "  to release: crane push {} {documented} (the chart's default image), or --push REF",
            layout.display()
        ),
    }
    Ok(())
}

/// What `gleaner --version` says, so the labels and the tag are the binary's own.
fn version_of(binary: &Path) -> Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .trim()
        .strip_prefix("gleaner ")
        .filter(|_| output.status.success())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{} --version printed {stdout:?}: is it gleaner?",
                binary.display()
            )
        })
}
