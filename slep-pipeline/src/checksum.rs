//! The streaming checksum that the GPU test computes on the device and the host computes on the
//! file: order- and position-sensitive, so dropped, duplicated, shifted or reordered chunks change
//! it.
//!
//! Definition, for the item at schedule position `i` with bytes `b` (`len` bytes):
//! - split `b` into little-endian `u32` words, the last one zero-padded;
//! - word `k` contributes `mix(word, (i << 40) + k)`, and the length contributes
//!   `mix(len, (i << 40) | (1 << 39))`;
//! - `mix(w, p) = splitmix64-finaliser(w ^ (p * 0x9E3779B97F4A7C15))`;
//! - all contributions are added with wrapping `u64` arithmetic; a stream's checksum is the
//!   wrapping sum of its items' checksums.

/// Golden-ratio multiplier applied to a word's position.
pub const POSITION_MULT: u64 = 0x9E37_79B9_7F4A_7C15;
/// The finaliser's first multiplier.
pub const FINAL_MULT_1: u64 = 0xBF58_476D_1CE4_E5B9;
/// The finaliser's second multiplier.
pub const FINAL_MULT_2: u64 = 0x94D0_49BB_1331_11EB;
/// Entry point of [`KERNEL_SOURCE`].
pub const KERNEL_NAME: &str = "slep_checksum";

/// CUDA C source of the checksum kernel: adds one item's checksum into `*out` (`atomicAdd`).
/// Arguments: `(const unsigned char* data, unsigned long long len, unsigned long long item,
/// unsigned long long* out)`; any grid shape works (grid-stride loop, warp-shuffle reduction).
pub const KERNEL_SOURCE: &str = r#"
__device__ __forceinline__ unsigned long long slep_mix(unsigned long long w, unsigned long long p) {
    unsigned long long x = w ^ (p * 0x9E3779B97F4A7C15ULL);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

extern "C" __global__ void slep_checksum(const unsigned char* data, unsigned long long len,
                                         unsigned long long item, unsigned long long* out) {
    const unsigned long long words = (len + 3ULL) / 4ULL;
    const unsigned long long full = len / 4ULL;
    const unsigned long long base = item << 40;
    const unsigned int* w32 = (const unsigned int*)data;
    unsigned long long acc = 0ULL;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < words; k += stride) {
        unsigned long long w = 0ULL;
        if (k < full) {
            w = w32[k];
        } else {
            for (unsigned long long b = k * 4ULL; b < len; ++b) {
                w |= (unsigned long long)data[b] << (8ULL * (b - k * 4ULL));
            }
        }
        acc += slep_mix(w, base + k);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        acc += slep_mix(len, base | (1ULL << 39));
    }
    for (int off = 16; off > 0; off >>= 1) {
        acc += __shfl_down_sync(0xffffffffu, acc, off);
    }
    if ((threadIdx.x & 31u) == 0u) {
        atomicAdd(out, acc);
    }
}
"#;

/// `mix(w, p)` of the definition.
pub fn mix(word: u64, position: u64) -> u64 {
    let x = word ^ position.wrapping_mul(POSITION_MULT);
    let x = (x ^ (x >> 30)).wrapping_mul(FINAL_MULT_1);
    let x = (x ^ (x >> 27)).wrapping_mul(FINAL_MULT_2);
    x ^ (x >> 31)
}

/// The checksum of the item at schedule position `index` holding `bytes`.
pub fn item_checksum(index: u64, bytes: &[u8]) -> u64 {
    let base = index << 40;
    let mut acc = mix(bytes.len() as u64, base | (1 << 39));
    let mut words = bytes.chunks_exact(4);
    let mut k = 0u64;
    for w in &mut words {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        acc = acc.wrapping_add(mix(u64::from(w), base.wrapping_add(k)));
        k += 1;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut pad = [0u8; 4];
        pad[..tail.len()].copy_from_slice(tail);
        acc = acc.wrapping_add(mix(
            u64::from(u32::from_le_bytes(pad)),
            base.wrapping_add(k),
        ));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition written out independently: bytes assembled into words by shifting, the
    /// splitmix64 finaliser spelled out step by step.
    fn naive(index: u64, bytes: &[u8]) -> u64 {
        fn finalise(w: u64, p: u64) -> u64 {
            let z = w ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        let mut sum = finalise(bytes.len() as u64, (index << 40) + (1 << 39));
        let n_words = bytes.len().div_ceil(4);
        for k in 0..n_words {
            let mut w = 0u64;
            for j in 0..4 {
                if let Some(&b) = bytes.get(4 * k + j) {
                    w += u64::from(b) << (8 * j);
                }
            }
            sum = sum.wrapping_add(finalise(w, (index << 40) + k as u64));
        }
        sum
    }

    #[test]
    fn matches_naive_definition_for_all_tail_lengths() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in (0..70).chain([1023, 4096, 65_537]) {
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            for index in [0u64, 1, 5, 1 << 20] {
                assert_eq!(
                    item_checksum(index, &bytes),
                    naive(index, &bytes),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn splitmix_finaliser_known_value() {
        // splitmix64 (Steele, Lea, Flood 2014; Vigna's reference C) seeded with 0 first outputs
        // 0xE220A8397B1DCDAF: its state after one step is the golden constant, i.e. mix(0, 1).
        assert_eq!(mix(0, 1), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn detects_reordering_dropping_and_shifting() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let b: Vec<u8> = (0..1000u32).map(|i| (i * 13 + 1) as u8).collect();
        let in_order = item_checksum(0, &a).wrapping_add(item_checksum(1, &b));
        let swapped = item_checksum(0, &b).wrapping_add(item_checksum(1, &a));
        assert_ne!(in_order, swapped);
        assert_ne!(in_order, item_checksum(0, &a));
        assert_ne!(item_checksum(0, &a), item_checksum(0, &a[1..]));
        assert_ne!(
            item_checksum(0, &a),
            item_checksum(0, &[&a[..], &[0]].concat())
        );
    }
}
