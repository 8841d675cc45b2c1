//! gleaner: reclaims the Harvester storage that deleted Rancher guest clusters leave behind.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::LevelFilter;

use gleaner::{
    cli::{Cli, Command, UnhookArgs},
    footprint, inspect, management, stop, telemetry,
};

/// `gleaner audit`'s exit status when it finds orphans, so a CronJob can alert on it.
const ORPHANS_FOUND: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // People read what plan and explain print, and their one-line error: nothing logs unless
    // RUST_LOG asks.
    let quiet = matches!(
        cli.command,
        Command::Plan(_) | Command::Explain(_) | Command::Audit(_) | Command::Adopt(_)
    );
    let level = if quiet {
        LevelFilter::OFF
    } else {
        LevelFilter::INFO
    };
    if let Err(error) = telemetry::init(cli.log.log_format, level) {
        eprintln!("gleaner: {error}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => {
            gleaner::run(args, |context| {
                let started = context.readiness.register("cluster-api discovery");
                management::start(context, started)
            })
            .await
        }
        Command::Crd => {
            print!("{}", footprint::crds_yaml());
            Ok(())
        }
        Command::Unhook(args) => unhook(args).await,
        Command::Plan(args) => inspect::plan::report(&args).await.and_then(|report| {
            inspect::print(args.inspect.output, &report, |wide| {
                inspect::plan::table(&report, wide)
            })
        }),
        Command::Explain(args) => inspect::explain::report(&args).await.and_then(|report| {
            inspect::print(args.inspect.output, &report, |_| {
                inspect::explain::table(&report)
            })
        }),
        Command::Adopt(args) => inspect::adopt::report(&args).await.and_then(|report| {
            inspect::print(args.audit.inspect.output, &report, |_| {
                inspect::adopt::table(&report)
            })
        }),
        Command::Audit(args) => {
            return match inspect::audit::report(&args).await.and_then(|report| {
                inspect::print(args.inspect.output, &report, |wide| {
                    inspect::audit::table(&report, wide)
                })?;
                Ok(report.totals.orphans)
            }) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(ORPHANS_FOUND),
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if quiet => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            tracing::error!(%error, "gleaner stopped");
            ExitCode::FAILURE
        }
    }
}

async fn unhook(args: UnhookArgs) -> gleaner::Result<()> {
    let client = args.kube.client().await?;
    let lingering = match &args.stop_deployment {
        Some(deployment) => {
            stop::stop(&client, &args.namespace, deployment, args.stop_timeout).await?
        }
        None => Vec::new(),
    };
    let unhooked = management::unhook(&client, &args.watch).await?;
    println!("removed gleaner's hook from {unhooked} Machine(s)");
    match (&args.stop_deployment, lingering.is_empty()) {
        (Some(deployment), false) => Err(gleaner::Error::ReplicasLingered {
            deployment: format!("{}/{deployment}", args.namespace),
            pods: lingering,
            waited: humantime::format_duration(args.stop_timeout).to_string(),
        }),
        _ => Ok(()),
    }
}
