//! The campaign's ledger: a JSON line per scenario as it ends, so a campaign longer than one
//! sitting runs in parts (`--ledger FILE` skips the seeds that file already holds for the
//! same source) and is reported whole (`--report FILE`). Each record names the source it
//! tested, so parts run on different code are never added up as one campaign unnoticed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::draw::FaultKind;
use super::run::{Outcome, Verdict};

/// How a scenario ended, as the ledger keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Passed,
    WronglyDeleted,
    Leaked,
    Broken,
}

/// One `cargo xtask campaign` run: the records it wrote share it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// When it started (RFC 3339), which tells parts apart.
    pub started: String,
    /// What was tested: see [`source`].
    pub source: String,
    pub commit: String,
    pub workers: usize,
}

impl Part {
    pub fn now(workers: usize) -> Self {
        Self {
            started: jiff::Timestamp::now().to_string(),
            source: source(),
            commit: git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            workers,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seed: u64,
    pub ending: Ending,
    /// In a passed scenario: objects reclaimed, kept because they must survive, and kept
    /// because gleaner never could see them.
    pub reclaimed: usize,
    pub kept: usize,
    pub kept_blind: usize,
    pub faults: BTreeSet<FaultKind>,
    pub seconds: f64,
    pub part: Part,
    /// How long its part had run when it ended: a part lasts as long as its last record says.
    pub part_seconds: f64,
    /// A failure's verdict and replay command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl Record {
    pub fn of(outcome: &Outcome, part: &Part, part_seconds: f64, failure: Option<String>) -> Self {
        let (ending, reclaimed, kept, kept_blind) = match &outcome.verdict {
            Verdict::Passed {
                reclaimed,
                kept,
                kept_blind,
            } => (Ending::Passed, *reclaimed, *kept, *kept_blind),
            Verdict::WronglyDeleted(_) => (Ending::WronglyDeleted, 0, 0, 0),
            Verdict::Leaked(_) => (Ending::Leaked, 0, 0, 0),
            Verdict::Broken(_) => (Ending::Broken, 0, 0, 0),
        };
        Self {
            seed: outcome.seed,
            ending,
            reclaimed,
            kept,
            kept_blind,
            faults: outcome.faults.clone(),
            seconds: outcome.elapsed.as_secs_f64(),
            part: part.clone(),
            part_seconds,
            failure,
        }
    }

    pub fn passed(&self) -> bool {
        self.ending == Ending::Passed
    }
}

/// What was tested: the git trees of `crates/` (gleaner, the simulators, the world) and
/// `xtask/` (the campaign) and the `Cargo.lock` blob at HEAD, hashed into one name, marked
/// `-dirty` when the work tree changes any of them. The ledger itself lives elsewhere, so
/// committing it keeps the name.
pub fn source() -> String {
    let parts: Option<Vec<String>> = ["HEAD:crates", "HEAD:xtask", "HEAD:Cargo.lock"]
        .iter()
        .map(|object| git(&["rev-parse", object]))
        .collect();
    let Some(parts) = parts else {
        return "unknown".to_owned();
    };
    let Some(name) = git_hash(&parts.join("\n")) else {
        return "unknown".to_owned();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "crates",
        "xtask",
        "Cargo.lock",
    ])
    .is_none_or(|changes| !changes.is_empty());
    let short = &name[..name.len().min(12)];
    if dirty {
        format!("{short}-dirty")
    } else {
        short.to_owned()
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(crate::workspace_root())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// git's own hash of a text, so the source's name needs no hashing crate.
fn git_hash(text: &str) -> Option<String> {
    use std::process::Stdio;
    let mut child = Command::new("git")
        .args(["hash-object", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A ledger file, appended a line at a time so a run cut short keeps what it finished.
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    pub fn read(&self) -> Result<Vec<Record>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", self.path.display(), index + 1))
            })
            .collect()
    }

    pub fn append(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record).context("cannot write a record")?;
        line.push('\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

/// The seeds the records hold for `source`: a part run on the same source skips them.
pub fn seeds_done(records: &[Record], source: &str) -> BTreeSet<u64> {
    records
        .iter()
        .filter(|record| record.part.source == source)
        .map(|record| record.seed)
        .collect()
}

/// Seeds as ranges: `1000..=1179, 1181`.
fn seed_ranges(seeds: &BTreeSet<u64>) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seed in seeds {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == seed => *last = seed,
            _ => ranges.push((seed, seed)),
        }
    }
    ranges
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}..={last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table of a campaign, whole: scenarios, seeds, sources and parts, how they ended,
/// objects, and results by fault kind.
pub fn table(records: &[Record]) -> String {
    let seeds: BTreeSet<u64> = records.iter().map(|record| record.seed).collect();
    let mut parts: BTreeMap<&str, (&Part, f64)> = BTreeMap::new();
    for record in records {
        let entry = parts
            .entry(record.part.started.as_str())
            .or_insert((&record.part, 0.0));
        entry.1 = entry.1.max(record.part_seconds);
    }
    let minutes = parts.values().map(|(_, seconds)| seconds).sum::<f64>() / 60.0;
    let mut sources: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for record in records {
        *sources
            .entry((record.part.source.as_str(), record.part.commit.as_str()))
            .or_default() += 1;
    }
    let workers: BTreeSet<usize> = parts.values().map(|(part, _)| part.workers).collect();
    let mut text = format!(
        "{} scenarios (seeds {}), {} part(s) on {} worker(s), {:.1} min, {:.2} scenarios/min\n",
        records.len(),
        seed_ranges(&seeds),
        parts.len(),
        workers
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        minutes,
        records.len() as f64 / minutes.max(1e-9)
    );
    for ((source, commit), count) in &sources {
        text.push_str(&format!(
            "source {source} (commit {commit}): {count} scenarios\n"
        ));
    }
    let count = |ending: Ending| {
        records
            .iter()
            .filter(|record| record.ending == ending)
            .count()
    };
    text.push_str(&format!(
        "passed {}, wrongly deleted {}, leaked {}, broken {}\n",
        count(Ending::Passed),
        count(Ending::WronglyDeleted),
        count(Ending::Leaked),
        count(Ending::Broken),
    ));
    let sum = |pick: fn(&Record) -> usize| records.iter().map(pick).sum::<usize>();
    text.push_str(&format!(
        "objects in passed scenarios: {} reclaimed, {} kept (must survive), {} kept blind\n",
        sum(|record| record.reclaimed),
        sum(|record| record.kept),
        sum(|record| record.kept_blind),
    ));
    text.push_str(&format!(
        "{:<22} {:>9} {:>7} {:>7}\n",
        "fault", "scenarios", "passed", "failed"
    ));
    let mut by_fault: BTreeMap<Option<FaultKind>, (usize, usize)> = FaultKind::ALL
        .into_iter()
        .map(Some)
        .chain([None])
        .map(|kind| (kind, (0, 0)))
        .collect();
    for record in records {
        let kinds: Vec<Option<FaultKind>> = if record.faults.is_empty() {
            vec![None]
        } else {
            record.faults.iter().copied().map(Some).collect()
        };
        for kind in kinds {
            let counts = by_fault.entry(kind).or_default();
            if record.passed() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    for (kind, (passed, failed)) in by_fault {
        let name = kind.map_or("no fault", FaultKind::as_str);
        text.push_str(&format!(
            "{name:<22} {:>9} {passed:>7} {failed:>7}\n",
            passed + failed
        ));
    }
    for record in records {
        if let Some(failure) = &record.failure {
            text.push_str(&format!("seed {}: {failure}\n", record.seed));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64, ending: Ending, started: &str, part_seconds: f64) -> Record {
        Record {
            seed,
            ending,
            reclaimed: if ending == Ending::Passed { 3 } else { 0 },
            kept: if ending == Ending::Passed { 2 } else { 0 },
            kept_blind: 0,
            faults: BTreeSet::from([FaultKind::GleanerKilled]),
            seconds: 40.0,
            part: Part {
                started: started.to_owned(),
                source: "abc".to_owned(),
                commit: "def".to_owned(),
                workers: 2,
            },
            part_seconds,
            failure: (ending != Ending::Passed).then(|| "leaked x; replay: ...".to_owned()),
        }
    }

    #[test]
    fn a_ledger_written_in_parts_reads_back_whole_and_tells_its_seeds_per_source() {
        let dir = std::env::temp_dir().join(format!("gleaner-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = Ledger::new(&dir.join("ledger.jsonl"));
        assert!(ledger.read().unwrap().is_empty());
        let written = [
            record(7, Ending::Passed, "a", 60.0),
            record(8, Ending::Leaked, "a", 120.0),
            record(9, Ending::Passed, "b", 30.0),
        ];
        for record in &written {
            ledger.append(record).unwrap();
        }
        let read = ledger.read().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read, written);
        assert_eq!(seeds_done(&read, "abc"), BTreeSet::from([7, 8, 9]));
        assert!(seeds_done(&read, "other").is_empty());
    }

    #[test]
    fn the_table_adds_parts_up_and_counts_every_ending_by_fault() {
        let records = [
            record(1, Ending::Passed, "a", 60.0),
            record(2, Ending::Passed, "a", 120.0),
            record(3, Ending::Leaked, "b", 60.0),
            record(5, Ending::Passed, "b", 30.0),
        ];
        let table = table(&records);
        assert!(
            table.starts_with("4 scenarios (seeds 1..=3, 5), 2 part(s) on 2 worker(s), 3.0 min"),
            "{table}"
        );
        assert!(table.contains("passed 3, wrongly deleted 0, leaked 1, broken 0"));
        assert!(table.contains("9 reclaimed, 6 kept"));
        assert!(table.contains(&format!(
            "{:<22} {:>9} {:>7} {:>7}",
            "gleaner killed", 4, 3, 1
        )));
        assert!(table.contains("seed 3: leaked x"));
    }
}
