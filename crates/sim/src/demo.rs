//! The scripted scenario `cargo xtask demo` runs, shared with its test.

use std::time::Duration;

use gleaner_world::{Role, World, WorldBuilder};

use crate::{
    Clock, Result,
    rancher::RancherSettings,
    scenario::{ClusterPlan, Report, ScenarioBuilder, VolumePlan},
};

/// The second Rancher installation's management cluster.
pub const SECOND_RANCHER: &str = "rancher-2";
/// How long to wait for the deleted cluster's VMs before judging anyway, at real speed.
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(900);

/// The demo's world: Rancher, a second Rancher installation, Harvester (the scenario starts a
/// guest apiserver per guest cluster).
pub fn world() -> WorldBuilder {
    World::builder().cluster(SECOND_RANCHER, Role::Management)
}

/// Rancher's upstream fix alone: the handler on, driver 1.0.6, the remove job's realistic
/// delay, the CSI label off, Harvester v1.8's load-balancer controller on. `prod` is deleted; a
/// namesake in another Rancher namespace, a namesake in another Rancher installation and an
/// unrelated cluster live on. Every class of object is made at least once.
/// The demo's guest clusters: `prod` with every volume class and a load balancer, a same-named
/// cluster in another namespace and in another Rancher installation, and a living cluster.
pub fn clusters(prefix: &str, clock: Clock) -> ScenarioBuilder {
    ScenarioBuilder::new(prefix)
        .clock(clock)
        .rancher(RancherSettings::default())
        .load_balancer_controller(true)
        .lookalikes(1)
        .cluster(
            ClusterPlan::new("prod", 2)
                .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                .volume(VolumePlan::new("logs").hotplugged())
                .volume(VolumePlan::new("scratch").unattached())
                .volume(VolumePlan::new("spare"))
                .volume(
                    VolumePlan::new("database")
                        .retain()
                        .hotplugged()
                        .snapshots(1),
                )
                .volume(VolumePlan::new("audit").annotated_retain().hotplugged())
                .volume(VolumePlan::new("shared").rwx())
                .load_balancer("ingress"),
        )
        .cluster(
            ClusterPlan::new("prod", 1)
                .in_namespace("team-b")
                .volume(VolumePlan::new("theirs").hotplugged())
                .load_balancer("web"),
        )
        .cluster(
            ClusterPlan::new("prod", 1)
                .in_installation(SECOND_RANCHER)
                .volume(VolumePlan::new("elsewhere").hotplugged()),
        )
        .cluster(
            ClusterPlan::new("living", 1)
                .volume(VolumePlan::new("app").hotplugged())
                .load_balancer("api"),
        )
}

pub async fn upstream(world: &World, clock: Clock) -> Result<Report> {
    let mut scenario = clusters("upstream", clock).start(world).await?;
    tracing::info!("guest clusters provisioned; deleting cluster prod");
    let prod = scenario.key("prod");
    scenario.delete_cluster(&prod).await?;
    scenario.measure(clock.scaled(MEASURE_TIMEOUT)).await
}
