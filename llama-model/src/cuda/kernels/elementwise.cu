// Small per-token kernels: RMSNorm, rotary embedding, SwiGLU, residual add, argmax, and the
// sampler inputs (repetition penalty in place, top-k candidate selection).

#define RED_THREADS 1024

// out[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * w[i]; one CTA (RED_THREADS) per row.
// `out` may alias `x`.
extern "C" __global__ void __launch_bounds__(RED_THREADS)
rmsnorm(const float* x, const float* __restrict__ w, float* out, int n, float eps) {
    const float* xr = x + (size_t)blockIdx.x * n;
    float* orow = out + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) ss += xr[i] * xr[i];
    ss = cta_sum<RED_THREADS>(ss);
    const float scale = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += RED_THREADS) orow[i] = xr[i] * scale * w[i];
}

// Rotary embedding in place, llama.cpp "normal" mode: pair i = elements (2i, 2i + 1) of each
// head turns by pos * base^(-2i / rope_dim) / factor_i (factor 1 when `factors` is null).
// Elements past rope_dim are untouched. x holds n_heads heads of head_dim; one thread per
// (head, pair). The angle is computed in double so long positions keep f32 accuracy.
extern "C" __global__ void rope(float* x, int n_heads, int head_dim, int rope_dim, int pos,
                                float base, const float* __restrict__ factors) {
    const int half = rope_dim / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_heads * half) return;
    const int h = idx / half;
    const int i = idx % half;
    double f = pow((double)base, -2.0 * (double)i / (double)rope_dim);
    if (factors != 0) f /= (double)factors[i];
    const double theta = (double)pos * f;
    const float c = (float)cos(theta);
    const float s = (float)sin(theta);
    float* p = x + (size_t)h * head_dim + 2 * i;
    const float a = p[0];
    const float b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}

// out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

// x[i] += y[i].
extern "C" __global__ void add_inplace(float* x, const float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// x[i] = y[i] (either side may be page-locked host memory mapped into the device's address
// space: the exchanges of a row-split layer with CPU threads, which then need no copy engine).
extern "C" __global__ void store_f32(float* x, const float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = y[i];
}

// Index of the largest x[i] (the lowest index among equal maxima; NaN never wins unless all
// values are NaN, then 0). One CTA of ARGMAX_THREADS threads.
#define ARGMAX_THREADS 1024
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
argmax(const float* __restrict__ x, int n, u32* out) {
    float best = -__int_as_float(0x7f800000);
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += ARGMAX_THREADS) {
        const float v = x[i];
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    __shared__ float sv[ARGMAX_THREADS / WARP];
    __shared__ int si[ARGMAX_THREADS / WARP];
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    if (lane == 0) { sv[wid] = best; si[wid] = bi; }
    __syncthreads();
    if (wid == 0) {
        best = sv[lane];
        bi = si[lane];
#pragma unroll
        for (int o = WARP / 2; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
        }
        if (lane == 0) *out = bi == 0x7fffffff ? 0u : (u32)bi;
    }
}


#define TOPK_TILE 1024
#define TOPK_THREADS 512

// logits[ids[i]] divided by `penalty` when positive, multiplied when not (llama.cpp's rule).
// `ids` must be distinct (the host deduplicates); ids past `vocab` are ignored.
extern "C" __global__ void rep_penalty(float* logits, const u32* __restrict__ ids, int n_ids,
                                       int vocab, float penalty) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ids) return;
    const u32 t = ids[i];
    if (t >= (u32)vocab) return;
    const float l = logits[t];
    logits[t] = l > 0.0f ? l / penalty : l * penalty;
}

// True when (va, ia) ranks before (vb, ib): higher value first, lower id on ties.
__device__ __forceinline__ bool topk_before(float va, u32 ia, float vb, u32 ib) {
    return va > vb || (va == vb && ia < ib);
}

// One reduction pass: CTA b sorts input elements [b * TOPK_TILE, (b + 1) * TOPK_TILE) (value,
// id) in rank order (bitonic sort in shared memory) and writes its first k to out[b * k ..].
// Ids come from `in_i`, or are the element indices when `in_i` is null (the first pass over
// the logits). NaN counts as -inf; padding is (-inf, 0xFFFFFFFF) and ranks last.
extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
topk_pass(const float* __restrict__ in_v, const u32* __restrict__ in_i, int n, int k,
          float* __restrict__ out_v, u32* __restrict__ out_i) {
    __shared__ float sv[TOPK_TILE];
    __shared__ u32 si[TOPK_TILE];
    const float NEG_INF = -__int_as_float(0x7f800000);
    const int base = blockIdx.x * TOPK_TILE;
    for (int j = threadIdx.x; j < TOPK_TILE; j += TOPK_THREADS) {
        const int g = base + j;
        float v = NEG_INF;
        u32 id = 0xFFFFFFFFu;
        if (g < n) {
            v = in_v[g];
            id = in_i != 0 ? in_i[g] : (u32)g;
            if (v != v) v = NEG_INF;
        }
        sv[j] = v;
        si[j] = id;
    }
    __syncthreads();
    for (int size = 2; size <= TOPK_TILE; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            const int t = threadIdx.x;
            const int a = 2 * t - (t & (stride - 1));
            const int b = a + stride;
            // Rank order ("descending") in blocks where (a & size) == 0, reversed otherwise.
            const bool desc = (a & size) == 0;
            const float va = sv[a], vb = sv[b];
            const u32 ia = si[a], ib = si[b];
            const bool b_first = topk_before(vb, ib, va, ia);
            if (b_first == desc) {
                sv[a] = vb; si[a] = ib;
                sv[b] = va; si[b] = ia;
            }
            __syncthreads();
        }
    }
    for (int j = threadIdx.x; j < k; j += TOPK_THREADS) {
        out_v[(size_t)blockIdx.x * k + j] = sv[j];
        out_i[(size_t)blockIdx.x * k + j] = si[j];
    }
}
