//! Device memory bandwidth, measured with a large device-to-device copy (the limit a
//! memory-bound decode step is compared with).

use std::time::Instant;

use super::backend::CudaBackend;
use super::error::{driver, Result};

impl CudaBackend {
    /// Copies `bytes` bytes device to device `reps` times (after one warm-up copy) and returns
    /// the bandwidth in bytes per second, counting each copy's read and write
    /// (`2 * bytes / time`, as bandwidth tests usually report).
    pub fn measure_d2d_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        let s = self.stream();
        let src = s.alloc_zeros::<u8>(bytes.max(1)).map_err(driver("alloc"))?;
        let mut dst = s.alloc_zeros::<u8>(bytes.max(1)).map_err(driver("alloc"))?;
        s.memcpy_dtod(&src, &mut dst).map_err(driver("copy"))?;
        s.synchronize().map_err(driver("sync"))?;
        let t = Instant::now();
        for _ in 0..reps.max(1) {
            s.memcpy_dtod(&src, &mut dst).map_err(driver("copy"))?;
        }
        s.synchronize().map_err(driver("sync"))?;
        let secs = t.elapsed().as_secs_f64();
        Ok(2.0 * bytes.max(1) as f64 * reps.max(1) as f64 / secs)
    }
}
