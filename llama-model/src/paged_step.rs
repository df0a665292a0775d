//! The step bookkeeping that the CPU [`crate::cpu::MultiState`] and the CUDA
//! `GpuMultiState` share: the KV pool's block tables, the parts of the open (or last ended)
//! step, which layers ran in it, and the order rules (add/remove/truncate only between steps,
//! every layer once per step in order, logits only after the step ended). Each state keeps only
//! its memory (host or device) beside it.

use crate::paged::{KvError, KvPool, KvSeq, PartRows, StepPart};

/// Where a multi-sequence state stands between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No step open (and no rows kept).
    Idle,
    /// Between opening and ending a step.
    Open,
    /// Ended: the rows of the last step are kept for the logits.
    Ended,
}

/// Pool, step parts, layers done and phase of one multi-sequence state.
#[derive(Debug, Clone)]
pub(crate) struct StepBook {
    pool: KvPool,
    rows: Vec<PartRows>,
    done: Vec<bool>,
    phase: Phase,
}

fn bad(msg: impl Into<String>) -> KvError {
    KvError::BadStep(msg.into())
}

impl StepBook {
    /// Bookkeeping over `pool` for a model of `n_layers`.
    pub(crate) fn new(pool: KvPool, n_layers: usize) -> Self {
        StepBook {
            pool,
            rows: Vec::new(),
            done: vec![false; n_layers],
            phase: Phase::Idle,
        }
    }

    /// The pool's bookkeeping (lengths, blocks, tables).
    pub(crate) fn pool(&self) -> &KvPool {
        &self.pool
    }

    /// The pool, to grow or trim it (between steps only: the pool refuses during a step).
    pub(crate) fn pool_mut(&mut self) -> &mut KvPool {
        &mut self.pool
    }

    /// Parts of the open (or last ended) step.
    pub(crate) fn rows(&self) -> &[PartRows] {
        &self.rows
    }

    /// Rows of the open (or last ended) step.
    pub(crate) fn n_rows(&self) -> usize {
        self.rows.iter().map(|r| r.n).sum()
    }

    /// Fails when a step is open (`what` may only run between steps).
    pub(crate) fn not_open(&self, what: &str) -> Result<(), KvError> {
        if self.phase == Phase::Open {
            return Err(bad(format!(
                "{what} while a step is open: end or cancel it first"
            )));
        }
        Ok(())
    }

    /// A new empty sequence (between steps only).
    pub(crate) fn add_seq(&mut self) -> Result<KvSeq, KvError> {
        self.not_open("add_seq")?;
        self.pool.add_seq()
    }

    /// Removes a sequence and frees its blocks (unknown: no-op); cancels an open step first.
    pub(crate) fn remove_seq(&mut self, s: KvSeq) {
        self.cancel();
        self.pool.remove_seq(s);
        self.rows.retain(|r| r.seq != s);
    }

    /// Keeps the first `n` positions of `s`; cancels an open step first and forgets the last
    /// step's rows.
    pub(crate) fn truncate(&mut self, s: KvSeq, n: usize) {
        self.cancel();
        self.pool.truncate(s, n);
        self.rows.clear();
        self.phase = Phase::Idle;
    }

    /// Positions committed to `s` (None: unknown).
    pub(crate) fn seq_len(&self, s: KvSeq) -> Option<usize> {
        self.pool.len(s)
    }

    /// Opens a step of `parts`: reserves their blocks (all or nothing) and their rows.
    pub(crate) fn open(&mut self, parts: &[StepPart]) -> Result<(), KvError> {
        self.not_open("begin_step")?;
        self.rows = self.pool.reserve_step(parts)?.to_vec();
        self.done.iter_mut().for_each(|d| *d = false);
        self.phase = Phase::Open;
        Ok(())
    }

    /// Checks that `layer` may run now: a step is open, the layer exists and every layer before
    /// it (and not it) ran in this step.
    pub(crate) fn enter_layer(&self, layer: usize) -> Result<(), KvError> {
        if self.phase != Phase::Open {
            return Err(bad(
                "forward_layer_multi without an open step (call begin_step)",
            ));
        }
        if layer >= self.done.len() {
            return Err(bad(format!(
                "layer {layer} does not exist (the model has {})",
                self.done.len()
            )));
        }
        if self.done[layer] || self.done[..layer].iter().any(|d| !d) {
            return Err(bad(format!(
                "layer {layer} out of order: run each layer once per step, in order"
            )));
        }
        Ok(())
    }

    /// Marks `layer` as run in the open step.
    pub(crate) fn layer_done(&mut self, layer: usize) {
        if let Some(d) = self.done.get_mut(layer) {
            *d = true;
        }
    }

    /// Commits the open step's positions (every layer must have run).
    pub(crate) fn end(&mut self) -> Result<(), KvError> {
        if self.phase != Phase::Open {
            return Err(bad("end_step without an open step"));
        }
        if let Some(i) = self.done.iter().position(|d| !d) {
            return Err(bad(format!("layer {i} did not run in this step")));
        }
        self.pool.commit_step();
        self.phase = Phase::Ended;
        Ok(())
    }

    /// Abandons an open step: every sequence keeps its length from before it (no-op when no
    /// step is open).
    pub(crate) fn cancel(&mut self) {
        if self.phase == Phase::Open {
            self.pool.cancel_step();
            self.rows.clear();
            self.phase = Phase::Idle;
        }
    }

    /// Fails unless a step ended and was not undone since (what the logits need).
    pub(crate) fn require_ended(&self) -> Result<(), KvError> {
        if self.phase != Phase::Ended {
            return Err(bad(
                "logits before end_step (or after a cancel, truncate or remove)",
            ));
        }
        Ok(())
    }
}
