// Shared prelude of every vramless kernel module (prepended by the Rust side before NVRTC sees
// a module's source; NVRTC gets no include paths and no CUDA headers).
//
// ggml block layouts (all little-endian, byte aligned, read in place from the weight buffer):
//   Q4_0 (18 B / 32): f16 d, 16 B nibbles; x = d * (q - 8); byte j: elem j (low), j + 16 (high)
//   Q4_1 (20 B / 32): f16 d, f16 m, 16 B nibbles; x = d * q + m
//   Q5_0 (22 B / 32): f16 d, u32 qh (bit i = bit 4 of elem i), 16 B nibbles; x = d * (q - 16)
//   Q8_0 (34 B / 32): f16 d, 32 x i8; x = d * q
//   Q4_K (144 B / 256): f16 d, f16 dmin, 12 B packed 6-bit scales/mins, 128 B nibbles
//   Q5_K (176 B / 256): as Q4_K plus 32 B of fifth bits before the nibbles
//   Q6_K (210 B / 256): 128 B low nibbles, 64 B high bit pairs, 16 x i8 scales, f16 d

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;

#define WARP 32

// Type codes shared with the Rust side (cuda::ops::WeightKind).
#define T_F32 0
#define T_F16 1
#define T_BF16 2
#define T_Q4_0 3
#define T_Q4_1 4
#define T_Q5_0 5
#define T_Q8_0 6
#define T_Q4_K 7
#define T_Q5_K 8
#define T_Q6_K 9

__device__ __forceinline__ float half_bits_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_half_bits(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf16_bits_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Unaligned little-endian loads (blocks are byte aligned: 18, 20, 22, 34, 210-byte strides).
__device__ __forceinline__ u16 ld_u16(const u8* p) {
    return (u16)p[0] | ((u16)p[1] << 8);
}

__device__ __forceinline__ u32 ld_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

__device__ __forceinline__ float ld_f16(const u8* p) {
    return half_bits_to_f32(ld_u16(p));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a CTA of THREADS threads (a multiple of WARP); every thread gets the total.
template <int THREADS>
__device__ __forceinline__ float cta_sum(float v) {
    __shared__ float part[THREADS / WARP];
    v = warp_sum(v);
    const int lane = threadIdx.x & (WARP - 1);
    const int wid = threadIdx.x >> 5;
    if (lane == 0) part[wid] = v;
    __syncthreads();
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < THREADS / WARP; ++i) t += part[i];
    __syncthreads();
    return t;
}

// 6-bit (scale, min) of group g (0..8) of a Q4_K/Q5_K super-block.
__device__ __forceinline__ void kq_scale_min(const u8* s, int g, float* sc, float* mn) {
    if (g < 4) {
        *sc = (float)(s[g] & 63);
        *mn = (float)(s[g + 4] & 63);
    } else {
        *sc = (float)((s[g + 4] & 0x0F) | ((s[g - 4] >> 6) << 4));
        *mn = (float)((s[g + 4] >> 4) | ((s[g] >> 6) << 4));
    }
}

// Bytes per block and elements per block of each type code.
__device__ __forceinline__ int type_block_bytes(int t) {
    switch (t) {
        case T_F32: return 4;
        case T_F16: return 2;
        case T_BF16: return 2;
        case T_Q4_0: return 18;
        case T_Q4_1: return 20;
        case T_Q5_0: return 22;
        case T_Q8_0: return 34;
        case T_Q4_K: return 144;
        case T_Q5_K: return 176;
        default: return 210;
    }
}

// Decodes the 32 elements of "sub-block" u of a row into v[0..32]. A sub-block is a whole
// legacy block, or group u % 8 (32 elements) of k-quant super-block u / 8. Not used for the
// float types (they are read element-wise, coalesced).
__device__ __forceinline__ void decode32(int t, const u8* row, int u, float* v) {
    if (t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0 || t == T_Q8_0) {
        const int bb = type_block_bytes(t);
        const u8* b = row + (size_t)u * bb;
        const float d = ld_f16(b);
        if (t == T_Q8_0) {
#pragma unroll
            for (int j = 0; j < 32; ++j) v[j] = d * (float)(i8)b[2 + j];
        } else if (t == T_Q4_0) {
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const u8 q = b[2 + j];
                v[j] = d * (float)((int)(q & 0x0F) - 8);
                v[j + 16] = d * (float)((int)(q >> 4) - 8);
            }
        } else if (t == T_Q4_1) {
            const float m = ld_f16(b + 2);
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const u8 q = b[4 + j];
                v[j] = d * (float)(q & 0x0F) + m;
                v[j + 16] = d * (float)(q >> 4) + m;
            }
        } else {
            const u32 qh = ld_u32(b + 2);
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const u8 q = b[6 + j];
                const int lo = (int)(q & 0x0F) | (int)(((qh >> j) & 1u) << 4);
                const int hi = (int)(q >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
                v[j] = d * (float)(lo - 16);
                v[j + 16] = d * (float)(hi - 16);
            }
        }
        return;
    }
    const int sb = u >> 3;
    const int g = u & 7;
    if (t == T_Q4_K || t == T_Q5_K) {
        const u8* b = row + (size_t)sb * type_block_bytes(t);
        const float d = ld_f16(b);
        const float dmin = ld_f16(b + 2);
        float sc, mn;
        kq_scale_min(b + 4, g, &sc, &mn);
        const float dl = d * sc;
        const float ml = dmin * mn;
        const int c = g >> 1;
        const int shift = (g & 1) * 4;
        if (t == T_Q4_K) {
            const u8* qs = b + 16 + c * 32;
#pragma unroll
            for (int l = 0; l < 32; ++l) v[l] = dl * (float)((qs[l] >> shift) & 0x0F) - ml;
        } else {
            const u8* qh = b + 16;
            const u8* qs = b + 48 + c * 32;
#pragma unroll
            for (int l = 0; l < 32; ++l) {
                const int q = ((qs[l] >> shift) & 0x0F) | (((qh[l] >> g) & 1) << 4);
                v[l] = dl * (float)q - ml;
            }
        }
        return;
    }
    // Q6_K: group g covers elements 32g..32g+32: half h = g / 4, k = g % 4 within the half.
    const u8* b = row + (size_t)sb * 210;
    const float d = ld_f16(b + 208);
    const int h = g >> 2;
    const int k = g & 3;
    const u8* ql = b + h * 64 + (k & 1) * 32;
    const u8* qh = b + 128 + h * 32;
    const i8* sc = (const i8*)(b + 192);
    const int nib = (k >> 1) * 4;
    const float d0 = d * (float)sc[2 * g];
    const float d1 = d * (float)sc[2 * g + 1];
#pragma unroll
    for (int l = 0; l < 32; ++l) {
        const int q = (((ql[l] >> nib) & 0x0F) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
        v[l] = (l < 16 ? d0 : d1) * (float)q;
    }
}

// Element c of a float-typed row.
__device__ __forceinline__ float float_elem(int t, const u8* row, int c) {
    if (t == T_F32) return __uint_as_float(ld_u32(row + 4 * (size_t)c));
    const u16 h = ld_u16(row + 2 * (size_t)c);
    return t == T_F16 ? half_bits_to_f32(h) : bf16_bits_to_f32(h);
}

__device__ __forceinline__ bool is_float_type(int t) {
    return t == T_F32 || t == T_F16 || t == T_BF16;
}

// Bytes of one row of `cols` elements.
__device__ __forceinline__ size_t row_bytes(int t, int cols) {
    if (t == T_F32) return (size_t)cols * 4;
    if (t == T_F16 || t == T_BF16) return (size_t)cols * 2;
    if (t == T_Q4_K || t == T_Q5_K || t == T_Q6_K) return (size_t)(cols / 256) * type_block_bytes(t);
    return (size_t)(cols / 32) * type_block_bytes(t);
}
