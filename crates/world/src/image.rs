//! gleaner's OCI image, assembled without a Docker daemon: one layer holding the binary, the
//! shared libraries `ldd` says it loads, the host's CA bundle and a non-root user, made into an
//! image with go-containerregistry's `crane` on a registry served on 127.0.0.1.
//!
//! Every file in the layer is owned by root with a zero timestamp and the image config carries
//! the zero time as its creation time, so the same binary always gives the same digest.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    Error, Packaging, Result,
    binaries::all_present,
    error::IoContext,
    ports,
    process::{Process, ProcessSpec, Supervisor},
};

/// Where released images are pushed: the chart's default `image.repository`, tagged with
/// gleaner's version.
pub const DEFAULT_REPOSITORY: &str = "ghcr.io/gleaner-dev/gleaner";
/// The `org.opencontainers.image.source` label of released images.
pub const SOURCE: &str = "https://github.com/gleaner-dev/gleaner";
const VERSION_LABEL: &str = "org.opencontainers.image.version";
const SOURCE_LABEL: &str = "org.opencontainers.image.source";

/// The binary's path in the image: the entrypoint.
const BINARY: &str = "usr/local/bin/gleaner";
/// distroless's `nonroot`: a numeric user, so the kubelet can enforce `runAsNonRoot`.
const USER: &str = "65532:65532";
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
/// Without this file glibc asks DNS before `/etc/hosts`.
const NSSWITCH: &str = "hosts: files dns\n";
/// Debian's bundle, read by rustls-native-certs (through openssl-probe) at this path.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

/// The default reference of gleaner `version`, the one the chart deploys.
pub fn default_reference(version: &str) -> String {
    format!("{DEFAULT_REPOSITORY}:{version}")
}

/// What goes into the image and where it is pushed.
#[derive(Clone, Copy, Debug)]
pub struct ImageSpec<'a> {
    /// A gleaner binary built for this machine's architecture.
    pub binary: &'a Path,
    /// gleaner's version, for the version label.
    pub version: &'a str,
    /// Where the source lives, for the source label.
    pub source: &'a str,
    /// A tag on a registry crane can push to without credentials, e.g. a [`Registry`]'s.
    pub reference: &'a str,
}

/// Stages the root filesystem as `layer.tar` in `work_dir` and pushes the image to
/// `spec.reference`: entrypoint the binary, `run` its default argument, user `nonroot`, the
/// version and source labels, and this machine's platform. Returns the manifest's digest,
/// `sha256:...`.
pub fn build(spec: &ImageSpec<'_>, crane: &Crane, work_dir: &Path) -> Result<String> {
    let layer = work_dir.join("layer.tar");
    root_filesystem(spec.binary)?.write_tar(&layer)?;
    crane.run(&[
        "append",
        "--oci-empty-base",
        &format!("--new_layer={}", layer.display()),
        &format!("--new_tag={}", spec.reference),
    ])?;
    crane.run(&[
        "mutate",
        spec.reference,
        &format!("--entrypoint=/{BINARY}"),
        "--cmd=run",
        &format!("--user={USER}"),
        "--workdir=/",
        &format!("--set-platform=linux/{}", architecture()),
        &format!("--label={VERSION_LABEL}={}", spec.version),
        &format!("--label={SOURCE_LABEL}={}", spec.source),
        &format!("--tag={}", spec.reference),
    ])?;
    crane.run(&["digest", spec.reference])
}

/// The `crane` binary.
#[derive(Clone, Debug)]
pub struct Crane {
    path: PathBuf,
}

impl Crane {
    /// The crane `cargo xtask tools` builds; fails with the command that builds it when missing.
    pub fn cached() -> Result<Self> {
        let path = Packaging::cached().crane;
        all_present([("crane", &path)])?;
        Ok(Self { path })
    }

    /// Runs crane with `args`; its standard output, trimmed.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let command = || format!("crane {}", args.join(" "));
        let output = Command::new(&self.path)
            .args(args)
            .output()
            .context(|| format!("cannot run `{}`", command()))?;
        if !output.status.success() {
            return Err(Error::CommandFailed {
                command: command(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// `crane registry serve` on a free port of 127.0.0.1, in memory, until dropped (or until the
/// process that started it ends).
pub struct Registry {
    host: String,
    // Held for their drops, in this order: the registry is killed, then the thread it is tied
    // to ends.
    _process: Process,
    _supervisor: Supervisor,
}

impl Registry {
    /// Starts the registry and waits until it accepts connections; its log is `registry.log`
    /// in `work_dir`.
    pub fn start(crane: &Crane, work_dir: &Path) -> Result<Self> {
        let supervisor = Supervisor::start()?;
        let mut attempt = 1;
        loop {
            match Self::serve(crane, work_dir, &supervisor) {
                Err(error) if error.is_port_race() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "the registry's port was taken: trying another");
                    attempt += 1;
                }
                served => {
                    let (host, process) = served?;
                    return Ok(Self {
                        host,
                        _process: process,
                        _supervisor: supervisor,
                    });
                }
            }
        }
    }

    fn serve(crane: &Crane, work_dir: &Path, supervisor: &Supervisor) -> Result<(String, Process)> {
        let port = ports::free_port()?;
        let host = format!("127.0.0.1:{port}");
        let process = Process::new(ProcessSpec {
            component: "crane registry".into(),
            program: crane.path.clone(),
            args: vec![
                "registry".into(),
                "serve".into(),
                format!("--address={host}"),
            ],
            log: work_dir.join("registry.log"),
        });
        ports::ensure_free(process.component(), port)?;
        process.start(supervisor)?;
        process.wait_ready_blocking(READY_TIMEOUT, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        })?;
        Ok((host, process))
    }

    /// This registry's twin of [`DEFAULT_REPOSITORY`]: the same path, on this host.
    pub fn repository(&self) -> String {
        let (_, path) = DEFAULT_REPOSITORY
            .split_once('/')
            .expect("the default repository names its registry");
        format!("{}/{path}", self.host)
    }
}

/// The image's `architecture`, in Go's names (the OCI image spec's), for this machine.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The files of the image's one layer, by path inside the image (relative, no leading `/`).
/// Sorted, so a directory comes before what it holds and the tar is the same every time.
#[derive(Default)]
struct RootFs(BTreeMap<PathBuf, Node>);

enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Content },
}

enum Content {
    Host(PathBuf),
    Text(&'static str),
}

fn root_filesystem(binary: &Path) -> Result<RootFs> {
    let mut root = RootFs::default();
    root.file(BINARY, 0o755, Content::Host(binary.to_owned()));
    for library in shared_libraries(binary)? {
        let in_image = library
            .strip_prefix("/")
            .expect("ldd prints absolute paths")
            .to_owned();
        root.file(in_image, 0o755, Content::Host(library));
    }
    root.file(
        CA_BUNDLE,
        0o644,
        Content::Host(Path::new("/").join(CA_BUNDLE)),
    );
    root.file("etc/passwd", 0o644, Content::Text(PASSWD));
    root.file("etc/group", 0o644, Content::Text(GROUP));
    root.file("etc/nsswitch.conf", 0o644, Content::Text(NSSWITCH));
    // The chart mounts an emptyDir here over a read-only root filesystem; the mount point must
    // exist, and be usable as /tmp without it.
    root.dir("tmp", 0o1777);
    Ok(root)
}

impl RootFs {
    fn file(&mut self, path: impl Into<PathBuf>, mode: u32, content: Content) {
        let path = path.into();
        for parent in path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                self.0
                    .entry(parent.to_owned())
                    .or_insert(Node::Dir { mode: 0o755 });
            }
        }
        self.0.insert(path, Node::File { mode, content });
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.0.insert(PathBuf::from(path), Node::Dir { mode });
    }

    fn write_tar(&self, out: &Path) -> Result<()> {
        let context = || format!("cannot write the image layer {}", out.display());
        let file = File::create(out).context(context)?;
        let mut tar = tar::Builder::new(BufWriter::new(file));
        for (path, node) in &self.0 {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match node {
                Node::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, path, std::io::empty())
                        .context(context)?;
                }
                Node::File { mode, content } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    match content {
                        Content::Host(source) => {
                            // Opened, not copied as a link: the image gets the file a host
                            // symlink (the ELF interpreter's, the CA bundle's) points to.
                            let file = File::open(source)
                                .context(|| format!("cannot read {}", source.display()))?;
                            let size = file
                                .metadata()
                                .context(|| format!("cannot read {}", source.display()))?
                                .len();
                            header.set_size(size);
                            tar.append_data(&mut header, path, file).context(context)?;
                        }
                        Content::Text(text) => {
                            header.set_size(text.len() as u64);
                            tar.append_data(&mut header, path, text.as_bytes())
                                .context(context)?;
                        }
                    }
                }
            }
        }
        tar.into_inner()
            .and_then(|mut writer| writer.flush())
            .context(context)
    }
}

/// The shared libraries and the ELF interpreter `binary` loads, as `ldd` resolves them here.
/// A static binary needs none.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context(|| format!("cannot run `ldd {}`", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(Error::CommandFailed {
            command: format!("ldd {}", binary.display()),
            status: output.status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    parse_ldd(binary, &stdout)
}

/// Reads glibc's `ldd` output: `name => /path (0x...)` for a library, `/path (0x...)` for the
/// interpreter, `name (0x...)` for the vDSO, which the kernel provides.
fn parse_ldd(binary: &Path, output: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim) {
        let (name, resolved) = match line.split_once(" => ") {
            Some((name, resolved)) => (name, resolved),
            None => (line, line),
        };
        if resolved.starts_with("not found") {
            return Err(Error::MissingLibrary {
                binary: binary.to_owned(),
                library: name.to_owned(),
            });
        }
        let path = resolved.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_each_library_and_the_interpreter() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd6b5f4000)\n\
             \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1c0c7d0000)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c0c400000)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c0c80e000)\n";
        assert_eq!(
            parse_ldd(Path::new("gleaner"), output).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_static_pie_needs_no_library() {
        assert!(
            parse_ldd(Path::new("gleaner"), "\tstatically linked\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_named() {
        let output = "\tlibssl.so.3 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        let error = parse_ldd(Path::new("gleaner"), output).unwrap_err();
        assert_eq!(
            error.to_string(),
            "gleaner needs libssl.so.3, which the dynamic linker cannot find on this machine"
        );
    }

    #[test]
    fn every_parent_directory_comes_before_its_files() {
        let mut root = RootFs::default();
        root.file("usr/local/bin/gleaner", 0o755, Content::Text(""));
        root.dir("tmp", 0o1777);
        root.file("etc/passwd", 0o644, Content::Text(""));
        let paths: Vec<_> = root
            .0
            .keys()
            .map(|path| path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/passwd",
                "tmp",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/gleaner"
            ]
        );
    }
}
