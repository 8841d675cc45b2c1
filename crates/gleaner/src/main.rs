//! gleaner: reclaims the Harvester storage that deleted Rancher guest clusters leave behind.

use std::process::ExitCode;

use clap::Parser;

use gleaner::{
    cli::{Cli, Command, UnhookArgs},
    footprint, management, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(cli.log.log_format) {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gleaner stopped");
            ExitCode::FAILURE
        }
    }
}

async fn unhook(args: UnhookArgs) -> gleaner::Result<()> {
    let client = args.kube.client().await?;
    let unhooked = management::unhook(&client, &args.watch).await?;
    println!("removed gleaner's hook from {unhooked} Machine(s)");
    Ok(())
}
