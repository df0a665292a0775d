// Few-row products of the multi-sequence step (compiled after matvec.cu, whose block decoders
// it shares): y[k][r] (+)= W[r] . x[k] for n <= N activation rows x (f16, the GEMM's input
// layout [n][cols]), each weight block decoded ONCE for all n rows, so a decode step of a few
// sequences streams the weights at matrix-vector speed instead of the small-tile GEMM's.
// One warp per weight row (MM_WARPS rows a CTA); f32 accumulation; lane shares reduced by warp
// shuffles. y is [n][rows] f32; with `accumulate` the product is added (residual add).

#define MM_WARPS 4

// x[e .. e + 4) of an f16 row as floats (e a multiple of 4: one 8-byte load).
__device__ __forceinline__ float4 ld_h4(const u16* __restrict__ x, int e) {
    const uint2 u = *(const uint2*)(x + e);
    return make_float4(half_bits_to_f32((u16)(u.x & 0xFFFFu)), half_bits_to_f32((u16)(u.x >> 16)),
                       half_bits_to_f32((u16)(u.y & 0xFFFFu)), half_bits_to_f32((u16)(u.y >> 16)));
}

__device__ __forceinline__ float dot8h(const float* v, const u16* __restrict__ x, int e0, int e1) {
    const float4 a = ld_h4(x, e0);
    const float4 c = ld_h4(x, e1);
    return v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * c.x + v[5] * c.y +
           v[6] * c.z + v[7] * c.w;
}

template <int N>
__device__ __forceinline__ void mm_body(const u8* __restrict__ w, int t, int rows, int cols,
                                        const u16* __restrict__ x, int n, float* __restrict__ y,
                                        int accumulate) {
    const int lane = threadIdx.x & (WARP - 1);
    const int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const u8* row = w + (size_t)r * row_bytes(t, cols);
    float acc[N];
#pragma unroll
    for (int k = 0; k < N; ++k) acc[k] = 0.0f;
    float v[8];
    int e0, e1;
    if (is_float_type(t)) {
        for (int c = lane; c < cols; c += WARP) {
            const float wv = float_elem(t, row, c);
#pragma unroll
            for (int k = 0; k < N; ++k)
                if (k < n) acc[k] += wv * half_bits_to_f32(x[(size_t)k * cols + c]);
        }
    } else if (t == T_Q4_K || t == T_Q5_K || t == T_Q6_K) {
        const int bb = type_block_bytes(t);
        const int nb = cols / 256;
        for (int sb = 0; sb < nb; ++sb) {
            decode8(t, row + (size_t)sb * bb, lane, v, &e0, &e1);
#pragma unroll
            for (int k = 0; k < N; ++k)
                if (k < n) acc[k] += dot8h(v, x + (size_t)k * cols + (size_t)sb * 256, e0, e1);
        }
    } else {
        const int bb = type_block_bytes(t);
        const int nb = cols / 32;
        const int s = lane & 3;
        for (int blk = lane >> 2; blk < nb; blk += 8) {
            decode8(t, row + (size_t)blk * bb, s, v, &e0, &e1);
#pragma unroll
            for (int k = 0; k < N; ++k)
                if (k < n) acc[k] += dot8h(v, x + (size_t)k * cols + (size_t)blk * 32, e0, e1);
        }
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
        const float s = warp_sum(acc[k]);
        if (lane == 0 && k < n) {
            float* o = y + (size_t)k * rows + r;
            *o = accumulate ? *o + s : s;
        }
    }
}

#define MM_ENTRY(NAME, N)                                                                       \
    extern "C" __global__ void __launch_bounds__(MM_WARPS * WARP)                               \
    NAME(const u8* __restrict__ w, int t, int rows, int cols, const u16* __restrict__ x, int n, \
         float* __restrict__ y, int accumulate) {                                               \
        mm_body<N>(w, t, rows, cols, x, n, y, accumulate);                                      \
    }
MM_ENTRY(mt_matvec2, 2)
MM_ENTRY(mt_matvec4, 4)
MM_ENTRY(mt_matvec8, 8)
