//! CPU reference forward pass (work in progress).
