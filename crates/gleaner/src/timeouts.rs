//! Every Kubernetes client gleaner builds (Rancher's and each Harvester's) gets connect, read
//! and write timeouts: kube's defaults have no read timeout, so a server that accepts a
//! connection and never answers would hang a reconcile forever. Watches stay quiet for long
//! stretches, so the server is asked to end each watch before the read timeout could fire.

use std::time::Duration;

use kube::runtime::watcher;

/// `config` with `timeout` for connecting, reading and writing; the read timeout counts from
/// each request, not from when a pooled connection went idle.
pub fn bounded(mut config: kube::Config, timeout: Duration) -> kube::Config {
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config
}

/// A watcher configuration whose watches the server ends well within `timeout`.
pub fn watcher_config(timeout: Duration) -> watcher::Config {
    watcher::Config::default().timeout(watch_seconds(timeout))
}

fn watch_seconds(timeout: Duration) -> u32 {
    let seconds = timeout.as_secs().saturating_mul(3) / 4;
    u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_ends_before_the_read_timeout() {
        for seconds in [2, 3, 30, 600] {
            let timeout = Duration::from_secs(seconds);
            let watch = Duration::from_secs(u64::from(watch_seconds(timeout)));
            assert!(
                watch < timeout && watch >= Duration::from_secs(1),
                "{seconds}"
            );
        }
    }

    #[test]
    fn every_timeout_is_set() {
        let config = bounded(
            kube::Config::new("https://127.0.0.1:6443".parse().unwrap()),
            Duration::from_secs(7),
        );
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(config.read_timeout, Some(Duration::from_secs(7)));
        assert_eq!(config.write_timeout, Some(Duration::from_secs(7)));
        assert!(config.reset_reader_on_write);
    }
}
