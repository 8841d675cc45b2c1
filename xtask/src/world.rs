//! `cargo xtask world`: a world for people, with kubectl.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gleaner_sim::{
    Clock, Env, Journal,
    harvester::{Harvester, HarvesterVersion},
    rancher::{GuestClusterSpec, PoolSpec, Rancher, RancherSettings},
    snapshots, snapshotter,
};
use gleaner_world::{CapiVersion, ClusterName, Player, World};

#[derive(Args)]
pub struct WorldArgs {
    /// How many guest-cluster apiservers to add (`guest-1` ... `guest-N`).
    #[arg(long, default_value_t = 0)]
    guests: usize,
    /// The Cluster API version the management cluster serves.
    #[arg(long, value_enum, default_value_t = Capi::V1beta1)]
    capi: Capi,
    /// Who plays the snapshot-controller on the Harvester: the real one (built by `cargo xtask
    /// tools`) or the simulators' stand-in.
    #[arg(long, value_enum, default_value_t = PlayerArg::Real)]
    snapshots: PlayerArg,
    /// Who plays Cluster API's core controllers: the real manager (built by `cargo xtask
    /// tools`, the release that serves `--capi`; the default) or the simulators.
    #[arg(long, value_enum)]
    capi_controllers: Option<PlayerArg>,
    /// Where to write one kubeconfig per cluster.
    #[arg(long, default_value = "target/world")]
    kubeconfigs: PathBuf,
    /// Start the control planes alone, to drive every actor by hand with kubectl.
    #[arg(long)]
    no_simulators: bool,
    /// Guest clusters to provision at start (one pool of two machines each); repeatable.
    #[arg(long = "cluster", value_name = "NAME")]
    clusters: Vec<String>,
}

/// Where the simulators act when a person drives the world.
const RANCHER_NAMESPACE: &str = "fleet-default";
const HARVESTER_NAMESPACE: &str = "default";

/// Who plays an upstream controller: the real one or the simulators.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlayerArg {
    Real,
    Sim,
}

impl From<PlayerArg> for Player {
    fn from(player: PlayerArg) -> Self {
        match player {
            PlayerArg::Real => Player::Real,
            PlayerArg::Sim => Player::Sim,
        }
    }
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
        let mut builder = World::builder()
            .guests(args.guests)
            .capi(capi)
            .snapshots(args.snapshots.into());
        if let Some(controllers) = args.capi_controllers {
            builder = builder.capi_controllers(controllers.into());
        }
        let world = builder.start().await?;
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
            std::fs::copy(world.kubeconfig(&cluster)?, &kubeconfig)
                .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
            println!(
                "  {cluster} ({role:?}): kubectl --kubeconfig {}",
                kubeconfig.display()
            );
        }
        for (cluster, _) in world.clusters() {
            println!("CRDs installed in {cluster}:");
            for crd in world.crds(&cluster)? {
                println!("  {crd}");
            }
        }
        let _simulators = if args.no_simulators {
            println!("No simulators run: every actor is yours to play with kubectl.");
            None
        } else {
            let simulators = start_simulators(&world).await?;
            for name in &args.clusters {
                let cluster = simulators
                    .0
                    .provision(&GuestClusterSpec {
                        name: name.clone(),
                        harvester: ClusterName::HARVESTER.to_owned(),
                        vm_namespace: HARVESTER_NAMESPACE.to_owned(),
                        guest: None,
                        pools: vec![PoolSpec::new("pool1", 2)],
                    })
                    .await?;
                println!(
                    "Provisioned guest cluster {RANCHER_NAMESPACE}/{name}: VMs {:?}",
                    cluster
                        .machines
                        .iter()
                        .map(|machine| &machine.vm)
                        .collect::<Vec<_>>()
                );
            }
            Some(simulators)
        };
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("Stopping.");
        Ok(())
    })
}

/// Rancher and Cluster API in `rancher`, acting in `fleet-default`; Harvester's VM controller,
/// PVC controller and PVC webhook in `harvester`, acting in `default`; all at real speed.
async fn start_simulators(world: &World) -> Result<(Rancher, Harvester)> {
    let env = Env {
        clock: Clock::real(),
        journal: Journal::default(),
    };
    let settings = RancherSettings::default();
    let rancher = Rancher::start(
        world,
        ClusterName::RANCHER,
        RANCHER_NAMESPACE,
        settings.clone(),
        env.clone(),
    )
    .await?;
    let mut harvester = Harvester::start(
        world,
        ClusterName::HARVESTER,
        HARVESTER_NAMESPACE,
        HarvesterVersion::default(),
        &env,
    )
    .await?;
    let harvester_client = world.client(ClusterName::HARVESTER).await?;
    let snapshot_actor = match world.snapshots() {
        Player::Real => {
            snapshotter::spawn(
                harvester_client,
                HARVESTER_NAMESPACE,
                snapshotter::Driver::Longhorn,
                env.clone(),
                &mut harvester.tasks,
            );
            "the csi-snapshotter sidecar (beside the real snapshot-controller)"
        }
        Player::Sim => {
            snapshots::spawn(
                harvester_client,
                HARVESTER_NAMESPACE,
                env.clone(),
                &mut harvester.tasks,
            );
            "the snapshot-controller stand-in"
        }
    };
    let capi_actor = match world.capi_controllers() {
        Player::Real => "Rancher's providers around the real Cluster API manager",
        Player::Sim => "Rancher, Cluster API",
    };
    println!(
        "Simulators: {capi_actor} and node driver {} (cleanup handler {}, remove job after {}s) in rancher/{RANCHER_NAMESPACE}; \
         Harvester's VM controller, PVC controller, PVC webhook and {snapshot_actor} in harvester/{HARVESTER_NAMESPACE} (the Harvester namespace of the guest VMs)",
        settings.driver,
        if settings.cleanup_handler {
            "on"
        } else {
            "off"
        },
        settings.remove_job_delay.as_secs(),
    );
    Ok((rancher, harvester))
}
