// Embedding lookup: out[i][c] = W[tokens[i]][c], dequantized from ggml blocks in place.
// One CTA per token; threads stride over 32-element sub-blocks (float types: over elements).
// A token id >= rows writes NaN (the Rust side validates ids first; NaN makes a miss visible).

extern "C" __global__ void embed_rows(const u8* __restrict__ w, int t, int rows, int cols,
                                      const u32* __restrict__ tokens, float* __restrict__ out) {
    const u32 tok = tokens[blockIdx.x];
    float* o = out + (size_t)blockIdx.x * cols;
    if (tok >= (u32)rows) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = __int_as_float(0x7fc00000);
        return;
    }
    const u8* row = w + (size_t)tok * row_bytes(t, cols);
    if (is_float_type(t)) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = float_elem(t, row, c);
        return;
    }
    float v[32];
    for (int u = threadIdx.x; u < cols / 32; u += blockDim.x) {
        decode32(t, row, u, v);
#pragma unroll
        for (int j = 0; j < 32; ++j) o[(size_t)u * 32 + j] = v[j];
    }
}
