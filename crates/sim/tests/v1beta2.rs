//! A management cluster serving Cluster API v1beta2 (Rancher 2.14) behaves as a v1beta1 one.

mod common;

use common::{assert_upstream_outcome, delete_doomed, doomed, living, upstream};
use gleaner_sim::{rancher::DriverVersion, scenario::ScenarioBuilder};
use gleaner_world::{CapiVersion, World};

#[tokio::test]
async fn cluster_deletion_in_a_v1beta2_world_matches_v1beta1() {
    let world = World::builder()
        .capi(CapiVersion::V1beta2)
        .start()
        .await
        .unwrap();
    let report = delete_doomed(
        &world,
        ScenarioBuilder::new("v1beta2")
            .rancher(upstream(DriverVersion::V1_0_6))
            .cluster(doomed())
            .cluster(living()),
    )
    .await;
    assert_upstream_outcome(&report);
}
