//! `cargo xtask campaign`: seeded scenarios drawn at random (clusters, objects, configurations,
//! user actions and faults), each run in a real world under the gleaner binary and judged by
//! the scenario's ground truth alone. A failure prints its seed, its story, and a shrunk
//! replay (`--replay SEED --without I,J`).

mod draw;
mod ledger;
mod run;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::mpsc;

use draw::{FaultKind, Plan, Step};
use ledger::{Ledger, Part, Record};
use run::{Outcome, Runner, Verdict};

#[derive(Args)]
pub struct CampaignArgs {
    /// How many scenarios: seeds `--seed`, `--seed`+1, ...
    #[arg(long, default_value_t = 20)]
    scenarios: u64,
    /// The first scenario's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scenarios run at once, each worker in worlds of its own.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Runs the one scenario of this seed and prints its plan and what each step did.
    #[arg(long, value_name = "SEED")]
    replay: Option<u64>,
    /// With `--replay`: the steps (indices) to leave out, as a shrunk failure names them.
    #[arg(long, value_delimiter = ',', value_name = "STEPS")]
    without: Vec<usize>,
    /// At most this many reruns to shrink each failure (leaving steps out one at a time).
    #[arg(long, default_value_t = 6)]
    shrink: usize,
    /// The seeds CI runs, instead of `--seed`/`--scenarios`.
    #[arg(long)]
    pinned: bool,
    /// Appends a JSON line per scenario to this file as it ends, and skips the seeds it
    /// already holds for the same source: a campaign too long for one sitting runs in parts.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Prints the table of a ledger's campaign, every part of it, and runs nothing.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "ledger"])]
    report: Option<PathBuf>,
}

/// The seeds CI runs: between them every fault kind, both Cluster API versions, namesakes,
/// both installations and the second Harvester (a unit test checks), plus every seed that
/// once found a bug.
pub const PINNED: [u64; 21] = [
    1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20, 33, 46, 1065,
];

pub fn run(args: CampaignArgs) -> Result<()> {
    if let Some(path) = &args.report {
        let records = Ledger::new(path).read()?;
        print!("{}", ledger::table(&records));
        return Ok(());
    }
    crate::tools::ensure_built()?;
    let binary = crate::demo::build_gleaner(&["--release"])?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    if let Some(seed) = args.replay {
        return runtime.block_on(replay(&binary, seed, &args.without));
    }
    let mut seeds: Vec<u64> = if args.pinned {
        PINNED.to_vec()
    } else {
        (args.seed..args.seed.saturating_add(args.scenarios)).collect()
    };
    let ledger = args.ledger.as_deref().map(Ledger::new);
    if let Some(ledger) = &ledger {
        let done = ledger::seeds_done(&ledger.read()?, &ledger::source());
        seeds.retain(|seed| !done.contains(seed));
        eprintln!(
            "{} seeds already in {} for this source; {} to run",
            done.len(),
            args.ledger.as_deref().unwrap_or(Path::new("")).display(),
            seeds.len()
        );
    }
    let summary = runtime.block_on(campaign(
        &binary,
        seeds,
        args.parallel,
        args.shrink,
        true,
        ledger.as_ref(),
    ));
    print!("{}", summary.table());
    if let Some(ledger) = &ledger {
        println!("\nthe whole campaign in the ledger:");
        print!("{}", ledger::table(&ledger.read()?));
    }
    if summary.failed() > 0 {
        bail!(
            "{} of {} scenarios failed",
            summary.failed(),
            summary.records.len()
        );
    }
    Ok(())
}

async fn replay(binary: &Path, seed: u64, without: &[usize]) -> Result<()> {
    let plan = draw::draw(seed).without(&without.iter().copied().collect());
    println!("{}", describe(&plan));
    let outcome = Runner::new(binary).run(&plan).await;
    for line in &outcome.story {
        println!("  {line}");
    }
    println!(
        "seed {seed}: {} in {:.1}s",
        verdict_text(&outcome.verdict),
        outcome.elapsed.as_secs_f64()
    );
    if !outcome.verdict.passed() {
        bail!("seed {seed} failed");
    }
    Ok(())
}

/// A failed scenario: the campaign's run, and what rerunning it showed.
struct Failure {
    first: Outcome,
    rerun: Rerun,
}

enum Rerun {
    /// Shrinking was off.
    NotTried,
    /// The whole scenario passed when run again: a race, reported unshrunk.
    Passed,
    /// The smallest failing version found: the steps left out, and its run.
    Shrunk {
        without: BTreeSet<usize>,
        outcome: Outcome,
    },
}

impl Failure {
    fn seed(&self) -> u64 {
        self.first.seed
    }

    /// The steps a replay leaves out.
    fn without(&self) -> BTreeSet<usize> {
        match &self.rerun {
            Rerun::Shrunk { without, .. } => without.clone(),
            Rerun::NotTried | Rerun::Passed => BTreeSet::new(),
        }
    }
}

pub struct Summary {
    records: Vec<Record>,
    failures: Vec<Failure>,
}

/// Runs the scenarios of `seeds` on `workers` workers, shrinking each failure with at most
/// `shrink` reruns; prints a line per scenario as it ends if `progress`, and appends its
/// record to `ledger`, if any.
pub async fn campaign(
    binary: &Path,
    seeds: Vec<u64>,
    workers: usize,
    shrink: usize,
    progress: bool,
    ledger: Option<&Ledger>,
) -> Summary {
    let started = Instant::now();
    let part = Part::now(workers.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let seeds_shared = Arc::new(seeds.clone());
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Outcome, Option<Rerun>)>();
    let workers = workers.max(1);
    // Workers are futures of this one task, not spawned tasks: a world's start holds a YAML
    // parser across an await, so it is not Send.
    let working = futures::future::join_all((0..workers).map(|_| {
        let next = next.clone();
        let seeds = seeds_shared.clone();
        let sender = sender.clone();
        async move {
            let mut runner = Runner::new(binary);
            while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                let plan = draw::draw(seed);
                let outcome = runner.run(&plan).await;
                let rerun = if outcome.verdict.passed() {
                    None
                } else {
                    Some(shrink_failure(&mut runner, &plan, shrink).await)
                };
                if sender.send((outcome, rerun)).is_err() {
                    return;
                }
            }
        }
    }));
    drop(sender);
    let collecting = async {
        let mut records = Vec::new();
        let mut failures = Vec::new();
        while let Some((outcome, rerun)) = receiver.recv().await {
            if progress {
                let minutes = started.elapsed().as_secs_f64() / 60.0;
                eprintln!(
                    "[{:>4}/{}] seed {:<6} {:<52} {:>6.1}s  {:.2} scenarios/min  faults: {}",
                    records.len() + 1,
                    seeds.len(),
                    outcome.seed,
                    verdict_line(&outcome.verdict),
                    outcome.elapsed.as_secs_f64(),
                    (records.len() + 1) as f64 / minutes.max(1e-9),
                    fault_list(&outcome.faults)
                );
            }
            let failure = rerun.map(|rerun| Failure {
                first: outcome.clone(),
                rerun,
            });
            if let (true, Some(failure)) = (progress, &failure) {
                eprintln!("{}", failure_text(failure));
            }
            let record = Record::of(
                &outcome,
                &part,
                started.elapsed().as_secs_f64(),
                failure.as_ref().map(|failure| {
                    format!(
                        "{}; replay: {}",
                        verdict_text(&failure.first.verdict),
                        replay_command(failure)
                    )
                }),
            );
            if let Some(Err(error)) = ledger.map(|ledger| ledger.append(&record)) {
                eprintln!("{error:#}");
            }
            records.push(record);
            failures.extend(failure);
        }
        (records, failures)
    };
    let (_, (records, failures)) = futures::future::join(working, collecting).await;
    Summary { records, failures }
}

/// Runs the failed scenario again, then leaves steps out one at a time, from the last,
/// keeping each omission after which it still fails; at most `tries` reruns in all.
async fn shrink_failure(runner: &mut Runner, plan: &Plan, tries: usize) -> Rerun {
    if tries == 0 {
        return Rerun::NotTried;
    }
    let mut failing = runner.run(plan).await;
    if failing.verdict.passed() {
        return Rerun::Passed;
    }
    let mut without = BTreeSet::new();
    let mut left = tries - 1;
    for index in (0..plan.steps.len()).rev() {
        if left == 0 {
            break;
        }
        // Leaving the dry run would leave gleaner in it, which changes who reclaims.
        if plan.steps[index] == Step::DryRunOff {
            continue;
        }
        left -= 1;
        let mut candidate = without.clone();
        candidate.insert(index);
        let outcome = runner.run(&plan.without(&candidate)).await;
        if !outcome.verdict.passed() {
            without = candidate;
            failing = outcome;
        }
    }
    Rerun::Shrunk {
        without,
        outcome: failing,
    }
}

fn verdict_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Passed {
            reclaimed,
            kept,
            kept_blind,
        } => format!("passed: {reclaimed} reclaimed, {kept} kept, {kept_blind} kept blind"),
        Verdict::WronglyDeleted(objects) => format!("WRONGLY DELETED {}", objects.len()),
        Verdict::Leaked(objects) => format!("LEAKED {}", objects.len()),
        Verdict::Broken(_) => "BROKEN".to_owned(),
    }
}

fn fault_list(faults: &BTreeSet<FaultKind>) -> String {
    if faults.is_empty() {
        return "none".to_owned();
    }
    faults
        .iter()
        .map(|fault| fault.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(plan: &Plan) -> String {
    let mut text = format!(
        "seed {}: CAPI {:?}, driver {:?}, handler {}, CSI label {}, LB controller {}, {} lookalikes, {} replicas{}\n",
        plan.seed,
        plan.capi,
        plan.driver,
        plan.cleanup_handler,
        plan.csi_cluster_label,
        plan.load_balancer_controller,
        plan.lookalikes,
        plan.replicas,
        if plan.dry_run { ", dry run first" } else { "" }
    );
    for (index, cluster) in plan.clusters.iter().enumerate() {
        text.push_str(&format!("  cluster {index}: {cluster:?}\n"));
    }
    for (index, step) in plan.steps.iter().enumerate() {
        text.push_str(&format!("  step {index}: {step:?}\n"));
    }
    text
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::WronglyDeleted(objects) => format!("wrongly deleted {}", objects.join(", ")),
        Verdict::Leaked(objects) => format!("leaked {}", objects.join(", ")),
        Verdict::Broken(error) => format!("broken: {error}"),
        Verdict::Passed { .. } => verdict_line(verdict),
    }
}

fn story_text(outcome: &Outcome) -> String {
    outcome
        .story
        .iter()
        .map(|line| format!("    {line}\n"))
        .collect()
}

fn failure_text(failure: &Failure) -> String {
    let first = &failure.first;
    let mut text = format!(
        "seed {} FAILED: {}\n{}{}",
        first.seed,
        verdict_text(&first.verdict),
        describe(&draw::draw(first.seed)),
        story_text(first)
    );
    match &failure.rerun {
        Rerun::NotTried => {}
        Rerun::Passed => text.push_str("  it passed when run again: a race, not shrunk\n"),
        Rerun::Shrunk { without, outcome } => {
            text.push_str(&format!(
                "  shrunk (steps {without:?} left out): {}\n{}",
                verdict_text(&outcome.verdict),
                story_text(outcome)
            ));
        }
    }
    text.push_str(&format!("  replay: {}\n", replay_command(failure)));
    text
}

fn replay_command(failure: &Failure) -> String {
    let mut command = format!("cargo xtask campaign --replay {}", failure.seed());
    let without = failure.without();
    if !without.is_empty() {
        let steps: Vec<String> = without.iter().map(usize::to_string).collect();
        command.push_str(&format!(" --without {}", steps.join(",")));
    }
    command
}

impl Summary {
    pub fn failed(&self) -> usize {
        self.records
            .iter()
            .filter(|record| !record.passed())
            .count()
    }

    /// The table of this run, then each failure with its story and replay.
    pub fn table(&self) -> String {
        let mut text = ledger::table(&self.records);
        for failure in &self.failures {
            text.push_str(&failure_text(failure));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_pinned_seeds_cover_every_fault_both_capi_versions_and_every_topology() {
        let plans: Vec<Plan> = PINNED.iter().map(|seed| draw::draw(*seed)).collect();
        let faults: BTreeSet<FaultKind> = plans.iter().flat_map(Plan::faults).collect();
        assert_eq!(faults, FaultKind::ALL.into_iter().collect());
        let capis: BTreeSet<String> = plans.iter().map(|p| format!("{:?}", p.capi)).collect();
        assert_eq!(capis.len(), 2);
        assert!(plans.iter().any(Plan::uses_second_harvester));
        assert!(plans.iter().any(|plan| {
            plan.clusters
                .iter()
                .any(|c| c.installation == draw::Installation::Second)
        }));
        assert!(plans.iter().any(|plan| plan.replicas > 1));
        assert!(plans.iter().any(|plan| plan.dry_run));
    }

    #[test]
    fn a_shrunk_failure_replays_from_its_seed_without_its_steps() {
        let outcome = Outcome {
            seed: 42,
            faults: BTreeSet::new(),
            elapsed: Duration::ZERO,
            verdict: Verdict::Leaked(vec!["PersistentVolumeClaim vms/pvc-1".into()]),
            story: Vec::new(),
        };
        let failure = Failure {
            first: outcome.clone(),
            rerun: Rerun::Shrunk {
                without: BTreeSet::from([3, 1]),
                outcome,
            },
        };
        assert_eq!(
            replay_command(&failure),
            "cargo xtask campaign --replay 42 --without 1,3"
        );
        assert!(failure_text(&failure).contains("leaked PersistentVolumeClaim vms/pvc-1"));
    }

    /// The pinned seeds in the real world under the gleaner `cargo test` built: none may fail.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_pinned_seeds_pass() {
        let summary = campaign(
            &crate::demo::tests::built_gleaner(),
            PINNED.to_vec(),
            2,
            0,
            true,
            None,
        )
        .await;
        assert_eq!(summary.failed(), 0, "{}", summary.table());
        assert_eq!(summary.records.len(), PINNED.len());
    }
}
