use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{Result, error::IoContext};

/// How many world folders to keep under `target/gleaner-worlds`; older ones are pruned when a
/// new world starts. A failed test's logs therefore stay until a few dozen later runs.
const WORLDS_KEPT: usize = 40;
const TMPFS: &str = "/dev/shm";
const ETCD_PREFIX: &str = "gleaner-etcd-";

/// Where one world keeps its files: certificates, kubeconfigs and logs under `target/`, and etcd's
/// data on tmpfs when there is one (it is a test: speed over durability).
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) etcd_data: PathBuf,
}

impl Layout {
    pub(crate) fn create() -> Result<Self> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let worlds = worlds_dir();
        std::fs::create_dir_all(&worlds)
            .context(|| format!("cannot create {}", worlds.display()))?;
        let worlds = worlds
            .canonicalize()
            .context(|| format!("cannot resolve {}", worlds.display()))?;
        prune_old_worlds(&worlds);
        prune_orphaned_etcd_data();
        let root = worlds.join(format!("{stamp}-{pid}-{sequence}"));
        let etcd_parent = if is_writable_dir(Path::new(TMPFS)) {
            PathBuf::from(TMPFS)
        } else {
            root.clone()
        };
        let etcd_data = etcd_parent.join(format!("{ETCD_PREFIX}{pid}-{sequence}"));
        // Left by an earlier process with the same (recycled) pid: never start etcd on it.
        let _ = std::fs::remove_dir_all(&etcd_data);
        for dir in [&root, &root.join("logs")] {
            std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(Self { root, etcd_data })
    }

    pub(crate) fn log(&self, component: &str) -> PathBuf {
        self.root.join("logs").join(format!("{component}.log"))
    }

    /// Where a cluster's apiserver writes its audit log, when the world asks for one.
    pub(crate) fn audit_log(&self, cluster: &str) -> PathBuf {
        self.log(&format!("audit-{cluster}"))
    }

    pub(crate) fn cluster_dir(&self, cluster: &str) -> Result<PathBuf> {
        let dir = self.root.join("clusters").join(cluster);
        std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Removes the etcd data; the folder under `target/` with the logs is removed only when
    /// `keep_logs` is false.
    pub(crate) fn remove(&self, keep_logs: bool) {
        let _ = std::fs::remove_dir_all(&self.etcd_data);
        if !keep_logs {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// `$GLEANER_WORLDS_DIR`, else `target/gleaner-worlds` of this workspace.
fn worlds_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLEANER_WORLDS_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("gleaner-worlds")
}

fn prune_old_worlds(worlds: &Path) {
    let Ok(entries) = std::fs::read_dir(worlds) else {
        return;
    };
    let mut dirs: Vec<((u64, u32, u32), PathBuf)> = entries
        .flatten()
        .map(|entry| (age_key(&entry.file_name().to_string_lossy()), entry.path()))
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(WORLDS_KEPT);
    for ((_, pid, _), dir) in &dirs[..excess] {
        // A world whose process lives is in use, however old.
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `<start seconds>-<pid>-<sequence>` as numbers, so that age order holds whatever their
/// digit counts (pids wrap around); a name of another shape sorts first.
fn age_key(name: &str) -> (u64, u32, u32) {
    let mut parts = name.split('-').map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(stamp)), Some(Ok(pid)), Some(Ok(sequence))) => (
            stamp,
            u32::try_from(pid).unwrap_or(0),
            u32::try_from(sequence).unwrap_or(0),
        ),
        _ => (0, 0, 0),
    }
}

/// A test binary's shared world is never dropped, so its etcd data outlives it on tmpfs: remove
/// the data of worlds whose process is gone.
fn prune_orphaned_etcd_data() {
    let Ok(entries) = std::fs::read_dir(TMPFS) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(ETCD_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_writable_dir(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|meta| meta.is_dir() && !meta.permissions().readonly())
}

pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_age_by_start_time_whatever_the_pid_digits() {
        let mut names = [
            "1795563478-8967-0",
            "1795562800-24742-0",
            "1795562800-24742-1",
        ];
        names.sort_by_key(|name| age_key(name));
        assert_eq!(
            names,
            [
                "1795562800-24742-0",
                "1795562800-24742-1",
                "1795563478-8967-0"
            ]
        );
        assert_eq!(age_key("stray"), (0, 0, 0));
    }
}
