//! Discrete-event simulation of the pipeline's scheduling policy on a virtual clock.
//!
//! Same policy as [`crate::Pipeline`]: one reader (the source) reads items in schedule order into
//! `staging` buffers (a buffer is free again when the copy out of it completed); one copy engine
//! copies items in order into device slots, taking the least recently released free slot (a slot
//! is free when the consumer finished the item in it); one consumer computes items in order as soon
//! as they are copied. Resident items take a staging token but no slot and no copy time.
//!
//! The simulator tracks every slot's state (`Free -> Writing(i) -> Ready(i) -> InUse(i) -> Free`)
//! and reports any other transition as a [`SimViolation`], so tests can show that no slot is ever
//! overwritten before its consumer released it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::error::PipelineError;

/// Virtual stage times of one item, in arbitrary units (say nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimItem {
    /// Time the source takes to read the item into staging.
    pub read: u64,
    /// Time the copy engine takes to copy it into a slot.
    pub copy: u64,
    /// Time the consumer computes on it.
    pub compute: u64,
    /// Resident on the device: no slot, no copy.
    pub resident: bool,
}

impl SimItem {
    /// A streamed item with these stage times.
    pub fn new(read: u64, copy: u64, compute: u64) -> Self {
        Self {
            read,
            copy,
            compute,
            resident: false,
        }
    }
}

/// State of one device slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Holds nothing anyone needs.
    Free,
    /// Item `i` is being copied in.
    Writing(usize),
    /// Item `i` is in the slot, not yet picked up by the consumer.
    Ready(usize),
    /// The consumer is computing on item `i`.
    InUse(usize),
}

/// A broken invariant found by the simulator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulated pipeline invariant broken at t={time}: {what}")]
pub struct SimViolation {
    /// Virtual time.
    pub time: u64,
    /// What went wrong.
    pub what: String,
}

/// Virtual times of one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemTimes {
    /// Read start and end.
    pub read: (u64, u64),
    /// Copy start and end (equal for resident items).
    pub copy: (u64, u64),
    /// Compute start and end.
    pub compute: (u64, u64),
    /// Slot used (`None` for resident items).
    pub slot: Option<usize>,
}

/// Result of one simulated pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimTrace {
    /// Time the last compute ended (the pass started at 0).
    pub total: u64,
    /// Item indices in the order the consumer received them.
    pub consumed: Vec<usize>,
    /// Per-item stage times.
    pub items: Vec<ItemTimes>,
    /// Time the consumer waited for data after the first item.
    pub compute_stall: u64,
    /// Most slots holding items ahead of the one being computed (Writing or Ready), ever: at most
    /// N-1, or N while a resident item (which holds no slot) is computed.
    pub max_ahead: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    // Each names the stage that finished an item. Order within one instant is irrelevant: all
    // events of an instant are applied before any stage tries to start.
    Read(usize),
    Copy(usize),
    Compute(usize),
}

/// The simulator; its slots persist across passes like the real pipeline's.
#[derive(Debug, Clone)]
pub struct Simulator {
    slots: Vec<SlotState>,
    free: VecDeque<usize>,
    staging: usize,
}

fn violation(time: u64, what: String) -> SimViolation {
    SimViolation { time, what }
}

impl Simulator {
    /// `slots` device slots (at least 2) and `staging` staging buffers (at least 1).
    pub fn new(slots: usize, staging: usize) -> Result<Self, PipelineError> {
        if slots < 2 {
            return Err(PipelineError::TooFewSlots(slots));
        }
        Ok(Self {
            slots: vec![SlotState::Free; slots],
            free: (0..slots).collect(),
            staging: staging.max(1),
        })
    }

    /// Current state of every slot.
    pub fn slot_states(&self) -> &[SlotState] {
        &self.slots
    }

    fn set(
        &mut self,
        t: u64,
        slot: usize,
        from: SlotState,
        to: SlotState,
    ) -> Result<(), SimViolation> {
        let Some(s) = self.slots.get_mut(slot) else {
            return Err(violation(t, format!("slot {slot} does not exist")));
        };
        if *s != from {
            return Err(violation(
                t,
                format!("slot {slot} is {s:?}, expected {from:?} before moving to {to:?}"),
            ));
        }
        *s = to;
        Ok(())
    }

    /// Simulates one pass over `items` (in schedule order).
    pub fn run(&mut self, items: &[SimItem]) -> Result<SimTrace, SimViolation> {
        let n = items.len();
        let mut trace = SimTrace {
            items: vec![ItemTimes::default(); n],
            ..SimTrace::default()
        };
        let mut queue: BinaryHeap<Reverse<(u64, Ev)>> = BinaryHeap::new();
        let mut t = 0u64;
        let mut free_staging = self.staging;
        let (mut next_read, mut reading) = (0usize, false);
        let mut read_done: VecDeque<usize> = VecDeque::new();
        let mut copying = false;
        let mut ready: Vec<Option<Option<usize>>> = vec![None; n];
        let (mut next_compute, mut computing) = (0usize, false);
        let mut idle_since = 0u64;
        loop {
            // Start whatever can start at time t, until nothing changes.
            loop {
                let mut progressed = false;
                if !reading && next_read < n && free_staging > 0 {
                    free_staging -= 1;
                    reading = true;
                    let j = next_read;
                    next_read += 1;
                    let end = t.saturating_add(items[j].read);
                    trace.items[j].read = (t, end);
                    queue.push(Reverse((end, Ev::Read(j))));
                    progressed = true;
                }
                if !copying {
                    if let Some(&j) = read_done.front() {
                        if items[j].resident {
                            read_done.pop_front();
                            free_staging += 1;
                            trace.items[j].copy = (t, t);
                            ready[j] = Some(None);
                            progressed = true;
                        } else if let Some(k) = self.free.pop_front() {
                            read_done.pop_front();
                            self.set(t, k, SlotState::Free, SlotState::Writing(j))?;
                            copying = true;
                            let end = t.saturating_add(items[j].copy);
                            trace.items[j].copy = (t, end);
                            trace.items[j].slot = Some(k);
                            queue.push(Reverse((end, Ev::Copy(j))));
                            progressed = true;
                        }
                    }
                }
                if !computing && next_compute < n {
                    if let Some(slot) = ready[next_compute] {
                        let j = next_compute;
                        if let Some(k) = slot {
                            self.set(t, k, SlotState::Ready(j), SlotState::InUse(j))?;
                        }
                        if j > 0 {
                            trace.compute_stall += t - idle_since;
                        }
                        let ahead = self
                            .slots
                            .iter()
                            .filter(|s| matches!(s, SlotState::Writing(_) | SlotState::Ready(_)))
                            .count();
                        trace.max_ahead = trace.max_ahead.max(ahead);
                        // The item about to be computed holds a slot unless it is resident.
                        if ahead + usize::from(slot.is_some()) > self.slots.len() {
                            return Err(violation(t, format!("{ahead} slots ahead of compute")));
                        }
                        trace.consumed.push(j);
                        computing = true;
                        next_compute += 1;
                        let end = t.saturating_add(items[j].compute);
                        trace.items[j].compute = (t, end);
                        queue.push(Reverse((end, Ev::Compute(j))));
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
            // Advance the clock to the next instant and apply all its events.
            let Some(Reverse((when, _))) = queue.peek().copied() else {
                break;
            };
            t = when;
            while let Some(Reverse((when, ev))) = queue.peek().copied() {
                if when != t {
                    break;
                }
                queue.pop();
                match ev {
                    Ev::Read(j) => {
                        reading = false;
                        read_done.push_back(j);
                    }
                    Ev::Copy(j) => {
                        copying = false;
                        free_staging += 1;
                        let k = trace.items[j]
                            .slot
                            .ok_or_else(|| violation(t, format!("item {j} copied to no slot")))?;
                        self.set(t, k, SlotState::Writing(j), SlotState::Ready(j))?;
                        ready[j] = Some(Some(k));
                    }
                    Ev::Compute(j) => {
                        computing = false;
                        idle_since = t;
                        trace.total = t;
                        if let Some(k) = trace.items[j].slot {
                            self.set(t, k, SlotState::InUse(j), SlotState::Free)?;
                            self.free.push_back(k);
                        }
                    }
                }
            }
        }
        if trace.consumed.len() != n {
            return Err(violation(
                t,
                format!("only {} of {n} items were consumed", trace.consumed.len()),
            ));
        }
        Ok(trace)
    }
}
