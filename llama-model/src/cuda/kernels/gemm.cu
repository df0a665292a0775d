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
    return (u32)f32_to_half_bits(lo) | ((u32)f32_to_half_bits(hi) << 16);
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

// Elements k0 + 16 * hf .. + 16 of a row (k0 a multiple of 32) as 8 packed f16 pairs.
template <int T>
__device__ __forceinline__ void gm_decode16(const u8* row, int k0, int hf, u32* o) {
    const int e0 = k0 + 16 * hf;
    if (T == T_F16) {
        gm_ld16(row + 2 * (size_t)e0, o);
        gm_ld16(row + 2 * (size_t)e0 + 16, o + 4);
    } else if (T == T_BF16) {
        u32 w[8];
        gm_ld16(row + 2 * (size_t)e0, w);
        gm_ld16(row + 2 * (size_t)e0 + 16, w + 4);
#pragma unroll
        for (int i = 0; i < 8; ++i)
            o[i] = gm_pack(__uint_as_float(w[i] << 16), __uint_as_float(w[i] & 0xFFFF0000u));
    } else if (T == T_F32) {
        u32 w[16];
#pragma unroll
        for (int i = 0; i < 4; ++i) gm_ld16(row + 4 * (size_t)e0 + 16 * i, w + 4 * i);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = gm_pack(__uint_as_float(w[2 * i]), __uint_as_float(w[2 * i + 1]));
    } else if (T == T_Q4_0 || T == T_Q4_1) {
        const int bb = T == T_Q4_0 ? 18 : 20;
        const u8* b = row + (size_t)(k0 / 32) * bb;
        const float d = ld_f16(b);
        const float m = T == T_Q4_1 ? ld_f16(b + 2) : -8.0f * d;
        u32 q[4];
        gm_ld16(b + (T == T_Q4_0 ? 2 : 4), q);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = (gm_byte(q, 2 * i) >> (4 * hf)) & 15;
            const int q1 = (gm_byte(q, 2 * i + 1) >> (4 * hf)) & 15;
            o[i] = gm_pack(d * (float)q0 + m, d * (float)q1 + m);
        }
    } else if (T == T_Q5_0) {
        const u8* b = row + (size_t)(k0 / 32) * 22;
        const float d = ld_f16(b);
        const u32 qh = ld_u32(b + 2);
        u32 q[4];
        gm_ld16(b + 6, q);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int j0 = 2 * i, j1 = 2 * i + 1;
            const int q0 = ((gm_byte(q, j0) >> (4 * hf)) & 15) | (int)(((qh >> (16 * hf + j0)) & 1u) << 4);
            const int q1 = ((gm_byte(q, j1) >> (4 * hf)) & 15) | (int)(((qh >> (16 * hf + j1)) & 1u) << 4);
            o[i] = gm_pack(d * (float)(q0 - 16), d * (float)(q1 - 16));
        }
    } else if (T == T_Q8_0) {
        const u8* b = row + (size_t)(k0 / 32) * 34;
        const float d = ld_f16(b);
        u32 q[4];
        gm_ld16(b + 2 + 16 * hf, q);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = (int)(i8)gm_byte(q, 2 * i);
            const int q1 = (int)(i8)gm_byte(q, 2 * i + 1);
            o[i] = gm_pack(d * (float)q0, d * (float)q1);
        }
    } else if (T == T_Q4_K || T == T_Q5_K) {
        const int bb = T == T_Q4_K ? 144 : 176;
        const u8* b = row + (size_t)(k0 / 256) * bb;
        const int g = (k0 & 255) / 32;
        const float d = ld_f16(b);
        const float dmin = ld_f16(b + 2);
        float sc, mn;
        kq_scale_min(b + 4, g, &sc, &mn);
        const float dl = d * sc;
        const float ml = dmin * mn;
        const int shift = (g & 1) * 4;
        u32 q[4];
        gm_ld16(b + (T == T_Q4_K ? 16 : 48) + (g >> 1) * 32 + 16 * hf, q);
        u32 h[4] = {0u, 0u, 0u, 0u};
        if (T == T_Q5_K) gm_ld16(b + 16 + 16 * hf, h);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q0 = (gm_byte(q, 2 * i) >> shift) & 15;
            int q1 = (gm_byte(q, 2 * i + 1) >> shift) & 15;
            if (T == T_Q5_K) {
                q0 |= ((gm_byte(h, 2 * i) >> g) & 1) << 4;
                q1 |= ((gm_byte(h, 2 * i + 1) >> g) & 1) << 4;
            }
            o[i] = gm_pack(dl * (float)q0 - ml, dl * (float)q1 - ml);
        }
    } else {  // Q6_K
        const u8* b = row + (size_t)(k0 / 256) * 210;
        const int g = (k0 & 255) / 32;
        const int hh = g >> 2;
        const int k = g & 3;
        const float d = ld_f16(b + 208) * (float)(i8)b[192 + 2 * g + hf];
        u32 ql[4], qh[4];
        gm_ld16(b + hh * 64 + (k & 1) * 32 + 16 * hf, ql);
        gm_ld16(b + 128 + hh * 32 + 16 * hf, qh);
        const int nib = (k >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q0 = (((gm_byte(ql, 2 * i) >> nib) & 15) | (((gm_byte(qh, 2 * i) >> (2 * k)) & 3) << 4)) - 32;
            const int q1 = (((gm_byte(ql, 2 * i + 1) >> nib) & 15) | (((gm_byte(qh, 2 * i + 1) >> (2 * k)) & 3) << 4)) - 32;
            o[i] = gm_pack(d * (float)q0, d * (float)q1);
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

// One CTA of the GEMM: tile (blockIdx.x: BM weight rows, blockIdx.y: BN tokens).
template <int T, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void gemm_tile(const u8* __restrict__ w, int rows, int cols,
                                          const u16* __restrict__ x, int n,
                                          float* __restrict__ y, int accumulate,
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

    u32 wr[WTASKS][8];
    uint4 xr[XTASKS];

    auto fetch = [&](int kt) {
        const int k0 = kt * GM_BK;
#pragma unroll
        for (int i = 0; i < WTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BM * 2) {
                const int r = min(m0 + (task >> 1), rows - 1);
                gm_decode16<T>(w + (size_t)r * rb, k0, task & 1, wr[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < XTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BN * 4) {
                const int t = min(n0 + (task >> 2), n - 1);
                xr[i] = *(const uint4*)(x + (size_t)t * cols + k0 + (task & 3) * 8);
            }
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int i = 0; i < WTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BM * 2) {
                uint4* dst = (uint4*)(&wsm[buf * BM * GM_LDS + (task >> 1) * GM_LDS + (task & 1) * 16]);
                dst[0] = make_uint4(wr[i][0], wr[i][1], wr[i][2], wr[i][3]);
                dst[1] = make_uint4(wr[i][4], wr[i][5], wr[i][6], wr[i][7]);
            }
        }
#pragma unroll
        for (int i = 0; i < XTASKS; ++i) {
            const int task = tid + i * NTHREADS;
            if (task < BN * 4) {
                *(uint4*)(&xsm[buf * BN * GM_LDS + (task >> 2) * GM_LDS + (task & 3) * 8]) = xr[i];
            }
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int a = 0; a < MT; ++a)
#pragma unroll
        for (int b = 0; b < NT; ++b)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

    fetch(0);
    store(0);
    __syncthreads();
    for (int kt = 0; kt < ksteps; ++kt) {
        const int cur = kt & 1;
        if (kt + 1 < ksteps) fetch(kt + 1);
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
        if (kt + 1 < ksteps) store(cur ^ 1);
        __syncthreads();
    }

    const int g = lane >> 2;
    const int t2 = (lane & 3) * 2;
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
}

// Entry points, one per tile shape; the weight type is a uniform switch inside.
#define GM_DISPATCH(BM, BN, WM, WN)                                                        \
    __shared__ __align__(16) u16 sm[2 * (BM + BN) * GM_LDS];                               \
    switch (t) {                                                                           \
        case T_F32: gemm_tile<T_F32, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break;   \
        case T_F16: gemm_tile<T_F16, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break;   \
        case T_BF16: gemm_tile<T_BF16, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q4_0: gemm_tile<T_Q4_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q4_1: gemm_tile<T_Q4_1, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q5_0: gemm_tile<T_Q5_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q8_0: gemm_tile<T_Q8_0, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q4_K: gemm_tile<T_Q4_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        case T_Q5_K: gemm_tile<T_Q5_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break; \
        default: gemm_tile<T_Q6_K, BM, BN, WM, WN>(w, rows, cols, x, n, y, acc, sm); break;     \
    }

#define GM_ARGS                                                                          \
    const u8* __restrict__ w, int t, int rows, int cols, const u16* __restrict__ x, int n, \
        float* __restrict__ y, int acc

// 128 rows x 128 tokens, 8 warps of 64 x 32.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_128x128(GM_ARGS) { GM_DISPATCH(128, 128, 64, 32) }
// 64 rows x 128 tokens, 8 warps of 32 x 32.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_64x128(GM_ARGS) { GM_DISPATCH(64, 128, 32, 32) }
// 64 rows x 64 tokens, 4 warps of 32 x 32.
extern "C" __global__ void __launch_bounds__(128, 4) gemm_64x64(GM_ARGS) { GM_DISPATCH(64, 64, 32, 32) }
// 32 rows x 16 tokens, 2 warps of 16 x 16 (few tokens: one pass over the weights).
extern "C" __global__ void __launch_bounds__(64, 8) gemm_32x16(GM_ARGS) { GM_DISPATCH(32, 16, 16, 16) }
