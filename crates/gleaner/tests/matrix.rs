//! The reclaimer under every configuration users run (part 2b-2): Rancher 2.11 to 2.14 (node
//! driver 1.0.2 to 1.0.6) with Rancher's cleanup handler on and off, the unmerged CSI label,
//! Harvester's load-balancer controller. Each deletes the demo's `prod` (every class of object,
//! beside a namesake in another namespace, one in another installation and a living cluster)
//! under the real binary, judged by the scenario's ground truth: zero leaked, zero wrongly
//! deleted.

mod common;

use std::time::Duration;

use common::{demo_world, judged_clean, until_reclaimed};
use gleaner_sim::{
    demo,
    rancher::{DriverVersion, RancherSettings},
    scenario::{Class, ScenarioBuilder},
};
use gleaner_world::{CapiVersion, Role, World};

/// The demo's clusters, configured by `configure`; `prod` deleted under gleaner.
async fn prod_is_reclaimed_cleanly(
    prefix: &str,
    configure: fn(ScenarioBuilder) -> ScenarioBuilder,
) {
    prod_is_reclaimed_cleanly_in(demo_world().await, prefix, configure).await;
}

async fn prod_is_reclaimed_cleanly_in(
    world: &World,
    prefix: &str,
    configure: fn(ScenarioBuilder) -> ScenarioBuilder,
) {
    let (mut scenario, _gleaner, footprints, prod) =
        common::prod_recorded(world, prefix, configure).await;
    scenario.delete_cluster(&prod).await.unwrap();
    until_reclaimed(&footprints, &prod).await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    judged_clean(&report);
    for class in [
        Class::Hotplugged,
        Class::Unattached,
        Class::Rwx,
        Class::Snapshot,
    ] {
        assert!(report.class(class).reclaimed > 0, "{class}:\n{report}");
    }
    for class in [
        Class::Retained,
        Class::AnnotatedRetain,
        Class::LivingCluster,
    ] {
        assert!(report.class(class).kept > 0, "{class}:\n{report}");
    }
}

fn rancher(driver: DriverVersion, cleanup_handler: bool) -> RancherSettings {
    RancherSettings {
        driver,
        cleanup_handler,
        ..RancherSettings::default()
    }
}

/// Each configuration a test, with a short prefix: namespaces derived from it stay within 63
/// characters.
macro_rules! configurations {
    ($($name:ident, $prefix:literal: $configure:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            prod_is_reclaimed_cleanly($prefix, $configure).await;
        }
    )*};
}

configurations! {
    driver_1_0_2_with_the_handler, "m-102-on": |plan| plan.rancher(rancher(DriverVersion::V1_0_2, true));
    driver_1_0_2_without_the_handler, "m-102-off": |plan| plan.rancher(rancher(DriverVersion::V1_0_2, false));
    driver_1_0_3_with_the_handler, "m-103-on": |plan| plan.rancher(rancher(DriverVersion::V1_0_3, true));
    driver_1_0_3_without_the_handler, "m-103-off": |plan| plan.rancher(rancher(DriverVersion::V1_0_3, false));
    driver_1_0_6_with_the_handler, "m-106-on": |plan| plan.rancher(rancher(DriverVersion::V1_0_6, true));
    driver_1_0_6_without_the_handler, "m-106-off": |plan| plan.rancher(rancher(DriverVersion::V1_0_6, false));
    driver_1_0_6_with_the_csi_label, "m-csi": |plan| plan.csi_cluster_label(true);
    driver_1_0_6_without_the_load_balancer_controller, "m-no-lb": |plan| plan.load_balancer_controller(false);
}

#[tokio::test]
async fn in_a_v1beta2_world() {
    let world = demo::world()
        .capi(CapiVersion::V1beta2)
        .with_crds(Role::Management, gleaner::footprint::crds())
        .start()
        .await
        .unwrap();
    prod_is_reclaimed_cleanly_in(&world, "m-beta2", |plan| plan).await;
}
