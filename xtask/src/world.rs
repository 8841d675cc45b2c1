//! `cargo xtask world`: a world for people, with kubectl.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gleaner_world::{CapiVersion, World};

#[derive(Args)]
pub struct WorldArgs {
    /// How many guest-cluster apiservers to add (`guest-1` ... `guest-N`).
    #[arg(long, default_value_t = 0)]
    guests: usize,
    /// The Cluster API version the management cluster serves.
    #[arg(long, value_enum, default_value_t = Capi::V1beta1)]
    capi: Capi,
    /// Where to write one kubeconfig per cluster.
    #[arg(long, default_value = "target/world")]
    kubeconfigs: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Capi {
    V1beta1,
    V1beta2,
}

pub fn run(args: WorldArgs) -> Result<()> {
    crate::tools::ensure_built()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    runtime.block_on(async {
        let capi = match args.capi {
            Capi::V1beta1 => CapiVersion::V1beta1,
            Capi::V1beta2 => CapiVersion::V1beta2,
        };
        let world = World::builder()
            .guests(args.guests)
            .capi(capi)
            .start()
            .await?;
        let folder = crate::workspace_root().join(&args.kubeconfigs);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        println!(
            "World started in {:.1}s; logs and certificates in {}",
            world.start_time().as_secs_f64(),
            world.dir().display()
        );
        println!("Kubeconfigs in {}:", folder.display());
        for (cluster, role) in world.clusters() {
            let kubeconfig = folder.join(format!("{cluster}.kubeconfig"));
            std::fs::copy(world.kubeconfig(cluster)?, &kubeconfig)
                .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
            println!(
                "  {cluster} ({role:?}): kubectl --kubeconfig {}",
                kubeconfig.display()
            );
        }
        for (cluster, _) in world.clusters() {
            println!("CRDs installed in {cluster}:");
            for crd in world.crds(cluster)? {
                println!("  {crd}");
            }
        }
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("Stopping.");
        Ok(())
    })
}
