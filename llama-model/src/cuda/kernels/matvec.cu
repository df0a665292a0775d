// Fused dequantize x matrix-vector product over ggml blocks read in place.
//
// y[r] = sum_c W[r][c] * x[c] for a row-major weight of `rows` x `cols` (ggml's ne0 = cols).
// One warp per row, MATVEC_WARPS rows per CTA, f32 accumulation reduced with warp shuffles.
//
// Work split inside a warp, chosen so that the 32 lanes of one load instruction touch
// contiguous bytes (weights) and contiguous, 16-byte aligned runs of x:
// - float types: lane l takes elements l, l + 32, ...;
// - legacy blocks (32 elements): 4 lanes per block, 8 blocks per step; lane s = 0..3 of a block
//   takes quant bytes 4s..4s+3, i.e. elements 4s..4s+3 and 16+4s..16+4s+3 (Q8_0: 8s..8s+7);
// - k-quant super-blocks (256 elements): the whole warp per super-block, 8 elements a lane.
// Every lane thus handles two runs of 4 consecutive elements per step (decode8 below).

#define MATVEC_WARPS 4

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

// `x` must be 16-byte aligned (device allocations are; the Rust side checks).
extern "C" __global__ void __launch_bounds__(MATVEC_WARPS * WARP)
matvec(const u8* __restrict__ w, int t, int rows, int cols, const float* __restrict__ x,
       float* __restrict__ y) {
    const int lane = threadIdx.x & (WARP - 1);
    const int r = blockIdx.x * MATVEC_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const u8* row = w + (size_t)r * row_bytes(t, cols);
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
    acc = warp_sum(acc);
    if (lane == 0) y[r] = acc;
}
