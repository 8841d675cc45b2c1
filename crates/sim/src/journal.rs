use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

/// What the simulators did, in the order they did it, so tests can assert on ordering ("the
/// intent was on the VM before its HarvesterMachine was deleted") instead of on timing.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    entries: Arc<Mutex<Vec<Entry>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: Instant,
    /// The simulated actor, e.g. `remove-job`, `harvester-vm-controller`.
    pub actor: &'static str,
    /// What happened, e.g. `deleted VM ns/name`.
    pub what: String,
}

impl Journal {
    pub fn record(&self, actor: &'static str, what: impl Into<String>) {
        let what = what.into();
        tracing::debug!(actor, %what, "simulator");
        self.lock().push(Entry {
            at: Instant::now(),
            actor,
            what,
        });
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// The position of the first entry by `actor` whose text contains `needle`.
    pub fn position(&self, actor: &str, needle: &str) -> Option<usize> {
        self.lock()
            .iter()
            .position(|entry| entry.actor == actor && entry.what.contains(needle))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_order_and_can_be_found() {
        let journal = Journal::default();
        journal.record("a", "first thing");
        journal.record("b", "second thing");
        assert_eq!(journal.position("b", "second"), Some(1));
        assert_eq!(journal.position("a", "second"), None);
        assert_eq!(journal.entries().len(), 2);
    }
}
