// The work layout shared by the matrix-vector kernels (matvec.cu: f32 activations; matvec_q8.cu:
// 8-bit activations), compiled before either of them: job selection, units of R rows, the
// warps of a unit meeting in shared memory and the epilogues. Only the per-lane dot product of
// R rows differs, passed in as a functor `dot(t, rows, rb, cols, lane, wi, nw, acc)` that
// writes this lane's unreduced shares of the R rows into acc[0..R).
//
// One launch serves up to three weights that share one input x (e.g. Q, K and V), each CTA
// working on one of them (uniform per CTA). A unit of R matrix rows is computed together, so
// every load of x feeds R rows; `ks` warps of the CTA split a unit's row length and add their
// sums in shared memory. Modes:
//   MV_STORE  y[r] = W[r] . x
//   MV_ACCUM  y[r] += W[r] . x        (residual add fused into the epilogue)
//   MV_SWIGLU y0[r] = silu(W0[r] . x) * (W1[r] . x)   (gate and up of the FFN, one output)

#define MV_WARPS 4
#define MV_STORE 0
#define MV_ACCUM 1
#define MV_SWIGLU 2

// 4 bytes from a 2-byte aligned address.
__device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}

// (scale, min) of group g of a Q4_K super-block whose 12 scale bytes are the words y, z, w.
__device__ __forceinline__ void q4k_scale_min(u32 y, u32 z, u32 w, int g, int* sc, int* mn) {
    if (g < 4) {
        const int sh = 8 * g;
        *sc = (int)((y >> sh) & 63);
        *mn = (int)((z >> sh) & 63);
    } else {
        const int sh = 8 * (g - 4);
        const u32 wb = (w >> sh) & 255;
        *sc = (int)((wb & 15) | ((((y >> sh) & 255) >> 6) << 4));
        *mn = (int)((wb >> 4) | ((((z >> sh) & 255) >> 6) << 4));
    }
}

// Q4_K, one lane's share of super-block sb of each of R rows (dot_q4k and q8dot_q4k: 8 lanes a
// super-block, lane j of them): the 16-byte header (d, dmin, 12 scale bytes) and nibble bytes
// 16j..16j+15, as 16-byte loads (rows 16-byte aligned).
template <int R>
__device__ __forceinline__ void q4k_load(const u8* const* rows, int sb, int j, uint4* hd,
                                         uint4* q) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const u8* b = rows[r] + (size_t)sb * 144;
        hd[r] = __ldg((const uint4*)b);
        q[r] = __ldg((const uint4*)(b + 16 + 16 * j));
    }
}

// Q6_K, one lane's share of super-block sb of each of R rows (dot_q6k and q8dot_q6k: 16 lanes
// a super-block, half h, run m of the half's 32 qh bytes): the low-nibble words at 64h + m and
// 64h + 32 + m, the high-bit word at 128 + 32h + m (2-byte loads), the scale d and the half's
// 8 i8 scales as four 2-byte words.
template <int R>
__device__ __forceinline__ void q6k_load(const u8* const* rows, int sb, int h, int m, u32* qa,
                                         u32* qb, u32* qh, u16* dh, u16 (*sw)[4]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const u8* b = rows[r] + (size_t)sb * 210;
        qa[r] = ld_u32_a2(b + 64 * h + m);
        qb[r] = ld_u32_a2(b + 64 * h + 32 + m);
        qh[r] = ld_u32_a2(b + 128 + 32 * h + m);
        dh[r] = *(const u16*)(b + 208);
        const u16* scw = (const u16*)(b + 192 + 8 * h);
#pragma unroll
        for (int k = 0; k < 4; ++k) sw[r][k] = scw[k];
    }
}

// The unsigned 6-bit quants (0..63, one a byte) of elements 128h + 32k + m + (0..4), k = 0..3,
// from q6k_load's words.
__device__ __forceinline__ void q6k_words(u32 qa, u32 qb, u32 qh, u32* q) {
    q[0] = (qa & 0x0F0F0F0Fu) | ((qh << 4) & 0x30303030u);
    q[1] = (qb & 0x0F0F0F0Fu) | ((qh << 2) & 0x30303030u);
    q[2] = ((qa >> 4) & 0x0F0F0F0Fu) | (qh & 0x30303030u);
    q[3] = ((qb >> 4) & 0x0F0F0F0Fu) | ((qh >> 2) & 0x30303030u);
}

// Units (CTAs' work items) of a job: R rows each, or R / 2 output rows (gate + up pairs) in
// swiglu.
__device__ __forceinline__ int mv_units(int mode, int rows, int r) {
    const int per = mode == MV_SWIGLU ? r / 2 : r;
    return (rows + per - 1) / per;
}

// Job j is (w_j, t_j, rows_j, y_j); a job with rows_j == 0 is absent. In MV_SWIGLU, job 0 is
// the gate and job 1 the up projection (same type and rows), the output goes to y0, job 2 is
// absent. `ks` (1, 2 or 4) warps work on one unit, splitting the row length (interleaved
// steps); a CTA holds MV_WARPS / ks units; the partial sums meet in shared memory.
template <int R, class Dot>
__device__ __forceinline__ void mv_body(const Dot& dot, int cols, int mode, int ks,
                                        const u8* w0, int t0, int rows0, float* y0,
                                        const u8* w1, int t1, int rows1, float* y1,
                                        const u8* w2, int t2, int rows2, float* y2) {
    __shared__ float red[MV_WARPS][R];
    const int lane = threadIdx.x & (WARP - 1);
    const int warp = threadIdx.x >> 5;
    const int upc = MV_WARPS / ks;  // units per CTA
    const int c0 = (mv_units(mode, rows0, R) + upc - 1) / upc;
    const int c1 = mode == MV_SWIGLU ? 0 : (mv_units(mode, rows1, R) + upc - 1) / upc;
    int cta = blockIdx.x;
    const u8* w;
    int t, rows;
    float* y;
    if (cta < c0) {
        w = w0; t = t0; rows = rows0; y = y0;
    } else if (cta < c0 + c1) {
        cta -= c0;
        w = w1; t = t1; rows = rows1; y = y1;
    } else {
        cta -= c0 + c1;
        w = w2; t = t2; rows = rows2; y = y2;
    }
    const int unit = cta * upc + warp / ks;
    const int wi = warp % ks;
    const bool active = unit < mv_units(mode, rows, R);
    const size_t rb = row_bytes(t, cols);
    const u8* p[R];
    int rr[R];
    if (mode == MV_SWIGLU) {
#pragma unroll
        for (int i = 0; i < R / 2; ++i) {
            const int r = max(0, min(unit * (R / 2) + i, rows - 1));
            rr[2 * i] = rr[2 * i + 1] = r;
            p[2 * i] = w0 + (size_t)r * rb;
            p[2 * i + 1] = w1 + (size_t)r * rb;
        }
    } else {
#pragma unroll
        for (int i = 0; i < R; ++i) {
            rr[i] = max(0, min(unit * R + i, rows - 1));
            p[i] = w + (size_t)rr[i] * rb;
        }
    }
    float a[R];
    if (active) {
        dot(t, p, rb, cols, lane, wi, ks, a);
#pragma unroll
        for (int i = 0; i < R; ++i) a[i] = warp_sum(a[i]);
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) red[warp][i] = a[i];
        }
    }
    __syncthreads();
    if (!active || lane != 0 || wi != 0) return;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        float v = red[warp][i];
        for (int k = 1; k < ks; ++k) v += red[warp + k][i];
        a[i] = v;
    }
    if (mode == MV_SWIGLU) {
#pragma unroll
        for (int i = 0; i < R / 2; ++i) {
            if (unit * (R / 2) + i >= rows) break;
            const float g = a[2 * i];
            y0[rr[2 * i]] = g / (1.0f + expf(-g)) * a[2 * i + 1];
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        if (unit * R + i >= rows) break;
        if (mode == MV_ACCUM) y[rr[i]] += a[i];
        else y[rr[i]] = a[i];
    }
}

// The kernel parameters after the activation (three jobs) and the argument list passing them on.
#define MV_JOB_PARAMS                                                                     \
    const u8* __restrict__ w0, int t0, int rows0, float* y0, const u8* __restrict__ w1, \
        int t1, int rows1, float* y1, const u8* __restrict__ w2, int t2, int rows2, float* y2
#define MV_JOB_ARGS w0, t0, rows0, y0, w1, t1, rows1, y1, w2, t2, rows2, y2
