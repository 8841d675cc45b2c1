//! Tests of the world runtime itself, against the real control planes.

use std::time::Duration;

use gleaner_world::testing::eventually;
use gleaner_world::{
    Binaries, CapiVersion, ClusterName, CrdSource, Error, KUBERNETES_VERSION, Player, Role, World,
    WorldBuilder,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, PostParams},
    core::{ApiResource, Status},
    discovery,
};
use serde_json::json;

const HARVESTER: &str = ClusterName::HARVESTER;
const RANCHER: &str = ClusterName::RANCHER;

/// A namespace of its own for each test in the shared world.
async fn namespace(client: &Client, name: &str) -> String {
    gleaner_world::testing::ensure_namespace(client, name)
        .await
        .unwrap();
    name.to_owned()
}

fn api_error(error: kube::Error) -> Status {
    match error {
        kube::Error::Api(response) => *response,
        other => panic!("expected an API error, got {other}"),
    }
}

async fn dynamic_api(
    client: &Client,
    namespace: &str,
    gvk: &GroupVersionKind,
) -> Api<DynamicObject> {
    let (resource, _) = discovery::pinned_kind(client, gvk).await.unwrap();
    Api::namespaced_with(client.clone(), namespace, &resource)
}

#[tokio::test]
async fn apiservers_report_the_pinned_release_to_kubectl() {
    let world = World::shared().await;
    for cluster in [RANCHER, HARVESTER] {
        let output = world.kubectl(cluster, &["version", "-o", "json"]).unwrap();
        assert!(output.status.success(), "{output:?}");
        let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(version["serverVersion"]["gitVersion"], KUBERNETES_VERSION);
        assert_eq!(version["clientVersion"]["gitVersion"], KUBERNETES_VERSION);
    }
}

#[tokio::test]
async fn each_role_serves_its_upstream_crds() {
    let world = World::shared().await;
    assert!(matches!(world.crd_source(), CrdSource::Upstream(_)));
    let rancher = world.crds(RANCHER).unwrap();
    for crd in [
        "machines.cluster.x-k8s.io",
        "clusters.provisioning.cattle.io",
        "harvestermachines.rke-machine.cattle.io",
        "harvesterconfigs.rke-machine-config.cattle.io",
        "settings.management.cattle.io",
    ] {
        assert!(
            rancher.iter().any(|name| name == crd),
            "{crd} in {rancher:?}"
        );
    }
    let harvester = world.crds(HARVESTER).unwrap();
    for crd in [
        "virtualmachines.kubevirt.io",
        "volumesnapshots.snapshot.storage.k8s.io",
        "loadbalancers.loadbalancer.harvesterhci.io",
        "networkfilesystems.harvesterhci.io",
    ] {
        assert!(
            harvester.iter().any(|name| name == crd),
            "{crd} in {harvester:?}"
        );
    }
    assert!(
        !harvester
            .iter()
            .any(|name| name.ends_with("cluster.x-k8s.io"))
    );
}

#[tokio::test]
async fn an_object_the_upstream_schema_rejects_is_rejected() {
    let world = World::shared().await;
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "schema-rejects").await;
    let machines = dynamic_api(
        &client,
        &ns,
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "Machine"),
    )
    .await;
    // CAPI v1.10 requires spec.clusterName and limits it to 63 characters.
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {"name": "too-long-cluster-name"},
        "spec": {"clusterName": "c".repeat(64), "bootstrap": {"dataSecretName": "x"}},
    }))
    .unwrap();
    let error = api_error(
        machines
            .create(&PostParams::default(), &machine)
            .await
            .unwrap_err(),
    );
    assert_eq!(error.code, 422, "{error:?}");
    assert!(
        error.message.contains("spec.clusterName"),
        "{}",
        error.message
    );

    let valid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {"name": "valid"},
        "spec": {
            "clusterName": "c1",
            "bootstrap": {"dataSecretName": "x"},
            "infrastructureRef": {"apiVersion": "rke-machine.cattle.io/v1", "kind": "HarvesterMachine", "name": "valid"},
        },
    }))
    .unwrap();
    machines
        .create(&PostParams::default(), &valid)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_garbage_collector_removes_an_owned_object() {
    let world = World::shared().await;
    let client = world.client(HARVESTER).await.unwrap();
    let ns = namespace(&client, "garbage-collection").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner", Vec::new()))
        .await
        .unwrap();
    let reference = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..Default::default()
    };
    config_maps
        .create(
            &PostParams::default(),
            &config_map("owned", vec![reference]),
        )
        .await
        .unwrap();
    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the owned ConfigMap is garbage-collected", || async {
        config_maps.get_opt("owned").await.unwrap().is_none()
    })
    .await;
}

fn config_map(
    name: &str,
    owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(owners),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn a_pvc_used_by_a_scheduled_pod_keeps_its_protection_finalizer() {
    let world = World::shared().await;
    let client = world.client(HARVESTER).await.unwrap();
    let ns = namespace(&client, "pvc-protection").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    // The default ServiceAccount comes from the controller-manager; pods need it.
    eventually("the default ServiceAccount exists", || async {
        pods.create(&PostParams::default(), &pod_using("data"))
            .await
            .is_ok()
    })
    .await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = claims.get("data").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(
        held.metadata.finalizers.unwrap_or_default(),
        vec!["kubernetes.io/pvc-protection".to_owned()]
    );
    pods.delete("user", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the PVC goes once its pod is gone", || async {
        claims.get_opt("data").await.unwrap().is_none()
    })
    .await;
}

fn pod_using(claim: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {
            "nodeName": "node-without-kubelet",
            "containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_service_account_without_rbac_is_forbidden() {
    let world = World::shared().await;
    let admin = world.client(RANCHER).await.unwrap();
    let ns = namespace(&admin, "rbac-forbidden").await;
    let client = world
        .service_account_client(RANCHER, &ns, "nobody")
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let error = api_error(config_maps.list(&Default::default()).await.unwrap_err());
    assert_eq!(error.code, 403);
    assert!(
        error
            .message
            .contains(&format!("system:serviceaccount:{ns}:nobody")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_restarted_apiserver_serves_the_same_data_on_the_same_port() {
    let world = WorldBuilder::empty()
        .cluster(HARVESTER, Role::Harvester)
        .start()
        .await
        .unwrap();
    let kubeconfig_before = std::fs::read_to_string(world.kubeconfig(HARVESTER).unwrap()).unwrap();
    let client = world.client(HARVESTER).await.unwrap();
    let ns = namespace(&client, "restart").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let created = config_maps
        .create(&PostParams::default(), &config_map("survivor", Vec::new()))
        .await
        .unwrap();

    world.stop_apiserver(HARVESTER).unwrap();
    assert!(
        config_maps.get("survivor").await.is_err(),
        "the apiserver is down"
    );
    world.start_apiserver(HARVESTER).await.unwrap();

    // The same client (same port, same CA, same token) reads the same object.
    let read = config_maps.get("survivor").await.unwrap();
    assert_eq!(read.metadata.uid, created.metadata.uid);
    let kubeconfig_after = std::fs::read_to_string(world.kubeconfig(HARVESTER).unwrap()).unwrap();
    assert_eq!(kubeconfig_before, kubeconfig_after);

    // A restart onto a port someone else took says so.
    world.stop_apiserver(HARVESTER).unwrap();
    let port = port_of(&kubeconfig_after);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let error = world.start_apiserver(HARVESTER).await.unwrap_err();
    assert!(
        matches!(error, Error::PortInUse { port: p, .. } if p == port),
        "{error}"
    );
    assert!(error.to_string().contains("in use"), "{error}");
    drop(squatter);
    world.start_apiserver(HARVESTER).await.unwrap();
}

#[tokio::test]
async fn guests_started_while_the_world_runs_are_clusters_like_the_others() {
    let world = WorldBuilder::empty().start().await.unwrap();
    let (first, second) = tokio::try_join!(world.start_guest(), world.start_guest()).unwrap();
    assert_ne!(first, second);
    assert_ne!(
        world.server(&first).unwrap(),
        world.server(&second).unwrap()
    );
    for guest in [&first, &second] {
        assert!(
            world.clusters().contains(&(guest.clone(), Role::Guest)),
            "{:?}",
            world.clusters()
        );
        let crds = world.crds(guest).unwrap();
        assert!(
            crds.iter()
                .any(|name| name == "volumesnapshotcontents.snapshot.storage.k8s.io"),
            "{crds:?}"
        );
        let output = world.kubectl(guest, &["get", "namespaces"]).unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(world.apiserver_log(guest).unwrap().is_file());
    }

    let first_maps: Api<ConfigMap> =
        Api::namespaced(world.client(&first).await.unwrap(), "default");
    let created = first_maps
        .create(&PostParams::default(), &config_map("mine", Vec::new()))
        .await
        .unwrap();
    let second_maps: Api<ConfigMap> =
        Api::namespaced(world.client(&second).await.unwrap(), "default");
    assert!(second_maps.get_opt("mine").await.unwrap().is_none());

    world.stop_apiserver(&first).unwrap();
    assert!(
        first_maps.get("mine").await.is_err(),
        "the apiserver is down"
    );
    world.start_apiserver(&first).await.unwrap();
    let read = first_maps.get("mine").await.unwrap();
    assert_eq!(read.metadata.uid, created.metadata.uid);
    let kubeconfig = std::fs::read_to_string(world.kubeconfig(&first).unwrap()).unwrap();
    assert_eq!(
        format!("https://127.0.0.1:{}", port_of(&kubeconfig)),
        world.server(&first).unwrap()
    );
}

fn port_of(kubeconfig: &str) -> u16 {
    let server = kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .unwrap();
    server.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_missing_binary_is_named_with_the_command_that_builds_it() {
    let dir = std::env::temp_dir().join("gleaner-no-binaries-here");
    let error = World::builder()
        .binaries(Binaries::in_dir(&dir))
        .start()
        .await
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        matches!(error, Error::MissingBinary { binary: "etcd", .. }),
        "{message}"
    );
    assert!(
        message.contains(&dir.join("etcd").display().to_string()),
        "{message}"
    );
    assert!(message.contains("cargo xtask tools"), "{message}");
}

#[tokio::test]
async fn a_v1beta2_world_serves_cluster_api_v1beta2() {
    let world = WorldBuilder::empty()
        .cluster(RANCHER, Role::Management)
        .capi(CapiVersion::V1beta2)
        .start()
        .await
        .unwrap();
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "v1beta2").await;
    let machines = dynamic_api(
        &client,
        &ns,
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Machine"),
    )
    .await;
    // In v1beta2 the infrastructure reference names an apiGroup, not an apiVersion.
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Machine",
        "metadata": {"name": "m1"},
        "spec": {
            "clusterName": "c1",
            "bootstrap": {"dataSecretName": "x"},
            "infrastructureRef": {"apiGroup": "rke-machine.cattle.io", "kind": "HarvesterMachine", "name": "m1"},
        },
    }))
    .unwrap();
    machines
        .create(&PostParams::default(), &machine)
        .await
        .unwrap();
    let v1beta1 = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta1",
        "Machine",
    ));
    let old: Api<DynamicObject> = Api::namespaced_with(client, &ns, &v1beta1);
    assert_eq!(
        api_error(old.list(&Default::default()).await.unwrap_err()).code,
        404
    );
}

#[tokio::test]
async fn the_fallback_crds_serve_what_gleaner_uses() {
    // The real Cluster API manager brings its release's CRDs, which would stand in for the
    // fallback ones this test is about.
    let world = World::builder()
        .crd_source(CrdSource::Fallback)
        .capi_controllers(Player::Sim)
        .start()
        .await
        .unwrap();
    let client = world.client(RANCHER).await.unwrap();
    let ns = namespace(&client, "fallback").await;
    let machines = dynamic_api(
        &client,
        &ns,
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "Machine"),
    )
    .await;
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {"name": "m1", "annotations": {"pre-terminate.delete.hook.machine.cluster.x-k8s.io/gleaner": "gleaner"}},
        "spec": {
            "clusterName": "c1",
            "bootstrap": {"dataSecretName": "x"},
            "infrastructureRef": {"apiVersion": "rke-machine.cattle.io/v1", "kind": "HarvesterMachine", "name": "m1"},
            "unknownField": "kept",
        },
    }))
    .unwrap();
    let created = machines
        .create(&PostParams::default(), &machine)
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"]["infrastructureRef"]["kind"],
        "HarvesterMachine"
    );
    assert_eq!(created.data["spec"]["unknownField"], "kept");
    let harvester = world.crds(HARVESTER).unwrap();
    assert!(
        harvester
            .iter()
            .any(|name| name == "virtualmachines.kubevirt.io")
    );
}

#[test]
fn no_control_plane_process_outlives_a_killed_parent() {
    use std::io::BufRead as _;
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_hold-world"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut dir = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut dir)
        .unwrap();
    let dir = dir.trim().to_owned();
    assert!(!dir.is_empty(), "the holder printed no world folder");
    // The apiservers, controller-managers, the Harvester's snapshot-controller and the
    // management cluster's Cluster API manager name the world's folder; etcd names its data
    // folder, which carries the holder's pid.
    let etcd_data = format!("gleaner-etcd-{}-", holder.id());
    let running = || {
        let mut found = processes_mentioning(&dir);
        found.extend(processes_mentioning(&etcd_data));
        found
    };
    assert_eq!(running().len(), 7, "{:?}", running());

    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {:?}",
            running()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live processes whose command line mentions `text` (zombies have an empty command line).
fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(text)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}
