//! The engine that composes the vramless crates; shared by the example binaries.
