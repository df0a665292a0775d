// Decode attention (one query token) over an f16 KV cache, split along the context
// (flash-decoding): CTA (h, s) attends query head h to positions [s * ATTN_CHUNK, ...) and
// writes its partial (max, sum of exponentials, weighted sum of V); attn_combine merges the
// partials of each head. Grouped-query attention: query head h reads KV head
// h / (n_heads / n_kv_heads).
//
// Cache layout (per layer): [n_kv_heads][max_ctx][head_dim] f16 (IEEE half bits), for K and V.
// Scratch: n_heads * n_splits * (head_dim + 2) floats.

#define ATTN_CHUNK 256
#define ATTN_THREADS 128
#define ATTN_MAX_HEAD_DIM 256

// Writes this token's K and V rows (f32, [n_kv_heads][head_dim]) at position `pos`.
extern "C" __global__ void kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                    u16* __restrict__ kc, u16* __restrict__ vc, int n_kv_heads,
                                    int head_dim, int max_ctx, int pos) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_kv_heads * head_dim) return;
    const int h = i / head_dim;
    const int d = i % head_dim;
    const size_t at = ((size_t)h * max_ctx + pos) * head_dim + d;
    kc[at] = f32_to_half_bits(k[i]);
    vc[at] = f32_to_half_bits(v[i]);
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attn_partial(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
             float* __restrict__ scratch, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
             int n_ctx, float scale) {
    __shared__ float qs[ATTN_MAX_HEAD_DIM];
    __shared__ float p[ATTN_CHUNK];
    __shared__ float red[ATTN_THREADS / WARP];
    const int h = blockIdx.x;
    const int split = blockIdx.y;
    const int n_splits = gridDim.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const int start = split * ATTN_CHUNK;
    const int len = min(ATTN_CHUNK, n_ctx - start);
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    for (int d = threadIdx.x; d < head_dim; d += ATTN_THREADS) qs[d] = q[(size_t)h * head_dim + d];
    __syncthreads();

    const u16* kbase = kc + ((size_t)kvh * max_ctx + start) * head_dim;
    const u16* vbase = vc + ((size_t)kvh * max_ctx + start) * head_dim;
    // Scores: one warp per position, lanes over the head dimension.
    for (int j = wid; j < len; j += ATTN_THREADS / WARP) {
        const u16* kr = kbase + (size_t)j * head_dim;
        float s = 0.0f;
        for (int d = lane; d < head_dim; d += WARP) s += qs[d] * half_bits_to_f32(kr[d]);
        s = warp_sum(s);
        if (lane == 0) p[j] = s * scale;
    }
    __syncthreads();

    // Chunk maximum.
    float m = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < len; j += ATTN_THREADS) m = fmaxf(m, p[j]);
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) red[wid] = m;
    __syncthreads();
    m = red[0];
#pragma unroll
    for (int i = 1; i < ATTN_THREADS / WARP; ++i) m = fmaxf(m, red[i]);
    __syncthreads();

    // Exponentials and their sum.
    float l = 0.0f;
    for (int j = threadIdx.x; j < len; j += ATTN_THREADS) {
        const float e = expf(p[j] - m);
        p[j] = e;
        l += e;
    }
    l = warp_sum(l);
    if (lane == 0) red[wid] = l;
    __syncthreads();
    l = 0.0f;
#pragma unroll
    for (int i = 0; i < ATTN_THREADS / WARP; ++i) l += red[i];

    // Weighted sum of V: threads over the head dimension (coalesced rows).
    float* out = scratch + ((size_t)h * n_splits + split) * (head_dim + 2);
    for (int d = threadIdx.x; d < head_dim; d += ATTN_THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < len; ++j) acc += p[j] * half_bits_to_f32(vbase[(size_t)j * head_dim + d]);
        out[2 + d] = acc;
    }
    if (threadIdx.x == 0) {
        out[0] = m;
        out[1] = l;
    }
}

// out[h][d] = sum_s acc_s[d] * exp(m_s - M) / sum_s l_s * exp(m_s - M); one CTA per head.
extern "C" __global__ void attn_combine(const float* __restrict__ scratch, float* __restrict__ out,
                                        int head_dim, int n_splits) {
    const int h = blockIdx.x;
    const float* base = scratch + (size_t)h * n_splits * (head_dim + 2);
    float mx = -__int_as_float(0x7f800000);
    for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, base[(size_t)s * (head_dim + 2)]);
    float l = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
        const float* ps = base + (size_t)s * (head_dim + 2);
        l += ps[1] * expf(ps[0] - mx);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_splits; ++s) {
            const float* ps = base + (size_t)s * (head_dim + 2);
            acc += ps[2 + d] * expf(ps[0] - mx);
        }
        out[(size_t)h * head_dim + d] = acc / l;
    }
}
