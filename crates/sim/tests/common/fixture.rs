//! A Harvester and one guest cluster, with the CSI driver between a guest namespace and a
//! Harvester namespace named after the test.

use gleaner_sim::{
    Clock, Env, Journal,
    csi::Csi,
    snapshots,
    snapshotter::{self, Storage},
    tasks::Tasks,
};
use gleaner_world::testing::ensure_namespace;
use gleaner_world::{ClusterName, Player, Role, World, WorldBuilder};
use kube::Client;
use tokio::sync::OnceCell;

pub const HARVESTER: &str = ClusterName::HARVESTER;
pub const GUEST: &str = "guest-1";

/// One world for every test of a binary; tests stay apart by namespace.
pub async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            WorldBuilder::empty()
                .cluster(HARVESTER, Role::Harvester)
                .guests(1)
                .start()
                .await
                .expect("the CSI test world starts")
        })
        .await
}

pub struct Fixture {
    pub csi: Csi,
    pub guest: Client,
    pub harvester: Client,
    pub namespace: String,
    pub journal: Journal,
    /// The stand-ins it runs; they stop when it is dropped.
    pub tasks: Tasks,
    /// The storage behind the csi-snapshotter sidecar, when the world's snapshot-controller is
    /// the real one.
    pub storage: Option<Storage>,
}

impl Fixture {
    /// The driver alone.
    pub async fn new(namespace: &str) -> Self {
        Self::start(namespace, false).await
    }

    /// The driver, and the snapshot-controller stand-in on both clusters.
    pub async fn with_snapshot_controller(namespace: &str) -> Self {
        Self::start(namespace, true).await
    }

    async fn start(namespace: &str, snapshot_controller: bool) -> Self {
        let world = world().await;
        let guest = world.client(GUEST).await.unwrap();
        let harvester = world.client(HARVESTER).await.unwrap();
        ensure_namespace(&guest, namespace).await.unwrap();
        ensure_namespace(&harvester, namespace).await.unwrap();
        let journal = Journal::default();
        let env = Env {
            clock: Clock::new(0.01),
            journal: journal.clone(),
        };
        let mut tasks = Tasks::default();
        // Where the world runs the real snapshot-controller in the guest, a stand-in would be a
        // second writer of its contents.
        if snapshot_controller && world.snapshots() == Player::Sim {
            snapshots::spawn(guest.clone(), namespace, env.clone(), &mut tasks);
        }
        // The real snapshot-controller watches every namespace of the Harvester, so its sidecar
        // must run wherever snapshots are made; the stand-in only where the test asks for one.
        let storage = match world.snapshots() {
            Player::Real => Some(snapshotter::spawn(
                harvester.clone(),
                namespace,
                snapshotter::Driver::Longhorn,
                env.clone(),
                &mut tasks,
            )),
            Player::Sim if snapshot_controller => {
                snapshots::spawn(harvester.clone(), namespace, env.clone(), &mut tasks);
                None
            }
            Player::Sim => None,
        };
        let csi = Csi::new(guest.clone(), harvester.clone(), namespace, env.clone())
            .with_guest_snapshots(world.snapshots());
        if world.snapshots() == Player::Real {
            snapshotter::spawn(
                guest.clone(),
                namespace,
                snapshotter::Driver::HarvesterCsi(Box::new(csi.clone())),
                env,
                &mut tasks,
            );
        }
        Self {
            csi,
            guest,
            harvester,
            namespace: namespace.to_owned(),
            journal,
            tasks,
            storage,
        }
    }
}
