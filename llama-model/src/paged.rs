//! Paged KV bookkeeping shared by the CPU and CUDA multi-sequence steps.
//!
//! The KV memory of every layer is cut into blocks of [`KV_BLOCK`] positions. A [`KvPool`] owns
//! the free list and one block table per sequence: position `p` of a sequence lies in block
//! `table[p / KV_BLOCK]` at offset `p % KV_BLOCK`, in every layer. Sequences of any lengths
//! share the pool; a sequence holds whole blocks only for the positions it has (at most
//! `KV_BLOCK - 1` positions of slack each), and every block goes back to the free list when
//! its sequence is truncated below it or removed, so the pool never fragments. Free blocks are
//! handed out lowest id first, so the blocks in use gather at the front and a pool grown with
//! [`KvPool::grow`] can give its free tail back with [`KvPool::trim`].
//!
//! The pool holds no KV data: the CPU state ([`crate::cpu::MultiState`]) and the CUDA state
//! keep the f16 keys and values in storage laid out by block id, and ask the pool where a
//! position lives.
//!
//! A step is a list of [`StepPart`]s, one per sequence: its next tokens (one to decode, or a
//! chunk of a prompt) at positions `len .. len + n`. [`KvPool::reserve_step`] checks the whole
//! step and takes the blocks it needs (all or nothing); [`KvPool::commit_step`] makes the new
//! positions part of the sequences, [`KvPool::cancel_step`] gives the blocks back.

use crate::config::LlamaConfig;

/// Positions per KV block.
pub const KV_BLOCK: usize = 16;

/// Handle of one sequence in a [`KvPool`] (its slot; a slot is reused after
/// [`KvPool::remove_seq`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvSeq(pub u32);

impl std::fmt::Display for KvSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence {}", self.0)
    }
}

/// Sizes of a [`KvPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPoolOptions {
    /// Blocks in the pool (each [`KV_BLOCK`] positions of every layer).
    pub n_blocks: usize,
    /// Most sequences held at once.
    pub max_seqs: usize,
    /// Most positions one sequence may hold (0: the model's context length; capped at it).
    pub max_context: usize,
}

impl KvPoolOptions {
    /// A pool with room for `max_seqs` sequences of `max_context` positions each.
    pub fn for_sequences(max_seqs: usize, max_context: usize) -> KvPoolOptions {
        KvPoolOptions {
            n_blocks: max_seqs.saturating_mul(KvPool::blocks_for(max_context)),
            max_seqs,
            max_context,
        }
    }
}

/// What a pool refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The step needs more free blocks than the pool has.
    #[error(
        "KV pool exhausted: the step needs {needed} more blocks of {KV_BLOCK} positions, {free} of \
         {total} are free (finish or remove sequences, or make the pool larger)"
    )]
    Exhausted {
        /// Blocks the step needs.
        needed: usize,
        /// Blocks free.
        free: usize,
        /// Blocks in the pool.
        total: usize,
    },
    /// Every sequence slot is taken.
    #[error("the KV pool already holds its maximum of {max} sequences (remove one first)")]
    TooManySeqs {
        /// The limit.
        max: usize,
    },
    /// The handle names no sequence of this pool.
    #[error("{0} is not in the KV pool (removed, or from another pool)")]
    UnknownSeq(KvSeq),
    /// A sequence would grow past the per-sequence context.
    #[error("context full for {seq}: {needed} positions needed, the limit is {limit}")]
    ContextFull {
        /// The sequence.
        seq: KvSeq,
        /// Positions it would hold.
        needed: usize,
        /// The per-sequence limit.
        limit: usize,
    },
    /// The pool's sizes are unusable.
    #[error("bad KV pool options: {0}")]
    BadOptions(String),
    /// The step is inconsistent (empty part, a sequence twice, a step already open, ...).
    #[error("bad step: {0}")]
    BadStep(String),
}

/// One sequence's share of a step: `tokens` at positions `len .. len + tokens.len()` of `seq`
/// (one token to decode, or a prefill chunk). Each sequence appears at most once per step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPart {
    /// The sequence.
    pub seq: KvSeq,
    /// Its next tokens (at least one).
    pub tokens: Vec<u32>,
    /// Whether the caller wants the logits after the last of them.
    pub want_logits: bool,
}

/// Where the rows of one part lie in an open step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRows {
    /// The sequence.
    pub seq: KvSeq,
    /// Index of its first row in the step.
    pub row0: usize,
    /// Rows (tokens) of the part.
    pub n: usize,
    /// Position of its first row (the sequence's length before the step).
    pub pos0: usize,
    /// Whether the part's logits are wanted.
    pub want_logits: bool,
}

#[derive(Debug, Clone, Default)]
struct Seq {
    blocks: Vec<u32>,
    len: usize,
}

/// Free list and block tables of a paged KV memory (see the module documentation).
#[derive(Debug, Clone)]
pub struct KvPool {
    free: Vec<u32>,
    total: usize,
    slots: Vec<Option<Seq>>,
    max_context: usize,
    /// Parts of the open step (empty: none open).
    step: Vec<PartRows>,
}

impl KvPool {
    /// An empty pool of `opts.n_blocks` blocks for `config`'s model.
    pub fn new(config: &LlamaConfig, opts: KvPoolOptions) -> Result<KvPool, KvError> {
        let max_context = if opts.max_context == 0 {
            config.context_length
        } else {
            opts.max_context.min(config.context_length)
        };
        if opts.n_blocks == 0 || opts.max_seqs == 0 || max_context == 0 {
            return Err(KvError::BadOptions(format!(
                "{} blocks, {} sequences, {} positions per sequence: each must be at least 1",
                opts.n_blocks, opts.max_seqs, max_context
            )));
        }
        let n = u32::try_from(opts.n_blocks)
            .map_err(|_| KvError::BadOptions(format!("{} blocks is too many", opts.n_blocks)))?;
        let max_seqs = u32::try_from(opts.max_seqs)
            .map_err(|_| KvError::BadOptions(format!("{} sequences is too many", opts.max_seqs)))?;
        Ok(KvPool {
            // Popped from the end: block 0 first.
            free: (0..n).rev().collect(),
            total: opts.n_blocks,
            slots: vec![None; max_seqs as usize],
            max_context,
            step: Vec::new(),
        })
    }

    /// Grows the pool by `blocks` blocks and `seqs` sequence slots (between steps only). The
    /// new blocks get the ids after the existing ones, so every block id and block table in use
    /// stays valid; they are handed out after the blocks already free, which keeps the pool's
    /// tail free for [`KvPool::trim`].
    pub fn grow(&mut self, blocks: usize, seqs: usize) -> Result<(), KvError> {
        if !self.step.is_empty() {
            return Err(KvError::BadStep(
                "the pool cannot grow while a step is open".into(),
            ));
        }
        let total = self
            .total
            .checked_add(blocks)
            .filter(|&t| u32::try_from(t).is_ok());
        let n_slots = self
            .slots
            .len()
            .checked_add(seqs)
            .filter(|&n| u32::try_from(n).is_ok());
        let (Some(total), Some(n_slots)) = (total, n_slots) else {
            return Err(KvError::BadOptions(format!(
                "{} more blocks and {seqs} more sequences is too many",
                blocks
            )));
        };
        // Popped from the end: the new ids go to the front, the highest last.
        let new: Vec<u32> = (self.total as u32..total as u32).rev().collect();
        self.free.splice(0..0, new);
        self.total = total;
        self.slots.resize(n_slots, None);
        Ok(())
    }

    /// One past the highest block id a sequence holds (0: none held).
    pub fn used_end(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .flat_map(|q| q.blocks.iter())
            .map(|&b| b as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Shrinks the pool towards `keep` blocks by dropping free blocks at its tail (ids `keep..`);
    /// blocks in use are never dropped, so the pool keeps at least [`KvPool::used_end`] blocks.
    /// Between steps only (no-op during a step). Returns the blocks the pool has now.
    pub fn trim(&mut self, keep: usize) -> usize {
        if !self.step.is_empty() {
            return self.total;
        }
        let keep = keep.max(self.used_end()).max(1);
        if keep < self.total {
            self.free.retain(|&b| (b as usize) < keep);
            self.total = keep;
        }
        self.total
    }

    /// Bytes of one block over every layer, keys and values in f16 (the same on the CPU and
    /// the GPU): `2 * n_layers * KV_BLOCK * kv_dim * 2`.
    pub fn bytes_per_block(config: &LlamaConfig) -> u64 {
        2 * config.n_layers as u64 * KV_BLOCK as u64 * config.kv_dim() as u64 * 2
    }

    /// Blocks a sequence of `n_positions` positions holds.
    pub fn blocks_for(n_positions: usize) -> usize {
        n_positions.div_ceil(KV_BLOCK)
    }

    /// Starts an empty sequence (no positions, no blocks).
    pub fn add_seq(&mut self) -> Result<KvSeq, KvError> {
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(KvError::TooManySeqs {
                max: self.slots.len(),
            })?;
        self.slots[i] = Some(Seq::default());
        // The slot count fits in u32 (checked in `new`).
        Ok(KvSeq(i as u32))
    }

    /// Removes a sequence and frees its blocks (unknown: no-op). Not while a step is open.
    pub fn remove_seq(&mut self, s: KvSeq) {
        if let Some(slot) = self.slots.get_mut(s.0 as usize) {
            if let Some(seq) = slot.take() {
                self.free.extend(seq.blocks.iter().rev());
                self.sort_free();
            }
        }
        self.step.retain(|p| p.seq != s);
    }

    /// Keeps the first `n` positions of `s` (no-op if it holds fewer or is unknown), freeing
    /// the blocks past them.
    pub fn truncate(&mut self, s: KvSeq, n: usize) {
        if let Some(Some(seq)) = self.slots.get_mut(s.0 as usize) {
            if n < seq.len {
                seq.len = n;
            }
            let keep = Self::blocks_for(n.max(seq.len));
            let before = seq.blocks.len();
            while seq.blocks.len() > keep {
                if let Some(b) = seq.blocks.pop() {
                    self.free.push(b);
                }
            }
            if seq.blocks.len() < before {
                self.sort_free();
            }
        }
    }

    /// Keeps the free list so that the lowest free id is handed out first: blocks in use
    /// gather at the front of the pool and its tail frees up for [`KvPool::trim`].
    fn sort_free(&mut self) {
        self.free.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Positions committed to `s` (None: unknown sequence).
    pub fn len(&self, s: KvSeq) -> Option<usize> {
        self.seq(s).map(|q| q.len)
    }

    /// Whether the pool holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The sequences held, in slot order.
    pub fn seqs(&self) -> Vec<KvSeq> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .map(|i| KvSeq(i as u32))
            .collect()
    }

    /// Blocks held by sequences.
    pub fn used_blocks(&self) -> usize {
        self.total - self.free.len()
    }

    /// Blocks free.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks in the pool.
    pub fn total_blocks(&self) -> usize {
        self.total
    }

    /// Most sequences at once.
    pub fn max_seqs(&self) -> usize {
        self.slots.len()
    }

    /// Most positions per sequence.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Most blocks one sequence can hold (the width of a dense block table).
    pub fn max_blocks_per_seq(&self) -> usize {
        Self::blocks_for(self.max_context)
    }

    /// The block table of `s` (block ids of its positions, in order).
    pub fn blocks(&self, s: KvSeq) -> Option<&[u32]> {
        self.seq(s).map(|q| q.blocks.as_slice())
    }

    /// Block id and offset in it of position `pos` of `s`, if `s` holds a block there.
    pub fn locate(&self, s: KvSeq, pos: usize) -> Option<(usize, usize)> {
        let q = self.seq(s)?;
        let b = *q.blocks.get(pos / KV_BLOCK)?;
        Some((b as usize, pos % KV_BLOCK))
    }

    fn seq(&self, s: KvSeq) -> Option<&Seq> {
        self.slots.get(s.0 as usize).and_then(Option::as_ref)
    }

    /// The parts of the open step (empty when none is open).
    pub fn step(&self) -> &[PartRows] {
        &self.step
    }

    /// Rows of the open step.
    pub fn step_rows(&self) -> usize {
        self.step.iter().map(|p| p.n).sum()
    }

    /// Opens a step: checks the parts (known sequences, each once, at least one token, within
    /// the context) and takes the blocks their new positions need, all or nothing. Returns
    /// where each part's rows lie (also kept for [`KvPool::step`]).
    pub fn reserve_step(&mut self, parts: &[StepPart]) -> Result<&[PartRows], KvError> {
        if !self.step.is_empty() {
            return Err(KvError::BadStep(
                "a step is already open: end or cancel it first".into(),
            ));
        }
        if parts.is_empty() {
            return Err(KvError::BadStep("a step needs at least one part".into()));
        }
        let mut rows = Vec::with_capacity(parts.len());
        let mut needed = 0usize;
        let mut row0 = 0usize;
        for (i, p) in parts.iter().enumerate() {
            let q = self.seq(p.seq).ok_or(KvError::UnknownSeq(p.seq))?;
            if p.tokens.is_empty() {
                return Err(KvError::BadStep(format!(
                    "the part of {} has no tokens",
                    p.seq
                )));
            }
            if parts[..i].iter().any(|o| o.seq == p.seq) {
                return Err(KvError::BadStep(format!(
                    "{} appears twice in one step (give it one part with all its tokens)",
                    p.seq
                )));
            }
            let end = q.len + p.tokens.len();
            if end > self.max_context {
                return Err(KvError::ContextFull {
                    seq: p.seq,
                    needed: end,
                    limit: self.max_context,
                });
            }
            needed += Self::blocks_for(end).saturating_sub(q.blocks.len());
            rows.push(PartRows {
                seq: p.seq,
                row0,
                n: p.tokens.len(),
                pos0: q.len,
                want_logits: p.want_logits,
            });
            row0 += p.tokens.len();
        }
        if needed > self.free.len() {
            return Err(KvError::Exhausted {
                needed,
                free: self.free.len(),
                total: self.total,
            });
        }
        for r in &rows {
            let end = r.pos0 + r.n;
            if let Some(Some(q)) = self.slots.get_mut(r.seq.0 as usize) {
                while q.blocks.len() < Self::blocks_for(end) {
                    match self.free.pop() {
                        Some(b) => q.blocks.push(b),
                        None => break,
                    }
                }
            }
        }
        self.step = rows;
        Ok(&self.step)
    }

    /// Commits the open step's positions to their sequences.
    pub fn commit_step(&mut self) {
        for r in std::mem::take(&mut self.step) {
            if let Some(Some(q)) = self.slots.get_mut(r.seq.0 as usize) {
                q.len = r.pos0 + r.n;
            }
        }
    }

    /// Abandons the open step: its blocks go back to the free list, lengths stay.
    pub fn cancel_step(&mut self) {
        for r in std::mem::take(&mut self.step) {
            self.truncate(r.seq, r.pos0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            dim: 64,
            ffn_dim: 128,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            rope_dim: 16,
            rope_base: 10000.0,
            rope_freq_factors: None,
            rms_eps: 1e-5,
            context_length: 256,
            vocab_size: 100,
            tied_output: true,
        }
    }

    fn part(seq: KvSeq, n: usize) -> StepPart {
        StepPart {
            seq,
            tokens: vec![1; n],
            want_logits: true,
        }
    }

    #[test]
    fn blocks_follow_lengths_and_come_back() {
        let c = config();
        let mut p = KvPool::new(
            &c,
            KvPoolOptions {
                n_blocks: 4,
                max_seqs: 2,
                max_context: 64,
            },
        )
        .unwrap();
        let a = p.add_seq().unwrap();
        let b = p.add_seq().unwrap();
        assert_eq!(p.add_seq(), Err(KvError::TooManySeqs { max: 2 }));
        p.reserve_step(&[part(a, 17), part(b, 1)]).unwrap();
        assert_eq!(p.used_blocks(), 3);
        p.commit_step();
        assert_eq!((p.len(a), p.len(b)), (Some(17), Some(1)));
        // 2 more blocks needed, 1 free: refused whole, nothing taken.
        let e = p.reserve_step(&[part(a, 16), part(b, 16)]).unwrap_err();
        assert_eq!(
            e,
            KvError::Exhausted {
                needed: 2,
                free: 1,
                total: 4
            }
        );
        assert_eq!(p.free_blocks(), 1);
        p.truncate(a, 3);
        assert_eq!((p.len(a), p.used_blocks()), (Some(3), 2));
        p.reserve_step(&[part(b, 20)]).unwrap();
        p.cancel_step();
        assert_eq!((p.len(b), p.used_blocks()), (Some(1), 2));
        p.remove_seq(a);
        p.remove_seq(b);
        assert_eq!(p.free_blocks(), 4);
        assert!(p.is_empty());
    }

    #[test]
    fn the_pool_grows_and_trims_its_tail_keeping_block_ids() {
        let c = config();
        let mut p = KvPool::new(
            &c,
            KvPoolOptions {
                n_blocks: 2,
                max_seqs: 1,
                max_context: 64,
            },
        )
        .unwrap();
        let a = p.add_seq().unwrap();
        p.reserve_step(&[part(a, 17)]).unwrap();
        p.commit_step();
        assert_eq!(p.blocks(a), Some(&[0u32, 1][..]));
        assert!(matches!(p.add_seq(), Err(KvError::TooManySeqs { .. })));
        p.grow(3, 1).unwrap();
        assert_eq!((p.total_blocks(), p.free_blocks(), p.max_seqs()), (5, 3, 2));
        assert_eq!(p.blocks(a), Some(&[0u32, 1][..]), "tables stay valid");
        let b = p.add_seq().unwrap();
        p.reserve_step(&[part(b, 17)]).unwrap();
        p.commit_step();
        assert_eq!(p.blocks(b), Some(&[2u32, 3][..]), "new ids in order");
        // Block 3 is in use: the pool keeps 4 blocks.
        assert_eq!(p.trim(2), 4);
        // Freed blocks are handed out lowest first: after `a` frees 0 and 1, `a` again takes
        // them (not block 4), so the tail stays free.
        p.remove_seq(a);
        let a = p.add_seq().unwrap();
        p.reserve_step(&[part(a, 1)]).unwrap();
        p.commit_step();
        assert_eq!(p.blocks(a), Some(&[0u32][..]));
        p.truncate(b, 0);
        p.reserve_step(&[part(b, 1)]).unwrap();
        p.commit_step();
        assert_eq!(p.blocks(b), Some(&[1u32][..]));
        p.remove_seq(a);
        assert_eq!(p.trim(0), 2, "block 1 is in use");
        assert_eq!((p.free_blocks(), p.used_blocks()), (1, 1));
        p.remove_seq(b);
        assert_eq!(p.trim(0), 1, "at least one block");
        // Not during a step.
        let a = p.add_seq().unwrap();
        p.reserve_step(&[part(a, 1)]).unwrap();
        assert!(matches!(p.grow(1, 0), Err(KvError::BadStep(_))));
        assert_eq!(p.trim(0), 1);
    }

    #[test]
    fn bad_steps_are_typed_errors() {
        let c = config();
        let mut p = KvPool::new(&c, KvPoolOptions::for_sequences(2, 32)).unwrap();
        let a = p.add_seq().unwrap();
        assert!(matches!(
            p.reserve_step(&[part(a, 33)]),
            Err(KvError::ContextFull {
                needed: 33,
                limit: 32,
                ..
            })
        ));
        assert!(matches!(
            p.reserve_step(&[part(a, 1), part(a, 1)]),
            Err(KvError::BadStep(_))
        ));
        assert!(matches!(
            p.reserve_step(&[part(KvSeq(1), 1)]),
            Err(KvError::UnknownSeq(KvSeq(1)))
        ));
        assert!(matches!(
            p.reserve_step(&[part(a, 0)]),
            Err(KvError::BadStep(_))
        ));
        assert!(KvPool::new(&c, KvPoolOptions::for_sequences(0, 32)).is_err());
        assert_eq!(KvPool::bytes_per_block(&c), 2 * 2 * 16 * 32 * 2);
    }
}
