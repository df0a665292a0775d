// Fused dequantize x matrix-vector products over ggml blocks read in place.
//
// y[r] = sum_c W[r][c] * x[c] for a row-major weight of `rows` x `cols` (ggml's ne0 = cols),
// f32 accumulation, warp-shuffle reductions.
//
// One launch serves up to three weights that share one input x (e.g. Q, K and V), each CTA
// working on one of them (uniform per CTA). A warp computes two matrix rows at once ("a
// unit"), so every load of x feeds two rows. Modes:
//   MV_STORE  y[r] = W[r] . x
//   MV_ACCUM  y[r] += W[r] . x        (residual add fused into the epilogue)
//   MV_SWIGLU y0[r] = silu(W0[r] . x) * (W1[r] . x)   (gate and up of the FFN, one output)
//
// Fast paths (specialised per type, wide loads, integer-to-float by byte permutation) where
// the weight's alignment allows; every type also has the generic path (any byte offset):
// - Q4_K: lane = 16 bytes of nibbles (32 elements) of a super-block, 4 super-blocks a step,
//   16-byte loads of the nibbles and of the block header (needs 16-byte aligned rows);
// - Q6_K: 16 lanes a super-block, 16 elements a lane, 2-byte loads (needs 4-byte aligned rows);
// - Q8_0: 2 lanes a block, 16 elements a lane (2-byte aligned: always);
// - F16/BF16: 8 elements a lane (one 16-byte load), F32: 4 (16-byte aligned rows).
// - generic: the block decoders of decode8 below, one row at a time.

#define MV_WARPS 4
#define MV_STORE 0
#define MV_ACCUM 1
#define MV_SWIGLU 2

// Decodes lane `s`'s 8 elements of the block at `b` into v[0..8]: v[0..4] are elements
// e0..e0+3 and v[4..8] elements e1..e1+3 of the block; returns e0 and e1 through the pointers.
__device__ __forceinline__ void decode8(int t, const u8* b, int s, float* v, int* e0, int* e1) {
    if (t == T_Q8_0) {
        const float d = ld_f16(b);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = d * (float)(i8)b[2 + 8 * s + i];
        *e0 = 8 * s;
        *e1 = 8 * s + 4;
        return;
    }
    if (t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0) {
        const float d = ld_f16(b);
        const u8* qs = b + (t == T_Q4_0 ? 2 : (t == T_Q4_1 ? 4 : 6)) + 4 * s;
        float m = 0.0f;
        int off = 8;
        u32 qh = 0;
        if (t == T_Q4_1) { m = ld_f16(b + 2); off = 0; }
        if (t == T_Q5_0) { qh = ld_u32(b + 2); off = 16; }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int j = 4 * s + i;
            int lo = qs[i] & 0x0F;
            int hi = qs[i] >> 4;
            if (t == T_Q5_0) {
                lo |= (int)(((qh >> j) & 1u) << 4);
                hi |= (int)(((qh >> (j + 16)) & 1u) << 4);
            }
            v[i] = d * (float)(lo - off) + m;
            v[4 + i] = d * (float)(hi - off) + m;
        }
        *e0 = 4 * s;
        *e1 = 16 + 4 * s;
        return;
    }
    if (t == T_Q4_K || t == T_Q5_K) {
        const float d = ld_f16(b);
        const float dmin = ld_f16(b + 2);
        const int c = s >> 3;        // 64-element chunk
        const int j = (s & 7) * 4;   // byte within the chunk's 32
        float sc0, mn0, sc1, mn1;
        kq_scale_min(b + 4, 2 * c, &sc0, &mn0);
        kq_scale_min(b + 4, 2 * c + 1, &sc1, &mn1);
        const float d0 = d * sc0, m0 = dmin * mn0, d1 = d * sc1, m1 = dmin * mn1;
        const u8* qs = b + (t == T_Q4_K ? 16 : 48) + 32 * c + j;
        const u8* qh = b + 16 + j;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            int lo = qs[i] & 0x0F;
            int hi = qs[i] >> 4;
            if (t == T_Q5_K) {
                lo |= ((qh[i] >> (2 * c)) & 1) << 4;
                hi |= ((qh[i] >> (2 * c + 1)) & 1) << 4;
            }
            v[i] = d0 * (float)lo - m0;
            v[4 + i] = d1 * (float)hi - m1;
        }
        *e0 = 64 * c + j;
        *e1 = 64 * c + 32 + j;
        return;
    }
    // Q6_K: half h, lanes in pairs over 4-byte runs m of the half's 32 qh bytes; the even lane
    // takes ql[l] (k = 0 low nibble, k = 2 high), the odd lane ql[32 + l] (k = 1, k = 3).
    const float d = ld_f16(b + 208);
    const int h = s >> 4;
    const int m = ((s & 15) >> 1) * 4;
    const int part = s & 1;
    const u8* ql = b + 64 * h + 32 * part + m;
    const u8* qh = b + 128 + 32 * h + m;
    const i8* sc = (const i8*)(b + 192);
    const int ka = part;      // low nibbles: k = 0 or 1
    const int kb = part + 2;  // high nibbles: k = 2 or 3
    const int ea = 128 * h + 32 * ka + m;
    const int eb = 128 * h + 32 * kb + m;
    const float da = d * (float)sc[ea >> 4];
    const float db = d * (float)sc[eb >> 4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int qa = ((ql[i] & 0x0F) | (((qh[i] >> (2 * ka)) & 3) << 4)) - 32;
        const int qb = ((ql[i] >> 4) | (((qh[i] >> (2 * kb)) & 3) << 4)) - 32;
        v[i] = da * (float)qa;
        v[4 + i] = db * (float)qb;
    }
    *e0 = ea;
    *e1 = eb;
}

__device__ __forceinline__ float dot8(const float* v, const float* x0, const float* x1) {
    const float4 a = *(const float4*)x0;
    const float4 c = *(const float4*)x1;
    return v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * c.x + v[5] * c.y +
           v[6] * c.z + v[7] * c.w;
}

// This lane's (unreduced) share of row . x, for any type at any byte offset.
__device__ float dot_generic(int t, const u8* row, int cols, const float* __restrict__ x,
                             int lane) {
    float acc = 0.0f;
    float v[8];
    int e0, e1;
    if (is_float_type(t)) {
        for (int c = lane; c < cols; c += WARP) acc += float_elem(t, row, c) * x[c];
    } else if (t == T_Q4_K || t == T_Q5_K || t == T_Q6_K) {
        const int bb = type_block_bytes(t);
        const int nb = cols / 256;
#pragma unroll 2
        for (int sb = 0; sb < nb; ++sb) {
            decode8(t, row + (size_t)sb * bb, lane, v, &e0, &e1);
            const float* xs = x + (size_t)sb * 256;
            acc += dot8(v, xs + e0, xs + e1);
        }
    } else {
        const int bb = type_block_bytes(t);
        const int nb = cols / 32;
        const int s = lane & 3;
#pragma unroll 2
        for (int blk = lane >> 2; blk < nb; blk += 8) {
            decode8(t, row + (size_t)blk * bb, s, v, &e0, &e1);
            const float* xs = x + (size_t)blk * 32;
            acc += dot8(v, xs + e0, xs + e1);
        }
    }
    return acc;
}

// Byte k (0..3) of w as a float, exactly, minus `bias`: 2^23 + byte built by a byte permute.
__device__ __forceinline__ float bytef(u32 w, int k, float bias) {
    return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7540 | k)) - bias;
}

// sum_k bytef(w, k) * x[k] for the four bytes of w.
__device__ __forceinline__ float dot4b(u32 w, float4 x, float bias) {
    return bytef(w, 0, bias) * x.x + bytef(w, 1, bias) * x.y + bytef(w, 2, bias) * x.z +
           bytef(w, 3, bias) * x.w;
}

__device__ __forceinline__ float sum4(float4 a) { return (a.x + a.y) + (a.z + a.w); }

__device__ __forceinline__ float4 ldx4(const float* p) { return __ldg((const float4*)p); }

// 4 bytes from a 2-byte aligned address.
__device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}

// (scale, min) of group g of a Q4_K super-block whose 12 scale bytes are the words y, z, w.
__device__ __forceinline__ void q4k_sm(u32 y, u32 z, u32 w, int g, float* sc, float* mn) {
    if (g < 4) {
        const int sh = 8 * g;
        *sc = (float)((y >> sh) & 63);
        *mn = (float)((z >> sh) & 63);
    } else {
        const int sh = 8 * (g - 4);
        const u32 wb = (w >> sh) & 255;
        *sc = (float)((wb & 15) | ((((y >> sh) & 255) >> 6) << 4));
        *mn = (float)((wb >> 4) | ((((z >> sh) & 255) >> 6) << 4));
    }
}

// Q4_K, 16-byte aligned rows: lane j = lane % 8 takes nibble bytes 16j..16j+15 of super-block
// lane / 8 (+4 per step): elements 64c + 16h + (0..16) (low nibbles, group 2c) and
// 64c + 32 + 16h + (0..16) (high nibbles, group 2c + 1), c = j / 2, h = j % 2.
__device__ __forceinline__ void dot2_q4k(const u8* r0, const u8* r1, int cols,
                                         const float* __restrict__ x, int lane, float* a0,
                                         float* a1) {
    const int nb = cols / 256;
    const int j = lane & 7;
    const int c = j >> 1;
    const int xo = 64 * c + 16 * (j & 1);
    float acc[2] = {0.0f, 0.0f};
    const u8* rows[2] = {r0, r1};
#pragma unroll 2
    for (int sb = lane >> 3; sb < nb; sb += 4) {
        const float* xs = x + (size_t)sb * 256 + xo;
        float4 xl[4], xh[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            xl[i] = ldx4(xs + 4 * i);
            xh[i] = ldx4(xs + 32 + 4 * i);
        }
        const float sl = sum4(xl[0]) + sum4(xl[1]) + sum4(xl[2]) + sum4(xl[3]);
        const float sh = sum4(xh[0]) + sum4(xh[1]) + sum4(xh[2]) + sum4(xh[3]);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u8* b = rows[r] + (size_t)sb * 144;
            const uint4 hd = __ldg((const uint4*)b);
            const uint4 q = __ldg((const uint4*)(b + 16 + 16 * j));
            const float d = half_bits_to_f32((u16)(hd.x & 0xFFFF));
            const float dmin = half_bits_to_f32((u16)(hd.x >> 16));
            float sc0, mn0, sc1, mn1;
            q4k_sm(hd.y, hd.z, hd.w, 2 * c, &sc0, &mn0);
            q4k_sm(hd.y, hd.z, hd.w, 2 * c + 1, &sc1, &mn1);
            const u32 qw[4] = {q.x, q.y, q.z, q.w};
            float dl = 0.0f, dh = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                dl += dot4b(qw[i] & 0x0F0F0F0Fu, xl[i], 8388608.0f);
                dh += dot4b((qw[i] >> 4) & 0x0F0F0F0Fu, xh[i], 8388608.0f);
            }
            acc[r] += d * (sc0 * dl + sc1 * dh) - dmin * (mn0 * sl + mn1 * sh);
        }
    }
    *a0 = acc[0];
    *a1 = acc[1];
}

// Q6_K, 4-byte aligned rows (blocks then alternate 0 / 2 mod 4: 2-byte loads): 16 lanes per
// super-block; lane s = lane % 16: half h = s / 8, run m = 4 (s % 8) of the half's 32 qh bytes,
// elements 128h + 32k + m + (0..4) for k = 0..3.
__device__ __forceinline__ void dot2_q6k(const u8* r0, const u8* r1, int cols,
                                         const float* __restrict__ x, int lane, float* a0,
                                         float* a1) {
    const int nb = cols / 256;
    const int s = lane & 15;
    const int h = s >> 3;
    const int m = (s & 7) * 4;
    const int scsh = 8 * (m >> 4);
    float acc[2] = {0.0f, 0.0f};
    const u8* rows[2] = {r0, r1};
#pragma unroll 2
    for (int sb = lane >> 4; sb < nb; sb += 2) {
        const float* xs = x + (size_t)sb * 256 + 128 * h + m;
        float4 xk[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) xk[k] = ldx4(xs + 32 * k);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u8* b = rows[r] + (size_t)sb * 210;
            const u32 qa = ld_u32_a2(b + 64 * h + m);
            const u32 qb = ld_u32_a2(b + 64 * h + 32 + m);
            const u32 qh = ld_u32_a2(b + 128 + 32 * h + m);
            const float d = half_bits_to_f32(*(const u16*)(b + 208));
            const u16* scw = (const u16*)(b + 192 + 8 * h);
            const u32 q[4] = {
                (qa & 0x0F0F0F0Fu) | ((qh << 4) & 0x30303030u),
                (qb & 0x0F0F0F0Fu) | ((qh << 2) & 0x30303030u),
                ((qa >> 4) & 0x0F0F0F0Fu) | (qh & 0x30303030u),
                ((qb >> 4) & 0x0F0F0F0Fu) | ((qh >> 2) & 0x30303030u),
            };
            float t = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float sc = (float)(i8)(u8)(scw[k] >> scsh);
                t += sc * dot4b(q[k], xk[k], 8388640.0f);
            }
            acc[r] += d * t;
        }
    }
    *a0 = acc[0];
    *a1 = acc[1];
}

// Q8_0 (2-byte aligned): 2 lanes per block, 16 quants a lane, 16 blocks a step.
__device__ __forceinline__ void dot2_q80(const u8* r0, const u8* r1, int cols,
                                         const float* __restrict__ x, int lane, float* a0,
                                         float* a1) {
    const int nb = cols / 32;
    const int hf = lane & 1;
    float acc[2] = {0.0f, 0.0f};
    const u8* rows[2] = {r0, r1};
#pragma unroll 2
    for (int blk = lane >> 1; blk < nb; blk += 16) {
        const float* xs = x + (size_t)blk * 32 + 16 * hf;
        float4 xv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) xv[i] = ldx4(xs + 4 * i);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u8* b = rows[r] + (size_t)blk * 34;
            const float d = half_bits_to_f32(*(const u16*)b);
            float t = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const u32 w = ld_u32_a2(b + 2 + 16 * hf + 4 * i) ^ 0x80808080u;
                t += dot4b(w, xv[i], 8388736.0f);
            }
            acc[r] += d * t;
        }
    }
    *a0 = acc[0];
    *a1 = acc[1];
}

__device__ __forceinline__ float2 h2f(u32 w) {
    return make_float2(half_bits_to_f32((u16)(w & 0xFFFF)), half_bits_to_f32((u16)(w >> 16)));
}

__device__ __forceinline__ float2 b2f(u32 w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u));
}

// F16 / BF16 (16-byte aligned rows, cols % 8 == 0): 8 elements a lane a step.
template <bool BF>
__device__ __forceinline__ void dot2_h(const u8* r0, const u8* r1, int cols,
                                       const float* __restrict__ x, int lane, float* a0,
                                       float* a1) {
    float acc[2] = {0.0f, 0.0f};
    const u8* rows[2] = {r0, r1};
#pragma unroll 2
    for (int c = lane * 8; c < cols; c += WARP * 8) {
        const float4 xa = ldx4(x + c);
        const float4 xb = ldx4(x + c + 4);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const uint4 w = __ldg((const uint4*)(rows[r] + 2 * (size_t)c));
            const float2 p = BF ? b2f(w.x) : h2f(w.x);
            const float2 q = BF ? b2f(w.y) : h2f(w.y);
            const float2 u = BF ? b2f(w.z) : h2f(w.z);
            const float2 v = BF ? b2f(w.w) : h2f(w.w);
            acc[r] += p.x * xa.x + p.y * xa.y + q.x * xa.z + q.y * xa.w + u.x * xb.x +
                      u.y * xb.y + v.x * xb.z + v.y * xb.w;
        }
    }
    *a0 = acc[0];
    *a1 = acc[1];
}

// F32 (16-byte aligned rows, cols % 4 == 0).
__device__ __forceinline__ void dot2_f32(const u8* r0, const u8* r1, int cols,
                                         const float* __restrict__ x, int lane, float* a0,
                                         float* a1) {
    float acc[2] = {0.0f, 0.0f};
    const u8* rows[2] = {r0, r1};
#pragma unroll 2
    for (int c = lane * 4; c < cols; c += WARP * 4) {
        const float4 xa = ldx4(x + c);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float4 w = __ldg((const float4*)(rows[r] + 4 * (size_t)c));
            acc[r] += w.x * xa.x + w.y * xa.y + w.z * xa.z + w.w * xa.w;
        }
    }
    *a0 = acc[0];
    *a1 = acc[1];
}

// Two rows (same type, same cols) dotted with x: this lane's unreduced shares.
__device__ __forceinline__ void dot2(int t, const u8* r0, const u8* r1, size_t rb, int cols,
                                     const float* __restrict__ x, int lane, float* a0,
                                     float* a1) {
    const size_t base = (size_t)r0 | (size_t)r1;
    switch (t) {
        case T_Q4_K:
            if (((base | rb) & 15) == 0) { dot2_q4k(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        case T_Q6_K:
            if (((base | rb) & 3) == 0) { dot2_q6k(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        case T_Q8_0:
            if (((base | rb) & 1) == 0) { dot2_q80(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        case T_F16:
            if (((base | rb) & 15) == 0) { dot2_h<false>(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        case T_BF16:
            if (((base | rb) & 15) == 0) { dot2_h<true>(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        case T_F32:
            if (((base | rb) & 15) == 0) { dot2_f32(r0, r1, cols, x, lane, a0, a1); return; }
            break;
        default:
            break;
    }
    *a0 = dot_generic(t, r0, cols, x, lane);
    *a1 = dot_generic(t, r1, cols, x, lane);
}

// Units (warps' work items) of a job: two rows each, or one output row (gate + up) in swiglu.
__device__ __forceinline__ int mv_units(int mode, int rows) {
    return mode == MV_SWIGLU ? rows : (rows + 1) / 2;
}

// `x` must be 16-byte aligned (device allocations are; the Rust side checks). Job j is
// (w_j, t_j, rows_j, y_j); a job with rows_j == 0 is absent. In MV_SWIGLU, job 0 is the gate
// and job 1 the up projection (same type and rows), the output goes to y0, job 2 is absent.
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)
matvec_multi(const float* __restrict__ x, int cols, int mode,
             const u8* __restrict__ w0, int t0, int rows0, float* y0,
             const u8* __restrict__ w1, int t1, int rows1, float* y1,
             const u8* __restrict__ w2, int t2, int rows2, float* y2) {
    const int lane = threadIdx.x & (WARP - 1);
    const int warp = threadIdx.x >> 5;
    const int c0 = (mv_units(mode, rows0) + MV_WARPS - 1) / MV_WARPS;
    const int c1 = mode == MV_SWIGLU ? 0 : (mv_units(mode, rows1) + MV_WARPS - 1) / MV_WARPS;
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
    const int unit = cta * MV_WARPS + warp;
    if (unit >= mv_units(mode, rows)) return;
    const size_t rb = row_bytes(t, cols);
    const u8* p0;
    const u8* p1;
    int r0, r1;
    if (mode == MV_SWIGLU) {
        r0 = unit;
        r1 = unit;
        p0 = w0 + (size_t)unit * rb;
        p1 = w1 + (size_t)unit * rb;
    } else {
        r0 = 2 * unit;
        r1 = min(r0 + 1, rows - 1);
        p0 = w + (size_t)r0 * rb;
        p1 = w + (size_t)r1 * rb;
    }
    float a0, a1;
    dot2(t, p0, p1, rb, cols, x, lane, &a0, &a1);
    a0 = warp_sum(a0);
    a1 = warp_sum(a1);
    if (lane != 0) return;
    if (mode == MV_SWIGLU) {
        y0[r0] = a0 / (1.0f + expf(-a0)) * a1;
    } else if (mode == MV_ACCUM) {
        y[r0] += a0;
        if (r1 != r0) y[r1] += a1;
    } else {
        y[r0] = a0;
        if (r1 != r0) y[r1] = a1;
    }
}
