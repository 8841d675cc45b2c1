//! The stand-in kubelet against a real apiserver and controller-manager: Deployments become
//! available, Jobs complete or fail by their Pods' exit codes, deleted Pods' processes stop.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use gleaner_world::{
    Binaries, ClusterName, Role, World, WorldBuilder,
    kubelet::{Kubelet, NODE_NAME},
    testing::{ensure_namespace, eventually},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Pod, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::OnceCell};

const RANCHER: &str = ClusterName::RANCHER;

/// One management cluster is all these tests need; they share it, each in its own namespace.
async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            WorldBuilder::empty()
                .cluster(RANCHER, Role::Management)
                .start()
                .await
                .unwrap()
        })
        .await
}

fn images() -> HashMap<String, PathBuf> {
    HashMap::from([
        ("test/sleeper".to_owned(), PathBuf::from("/bin/sleep")),
        ("test/sh".to_owned(), PathBuf::from("/bin/sh")),
        ("test/kubectl".to_owned(), Binaries::from_env().kubectl),
    ])
}

/// A namespace whose `default` ServiceAccount exists (the ServiceAccount admission refuses Pods
/// until the controller-manager made it), and a stand-in kubelet for it.
async fn setup(namespace: &str) -> (Client, Kubelet) {
    // `RUST_LOG=gleaner_world=debug` shows what the stand-in kubelet does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let world = world().await;
    let client = world.client(RANCHER).await.unwrap();
    ensure_namespace(&client, namespace).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    eventually("the default ServiceAccount exists", || {
        let accounts = accounts.clone();
        async move { matches!(accounts.get_opt("default").await, Ok(Some(_))) }
    })
    .await;
    let kubelet = Kubelet::start(world, RANCHER, namespace, images())
        .await
        .unwrap();
    (client, kubelet)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn pod_template(labels: Value, restart_policy: &str, container: Value) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": restart_policy, "containers": [container]},
    })
}

async fn create_pod(client: &Client, namespace: &str, name: &str, spec: Value) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = typed(json!({"metadata": {"name": name}, "spec": spec}));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods
}

async fn create_job(client: &Client, namespace: &str, name: &str, container: Value) -> Api<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let job = typed(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template(json!({"job": name}), "Never", container),
        },
    }));
    jobs.create(&PostParams::default(), &job).await.unwrap();
    jobs
}

async fn pod_json(pods: &Api<Pod>, name: &str) -> Value {
    match pods.get_opt(name).await {
        Ok(Some(pod)) => serde_json::to_value(pod).unwrap(),
        _ => Value::Null,
    }
}

async fn job_condition(jobs: &Api<Job>, name: &str, kind: &str) -> bool {
    let Ok(job) = jobs.get(name).await else {
        return false;
    };
    job.status
        .and_then(|status| status.conditions)
        .unwrap_or_default()
        .iter()
        .any(|condition| condition.type_ == kind && condition.status == "True")
}

async fn pods_of(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

/// The pid in a container status's `stand-in://<pid>` container ID.
fn pid_of(pod: &Value) -> u32 {
    pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("stand-in://"))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no stand-in container ID in {pod}"))
}

/// Whether a process of the group runs (a zombie waiting to be reaped does not count).
fn group_alive(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `<pid> (<comm>) <state> <ppid> <pgrp> ...`; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        matches!(fields.as_slice(), [state, _, pgrp, ..] if *state != "Z" && pgrp.parse() == Ok(group))
    })
}

#[tokio::test]
async fn a_deployment_becomes_available_and_scales_to_zero() {
    let namespace = "kubelet-deployment";
    let (client, kubelet) = setup(namespace).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = typed(json!({
        "metadata": {"name": "sleeper"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "sleeper"}},
            "template": pod_template(json!({"app": "sleeper"}), "Always", json!({
                "name": "sleeper",
                "image": "test/sleeper:1.0",
                "args": ["300"],
                "ports": [{"name": "admin", "containerPort": 9090}],
            })),
        },
    }));
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("the Deployment has 2 available replicas", || async {
        let status = deployments.get("sleeper").await.ok().and_then(|d| d.status);
        status.is_some_and(|s| s.ready_replicas == Some(2) && s.available_replicas == Some(2))
    })
    .await;
    println!("2 replicas available after {:?}", started.elapsed());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let replicas = pods_of(&pods, "app=sleeper").await;
    let names: BTreeSet<String> = replicas
        .iter()
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    assert_eq!(
        kubelet.running().into_iter().collect::<BTreeSet<_>>(),
        names
    );
    let ports: BTreeSet<u16> = names
        .iter()
        .map(|name| kubelet.address(name).unwrap().port())
        .collect();
    assert_eq!(ports.len(), 2, "each replica has a port of its own");
    for pod in &replicas {
        let pod = serde_json::to_value(pod).unwrap();
        assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["podIP"], "127.0.0.1");
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    }

    let scaled = Instant::now();
    deployments
        .patch(
            "sleeper",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("both replicas and their processes are gone", || async {
        pods_of(&pods, "app=sleeper").await.is_empty() && kubelet.running().is_empty()
    })
    .await;
    println!("scaled to 0 in {:?}", scaled.elapsed());
}

#[tokio::test]
async fn a_job_completes_when_its_pod_exits_zero() {
    let namespace = "kubelet-job";
    let (client, kubelet) = setup(namespace).await;
    let script = r#"test "$GREETING" = hello && test "$POD_NAME" = "$HOSTNAME" \
        && test -s "$KUBECONFIG" && test -z "$KUBERNETES_SERVICE_HOST" \
        && test "$NODE" = stand-in && test "$GLEANER_ADMIN_ADDR" != "0.0.0.0:9090""#;
    let started = Instant::now();
    let jobs = create_job(
        &client,
        namespace,
        "greeter",
        json!({
            "name": "greeter",
            "image": "test/sh",
            "args": ["-c", script],
            "env": [
                {"name": "GREETING", "value": "hello"},
                {"name": "GLEANER_ADMIN_ADDR", "value": "0.0.0.0:9090"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
        }),
    )
    .await;
    eventually("the Job is complete", || async {
        let succeeded = jobs
            .get("greeter")
            .await
            .ok()
            .and_then(|job| job.status?.succeeded);
        succeeded == Some(1) && job_condition(&jobs, "greeter", "Complete").await
    })
    .await;
    println!("Job complete after {:?}", started.elapsed());
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = serde_json::to_value(&pods_of(&pods, "job=greeter").await[0]).unwrap();
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0, "{pod}");
    assert_eq!(terminated["reason"], "Completed");
    assert!(kubelet.running().is_empty());
}

#[tokio::test]
async fn a_job_fails_when_its_pod_exits_non_zero() {
    let namespace = "kubelet-job-failure";
    let (client, _kubelet) = setup(namespace).await;
    let jobs = create_job(
        &client,
        namespace,
        "three",
        json!({"name": "three", "image": "test/sh", "args": ["-c", "exit 3"]}),
    )
    .await;
    eventually("the Job failed", || job_condition(&jobs, "three", "Failed")).await;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = serde_json::to_value(&pods_of(&pods, "job=three").await[0]).unwrap();
    assert_eq!(pod["status"]["phase"], "Failed", "{pod}");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod}");
    assert_eq!(terminated["reason"], "Error");
}

#[tokio::test]
async fn a_pod_reaches_its_apiserver_with_a_token_bound_to_it() {
    let namespace = "kubelet-token";
    let (client, kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "whoami",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "kubectl",
            "image": "test/kubectl:v1.34.4",
            "args": ["auth", "whoami", "-o", "json"],
        }]}),
    )
    .await;
    eventually("the Pod succeeded", || async {
        pod_json(&pods, "whoami").await["status"]["phase"] == "Succeeded"
    })
    .await;
    let log = std::fs::read_to_string(kubelet.log("whoami")).unwrap();
    let review: Value = serde_json::from_str(&log).unwrap();
    let user = &review["status"]["userInfo"];
    assert_eq!(
        user["username"],
        format!("system:serviceaccount:{namespace}:default")
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["whoami"])
    );
}

#[tokio::test]
async fn a_pod_of_an_unknown_image_fails_with_the_reason() {
    let namespace = "kubelet-unknown-image";
    let (client, kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "nginx",
        json!({"restartPolicy": "Never", "containers": [{"name": "web", "image": "nginx:1.27"}]}),
    )
    .await;
    eventually("the Pod failed", || async {
        pod_json(&pods, "nginx").await["status"]["phase"] == "Failed"
    })
    .await;
    let pod = pod_json(&pods, "nginx").await;
    assert_eq!(pod["status"]["reason"], "UnknownImage");
    assert!(
        pod["status"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("nginx:1.27")),
        "{pod}"
    );
    assert!(kubelet.running().is_empty());
}

#[tokio::test]
async fn readiness_follows_the_probe_on_the_pods_own_port() {
    let namespace = "kubelet-readiness";
    let (client, kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "probed",
        json!({"containers": [{
            "name": "sleeper",
            "image": "test/sleeper",
            "args": ["300"],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": "admin"},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        }]}),
    )
    .await;
    let ready = || async {
        let pod = pod_json(&pods, "probed").await;
        let conditions = pod["status"]["conditions"].as_array().cloned();
        let ready = conditions
            .unwrap_or_default()
            .into_iter()
            .find(|condition| condition["type"] == "Ready");
        ready.map(|condition| condition["status"] == "True")
    };
    eventually("the Pod runs, not ready", || async {
        ready().await == Some(false) && kubelet.running() == ["probed"]
    })
    .await;
    // What the process would serve: the probe knocks on the Pod's own port.
    let address = kubelet.address("probed").unwrap();
    let listener = TcpListener::bind(address).await.unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    eventually("the Pod is ready", || async { ready().await == Some(true) }).await;
    server.abort();
    let _ = server.await;
    eventually("the Pod is unready again", || async {
        ready().await == Some(false)
    })
    .await;
}

#[tokio::test]
async fn a_crashing_container_is_restarted() {
    let namespace = "kubelet-restart";
    let (client, _kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "crasher",
        json!({"containers": [{"name": "crasher", "image": "test/sh", "args": ["-c", "exit 1"]}]}),
    )
    .await;
    eventually("the container restarted twice", || async {
        let pod = pod_json(&pods, "crasher").await;
        let container = &pod["status"]["containerStatuses"][0];
        pod["status"]["phase"] == "Running"
            && container["restartCount"].as_i64() >= Some(2)
            && container["lastState"]["terminated"]["exitCode"] == 1
    })
    .await;
}

#[tokio::test]
async fn a_deleted_pod_that_ignores_sigterm_is_killed_after_its_grace_period() {
    let namespace = "kubelet-grace";
    let (client, kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "stubborn",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "stubborn",
                "image": "test/sh",
                "args": ["-c", "trap '' TERM; sleep 300"],
            }],
        }),
    )
    .await;
    eventually("the Pod runs", || async {
        pod_json(&pods, "stubborn").await["status"]["phase"] == "Running"
    })
    .await;
    let pid = pid_of(&pod_json(&pods, "stubborn").await);
    assert!(group_alive(pid));
    let deleted = Instant::now();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Pod is gone", || async {
        pod_json(&pods, "stubborn").await.is_null()
    })
    .await;
    let took = deleted.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(kubelet.running().is_empty());
    assert!(!group_alive(pid), "sh and its sleep are killed");
}

#[tokio::test]
async fn dropping_the_kubelet_kills_its_processes() {
    let namespace = "kubelet-drop";
    let (client, kubelet) = setup(namespace).await;
    let pods = create_pod(
        &client,
        namespace,
        "sleeper",
        json!({"containers": [{"name": "sleeper", "image": "test/sleeper", "args": ["300"]}]}),
    )
    .await;
    eventually("the Pod runs", || async {
        kubelet.running() == ["sleeper"]
            && pod_json(&pods, "sleeper").await["status"]["phase"] == "Running"
    })
    .await;
    let pid = pid_of(&pod_json(&pods, "sleeper").await);
    assert!(group_alive(pid));
    drop(kubelet);
    eventually("the process is gone", || async { !group_alive(pid) }).await;
}
