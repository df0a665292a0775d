//! Tiered placement planner and residency cache (work in progress).
