//! Keeping the layer placement beside the KV the running sequences hold: `tier-cache`'s runtime
//! cache ([`TierCache`]) holds every running layer as an item with its home (device, pinned
//! RAM, storage); when the sequences need more KV than planned the device tier shrinks and the
//! cache demotes the least valuable resident layers to pinned RAM (or storage), and when they
//! need less it grows and the cache promotes layers back, instead of refusing work. The cache
//! keeps the books; whoever applies a [`LayerMove`] moves the bytes (upload or free a resident
//! buffer, re-route the layer's pipeline source).

use std::convert::Infallible;

use tier_cache::{CacheError, CacheOptions, Item, Storage, Tier, TierCache, TierId};

use super::error::{EngineError, Result};
use super::plan::{Home, Plan};

/// A storage that only keeps the books: the engine moves the bytes itself.
#[derive(Debug, Default, Clone, Copy)]
struct Ledger;

impl Storage for Ledger {
    type Handle = ();
    type Error = Infallible;

    fn allocate(&self, _tier: TierId, _bytes: u64) -> std::result::Result<(), Infallible> {
        Ok(())
    }

    fn free(&self, _tier: TierId, _handle: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }

    fn copy(
        &self,
        _src_tier: TierId,
        _src: &(),
        _dst_tier: TierId,
        _dst: &(),
        _bytes: u64,
    ) -> std::result::Result<(), Infallible> {
        Ok(())
    }
}

/// One layer changing home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMove {
    /// The layer.
    pub layer: usize,
    /// Where it lived.
    pub from: Home,
    /// Where it lives now.
    pub to: Home,
    /// Its bytes.
    pub bytes: u64,
}

const HOMES: [Home; 3] = [Home::Device, Home::Pinned, Home::Storage];

fn cache_err(e: CacheError) -> EngineError {
    EngineError::Usage(format!("rebalancing the layers around the KV pool: {e}"))
}

/// The layers' homes kept fitting beside the KV in use.
pub struct KvRebalancer {
    cache: TierCache<usize, Ledger>,
    room: u64,
    kv: u64,
    n_layers: usize,
}

impl std::fmt::Debug for KvRebalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvRebalancer")
            .field("room", &self.room)
            .field("kv", &self.kv)
            .finish_non_exhaustive()
    }
}

impl KvRebalancer {
    /// Starts from `plan`'s homes: `room` device bytes hold the resident layers and the KV
    /// (`planned_kv` of it at the start); `ram` bytes of pinned RAM; `bandwidth` as the plan's
    /// (device, pinned RAM, storage; bytes/s).
    pub fn new(
        plan: &Plan,
        layer_bytes: &[u64],
        room: u64,
        planned_kv: u64,
        ram: u64,
        bandwidth: [f64; 3],
    ) -> Result<Self> {
        let tiers = vec![
            Tier::new("device", room.saturating_sub(planned_kv), bandwidth[0]),
            Tier::new("pinned RAM", ram, bandwidth[1]),
            Tier::unlimited("storage", bandwidth[2]),
        ];
        let cache = TierCache::new(tiers, Ledger, CacheOptions::default()).map_err(cache_err)?;
        for (i, home) in plan.homes.iter().enumerate() {
            let Some(t) = HOMES.iter().position(|h| h == home) else {
                continue; // skipped: never read, takes no room
            };
            let bytes = layer_bytes.get(i).copied().unwrap_or(0);
            // The plan's resident layers weigh more: they leave the device last and come back
            // first, so the KV shrinking to its planned size restores the plan's placement
            // (which spreads resident layers to hide the streamed ones' copies).
            let weight = if *home == Home::Device { 2.0 } else { 1.0 };
            cache
                .insert(Item::new(i, bytes, weight), TierId(t), ())
                .map_err(cache_err)?;
        }
        Ok(Self {
            cache,
            room,
            kv: planned_kv,
            n_layers: plan.homes.len(),
        })
    }

    /// The running sequences now hold `kv` bytes of KV on the device: shrinks or grows the
    /// room for resident layers to `room - kv`, demoting or promoting layers. Fails (and
    /// changes nothing) when even with no resident layer the KV does not fit.
    pub fn update(&mut self, kv: u64) -> Result<Vec<LayerMove>> {
        if kv > self.room {
            return Err(EngineError::Usage(format!(
                "the running sequences need {} of KV, more than the {} of device memory for layers and KV: finish or cancel sequences",
                super::budget::show(kv),
                super::budget::show(self.room)
            )));
        }
        let moves = self
            .cache
            .set_capacity(TierId(0), self.room - kv)
            .map_err(cache_err)?;
        self.kv = kv;
        Ok(moves
            .into_iter()
            .filter(|m| m.from != m.to)
            .map(|m| LayerMove {
                layer: m.key,
                from: HOMES[m.from.0.min(2)],
                to: HOMES[m.to.0.min(2)],
                bytes: m.bytes,
            })
            .collect())
    }

    /// Every layer's home now (skipped layers as [`Home::Skipped`]).
    pub fn homes(&self) -> Vec<Home> {
        (0..self.n_layers)
            .map(|i| {
                self.cache
                    .home_of(&i)
                    .map_or(Home::Skipped, |t| HOMES[t.0.min(2)])
            })
            .collect()
    }

    /// Device bytes for the resident layers and the KV together.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// Bytes of KV the books hold room for now.
    pub fn kv(&self) -> u64 {
        self.kv
    }

    /// Bytes of the layers resident on the device now.
    pub fn device_layer_bytes(&self) -> u64 {
        self.cache.home_bytes(TierId(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{plan, PlanInput};

    fn input() -> PlanInput {
        PlanInput {
            layer_bytes: vec![100; 10],
            skipped: vec![4],
            device_budget: 50 + 200 + 100 + 500,
            device_fixed: 50,
            ram_budget: 250,
            slots: 2,
            ctx: 64,
            max_seqs: 4,
            kv_per_layer: 100 / 9 + 1,
            kv_value_bytes: 2,
            kv_dim: 1,
            bandwidth: [1000.0, 100.0, 10.0],
            pin_first: 0,
        }
    }

    #[test]
    fn more_kv_demotes_layers_and_less_promotes_them_without_losing_any() {
        let i = input();
        let p = plan(&i).unwrap();
        let kv = p.kv_pool_bytes; // 9 running layers x 12 = 108
        let room = i.device_budget - i.device_fixed - 2 * 100;
        let resident0 = p.layers(Home::Device).len();
        assert_eq!(resident0, ((room - kv) / 100) as usize);
        let mut r =
            KvRebalancer::new(&p, &i.layer_bytes, room, kv, i.ram_budget, i.bandwidth).unwrap();
        assert_eq!(r.homes(), p.homes);
        // The sequences need 250 more bytes of KV: three layers leave the device.
        let moves = r.update(kv + 250).unwrap();
        let down: Vec<&LayerMove> = moves.iter().filter(|m| m.from == Home::Device).collect();
        assert!(!down.is_empty(), "{moves:?}");
        assert!(r.device_layer_bytes() + kv + 250 <= room);
        assert_eq!(
            r.homes().iter().filter(|h| **h == Home::Device).count(),
            ((room - kv - 250) / 100) as usize
        );
        // Every running layer still has a home; the skipped one has none.
        let homes = r.homes();
        assert_eq!(homes[4], Home::Skipped);
        assert!(homes
            .iter()
            .enumerate()
            .all(|(k, h)| k == 4 || *h != Home::Skipped));
        // Pinned RAM never over-filled.
        let pinned = homes.iter().filter(|h| **h == Home::Pinned).count() as u64 * 100;
        assert!(pinned <= i.ram_budget);
        // Back to the planned KV: the plan's resident layers again (which streamed layers
        // stay in pinned RAM may differ: they weigh the same).
        r.update(kv).unwrap();
        let device =
            |h: &[Home]| -> Vec<usize> { (0..h.len()).filter(|&k| h[k] == Home::Device).collect() };
        assert_eq!(device(&r.homes()), device(&p.homes));
        r.update(kv + 250).unwrap();
        // The sequences finish: the KV shrinks to nothing and layers come back.
        let moves = r.update(0).unwrap();
        assert!(moves.iter().any(|m| m.to == Home::Device), "{moves:?}");
        assert_eq!(
            r.homes().iter().filter(|h| **h == Home::Device).count(),
            (room / 100) as usize
        );
        // More KV than the whole room: a typed refusal that changes nothing.
        let before = r.homes();
        assert!(matches!(r.update(room + 1), Err(EngineError::Usage(_))));
        assert_eq!(r.homes(), before);
    }
}
