//! Today's upstream behaviour, reproduced in the world and judged against the ground truth.

use std::time::Duration;

use gleaner_sim::{
    Clock,
    csi::Reclaim,
    rancher::{DriverVersion, RancherSettings},
    scenario::{Attachment, Class, ClusterPlan, Report, ScenarioBuilder},
};
use gleaner_world::World;

const TIME_SCALE: f64 = 0.02;
const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);

fn doomed() -> ClusterPlan {
    ClusterPlan::new("doomed", 2)
        .volume("data", Reclaim::Delete, Attachment::Hotplugged)
        .volume("scratch", Reclaim::Delete, Attachment::Unattached)
        .volume("spare", Reclaim::Delete, Attachment::NeverAttached)
        .volume("database", Reclaim::Retain, Attachment::Hotplugged)
}

async fn delete_doomed(prefix: &str, settings: RancherSettings) -> Report {
    let world = World::shared().await;
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .rancher(settings)
        .cluster(doomed())
        .cluster(ClusterPlan::new("living", 1).volume(
            "app",
            Reclaim::Delete,
            Attachment::Hotplugged,
        ))
        .start(world)
        .await
        .unwrap();
    scenario.delete_cluster("doomed").await.unwrap();
    scenario.measure(MEASURE_TIMEOUT).await.unwrap()
}

fn with_driver(driver: DriverVersion) -> RancherSettings {
    RancherSettings {
        driver,
        ..RancherSettings::default()
    }
}

fn assert_upstream_outcome(report: &Report) {
    let vm_disks = report.class(Class::VmDisk);
    assert_eq!((vm_disks.total, vm_disks.reclaimed), (2, 2), "{report}");
    let hotplugged = report.class(Class::Hotplugged);
    assert_eq!((hotplugged.total, hotplugged.reclaimed), (1, 1), "{report}");
    assert_eq!(report.class(Class::Unattached).leaked, 1, "{report}");
    assert_eq!(report.class(Class::NeverAttached).leaked, 1, "{report}");
    // The guest said Retain; upstream deletes the hot-plugged volume anyway.
    assert_eq!(report.class(Class::Retained).wrongly_deleted, 1, "{report}");
    let living = report.class(Class::LivingCluster);
    assert_eq!((living.total, living.kept), (2, 2), "{report}");
}

#[tokio::test]
async fn driver_1_0_6_reclaims_disks_and_hotplugged_volumes_but_leaks_the_rest() {
    let report = delete_doomed("upstream-106", with_driver(DriverVersion::V1_0_6)).await;
    assert_upstream_outcome(&report);
}

#[tokio::test]
async fn driver_1_0_3_reclaims_disks_and_hotplugged_volumes_but_leaks_the_rest() {
    let report = delete_doomed("upstream-103", with_driver(DriverVersion::V1_0_3)).await;
    assert_upstream_outcome(&report);
}

#[tokio::test]
async fn without_the_remove_job_delay_the_handler_loses_and_hotplugged_volumes_leak() {
    let settings = RancherSettings {
        remove_job_delay: Duration::ZERO,
        ..RancherSettings::default()
    };
    let report = delete_doomed("upstream-race", settings).await;
    assert_eq!(report.class(Class::Hotplugged).leaked, 1, "{report}");
    assert_eq!(report.class(Class::Retained).kept, 1, "{report}");
    assert_eq!(report.class(Class::VmDisk).reclaimed, 2, "{report}");
}

#[tokio::test]
async fn without_the_cleanup_handler_only_vm_disks_go() {
    let settings = RancherSettings {
        cleanup_handler: false,
        ..RancherSettings::default()
    };
    let report = delete_doomed("upstream-nohandler", settings).await;
    assert_eq!(report.class(Class::VmDisk).reclaimed, 2, "{report}");
    assert_eq!(report.class(Class::Hotplugged).leaked, 1, "{report}");
}

#[tokio::test]
async fn scale_down_and_reprovision_keep_guest_volumes() {
    let world = World::shared().await;
    let scenario = ScenarioBuilder::new("upstream-scale")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 3)
                .volume("a", Reclaim::Delete, Attachment::Hotplugged)
                .volume("b", Reclaim::Delete, Attachment::Hotplugged)
                .volume("c", Reclaim::Delete, Attachment::Hotplugged),
        )
        .start(world)
        .await
        .unwrap();
    let mut machines: Vec<(String, String)> = scenario
        .cluster("c1")
        .unwrap()
        .vms
        .clone()
        .into_iter()
        .collect();
    machines.sort();
    scenario
        .rancher()
        .scale_down("c1", "pool1", &machines[0].0)
        .await
        .unwrap();
    scenario
        .rancher()
        .reprovision(&machines[1].0)
        .await
        .unwrap();
    for (_, vm) in &machines[..2] {
        let gone = format!("VM {}/{vm} is gone", scenario.vm_namespace());
        let deadline = tokio::time::Instant::now() + MEASURE_TIMEOUT;
        while scenario.journal().position("node-driver", &gone).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{gone} never happened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Nothing deleted the cluster: VMs went and came, every guest volume stays.
    let report = scenario.measure(Duration::from_secs(5)).await.unwrap();
    let living = report.class(Class::LivingCluster);
    assert_eq!(living.total, 6, "{report}");
    let guest_volumes: Vec<_> = report
        .objects
        .iter()
        .filter(|object| object.name.starts_with("pvc-"))
        .collect();
    assert_eq!(guest_volumes.len(), 3);
    assert!(
        guest_volumes.iter().all(|object| object.exists_at_end),
        "{report}"
    );
}
