//! `cargo xtask bench-audit`: `gleaner audit` against one Harvester holding many host PVCs, in
//! a world of its own; prints how long it took and how many requests (and LISTs) the Harvester
//! apiserver served for it, from its own `apiserver_request_total`. A figure, not a test.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use gleaner_world::{ClusterName, Role, World, testing::ensure_namespace};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DynamicObject, ObjectMeta, PostParams},
};
use serde_json::{Value, json};

#[derive(Args)]
pub struct BenchArgs {
    /// How many `pvc-<uuid>` host PVCs the Harvester holds, none attached: every one an orphan.
    #[arg(long, default_value_t = 10_000)]
    pvcs: usize,
}

const NAMESPACE: &str = "bench-vms";
const GLEANER_NAMESPACE: &str = "gleaner-bench";
const CREDENTIAL: &str = "bench-harvester";
/// How many creates are in flight at once while the PVCs are made.
const CREATING: usize = 64;

pub fn run(args: BenchArgs) -> Result<()> {
    crate::tools::ensure_built()?;
    let binary = crate::demo::build_gleaner(&[])?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    runtime.block_on(async {
        let world = World::builder()
            .with_crds(Role::Management, gleaner::footprint::crds())
            .start()
            .await?;
        let harvester = world.client(ClusterName::HARVESTER).await?;
        ensure_namespace(&harvester, NAMESPACE).await?;
        let made = Instant::now();
        let claims: Api<DynamicObject> = Api::namespaced_with(
            harvester.clone(),
            NAMESPACE,
            &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&()),
        );
        futures::stream::iter(0..args.pvcs)
            .map(|index| {
                let claims = claims.clone();
                async move {
                    let claim: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": format!("pvc-00000000-0000-4000-8000-{index:012x}")},
                        "spec": {
                            "accessModes": ["ReadWriteMany"],
                            "volumeMode": "Block",
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }))?;
                    claims.create(&PostParams::default(), &claim).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CREATING)
            .try_collect::<Vec<()>>()
            .await?;
        eprintln!(
            "made {} PVCs in {:.1}s",
            args.pvcs,
            made.elapsed().as_secs_f64()
        );
        let rancher = world.client(ClusterName::RANCHER).await?;
        ensure_namespace(&rancher, "cattle-global-data").await?;
        ensure_namespace(&rancher, GLEANER_NAMESPACE).await?;
        let kubeconfig = std::fs::read(world.kubeconfig(ClusterName::HARVESTER)?)?;
        Api::<Secret>::namespaced(rancher, "cattle-global-data")
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: ObjectMeta {
                        name: Some(CREDENTIAL.into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(
                        [(
                            "harvestercredentialConfig-kubeconfigContent".to_owned(),
                            ByteString(kubeconfig),
                        )]
                        .into(),
                    ),
                    ..Secret::default()
                },
            )
            .await?;
        let before = requests(&world).await?;
        let started = Instant::now();
        let output = Command::new(&binary)
            .args([
                "audit",
                "--harvester",
                &format!("cattle-global-data:{CREDENTIAL}"),
                "--gleaner-namespace",
                GLEANER_NAMESPACE,
                "-o",
                "json",
                "--kubeconfig",
            ])
            .arg(world.kubeconfig(ClusterName::RANCHER)?)
            .output()
            .context("cannot run gleaner audit")?;
        let took = started.elapsed();
        let after = requests(&world).await?;
        ensure!(
            output.status.code() == Some(3),
            "gleaner audit did not find orphans: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout)?;
        let figures = json!({
            "pvcs": args.pvcs,
            "orphans": answer["totals"]["orphans"],
            "seconds": took.as_secs_f64(),
            "harvester_requests": after.0 - before.0,
            "harvester_lists": after.1 - before.1,
        });
        println!("{}", serde_json::to_string_pretty(&figures)?);
        Ok(())
    })
}

/// Every request and every LIST the Harvester apiserver served so far.
async fn requests(world: &World) -> Result<(u64, u64)> {
    let client = world.client(ClusterName::HARVESTER).await?;
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await
        .context("cannot read Harvester's metrics")?;
    let mut total = 0.0;
    let mut lists = 0.0;
    for line in text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
    {
        let Some(count) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        total += count;
        if line.contains("verb=\"LIST\"") {
            lists += count;
        }
    }
    Ok((total as u64, lists as u64))
}
