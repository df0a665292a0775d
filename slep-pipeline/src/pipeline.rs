//! The N-buffered pipeline: a reader thread (the source), a copy thread (the transfer) and the
//! caller's thread (compute), connected by channels that carry staging buffers and slots.
//!
//! Policy (mirrored by [`crate::sim`]): item `j` is read into a free staging buffer (S of them; a
//! buffer is free again once the copy out of it completed), copied into slot `j mod N` once the
//! consumer released that slot's previous item, and handed to the consumer in schedule order.
//! So at most N-1 items sit in slots ahead of the one being computed, and up to S more are being
//! read ahead of the copies.
//!
//! Slot lifetime: a slot is only written again, or freed, after its last reader. The consumer's
//! release event travels with the slot (also from one pass to the next, so the first copy of a
//! pass waits for the last compute of the one before); where a reader left no event (a consumer
//! that failed, the pipeline being dropped) the pipeline first waits for the device
//! ([`Transfer::settle`]).

use std::error::Error;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::{HostBuffer, PAGE};
use crate::error::{PipelineError, Result};
use crate::schedule::{Item, Schedule};
use crate::stage::{CopySegment, Fetched, Source, SourceKind, Transfer};
use crate::stats::PipelineStats;
use crate::trace::{Stage, Trace};

/// Default number of device slots (double buffering).
pub const DEFAULT_SLOTS: usize = 2;

/// What the consumer sees: "slot k holds item i, ready after event e".
pub struct Ready<'a, T: Transfer> {
    /// Position of the item in the schedule.
    pub index: usize,
    /// The item.
    pub item: &'a Item,
    /// The data path that served it.
    pub kind: SourceKind,
    /// Item length in bytes (the slot's first `len` bytes hold it).
    pub len: usize,
    /// Slot number (`None` for a resident item, which the caller finds in its own buffers).
    pub slot: Option<usize>,
    buffer: Option<&'a T::Slot>,
    event: Option<&'a T::Event>,
    transfer: &'a T,
}

impl<'a, T: Transfer> Ready<'a, T> {
    /// The device slot holding the item (`None` for a resident item).
    pub fn buffer(&self) -> Option<&'a T::Slot> {
        self.buffer
    }

    /// The event after which the slot holds the item (`None` for a resident item). Device-side
    /// consumers make their compute stream wait on it.
    pub fn event(&self) -> Option<&'a T::Event> {
        self.event
    }

    /// Blocks the calling thread until the item's transfer completed.
    pub fn wait(&self) -> Result<()> {
        match self.event {
            Some(e) => self.transfer.wait(e),
            None => Ok(()),
        }
    }

    /// The transfer (to record release events, for example).
    pub fn transfer(&self) -> &'a T {
        self.transfer
    }
}

/// A slot handed back by the consumer with its optional release event.
type Released<T> = (
    SlotEntry<<T as Transfer>::Slot>,
    Option<<T as Transfer>::Event>,
);

struct SlotEntry<S> {
    id: usize,
    buf: S,
}

struct FetchMsg {
    index: usize,
    kind: SourceKind,
    staging: HostBuffer,
    fetched: Fetched,
}

struct ReadyMsg<T: Transfer> {
    index: usize,
    kind: SourceKind,
    slot: Option<SlotEntry<T::Slot>>,
    event: Option<T::Event>,
}

/// The streaming pipeline over a [`Transfer`]. Slots and staging buffers persist across passes.
pub struct Pipeline<T: Transfer> {
    transfer: T,
    n_slots: usize,
    slot_bytes: usize,
    n_staging: usize,
    /// Free slots, each with the release event of its last reader (if it had one).
    slots: Vec<Released<T>>,
    next_slot_id: usize,
    staging: Vec<HostBuffer>,
    external_staging: bool,
    trace: Option<Arc<Trace>>,
}

type ConsumerError = Box<dyn Error + Send + Sync>;

impl<T: Transfer> Pipeline<T> {
    /// A pipeline with `n_slots` (>= 2) device slots of `slot_bytes` each, allocated now, and as
    /// many staging buffers (allocated on the first pass, sized for the schedule).
    pub fn new(transfer: T, n_slots: usize, slot_bytes: usize) -> Result<Self> {
        if n_slots < 2 {
            return Err(PipelineError::TooFewSlots(n_slots));
        }
        let mut p = Self {
            transfer,
            n_slots,
            slot_bytes,
            n_staging: n_slots,
            slots: Vec::new(),
            next_slot_id: 0,
            staging: Vec::new(),
            external_staging: false,
            trace: None,
        };
        p.ensure_slots()?;
        Ok(p)
    }

    /// Sets how many staging buffers to use (at least 1; default: the slot count).
    pub fn with_staging_count(mut self, n: usize) -> Self {
        self.n_staging = n.max(1);
        self
    }

    /// Uses these buffers (e.g. another driver's DMA memory, registered with the transfer) as
    /// staging instead of allocating them. Passes fail with [`PipelineError::StagingTooSmall`]
    /// when an item needs more staging than they hold.
    pub fn set_staging(&mut self, buffers: Vec<HostBuffer>) {
        self.n_staging = buffers.len().max(1);
        self.staging = buffers;
        self.external_staging = true;
    }

    /// Records every pass's read, copy, wait and compute spans into `trace` (`None`: stop).
    pub fn set_trace(&mut self, trace: Option<Arc<Trace>>) {
        self.trace = trace;
    }

    /// The trace passes record into, if any.
    pub fn trace(&self) -> Option<&Arc<Trace>> {
        self.trace.as_ref()
    }

    /// The transfer.
    pub fn transfer(&self) -> &T {
        &self.transfer
    }

    /// Number of device slots.
    pub fn slot_count(&self) -> usize {
        self.n_slots
    }

    /// Bytes per device slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn ensure_slots(&mut self) -> Result<()> {
        while self.slots.len() < self.n_slots {
            let buf = self.transfer.alloc_slot(self.slot_bytes)?;
            self.slots.push((
                SlotEntry {
                    id: self.next_slot_id % self.n_slots,
                    buf,
                },
                None,
            ));
            self.next_slot_id += 1;
        }
        Ok(())
    }

    fn ensure_staging(&mut self, need: u64) -> Result<()> {
        if self.external_staging {
            if self.staging.is_empty() {
                return Err(PipelineError::StagingTooSmall {
                    key: 0,
                    need,
                    have: 0,
                });
            }
            for b in &self.staging {
                if (b.len() as u64) < need {
                    return Err(PipelineError::StagingTooSmall {
                        key: 0,
                        need,
                        have: b.len() as u64,
                    });
                }
            }
            return Ok(());
        }
        let need = usize::try_from(need)
            .ok()
            .and_then(|n| n.checked_next_multiple_of(PAGE))
            .ok_or(PipelineError::Alloc {
                bytes: usize::MAX,
                what: "staging buffer",
            })?;
        self.staging.retain(|b| b.len() >= need);
        while self.staging.len() < self.n_staging {
            self.staging
                .push(self.transfer.alloc_staging(need.max(PAGE))?);
        }
        Ok(())
    }

    /// Runs one pass: streams every item of `schedule` from `source` through the slots and calls
    /// `consume` for each, in schedule order. `consume` must be done with the slot when it returns
    /// (or return the event after which it is, for device-side compute). A failing stage or consumer
    /// stops the pass with an error; nothing hangs.
    pub fn run<S, F>(
        &mut self,
        schedule: &Schedule,
        source: &mut S,
        mut consume: F,
    ) -> Result<PipelineStats>
    where
        S: Source + ?Sized,
        F: FnMut(Ready<'_, T>) -> std::result::Result<Option<T::Event>, ConsumerError>,
    {
        let items = schedule.items();
        let mut need_staging = 0u64;
        for (index, item) in items.iter().enumerate() {
            let bytes = item.total_len()?;
            if bytes > self.slot_bytes as u64 {
                return Err(PipelineError::ItemTooLarge {
                    index,
                    key: item.key,
                    bytes,
                    slot_bytes: self.slot_bytes as u64,
                });
            }
            need_staging = need_staging.max(source.staging_bytes(item)?);
        }
        self.ensure_slots()?;
        self.ensure_staging(need_staging)?;
        for b in &mut self.staging {
            source.prepare_staging(b)?;
        }

        let start = Instant::now();
        let mut stats = PipelineStats::default();
        let (staging_tx, staging_rx) = channel::<HostBuffer>();
        for b in self.staging.drain(..) {
            let _ = staging_tx.send(b);
        }
        let (fetch_tx, fetch_rx) = channel::<Result<FetchMsg>>();
        let (slot_tx, slot_rx) = channel::<Released<T>>();
        for s in self.slots.drain(..) {
            let _ = slot_tx.send(s);
        }
        let (ready_tx, ready_rx) = channel::<Result<ReadyMsg<T>>>();
        let transfer = &self.transfer;
        let trace = self.trace.as_deref();

        let outcome = std::thread::scope(|scope| {
            let reader = scope.spawn(|| reader_loop(items, source, staging_rx, fetch_tx, trace));
            let copier = scope.spawn(|| {
                copy_loop(
                    items, transfer, fetch_rx, staging_tx, slot_rx, ready_tx, trace,
                )
            });
            let mut result: Result<()> = Ok(());
            // Slots whose reader left no event, held until the device settled.
            let mut unsettled: Vec<SlotEntry<T::Slot>> = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let waited = Instant::now();
                let msg = match ready_rx.recv() {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    Err(_) => {
                        result = Err(PipelineError::WorkerPanicked("copy"));
                        break;
                    }
                };
                let wait = waited.elapsed();
                if let Some(tr) = trace {
                    tr.record(Stage::Wait, item.key, waited, waited + wait);
                }
                if index == 0 {
                    stats.fill = wait;
                } else {
                    stats.stall += wait;
                }
                debug_assert_eq!(msg.index, index);
                let len = item.total_len().unwrap_or(0) as usize;
                let ready = Ready {
                    index,
                    item,
                    kind: msg.kind,
                    len,
                    slot: msg.slot.as_ref().map(|s| s.id),
                    buffer: msg.slot.as_ref().map(|s| &s.buf),
                    event: msg.event.as_ref(),
                    transfer,
                };
                let t = Instant::now();
                let released = consume(ready);
                let busy = t.elapsed();
                if let Some(tr) = trace {
                    tr.record(Stage::Compute, item.key, t, t + busy);
                }
                stats.compute.add(len as u64, busy);
                stats.items += 1;
                stats.bytes += len as u64;
                match released {
                    Ok(ev) => {
                        if let Some(slot) = msg.slot {
                            let _ = slot_tx.send((slot, ev));
                        }
                    }
                    Err(source) => {
                        // The consumer may have queued device work reading the slot before it
                        // failed, and gave no event to order the slot's next use after it.
                        unsettled.extend(msg.slot);
                        result = Err(PipelineError::Consumer {
                            index,
                            key: item.key,
                            source,
                        });
                        break;
                    }
                }
            }
            // Closing our ends unblocks both workers whatever state they are in. (Slots of items
            // copied ahead are freed with their messages: the copy completed on the copy stream
            // and nothing read them.)
            drop(slot_tx);
            drop(ready_rx);
            let reader_out = reader.join();
            let copier_out = copier.join();
            (result, unsettled, reader_out, copier_out)
        });
        let (result, unsettled, reader_out, copier_out) = outcome;
        let read_stats = reader_out.ok().map(|(kept, staging_back, read_stats)| {
            self.staging.extend(kept);
            self.staging.extend(staging_back.try_iter());
            read_stats
        });
        let copy_stats = copier_out.ok().map(|(slots_back, copy_stats)| {
            self.slots.extend(slots_back);
            copy_stats
        });
        if !unsettled.is_empty() {
            // A failed consumer's work may still read these slots until the device settles. If
            // it cannot settle, freeing any slot could free memory in use: keep them all out of
            // reach for the life of the process instead (the next pass allocates new ones).
            match self.transfer.settle() {
                Ok(()) => self.slots.extend(unsettled.into_iter().map(|s| (s, None))),
                Err(e) => {
                    std::mem::forget(unsettled);
                    std::mem::forget(std::mem::take(&mut self.slots));
                    // The consumer's error says more than the settle's.
                    result?;
                    return Err(e);
                }
            }
        }
        let read_stats = read_stats.ok_or(PipelineError::WorkerPanicked("reader"))?;
        let copy_stats = copy_stats.ok_or(PipelineError::WorkerPanicked("copy"))?;
        result?;
        stats.read = read_stats;
        stats.copy = copy_stats;
        stats.wall = start.elapsed();
        Ok(stats)
    }
}

fn reader_loop<S: Source + ?Sized>(
    items: &[Item],
    source: &mut S,
    staging_rx: Receiver<HostBuffer>,
    fetch_tx: Sender<Result<FetchMsg>>,
    trace: Option<&Trace>,
) -> (
    Vec<HostBuffer>,
    Receiver<HostBuffer>,
    crate::stats::StageStats,
) {
    let mut stats = crate::stats::StageStats::default();
    let mut kept = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Ok(mut staging) = staging_rx.recv() else {
            break;
        };
        let t = Instant::now();
        let r = source.fetch(item, &mut staging);
        let busy = t.elapsed();
        let msg = match r {
            Ok(fetched) => {
                if let Fetched::Staged(spans) = &fetched {
                    let bytes: usize = spans.iter().map(|s| s.1).sum();
                    stats.add(bytes as u64, busy);
                    if let Some(tr) = trace {
                        tr.record(Stage::Read, item.key, t, t + busy);
                    }
                }
                Ok(FetchMsg {
                    index,
                    kind: source.kind_for(item),
                    staging,
                    fetched,
                })
            }
            Err(e) => {
                kept.push(staging);
                Err(e)
            }
        };
        let failed = msg.is_err();
        if fetch_tx.send(msg).is_err() || failed {
            break;
        }
    }
    (kept, staging_rx, stats)
}

fn copy_loop<T: Transfer>(
    items: &[Item],
    transfer: &T,
    fetch_rx: Receiver<Result<FetchMsg>>,
    staging_tx: Sender<HostBuffer>,
    slot_rx: Receiver<Released<T>>,
    ready_tx: Sender<Result<ReadyMsg<T>>>,
    trace: Option<&Trace>,
) -> (Vec<Released<T>>, crate::stats::StageStats) {
    let mut stats = crate::stats::StageStats::default();
    let mut spare: Vec<Released<T>> = Vec::new();
    for _ in 0..items.len() {
        let msg = match fetch_rx.recv() {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let _ = ready_tx.send(Err(e));
                break;
            }
            Err(_) => break,
        };
        let FetchMsg {
            index,
            kind,
            staging,
            fetched,
        } = msg;
        let (key, expected) = items
            .get(index)
            .map_or((0, 0), |i| (i.key, i.total_len().unwrap_or(0)));
        let out = match fetched {
            Fetched::Resident => {
                let _ = staging_tx.send(staging);
                Ok(ReadyMsg {
                    index,
                    kind,
                    slot: None,
                    event: None,
                })
            }
            other => {
                let Ok((mut slot, after)) = slot_rx.recv() else {
                    break;
                };
                let t = Instant::now();
                let r = copy_one(
                    transfer,
                    &staging,
                    &other,
                    &mut slot.buf,
                    after.as_ref(),
                    key,
                    expected,
                );
                let r = r.and_then(|(ev, bytes)| {
                    transfer.wait(&ev)?;
                    let done = Instant::now();
                    let busy = transfer.elapsed(&ev).unwrap_or_else(|| t.elapsed());
                    stats.add(bytes, busy);
                    if let Some(tr) = trace {
                        // Placed where the copy ran: it completed (about) when the wait returned.
                        tr.record(Stage::Copy, key, done.checked_sub(busy).unwrap_or(t), done);
                    }
                    Ok(ev)
                });
                // The copy completed (or failed): staging and direct regions may be reused now.
                drop(other);
                let _ = staging_tx.send(staging);
                match r {
                    Ok(ev) => Ok(ReadyMsg {
                        index,
                        kind,
                        slot: Some(slot),
                        event: Some(ev),
                    }),
                    Err(e) => {
                        // The copy may have failed before waiting on the slot's release: keep
                        // the event for the slot's next copy.
                        spare.push((slot, after));
                        Err(e)
                    }
                }
            }
        };
        let failed = out.is_err();
        if ready_tx.send(out).is_err() || failed {
            break;
        }
    }
    drop(staging_tx);
    drop(ready_tx);
    // Collect every slot the consumer hands back (it closes its end when the pass is over), each
    // with its release event: the next pass's first copy into it waits for that.
    spare.extend(slot_rx.iter());
    (spare, stats)
}

fn copy_one<T: Transfer>(
    transfer: &T,
    staging: &HostBuffer,
    fetched: &Fetched,
    slot: &mut T::Slot,
    after: Option<&T::Event>,
    key: u64,
    expected: u64,
) -> Result<(T::Event, u64)> {
    let mut segments = Vec::new();
    let mut dst = 0usize;
    match fetched {
        Fetched::Staged(spans) => {
            let bytes = staging.as_slice();
            for &(off, len) in spans {
                let src = off
                    .checked_add(len)
                    .and_then(|end| bytes.get(off..end))
                    .ok_or(PipelineError::StagingTooSmall {
                        key,
                        need: off as u64 + len as u64,
                        have: bytes.len() as u64,
                    })?;
                segments.push(CopySegment {
                    src,
                    dst_offset: dst,
                });
                dst += len;
            }
        }
        Fetched::Direct(regions) => {
            for r in regions {
                segments.push(CopySegment {
                    src: r.bytes(),
                    dst_offset: dst,
                });
                dst += r.bytes().len();
            }
        }
        Fetched::Resident => {}
    }
    if dst as u64 != expected {
        return Err(PipelineError::SourceContract {
            key,
            message: format!("source delivered {dst} bytes for an item of {expected} bytes"),
        });
    }
    let ev = transfer.copy(&segments, slot, after)?;
    Ok((ev, expected))
}

impl<T: Transfer> Drop for Pipeline<T> {
    fn drop(&mut self) {
        // The last pass's consumers may still read their slots on the device: wait before the
        // slots are freed. If the device cannot settle, leak the slots rather than free memory
        // that may be in use.
        if self.transfer.settle().is_err() {
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
