//! [`NvmeReader`] for the `vramless-nvme-direct` driver's file reader (feature `nvme-direct`):
//! an [`NvmeSource`](crate::NvmeSource) over an [`ExtentReader`] streams a file off a
//! namespace by its extents.

use nvme_direct::{DmaMemory, ExtentReader, RegisterIo};

use crate::source::nvme::{NvmeError, NvmeReader};

impl<R, M> NvmeReader for ExtentReader<R, M>
where
    R: RegisterIo + Send,
    M: DmaMemory + Send,
    M::Buffer: Send,
{
    fn block_size(&self) -> u64 {
        ExtentReader::block_size(self)
    }

    fn capacity(&self) -> u64 {
        let bs = ExtentReader::block_size(self).max(1);
        self.file_len().div_ceil(bs).saturating_mul(bs)
    }

    fn read_blocks(&mut self, offset: u64, dst: &mut [u8]) -> Result<(), NvmeError> {
        self.read_at(offset, dst).map_err(Into::into)
    }
}
