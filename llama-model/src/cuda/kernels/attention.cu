// Decode attention (one query token) over an f16 KV cache, split along the context
// (flash-decoding): CTA (h, s) attends query head h to its split of the positions and writes
// its partial (max, sum of exponentials, weighted sum of V); the last CTA of each head merges
// the head's partials. Grouped-query attention: query head h reads KV head h / (n_heads / n_kv_heads).
//
// The context length is either a launch parameter or read from device memory (`step[0]` is
// the position of the token being decoded, so n_ctx = step[0] + 1): a captured CUDA graph
// replays with a fixed grid, splits past the context exit early. A split covers
// ceil(n_ctx / n_splits) positions rounded up to 32, walked in tiles of ATTN_CHUNK with an
// online softmax.
//
// Cache layout (per layer): [n_kv_heads][max_ctx][head_dim] f16 (IEEE half bits), for K and V.
// Scratch: n_heads * n_splits * (head_dim + 2) floats.

#define ATTN_CHUNK 256
#define ATTN_THREADS 128
#define ATTN_MAX_HEAD_DIM 256
#define ATTN_PER_THREAD (ATTN_MAX_HEAD_DIM / ATTN_THREADS)

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

// Rotary embedding of the query and key heads of one token plus the f16 store of its key and
// value rows into the caches, in one launch. `qkv` holds [n_heads][head_dim] queries, then
// [n_kv_heads][head_dim] keys, then as many values (contiguous). Position: step[0] when `step`
// is not null, else `pos`. Rotation as the `rope` kernel (llama.cpp normal mode, angle in
// double). Work items: one per (head, pair) of the n_heads + n_kv_heads rotated heads, then
// one per value pair.
extern "C" __global__ void rope_kv(float* qkv, u16* __restrict__ kc, u16* __restrict__ vc,
                                   int n_heads, int n_kv_heads, int head_dim, int rope_dim,
                                   int max_ctx, const u32* __restrict__ step, int pos,
                                   float base, const float* __restrict__ factors) {
    if (step != 0) pos = (int)step[0];
    const int hp = head_dim / 2;
    const int n_rot = (n_heads + n_kv_heads) * hp;
    const int n_val = n_kv_heads * hp;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_rot + n_val) return;
    if (idx >= n_rot) {
        const int j = idx - n_rot;
        const int h = j / hp;
        const int i = j % hp;
        const float* v = qkv + (size_t)(n_heads + n_kv_heads) * head_dim + (size_t)h * head_dim;
        const size_t at = ((size_t)h * max_ctx + pos) * head_dim + 2 * i;
        vc[at] = f32_to_half_bits(v[2 * i]);
        vc[at + 1] = f32_to_half_bits(v[2 * i + 1]);
        return;
    }
    const int h = idx / hp;
    const int i = idx % hp;
    float* p = qkv + (size_t)h * head_dim + 2 * i;
    float a = p[0];
    float b = p[1];
    if (2 * i < rope_dim) {
        double f = pow((double)base, -2.0 * (double)i / (double)rope_dim);
        if (factors != 0) f /= (double)factors[i];
        const double theta = (double)pos * f;
        const float c = (float)cos(theta);
        const float s = (float)sin(theta);
        const float ra = a * c - b * s;
        const float rb = a * s + b * c;
        a = ra;
        b = rb;
        p[0] = a;
        p[1] = b;
    }
    if (h >= n_heads) {
        const size_t at = ((size_t)(h - n_heads) * max_ctx + pos) * head_dim + 2 * i;
        kc[at] = f32_to_half_bits(a);
        kc[at + 1] = f32_to_half_bits(b);
    }
}

// Context length: step[0] + 1 when `step` is not null, else n_ctx. The last CTA of a head to
// finish (counted in counters[h], which it resets to 0 for the next launch) merges the head's
// partials into out[h]: out[h][d] = sum_s acc_s[d] exp(m_s - M) / sum_s l_s exp(m_s - M), empty
// splits (m_s = -inf, l_s = 0) weighing nothing.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attn_partial(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
             float* scratch, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
             int n_ctx, const u32* __restrict__ step, float scale, float* __restrict__ att,
             u32* counters) {
    __shared__ float qs[ATTN_MAX_HEAD_DIM];
    __shared__ float p[ATTN_CHUNK];
    __shared__ float red[ATTN_THREADS / WARP];
    if (step != 0) n_ctx = (int)step[0] + 1;
    const int h = blockIdx.x;
    const int split = blockIdx.y;
    const int n_splits = gridDim.y;
    const int kvh = h / (n_heads / n_kv_heads);
    int per = (n_ctx + n_splits - 1) / n_splits;
    per = (per + 31) & ~31;
    const int start = min(split * per, n_ctx);
    const int end = min(start + per, n_ctx);
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    for (int d = threadIdx.x; d < head_dim; d += ATTN_THREADS) qs[d] = q[(size_t)h * head_dim + d];

    const float NEG_INF = -__int_as_float(0x7f800000);
    float m = NEG_INF;
    float l = 0.0f;
    float acc[ATTN_PER_THREAD];
#pragma unroll
    for (int i = 0; i < ATTN_PER_THREAD; ++i) acc[i] = 0.0f;
    const u16* kh = kc + (size_t)kvh * max_ctx * head_dim;
    const u16* vh = vc + (size_t)kvh * max_ctx * head_dim;
    for (int t0 = start; t0 < end; t0 += ATTN_CHUNK) {
        const int len = min(ATTN_CHUNK, end - t0);
        __syncthreads();  // qs written / previous tile's p consumed
        // Scores: one warp per position, lanes over the head dimension.
        for (int j = wid; j < len; j += ATTN_THREADS / WARP) {
            const u16* kr = kh + (size_t)(t0 + j) * head_dim;
            float s = 0.0f;
            for (int d = lane; d < head_dim; d += WARP) s += qs[d] * half_bits_to_f32(kr[d]);
            s = warp_sum(s);
            if (lane == 0) p[j] = s * scale;
        }
        __syncthreads();
        float mt = NEG_INF;
        for (int j = threadIdx.x; j < len; j += ATTN_THREADS) mt = fmaxf(mt, p[j]);
#pragma unroll
        for (int o = WARP / 2; o > 0; o >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
        if (lane == 0) red[wid] = mt;
        __syncthreads();
        mt = red[0];
#pragma unroll
        for (int i = 1; i < ATTN_THREADS / WARP; ++i) mt = fmaxf(mt, red[i]);
        const float mn = fmaxf(m, mt);
        const float corr = expf(m - mn);  // 0 on the first tile (m = -inf)
        __syncthreads();  // every thread has read red
        float lt = 0.0f;
        for (int j = threadIdx.x; j < len; j += ATTN_THREADS) {
            const float e = expf(p[j] - mn);
            p[j] = e;
            lt += e;
        }
        lt = warp_sum(lt);
        if (lane == 0) red[wid] = lt;
        __syncthreads();
        lt = 0.0f;
#pragma unroll
        for (int i = 0; i < ATTN_THREADS / WARP; ++i) lt += red[i];
        l = l * corr + lt;
        m = mn;
        // Weighted sum of V: threads over the head dimension (coalesced rows).
#pragma unroll
        for (int i = 0; i < ATTN_PER_THREAD; ++i) {
            const int d = threadIdx.x + i * ATTN_THREADS;
            if (d < head_dim) {
                float a = 0.0f;
                const u16* vr = vh + (size_t)t0 * head_dim + d;
                for (int j = 0; j < len; ++j) a += p[j] * half_bits_to_f32(vr[(size_t)j * head_dim]);
                acc[i] = acc[i] * corr + a;
            }
        }
    }
    float* out = scratch + ((size_t)h * n_splits + split) * (head_dim + 2);
#pragma unroll
    for (int i = 0; i < ATTN_PER_THREAD; ++i) {
        const int d = threadIdx.x + i * ATTN_THREADS;
        if (d < head_dim) out[2 + d] = acc[i];
    }
    if (threadIdx.x == 0) {
        out[0] = m;
        out[1] = l;
    }
    // Merge: the last CTA of this head.
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counters[h], 1u) == (u32)(n_splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile float* base = scratch + (size_t)h * n_splits * (head_dim + 2);
    float mx = NEG_INF;
    for (int sp = 0; sp < n_splits; ++sp) mx = fmaxf(mx, base[(size_t)sp * (head_dim + 2)]);
    float lt = 0.0f;
    for (int sp = 0; sp < n_splits; ++sp) {
        const volatile float* ps = base + (size_t)sp * (head_dim + 2);
        if (ps[1] > 0.0f) lt += ps[1] * expf(ps[0] - mx);
    }
    for (int d = threadIdx.x; d < head_dim; d += ATTN_THREADS) {
        float a = 0.0f;
        for (int sp = 0; sp < n_splits; ++sp) {
            const volatile float* ps = base + (size_t)sp * (head_dim + 2);
            if (ps[1] > 0.0f) a += ps[2 + d] * expf(ps[0] - mx);
        }
        att[(size_t)h * head_dim + d] = a / lt;
    }
    if (threadIdx.x == 0) counters[h] = 0;
}
