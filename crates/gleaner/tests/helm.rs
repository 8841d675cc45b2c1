//! `helm install` and `helm uninstall` of the chart in the world's Rancher apiserver, its Pods run
//! by the world's stand-in kubelet as the real gleaner binary: the installed replicas hook a
//! cluster's Machines, and uninstalling leaves no hook behind and no replica running.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::{HOOK, TIME_SCALE, footprints, hooks, recorded_all, world};
use gleaner_sim::{
    Clock,
    scenario::{ClusterPlan, ScenarioBuilder, VolumePlan},
};
use gleaner_world::{ClusterName, Packaging, kubelet::Kubelet, testing::eventually};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use tokio::process::Command;

const RANCHER: &str = ClusterName::RANCHER;
const RELEASE: &str = "gleaner-helm";

/// Runs helm against Rancher's apiserver, without blocking the runtime the kubelet runs on.
async fn helm(world: &gleaner_world::World, args: &[&str]) -> std::process::Output {
    let packaging = Packaging::cached();
    packaging.check().unwrap();
    Command::new(packaging.helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(world.kubeconfig(RANCHER).unwrap())
        .output()
        .await
        .unwrap()
}

/// Fails with helm's output and what the namespace holds, its Events included.
fn succeeded(
    world: &gleaner_world::World,
    namespace: &str,
    what: &str,
    output: &std::process::Output,
) {
    if output.status.success() {
        return;
    }
    let state = world
        .kubectl(
            RANCHER,
            &["get", "all,events", "-n", namespace, "-o", "wide"],
        )
        .map(|listed| String::from_utf8_lossy(&listed.stdout).into_owned())
        .unwrap_or_default();
    panic!(
        "{what}:\n{}{}\n{state}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn uninstalling_stops_the_replicas_then_leaves_no_machine_hooked() {
    let world = world().await;
    let prefix = "helm";
    let namespace = format!("gleaner-{prefix}");
    let scenario = ScenarioBuilder::new(prefix)
        .clock(Clock::new(TIME_SCALE))
        .cluster(ClusterPlan::new("c1", 2).volume(VolumePlan::new("data").hotplugged()))
        .start(world)
        .await
        .unwrap();
    let key = scenario.key("c1");
    let fleet = key.namespace.clone();
    let images = HashMap::from([(
        "ghcr.io/gleaner-dev/gleaner".to_owned(),
        Path::new(env!("CARGO_BIN_EXE_gleaner")).to_path_buf(),
    )]);
    let kubelet = Kubelet::start(world, RANCHER, &namespace, images)
        .await
        .unwrap();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/gleaner");
    let secret_namespaces = format!("secretNamespaces={{cattle-global-data,{fleet}}}");
    let watch = format!("config.watchNamespaces={{{fleet}}}");
    succeeded(
        world,
        &namespace,
        "helm install",
        &helm(
            world,
            &[
                "install",
                RELEASE,
                chart.to_str().unwrap(),
                "--namespace",
                &namespace,
                "--create-namespace",
                "--set",
                &secret_namespaces,
                "--set",
                &watch,
                "--set",
                "config.leaseDuration=2s",
                "--set",
                "config.logLevel=info\\,gleaner=debug",
                "--wait",
                "--timeout",
                "90s",
            ],
        )
        .await,
    );
    let deployments: Api<Deployment> =
        Api::namespaced(world.client(RANCHER).await.unwrap(), &namespace);
    let ready = deployments
        .get(RELEASE)
        .await
        .unwrap()
        .status
        .and_then(|status| status.ready_replicas);
    assert_eq!(ready, Some(2));

    // The installed replicas do gleaner's work: a Footprint, and the hook on every Machine.
    let footprints = footprints(world, prefix).await;
    recorded_all(&footprints, &scenario, &key).await;
    common::wait_for_hooks(&scenario, "c1").await;
    assert_eq!(kubelet.running().len(), 2, "{:?}", kubelet.running());

    succeeded(
        world,
        &namespace,
        "helm uninstall",
        &helm(
            world,
            &[
                "uninstall",
                RELEASE,
                "--namespace",
                &namespace,
                "--wait",
                "--timeout",
                "90s",
            ],
        )
        .await,
    );
    let left: Vec<_> = hooks(&scenario, "c1")
        .await
        .into_iter()
        .filter(|(_, hook)| hook.is_some())
        .collect();
    assert!(left.is_empty(), "{HOOK} left on {left:?}");
    eventually("no replica runs any more", || async {
        kubelet.running().is_empty()
    })
    .await;
    // Nothing puts a hook back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left: Vec<_> = hooks(&scenario, "c1")
        .await
        .into_iter()
        .filter(|(_, hook)| hook.is_some())
        .collect();
    assert!(left.is_empty(), "{HOOK} back on {left:?}");
    assert!(deployments.get_opt(RELEASE).await.unwrap().is_none());
}
