// Matrix-vector products with 8-bit activations and integer dot products (dp4a).
//
// The activation x (f32, `cols` a multiple of 32) is first quantized once per product by
// `quantize_q8` into blocks of 32: qs[c] (i8, all blocks back to back, 16-byte aligned), one
// f32 scale d[b] and one f32 sum term s[b] per block, bit for bit as the CPU backend's
// `cpu::q8::quantize_q8` (llama.cpp's x86 `quantize_row_q8_1`):
//   amax = max |x_j|, d = f16(amax / 127) (kept as f32), id = 127 / amax (0 when amax = 0),
//   q_j = round_ties_even(x_j * id), s = f16((amax / 127) * sum_j q_j) (the UNROUNDED scale).
// The products then read the weight's ggml blocks in place and compute, per 32-element
// activation block b and weight block (scale dw, offset or minimum m),
//   Q8_0:       dw * d_b * sum_j qw_j q_j
//   Q4_0, Q5_0: dw * d_b * sum_j (qw_j - 8 or 16) q_j      (the offset times the exact sum q)
//   Q4_1:       dw * d_b * sum_j qw_j q_j + m * s_b         (llama.cpp's q4_1 x q8_1)
// with the integer sums in dp4a: the per-block terms are llama.cpp's, only the f32
// accumulation order over blocks differs. The K-quants (llama.cpp quantizes their activations
// to q8_K, blocks of 256 with an f32 scale; here the same 32-blocks serve every type) use the
// exact integer sums sum_j q_j for their minimums: Q4_K
//   d * sum_g d_g (sc_g sum_j qw_j q_j) - dmin * sum_g d_g (mn_g sum_j q_j),
// Q6_K d * sum_g d_g sc_g sum_j (qw_j - 32) q_j; tests/cuda_matvec_q8.rs checks them against
// an f64 reference over the quantized activation.
//
// Layout of the work: matvec_body.cuh's (compiled before this file), with this file's dot
// products of R rows. Per type, a warp step covers:
// - Q4_K: 8 lanes a super-block (16 bytes of nibbles = 32 elements a lane, 16-byte loads of
//   nibbles and header; rows 16-byte aligned), 4 super-blocks a step;
// - Q6_K: 16 lanes a super-block (16 elements a lane: 4-byte runs of ql, ql + 32 and qh, as
//   pairs of 2-byte loads: super-blocks are only 2-byte aligned), 2 super-blocks a step;
// - Q8_0: 2 lanes a block (16 quants a lane), 16 blocks a step (2-byte aligned);
// - Q4_0, Q4_1, Q5_0: 2 lanes a block (8 nibble bytes = 16 elements a lane), 16 blocks a step.
// The Rust side (cuda/matvec_q8.rs) launches this path only for those types and alignments.

#define Q8_WARPS 8

// Lane `lane` of a warp holding activation v = element 32 blk + lane: writes its quant and,
// lane 0, the block's scale and sum term (the CPU's rounding, see the header).
__device__ __forceinline__ void q8_store(float v, int blk, int lane, i8* __restrict__ qs,
                                         float* __restrict__ d, float* __restrict__ s) {
    float amax = fabsf(v);
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    // IEEE division and product (NVRTC's default -prec-div=true; __f*_rn are never contracted),
    // as the CPU's f32 `127.0 / amax`, `amax / 127.0` and `d * sum`.
    const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    const int q = __float2int_rn(__fmul_rn(v, id));
    qs[blk * 32 + lane] = (i8)q;
    int sum = q;
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
        const float dr = __fdiv_rn(amax, 127.0f);
        d[blk] = half_bits_to_f32(f32_to_half_bits(dr));
        s[blk] = half_bits_to_f32(f32_to_half_bits(__fmul_rn(dr, (float)sum)));
    }
}

// One warp per block of 32 activations.
extern "C" __global__ void __launch_bounds__(Q8_WARPS * WARP)
quantize_q8(const float* __restrict__ x, int cols, i8* __restrict__ qs, float* __restrict__ d,
            float* __restrict__ s) {
    const int blk = blockIdx.x * Q8_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & (WARP - 1);
    if (blk * 32 >= cols) return;
    q8_store(x[blk * 32 + lane], blk, lane, qs, d, s);
}

// RMSNorm of one row of n values (n a multiple of 32), as elementwise.cu's rmsnorm
// (out = x / rms(x) * w), that also writes the 8-bit quantization of out as quantize_q8 does:
// the norm before a product with the quantization fused in (one launch fewer).
#define NQ_THREADS 1024
extern "C" __global__ void __launch_bounds__(NQ_THREADS)
rmsnorm_q8(const float* x, const float* __restrict__ w, float* out, int n, float eps,
           i8* __restrict__ qs, float* __restrict__ d, float* __restrict__ s) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += NQ_THREADS) ss += x[i] * x[i];
    ss = cta_sum<NQ_THREADS>(ss);
    const float scale = rsqrtf(ss / (float)n + eps);
    const int lane = threadIdx.x & (WARP - 1);
    // n % 32 == 0: a warp's 32 lanes are all inside or all past the row, and hold one block.
    for (int i = threadIdx.x; i < n; i += NQ_THREADS) {
        const float v = x[i] * scale * w[i];
        out[i] = v;
        q8_store(v, i >> 5, lane, qs, d, s);
    }
}

__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Sum of the four signed bytes of a.
__device__ __forceinline__ int bsum4(int a) { return dp4a(a, 0x01010101, 0); }

// Q4_K: lane j = lane % 8 takes nibble bytes 16j..16j+15 of super-block lane / 8 (+4 a step):
// elements 64c + 16h + (0..16) (low nibbles, group 2c) and 64c + 32 + 16h + (0..16) (high
// nibbles, group 2c + 1), c = j / 2, h = j % 2. Each group is one activation block.
template <int R>
__device__ __forceinline__ void q8dot_q4k(const u8* const* rows, int cols, const i8* __restrict__ xq,
                                          const float* __restrict__ xd, int lane, int wi, int nw,
                                          float* acc) {
    const int nb = cols / 256;
    const int j = lane & 7;
    const int c = j >> 1;
    const int xo = 64 * c + 16 * (j & 1);
#pragma unroll 2
    for (int sb = (lane >> 3) + 4 * wi; sb < nb; sb += 4 * nw) {
        uint4 hd[R], q[R];
        q4k_load<R>(rows, sb, j, hd, q);
        const int4 xl = __ldg((const int4*)(xq + (size_t)sb * 256 + xo));
        const int4 xh = __ldg((const int4*)(xq + (size_t)sb * 256 + xo + 32));
        const float dl = __ldg(xd + (size_t)sb * 8 + 2 * c);
        const float dh = __ldg(xd + (size_t)sb * 8 + 2 * c + 1);
        const int sl = bsum4(xl.x) + bsum4(xl.y) + bsum4(xl.z) + bsum4(xl.w);
        const int sh = bsum4(xh.x) + bsum4(xh.y) + bsum4(xh.z) + bsum4(xh.w);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float d = half_bits_to_f32((u16)(hd[r].x & 0xFFFF));
            const float dmin = half_bits_to_f32((u16)(hd[r].x >> 16));
            int sc0, mn0, sc1, mn1;
            q4k_scale_min(hd[r].y, hd[r].z, hd[r].w, 2 * c, &sc0, &mn0);
            q4k_scale_min(hd[r].y, hd[r].z, hd[r].w, 2 * c + 1, &sc1, &mn1);
            const int m = 0x0F0F0F0F;
            int il = dp4a((int)q[r].x & m, xl.x, 0);
            il = dp4a((int)q[r].y & m, xl.y, il);
            il = dp4a((int)q[r].z & m, xl.z, il);
            il = dp4a((int)q[r].w & m, xl.w, il);
            int ih = dp4a((int)(q[r].x >> 4) & m, xh.x, 0);
            ih = dp4a((int)(q[r].y >> 4) & m, xh.y, ih);
            ih = dp4a((int)(q[r].z >> 4) & m, xh.z, ih);
            ih = dp4a((int)(q[r].w >> 4) & m, xh.w, ih);
            acc[r] += d * (dl * (float)(sc0 * il) + dh * (float)(sc1 * ih)) -
                      dmin * (dl * (float)(mn0 * sl) + dh * (float)(mn1 * sh));
        }
    }
}

// Q6_K: 16 lanes a super-block; lane s = lane % 16: half h = s / 8, run m = 4 (s % 8) of the
// half's 32 qh bytes, elements 128h + 32k + m + (0..4) for k = 0..3 (activation block 4h + k).
template <int R>
__device__ __forceinline__ void q8dot_q6k(const u8* const* rows, int cols, const i8* __restrict__ xq,
                                          const float* __restrict__ xd, int lane, int wi, int nw,
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
        const i8* xs = xq + (size_t)sb * 256 + 128 * h + m;
        int xk[4], sx[4];
        float dk[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            xk[k] = __ldg((const int*)(xs + 32 * k));
            sx[k] = 32 * bsum4(xk[k]);
            dk[k] = __ldg(xd + (size_t)sb * 8 + 4 * h + k);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            u32 q[4];
            q6k_words(qa[r], qb[r], qh[r], q);
            float t = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int sc = (int)(i8)(u8)(sw[r][k] >> scsh);
                t += dk[k] * (float)(sc * (dp4a((int)q[k], xk[k], 0) - sx[k]));
            }
            acc[r] += half_bits_to_f32(dh[r]) * t;
        }
    }
}

// Q8_0: 2 lanes a block, 16 quants a lane, 16 blocks a step.
template <int R>
__device__ __forceinline__ void q8dot_q80(const u8* const* rows, int cols, const i8* __restrict__ xq,
                                          const float* __restrict__ xd, int lane, int wi, int nw,
                                          float* acc) {
    const int nb = cols / 32;
    const int hf = lane & 1;
#pragma unroll 2
    for (int blk = (lane >> 1) + 16 * wi; blk < nb; blk += 16 * nw) {
        u32 w[R][4];
        u16 dw[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const u8* b = rows[r] + (size_t)blk * 34;
            dw[r] = *(const u16*)b;
#pragma unroll
            for (int i = 0; i < 4; ++i) w[r][i] = ld_u32_a2(b + 2 + 16 * hf + 4 * i);
        }
        const int4 xv = __ldg((const int4*)(xq + (size_t)blk * 32 + 16 * hf));
        const float dx = __ldg(xd + blk);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            int si = dp4a((int)w[r][0], xv.x, 0);
            si = dp4a((int)w[r][1], xv.y, si);
            si = dp4a((int)w[r][2], xv.z, si);
            si = dp4a((int)w[r][3], xv.w, si);
            acc[r] += half_bits_to_f32(dw[r]) * dx * (float)si;
        }
    }
}

// Bit 4 of each byte of a word from 4 bits (bit i -> byte i).
__device__ __forceinline__ u32 spread4(u32 b) {
    return ((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25);
}

// Q4_0, Q4_1, Q5_0: 2 lanes a block; lane hf takes nibble bytes 8hf..8hf+7: elements
// 8hf + (0..8) (low nibbles) and 16 + 8hf + (0..8) (high nibbles). Q4_1's minimum term
// m * s_b (xsum: the blocks' s) is added once a block, by lane hf = 0.
template <int R, int T>
__device__ __forceinline__ void q8dot_legacy(const u8* const* rows, int cols,
                                             const i8* __restrict__ xq,
                                             const float* __restrict__ xd,
                                             const float* __restrict__ xsum, int lane, int wi,
                                             int nw, float* acc) {
    const int bb = T == T_Q4_0 ? 18 : (T == T_Q4_1 ? 20 : 22);
    const int qo = T == T_Q4_0 ? 2 : (T == T_Q4_1 ? 4 : 6);
    const int nb = cols / 32;
    const int hf = lane & 1;
#pragma unroll 2
    for (int blk = (lane >> 1) + 16 * wi; blk < nb; blk += 16 * nw) {
        u32 w[R][2], qh[R];
        u16 dw[R], mw[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const u8* b = rows[r] + (size_t)blk * bb;
            dw[r] = *(const u16*)b;
            mw[r] = T == T_Q4_1 ? *(const u16*)(b + 2) : (u16)0;
            qh[r] = T == T_Q5_0 ? ld_u32_a2(b + 2) : 0u;
            w[r][0] = ld_u32_a2(b + qo + 8 * hf);
            w[r][1] = ld_u32_a2(b + qo + 8 * hf + 4);
        }
        const i8* xs = xq + (size_t)blk * 32 + 8 * hf;
        const int2 xl = __ldg((const int2*)xs);
        const int2 xh = __ldg((const int2*)(xs + 16));
        const float dx = __ldg(xd + blk);
        const int sx = T == T_Q4_1 ? 0 : bsum4(xl.x) + bsum4(xl.y) + bsum4(xh.x) + bsum4(xh.y);
        const float sb = T == T_Q4_1 && hf == 0 ? __ldg(xsum + blk) : 0.0f;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            u32 l0 = w[r][0] & 0x0F0F0F0Fu, l1 = w[r][1] & 0x0F0F0F0Fu;
            u32 h0 = (w[r][0] >> 4) & 0x0F0F0F0Fu, h1 = (w[r][1] >> 4) & 0x0F0F0F0Fu;
            if (T == T_Q5_0) {
                const u32 e = 8 * hf;
                l0 |= spread4((qh[r] >> e) & 15u);
                l1 |= spread4((qh[r] >> (e + 4)) & 15u);
                h0 |= spread4((qh[r] >> (e + 16)) & 15u);
                h1 |= spread4((qh[r] >> (e + 20)) & 15u);
            }
            int si = dp4a((int)l0, xl.x, 0);
            si = dp4a((int)l1, xl.y, si);
            si = dp4a((int)h0, xh.x, si);
            si = dp4a((int)h1, xh.y, si);
            const float dd = half_bits_to_f32(dw[r]) * dx;
            if (T == T_Q4_0) acc[r] += dd * (float)(si - 8 * sx);
            else if (T == T_Q5_0) acc[r] += dd * (float)(si - 16 * sx);
            else acc[r] += dd * (float)si + half_bits_to_f32(mw[r]) * sb;
        }
    }
}

template <int R>
__device__ __forceinline__ void q8dot_rows(int t, const u8* const* rows, int cols,
                                           const i8* __restrict__ xq, const float* __restrict__ xd,
                                           const float* __restrict__ xsum, int lane, int wi,
                                           int nw, float* acc) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    switch (t) {
        case T_Q4_K: q8dot_q4k<R>(rows, cols, xq, xd, lane, wi, nw, acc); break;
        case T_Q6_K: q8dot_q6k<R>(rows, cols, xq, xd, lane, wi, nw, acc); break;
        case T_Q8_0: q8dot_q80<R>(rows, cols, xq, xd, lane, wi, nw, acc); break;
        case T_Q4_0: q8dot_legacy<R, T_Q4_0>(rows, cols, xq, xd, xsum, lane, wi, nw, acc); break;
        case T_Q4_1: q8dot_legacy<R, T_Q4_1>(rows, cols, xq, xd, xsum, lane, wi, nw, acc); break;
        case T_Q5_0: q8dot_legacy<R, T_Q5_0>(rows, cols, xq, xd, xsum, lane, wi, nw, acc); break;
        default: break;
    }
}

// The quantized activation's dot product of R rows (quants, scales, sum terms), for mv_body.
template <int R>
struct Q8Dot {
    const i8* __restrict__ xq;
    const float* __restrict__ xd;
    const float* __restrict__ xsum;
    __device__ __forceinline__ void operator()(int t, const u8* const* rows, size_t, int cols,
                                               int lane, int wi, int nw, float* acc) const {
        q8dot_rows<R>(t, rows, cols, xq, xd, xsum, lane, wi, nw, acc);
    }
};

// Two rows a unit.
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)
matvec_q8(const i8* __restrict__ xq, const float* __restrict__ xd, const float* __restrict__ xsum,
          int cols, int mode, int ks, MV_JOB_PARAMS) {
    mv_body<2>(Q8Dot<2>{xq, xd, xsum}, cols, mode, ks, MV_JOB_ARGS);
}

// Four rows a unit.
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)
matvec_q8_4(const i8* __restrict__ xq, const float* __restrict__ xd,
            const float* __restrict__ xsum, int cols, int mode, int ks, MV_JOB_PARAMS) {
    mv_body<4>(Q8Dot<4>{xq, xd, xsum}, cols, mode, ks, MV_JOB_ARGS);
}
