//! The cache's internal state and the operations on it (called with the cache lock held).

use std::collections::BTreeMap;

use crate::cache::{Access, Eviction, Move, MoveReason};
use crate::cost::item_cost;
use crate::error::{CacheError, PlanError};
use crate::item::{Constraint, Item};
use crate::placement::{Placement, PlanMethod};
use crate::planner::{Key, PlanOptions, Planner};
use crate::stats::Stats;
use crate::storage::Storage;
use crate::tier::{Tier, TierId};

/// A streamed (non-home) copy of an item.
pub(crate) struct CachedCopy<H> {
    pub tier: TierId,
    pub handle: H,
    pub last_use: u64,
}

/// One item: its home copy and any streamed copies.
pub(crate) struct Entry<K, H> {
    pub item: Item<K>,
    pub home: TierId,
    pub handle: H,
    pub copies: Vec<CachedCopy<H>>,
}

/// One tier's live state.
pub(crate) struct TierState {
    pub spec: Tier,
    /// Bandwidth the last plan used.
    pub planned_bandwidth: f64,
    /// Bytes kept out of planning for streamed copies.
    pub reserve: u64,
    pub home_bytes: u64,
    pub cached_bytes: u64,
}

impl TierState {
    pub fn used(&self) -> u64 {
        self.home_bytes.saturating_add(self.cached_bytes)
    }
    pub fn free(&self) -> u64 {
        self.spec.capacity.saturating_sub(self.used())
    }
}

pub(crate) struct State<K, H> {
    pub tiers: Vec<TierState>,
    pub entries: BTreeMap<K, Entry<K, H>>,
    pub clock: u64,
    pub stats: Stats,
    pub method: PlanMethod,
}

fn storage_err<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    item: &impl std::fmt::Debug,
    tier: &Tier,
    e: E,
) -> CacheError {
    CacheError::Storage {
        operation,
        item: format!("{item:?}"),
        tier_name: tier.name.clone(),
        source: Box::new(e),
    }
}

impl<K: Key, H: Clone> State<K, H> {
    pub fn check_tier(&self, tier: TierId) -> Result<(), CacheError> {
        if tier.0 < self.tiers.len() {
            Ok(())
        } else {
            Err(CacheError::UnknownTier {
                tier: tier.0,
                tiers: self.tiers.len(),
            })
        }
    }

    /// Evicts streamed copies from `tier` (never `exclude`'s) until `need` bytes are free.
    /// Returns false, evicting nothing, when even evicting all of them would not be enough.
    pub fn evict_for<S: Storage<Handle = H>>(
        &mut self,
        storage: &S,
        tier: TierId,
        need: u64,
        exclude: Option<&K>,
        policy: Eviction,
    ) -> Result<bool, CacheError> {
        let over = |ts: &TierState| -> u128 {
            (u128::from(ts.used()) + u128::from(need)).saturating_sub(u128::from(ts.spec.capacity))
        };
        if over(&self.tiers[tier.0]) == 0 {
            return Ok(true);
        }
        // (order, key) of every evictable copy in this tier.
        let mut cands: Vec<(f64, u64, K, u64)> = Vec::new();
        for (k, e) in &self.entries {
            if Some(k) == exclude {
                continue;
            }
            for c in e.copies.iter().filter(|c| c.tier == tier) {
                let value = match policy {
                    Eviction::Lru => 0.0,
                    // What re-fetching it from home would cost per byte.
                    Eviction::PlanAware => {
                        item_cost(&self.tiers[e.home.0].spec, e.item.size, e.item.weight)
                            / e.item.size.max(1) as f64
                    }
                };
                cands.push((value, c.last_use, k.clone(), e.item.size));
            }
        }
        let evictable: u128 = cands.iter().map(|c| u128::from(c.3)).sum();
        if evictable < over(&self.tiers[tier.0]) {
            return Ok(false);
        }
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, _, key, _) in cands {
            if over(&self.tiers[tier.0]) == 0 {
                break;
            }
            self.evict_copy(storage, &key, tier)?;
        }
        Ok(true)
    }

    /// Drops the streamed copy of `key` in `tier`.
    pub fn evict_copy<S: Storage<Handle = H>>(
        &mut self,
        storage: &S,
        key: &K,
        tier: TierId,
    ) -> Result<(), CacheError> {
        let Some(e) = self.entries.get_mut(key) else {
            return Ok(());
        };
        let Some(pos) = e.copies.iter().position(|c| c.tier == tier) else {
            return Ok(());
        };
        let copy = e.copies.swap_remove(pos);
        let size = e.item.size;
        let ts = &mut self.tiers[tier.0];
        ts.cached_bytes = ts.cached_bytes.saturating_sub(size);
        self.stats.tier_mut(tier).evictions += 1;
        storage
            .free(tier, copy.handle)
            .map_err(|err| storage_err("free", key, &self.tiers[tier.0].spec, err))
    }

    /// Makes `tier` hold a copy of `key` (see `TierCache::ensure`).
    pub fn ensure<S: Storage<Handle = H>>(
        &mut self,
        storage: &S,
        key: &K,
        tier: TierId,
        policy: Eviction,
    ) -> Result<Access<H>, CacheError> {
        self.check_tier(tier)?;
        self.clock += 1;
        let clock = self.clock;
        let e = self
            .entries
            .get_mut(key)
            .ok_or_else(|| CacheError::UnknownKey {
                item: format!("{key:?}"),
            })?;
        if e.home == tier {
            self.stats.tier_mut(tier).hits += 1;
            return Ok(Access {
                tier,
                handle: e.handle.clone(),
                hit: true,
                source: None,
            });
        }
        if let Some(c) = e.copies.iter_mut().find(|c| c.tier == tier) {
            c.last_use = clock;
            let handle = c.handle.clone();
            self.stats.tier_mut(tier).hits += 1;
            return Ok(Access {
                tier,
                handle,
                hit: true,
                source: None,
            });
        }
        let size = e.item.size;
        // Read from the fastest place that holds it.
        let mut src = (e.home, e.handle.clone());
        for c in &e.copies {
            if self.tiers[c.tier.0].spec.read_seconds(size)
                < self.tiers[src.0 .0].spec.read_seconds(size)
            {
                src = (c.tier, c.handle.clone());
            }
        }
        if !self.evict_for(storage, tier, size, Some(key), policy)? {
            let free = self.tiers[tier.0].free();
            return Err(CacheError::NoStreamingRoom {
                item: format!("{key:?}"),
                tier_name: self.tiers[tier.0].spec.name.clone(),
                size,
                free,
            });
        }
        let spec = &self.tiers[tier.0].spec;
        let handle = storage
            .allocate(tier, size)
            .map_err(|err| storage_err("allocate", key, spec, err))?;
        if let Err(err) = storage.copy(src.0, &src.1, tier, &handle, size) {
            let _ = storage.free(tier, handle);
            return Err(storage_err("copy", key, spec, err));
        }
        self.tiers[tier.0].cached_bytes += size;
        self.stats.tier_mut(tier).misses += 1;
        self.stats.tier_mut(tier).bytes_in += size;
        self.stats.tier_mut(src.0).bytes_out += size;
        if let Some(e) = self.entries.get_mut(key) {
            e.copies.push(CachedCopy {
                tier,
                handle: handle.clone(),
                last_use: clock,
            });
        }
        Ok(Access {
            tier,
            handle,
            hit: false,
            source: Some(src.0),
        })
    }

    /// Whether `key`'s home can move to `to` now (evicting streamed copies there if needed).
    fn can_move(&self, key: &K, to: TierId) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        e.copies.iter().any(|c| c.tier == to)
            || self.tiers[to.0]
                .spec
                .capacity
                .saturating_sub(self.tiers[to.0].home_bytes)
                >= e.item.size
    }

    /// Moves `key`'s home to `to`: reuses a streamed copy there, or allocates, copies and frees.
    pub fn move_home<S: Storage<Handle = H>>(
        &mut self,
        storage: &S,
        key: &K,
        to: TierId,
        reason: MoveReason,
        policy: Eviction,
    ) -> Result<Option<Move<K>>, CacheError> {
        let (from, size, old_handle, copy_pos) = match self.entries.get(key) {
            None => {
                return Err(CacheError::UnknownKey {
                    item: format!("{key:?}"),
                })
            }
            Some(e) => (
                e.home,
                e.item.size,
                e.handle.clone(),
                e.copies.iter().position(|c| c.tier == to),
            ),
        };
        if from == to {
            return Ok(None);
        }
        let new_handle = match copy_pos {
            Some(pos) => {
                let Some(e) = self.entries.get_mut(key) else {
                    return Ok(None);
                };
                let copy = e.copies.swap_remove(pos);
                let ts = &mut self.tiers[to.0];
                ts.cached_bytes = ts.cached_bytes.saturating_sub(size);
                copy.handle
            }
            None => {
                if !self.evict_for(storage, to, size, Some(key), policy)? {
                    return Err(CacheError::CannotDemote {
                        item: format!("{key:?}"),
                        tier_name: self.tiers[from.0].spec.name.clone(),
                        size,
                    });
                }
                let spec = &self.tiers[to.0].spec;
                let h = storage
                    .allocate(to, size)
                    .map_err(|err| storage_err("allocate", key, spec, err))?;
                if let Err(err) = storage.copy(from, &old_handle, to, &h, size) {
                    let _ = storage.free(to, h);
                    return Err(storage_err("copy", key, spec, err));
                }
                self.stats.tier_mut(to).bytes_in += size;
                self.stats.tier_mut(from).bytes_out += size;
                h
            }
        };
        self.tiers[to.0].home_bytes += size;
        self.tiers[from.0].home_bytes = self.tiers[from.0].home_bytes.saturating_sub(size);
        if let Some(e) = self.entries.get_mut(key) {
            e.home = to;
            e.handle = new_handle;
        }
        self.stats.moves += 1;
        if to > from {
            self.stats.tier_mut(from).demotions += 1;
        } else {
            self.stats.tier_mut(to).promotions += 1;
        }
        storage
            .free(from, old_handle)
            .map_err(|err| storage_err("free", key, &self.tiers[from.0].spec, err))?;
        Ok(Some(Move {
            key: key.clone(),
            from,
            to,
            bytes: size,
            reason,
        }))
    }

    /// The placement the planner would choose now (capacities minus streaming reserves,
    /// current bandwidth estimates).
    pub fn plan(&self, options: &PlanOptions) -> Result<Placement<K>, PlanError> {
        let tiers: Vec<Tier> = self
            .tiers
            .iter()
            .map(|t| {
                let mut spec = t.spec.clone();
                spec.capacity = spec.capacity.saturating_sub(t.reserve);
                spec
            })
            .collect();
        let items: Vec<Item<K>> = self.entries.values().map(|e| e.item.clone()).collect();
        Planner::new(tiers)?
            .with_options(options.clone())
            .plan(&items)
    }

    /// Moves every home to its target, never over-filling a tier: moves whose destination has
    /// room go first; when only cycles remain, one item steps aside to the slowest allowed tier
    /// with room.
    pub fn apply<S: Storage<Handle = H>>(
        &mut self,
        storage: &S,
        targets: Vec<(K, TierId)>,
        policy: Eviction,
    ) -> Result<Vec<Move<K>>, CacheError> {
        let mut pending: Vec<(K, TierId)> = targets
            .into_iter()
            .filter(|(k, t)| self.entries.get(k).is_some_and(|e| e.home != *t))
            .collect();
        let mut moves = Vec::new();
        let mut detours = 0usize;
        let max_detours = pending.len().saturating_mul(self.tiers.len() + 1);
        while !pending.is_empty() {
            if let Some(pos) = pending.iter().position(|(k, t)| self.can_move(k, *t)) {
                let (k, t) = pending.swap_remove(pos);
                if let Some(m) = self.move_home(storage, &k, t, MoveReason::Replan, policy)? {
                    moves.push(m);
                }
                continue;
            }
            // Only cycles left: step one item aside.
            detours += 1;
            let mut stepped = false;
            if detours <= max_detours {
                'outer: for (k, target) in &pending {
                    let Some(e) = self.entries.get(k) else {
                        continue;
                    };
                    let (home, item) = (e.home, e.item.clone());
                    for u in (0..self.tiers.len()).rev() {
                        let u = TierId(u);
                        if u != home && u != *target && item.allows(u) && self.can_move(k, u) {
                            let k = k.clone();
                            if let Some(m) =
                                self.move_home(storage, &k, u, MoveReason::Detour, policy)?
                            {
                                moves.push(m);
                            }
                            stepped = true;
                            break 'outer;
                        }
                    }
                }
            }
            if !stepped {
                let (k, _) = &pending[0];
                let (home, size) = self
                    .entries
                    .get(k)
                    .map(|e| (e.home, e.item.size))
                    .unwrap_or((TierId(0), 0));
                return Err(CacheError::CannotDemote {
                    item: format!("{k:?}"),
                    tier_name: self.tiers[home.0].spec.name.clone(),
                    size,
                });
            }
        }
        Ok(moves)
    }

    /// Which homes to demote (least valuable first) so that homes in `tier` fit in `limit`.
    /// Computed without touching anything; fails if it cannot be done.
    pub fn demotions(&self, tier: TierId, limit: u64) -> Result<Vec<(K, TierId)>, CacheError> {
        let nt = self.tiers.len();
        let mut homes: Vec<u64> = self.tiers.iter().map(|t| t.home_bytes).collect();
        let pinned: Vec<(&K, &Entry<K, H>)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.home == tier && e.item.pinned_tier() == Some(tier))
            .collect();
        let pinned_bytes = pinned
            .iter()
            .fold(0u64, |a, (_, e)| a.saturating_add(e.item.size));
        if pinned_bytes > limit {
            let item = pinned
                .first()
                .map(|(k, _)| format!("{k:?}"))
                .unwrap_or_default();
            return Err(CacheError::ShrinkBelowPinned {
                tier_name: self.tiers[tier.0].spec.name.clone(),
                requested: limit,
                pinned: pinned_bytes,
                item,
                constraint: Constraint::PinTo(tier).to_string(),
            });
        }
        // Loss per byte if demoted to the next slower allowed tier; lowest first.
        let mut cands: Vec<(f64, &K, &Entry<K, H>)> = Vec::new();
        for (k, e) in &self.entries {
            if e.home != tier || e.item.pinned_tier() == Some(tier) {
                continue;
            }
            let here = item_cost(&self.tiers[tier.0].spec, e.item.size, e.item.weight);
            let next = (tier.0 + 1..nt)
                .find(|&u| e.item.allows(TierId(u)))
                .map(|u| item_cost(&self.tiers[u].spec, e.item.size, e.item.weight));
            let loss = next.map_or(f64::INFINITY, |c| (c - here) / e.item.size.max(1) as f64);
            cands.push((loss, k, e));
        }
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)));
        let mut out = Vec::new();
        let mut stuck: Option<(&K, u64)> = None;
        for (_, k, e) in cands {
            if homes[tier.0] <= limit {
                break;
            }
            let size = e.item.size;
            let dest = (tier.0 + 1..nt).map(TierId).find(|&u| {
                e.item.allows(u)
                    && homes[u.0].saturating_add(size)
                        <= self.tiers[u.0]
                            .spec
                            .capacity
                            .saturating_sub(self.tiers[u.0].reserve)
            });
            match dest {
                Some(u) => {
                    homes[u.0] += size;
                    homes[tier.0] -= size;
                    out.push((k.clone(), u));
                }
                None => stuck = stuck.or(Some((k, size))),
            }
        }
        if homes[tier.0] > limit {
            let (item, size) = stuck
                .map(|(k, s)| (format!("{k:?}"), s))
                .unwrap_or_default();
            return Err(CacheError::CannotDemote {
                item,
                tier_name: self.tiers[tier.0].spec.name.clone(),
                size,
            });
        }
        Ok(out)
    }
}
