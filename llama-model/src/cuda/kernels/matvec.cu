// Fused dequantize x matrix-vector products over ggml blocks read in place.
//
// y[r] = sum_c W[r][c] * x[c] for a row-major weight of `rows` x `cols` (ggml's ne0 = cols),
// f32 accumulation, warp-shuffle reductions. The work layout (up to three weights a launch,
// units of R rows: R = 2 in matvec_multi, 4 in matvec_multi4, warps splitting a unit's row
// length, modes MV_STORE / MV_ACCUM / MV_SWIGLU) is matvec_body.cuh's, compiled before this
// file; this file has the per-lane dot products of R rows.
//
// Fast paths (specialised per type, wide loads, integer-to-float by byte permutation) where
// the weight's alignment allows; every type also has the generic path (any byte offset):
// - Q4_K: lane = 16 bytes of nibbles (32 elements) of a super-block, 4 super-blocks a step,
//   16-byte loads of the nibbles and of the block header (needs 16-byte aligned rows);
// - Q6_K: 16 lanes a super-block, 16 elements a lane, 2-byte loads (needs 4-byte aligned rows);
// - Q8_0: 2 lanes a block, 16 elements a lane (2-byte aligned: always);
// - F16/BF16: 8 elements a lane (one 16-byte load), F32: 4 (16-byte aligned rows).
// - generic: the block decoders of decode8 below, one row at a time.

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
                             int lane, int wi, int nw) {
    float acc = 0.0f;
    float v[8];
    int e0, e1;
    if (is_float_type(t)) {
        for (int c = lane + WARP * wi; c < cols; c += WARP * nw) acc += float_elem(t, row, c) * x[c];
    } else if (t == T_Q4_K || t == T_Q5_K || t == T_Q6_K) {
        const int bb = type_block_bytes(t);
        const int nb = cols / 256;
#pragma unroll 2
        for (int sb = wi; sb < nb; sb += nw) {
            decode8(t, row + (size_t)sb * bb, lane, v, &e0, &e1);
            const float* xs = x + (size_t)sb * 256;
            acc += dot8(v, xs + e0, xs + e1);
        }
    } else {
        const int bb = type_block_bytes(t);
        const int nb = cols / 32;
        const int s = lane & 3;
#pragma unroll 2
        for (int blk = (lane >> 2) + 8 * wi; blk < nb; blk += 8 * nw) {
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

// q4k_scale_min (matvec_body.cuh) as floats.
__device__ __forceinline__ void q4k_sm(u32 y, u32 z, u32 w, int g, float* sc, float* mn) {
    int si, mi;
    q4k_scale_min(y, z, w, g, &si, &mi);
    *sc = (float)si;
    *mn = (float)mi;
}

// Q4_K, 16-byte aligned rows: lane j = lane % 8 takes nibble bytes 16j..16j+15 of super-block
// lane / 8 (+4 per step): elements 64c + 16h + (0..16) (low nibbles, group 2c) and
// 64c + 32 + 16h + (0..16) (high nibbles, group 2c + 1), c = j / 2, h = j % 2.
template <int R>
__device__ __forceinline__ void dot_q4k(const u8* const* rows, int cols,
                                        const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
    const int nb = cols / 256;
    const int j = lane & 7;
    const int c = j >> 1;
    const int xo = 64 * c + 16 * (j & 1);
#pragma unroll 2
    for (int sb = (lane >> 3) + 4 * wi; sb < nb; sb += 4 * nw) {
        uint4 hd[R], q[R];
        q4k_load<R>(rows, sb, j, hd, q);
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
        for (int r = 0; r < R; ++r) {
            const float d = half_bits_to_f32((u16)(hd[r].x & 0xFFFF));
            const float dmin = half_bits_to_f32((u16)(hd[r].x >> 16));
            float sc0, mn0, sc1, mn1;
            q4k_sm(hd[r].y, hd[r].z, hd[r].w, 2 * c, &sc0, &mn0);
            q4k_sm(hd[r].y, hd[r].z, hd[r].w, 2 * c + 1, &sc1, &mn1);
            const u32 qw[4] = {q[r].x, q[r].y, q[r].z, q[r].w};
            float dl = 0.0f, dh = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                dl += dot4b(qw[i] & 0x0F0F0F0Fu, xl[i], 8388608.0f);
                dh += dot4b((qw[i] >> 4) & 0x0F0F0F0Fu, xh[i], 8388608.0f);
            }
            acc[r] += d * (sc0 * dl + sc1 * dh) - dmin * (mn0 * sl + mn1 * sh);
        }
    }
}

// Q6_K, 4-byte aligned rows (blocks then alternate 0 / 2 mod 4: 2-byte loads): 16 lanes per
// super-block; lane s = lane % 16: half h = s / 8, run m = 4 (s % 8) of the half's 32 qh bytes,
// elements 128h + 32k + m + (0..4) for k = 0..3.
template <int R>
__device__ __forceinline__ void dot_q6k(const u8* const* rows, int cols,
                                        const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
    const int nb = cols / 256;
    const int s = lane & 15;
    const int h = s >> 3;
    const int m = (s & 7) * 4;
    const int scsh = 8 * (m >> 4);
#pragma unroll 2
    for (int sb = (lane >> 4) + 2 * wi; sb < nb; sb += 2 * nw) {
        u32 qa[R], qb[R], qh[R];
        u16 dh[R], sw[R][4];
        q6k_load<R>(rows, sb, h, m, qa, qb, qh, dh, sw);
        const float* xs = x + (size_t)sb * 256 + 128 * h + m;
        float4 xk[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) xk[k] = ldx4(xs + 32 * k);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            u32 q[4];
            q6k_words(qa[r], qb[r], qh[r], q);
            float t = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float sc = (float)(i8)(u8)(sw[r][k] >> scsh);
                t += sc * dot4b(q[k], xk[k], 8388640.0f);
            }
            acc[r] += half_bits_to_f32(dh[r]) * t;
        }
    }
}

// Q8_0 (2-byte aligned): 2 lanes per block, 16 quants a lane, 16 blocks a step.
template <int R>
__device__ __forceinline__ void dot_q80(const u8* const* rows, int cols,
                                        const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
    const int nb = cols / 32;
    const int hf = lane & 1;
#pragma unroll 2
    for (int blk = (lane >> 1) + 16 * wi; blk < nb; blk += 16 * nw) {
        u32 w[R][4];
        u16 dh[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const u8* b = rows[r] + (size_t)blk * 34;
            dh[r] = *(const u16*)b;
#pragma unroll
            for (int i = 0; i < 4; ++i) w[r][i] = ld_u32_a2(b + 2 + 16 * hf + 4 * i);
        }
        const float* xs = x + (size_t)blk * 32 + 16 * hf;
        float4 xv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) xv[i] = ldx4(xs + 4 * i);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float t = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) t += dot4b(w[r][i] ^ 0x80808080u, xv[i], 8388736.0f);
            acc[r] += half_bits_to_f32(dh[r]) * t;
        }
    }
}

__device__ __forceinline__ float2 h2f(u32 w) {
    return make_float2(half_bits_to_f32((u16)(w & 0xFFFF)), half_bits_to_f32((u16)(w >> 16)));
}

__device__ __forceinline__ float2 b2f(u32 w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u));
}

// F16 / BF16 (16-byte aligned rows, cols % 8 == 0): 8 elements a lane a step.
template <int R, bool BF>
__device__ __forceinline__ void dot_h(const u8* const* rows, int cols,
                                      const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
#pragma unroll 2
    for (int c = (lane + WARP * wi) * 8; c < cols; c += WARP * nw * 8) {
        uint4 w[R];
#pragma unroll
        for (int r = 0; r < R; ++r) w[r] = __ldg((const uint4*)(rows[r] + 2 * (size_t)c));
        const float4 xa = ldx4(x + c);
        const float4 xb = ldx4(x + c + 4);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float2 p = BF ? b2f(w[r].x) : h2f(w[r].x);
            const float2 q = BF ? b2f(w[r].y) : h2f(w[r].y);
            const float2 u = BF ? b2f(w[r].z) : h2f(w[r].z);
            const float2 v = BF ? b2f(w[r].w) : h2f(w[r].w);
            acc[r] += p.x * xa.x + p.y * xa.y + q.x * xa.z + q.y * xa.w + u.x * xb.x +
                      u.y * xb.y + v.x * xb.z + v.y * xb.w;
        }
    }
}

// F32 (16-byte aligned rows, cols % 4 == 0).
template <int R>
__device__ __forceinline__ void dot_f32(const u8* const* rows, int cols,
                                        const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
#pragma unroll 2
    for (int c = (lane + WARP * wi) * 4; c < cols; c += WARP * nw * 4) {
        float4 w[R];
#pragma unroll
        for (int r = 0; r < R; ++r) w[r] = __ldg((const float4*)(rows[r] + 4 * (size_t)c));
        const float4 xa = ldx4(x + c);
#pragma unroll
        for (int r = 0; r < R; ++r)
            acc[r] += w[r].x * xa.x + w[r].y * xa.y + w[r].z * xa.z + w[r].w * xa.w;
    }
}

// R rows (same type, same cols) dotted with x: this lane's unreduced shares in acc[0..R).
template <int R>
__device__ __forceinline__ void dot_rows(int t, const u8* const* rows, size_t rb, int cols,
                                         const float* __restrict__ x, int lane, int wi, int nw,
                                        float* acc) {
    size_t base = rb;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        base |= (size_t)rows[r];
        acc[r] = 0.0f;
    }
    switch (t) {
        case T_Q4_K:
            if ((base & 15) == 0) { dot_q4k<R>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        case T_Q6_K:
            if ((base & 3) == 0) { dot_q6k<R>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        case T_Q8_0:
            if ((base & 1) == 0) { dot_q80<R>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        case T_F16:
            if ((base & 15) == 0) { dot_h<R, false>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        case T_BF16:
            if ((base & 15) == 0) { dot_h<R, true>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        case T_F32:
            if ((base & 15) == 0) { dot_f32<R>(rows, cols, x, lane, wi, nw, acc); return; }
            break;
        default:
            break;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = dot_generic(t, rows[r], cols, x, lane, wi, nw);
}

// The f32 activation's dot product of R rows, for mv_body.
template <int R>
struct F32Dot {
    const float* __restrict__ x;
    __device__ __forceinline__ void operator()(int t, const u8* const* rows, size_t rb, int cols,
                                               int lane, int wi, int nw, float* acc) const {
        dot_rows<R>(t, rows, rb, cols, x, lane, wi, nw, acc);
    }
};

// `x` must be 16-byte aligned (device allocations are; the Rust side checks). Two rows a unit.
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)
matvec_multi(const float* __restrict__ x, int cols, int mode, int ks, MV_JOB_PARAMS) {
    mv_body<2>(F32Dot<2>{x}, cols, mode, ks, MV_JOB_ARGS);
}

// Four rows a unit (more loads in flight, x loads shared by four rows).
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)
matvec_multi4(const float* __restrict__ x, int cols, int mode, int ks, MV_JOB_PARAMS) {
    mv_body<4>(F32Dot<4>{x}, cols, mode, ks, MV_JOB_ARGS);
}
