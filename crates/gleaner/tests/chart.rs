//! The Helm chart (`charts/gleaner`): lint-clean, its schema strict, every `gleaner run` flag
//! reachable with the binary's defaults, accepted by the world's Rancher apiserver, its Pods
//! within the `restricted` Pod Security Standard, and its RBAC enough for a whole scenario run
//! under it and nothing more.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use clap::CommandFactory;
use common::{Gleaner, TIME_SCALE, footprints, judged_clean, recorded_all, world};
use gleaner_sim::{
    Clock,
    keys::{CLOUD_CREDENTIAL_KUBECONFIG, SIMULATED_RANCHER_KUBECONFIG},
    scenario::{ClusterPlan, Scenario, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, Packaging, World, testing::ensure_namespace};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde::Deserialize;
use serde_json::{Value, json};

const RANCHER: &str = ClusterName::RANCHER;
const HARVESTER: &str = ClusterName::HARVESTER;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/gleaner")
}

fn helm() -> PathBuf {
    let packaging = Packaging::cached();
    packaging.check().unwrap();
    packaging.helm
}

/// `helm template` of the chart as release `gleaner` in `namespace`, with `--set` values; the
/// error output when helm refuses.
fn template(namespace: &str, values: &[&str]) -> Result<Vec<Value>, String> {
    let mut command = Command::new(helm());
    command
        .args(["template", "gleaner"])
        .arg(chart())
        .args(["--namespace", namespace]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    Ok(serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .collect())
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the chart"))
}

/// The env of the Deployment's container, by name; a `valueFrom` shows as its field path.
fn env_of(documents: &[Value]) -> BTreeMap<String, String> {
    find(documents, "Deployment", "gleaner")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| {
            let value = variable["value"]
                .as_str()
                .or(variable["valueFrom"]["fieldRef"]["fieldPath"].as_str())
                .unwrap()
                .to_owned();
            (variable["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// Every `gleaner run` flag: its env twin and its default (`None` when it has none).
fn run_flags() -> Vec<(String, Option<String>)> {
    let mut cli = gleaner::cli::Cli::command();
    cli.build();
    let run = cli.find_subcommand("run").unwrap().clone();
    run.get_arguments()
        .chain(cli.get_arguments())
        .filter(|arg| {
            arg.get_long()
                .is_some_and(|long| !matches!(long, "help" | "version"))
        })
        .map(|arg| {
            let env = arg.get_env().unwrap().to_str().unwrap().to_owned();
            let default = arg
                .get_default_values()
                .first()
                .map(|value| value.to_str().unwrap().to_owned());
            (env, default)
        })
        .collect()
}

#[test]
fn the_chart_lints_clean_with_its_defaults_and_with_everything_on() {
    for values in [
        &[][..],
        &[
            "serviceMonitor.enabled=true",
            "config.kubeconfig.secretName=rancher-kubeconfig",
            "config.watchNamespaces={fleet-a,fleet-b}",
            "config.hookTimeout=30m",
            "config.auditInterval=6h",
        ],
    ] {
        let mut command = Command::new(helm());
        command.args(["lint", "--strict"]).arg(chart());
        for value in values {
            command.args(["--set", value]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{values:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_chart_ships_the_crd_gleaner_prints() {
    let shipped = std::fs::read_to_string(chart().join("crds/footprints.yaml")).unwrap();
    assert!(
        shipped == gleaner::footprint::crds_yaml(),
        "charts/gleaner/crds/footprints.yaml differs from `gleaner crd`: run `gleaner crd > charts/gleaner/crds/footprints.yaml`"
    );
}

#[test]
fn the_schema_refuses_wrong_types_and_unknown_values() {
    for (value, field) in [
        ("replicaCount=two", "replicaCount"),
        ("config.concurrency=0", "concurrency"),
        ("config.gracePeriod=soon", "gracePeriod"),
        ("config.dryRun=maybe", "dryRun"),
        ("config.logFormat=xml", "logFormat"),
        ("config.leaseDuration=1500ms", "leaseDuration"),
        ("config.adminPort=70000", "adminPort"),
        ("secretNamespaces=null", "secretNamespaces"),
        ("config.gracePerod=1h", "gracePerod"),
    ] {
        let error = template("gleaner-system", &[value]).unwrap_err();
        assert!(
            error.contains("schema") && error.contains(field),
            "{value}: {error}"
        );
    }
}

#[test]
fn every_run_flag_is_reachable_from_values_with_the_binarys_defaults() {
    let defaults = env_of(&template("gleaner-system", &[]).unwrap());
    let everything = env_of(
        &template(
            "gleaner-system",
            &[
                "config.kubeconfig.secretName=rancher-kubeconfig",
                "config.context=local",
                "config.watchNamespaces={fleet-a,fleet-b}",
                "config.hookTimeout=30m",
                "config.auditInterval=6h",
            ],
        )
        .unwrap(),
    );
    let flags = run_flags();
    assert!(flags.len() >= 18, "{flags:?}");
    for (env, default) in flags {
        assert!(everything.contains_key(&env), "{env} is not reachable");
        let rendered = defaults.get(&env);
        match (env.as_str(), default) {
            // The chart's namespace is the release's, as POD_NAMESPACE would give it.
            ("GLEANER_NAMESPACE", _) => {
                assert_eq!(rendered.map(String::as_str), Some("gleaner-system"));
            }
            (_, Some(default)) => assert_eq!(rendered, Some(&default), "{env}"),
            (_, None) => assert_eq!(rendered, None, "{env} is set without being asked"),
        }
    }
    assert_eq!(
        everything["GLEANER_WATCH_NAMESPACES"], "fleet-a,fleet-b",
        "{everything:?}"
    );
    assert_eq!(
        everything["GLEANER_KUBECONFIG"],
        "/etc/gleaner/kubeconfig/value"
    );
    assert_eq!(defaults["POD_NAME"], "metadata.name");
}

#[test]
fn the_default_image_is_the_documented_one() {
    let documents = template("gleaner-system", &[]).unwrap();
    let image = find(&documents, "Deployment", "gleaner")["spec"]["template"]["spec"]["containers"]
        [0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        image,
        gleaner_world::image::default_reference(env!("CARGO_PKG_VERSION"))
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    assert!(readme.contains(&image), "the README does not name {image}");
}

/// The rendered chart into a file under the world's folder, for kubectl.
fn write_rendered(world: &World, name: &str, documents: &[Value]) -> PathBuf {
    let path = world.dir().join(format!("{name}.json"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": documents});
    std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
    path
}

fn kubectl(world: &World, cluster: &str, args: &[&str]) -> String {
    let output = world.kubectl(cluster, args).unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn rancher_accepts_every_object_of_the_chart() {
    let world = world().await;
    let client = world.client(RANCHER).await.unwrap();
    for namespace in ["chart-dry-run", "cattle-global-data", "fleet-default"] {
        ensure_namespace(&client, namespace).await.unwrap();
    }
    let documents = template("chart-dry-run", &["config.hookTimeout=30m"]).unwrap();
    let path = write_rendered(world, "chart-dry-run", &documents);
    let applied = kubectl(
        world,
        RANCHER,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            path.to_str().unwrap(),
            "-o",
            "name",
        ],
    );
    for kind in [
        "deployment.apps/gleaner",
        "serviceaccount/gleaner",
        "clusterrole.rbac.authorization.k8s.io/gleaner",
        "role.rbac.authorization.k8s.io/gleaner-secrets",
        "service/gleaner",
        "poddisruptionbudget.policy/gleaner",
        "job.batch/gleaner-uninstall",
    ] {
        assert!(applied.contains(kind), "{kind} not applied:\n{applied}");
    }
}

#[tokio::test]
async fn the_pods_meet_the_restricted_pod_security_standard() {
    let world = world().await;
    let client = world.client(RANCHER).await.unwrap();
    let namespace = "chart-restricted";
    ensure_namespace(&client, namespace).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    let documents = template(
        namespace,
        &["config.kubeconfig.secretName=rancher-kubeconfig"],
    )
    .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for name in ["gleaner", "gleaner-uninstall"] {
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match accounts.create(&PostParams::default(), &account).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            created => drop(created.unwrap()),
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for (kind, name) in [("Deployment", "gleaner"), ("Job", "gleaner-uninstall")] {
        let template = &find(&documents, kind, name)["spec"]["template"];
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{}-pod", name)},
            "spec": template["spec"],
        }))
        .unwrap();
        pods.create(&dry_run, &pod)
            .await
            .unwrap_or_else(|error| panic!("{kind} {name}'s Pod refused: {error}"));
    }
    // The check is real: a Pod that runs as root is refused there.
    let root = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let refused = pods.create(&dry_run, &root).await.unwrap_err().to_string();
    assert!(refused.contains("restricted"), "{refused}");
}

/// The chart's own RBAC (ServiceAccount, roles and bindings, not the uninstall hook's) for a
/// release in `namespace`, applied to Rancher's apiserver; returns a kubeconfig with a token
/// of its ServiceAccount, minted through the TokenRequest API.
async fn install_rbac(world: &World, namespace: &str, fleet: &str) -> PathBuf {
    let client = world.client(RANCHER).await.unwrap();
    for name in [namespace, "cattle-global-data", fleet] {
        ensure_namespace(&client, name).await.unwrap();
    }
    let secret_namespaces = format!("secretNamespaces={{cattle-global-data,{fleet}}}");
    let watch = format!("config.watchNamespaces={{{fleet}}}");
    let rbac: Vec<Value> = template(namespace, &[&secret_namespaces, &watch])
        .unwrap()
        .into_iter()
        .filter(|document| {
            let kind = document["kind"].as_str().unwrap_or_default();
            (kind == "ServiceAccount" || kind.ends_with("Role") || kind.ends_with("RoleBinding"))
                && document["metadata"]["annotations"]["helm.sh/hook"].is_null()
        })
        .collect();
    assert!(rbac.len() >= 8, "{rbac:#?}");
    let path = write_rendered(world, &format!("{namespace}-rbac"), &rbac);
    kubectl(world, RANCHER, &["apply", "-f", path.to_str().unwrap()]);
    world
        .service_account_kubeconfig(RANCHER, namespace, "gleaner")
        .await
        .unwrap()
}

/// Points every cloud credential of the scenario at a Harvester ServiceAccount bound to
/// `deploy/harvester-rbac.yaml` only; the simulated Rancher actors keep the credential they
/// had (in real Rancher the driver shares the identity, with what it needs on top).
async fn narrow_harvester_credentials(world: &World, scenario: &Scenario, clusters: &[&str]) {
    let harvester_rbac =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/harvester-rbac.yaml");
    kubectl(
        world,
        HARVESTER,
        &["apply", "-f", harvester_rbac.to_str().unwrap()],
    );
    let harvester = world.client(HARVESTER).await.unwrap();
    ensure_namespace(&harvester, "gleaner-credential")
        .await
        .unwrap();
    let narrow = world
        .service_account_kubeconfig(HARVESTER, "gleaner-credential", "cloud-credential")
        .await
        .unwrap();
    kubectl(
        world,
        HARVESTER,
        &[
            "create",
            "clusterrolebinding",
            "gleaner",
            "--clusterrole=gleaner",
            "--serviceaccount=gleaner-credential:cloud-credential",
        ],
    );
    let narrow = std::fs::read(narrow).unwrap();
    let secrets: Api<Secret> = Api::namespaced(
        world.client(RANCHER).await.unwrap(),
        gleaner_sim::keys::CLOUD_CREDENTIAL_NAMESPACE,
    );
    for cluster in clusters {
        let credential = &scenario.cluster(cluster).unwrap().cloud_credential;
        let name = credential.split_once(':').unwrap().1;
        let secret = secrets.get(name).await.unwrap();
        let driver = secret.data.unwrap()[CLOUD_CREDENTIAL_KUBECONFIG].clone();
        let patch = json!({"data": {
            CLOUD_CREDENTIAL_KUBECONFIG: ByteString(narrow.clone()),
            SIMULATED_RANCHER_KUBECONFIG: driver,
        }});
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn under_the_charts_rbac_and_a_narrow_harvester_role_a_whole_scenario_comes_out_right() {
    let world = world().await;
    let prefix = "chart-rbac";
    let mut scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(
            ClusterPlan::new("c1", 3)
                .volume(VolumePlan::new("data").hotplugged().snapshots(1))
                .volume(VolumePlan::new("spare").unattached())
                .volume(VolumePlan::new("shared").rwx())
                .volume(VolumePlan::new("kept").retain())
                .load_balancer("web"),
        )
        .cluster(ClusterPlan::new("c2", 1).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let fleet = key.namespace.clone();
    let kubeconfig = install_rbac(world, &format!("gleaner-{prefix}"), &fleet).await;
    narrow_harvester_credentials(world, &scenario, &["c1", "c2"]).await;
    let gleaner = Gleaner::start_as(world, prefix, prefix, &fleet, &kubeconfig, &[]).await;
    let footprints = footprints(world, prefix).await;
    recorded_all(&footprints, &scenario, &key).await;
    common::wait_for_hooks(&scenario, "c1").await;

    let harvester = world.client(HARVESTER).await.unwrap();
    let (intents, watcher) = common::IntentLog::watch(harvester, scenario.vm_namespace());
    let going = scenario.cluster("c1").unwrap().machines[0].clone();
    scenario
        .rancher_of("c1")
        .unwrap()
        .scale_down("c1", "pool1", &going.name)
        .await
        .unwrap();
    gleaner_world::testing::eventually("the scaled-down VM gets its intent", || async {
        intents.get(&going.vm).is_some()
    })
    .await;
    watcher.abort();
    let (_, intent, remove_all) = intents.get(&going.vm).unwrap();
    assert_eq!(intent["reason"], "ScaleDown", "{intent}");
    assert_eq!(remove_all.as_deref(), Some("false"));

    scenario.delete_cluster(&key).await.unwrap();
    common::until_reclaimed(&footprints, &key).await;
    let report = scenario.measure(Duration::from_secs(120)).await.unwrap();
    judged_clean(&report);
    let deleted = report
        .objects
        .iter()
        .filter(|object| !object.must_survive)
        .count();
    assert!(deleted > 0, "{report}");

    let metrics = gleaner.metrics().await;
    let denied: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains("forbidden") && !line.ends_with(" 0"))
        .collect();
    assert!(denied.is_empty(), "{denied:#?}");
    let log = std::fs::read_to_string(
        world
            .dir()
            .join("logs")
            .join(format!("gleaner-{prefix}.log")),
    )
    .unwrap();
    assert!(
        !log.contains("forbidden"),
        "gleaner was refused something:\n{}",
        log.lines()
            .filter(|line| line.contains("forbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn the_service_account_may_not_list_secrets_delete_outside_its_footprints_or_use_wildcards() {
    let world = world().await;
    let namespace = "chart-can-i";
    install_rbac(world, namespace, "fleet-default").await;
    let account = format!("--as=system:serviceaccount:{namespace}:gleaner");
    let can = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push(&account);
        let output = world
            .kubectl(RANCHER, &[&["auth", "can-i"][..], &args].concat())
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(!can(&["watch", "secrets", "--all-namespaces"]));
    assert!(can(&["get", "secrets", "-n", "cattle-global-data"]));
    assert!(!can(&["get", "secrets", "-n", "kube-system"]));
    assert!(can(&[
        "patch",
        "machines.cluster.x-k8s.io",
        "-n",
        "fleet-default"
    ]));
    assert!(can(&["delete", "footprints.gleaner.io", "-n", namespace]));
    assert!(!can(&[
        "delete",
        "footprints.gleaner.io",
        "-n",
        "fleet-default"
    ]));
    for namespace in [
        namespace,
        "fleet-default",
        "cattle-global-data",
        "kube-system",
    ] {
        let listed = kubectl(
            world,
            RANCHER,
            &["auth", "can-i", "--list", "-n", namespace, &account],
        );
        for row in listed.lines().skip(1) {
            let verbs = &row[row.rfind('[').unwrap_or(0)..];
            assert!(!verbs.contains('*'), "a wildcard in {namespace}: {row}");
            if verbs.contains("delete") {
                assert!(
                    row.starts_with("footprints.gleaner.io ") && namespace == "chart-can-i",
                    "delete in {namespace}: {row}"
                );
            }
        }
    }
}
