//! Each scenario cluster's own guest apiserver: what lives there, the credential Rancher holds
//! for it and its rotation, and the changes a scenario makes after provisioning.

mod common;

use common::TIME_SCALE;
use gleaner_sim::{
    Clock,
    csi::{GUEST_DRIVER, GUEST_RETAINED_SNAPSHOT_CLASS, HostObject, Reclaim},
    keys::GUEST_KUBECONFIG_KEY,
    kinds,
    scenario::{
        Attachment, Class, ClusterKey, ClusterPlan, Scenario, ScenarioBuilder, Traits, VolumePlan,
    },
};
use gleaner_world::{ClusterName, World, testing::eventually};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, Secret};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::OnceCell;

/// This binary's world: the default one; every scenario starts its clusters' guests.
async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async { World::builder().start().await.unwrap() })
        .await
}

async fn start(scenario: ScenarioBuilder) -> Scenario {
    scenario
        .clock(Clock::new(TIME_SCALE))
        .start(world().await)
        .await
        .unwrap()
}

async fn guest_client(scenario: &Scenario, key: &ClusterKey) -> Client {
    let guest = scenario.guest_of(key).unwrap();
    world().await.client(&guest).await.unwrap()
}

async fn pv_names(client: &Client) -> Vec<String> {
    Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|pv| pv.metadata.name)
        .collect()
}

/// The Secret Rancher keeps the cluster's guest kubeconfig in, if there is one.
async fn kubeconfig_secret(scenario: &Scenario, key: &ClusterKey) -> Option<Secret> {
    let (namespace, name) = scenario.guest_kubeconfig_secret(key);
    let rancher = world().await.client(ClusterName::RANCHER).await.unwrap();
    Api::<Secret>::namespaced(rancher, &namespace)
        .get_opt(&name)
        .await
        .unwrap()
}

fn kubeconfig_of(secret: &Secret) -> String {
    let value = &secret.data.as_ref().unwrap()[GUEST_KUBECONFIG_KEY];
    String::from_utf8(value.0.clone()).unwrap()
}

async fn client_from(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The HTTP status a client gets listing namespaces: 200, or the apiserver's refusal.
async fn list_status(client: &Client) -> u16 {
    match Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(error) => panic!("listing namespaces failed without an answer: {error}"),
    }
}

fn made_for<'a>(
    made: &'a [(HostObject, Traits)],
    kind: &str,
    name: &str,
) -> &'a (HostObject, Traits) {
    made.iter()
        .find(|(object, _)| object.resource.kind == kind && object.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {made:?}"))
}

fn snapshots_of(made: &[(HostObject, Traits)]) -> Vec<&(HostObject, Traits)> {
    made.iter()
        .filter(|(object, _)| object.resource.kind == "VolumeSnapshot")
        .collect()
}

#[tokio::test]
async fn each_cluster_gets_a_guest_apiserver_of_its_own() {
    let scenario = start(
        ScenarioBuilder::new("own-guests")
            .cluster(ClusterPlan::new("alpha", 1).volume(VolumePlan::new("data")))
            .cluster(ClusterPlan::new("beta", 1).volume(VolumePlan::new("data")))
            .cluster(ClusterPlan::new("bare", 1)),
    )
    .await;
    let (alpha, beta, bare) = (
        scenario.key("alpha"),
        scenario.key("beta"),
        scenario.key("bare"),
    );
    assert_ne!(scenario.guest_of(&alpha), scenario.guest_of(&beta));
    assert_eq!(scenario.guest_of(&bare), None);
    assert!(kubeconfig_secret(&scenario, &bare).await.is_none());

    for key in [&alpha, &beta] {
        let own_pv = &scenario.guest_volume(key, "data").unwrap().guest_pv.name;
        let admin = guest_client(&scenario, key).await;
        assert_eq!(pv_names(&admin).await, [own_pv.as_str()], "{key:?}");
        let secret = kubeconfig_secret(&scenario, key).await.unwrap();
        let rancher_view = client_from(&kubeconfig_of(&secret)).await;
        assert_eq!(pv_names(&rancher_view).await, [own_pv.as_str()], "{key:?}");
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        let cluster = scenario.cluster(&key.name).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Cluster", key.name.as_str(), cluster.uid.as_str())
        );
        assert_eq!(owner.api_version, "provisioning.cattle.io/v1");
    }
}

#[tokio::test]
async fn rotating_the_guest_kubeconfig_revokes_the_old_token() {
    let mut scenario = start(
        ScenarioBuilder::new("rotation").cluster(ClusterPlan::new("rotated", 1).with_guest()),
    )
    .await;
    let key = scenario.key("rotated");
    let old = kubeconfig_of(&kubeconfig_secret(&scenario, &key).await.unwrap());
    let old_client = client_from(&old).await;
    assert_eq!(list_status(&old_client).await, 200);

    scenario.rotate_guest_kubeconfig(&key).await.unwrap();

    let new = kubeconfig_of(&kubeconfig_secret(&scenario, &key).await.unwrap());
    assert_ne!(new, old);
    let new_client = client_from(&new).await;
    eventually("the new token works", || async {
        list_status(&new_client).await == 200
    })
    .await;
    eventually("the old token is refused", || async {
        list_status(&old_client).await == 401
    })
    .await;
}

#[tokio::test]
async fn a_volume_added_later_and_its_new_reclaim_policy_are_in_the_ground_truth() {
    let mut scenario =
        start(ScenarioBuilder::new("changes").cluster(ClusterPlan::new("growing", 1).with_guest()))
            .await;
    let key = scenario.key("growing");
    assert!(
        scenario
            .made_by(&key)
            .iter()
            .all(|(_, traits)| traits.vm_disk),
        "only the VM's disks before any volume"
    );

    scenario
        .add_volume(&key, VolumePlan::new("late").hotplugged().snapshots(1))
        .await
        .unwrap();
    let volume = scenario.guest_volume(&key, "late").unwrap().clone();
    let made = scenario.made_by(&key);
    let (_, claim) = made_for(&made, "PersistentVolumeClaim", &volume.host_pvc.name);
    assert_eq!(claim.attachment, Attachment::Hotplugged);
    assert_eq!(claim.class(), Class::Hotplugged);
    let snapshots = snapshots_of(&made);
    assert_eq!(snapshots.len(), 1, "{made:?}");
    assert_eq!(snapshots[0].1.class(), Class::Snapshot);

    scenario
        .set_reclaim_policy(&key, "late", Reclaim::Retain)
        .await
        .unwrap();
    let guest_pv = Api::<PersistentVolume>::all(guest_client(&scenario, &key).await)
        .get(&volume.guest_pv.name)
        .await
        .unwrap();
    assert_eq!(
        guest_pv
            .spec
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Retain")
    );
    let made = scenario.made_by(&key);
    let (_, claim) = made_for(&made, "PersistentVolumeClaim", &volume.host_pvc.name);
    assert_eq!(claim.class(), Class::Retained);
    assert!(
        snapshots_of(&made)
            .iter()
            .all(|(_, traits)| traits.class() == Class::Retained)
    );
    assert!(
        made.iter()
            .filter(|(_, traits)| traits.vm_disk)
            .all(|(_, traits)| !traits.retained),
        "the VM's disks keep their traits"
    );

    assert!(
        scenario
            .set_reclaim_policy(&key, "missing", Reclaim::Delete)
            .await
            .is_err()
    );
    assert!(
        scenario
            .add_volume(&key, VolumePlan::new("late"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_cluster_without_a_guest_takes_no_volume_later() {
    let mut scenario =
        start(ScenarioBuilder::new("no-guest").cluster(ClusterPlan::new("bare", 1))).await;
    let key = scenario.key("bare");
    assert!(
        scenario
            .add_volume(&key, VolumePlan::new("late"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn retained_snapshots_are_retained_in_the_guest_and_in_the_ground_truth() {
    let scenario = start(
        ScenarioBuilder::new("kept-snaps").cluster(
            ClusterPlan::new("keeper", 1)
                .volume(VolumePlan::new("data").snapshots(1).retained_snapshots()),
        ),
    )
    .await;
    let key = scenario.key("keeper");
    let made = scenario.made_by(&key);
    let snapshots = snapshots_of(&made);
    assert_eq!(snapshots.len(), 1, "{made:?}");
    assert_eq!(snapshots[0].1.class(), Class::Retained);
    let volume = scenario.guest_volume(&key, "data").unwrap();
    let (_, claim) = made_for(&made, "PersistentVolumeClaim", &volume.host_pvc.name);
    assert_eq!(
        claim.class(),
        Class::Retained,
        "the volume holds the retained snapshot (Longhorn keeps it inside the volume)"
    );

    let contents = Api::<DynamicObject>::all_with(
        guest_client(&scenario, &key).await,
        &kinds::volume_snapshot_content(),
    )
    .list(&ListParams::default())
    .await
    .unwrap()
    .items;
    assert_eq!(contents.len(), 1);
    let spec = &contents[0].data["spec"];
    assert_eq!(spec["deletionPolicy"], "Retain");
    assert_eq!(spec["driver"], GUEST_DRIVER);
    assert_eq!(
        spec["volumeSnapshotClassName"],
        GUEST_RETAINED_SNAPSHOT_CLASS
    );
    assert_eq!(
        spec["source"]["volumeHandle"],
        volume.host_pvc.name.as_str()
    );
    let host_snapshot = &snapshots[0].0.name;
    assert_eq!(
        contents[0].data["status"]["snapshotHandle"],
        host_snapshot.as_str()
    );
}

/// A scale-down takes the last Machine's VM with its own disks (no longer judged) and unplugs
/// what was hot-plugged into it; the volumes stay the living cluster's. Detaching and
/// re-attaching follow the ground truth, and a stopped scenario leaves no guest running.
#[tokio::test]
async fn a_scale_down_releases_the_vm_s_disks_and_unplugs_its_volumes() {
    let mut scenario = start(
        ScenarioBuilder::new("scaled").cluster(
            ClusterPlan::new("c1", 2)
                .volume(VolumePlan::new("data").hotplugged())
                .volume(VolumePlan::new("logs").hotplugged()),
        ),
    )
    .await;
    let key = scenario.key("c1");
    let cluster = scenario.cluster_of(&key).unwrap().clone();
    let mut machines = cluster.machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let made = scenario.made_by(&key);
    let disks_of = |vm: &str| -> Vec<String> {
        made.iter()
            .filter(|(object, traits)| traits.vm_disk && object.name.contains(vm))
            .map(|(object, _)| object.uid.clone())
            .collect()
    };
    let removed = scenario.scale_down(&key).await.unwrap();
    assert_eq!(removed.as_deref(), Some(machines[1].name.as_str()));
    assert!(!disks_of(&machines[1].vm).is_empty(), "{made:?}");
    for disk in disks_of(&machines[1].vm) {
        assert_eq!(
            scenario.class_now(&disk),
            None,
            "a released disk is not judged"
        );
    }
    for disk in disks_of(&machines[0].vm) {
        assert_eq!(scenario.class_now(&disk), Some(Class::LivingCluster));
    }
    assert_eq!(
        scenario.scale_down(&key).await.unwrap(),
        None,
        "the pool keeps its last Machine"
    );
    let logs = scenario
        .guest_volume(&key, "logs")
        .unwrap()
        .host_pvc
        .uid
        .clone();
    assert_eq!(scenario.class_now(&logs), Some(Class::LivingCluster));
    assert!(scenario.detach_volume(&key, "data").await.unwrap());
    assert!(!scenario.detach_volume(&key, "data").await.unwrap());
    assert!(scenario.attach_volume(&key, "logs").await.unwrap());
    assert!(!scenario.attach_volume(&key, "logs").await.unwrap());
    scenario.delete_cluster(&key).await.unwrap();
    assert!(scenario.is_deleted(&key));
    assert_eq!(scenario.class_now(&logs), Some(Class::Hotplugged));
    let data = scenario
        .guest_volume(&key, "data")
        .unwrap()
        .host_pvc
        .uid
        .clone();
    assert_eq!(scenario.class_now(&data), Some(Class::Unattached));
    let guest = scenario.guest_of(&key).unwrap();
    scenario.stop_guests(world().await).unwrap();
    assert!(world().await.client(&guest).await.is_err());
}
