//! The admin HTTP server: `/livez` (always 200), `/readyz` (200 once every registered watch has
//! synced, else 503 naming the ones that have not) and `/metrics` (OpenMetrics text).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{Error, Result, metrics::Metrics};

/// Which watches have synced. Controllers [`register`](Readiness::register) one flag per watch
/// and flip it when the watch's first list is in (e.g. after
/// `kube::runtime::reflector::Store::wait_until_ready`); gleaner is ready when all are flipped.
#[derive(Clone, Default)]
pub struct Readiness {
    watches: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Readiness {
    /// Registers a watch that must sync before gleaner is ready.
    pub fn register(&self, name: impl Into<String>) -> WatchSynced {
        let mut watches = self.lock();
        watches.push((name.into(), false));
        WatchSynced {
            readiness: self.clone(),
            index: watches.len() - 1,
        }
    }

    /// The names of the registered watches that have not synced yet; empty when ready.
    pub fn unsynced(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, synced)| !synced)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Returns once every registered watch has synced.
    pub async fn wait_until_synced(&self) {
        while !self.unsynced().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, bool)>> {
        // The data is a list of flags: a panic elsewhere cannot leave it half-updated.
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flag of one registered watch.
pub struct WatchSynced {
    readiness: Readiness,
    index: usize,
}

impl WatchSynced {
    /// The watch has synced.
    pub fn synced(self) {
        if let Some((_, synced)) = self.readiness.lock().get_mut(self.index) {
            *synced = true;
        }
    }
}

/// The admin server, bound but not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds `addr`, so that a port in use fails at startup rather than later.
    pub async fn bind(addr: SocketAddr, readiness: Readiness, metrics: Metrics) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::AdminBind { addr, source })?;
        let router = Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz).with_state(readiness))
            .route("/metrics", get(metrics_text).with_state(metrics));
        Ok(Self { listener, router })
    }

    /// The bound address (the actual port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::AdminServe)
    }

    /// Serves until the future is dropped; returns only on an I/O error.
    pub async fn run(self) -> Result<()> {
        axum::serve(self.listener, self.router)
            .await
            .map_err(Error::AdminServe)
    }
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let unsynced = readiness.unsynced();
    if unsynced.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let message = format!("waiting for watches to sync: {}\n", unsynced.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    }
}

async fn metrics_text(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A bare HTTP/1.0 GET: the status code and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[test]
    fn ready_only_once_every_watch_has_synced() {
        let readiness = Readiness::default();
        assert!(readiness.unsynced().is_empty(), "nothing to wait for");
        let machines = readiness.register("machines");
        let clusters = readiness.register("clusters");
        assert_eq!(readiness.unsynced(), ["machines", "clusters"]);
        clusters.synced();
        assert_eq!(readiness.unsynced(), ["machines"]);
        machines.synced();
        assert!(readiness.unsynced().is_empty());
        let footprints = readiness.register("footprints");
        assert_eq!(readiness.unsynced(), ["footprints"]);
        footprints.synced();
        assert!(readiness.unsynced().is_empty());
    }

    #[tokio::test]
    async fn endpoints_report_liveness_readiness_and_metrics() {
        let readiness = Readiness::default();
        let metrics = Metrics::default();
        let machines = readiness.register("machines");
        let _clusters = readiness.register("clusters");
        let server = AdminServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            readiness.clone(),
            metrics.clone(),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let serving = tokio::spawn(server.run());

        assert_eq!(get(addr, "/livez").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("machines, clusters"), "{body}");
        machines.synced();
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(
            !body.contains("machines") && body.contains("clusters"),
            "{body}"
        );

        metrics.leader(true);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.lines().any(|line| line == "gleaner_leader 1"),
            "{body}"
        );
        assert_eq!(get(addr, "/nothing").await.0, 404);
        serving.abort();
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_in_the_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = AdminServer::bind(addr, Readiness::default(), Metrics::default())
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
        assert_eq!(error.metric_label(), "admin");
    }
}
