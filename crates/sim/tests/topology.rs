//! Identity and topology: a second Rancher installation and a second Harvester sharing the
//! guest clusters' Harvester namespace.

mod common;

use common::{MEASURE_TIMEOUT, TIME_SCALE, upstream};
use gleaner_sim::{
    Clock,
    rancher::DriverVersion,
    scenario::{Class, ClusterKey, ClusterPlan, Report, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, Role, World};
use tokio::sync::OnceCell;

const SECOND_RANCHER: &str = "rancher-2";
const SECOND_HARVESTER: &str = "harvester-2";

/// This binary's world: two Rancher installations, two Harvesters (each scenario starts its
/// clusters' guest apiservers).
async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            World::builder()
                .cluster(SECOND_RANCHER, Role::Management)
                .cluster(SECOND_HARVESTER, Role::Harvester)
                .start()
                .await
                .unwrap()
        })
        .await
}

fn prod() -> ClusterPlan {
    ClusterPlan::new("prod", 1)
        .volume(VolumePlan::new("data").hotplugged())
        .volume(VolumePlan::new("scratch").unattached())
}

async fn delete(scenario: ScenarioBuilder, key: impl Fn(&ClusterKey) -> bool) -> Report {
    let mut scenario = scenario
        .rancher(upstream(DriverVersion::V1_0_6))
        .clock(Clock::new(TIME_SCALE))
        .start(world().await)
        .await
        .unwrap();
    let doomed = scenario.cluster_keys().find(|k| key(k)).unwrap().clone();
    scenario.delete_cluster(&doomed).await.unwrap();
    scenario.measure(MEASURE_TIMEOUT).await.unwrap()
}

#[tokio::test]
async fn a_second_installations_cluster_is_hit_the_same_way() {
    let report = delete(
        ScenarioBuilder::new("second-install")
            .cluster(prod())
            .cluster(prod().in_installation(SECOND_RANCHER)),
        |key| key.installation == SECOND_RANCHER,
    )
    .await;
    assert_eq!(report.class(Class::Hotplugged).reclaimed, 1, "{report}");
    assert_eq!(report.class(Class::Unattached).leaked, 1, "{report}");
    assert_eq!(report.class(Class::VmDisk).reclaimed, 1, "{report}");
    let other = report.class(Class::OtherInstallation);
    assert_eq!((other.total, other.kept), (3, 3), "{report}");
}

#[tokio::test]
async fn with_the_csi_label_the_other_installations_namesake_loses_volumes() {
    let report = delete(
        ScenarioBuilder::new("second-install-label")
            .csi_cluster_label(true)
            .cluster(prod())
            .cluster(
                ClusterPlan::new("prod", 1)
                    .in_installation(SECOND_RANCHER)
                    .volume(VolumePlan::new("idle")),
            ),
        |key| key.installation == ClusterName::RANCHER,
    )
    .await;
    // The label carries the bare cluster name: the other installation's idle volume goes too.
    let idle = report
        .objects
        .iter()
        .find(|o| o.class == Class::OtherInstallation && o.name.starts_with("pvc-"))
        .unwrap();
    assert!(!idle.exists_at_end, "{report}");
    assert_eq!(report.class(Class::Unattached).reclaimed, 1, "{report}");
}

#[tokio::test]
async fn a_pool_with_its_own_credential_runs_and_goes_on_the_second_harvester() {
    let world = world().await;
    let mut scenario = ScenarioBuilder::new("second-harvester")
        .clock(Clock::new(TIME_SCALE))
        .cluster(prod().pool_on(SECOND_HARVESTER, 1))
        .start(world)
        .await
        .unwrap();
    let cluster = scenario.cluster("prod").unwrap().clone();
    let far = cluster
        .machines
        .iter()
        .find(|machine| machine.harvester == SECOND_HARVESTER)
        .unwrap()
        .clone();
    let key = scenario.key("prod");
    scenario.delete_cluster(&key).await.unwrap();
    let report = scenario.measure(MEASURE_TIMEOUT).await.unwrap();
    // Both pools' VM disks go: the remove job uses each pool's own credential.
    let disks = report.class(Class::VmDisk);
    assert_eq!((disks.total, disks.reclaimed), (2, 2), "{report}");
    // Rancher's handler reads the cluster's credential, so it looks for the far VM on the
    // wrong Harvester.
    let missed = format!("no VM named {}/{}", scenario.vm_namespace(), far.name);
    assert!(
        scenario
            .journal()
            .position("cleanup-handler", &missed)
            .is_some(),
        "{:?}",
        scenario.journal().entries()
    );
}
