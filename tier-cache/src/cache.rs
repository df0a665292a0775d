//! The runtime cache: residency, streaming admission, budget changes, bandwidth-driven re-plans.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cache_state::{Entry, State, TierState};
use crate::error::{CacheError, PlanError};
use crate::item::Item;
use crate::placement::{Placement, PlanMethod};
use crate::planner::{Key, PlanOptions, Planner};
use crate::stats::Stats;
use crate::storage::Storage;
use crate::tier::{Tier, TierId};

/// Which streamed copy `ensure` evicts when a tier needs room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eviction {
    /// Least recently used first.
    #[default]
    Lru,
    /// Plan-aware: the copy that is cheapest to fetch again from its home (lowest
    /// weight x home read time per byte) first, least recently used among equals.
    PlanAware,
}

/// Runtime settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheOptions {
    /// Eviction policy for streamed copies.
    pub eviction: Eviction,
    /// Weight of a new bandwidth sample in the moving average (0 < alpha <= 1).
    pub bandwidth_smoothing: f64,
    /// Re-plan when a tier's bandwidth estimate differs from the one the last plan used by
    /// more than this fraction (0.15 = 15 %).
    pub replan_threshold: f64,
    /// Planner settings used for re-plans.
    pub plan: PlanOptions,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            eviction: Eviction::Lru,
            bandwidth_smoothing: 0.25,
            replan_threshold: 0.15,
            plan: PlanOptions::default(),
        }
    }
}

/// Result of [`TierCache::ensure`].
#[derive(Clone, Debug, PartialEq)]
pub struct Access<H> {
    /// The tier that now holds the item.
    pub tier: TierId,
    /// The item's allocation there.
    pub handle: H,
    /// Whether it was already there.
    pub hit: bool,
    /// On a miss, the tier it was copied from.
    pub source: Option<TierId>,
}

/// Why a home moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveReason {
    /// A re-plan chose a new home.
    Replan,
    /// A budget shrank and this item was among the least valuable there.
    Demotion,
    /// Stepped aside to break a cycle of moves during a re-plan (moved again later).
    Detour,
}

/// One home move made by the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move<K> {
    /// The item.
    pub key: K,
    /// Old home.
    pub from: TierId,
    /// New home.
    pub to: TierId,
    /// Bytes moved.
    pub bytes: u64,
    /// Why.
    pub reason: MoveReason,
}

/// Result of [`TierCache::record_bandwidth`].
#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthUpdate<K> {
    /// The measured sample, bytes/s.
    pub sample: f64,
    /// The new moving-average estimate, bytes/s.
    pub estimate: f64,
    /// Whether the estimate moved past the threshold and a re-plan ran.
    pub replanned: bool,
    /// Moves made by that re-plan.
    pub moves: Vec<Move<K>>,
}

/// Where one item's bytes are: its home and its streamed copies.
#[derive(Clone, Debug, PartialEq)]
pub struct Residency<H> {
    /// The home tier and allocation.
    pub home: (TierId, H),
    /// Streamed copies: tier and allocation.
    pub copies: Vec<(TierId, H)>,
}

/// A thread-safe tiered cache over a [`Storage`] backend.
///
/// Every item has exactly one *home* (its authoritative copy, in one tier) and may have
/// *streamed copies* in other tiers, made by [`TierCache::ensure`] and evicted when room is
/// needed. A tier's capacity bounds homes plus streamed copies at all times; a per-tier
/// *streaming reserve* keeps room out of planning so streamed copies always fit.
/// All methods take `&self`; one internal lock serialises them (storage calls included).
///
/// ```
/// use tier_cache::{CacheOptions, Item, MemStorage, Storage, Tier, TierCache, TierId};
/// let tiers = vec![
///     Tier::new("VRAM", 300, 1.0e12),
///     Tier::new("RAM", 400, 25.0e9),
///     Tier::unlimited("storage", 5.0e9),
/// ];
/// let cache = TierCache::new(tiers, MemStorage::new(), CacheOptions::default()).unwrap();
/// cache.set_streaming_reserve(TierId(0), 100).unwrap();
/// for i in 0..6u32 {
///     // Every item starts on storage with known bytes.
///     let h = cache.storage().allocate(TierId(2), 100).unwrap();
///     cache.storage().write(TierId(2), &h, 0, &[i as u8; 100]).unwrap();
///     cache.insert(Item::new(i, 100, 1.0), TierId(2), h).unwrap();
/// }
/// cache.replan().unwrap();
/// assert_eq!(cache.homes_in(TierId(0)).len(), 2); // 300 - 100 reserved
/// assert_eq!(cache.homes_in(TierId(1)).len(), 4);
/// // Stream item 5 (home RAM) into VRAM's reserved room.
/// let access = cache.ensure(&5, TierId(0)).unwrap();
/// assert!(!access.hit);
/// assert_eq!(cache.storage().read(TierId(0), &access.handle).unwrap(), vec![5u8; 100]);
/// assert!(cache.ensure(&5, TierId(0)).unwrap().hit);
/// // KV cache growth: VRAM shrinks to 200 bytes; one home moves down, nothing is lost.
/// let moves = cache.set_capacity(TierId(0), 200).unwrap();
/// assert_eq!(moves.len(), 1);
/// assert_eq!(cache.stats().hits(), 1);
/// ```
pub struct TierCache<K, S: Storage> {
    storage: S,
    options: CacheOptions,
    state: Mutex<State<K, S::Handle>>,
}

impl<K: Key, S: Storage> TierCache<K, S> {
    /// An empty cache over `tiers` (fastest first) and `storage`.
    pub fn new(tiers: Vec<Tier>, storage: S, options: CacheOptions) -> Result<Self, CacheError> {
        Planner::new(tiers.clone())?;
        if !(options.bandwidth_smoothing > 0.0 && options.bandwidth_smoothing <= 1.0) {
            return Err(CacheError::InvalidMeasurement {
                tier_name: "(options)".to_string(),
                reason: format!(
                    "bandwidth_smoothing must be in (0, 1], got {}",
                    options.bandwidth_smoothing
                ),
            });
        }
        let n = tiers.len();
        let tiers = tiers
            .into_iter()
            .map(|spec| TierState {
                planned_bandwidth: spec.bandwidth,
                spec,
                reserve: 0,
                home_bytes: 0,
                cached_bytes: 0,
            })
            .collect();
        Ok(TierCache {
            storage,
            options,
            state: Mutex::new(State {
                tiers,
                entries: BTreeMap::new(),
                clock: 0,
                stats: Stats::new(n),
                method: PlanMethod::Tracked,
            }),
        })
    }

    /// The storage backend (e.g. to allocate and fill an item's first copy before inserting it).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The options.
    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// Hands the cache an item whose bytes already live in `tier` under `handle`; that becomes
    /// its home. Fails on a duplicate key, an unknown tier, or if `tier` has no room even after
    /// evicting streamed copies. The home may break the item's constraints (e.g. a layer pinned
    /// to VRAM inserted on storage) until [`TierCache::replan`], which places every item.
    pub fn insert(&self, item: Item<K>, tier: TierId, handle: S::Handle) -> Result<(), CacheError> {
        let mut st = self.state.lock();
        st.check_tier(tier)?;
        if !(item.weight.is_finite() && item.weight >= 0.0) {
            return Err(PlanError::InvalidItem {
                item: format!("{:?}", item.key),
                reason: format!(
                    "access weight must be a finite number >= 0, got {}",
                    item.weight
                ),
            }
            .into());
        }
        if st.entries.contains_key(&item.key) {
            return Err(CacheError::DuplicateKey {
                item: format!("{:?}", item.key),
            });
        }
        if !st.evict_for(&self.storage, tier, item.size, None, self.options.eviction)? {
            let t = &st.tiers[tier.0];
            return Err(CacheError::NoRoom {
                item: format!("{:?}", item.key),
                tier_name: t.spec.name.clone(),
                size: item.size,
                free: t.free(),
            });
        }
        st.tiers[tier.0].home_bytes += item.size;
        st.entries.insert(
            item.key.clone(),
            Entry {
                item,
                home: tier,
                handle,
                copies: Vec::new(),
            },
        );
        Ok(())
    }

    /// Plans with the current capacities (minus streaming reserves) and bandwidth estimates,
    /// then moves homes to match, never over-filling a tier. Returns the moves made.
    pub fn replan(&self) -> Result<Vec<Move<K>>, CacheError> {
        let mut st = self.state.lock();
        self.replan_locked(&mut st)
    }

    fn replan_locked(&self, st: &mut State<K, S::Handle>) -> Result<Vec<Move<K>>, CacheError> {
        let plan = st.plan(&self.options.plan)?;
        let targets: Vec<(K, TierId)> = plan
            .assignments()
            .map(|(it, t)| (it.key.clone(), t))
            .collect();
        for t in st.tiers.iter_mut() {
            t.planned_bandwidth = t.spec.bandwidth;
        }
        st.stats.replans += 1;
        st.method = plan.method();
        st.apply(&self.storage, targets, self.options.eviction)
    }

    /// The placement the planner would choose now, without moving anything (e.g. to
    /// `explain()` it).
    pub fn plan(&self) -> Result<Placement<K>, PlanError> {
        self.state.lock().plan(&self.options.plan)
    }

    /// The homes as they are now, as a [`Placement`] (capacities as configured) for
    /// [`Placement::predict`] and [`Placement::explain`].
    pub fn placement(&self) -> Placement<K> {
        let st = self.state.lock();
        let tiers = st.tiers.iter().map(|t| t.spec.clone()).collect();
        let (items, homes) = st
            .entries
            .values()
            .map(|e| (e.item.clone(), e.home))
            .unzip();
        Placement::new(tiers, items, homes, st.method)
    }

    /// Makes sure `tier` holds a copy of `key` and returns it: a hit if the item's home or a
    /// streamed copy is there, otherwise a miss that evicts streamed copies of other items (per
    /// [`CacheOptions::eviction`]) and copies the item in from the fastest tier holding it.
    /// Homes are never evicted.
    pub fn ensure(&self, key: &K, tier: TierId) -> Result<Access<S::Handle>, CacheError> {
        let mut st = self.state.lock();
        st.ensure(&self.storage, key, tier, self.options.eviction)
    }

    /// Changes a tier's capacity. Shrinking first demotes the least valuable homes there (the
    /// ones losing the least time per byte) to the next slower tier allowed that has room,
    /// until homes fit in the new capacity minus the streaming reserve, then evicts streamed
    /// copies; no item is ever dropped. If that cannot be done (pinned items, no room below)
    /// it fails and nothing changes. Growing sets the capacity and re-plans, which may promote
    /// items; if that re-plan fails the larger capacity stays and the error is returned.
    pub fn set_capacity(&self, tier: TierId, bytes: u64) -> Result<Vec<Move<K>>, CacheError> {
        let mut st = self.state.lock();
        st.check_tier(tier)?;
        let old = st.tiers[tier.0].spec.capacity;
        if bytes >= old {
            st.tiers[tier.0].spec.capacity = bytes;
            return self.replan_locked(&mut st);
        }
        let limit = bytes.saturating_sub(st.tiers[tier.0].reserve);
        let demotions = st.demotions(tier, limit)?;
        st.tiers[tier.0].spec.capacity = bytes;
        let policy = self.options.eviction;
        let mut moves = Vec::new();
        for (k, to) in demotions {
            if let Some(m) = st.move_home(&self.storage, &k, to, MoveReason::Demotion, policy)? {
                moves.push(m);
            }
        }
        // Homes now fit; evict streamed copies until homes + copies fit too.
        st.evict_for(&self.storage, tier, 0, None, policy)?;
        Ok(moves)
    }

    /// Keeps `bytes` of `tier` out of planning, for streamed copies (e.g. the pipeline's slots).
    /// Takes effect at the next re-plan or capacity change.
    pub fn set_streaming_reserve(&self, tier: TierId, bytes: u64) -> Result<(), CacheError> {
        let mut st = self.state.lock();
        st.check_tier(tier)?;
        st.tiers[tier.0].reserve = bytes;
        Ok(())
    }

    /// Records a measured transfer from `tier` (`bytes` in `elapsed`) into the tier's bandwidth
    /// estimate (exponential moving average, [`CacheOptions::bandwidth_smoothing`]). If the
    /// estimate now differs from the one the last plan used by more than
    /// [`CacheOptions::replan_threshold`], re-plans and returns the moves.
    pub fn record_bandwidth(
        &self,
        tier: TierId,
        bytes: u64,
        elapsed: Duration,
    ) -> Result<BandwidthUpdate<K>, CacheError> {
        let mut st = self.state.lock();
        st.check_tier(tier)?;
        let secs = elapsed.as_secs_f64();
        if bytes == 0 || secs <= 0.0 {
            return Err(CacheError::InvalidMeasurement {
                tier_name: st.tiers[tier.0].spec.name.clone(),
                reason: format!(
                    "need bytes > 0 and a duration > 0, got {bytes} bytes in {elapsed:?}"
                ),
            });
        }
        let sample = bytes as f64 / secs;
        let alpha = self.options.bandwidth_smoothing;
        let ts = &mut st.tiers[tier.0];
        let estimate = alpha * sample + (1.0 - alpha) * ts.spec.bandwidth;
        ts.spec.bandwidth = estimate;
        let drift = (estimate - ts.planned_bandwidth).abs() / ts.planned_bandwidth;
        st.stats.tier_mut(tier).bandwidth_samples += 1;
        let (replanned, moves) = if drift > self.options.replan_threshold {
            (true, self.replan_locked(&mut st)?)
        } else {
            (false, Vec::new())
        };
        Ok(BandwidthUpdate {
            sample,
            estimate,
            replanned,
            moves,
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.state.lock().stats.clone()
    }

    /// The tiers with current capacities and bandwidth estimates.
    pub fn tiers(&self) -> Vec<Tier> {
        self.state
            .lock()
            .tiers
            .iter()
            .map(|t| t.spec.clone())
            .collect()
    }

    /// Bytes in use in `tier` (homes plus streamed copies); 0 for an unknown tier.
    pub fn used_bytes(&self, tier: TierId) -> u64 {
        self.state.lock().tiers.get(tier.0).map_or(0, |t| t.used())
    }

    /// Bytes of homes in `tier`; 0 for an unknown tier.
    pub fn home_bytes(&self, tier: TierId) -> u64 {
        self.state
            .lock()
            .tiers
            .get(tier.0)
            .map_or(0, |t| t.home_bytes)
    }

    /// The home tier of `key`.
    pub fn home_of(&self, key: &K) -> Option<TierId> {
        self.state.lock().entries.get(key).map(|e| e.home)
    }

    /// The home allocation of `key` and its tier.
    pub fn home_handle(&self, key: &K) -> Option<(TierId, S::Handle)> {
        self.state
            .lock()
            .entries
            .get(key)
            .map(|e| (e.home, e.handle.clone()))
    }

    /// Every allocation holding `key`: home and streamed copies.
    pub fn residency(&self, key: &K) -> Option<Residency<S::Handle>> {
        self.state.lock().entries.get(key).map(|e| Residency {
            home: (e.home, e.handle.clone()),
            copies: e
                .copies
                .iter()
                .map(|c| (c.tier, c.handle.clone()))
                .collect(),
        })
    }

    /// Tiers holding streamed copies of `key` (not its home).
    pub fn copies_of(&self, key: &K) -> Vec<TierId> {
        self.state
            .lock()
            .entries
            .get(key)
            .map(|e| e.copies.iter().map(|c| c.tier).collect())
            .unwrap_or_default()
    }

    /// Keys whose home is `tier`, in key order.
    pub fn homes_in(&self, tier: TierId) -> Vec<K> {
        self.state
            .lock()
            .entries
            .iter()
            .filter(|(_, e)| e.home == tier)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    /// Whether the cache holds no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
