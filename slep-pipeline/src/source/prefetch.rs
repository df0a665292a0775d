//! Read-ahead for the storage tier: a thread that keeps the disk (or NVMe) busy all the time.
//!
//! A [`Pipeline`](crate::Pipeline) reads items in schedule order, one staging buffer per item in flight, so a read
//! for a storage layer starts only a few items before that layer is needed and the disk idles
//! while the pinned and resident layers between two storage layers go by. Every token reads the
//! same storage layers in the same order, so [`PrefetchSource`] reads them cyclically, token after
//! token, into its own page-locked buffers, as far ahead as its buffers allow, and hands each one
//! to the pipeline as host memory to copy from directly. A buffer is reused once the pipeline has
//! dropped its last reference (the copy out of it completed). A request out of the expected order
//! (after an error, say) re-synchronises the cycle.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::buffer::HostBuffer;
use crate::error::PipelineError;
use crate::schedule::Item;
use crate::stage::{Fetched, HostMemory, HostRegion, Source, SourceKind};

/// The pipeline's result type.
type PResult<T> = std::result::Result<T, PipelineError>;

/// One finished read: the buffer (shared with the pipeline once handed out) and its spans.
type Done = (u64, Result<Arc<HostBuffer>, String>, Vec<(usize, usize)>);

struct State {
    order: Vec<Item>,
    next: usize,
    reading: Option<u64>,
    ready: VecDeque<Done>,
    free: Vec<HostBuffer>,
    lent: Vec<Arc<HostBuffer>>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// Bytes read and time spent reading by a read-ahead thread, since it started.
pub type ReadTotals = Arc<Mutex<(u64, Duration)>>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wraps a storage source with a read-ahead thread: it reads a fixed cycle of items (the
/// storage items of a schedule that repeats, e.g. every token of a streamed model) into its own
/// staging buffers as far ahead as they allow, and serves each item as host memory
/// ([`Fetched::Direct`]) to copy from. A buffer is reused once the pipeline has dropped its last
/// reference to it. A request out of the expected order re-synchronises the cycle; an item
/// outside the cycle is [`PipelineError::NotInSource`]; a failed read of the inner source is
/// [`PipelineError::SourceContract`] naming it.
pub struct PrefetchSource {
    shared: Arc<Shared>,
    totals: ReadTotals,
    thread: Option<JoinHandle<()>>,
    kinds: Vec<(u64, SourceKind)>,
}

impl std::fmt::Debug for PrefetchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchSource")
            .field("items", &self.kinds.len())
            .finish()
    }
}

/// Takes back every lent buffer the pipeline no longer references.
fn reclaim(st: &mut State) {
    let mut i = 0;
    while i < st.lent.len() {
        if Arc::strong_count(&st.lent[i]) == 1 {
            let a = st.lent.swap_remove(i);
            if let Ok(b) = Arc::try_unwrap(a) {
                st.free.push(b);
            }
        } else {
            i += 1;
        }
    }
}

fn worker(shared: Arc<Shared>, mut inner: Box<dyn Source>, totals: ReadTotals) {
    loop {
        let (item, mut buf) = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return;
                }
                reclaim(&mut st);
                if !st.free.is_empty() && !st.order.is_empty() {
                    break;
                }
                st = shared
                    .cv
                    .wait_timeout(st, Duration::from_micros(200))
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            let n = st.order.len();
            let item = st.order[st.next % n].clone();
            st.next = (st.next + 1) % n;
            st.reading = Some(item.key);
            let buf = st.free.pop();
            match buf {
                Some(b) => (item, b),
                None => continue,
            }
        };
        let t = std::time::Instant::now();
        let r = inner
            .prepare_staging(&mut buf)
            .and_then(|()| inner.fetch(&item, &mut buf));
        let busy = t.elapsed();
        let done: Done = match r {
            Ok(Fetched::Staged(spans)) => {
                let bytes: usize = spans.iter().map(|s| s.1).sum();
                if let Ok(mut tot) = totals.lock() {
                    tot.0 += bytes as u64;
                    tot.1 += busy;
                }
                (item.key, Ok(Arc::new(buf)), spans)
            }
            Ok(other) => {
                let why = format!("the storage source returned {other:?} instead of staged bytes");
                shared.lock().free.push(buf);
                (item.key, Err(why), Vec::new())
            }
            Err(e) => {
                shared.lock().free.push(buf);
                (item.key, Err(e.to_string()), Vec::new())
            }
        };
        let mut st = shared.lock();
        st.reading = None;
        st.ready.push_back(done);
        shared.cv.notify_all();
    }
}

impl PrefetchSource {
    /// Reads `items` (in schedule order, cyclically) with `inner` into `buffers` on a
    /// background thread. Each buffer must hold any item as `inner` stages it (see
    /// [`Source::staging_bytes`]); page-locked buffers (from
    /// [`Transfer::alloc_staging`](crate::Transfer::alloc_staging)) let the copy out of them run
    /// asynchronously. Reads stop while every buffer is lent out, so give at least two.
    pub fn new(inner: Box<dyn Source>, items: Vec<Item>, buffers: Vec<HostBuffer>) -> Self {
        let kinds = items.iter().map(|i| (i.key, inner.kind_for(i))).collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                order: items,
                next: 0,
                reading: None,
                ready: VecDeque::new(),
                free: buffers,
                lent: Vec::new(),
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let totals: ReadTotals = Arc::new(Mutex::new((0, Duration::ZERO)));
        let tot = Arc::clone(&totals);
        let thread = std::thread::Builder::new()
            .name("storage-prefetch".into())
            .spawn(move || worker(s, inner, tot))
            .ok();
        Self {
            shared,
            totals,
            thread,
            kinds,
        }
    }

    /// The read totals: bytes read and time spent reading (shared with the thread).
    pub fn totals(&self) -> ReadTotals {
        Arc::clone(&self.totals)
    }

    fn gone(&self, item: &Item) -> PipelineError {
        PipelineError::NotInSource {
            source_name: "storage prefetch",
            key: item.key,
            reason: "the read-ahead thread is gone".into(),
        }
    }
}

impl Drop for PrefetchSource {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Source for PrefetchSource {
    fn kind_for(&self, item: &Item) -> SourceKind {
        self.kinds
            .iter()
            .find(|(k, _)| *k == item.key)
            .map_or(SourceKind::CpuWorkerDirect, |(_, kind)| *kind)
    }

    fn staging_bytes(&self, _item: &Item) -> PResult<u64> {
        Ok(0)
    }

    fn fetch(&mut self, item: &Item, _staging: &mut HostBuffer) -> PResult<Fetched> {
        if self.thread.is_none() {
            return Err(self.gone(item));
        }
        let mut st = self.shared.lock();
        loop {
            // Drop finished reads of other items ahead of this one (out-of-order request).
            if let Some(pos) = st.ready.iter().position(|d| d.0 == item.key) {
                for _ in 0..pos {
                    if let Some((_, Ok(buf), _)) = st.ready.pop_front() {
                        st.lent.push(buf);
                    }
                }
                let Some((_, r, spans)) = st.ready.pop_front() else {
                    continue;
                };
                self.shared.cv.notify_all();
                return match r {
                    Ok(buf) => {
                        let memory: Arc<dyn HostMemory> = buf.clone();
                        st.lent.push(buf);
                        let regions = spans
                            .iter()
                            .map(|&(off, len)| {
                                HostRegion::new(memory.clone(), off as u64, len as u64)
                            })
                            .collect::<PResult<Vec<_>>>()?;
                        Ok(Fetched::Direct(regions))
                    }
                    Err(message) => Err(PipelineError::SourceContract {
                        key: item.key,
                        message: format!("storage read failed: {message}"),
                    }),
                };
            }
            if st.reading != Some(item.key) {
                // Not coming next: restart the cycle at this item.
                let pos = st.order.iter().position(|i| i.key == item.key);
                let Some(pos) = pos else {
                    return Err(PipelineError::NotInSource {
                        source_name: "storage prefetch",
                        key: item.key,
                        reason: "not a storage layer of this plan".into(),
                    });
                };
                if st.order.get(st.next).map(|i| i.key) != Some(item.key) {
                    st.next = pos;
                }
                if st.reading.is_none() {
                    // The thread is idle or out of buffers, and every finished read ahead of us
                    // is of another item: give those buffers back so it can read this one.
                    while let Some((_, r, _)) = st.ready.pop_front() {
                        if let Ok(buf) = r {
                            st.lent.push(buf);
                        }
                    }
                }
                self.shared.cv.notify_all();
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, Duration::from_millis(50))
                .map_or_else(|p| p.into_inner().0, |r| r.0);
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return Err(self.gone(item));
            }
        }
    }
}
