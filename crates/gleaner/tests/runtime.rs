//! The runtime against a real apiserver: leader election on a Lease, and the `gleaner run`
//! binary's admin server.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gleaner::{cli::LeaseArgs, leadership::Leadership, metrics::Metrics};
use gleaner_world::ClusterName;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::process::Command;

const RANCHER: &str = ClusterName::RANCHER;
const BINARY: &str = env!("CARGO_BIN_EXE_gleaner");

/// A namespace of its own for each test in the shared world.
async fn namespace(client: &Client, name: &str) -> String {
    gleaner_world::testing::ensure_namespace(client, name)
        .await
        .unwrap();
    name.to_owned()
}

/// Waits until `check` holds, for at most `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn lease(duration: Duration) -> LeaseArgs {
    LeaseArgs {
        lease_name: "gleaner".to_owned(),
        lease_duration: duration,
    }
}

async fn holder(client: &Client, namespace: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    leases
        .get_opt("gleaner")
        .await
        .unwrap()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
        .filter(|holder| !holder.is_empty())
}

fn leader_gauge(metrics: &Metrics) -> String {
    let text = metrics.encode().unwrap();
    text.lines()
        .find(|line| line.starts_with("gleaner_leader "))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_within_the_lease_duration_when_the_leader_dies() {
    let world = common::world().await;
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "leadership-takeover").await;
    let duration = Duration::from_secs(2);

    // The first replica runs on a runtime of its own, so that it can die without releasing
    // anything, as a killed pod would.
    let (doomed_runtime, first) = {
        let client = client.clone();
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let first = runtime.block_on(async {
                let first = Leadership::start(
                    client,
                    &ns,
                    &lease(duration),
                    "first".to_owned(),
                    Metrics::default(),
                )
                .await
                .unwrap();
                let mut leading = first.watch();
                leading.wait_for(|leading| *leading).await.unwrap();
                first
            });
            (runtime, first)
        })
        .await
        .unwrap()
    };
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("first"));

    let metrics = Metrics::default();
    let second = Leadership::start(
        client.clone(),
        &ns,
        &lease(duration),
        "second".to_owned(),
        metrics.clone(),
    )
    .await
    .unwrap();
    // Over several renewals, exactly one leads: the first, which renews in time.
    for _ in 0..30 {
        assert!(
            first.is_leader(),
            "the first replica lost a Lease it renews"
        );
        assert!(!second.is_leader(), "two replicas lead at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leader_gauge(&metrics), "gleaner_leader 0");

    tokio::task::spawn_blocking(move || doomed_runtime.shutdown_background())
        .await
        .unwrap();
    let took = within(
        duration + Duration::from_secs(3),
        "the standby takes over",
        || async { second.is_leader() },
    )
    .await;
    println!("the standby took over {took:?} after the leader died");
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("second"));
    assert_eq!(leader_gauge(&metrics), "gleaner_leader 1");
    drop(first);
    second.stop().await;
}

#[tokio::test]
async fn a_stopped_leader_clears_the_lease_and_its_standby_takes_over() {
    let world = common::world().await;
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "leadership-handover").await;
    let duration = Duration::from_secs(3);
    let first_metrics = Metrics::default();
    let first = Leadership::start(
        client.clone(),
        &ns,
        &lease(duration),
        "first".to_owned(),
        first_metrics.clone(),
    )
    .await
    .unwrap();
    within(
        Duration::from_secs(10),
        "the first replica leads",
        || async { first.is_leader() },
    )
    .await;
    assert_eq!(leader_gauge(&first_metrics), "gleaner_leader 1");
    let second = Leadership::start(
        client.clone(),
        &ns,
        &lease(duration),
        "second".to_owned(),
        Metrics::default(),
    )
    .await
    .unwrap();
    let mut first_leading = first.watch();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_leader());

    first.stop().await;
    assert!(!*first_leading.borrow_and_update(), "writers see the loss");
    assert_eq!(leader_gauge(&first_metrics), "gleaner_leader 0");
    assert_ne!(holder(&client, &ns).await.as_deref(), Some("first"));
    within(
        duration + Duration::from_secs(3),
        "the standby takes over",
        || async { second.is_leader() },
    )
    .await;
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("second"));
    second.stop().await;
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn gleaner_run_serves_liveness_readiness_and_metrics_and_leads() {
    let world = common::world().await;
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "gleaner-run-smoke").await;
    let addr = free_port();
    let log_path = world.dir().join("logs").join("gleaner-run-smoke.log");
    let mut gleaner = Command::new(BINARY)
        .arg("run")
        .arg("--kubeconfig")
        .arg(world.kubeconfig(RANCHER).unwrap())
        .arg("--admin-addr")
        .arg(addr.to_string())
        .arg("--namespace")
        .arg(&ns)
        .env("GLEANER_LEASE_DURATION", "2s")
        .env("POD_NAME", "gleaner-smoke-0")
        // A file, not a pipe: nobody reads a pipe while gleaner runs, and a full one blocks it.
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    within(Duration::from_secs(30), "/livez answers 200", || async {
        common::http_get(addr, "/livez")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    within(Duration::from_secs(30), "/readyz answers 200", || async {
        common::http_get(addr, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    within(
        Duration::from_secs(30),
        "/metrics shows it leads",
        || async {
            common::http_get(addr, "/metrics")
                .await
                .is_some_and(|(status, body)| {
                    status == 200 && body.lines().any(|line| line == "gleaner_leader 1")
                })
        },
    )
    .await;
    assert_eq!(
        holder(&client, &ns).await.as_deref(),
        Some("gleaner-smoke-0")
    );

    let pid = gleaner.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), gleaner.wait())
        .await
        .expect("gleaner exits on SIGTERM")
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(exit.success(), "{exit}\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert_eq!(holder(&client, &ns).await, None, "the Lease is released");
}

#[tokio::test]
async fn env_twins_configure_gleaner_run() {
    let output = Command::new(BINARY)
        .arg("run")
        .env("GLEANER_DRY_RUN", "true")
        .env("GLEANER_LOG_FORMAT", "json")
        .env("GLEANER_KUBECONFIG", "/nonexistent/gleaner.kubeconfig")
        .env("GLEANER_WATCH_NAMESPACES", "fleet-a,fleet-b")
        .output()
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    for expected in [
        r#""dry_run":true"#,
        r#"fleet-a"#,
        r#"fleet-b"#,
        "/nonexistent/gleaner.kubeconfig",
    ] {
        assert!(log.contains(expected), "{expected} missing from\n{log}");
    }
    assert!(
        log.lines().all(|line| line.starts_with('{')),
        "JSON lines only:\n{log}"
    );
}
