//! What the scenario tests share.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

pub mod fixture;

use std::time::Duration;

use gleaner_sim::{
    Clock,
    rancher::{DriverVersion, RancherSettings},
    scenario::{Class, ClusterPlan, Report, ScenarioBuilder, VolumePlan},
};
use gleaner_world::World;

pub const TIME_SCALE: f64 = 0.02;
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster with one volume of each basic kind, to be deleted.
pub fn doomed() -> ClusterPlan {
    ClusterPlan::new("doomed", 2)
        .volume(VolumePlan::new("data").hotplugged())
        .volume(VolumePlan::new("scratch").unattached())
        .volume(VolumePlan::new("spare"))
        .volume(VolumePlan::new("database").retain().hotplugged())
}

pub fn living() -> ClusterPlan {
    ClusterPlan::new("living", 1).volume(VolumePlan::new("app").hotplugged())
}

/// Runs the scenario in `world`, deletes the default installation's `doomed`, and judges.
pub async fn delete_doomed(world: &World, scenario: ScenarioBuilder) -> Report {
    let mut scenario = scenario
        .clock(Clock::new(TIME_SCALE))
        .start(world)
        .await
        .unwrap();
    let doomed = scenario.key("doomed");
    scenario.delete_cluster(&doomed).await.unwrap();
    scenario.measure(MEASURE_TIMEOUT).await.unwrap()
}

/// Rancher with `driver`, its remove job slower than the cleanup handler, as it is at real speed.
/// The clock shrinks the job's realistic delay to a few hundred milliseconds while the handler's
/// reads and its new Harvester client take real time, so under load the job could overtake the
/// handler and a hot-plugged volume leak: the race upstream only loses when the job is fast
/// (`without_the_remove_job_delay_the_handler_loses_and_hotplugged_volumes_leak`).
pub fn upstream(driver: DriverVersion) -> RancherSettings {
    RancherSettings {
        driver,
        remove_job_delay: Duration::from_secs(60),
        ..RancherSettings::default()
    }
}

/// Upstream on [`doomed`] and [`living`]: disks and hot-plugged volumes go, the rest leaks, the
/// guest's Retain is ignored, the living cluster keeps everything.
pub fn assert_upstream_outcome(report: &Report) {
    let vm_disks = report.class(Class::VmDisk);
    assert_eq!((vm_disks.total, vm_disks.reclaimed), (2, 2), "{report}");
    let hotplugged = report.class(Class::Hotplugged);
    assert_eq!((hotplugged.total, hotplugged.reclaimed), (1, 1), "{report}");
    assert_eq!(report.class(Class::Unattached).leaked, 1, "{report}");
    assert_eq!(report.class(Class::NeverAttached).leaked, 1, "{report}");
    assert_eq!(report.class(Class::Retained).wrongly_deleted, 1, "{report}");
    let living = report.class(Class::LivingCluster);
    assert_eq!((living.total, living.kept), (2, 2), "{report}");
}
