//! Command line: `clap` derives, flattened per concern, every flag with a `GLEANER_*` env twin.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{Error, Result, timeouts, user_agent};

/// Reclaims the Harvester storage that deleted Rancher guest clusters leave behind.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What gleaner does this time.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the controllers against the management cluster (Rancher's local cluster).
    Run(RunArgs),
    /// Prints gleaner's CRDs as YAML (`gleaner crd | kubectl apply -f -`).
    Crd,
    /// Removes gleaner's hook from every CAPI Machine, so uninstalling gleaner never blocks
    /// Rancher. Run it after stopping gleaner, before uninstalling it.
    Unhook(UnhookArgs),
    /// Shows what deleting a guest cluster now would delete, keep or hold on Harvester, and
    /// why: the reclaimer's own plan, from the cluster's Footprint and live reads. Read-only.
    #[command(after_help = PLAN_EXAMPLES)]
    Plan(PlanArgs),
    /// Tells one Harvester object's story: which Footprint records it and on what evidence, its
    /// ledger entries and Events, and what the plan says of it now. Read-only.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(ExplainArgs),
    /// Finds what leaked before gleaner came: guest-made host objects on each Harvester that no
    /// living cluster accounts for, each `orphan`, `in use` or `unknown` with why. Read-only.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// Hands orphans an audit finds to the reclaimer: without --confirm it only shows what it
    /// would adopt; with it, it makes an adopted Footprint the reclaimer deletes them from,
    /// under its rules (each orphan verdict read again live just before its delete).
    #[command(after_help = ADOPT_EXAMPLES)]
    Adopt(AdoptArgs),
}

const ADOPT_EXAMPLES: &str = "\
Examples:
  # What adopting every orphan would take in
  gleaner adopt --all

  # The orphans labelled app=old-data
  gleaner adopt -l app=old-data

  # Adopt two volumes for real
  gleaner adopt pvc/pvc-0b4c2a1e-9f7d-4c3e-8a51-2f6d7e9b0c13 pvc/pvc-7fb7ed29-6540-49b0-8e9f-1355954528bf --confirm

Exit status: 0 when done (or shown), 1 when an object named is not an orphan now (nothing is
adopted then) or the audit cannot be done.";

const AUDIT_EXAMPLES: &str = "\
Examples:
  # Every Harvester the Footprints use
  gleaner audit

  # One Harvester, for tooling
  gleaner audit --harvester cattle-global-data:cc-hv1 -o json

Exit status: 0 when no orphan is found, 3 when orphans are found (a CronJob can alert on it),
1 when the audit cannot be done (a Harvester unreachable, a permission missing).";

const PLAN_EXAMPLES: &str = "\
Examples:
  # What would go if fleet-default/prod were deleted now
  gleaner plan prod

  # The same for a cluster in another workspace, every field, for tooling
  gleaner plan prod -n team-b -o json

Exit status: 0 when the plan is shown, 1 when it cannot be worked out (the cluster or its
Footprint unknown, a Harvester unreachable, a permission missing).";

const EXPLAIN_EXAMPLES: &str = "\
Examples:
  # Why is this volume still here?
  gleaner explain pvc/pvc-0b4c2a1e-9f7d-4c3e-8a51-2f6d7e9b0c13 -n default

  # A load balancer, on the Harvester a given cloud credential reaches
  gleaner explain lb/prod-ingress -n default --harvester cattle-global-data:cc-hv1 -o yaml

Kinds: pvc (persistentvolumeclaim), volumesnapshot (vs), networkfilesystem (nfs), loadbalancer (lb).
Exit status: 0 when the story is told (an object no Footprint records has one too), 1 when it
cannot be (the object's Harvester unknown or unreachable, a permission missing).";

/// How a read-only command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    Table,
    /// The table with every column.
    Wide,
    /// The whole answer as JSON.
    Json,
    /// The whole answer as YAML.
    Yaml,
}

/// What `plan` and `explain` share: the management cluster, gleaner's namespace, the output.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    /// gleaner's own namespace, where its Footprints live.
    #[arg(
        long = "gleaner-namespace",
        env = "GLEANER_NAMESPACE",
        value_name = "NAMESPACE",
        default_value_t = own_namespace_default()
    )]
    pub gleaner_namespace: String,

    /// Output format.
    #[arg(short = 'o', long, env = "GLEANER_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The policy age the reclaimer plans with, for `plan` and `explain`.
#[derive(Debug, Clone, Args)]
pub struct PolicyAgeArgs {
    /// How old a guest reclaim policy may be before it counts as never seen; set it as
    /// `gleaner run` has it.
    #[arg(
        long,
        env = "GLEANER_POLICY_MAX_AGE",
        default_value = "168h",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub policy_max_age: Duration,
}

/// `gleaner audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The cloud credential (`namespace:name`) of a Harvester to audit (repeatable, or
    /// comma-separated); by default every one the Footprints use.
    #[arg(
        long = "harvester",
        env = "GLEANER_HARVESTERS",
        value_name = "CREDENTIAL",
        value_delimiter = ','
    )]
    pub harvesters: Vec<String>,

    #[command(flatten)]
    pub inspect: InspectArgs,
}

/// `gleaner adopt`.
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The objects to adopt, as KIND/NAME or NAME, each an orphan of the audit.
    #[arg(
        value_name = "OBJECT",
        required_unless_present_any = ["all", "selector"],
        conflicts_with_all = ["all", "selector"]
    )]
    pub objects: Vec<String>,

    /// The objects whose labels match this label selector (e.g. `app=old-data`), each an orphan
    /// of the audit.
    #[arg(
        short = 'l',
        long,
        env = "GLEANER_SELECTOR",
        value_name = "SELECTOR",
        conflicts_with = "all"
    )]
    pub selector: Option<String>,

    /// Every orphan the audit finds.
    #[arg(long, env = "GLEANER_ADOPT_ALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub all: bool,

    /// Really adopt (make the adopted Footprint); without it nothing is written.
    #[arg(long, env = "GLEANER_CONFIRM", value_parser = clap::builder::BoolishValueParser::new())]
    pub confirm: bool,

    #[command(flatten)]
    pub audit: AuditArgs,
}

/// `gleaner plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The guest cluster: its name in Rancher (the provisioning Cluster's).
    pub cluster: String,

    /// The cluster's namespace in Rancher (its Fleet workspace).
    #[arg(
        short = 'n',
        long = "namespace",
        env = "GLEANER_CLUSTER_NAMESPACE",
        default_value = "fleet-default"
    )]
    pub namespace: String,

    #[command(flatten)]
    pub policy: PolicyAgeArgs,

    #[command(flatten)]
    pub inspect: InspectArgs,
}

/// `gleaner explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The Harvester object, as KIND/NAME (e.g. `pvc/pvc-0b4c…`).
    pub object: String,

    /// The object's namespace on Harvester [default: `harvester-system` for a
    /// NetworkFilesystem, else `default`].
    #[arg(
        short = 'n',
        long = "namespace",
        env = "GLEANER_OBJECT_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// The cloud credential (`namespace:name`) of the object's Harvester; needed only when the
    /// Footprints use several Harvesters and the object is in more than one.
    #[arg(long, env = "GLEANER_HARVESTER", value_name = "CREDENTIAL")]
    pub harvester: Option<String>,

    #[command(flatten)]
    pub policy: PolicyAgeArgs,

    #[command(flatten)]
    pub inspect: InspectArgs,
}

/// `gleaner unhook`.
#[derive(Debug, Args)]
pub struct UnhookArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub watch: WatchArgs,

    /// First scales this Deployment (gleaner's own, in --namespace) to 0 and waits for its
    /// Pods to go, so no replica hooks a Machine again: what the chart's uninstall Job does.
    #[arg(long, env = "GLEANER_STOP_DEPLOYMENT", value_name = "NAME")]
    pub stop_deployment: Option<String>,

    /// How long to wait for the Deployment's Pods to go; past it the hooks are removed all the
    /// same and gleaner exits non-zero, naming the Pods left.
    #[arg(
        long,
        env = "GLEANER_STOP_TIMEOUT",
        default_value = "2m",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub stop_timeout: Duration,

    /// The namespace of --stop-deployment.
    #[arg(
        long,
        env = "GLEANER_NAMESPACE",
        value_name = "NAMESPACE",
        default_value_t = own_namespace_default()
    )]
    pub namespace: String,
}

/// Which namespaces of the management cluster gleaner looks at.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// A namespace of Rancher objects (Clusters, Machines) to watch (repeatable, or
    /// comma-separated); none = all.
    #[arg(
        long = "watch-namespace",
        env = "GLEANER_WATCH_NAMESPACES",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
}

impl WatchArgs {
    /// One scope per namespace, or `None` (every namespace) when none is given.
    pub fn scopes(&self) -> Vec<Option<String>> {
        if self.watch_namespaces.is_empty() {
            vec![None]
        } else {
            self.watch_namespaces.iter().cloned().map(Some).collect()
        }
    }
}

/// How gleaner logs.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(
        long,
        env = "GLEANER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Plain,
        global = true
    )]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// `gleaner run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub controller: ControllerArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// How to reach the management cluster.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubeconfig of the management cluster; without it, the in-cluster configuration or
    /// KUBECONFIG / ~/.kube/config is used.
    #[arg(long, env = "GLEANER_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use; by default its current context.
    #[arg(long, env = "GLEANER_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// Connect, read and write timeout of every Kubernetes API call, to Rancher and to each
    /// Harvester (e.g. `30s`); watches are re-opened before it runs out. At least 2s.
    #[arg(
        long,
        env = "GLEANER_API_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        value_parser = parse_api_timeout
    )]
    pub api_timeout: Duration,
}

impl KubeArgs {
    /// A client for the management cluster, from `--kubeconfig` or inferred.
    pub async fn client(&self) -> Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig_error = |source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(kubeconfig_error)?
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: "KUBECONFIG or ~/.kube/config".into(),
                        source,
                    })?
            }
            None => Config::infer().await.map_err(Error::InferConfig)?,
        };
        let config = user_agent::identified(timeouts::bounded(config, self.api_timeout));
        tracing::info!(server = %config.cluster_url, "management cluster");
        Client::try_from(config).map_err(Error::Client)
    }
}

/// What the controllers watch and how they act.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// gleaner's own namespace: its Footprints and its Lease live there.
    #[arg(
        long,
        env = "GLEANER_NAMESPACE",
        value_name = "NAMESPACE",
        default_value_t = own_namespace_default()
    )]
    pub namespace: String,

    #[command(flatten)]
    pub watch: WatchArgs,

    /// Removes a ClusterDeletion hook after this long even if the intent could not be written
    /// (e.g. `30m`, `2h`), setting ProtectionLapsed; by default the hook waits.
    #[arg(long, env = "GLEANER_HOOK_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub hook_timeout: Option<Duration>,

    /// How long a deleting Machine of a cluster gleaner has no Footprint for (it cannot be
    /// made: no install-uuid Setting, no CRD, no permission) waits for it before gleaner writes
    /// the protective intent `Unknown` and lets the Machine go. A scale-down never waits.
    #[arg(
        long,
        env = "GLEANER_FOOTPRINT_WAIT",
        default_value = "2m",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub footprint_wait: Duration,

    /// How long the final inventory of a deleted cluster's guest may take, as a whole (its
    /// PVs, snapshot contents and Services, read live once the deletion is confirmed, before the
    /// first Machine goes). Past it the last known facts stand and the Machines go on.
    #[arg(
        long,
        env = "GLEANER_INVENTORY_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub inventory_timeout: Duration,

    /// A guest reclaim policy last seen longer ago than this when the cluster's deletion is
    /// confirmed counts as never seen: its volume is kept (`PolicyStale`).
    #[arg(
        long,
        env = "GLEANER_POLICY_MAX_AGE",
        default_value = "168h",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub policy_max_age: Duration,

    /// How long gleaner waits, once a cluster's deletion is confirmed, before its first
    /// delete: `gleaner.io/retain` added meanwhile to a volume or to the Footprint keeps it.
    /// The start is stored in the Footprint, so restarts and a changed flag keep the clock.
    #[arg(
        long,
        env = "GLEANER_GRACE_PERIOD",
        default_value = "0s",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub grace_period: Duration,

    /// How long an asked deletion may wait on finalizers (a snapshot still being cut, a
    /// protection controller that never lets go) before `DeletionStuck` names it and its
    /// finalizers. gleaner never asks twice; this only makes the wait visible.
    #[arg(
        long,
        env = "GLEANER_DELETION_STUCK_AFTER",
        default_value = "5m",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub deletion_stuck_after: Duration,

    /// How long a `Reclaimed` Footprint with no kept object stays before gleaner deletes it.
    #[arg(
        long,
        env = "GLEANER_RETENTION",
        default_value = "720h",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub retention: Duration,

    /// How many objects each controller reconciles at once.
    #[arg(
        long,
        env = "GLEANER_CONCURRENCY",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub concurrency: u16,

    /// Runs `gleaner audit` this often (e.g. `6h`) on the Lease holder and exports what it finds
    /// as `gleaner_orphans` and `gleaner_orphan_bytes`; off by default.
    #[arg(long, env = "GLEANER_AUDIT_INTERVAL", value_name = "DURATION", value_parser = parse_audit_interval)]
    pub audit_interval: Option<Duration>,

    /// Writes only hooks, Footprints ("would delete") and Events; nothing on VMs or host objects.
    #[arg(long, env = "GLEANER_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
}

/// `POD_NAMESPACE` (the downward API), else `gleaner-system`.
fn own_namespace_default() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or_else(|| "gleaner-system".to_owned())
}

/// The Lease that elects the one replica that writes.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Name of the `coordination.k8s.io` Lease in gleaner's namespace.
    #[arg(
        long,
        env = "GLEANER_LEASE_NAME",
        default_value = "gleaner",
        value_name = "NAME"
    )]
    pub lease_name: String,

    /// How long a leader's claim lasts without renewal: a standby takes over at most this long
    /// after the leader dies. Whole seconds, at least 2s.
    #[arg(
        long,
        env = "GLEANER_LEASE_DURATION",
        default_value = "15s",
        value_name = "DURATION",
        value_parser = parse_lease_duration
    )]
    pub lease_duration: Duration,
}

/// A whole number of seconds, at least two (the holder renews a third of the way before expiry).
fn parse_lease_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if duration.subsec_nanos() != 0 || duration < Duration::from_secs(2) {
        return Err(format!(
            "must be a whole number of seconds, at least 2s (got {})",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

/// At least a minute: each audit lists every PVC, VM and Pod of every Harvester.
fn parse_audit_interval(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if duration < Duration::from_secs(60) {
        return Err(format!(
            "must be at least 1m (got {})",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

fn parse_api_timeout(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if duration < Duration::from_secs(2) {
        return Err(format!(
            "must be at least 2s (got {})",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

/// The admin HTTP server.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(
        long,
        env = "GLEANER_ADMIN_ADDR",
        default_value = "0.0.0.0:9090",
        value_name = "ADDR"
    )]
    pub admin_addr: SocketAddr,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["gleaner", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(run) => Ok(run),
            other => panic!("parsed {other:?}, not run"),
        }
    }

    #[test]
    fn every_flag_has_a_gleaner_env_twin() {
        let mut command = Cli::command();
        command.build();
        let mut flags = command.get_arguments().collect::<Vec<_>>();
        for subcommand in command.get_subcommands() {
            flags.extend(subcommand.get_arguments());
        }
        let flags = flags.into_iter().filter(|arg| {
            arg.get_long()
                .is_some_and(|long| !matches!(long, "help" | "version"))
        });
        let mut checked = 0;
        for flag in flags {
            let env = flag.get_env().and_then(|env| env.to_str()).unwrap_or("");
            assert!(
                env.starts_with("GLEANER_"),
                "--{} has no GLEANER_ env twin",
                flag.get_long().unwrap_or_default()
            );
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} flags checked");
    }

    #[test]
    fn flags_parse_into_their_settings() {
        let run = run_args(&[
            "--kubeconfig=/tmp/kc",
            "--namespace=ops",
            "--watch-namespace=fleet-a",
            "--watch-namespace=fleet-b,fleet-c",
            "--hook-timeout=1h 30m",
            "--concurrency=8",
            "--dry-run",
            "--lease-name=gl",
            "--lease-duration=2s",
            "--admin-addr=127.0.0.1:9999",
            "--api-timeout=5s",
            "--footprint-wait=90s",
            "--inventory-timeout=10s",
            "--policy-max-age=24h",
            "--retention=48h",
        ])
        .unwrap();
        assert_eq!(run.controller.retention, Duration::from_secs(48 * 3600));
        assert_eq!(run.controller.inventory_timeout, Duration::from_secs(10));
        assert_eq!(
            run.controller.policy_max_age,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(run.kube.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(run.controller.namespace, "ops");
        assert_eq!(
            run.controller.watch.scopes(),
            [
                Some("fleet-a".to_owned()),
                Some("fleet-b".to_owned()),
                Some("fleet-c".to_owned())
            ]
        );
        assert_eq!(
            run.controller.hook_timeout,
            Some(Duration::from_secs(90 * 60))
        );
        assert_eq!(run.controller.concurrency, 8);
        assert!(run.controller.dry_run);
        assert_eq!(run.lease.lease_name, "gl");
        assert_eq!(run.lease.lease_duration, Duration::from_secs(2));
        assert_eq!(run.admin.admin_addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(run.kube.api_timeout, Duration::from_secs(5));
        assert_eq!(run.controller.footprint_wait, Duration::from_secs(90));
    }

    #[test]
    fn defaults_watch_everything_and_wait_for_hooks() {
        let run = run_args(&[]).unwrap();
        assert_eq!(run.kube.kubeconfig, None);
        assert_eq!(run.controller.watch.scopes(), [None]);
        assert_eq!(run.controller.hook_timeout, None);
        assert!(!run.controller.dry_run);
        assert_eq!(run.lease.lease_duration, Duration::from_secs(15));
        assert_eq!(run.admin.admin_addr, "0.0.0.0:9090".parse().unwrap());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--lease-duration=1s"][..], "--lease-duration"),
            (&["--lease-duration=2500ms"], "--lease-duration"),
            (&["--concurrency=0"], "--concurrency"),
            (&["--hook-timeout=soon"], "--hook-timeout"),
            (&["--admin-addr=localhost"], "--admin-addr"),
            (&["--api-timeout=1s"], "--api-timeout"),
            (&["--audit-interval=10s"], "--audit-interval"),
        ] {
            let error = run_args(args).unwrap_err().to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
        let error = Cli::try_parse_from(["gleaner", "--log-format=xml", "run"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--log-format"), "{error}");
    }
}
