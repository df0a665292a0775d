// Tensor-core GEMM for batched tokens: Y[n][rows] (+)= X[n][cols] . W^T, with W read in place
// as ggml blocks (rows of `cols` elements) and X given as f16 (IEEE half bits).
//
// Each CTA computes a BM (weight rows) x BN (tokens) tile of Y^T = W . X^T with mma.sync
// m16n8k16 (f16 inputs, f32 accumulation). The K loop walks 32 columns at a time (one ggml
// sub-block): every thread decodes 16 weights of one row into f16 registers, the tile goes to
// shared memory (double buffered, one barrier per step), and the next step's weights and
// activations are fetched while the current step's mma run.
//
// Shared rows are padded to GM_LDS halfs (80 bytes): ldmatrix row addresses stay 16-byte
// aligned and the 8 rows of each 8x8 matrix fall in distinct banks.

#define GM_BK 32
#define GM_LDS 40

__device__ __forceinline__ u32 gm_pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// 16 bytes from any byte address, as 4 little-endian words. Unaligned addresses read the
// aligned words covering the range (never a word past the one holding the last byte).
__device__ __forceinline__ void gm_ld16(const u8* p, u32* o) {
    const size_t a = (size_t)p;
    if ((a & 15) == 0) {
        const uint4 v = *(const uint4*)p;
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    } else if ((a & 3) == 0) {
        const u32* q = (const u32*)p;
        o[0] = q[0]; o[1] = q[1]; o[2] = q[2]; o[3] = q[3];
    } else {
        const u32* q = (const u32*)(a & ~(size_t)3);
        const u32 sh = (u32)(a & 3) * 8;
        u32 x[5];
#pragma unroll
        for (int i = 0; i < 5; ++i) x[i] = q[i];
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i] = __funnelshift_r(x[i], x[i + 1], sh);
    }
}

__device__ __forceinline__ int gm_byte(const u32* w, int i) {
    return (int)((w[i >> 2] >> ((i & 3) * 8)) & 0xFFu);
}

// Bytes per row of `cols` elements of type T.
template <int T>
__device__ __forceinline__ size_t gm_row_bytes(int cols) {
    if (T == T_F32) return (size_t)cols * 4;
    if (T == T_F16 || T == T_BF16) return (size_t)cols * 2;
    if (T == T_Q4_K) return (size_t)(cols / 256) * 144;
    if (T == T_Q5_K) return (size_t)(cols / 256) * 176;
    if (T == T_Q6_K) return (size_t)(cols / 256) * 210;
    if (T == T_Q4_0) return (size_t)(cols / 32) * 18;
    if (T == T_Q4_1) return (size_t)(cols / 32) * 20;
    if (T == T_Q5_0) return (size_t)(cols / 32) * 22;
    return (size_t)(cols / 32) * 34;  // Q8_0
}

// Decoding 16 weights (elements k0 + 16 * hf .. + 16 of a row, k0 a multiple of 32) is split in
// two phases so the global loads of the next K step are in flight during the current step's
// mma: gm_load<T> only issues loads into GM_RAW words, gm_convert<T> turns them into 8 packed
// f16 pairs. (F32 weights convert while loading: they are never large GEMM operands.)
#define GM_RAW 12

__device__ __forceinline__ u32 gm_hdr16(const u8* p) {  // 2 bytes, any alignment
    return (u32)ld_u16(p);
}

template <int T>
__device__ __forceinline__ void gm_load(const u8* row, int k0, int hf, u32* r) {
    const int e0 = k0 + 16 * hf;
    if (T == T_F16 || T == T_BF16) {
        gm_ld16(row + 2 * (size_t)e0, r);
        gm_ld16(row + 2 * (size_t)e0 + 16, r + 4);
    } else if (T == T_F32) {
        u32 w[16];
#pragma unroll
        for (int i = 0; i < 4; ++i) gm_ld16(row + 4 * (size_t)e0 + 16 * i, w + 4 * i);
#pragma unroll
        for (int i = 0; i < 8; ++i) r[i] = gm_pack(__uint_as_float(w[2 * i]), __uint_as_float(w[2 * i + 1]));
    } else if (T == T_Q4_0) {
        const u8* b = row + (size_t)(k0 / 32) * 18;
        r[0] = gm_hdr16(b);
        gm_ld16(b + 2, r + 4);
    } else if (T == T_Q4_1) {
        const u8* b = row + (size_t)(k0 / 32) * 20;
        r[0] = gm_hdr16(b);
        r[1] = gm_hdr16(b + 2);
        gm_ld16(b + 4, r + 4);
    } else if (T == T_Q5_0) {
        const u8* b = row + (size_t)(k0 / 32) * 22;
        r[0] = gm_hdr16(b);
        r[1] = ld_u32(b + 2);
        gm_ld16(b + 6, r + 4);
    } else if (T == T_Q8_0) {
        const u8* b = row + (size_t)(k0 / 32) * 34;
        r[0] = gm_hdr16(b);
        gm_ld16(b + 2 + 16 * hf, r + 4);
    } else if (T == T_Q4_K || T == T_Q5_K) {
        const u8* b = row + (size_t)(k0 / 256) * (T == T_Q4_K ? 144 : 176);
        const int g = (k0 & 255) / 32;
        gm_ld16(b, r);  // d, dmin, 12 bytes of scales
        gm_ld16(b + (T == T_Q4_K ? 16 : 48) + (g >> 1) * 32 + 16 * hf, r + 4);
        if (T == T_Q5_K) gm_ld16(b + 16 + 16 * hf, r + 8);
    } else {  // Q6_K
        const u8* b = row + (size_t)(k0 / 256) * 210;
        const int g = (k0 & 255) / 32;
        const int hh = g >> 2;
        const int k = g & 3;
        r[0] = gm_hdr16(b + 208) | ((u32)b[192 + 2 * g + hf] << 16);
        gm_ld16(b + hh * 64 + (k & 1) * 32 + 16 * hf, r + 4);
        gm_ld16(b + 128 + hh * 32 + 16 * hf, r + 8);
    }
}

// Byte i (0..11) of the 12 scale bytes held in words s1, s2, s3 (no local-memory indexing).
__device__ __forceinline__ int gm_sbyte(u32 s1, u32 s2, u32 s3, int i) {
    const u32 w = i < 4 ? s1 : (i < 8 ? s2 : s3);
    return (int)((w >> ((i & 3) * 8)) & 0xFFu);
}

// float(q) - off for a small non-negative integer q, without the slow int-to-float unit:
// 2^23 + q built from its bits, minus (2^23 + off), both exact in f32.
__device__ __forceinline__ float gm_q2f(int q, float off) {
    return __int_as_float(0x4B000000 | q) - (8388608.0f + off);
}

template <int T>
__device__ __forceinline__ void gm_convert(const u32* r, int k0, int hf, u32* o) {
    if (T == T_F16) {
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = r[i];
    } else if (T == T_BF16) {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            o[i] = gm_pack(__uint_as_float(r[i] << 16), __uint_as_float(r[i] & 0xFFFF0000u));
    } else if (T == T_F32) {
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = r[i];
    } else if (T == T_Q4_0 || T == T_Q4_1) {
        const float d = half_bits_to_f32((u16)r[0]);
        const float m = T == T_Q4_1 ? half_bits_to_f32((u16)r[1]) : -8.0f * d;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = (gm_byte(r + 4, 2 * i) >> (4 * hf)) & 15;
            const int q1 = (gm_byte(r + 4, 2 * i + 1) >> (4 * hf)) & 15;
            o[i] = gm_pack(d * gm_q2f(q0, 0.0f) + m, d * gm_q2f(q1, 0.0f) + m);
        }
    } else if (T == T_Q5_0) {
        const float d = half_bits_to_f32((u16)r[0]);
        const u32 qh = r[1];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int j0 = 2 * i, j1 = 2 * i + 1;
            const int q0 = ((gm_byte(r + 4, j0) >> (4 * hf)) & 15) | (int)(((qh >> (16 * hf + j0)) & 1u) << 4);
            const int q1 = ((gm_byte(r + 4, j1) >> (4 * hf)) & 15) | (int)(((qh >> (16 * hf + j1)) & 1u) << 4);
            o[i] = gm_pack(d * gm_q2f(q0, 16.0f), d * gm_q2f(q1, 16.0f));
        }
    } else if (T == T_Q8_0) {
        const float d = half_bits_to_f32((u16)r[0]);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = gm_byte(r + 4, 2 * i) ^ 0x80;  // int8 + 128
            const int q1 = gm_byte(r + 4, 2 * i + 1) ^ 0x80;
            o[i] = gm_pack(d * gm_q2f(q0, 128.0f), d * gm_q2f(q1, 128.0f));
        }
    } else if (T == T_Q4_K || T == T_Q5_K) {
        const int g = (k0 & 255) / 32;
        const float d = half_bits_to_f32((u16)(r[0] & 0xFFFFu));
        const float dmin = half_bits_to_f32((u16)(r[0] >> 16));
        int sc, mn;
        if (g < 4) {
            sc = gm_sbyte(r[1], r[2], r[3], g) & 63;
            mn = gm_sbyte(r[1], r[2], r[3], g + 4) & 63;
        } else {
            const int a = gm_sbyte(r[1], r[2], r[3], g + 4);
            sc = (a & 0x0F) | ((gm_sbyte(r[1], r[2], r[3], g - 4) >> 6) << 4);
            mn = (a >> 4) | ((gm_sbyte(r[1], r[2], r[3], g) >> 6) << 4);
        }
        const float dl = d * (float)sc;
        const float ml = dmin * (float)mn;
        const int shift = (g & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q0 = (gm_byte(r + 4, 2 * i) >> shift) & 15;
            int q1 = (gm_byte(r + 4, 2 * i + 1) >> shift) & 15;
            if (T == T_Q5_K) {
                q0 |= ((gm_byte(r + 8, 2 * i) >> g) & 1) << 4;
                q1 |= ((gm_byte(r + 8, 2 * i + 1) >> g) & 1) << 4;
            }
            o[i] = gm_pack(dl * gm_q2f(q0, 0.0f) - ml, dl * gm_q2f(q1, 0.0f) - ml);
        }
    } else {  // Q6_K
        const int g = (k0 & 255) / 32;
        const int k = g & 3;
        const float d = half_bits_to_f32((u16)(r[0] & 0xFFFFu)) * (float)(i8)(r[0] >> 16);
        const int nib = (k >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = ((gm_byte(r + 4, 2 * i) >> nib) & 15) | (((gm_byte(r + 8, 2 * i) >> (2 * k)) & 3) << 4);
            const int q1 = ((gm_byte(r + 4, 2 * i + 1) >> nib) & 15) | (((gm_byte(r + 8, 2 * i + 1) >> (2 * k)) & 3) << 4);
            o[i] = gm_pack(d * gm_q2f(q0, 32.0f), d * gm_q2f(q1, 32.0f));
        }
    }
}

__device__ __forceinline__ u32 gm_smem(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void gm_ldmatrix_x4(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void gm_mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One CTA of the GEMM: tile (blockIdx.x: BM weight rows, blockIdx.y: BN tokens), K steps of
// split blockIdx.z (of gridDim.z).
//
// Split K in a fixed order: with more than one split, each CTA stores its partial sums in
// `part` (one BM x BN block per tile and split, split-major) and counts itself in `count[tile]`;
// the CTA that arrives last (whichever it is) adds the tile's partial sums in split order,
// p0 + p1 + ..., into y (added to y when accumulating) and zeroes the count for the next launch.
// So the same inputs give the same bits on every run. The host gives every launch on a stream
// the same scratch, so launches on one stream never share it at once.
template <int T, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void gemm_tile(const u8* __restrict__ w, int rows, int cols,
                                          const u16* __restrict__ x, int n,
                                          float* __restrict__ y, int accumulate,
                                          float* __restrict__ part, unsigned* __restrict__ count,
                                          u16* __restrict__ smem) {
    constexpr int NWM = BM / WM;
    constexpr int NTHREADS = 32 * NWM * (BN / WN);
    constexpr int MT = WM / 16;
    constexpr int NT = WN / 8;
    constexpr int WTASKS = (BM * 2 + NTHREADS - 1) / NTHREADS;
    constexpr int XTASKS = (BN * 4 + NTHREADS - 1) / NTHREADS;
    // Shared tiles: [2][BM * GM_LDS] weights, then [2][BN * GM_LDS] activations.
    u16* const wsm = smem;
    u16* const xsm = smem + 2 * BM * GM_LDS;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp % NWM;
    const int wn = warp / NWM;
    const int m0 = blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    const size_t rb = gm_row_bytes<T>(cols);
    const int ksteps = cols / GM_BK;
    const int per = (ksteps + gridDim.z - 1) / gridDim.z;
    const int kbeg = blockIdx.z * per;
    const int kend = min(ksteps, kbeg + per);
    // (The host never makes an empty split: every split takes part in the reduction below.)

    // This thread's weight rows / token rows (clamped: the tails load valid rows, unused).
    const u8* wrow[WTASKS];
#pragma unroll
    for (int i = 0; i < WTASKS; ++i) {
        const int task = min(tid + i * NTHREADS, BM * 2 - 1);
        wrow[i] = w + (size_t)min(m0 + (task >> 1), rows - 1) * rb;
    }
    const u16* xrow[XTASKS];
#pragma unroll
    for (int i = 0; i < XTASKS; ++i) {
        const int task = min(tid + i * NTHREADS, BN * 4 - 1);
        xrow[i] = x + (size_t)min(n0 + (task >> 2), n - 1) * cols + (task & 3) * 8;
    }

    u32 raw[WTASKS][GM_RAW];
    uint4 xr[XTASKS];
    auto load = [&](int kt) {
        const int k0 = kt * GM_BK;
#pragma unroll
        for (int i = 0; i < WTASKS; ++i) {
            const int task = min(tid + i * NTHREADS, BM * 2 - 1);
            gm_load<T>(wrow[i], k0, task & 1, raw[i]);
        }
#pragma unroll
        for (int i = 0; i < XTASKS; ++i) xr[i] = *(const uint4*)(xrow[i] + k0);
    };
    auto store = [&](int kt, int buf) {
        const int k0 = kt * GM_BK;
#pragma unroll
        for (int i = 0; i < WTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BM * 2) {
                u32 o[8];
                gm_convert<T>(raw[i], k0, task & 1, o);
                uint4* dst = (uint4*)(&wsm[buf * BM * GM_LDS + (task >> 1) * GM_LDS + (task & 1) * 16]);
                dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
                dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
            }
        }
#pragma unroll
        for (int i = 0; i < XTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BN * 4) *(uint4*)(&xsm[buf * BN * GM_LDS + (task >> 2) * GM_LDS + (task & 3) * 8]) = xr[i];
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int a = 0; a < MT; ++a)
#pragma unroll
        for (int b = 0; b < NT; ++b)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

    if (kbeg < kend) {  // uniform over the CTA
        load(kbeg);
        store(kbeg, 0);
        __syncthreads();
    }
    for (int kt = kbeg; kt < kend; ++kt) {
        const int cur = (kt - kbeg) & 1;
        // Next step's loads go out before this step's mma (the last step reloads itself).
        const int kn = min(kt + 1, kend - 1);
        load(kn);
#pragma unroll
        for (int ks = 0; ks < GM_BK / 16; ++ks) {
            u32 af[MT][4];
            u32 bf[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r = wm * WM + mt * 16 + (lane & 15);
                const int c = ks * 16 + (lane >> 4) * 8;
                gm_ldmatrix_x4(af[mt], gm_smem(&wsm[cur * BM * GM_LDS + r * GM_LDS + c]));
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                const int r = wn * WN + nt * 8 + (lane & 7) + (lane >> 4) * 8;
                const int c = ks * 16 + ((lane >> 3) & 1) * 8;
                u32 t4[4];
                gm_ldmatrix_x4(t4, gm_smem(&xsm[cur * BN * GM_LDS + r * GM_LDS + c]));
                bf[nt][0] = t4[0];
                bf[nt][1] = t4[1];
                bf[nt + 1][0] = t4[2];
                bf[nt + 1][1] = t4[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) gm_mma(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
        }
        // The other buffer was last read before the previous barrier: safe to overwrite.
        store(kn, cur ^ 1);
        __syncthreads();
    }

    const int g = lane >> 2;
    const int t2 = (lane & 3) * 2;
    if (gridDim.z == 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const int r = m0 + wm * WM + mt * 16 + g + (c >> 1) * 8;
                    const int t = n0 + wn * WN + nt * 8 + t2 + (c & 1);
                    if (r < rows && t < n) {
                        float* p = y + (size_t)t * rows + r;
                        *p = accumulate ? *p + acc[mt][nt][c] : acc[mt][nt][c];
                    }
                }
            }
        }
        return;
    }
    // Split K: this split's partial sums to the scratch, then the last CTA of the tile adds them.
    const unsigned tile = blockIdx.y * gridDim.x + blockIdx.x;
    const size_t tiles = (size_t)gridDim.x * gridDim.y;
    constexpr int TILE_ELEMS = BM * BN;
    float* const mine = part + ((size_t)blockIdx.z * tiles + tile) * TILE_ELEMS;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int lr = wm * WM + mt * 16 + g + (c >> 1) * 8;
                const int lt = wn * WN + nt * 8 + t2 + (c & 1);
                __stcg(mine + lr * BN + lt, acc[mt][nt][c]);
            }
    __threadfence();
    __syncthreads();
    __shared__ unsigned last;
    if (tid == 0) last = atomicAdd(&count[tile], 1u) == gridDim.z - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* const first = part + (size_t)tile * TILE_ELEMS;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int lr = wm * WM + mt * 16 + g + (c >> 1) * 8;
                const int lt = wn * WN + nt * 8 + t2 + (c & 1);
                const int r = m0 + lr;
                const int t = n0 + lt;
                if (r < rows && t < n) {
                    const float* q = first + lr * BN + lt;
                    float sum = __ldcg(q);
                    for (unsigned z = 1; z < gridDim.z; ++z) sum += __ldcg(q + z * tiles * TILE_ELEMS);
                    float* p = y + (size_t)t * rows + r;
                    *p = accumulate ? *p + sum : sum;
                }
            }
        }
    }
    if (tid == 0) count[tile] = 0;
}

// Entry points, one per tile shape; the weight type is a uniform switch inside.
#define GM_DISPATCH(BM, BN, WM, WN)                                                        \
    __shared__ __align__(16) u16 sm[2 * (BM + BN) * GM_LDS];                               \
    switch (t) {                                                                           \
        case T_F32: gemm_tile<T_F32, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break;   \
        case T_F16: gemm_tile<T_F16, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break;   \
        case T_BF16: gemm_tile<T_BF16, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q4_0: gemm_tile<T_Q4_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q4_1: gemm_tile<T_Q4_1, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q5_0: gemm_tile<T_Q5_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q8_0: gemm_tile<T_Q8_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q4_K: gemm_tile<T_Q4_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        case T_Q5_K: gemm_tile<T_Q5_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break; \
        default: gemm_tile<T_Q6_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, part, count, sm); break;     \
    }

#define GM_ARGS                                                                          \
    const u8* __restrict__ w, int t, int rows, int cols, const u16* __restrict__ x, int n, \
        float* __restrict__ y, int acc, float* __restrict__ part, unsigned* __restrict__ count

// 128 rows x 128 tokens, 8 warps of 64 x 32.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_128x128(GM_ARGS) { GM_DISPATCH(128, 128, 64, 32) }
// 64 rows x 128 tokens, 8 warps of 32 x 32.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_64x128(GM_ARGS) { GM_DISPATCH(64, 128, 32, 32) }
// 64 rows x 64 tokens, 4 warps of 32 x 32.
extern "C" __global__ void __launch_bounds__(128, 4) gemm_64x64(GM_ARGS) { GM_DISPATCH(64, 64, 32, 32) }
// 32 rows x 16 tokens, 2 warps of 16 x 16 (few tokens: one pass over the weights).
extern "C" __global__ void __launch_bounds__(64, 8) gemm_32x16(GM_ARGS) { GM_DISPATCH(32, 16, 16, 16) }
