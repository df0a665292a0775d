// Fused dequantize x matrix-vector product over ggml blocks read in place.
//
// y[r] = sum_c W[r][c] * x[c] for a row-major weight of `rows` x `cols` (ggml's ne0 = cols).
// One warp per row, MATVEC_WARPS rows per CTA. Float types: lane l reads elements l, l + 32, ...
// (coalesced). Block types: the row is cut into 32-element sub-blocks (a legacy block, or one
// group of a k-quant super-block); lane l takes sub-blocks l, l + 32, ..., so a warp's loads
// cover one contiguous run of blocks. Accumulation is f32, reduced with warp shuffles.

#define MATVEC_WARPS 4

extern "C" __global__ void __launch_bounds__(MATVEC_WARPS * WARP)
matvec(const u8* __restrict__ w, int t, int rows, int cols, const float* __restrict__ x,
       float* __restrict__ y) {
    const int lane = threadIdx.x & (WARP - 1);
    const int r = blockIdx.x * MATVEC_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const u8* row = w + (size_t)r * row_bytes(t, cols);
    float acc = 0.0f;
    if (is_float_type(t)) {
        for (int c = lane; c < cols; c += WARP) acc += float_elem(t, row, c) * x[c];
    } else {
        const int units = cols / 32;
        float v[32];
        for (int u = lane; u < units; u += WARP) {
            decode32(t, row, u, v);
            const float* xs = x + (size_t)u * 32;
#pragma unroll
            for (int j = 0; j < 32; ++j) acc += v[j] * xs[j];
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[r] = acc;
}
