// Multi-sequence step kernels: the rows of a step belong to several sequences, each at its own
// positions, with keys and values in a paged f16 pool. Pool of one layer: [slot][n_kv_heads]
// [head_dim] with slot = block * MT_BLOCK + offset; a sequence's block table row lists its
// blocks in position order. The arithmetic of each row is that of the batch kernels
// (batch.cu): rope angle in double, f16 KV, online-softmax attention with f32 accumulators.

#define MT_BLOCK 16
#define MT_THREADS 256

// Rotary embedding in place on n_tok rows of n_heads heads, row r at position pos[r].
extern "C" __global__ void mt_rope(float* x, int n_tok, int n_heads, int head_dim, int rope_dim,
                                   const int* __restrict__ pos, float base,
                                   const float* __restrict__ factors) {
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
    const double theta = (double)pos[r] * f;
    const float c = (float)cos(theta);
    const float s = (float)sin(theta);
    float* p = x + ((size_t)r * n_heads + h) * head_dim + 2 * i;
    const float a = p[0];
    const float b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}

// Stores rows k[r], v[r] (kv_dim f32 each) at pool slot slot[r], rounded to f16.
extern "C" __global__ void mt_kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                       u16* __restrict__ kp, u16* __restrict__ vp, int n_tok,
                                       int kv_dim, const int* __restrict__ slot) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)kv_dim * n_tok) return;
    const int r = (int)(i / kv_dim);
    const int e = (int)(i % kv_dim);
    const size_t at = (size_t)slot[r] * kv_dim + e;
    kp[at] = f32_to_half_bits(k[i]);
    vp[at] = f32_to_half_bits(v[i]);
}

// out[i] = x[rows[i]] (rows of width floats); one CTA per output row.
extern "C" __global__ void __launch_bounds__(MT_THREADS)
mt_gather_rows(const float* __restrict__ x, float* __restrict__ out, const int* __restrict__ rows,
               int width) {
    const float* src = x + (size_t)rows[blockIdx.x] * width;
    float* dst = out + (size_t)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += MT_THREADS) dst[i] = src[i];
}

// Causal attention of every row of a step over its own sequence's paged keys and values.
// A tile is 4 ints: (first row, rows, position of the first row, sequence); its rows are
// consecutive positions of one sequence, at most MA_ROWS / group of them. CTA (kvh, tile):
// KV head kvh and the group = n_heads / n_kv_heads query heads sharing it, for the tile's rows;
// keys and values through shared memory MA_KEYS at a time (looked up in the block table
// `table`, `width` blocks per sequence row); each warp keeps an online softmax for 8 rows,
// lanes over keys for the scores and over the head dimension for the weighted sum. Output: f16
// rows [n][n_heads * head_dim].
#define MA_THREADS 128
#define MA_ROWS 32
#define MA_KEYS 32
#define MA_MAX_HD 128
#define MA_KSTRIDE (MA_MAX_HD + 2)

extern "C" __global__ void __launch_bounds__(MA_THREADS)
mt_attention(const float* __restrict__ q, const u16* __restrict__ kp, const u16* __restrict__ vp,
             u16* __restrict__ out, const int* __restrict__ tiles, const int* __restrict__ table,
             int width, int n_heads, int n_kv_heads, int head_dim, float scale) {
    __shared__ __align__(16) float qs[MA_ROWS][MA_MAX_HD];
    __shared__ __align__(16) u16 ks[MA_KEYS * MA_KSTRIDE];
    __shared__ __align__(16) u16 vs[MA_KEYS * MA_MAX_HD];
    __shared__ float ps[MA_ROWS][MA_KEYS];

    const int group = n_heads / n_kv_heads;
    const int kvh = blockIdx.x;
    const int* tile = tiles + 4 * blockIdx.y;
    const int row0 = tile[0];
    const int n_rows = tile[1];
    const int pos0 = tile[2];
    const int* blocks = table + (size_t)tile[3] * width;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int dim = n_heads * head_dim;
    const int kv_dim = n_kv_heads * head_dim;

    // Query rows: r = (tile row r / group, head kvh * group + r % group).
    for (int i = threadIdx.x; i < MA_ROWS * head_dim; i += MA_THREADS) {
        const int r = i / head_dim;
        const int d = i % head_dim;
        const int t = r / group;
        float v = 0.0f;
        if (t < n_rows) v = q[(size_t)(row0 + t) * dim + (size_t)(kvh * group + r % group) * head_dim + d];
        qs[r][d] = v;
    }

    int qpos[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int r = warp * 8 + i;
        const int t = r / group;
        qpos[i] = t < n_rows ? pos0 + t : -1;
    }
    const int n_keys = pos0 + n_rows;
    const float ninf = -__int_as_float(0x7f800000);
    float m[8], l[8], acc[8][MA_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        m[i] = ninf;
        l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < MA_MAX_HD / 32; ++e) acc[i][e] = 0.0f;
    }
    const int hpairs = head_dim / 2;

    for (int t0 = 0; t0 < n_keys; t0 += MA_KEYS) {
        __syncthreads();
        for (int i = threadIdx.x; i < MA_KEYS * hpairs; i += MA_THREADS) {
            const int j = i / hpairs;
            const int d2 = (i % hpairs) * 2;
            u32 kv = 0u, vv = 0u;
            const int p = t0 + j;
            if (p < n_keys) {
                const size_t slot = (size_t)blocks[p / MT_BLOCK] * MT_BLOCK + p % MT_BLOCK;
                const size_t at = slot * kv_dim + (size_t)kvh * head_dim + d2;
                kv = *(const u32*)(kp + at);
                vv = *(const u32*)(vp + at);
            }
            *(u32*)(&ks[j * MA_KSTRIDE + d2]) = kv;
            *(u32*)(&vs[j * MA_MAX_HD + d2]) = vv;
        }
        __syncthreads();

        const int kpos = t0 + lane;
        float s[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) s[i] = 0.0f;
        const u16* kr = &ks[lane * MA_KSTRIDE];
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
            const float sc = (qpos[i] >= 0 && kpos <= qpos[i]) ? s[i] * scale : ninf;
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
            for (int e = 0; e < MA_MAX_HD / 32; ++e) acc[i][e] *= corr;
        }
        __syncwarp();
        const int jmax = min(MA_KEYS, n_keys - t0);
        for (int j = 0; j < jmax; ++j) {
            float vv[MA_MAX_HD / 32];
#pragma unroll
            for (int e = 0; e < MA_MAX_HD / 32; ++e) {
                const int d = lane + 32 * e;
                vv[e] = d < head_dim ? half_bits_to_f32(vs[j * MA_MAX_HD + d]) : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float p = ps[warp * 8 + i][j];
#pragma unroll
                for (int e = 0; e < MA_MAX_HD / 32; ++e) acc[i][e] += p * vv[e];
            }
        }
        __syncwarp();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (qpos[i] < 0) continue;
        const int r = warp * 8 + i;
        const int t = r / group;
        const int h = kvh * group + r % group;
        u16* o = out + (size_t)(row0 + t) * dim + (size_t)h * head_dim;
        const float inv = 1.0f / l[i];
#pragma unroll
        for (int e = 0; e < MA_MAX_HD / 32; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) o[d] = f32_to_half_bits(acc[i][e] * inv);
        }
    }
}

// The two parts of a row-split product joined into rows of ld = g + c values:
// dst[t][j] (+)= j < g ? dev[t][j] : host[t][j - g] for n rows t, where dev holds the device's
// first g values of each row and host (mapped page-locked memory the CPU threads wrote) the
// last c.
extern "C" __global__ void mt_join_cols(float* __restrict__ dst, const float* __restrict__ dev,
                                        const float* __restrict__ host, int n, int ld, int g,
                                        int accumulate) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * ld) return;
    const int t = (int)(i / ld);
    const int j = (int)(i % ld);
    const int c = ld - g;
    const float v = j < g ? dev[(size_t)t * g + j] : host[(size_t)t * c + (j - g)];
    dst[i] = accumulate ? dst[i] + v : v;
}

// dst[i] = src[i] for n f16 values widened to f32 (dst: mapped page-locked host memory, the
// input of the CPU threads' rows of a split product).
extern "C" __global__ void mt_f16_to_f32(float* __restrict__ dst, const u16* __restrict__ src,
                                         int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = half_bits_to_f32(src[i]);
}
