//! CPU dequantization of ggml block formats (work in progress).
