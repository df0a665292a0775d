//! chat (work in progress).
