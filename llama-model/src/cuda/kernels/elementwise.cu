// Small per-token kernels: RMSNorm, rotary embedding, SwiGLU, residual add, argmax.

#define RED_THREADS 256

// Sum over a CTA of RED_THREADS threads; every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[RED_THREADS / WARP];
    v = warp_sum(v);
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    if (lane == 0) part[wid] = v;
    __syncthreads();
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < RED_THREADS / WARP; ++i) t += part[i];
    __syncthreads();
    return t;
}

// out[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * w[i]; one CTA (RED_THREADS) per row.
// `out` may alias `x`.
extern "C" __global__ void __launch_bounds__(RED_THREADS)
rmsnorm(const float* x, const float* __restrict__ w, float* out, int n, float eps) {
    const float* xr = x + (size_t)blockIdx.x * n;
    float* orow = out + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) ss += xr[i] * xr[i];
    ss = block_sum(ss);
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

// Index of the largest x[i] (the lowest index among equal maxima; NaN never wins unless all
// values are NaN, then 0). One CTA of RED_THREADS threads.
extern "C" __global__ void __launch_bounds__(RED_THREADS)
argmax(const float* __restrict__ x, int n, u32* out) {
    float best = -__int_as_float(0x7f800000);
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) {
        const float v = x[i];
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    __shared__ float sv[RED_THREADS / WARP];
    __shared__ int si[RED_THREADS / WARP];
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    if (lane == 0) { sv[wid] = best; si[wid] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < RED_THREADS / WARP; ++k) {
            if (sv[k] > best || (sv[k] == best && si[k] < bi)) { best = sv[k]; bi = si[k]; }
        }
        *out = bi == 0x7fffffff ? 0u : (u32)bi;
    }
}
