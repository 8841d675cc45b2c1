//! Today's upstream behaviour, reproduced in the shared world and judged against the ground
//! truth.

mod common;

use std::time::Duration;

use common::{MEASURE_TIMEOUT, TIME_SCALE, assert_upstream_outcome, doomed, living, upstream};
use gleaner_sim::{
    Clock,
    rancher::{DriverVersion, RancherSettings},
    scenario::{Class, ClusterPlan, Report, ScenarioBuilder, VolumePlan},
};
use gleaner_world::World;

async fn delete_doomed(scenario: ScenarioBuilder) -> Report {
    common::delete_doomed(World::shared().await, scenario).await
}

#[tokio::test]
async fn driver_1_0_6_reclaims_disks_and_hotplugged_volumes_but_leaks_the_rest() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-106")
            .rancher(upstream(DriverVersion::V1_0_6))
            .cluster(doomed())
            .cluster(living()),
    )
    .await;
    assert_upstream_outcome(&report);
}

#[tokio::test]
async fn driver_1_0_3_reclaims_disks_and_hotplugged_volumes_but_leaks_the_rest() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-103")
            .rancher(upstream(DriverVersion::V1_0_3))
            .cluster(doomed())
            .cluster(living()),
    )
    .await;
    assert_upstream_outcome(&report);
}

#[tokio::test]
async fn without_the_remove_job_delay_the_handler_loses_and_hotplugged_volumes_leak() {
    // The job starts at once; the handler takes its (generous, so the test is deterministic)
    // time to read the credential and build a client.
    let settings = RancherSettings {
        remove_job_delay: Duration::ZERO,
        handler_latency: Duration::from_secs(30),
        ..RancherSettings::default()
    };
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-race")
            .rancher(settings)
            .cluster(doomed()),
    )
    .await;
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
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-nohandler")
            .rancher(settings)
            .cluster(doomed()),
    )
    .await;
    assert_eq!(report.class(Class::VmDisk).reclaimed, 2, "{report}");
    assert_eq!(report.class(Class::Hotplugged).leaked, 1, "{report}");
}

#[tokio::test]
async fn rwx_volumes_their_network_filesystems_and_host_snapshots_leak() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-rwx")
            .rancher(upstream(DriverVersion::V1_0_6))
            .cluster(
                ClusterPlan::new("doomed", 1)
                    .volume(VolumePlan::new("shared").rwx())
                    .volume(VolumePlan::new("data").hotplugged().snapshots(1)),
            ),
    )
    .await;
    let rwx = report.class(Class::Rwx);
    // The host PVC and its NetworkFilesystem.
    assert_eq!((rwx.total, rwx.leaked), (2, 2), "{report}");
    assert!(
        report
            .objects
            .iter()
            .any(|object| object.class == Class::Rwx && object.kind == "NetworkFilesystem")
    );
    // The hot-plugged volume goes, its host snapshot stays behind.
    assert_eq!(report.class(Class::Hotplugged).reclaimed, 1, "{report}");
    let snapshots = report.class(Class::Snapshot);
    assert_eq!((snapshots.total, snapshots.leaked), (1, 1), "{report}");
}

#[tokio::test]
async fn with_the_csi_label_driver_1_0_6_also_takes_unattached_volumes_and_a_namesakes() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-label")
            .rancher(upstream(DriverVersion::V1_0_6))
            .csi_cluster_label(true)
            .cluster(doomed())
            .cluster(
                ClusterPlan::new("doomed", 1)
                    .in_namespace("other")
                    .volume(VolumePlan::new("theirs")),
            ),
    )
    .await;
    assert_eq!(report.class(Class::Unattached).reclaimed, 1, "{report}");
    assert_eq!(report.class(Class::NeverAttached).reclaimed, 1, "{report}");
    // The same-named cluster of another Rancher namespace loses its labelled volume.
    let namesake = report.class(Class::SameNameOtherNamespace);
    assert!(namesake.wrongly_deleted >= 1, "{report}");
}

#[tokio::test]
async fn driver_1_0_3_ignores_the_csi_label() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-label-103")
            .rancher(upstream(DriverVersion::V1_0_3))
            .csi_cluster_label(true)
            .cluster(doomed()),
    )
    .await;
    assert_eq!(report.class(Class::Unattached).leaked, 1, "{report}");
}

#[tokio::test]
async fn the_load_balancer_controller_takes_a_namesakes_load_balancers_too() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-lb")
            .rancher(upstream(DriverVersion::V1_0_6))
            .cluster(ClusterPlan::new("doomed", 1).load_balancer("ingress"))
            .cluster(
                ClusterPlan::new("doomed", 1)
                    .in_namespace("other")
                    .load_balancer("web"),
            )
            .cluster(ClusterPlan::new("bystander", 1).load_balancer("api")),
    )
    .await;
    assert_eq!(report.class(Class::LoadBalancer).reclaimed, 1, "{report}");
    let namesake_balancers: Vec<_> = report
        .objects
        .iter()
        .filter(|o| o.class == Class::SameNameOtherNamespace && o.kind == "LoadBalancer")
        .collect();
    assert_eq!(namesake_balancers.len(), 1, "{report}");
    assert!(!namesake_balancers[0].exists_at_end, "{report}");
    assert!(
        report
            .objects
            .iter()
            .filter(|o| o.class == Class::LivingCluster)
            .all(|o| o.exists_at_end),
        "{report}"
    );
}

#[tokio::test]
async fn lookalikes_and_annotated_volumes_meet_upstream() {
    let report = delete_doomed(
        ScenarioBuilder::new("upstream-protect")
            .rancher(upstream(DriverVersion::V1_0_6))
            .lookalikes(1)
            .cluster(
                ClusterPlan::new("doomed", 1)
                    .volume(VolumePlan::new("keep").annotated_retain().hotplugged()),
            ),
    )
    .await;
    let lookalikes = report.class(Class::Lookalike);
    assert_eq!((lookalikes.total, lookalikes.kept), (1, 1), "{report}");
    // Upstream knows nothing of gleaner.io/retain: the hot-plugged volume goes.
    assert_eq!(
        report.class(Class::AnnotatedRetain).wrongly_deleted,
        1,
        "{report}"
    );
}

#[tokio::test]
async fn scale_down_and_reprovision_keep_guest_volumes() {
    let world = World::shared().await;
    let scenario = ScenarioBuilder::new("upstream-scale")
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 3)
                .volume(VolumePlan::new("a").hotplugged())
                .volume(VolumePlan::new("b").hotplugged())
                .volume(VolumePlan::new("c").hotplugged()),
        )
        .start(world)
        .await
        .unwrap();
    let mut machines = scenario.cluster("c1").unwrap().machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let rancher = scenario.rancher_of("c1").unwrap();
    // One after the other: CAPI counts a deleting Machine towards the replicas.
    rancher
        .scale_down("c1", "pool1", &machines[0].name)
        .await
        .unwrap();
    wait_gone(&scenario, &machines[0].vm).await;
    rancher.reprovision(&machines[1].name).await.unwrap();
    wait_gone(&scenario, &machines[1].vm).await;
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

async fn wait_gone(scenario: &gleaner_sim::scenario::Scenario, vm: &str) {
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
