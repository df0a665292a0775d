//! KV growth of the multi-sequence engine: sequences beyond the planned KV pool, paid for by
//! moving resident layers off the device while they run ([`super::EngineOptions::kv_growth`]).
//!
//! The rules:
//! - Each held sequence reserves the blocks of its whole run (prompt + `max_new_tokens`
//!   positions) when it is added, so a step never finds the pool exhausted. When the
//!   reservations exceed the pool, [`KvGrowth::reserve`] asks the [`KvRebalancer`] for the
//!   layer moves that make room for them on the device, applies them through the backend
//!   (a demoted layer streams from pinned RAM or storage from the next step on), and grows the
//!   pool by the room the moves freed (at least the reservations; new blocks are appended, so
//!   block ids in use stay valid). When even with no resident layer the KV does not fit, the
//!   rebalancer's typed error comes back and nothing changes.
//! - When sequences finish, [`KvGrowth::release`] shrinks the pool towards the larger of the
//!   planned pool and the remaining reservations, dropping free blocks at its tail only: a
//!   block in use at the tail keeps the pool (and the layers it displaced) where they are until
//!   its sequence ends. Then the rebalancer promotes layers into the room the pool gave back.
//! - The books are the rebalancer's; a layer the backend could not pin streams from storage
//!   instead, which takes less device and RAM than the books say (never more).
//! - Not counted: the logits rows of sequences beyond the planned `max_seqs` (one vocabulary
//!   row of f32 each, in the step's scratch) and the sequence slots (bookkeeping only).
//! - Backends: the CPU backend (its "device" is host memory under the budget: a demoted layer
//!   is re-routed through the pipeline, a promoted one is read in place again) and the CUDA
//!   backend (a demoted layer's device buffer is freed in stream order and the layer streams; a
//!   promoted one is uploaded again; the VRAM KV pool moves to a larger or smaller buffer one
//!   layer at a time). A backend that answers [`Backend::can_grow_kv`] false makes opening with
//!   KV growth a typed error.

use super::backend::Backend;
use super::error::Result;
use super::rebalance::{KvRebalancer, LayerMove};

/// Layer moves so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrowthStats {
    /// Layers moved off the device.
    pub demoted: usize,
    /// Layers moved back onto the device.
    pub promoted: usize,
    /// Times the pool grew.
    pub grown: usize,
    /// Times the pool shrank.
    pub trimmed: usize,
}

/// The KV pool's reservations and the rebalancer that keeps the layers beside it.
#[derive(Debug)]
pub struct KvGrowth {
    rebalancer: KvRebalancer,
    bytes_per_block: u64,
    block_positions: usize,
    planned_blocks: usize,
    reserved: usize,
    slots: usize,
    stats: GrowthStats,
}

impl KvGrowth {
    /// The growth books of `backend` (opened for the batch path): `None` when it cannot grow
    /// its pool (no streaming slots to demote layers into, or a backend without growth).
    pub fn new(backend: &dyn Backend) -> Result<Option<Self>> {
        if !backend.can_grow_kv() {
            return Ok(None);
        }
        let s = backend.setup();
        let u = backend.kv_usage();
        let layer_bytes: Vec<u64> = s.layout.layers.iter().map(|l| l.bytes).collect();
        let slot_total = s.plan.slot_bytes.saturating_mul(s.plan.slots as u64);
        let room = s
            .budgets
            .0
            .saturating_sub(s.device_fixed)
            .saturating_sub(slot_total);
        let bpb = u.bytes_per_block.max(1);
        let planned_kv = u.total as u64 * bpb;
        let rebalancer = KvRebalancer::new(
            &s.plan,
            &layer_bytes,
            room,
            planned_kv,
            s.budgets.1,
            s.bandwidth,
        )?;
        Ok(Some(Self {
            rebalancer,
            bytes_per_block: bpb,
            block_positions: u.block_positions.max(1),
            planned_blocks: u.total,
            reserved: 0,
            slots: s.max_seqs,
            stats: GrowthStats::default(),
        }))
    }

    /// Blocks a sequence of `positions` positions reserves.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_positions)
    }

    /// Blocks reserved by the held sequences.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Layer moves so far.
    pub fn stats(&self) -> GrowthStats {
        self.stats
    }

    /// Makes a sequence slot free for the `held + 1`-th sequence (slots are bookkeeping only).
    pub fn ensure_slot(&mut self, backend: &mut dyn Backend, held: usize) -> Result<()> {
        if held >= self.slots {
            let more = held + 1 - self.slots;
            backend.kv_grow(0, more)?;
            self.slots += more;
        }
        Ok(())
    }

    /// Reserves `blocks` more blocks, growing the pool (and demoting layers) when the
    /// reservations exceed it. On an error nothing changed.
    pub fn reserve(&mut self, backend: &mut dyn Backend, blocks: usize) -> Result<()> {
        let need = self.reserved + blocks;
        let total = backend.kv_usage().total;
        if need > total {
            self.grow(backend, total, need)?;
        }
        self.reserved = need;
        Ok(())
    }

    fn grow(&mut self, backend: &mut dyn Backend, total: usize, need: usize) -> Result<()> {
        let bpb = self.bytes_per_block;
        let before = self.rebalancer.kv();
        let moves = self.rebalancer.update(need as u64 * bpb)?;
        let undo = |me: &mut Self, backend: &mut dyn Backend| {
            if let Ok(back) = me.rebalancer.update(before) {
                // Promotions only re-route (in place on the device): they cannot fail.
                let _ = backend.move_layers(&back);
                me.count(&back);
            }
        };
        if let Err(e) = backend.move_layers(&moves) {
            undo(self, backend);
            return Err(e);
        }
        self.count(&moves);
        // Grow by all the room the moves freed, so the next sequences need no moves.
        let free = self
            .rebalancer
            .room()
            .saturating_sub(self.rebalancer.device_layer_bytes());
        let target = need.max(usize::try_from(free / bpb).unwrap_or(usize::MAX));
        if let Err(e) = backend.kv_grow(target - total, 0) {
            undo(self, backend);
            return Err(e);
        }
        self.stats.grown += 1;
        self.settle(backend, target);
        Ok(())
    }

    /// Gives back `blocks` reserved blocks (a sequence ended): trims the pool's free tail and
    /// promotes layers into the room it gave back.
    pub fn release(&mut self, backend: &mut dyn Backend, blocks: usize) {
        self.reserved = self.reserved.saturating_sub(blocks);
        let before = backend.kv_usage().total;
        let keep = self.planned_blocks.max(self.reserved);
        if before <= keep {
            return;
        }
        let now = backend.kv_trim(keep);
        if now < before {
            self.stats.trimmed += 1;
            self.settle(backend, now);
        }
    }

    /// Tells the rebalancer the pool holds `blocks` blocks and applies what it moves (room
    /// given back: promotions; the pool grown by exactly the freed room: none).
    fn settle(&mut self, backend: &mut dyn Backend, blocks: usize) {
        if let Ok(moves) = self.rebalancer.update(blocks as u64 * self.bytes_per_block) {
            // A move that fails leaves the layer on its old path; the books then count a
            // promotion that did not happen, which takes no room.
            if backend.move_layers(&moves).is_ok() {
                self.count(&moves);
            }
        }
    }

    fn count(&mut self, moves: &[LayerMove]) {
        use super::plan::Home;
        for m in moves {
            if m.from == Home::Device {
                self.stats.demoted += 1;
            }
            if m.to == Home::Device {
                self.stats.promoted += 1;
            }
        }
    }
}
