//! [`GgufWriter`]: a streaming GGUF v3 writer.

use std::collections::HashSet;
use std::io::{Read, Write};

use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::reader::{alignment_of, GGUF_MAGIC, MAX_ARRAY_DEPTH};
use crate::tensor::tensor_bytes;
use crate::types::GgmlType;
use crate::value::{MetadataValueType, Value};

/// A tensor to be written: its name, shape (ggml order, `dims[0]` = row length) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDecl {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
}

impl TensorDecl {
    /// A declaration from its parts.
    pub fn new(name: impl Into<String>, dims: &[u64], ggml_type: GgmlType) -> Self {
        TensorDecl {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type,
        }
    }
}

struct Planned {
    name: String,
    n_bytes: u64,
}

/// Writes a GGUF v3 file to any [`Write`], streaming: the header (metadata and every tensor
/// info) is written by [`GgufWriter::new`], then each tensor's data in declaration order, each
/// padded to the alignment. Only one tensor's data passes through at a time.
///
/// The alignment is `general.alignment` from the metadata (a power of two) or 32.
/// Writing the wrong tensor, the wrong number of bytes, or finishing early is an error.
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<Planned>,
    next: usize,
    alignment: u64,
    /// Bytes written since the start of the data section.
    data_pos: u64,
}

impl<W: Write> std::fmt::Debug for GgufWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("tensors", &self.tensors.len())
            .field("next", &self.next)
            .field("alignment", &self.alignment)
            .finish()
    }
}

fn check_value(key: &str, v: &Value, depth: usize) -> Result<()> {
    if let Value::Array(a) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep {
                key: key.to_string(),
                limit: MAX_ARRAY_DEPTH,
            });
        }
        for e in &a.values {
            if e.value_type() != a.elem_type {
                return Err(GgufError::MixedArray {
                    key: key.to_string(),
                    expected: a.elem_type.to_string(),
                    found: e.type_name(),
                });
            }
            check_value(key, e, depth + 1)?;
        }
    }
    Ok(())
}

fn encode_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn encode_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => encode_str(buf, s),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            buf.extend_from_slice(&a.elem_type.id().to_le_bytes());
            buf.extend_from_slice(&(a.values.len() as u64).to_le_bytes());
            for e in &a.values {
                encode_value(buf, e);
            }
        }
    }
}

fn pad_to(pos: u64, alignment: u64) -> u64 {
    (alignment - pos % alignment) % alignment
}

impl<W: Write> GgufWriter<W> {
    /// Validates the metadata and tensor declarations and writes the header to `out`.
    ///
    /// Errors: an invalid `general.alignment`, arrays whose elements do not all have the declared
    /// element type or that nest deeper than [`crate::MAX_ARRAY_DEPTH`], duplicate tensor names,
    /// invalid shapes (more than 4 dims, overflow, row length not a whole number of blocks), or
    /// a write failure.
    pub fn new(mut out: W, metadata: &Metadata, tensors: &[TensorDecl]) -> Result<Self> {
        let alignment = alignment_of(metadata)?;
        if let Some(v) = metadata.get(crate::reader::ALIGNMENT_KEY) {
            if v.value_type() != MetadataValueType::U32 {
                return Err(GgufError::BadAlignment {
                    value: format!("{v} ({}): the writer requires a u32", v.type_name()),
                });
            }
        }
        let mut buf = Vec::new();
        buf.extend_from_slice(&GGUF_MAGIC);
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            check_value(key, value, 0)?;
            encode_str(&mut buf, key);
            buf.extend_from_slice(&value.value_type().id().to_le_bytes());
            encode_value(&mut buf, value);
        }
        let mut names = HashSet::new();
        let mut planned = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor {
                    name: t.name.clone(),
                });
            }
            let n_bytes =
                tensor_bytes(t.ggml_type, &t.dims).map_err(|reason| GgufError::BadShape {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                    reason,
                })?;
            encode_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            buf.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            buf.extend_from_slice(&offset.to_le_bytes());
            planned.push(Planned {
                name: t.name.clone(),
                n_bytes,
            });
            offset = offset
                .checked_add(n_bytes)
                .and_then(|o| o.checked_add(pad_to(o, alignment)))
                .ok_or_else(|| GgufError::Writer("total data size overflows u64".into()))?;
        }
        let pad = pad_to(buf.len() as u64, alignment);
        buf.resize(buf.len() + pad as usize, 0);
        out.write_all(&buf).map_err(GgufError::Write)?;
        Ok(GgufWriter {
            out,
            tensors: planned,
            next: 0,
            alignment,
            data_pos: 0,
        })
    }

    /// The name of the tensor whose data must be written next, or `None` when all are written.
    pub fn next_tensor(&self) -> Option<&str> {
        self.tensors.get(self.next).map(|t| t.name.as_str())
    }

    fn expect(&self, name: &str) -> Result<u64> {
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => Ok(t.n_bytes),
            Some(t) => Err(GgufError::Writer(format!(
                "tensor {name:?} written out of order: {:?} comes next",
                t.name
            ))),
            None => Err(GgufError::Writer(format!(
                "tensor {name:?} written but all declared tensors are already written"
            ))),
        }
    }

    fn pad_after(&mut self, n_bytes: u64) -> Result<()> {
        self.data_pos += n_bytes;
        let pad = pad_to(self.data_pos, self.alignment);
        let zeros = [0u8; 256];
        let mut left = pad;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.out.write_all(&zeros[..n]).map_err(GgufError::Write)?;
            left -= n as u64;
        }
        self.data_pos += pad;
        self.next += 1;
        Ok(())
    }

    /// Writes the data of tensor `name`, which must be the next declared tensor, with exactly its
    /// byte size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let n_bytes = self.expect(name)?;
        if data.len() as u64 != n_bytes {
            return Err(GgufError::Writer(format!(
                "tensor {name:?} needs {n_bytes} bytes, got {}",
                data.len()
            )));
        }
        self.out.write_all(data).map_err(GgufError::Write)?;
        self.pad_after(n_bytes)
    }

    /// Like [`GgufWriter::write_tensor`], copying the data from `reader` (exactly the tensor's
    /// byte size is read), so a large tensor never has to sit in memory.
    pub fn write_tensor_from(&mut self, name: &str, reader: impl Read) -> Result<()> {
        let n_bytes = self.expect(name)?;
        let copied =
            std::io::copy(&mut reader.take(n_bytes), &mut self.out).map_err(GgufError::Write)?;
        if copied != n_bytes {
            return Err(GgufError::Writer(format!(
                "tensor {name:?} needs {n_bytes} bytes, the reader gave only {copied}; \
                 the output is now incomplete"
            )));
        }
        self.pad_after(n_bytes)
    }

    /// Checks that every declared tensor was written, flushes and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::Writer(format!(
                "finish called before tensor {:?} ({} of {}) was written",
                t.name,
                self.next + 1,
                self.tensors.len()
            )));
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }
}
