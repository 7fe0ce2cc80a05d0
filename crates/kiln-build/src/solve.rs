//! The solver: runs every stage whose dependencies are built, concurrently, and bounds the
//! work with job slots.
//!
//! Stages run on threads of their own; a stage's steps run in order, since each builds on the
//! one before. A thread costs little while it waits, so the bound is on work, not on threads: a
//! step takes a [`Slots`] slot only for what loads the machine (a `RUN`, a copy, a pull), and a
//! cache hit or a config-only step takes none.
//!
//! When a stage fails, the solver starts nothing more and asks the executor to cancel the rest
//! ([`StageRunner::cancel`]: the build's interrupt handle, which kills every running sandbox).
//! It waits for every running stage to return, so that nothing is left mounted or half-written
//! when it reports the first error.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use kiln_image::Digest;

use crate::Error;

/// What the solver runs.
pub trait StageRunner: Sync {
    /// Builds one stage; its dependencies are built.
    fn run_stage(&self, stage: usize, slots: &Slots) -> Result<(), Error>;
    /// Asks running stages to stop soon (a stage then returns any error; the solver reports
    /// the first failure, not the cancellations it caused).
    fn cancel(&self);
}

/// A stage to schedule: its id and the ids it waits for.
#[derive(Debug, Clone)]
pub struct Node {
    /// The stage.
    pub stage: usize,
    /// Stages that must finish first.
    pub deps: Vec<usize>,
}

#[derive(Default)]
struct Progress {
    started: BTreeSet<usize>,
    done: BTreeSet<usize>,
    running: usize,
    failure: Option<Error>,
}

/// Runs `nodes` with `runner`; `slots` bound the work at once (several solves, one per
/// platform, may share them).
pub fn solve(nodes: &[Node], slots: &Slots, runner: &dyn StageRunner) -> Result<(), Error> {
    let progress = Mutex::new(Progress::default());
    let changed = Condvar::new();
    std::thread::scope(|scope| {
        let mut state = lock(&progress);
        loop {
            if state.failure.is_none() {
                for node in nodes {
                    let ready = !state.started.contains(&node.stage)
                        && node.deps.iter().all(|d| state.done.contains(d));
                    if !ready {
                        continue;
                    }
                    state.started.insert(node.stage);
                    state.running += 1;
                    let (progress, changed) = (&progress, &changed);
                    let stage = node.stage;
                    scope.spawn(move || {
                        let result = runner.run_stage(stage, slots);
                        let mut state = lock(progress);
                        state.running -= 1;
                        match result {
                            Ok(()) => {
                                state.done.insert(stage);
                            }
                            Err(e) => {
                                let first_real =
                                    matches!(state.failure, None | Some(Error::Interrupted))
                                        && !matches!(e, Error::Interrupted);
                                if state.failure.is_none() || first_real {
                                    state.failure = Some(e);
                                }
                                runner.cancel();
                            }
                        }
                        changed.notify_all();
                    });
                }
            }
            let finished = state.done.len() == nodes.len();
            if state.running == 0 && (finished || state.failure.is_some()) {
                break;
            }
            if state.running == 0 {
                // Nothing runs and nothing can start: a dependency outside the plan.
                state.failure = Some(Error::BadInput(
                    "the build plan has a stage whose dependencies cannot be built".into(),
                ));
                break;
            }
            state = changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        match state.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Job slots: `--jobs N` units of work at once.
pub struct Slots {
    free: Mutex<usize>,
    released: Condvar,
    key_locks: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    built: Mutex<BTreeSet<Digest>>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot<'s>(&'s Slots);

impl Slots {
    /// `jobs` slots (at least one).
    pub fn new(jobs: usize) -> Slots {
        Slots {
            free: Mutex::new(jobs.max(1)),
            released: Condvar::new(),
            key_locks: Mutex::new(HashMap::new()),
            built: Mutex::new(BTreeSet::new()),
        }
    }

    /// Waits for a free slot.
    pub fn acquire(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self
                .released
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }

    /// The lock of one cache key: two stages that reach the same step at once run it once;
    /// the second waits, then finds it in the cache.
    pub fn key_lock(&self, key: &Digest) -> Arc<Mutex<()>> {
        lock(&self.key_locks)
            .entry(key.clone())
            .or_default()
            .clone()
    }
}

impl Slots {
    /// Records that this build ran the step of `key` (so that `--no-cache` runs it once).
    pub fn mark_built(&self, key: &Digest) {
        lock(&self.built).insert(key.clone());
    }

    /// Whether this build ran the step of `key` already.
    pub fn was_built(&self, key: &Digest) -> bool {
        lock(&self.built).contains(key)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.released.notify_one();
    }
}

/// Holds a key lock for the life of a step's work.
pub fn hold(lock_of_key: &Mutex<()>) -> MutexGuard<'_, ()> {
    lock(lock_of_key)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A fake executor: each stage takes a slot, records its start and end, and may fail or
    /// wait for a gate that another stage opens (no sleeps: the order is forced by the gates).
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        fail: Option<usize>,
        /// Stages that block until cancelled.
        block_until_cancelled: Vec<usize>,
        cancelled: Mutex<bool>,
        cancel_signal: Condvar,
        cancel_calls: AtomicUsize,
        /// Stages that wait until `gate_count` stages are inside their slot at once.
        gate: Option<(Vec<usize>, usize)>,
        inside: Mutex<usize>,
        inside_changed: Condvar,
        saw_concurrency: AtomicBool,
    }

    impl StageRunner for Fake {
        fn run_stage(&self, stage: usize, slots: &Slots) -> Result<(), Error> {
            let _slot = slots.acquire();
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            self.log.lock().unwrap().push(format!("start {stage}"));
            if let Some((stages, count)) = &self.gate
                && stages.contains(&stage)
            {
                let mut inside = self.inside.lock().unwrap();
                *inside += 1;
                self.inside_changed.notify_all();
                while *inside < *count {
                    inside = self.inside_changed.wait(inside).unwrap();
                }
                self.saw_concurrency.store(true, Ordering::SeqCst);
            }
            let result = if self.fail == Some(stage) {
                Err(Error::BadInput(format!("stage {stage} failed")))
            } else if self.block_until_cancelled.contains(&stage) {
                let mut cancelled = self.cancelled.lock().unwrap();
                while !*cancelled {
                    cancelled = self.cancel_signal.wait(cancelled).unwrap();
                }
                Err(Error::Interrupted)
            } else {
                Ok(())
            };
            self.log.lock().unwrap().push(format!("end {stage}"));
            self.running.fetch_sub(1, Ordering::SeqCst);
            result
        }

        fn cancel(&self) {
            self.cancel_calls.fetch_add(1, Ordering::SeqCst);
            *self.cancelled.lock().unwrap() = true;
            self.cancel_signal.notify_all();
        }
    }

    fn position(log: &[String], entry: &str) -> usize {
        log.iter()
            .position(|l| l == entry)
            .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
    }

    fn diamond() -> Vec<Node> {
        vec![
            Node {
                stage: 0,
                deps: vec![],
            },
            Node {
                stage: 1,
                deps: vec![0],
            },
            Node {
                stage: 2,
                deps: vec![0],
            },
            Node {
                stage: 3,
                deps: vec![1, 2],
            },
        ]
    }

    #[test]
    fn a_stage_starts_only_after_its_dependencies_end() {
        let fake = Fake::default();
        solve(&diamond(), &Slots::new(4), &fake).unwrap();
        let log = fake.log.lock().unwrap();
        assert_eq!(log.len(), 8);
        assert!(position(&log, "end 0") < position(&log, "start 1"));
        assert!(position(&log, "end 0") < position(&log, "start 2"));
        assert!(position(&log, "end 1") < position(&log, "start 3"));
        assert!(position(&log, "end 2") < position(&log, "start 3"));
    }

    #[test]
    fn independent_stages_run_at_once() {
        // Stages 1 and 2 each wait until both are inside a slot: this only ends if the solver
        // runs them concurrently.
        let fake = Fake {
            gate: Some((vec![1, 2], 2)),
            ..Fake::default()
        };
        solve(&diamond(), &Slots::new(2), &fake).unwrap();
        assert!(fake.saw_concurrency.load(Ordering::SeqCst));
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn jobs_bound_the_work_at_once() {
        let nodes: Vec<Node> = (0..8)
            .map(|stage| Node {
                stage,
                deps: vec![],
            })
            .collect();
        let fake = Fake::default();
        solve(&nodes, &Slots::new(3), &fake).unwrap();
        assert_eq!(fake.log.lock().unwrap().len(), 16);
        assert!(fake.most_at_once.load(Ordering::SeqCst) <= 3);
        let fake = Fake::default();
        solve(&nodes, &Slots::new(1), &fake).unwrap();
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failure_cancels_the_others_and_is_the_error_reported() {
        // Stage 1 blocks until cancelled; stage 2 fails once both run; stage 3 never starts.
        let fake = Fake {
            fail: Some(2),
            block_until_cancelled: vec![1],
            gate: Some((vec![1, 2], 2)),
            ..Fake::default()
        };
        let err = solve(&diamond(), &Slots::new(2), &fake).unwrap_err();
        assert_eq!(err.to_string(), "stage 2 failed");
        assert!(fake.cancel_calls.load(Ordering::SeqCst) >= 1);
        let log = fake.log.lock().unwrap();
        assert!(log.contains(&"end 1".to_owned()), "{log:?}");
        assert!(!log.contains(&"start 3".to_owned()), "{log:?}");
    }

    #[test]
    fn one_lock_per_cache_key() {
        let slots = Slots::new(1);
        let a = slots.key_lock(&Digest::of(b"a"));
        let again = slots.key_lock(&Digest::of(b"a"));
        let b = slots.key_lock(&Digest::of(b"b"));
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        let _held = hold(&a);
        assert!(b.try_lock().is_ok());
        assert!(again.try_lock().is_err());
    }
}
