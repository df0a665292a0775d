//! sampler (work in progress).
