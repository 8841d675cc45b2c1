//! gleaner: reclaims the Harvester storage that deleted Rancher guest clusters leave behind.
//!
//! This crate holds the runtime every controller runs in: the command line ([`cli`]), logging
//! ([`telemetry`]), metrics ([`metrics`]), the admin server and readiness ([`admin`]), leader
//! election ([`leadership`]) and the crate's [`Error`]. [`run`] wires them together and runs
//! the controllers it is given.

pub mod admin;
pub mod cli;
mod error;
pub mod events;
pub mod footprint;
pub mod inspect;
mod installation;
pub mod leadership;
pub mod management;
pub mod metrics;
pub mod stop;
pub mod telemetry;
pub mod timeouts;
pub mod user_agent;

use kube::Client;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

pub use error::{Error, Result};

use crate::{
    admin::{AdminServer, Readiness},
    cli::{ControllerArgs, RunArgs},
    leadership::Leadership,
    metrics::Metrics,
};

/// What the controllers get from the runtime; cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// A client for the management cluster.
    pub client: Client,
    /// Namespaces, dry run, hook timeout, concurrency.
    pub config: ControllerArgs,
    /// The timeout of every Kubernetes API call (`--api-timeout`).
    pub api_timeout: std::time::Duration,
    /// gleaner's metrics.
    pub metrics: Metrics,
    /// Register each watch here and flip it once synced: `/readyz` waits for all of them.
    pub readiness: Readiness,
    /// `true` while this replica holds the Lease. Check it before every write
    /// (`*leader.borrow()`), or wait for it (`leader.wait_for(|leading| *leading)`).
    pub leader: watch::Receiver<bool>,
}

/// Runs gleaner until SIGTERM or Ctrl-C, until the controllers return, or until the admin
/// server fails.
///
/// `controllers` is called once with the [`Context`] and returns the future that drives every
/// controller. Register every watch with [`Context::readiness`] in the closure body, before
/// returning the future, so that `/readyz` never answers 200 before a watch has even been
/// registered:
///
/// ```no_run
/// # async fn example(args: gleaner::cli::RunArgs) -> gleaner::Result<()> {
/// gleaner::run(args, |context| {
///     let machines = context.readiness.register("machines");
///     async move {
///         // ... start the watch; once its store is ready:
///         machines.synced();
///         // ... drive the controllers, gating writes on `context.leader`.
///         Ok(())
///     }
/// })
/// .await
/// # }
/// ```
///
/// On the way out this replica leaves the election: writers see `leader == false`, then the
/// Lease's holder is cleared; a standby takes it at its next check, within one lease duration.
pub async fn run<F, Fut>(args: RunArgs, controllers: F) -> Result<()>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = %args.controller.namespace,
        watch_namespaces = ?args.controller.watch.watch_namespaces,
        hook_timeout = ?args.controller.hook_timeout,
        concurrency = args.controller.concurrency,
        dry_run = args.controller.dry_run,
        lease = %args.lease.lease_name,
        lease_duration = ?args.lease.lease_duration,
        "starting gleaner"
    );
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let client = args.kube.client().await?;
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    let admin =
        AdminServer::bind(args.admin.admin_addr, readiness.clone(), metrics.clone()).await?;
    tracing::info!(addr = %admin.local_addr()?, "admin server listening");
    installation::refuse_another(&client, &args.controller.namespace, &args.controller.watch)
        .await?;
    let leadership = Leadership::start(
        client.clone(),
        &args.controller.namespace,
        &args.lease,
        leadership::identity(),
        metrics.clone(),
    )
    .await?;
    installation::mark(
        &client,
        &args.controller.namespace,
        &args.lease.lease_name,
        &args.controller.watch,
    )
    .await?;
    let context = Context {
        client,
        config: args.controller,
        api_timeout: args.kube.api_timeout,
        metrics,
        readiness,
        leader: leadership.watch(),
    };
    let controllers = controllers(context);
    let outcome = tokio::select! {
        result = controllers => result,
        result = admin.run() => result,
        _ = terminate.recv() => {
            tracing::info!("SIGTERM: shutting down");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted: shutting down");
            Ok(())
        }
    };
    leadership.stop().await;
    outcome
}
