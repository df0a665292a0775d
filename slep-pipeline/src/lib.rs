//! N-buffered layer streaming pipeline (work in progress).
