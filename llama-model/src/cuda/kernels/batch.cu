// Per-token kernels of a batch of n tokens (rows of a [n][width] activation): RMSNorm to f16
// (the GEMM input), rotary embedding at positions pos0 + row, KV-cache stores, causal
// attention of the batch over the f16 cache, SwiGLU to f16 and a per-row argmax.
// The arithmetic of each row matches the one-token kernels (elementwise.cu, attention.cu).

#define BT_THREADS 256

// out[r][i] = f16(x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * w[i]); one CTA per row.
extern "C" __global__ void __launch_bounds__(BT_THREADS)
bt_rmsnorm_f16(const float* __restrict__ x, const float* __restrict__ w, u16* __restrict__ out,
               int n, float eps) {
    const float* xr = x + (size_t)blockIdx.x * n;
    u16* orow = out + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += BT_THREADS) ss += xr[i] * xr[i];
    ss = cta_sum<BT_THREADS>(ss);
    const float scale = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += BT_THREADS) orow[i] = f32_to_half_bits(xr[i] * scale * w[i]);
}

// Rotary embedding in place on n_tok rows of n_heads heads (row r at position pos0 + r),
// llama.cpp's adjacent-pair mode, the angle in double (as `rope`).
extern "C" __global__ void bt_rope(float* x, int n_tok, int n_heads, int head_dim, int rope_dim,
                                   int pos0, float base, const float* __restrict__ factors) {
    const int half = rope_dim / 2;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long per_row = (long long)n_heads * half;
    if (idx >= per_row * n_tok) return;
    const int r = (int)(idx / per_row);
    const int rem = (int)(idx % per_row);
    const int h = rem / half;
    const int i = rem % half;
    double f = pow((double)base, -2.0 * (double)i / (double)rope_dim);
    if (factors != 0) f /= (double)factors[i];
    const double theta = (double)(pos0 + r) * f;
    const float c = (float)cos(theta);
    const float s = (float)sin(theta);
    float* p = x + ((size_t)r * n_heads + h) * head_dim + 2 * i;
    const float a = p[0];
    const float b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}

// Stores rows k[r], v[r] ([n_kv_heads][head_dim] f32) at cache position pos0 + r (f16).
extern "C" __global__ void bt_kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                       u16* __restrict__ kc, u16* __restrict__ vc, int n_tok,
                                       int n_kv_heads, int head_dim, int max_ctx, int pos0) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int per_row = n_kv_heads * head_dim;
    if (i >= (long long)per_row * n_tok) return;
    const int r = (int)(i / per_row);
    const int e = (int)(i % per_row);
    const int h = e / head_dim;
    const int d = e % head_dim;
    const size_t at = ((size_t)h * max_ctx + pos0 + r) * head_dim + d;
    kc[at] = f32_to_half_bits(k[i]);
    vc[at] = f32_to_half_bits(v[i]);
}

// out[i] = f16(silu(gate[i]) * up[i]).
extern "C" __global__ void bt_swiglu_f16(const float* __restrict__ gate, const float* __restrict__ up,
                                         u16* __restrict__ out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i];
    out[i] = f32_to_half_bits(g / (1.0f + expf(-g)) * up[i]);
}

// out[r] = index of the largest x[r][i] (lowest index on ties, NaN never wins); one CTA per row.
extern "C" __global__ void __launch_bounds__(BT_THREADS)
bt_argmax_rows(const float* __restrict__ x, int n, u32* __restrict__ out) {
    const float* xr = x + (size_t)blockIdx.x * n;
    float best = -__int_as_float(0x7f800000);
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += BT_THREADS) {
        const float v = xr[i];
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    __shared__ float sv[BT_THREADS / WARP];
    __shared__ int si[BT_THREADS / WARP];
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    if (lane == 0) { sv[wid] = best; si[wid] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < BT_THREADS / WARP; ++k) {
            if (sv[k] > best || (sv[k] == best && si[k] < bi)) { best = sv[k]; bi = si[k]; }
        }
        out[blockIdx.x] = bi == 0x7fffffff ? 0u : (u32)bi;
    }
}

// Causal attention of a batch over the f16 KV cache. Row r of the batch sits at position
// pos0 + r and attends to positions 0..=pos0 + r (the cache already holds the batch's keys).
// CTA (kvh, tile): KV head kvh, the BA_ROWS query rows (token, head) of `tile` for the
// group = n_heads / n_kv_heads query heads sharing that KV head. Keys and values go through
// shared memory BA_KEYS at a time; each warp keeps an online softmax for 8 rows, lanes over
// keys for the scores and over the head dimension for the weighted sum. Output: f16 rows
// [n_tok][n_heads * head_dim].
#define BA_THREADS 128
#define BA_ROWS 32
#define BA_KEYS 32
#define BA_MAX_HD 128
#define BA_KSTRIDE (BA_MAX_HD + 2)

extern "C" __global__ void __launch_bounds__(BA_THREADS)
bt_attention(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
             u16* __restrict__ out, int n_tok, int n_heads, int n_kv_heads, int head_dim,
             int max_ctx, int pos0, float scale) {
    __shared__ __align__(16) float qs[BA_ROWS][BA_MAX_HD];
    __shared__ __align__(16) u16 ks[BA_KEYS * BA_KSTRIDE];
    __shared__ __align__(16) u16 vs[BA_KEYS * BA_MAX_HD];
    __shared__ float ps[BA_ROWS][BA_KEYS];

    const int group = n_heads / n_kv_heads;
    const int qt = BA_ROWS / group;  // query tokens per CTA
    const int kvh = blockIdx.x;
    const int tok0 = blockIdx.y * qt;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int dim = n_heads * head_dim;

    // Query rows: row r = (token tok0 + r / group, head kvh * group + r % group).
    for (int i = threadIdx.x; i < BA_ROWS * head_dim; i += BA_THREADS) {
        const int r = i / head_dim;
        const int d = i % head_dim;
        const int tok = tok0 + r / group;
        float v = 0.0f;
        if (r < qt * group && tok < n_tok) v = q[(size_t)tok * dim + (size_t)(kvh * group + r % group) * head_dim + d];
        qs[r][d] = v;
    }

    // This warp's rows and their query positions (-1: inactive row).
    int qpos[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int r = warp * 8 + i;
        const int tok = tok0 + r / group;
        qpos[i] = (r < qt * group && tok < n_tok) ? pos0 + tok : -1;
    }
    const int last_tok = min(tok0 + qt, n_tok) - 1;
    const int n_keys = pos0 + last_tok + 1;
    const float ninf = -__int_as_float(0x7f800000);
    float m[8], l[8], acc[8][BA_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        m[i] = ninf;
        l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < BA_MAX_HD / 32; ++e) acc[i][e] = 0.0f;
    }
    const u16* kbase = kc + (size_t)kvh * max_ctx * head_dim;
    const u16* vbase = vc + (size_t)kvh * max_ctx * head_dim;
    const int hpairs = head_dim / 2;

    for (int t0 = 0; t0 < n_keys; t0 += BA_KEYS) {
        __syncthreads();  // previous tile fully used (and, the first time, qs written)
        for (int i = threadIdx.x; i < BA_KEYS * hpairs; i += BA_THREADS) {
            const int j = i / hpairs;
            const int d2 = (i % hpairs) * 2;
            u32 kv = 0u, vv = 0u;
            if (t0 + j < n_keys) {
                kv = *(const u32*)(kbase + (size_t)(t0 + j) * head_dim + d2);
                vv = *(const u32*)(vbase + (size_t)(t0 + j) * head_dim + d2);
            }
            *(u32*)(&ks[j * BA_KSTRIDE + d2]) = kv;
            *(u32*)(&vs[j * BA_MAX_HD + d2]) = vv;
        }
        __syncthreads();

        // Scores: lane = key t0 + lane, for the warp's 8 rows.
        const int kp = t0 + lane;
        float s[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) s[i] = 0.0f;
        const u16* kr = &ks[lane * BA_KSTRIDE];
        for (int d = 0; d < head_dim; d += 2) {
            const u32 kk = *(const u32*)(kr + d);
            const float k0 = half_bits_to_f32((u16)(kk & 0xFFFFu));
            const float k1 = half_bits_to_f32((u16)(kk >> 16));
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float2 qq = *(const float2*)(&qs[warp * 8 + i][d]);
                s[i] += qq.x * k0 + qq.y * k1;
            }
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float sc = (qpos[i] >= 0 && kp <= qpos[i]) ? s[i] * scale : ninf;
            float mx = sc;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mnew = fmaxf(m[i], mx);
            const float p = sc == ninf ? 0.0f : expf(sc - mnew);
            const float corr = m[i] == ninf ? 0.0f : expf(m[i] - mnew);
            l[i] = l[i] * corr + warp_sum(p);
            m[i] = mnew;
            ps[warp * 8 + i][lane] = p;
#pragma unroll
            for (int e = 0; e < BA_MAX_HD / 32; ++e) acc[i][e] *= corr;
        }
        __syncwarp();
        // Weighted sum of V: lane over head dims lane + 32e.
        const int jmax = min(BA_KEYS, n_keys - t0);
        for (int j = 0; j < jmax; ++j) {
            float vv[BA_MAX_HD / 32];
#pragma unroll
            for (int e = 0; e < BA_MAX_HD / 32; ++e) {
                const int d = lane + 32 * e;
                vv[e] = d < head_dim ? half_bits_to_f32(vs[j * BA_MAX_HD + d]) : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float p = ps[warp * 8 + i][j];
#pragma unroll
                for (int e = 0; e < BA_MAX_HD / 32; ++e) acc[i][e] += p * vv[e];
            }
        }
        __syncwarp();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (qpos[i] < 0) continue;
        const int r = warp * 8 + i;
        const int tok = tok0 + r / group;
        const int h = kvh * group + r % group;
        u16* o = out + (size_t)tok * dim + (size_t)h * head_dim;
        const float inv = 1.0f / l[i];
#pragma unroll
        for (int e = 0; e < BA_MAX_HD / 32; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) o[d] = f32_to_half_bits(acc[i][e] * inv);
        }
    }
}
