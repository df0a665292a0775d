//! Userspace NVMe driver over VFIO (work in progress).
