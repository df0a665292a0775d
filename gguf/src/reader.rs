//! Parsing of the GGUF header (metadata and tensor infos) from a byte slice.
//!
//! Every length and count read from the file is checked against the bytes that remain before
//! anything is allocated, so a hostile header cannot make the parser allocate more than a small
//! multiple of the input size.

use std::collections::HashSet;

use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::tensor::{tensor_bytes, TensorInfo, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{Array, MetadataValueType, Value};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// How deeply arrays of arrays may nest before the file is rejected.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// The parsed header of a GGUF file: everything before the tensor data.
///
/// Produced by [`parse_header`], which validates it against the length of the bytes it was
/// given: every tensor's data lies inside them.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        // n <= remaining, which fits in usize.
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a count and checks that `count * min_each` bytes remain.
    fn count(&mut self, min_each: u64, what: &dyn Fn() -> String) -> Result<u64> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let available = self.remaining();
        match count.checked_mul(min_each) {
            Some(need) if need <= available => Ok(count),
            _ => Err(GgufError::CountTooLarge {
                what: what(),
                offset,
                count,
                available,
            }),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let offset = self.offset();
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset,
        })
    }

    fn value_type(&mut self, key: &str) -> Result<MetadataValueType> {
        let offset = self.offset();
        let id = self.u32(&|| format!("value type of key {key:?}"))?;
        MetadataValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            id,
            offset,
        })
    }

    fn value(&mut self, ty: MetadataValueType, key: &str, depth: usize) -> Result<Value> {
        use MetadataValueType as T;
        let what = || format!("value of key {key:?}");
        Ok(match ty {
            T::U8 => Value::U8(self.array::<1>(&what)?[0]),
            T::I8 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            T::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            T::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            T::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            T::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            T::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            T::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            T::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            T::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            T::Bool => {
                let offset = self.offset();
                match self.array::<1>(&what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::WrongType {
                            key: key.to_string(),
                            expected: "bool (0 or 1)".into(),
                            found: format!("byte {b} at offset {offset}"),
                        })
                    }
                }
            }
            T::String => Value::String(self.string(&what)?),
            T::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::ArrayTooDeep {
                        key: key.to_string(),
                        limit: MAX_ARRAY_DEPTH,
                    });
                }
                let elem_type = self.value_type(key)?;
                let n = self.count(elem_type.min_encoded_size(), &|| {
                    format!("element count of array {key:?}")
                })?;
                // Checked above: n elements of at least one byte each fit in the slice.
                let mut values = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    values.push(self.value(elem_type, key, depth + 1)?);
                }
                Value::Array(Array { elem_type, values })
            }
        })
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Reads and validates the alignment from metadata.
pub(crate) fn alignment_of(metadata: &Metadata) -> Result<u64> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => match v.as_integer() {
            Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => {
                Ok(a as u64)
            }
            _ => Err(GgufError::BadAlignment {
                value: format!("{v} ({})", v.type_name()),
            }),
        },
    }
}

fn check_version(version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(GgufError::UnsupportedVersion {
            version,
            hint: " (GGUF v1 is obsolete: re-convert the model with a current llama.cpp)",
        }),
        v if matches!(v.swap_bytes(), 1..=3) => Err(GgufError::BigEndian { version }),
        _ => Err(GgufError::UnsupportedVersion { version, hint: "" }),
    }
}

/// Parses and validates the header of the GGUF held in `bytes`.
///
/// Checks the magic and version (2 or 3; v1, unknown versions and big-endian files are
/// rejected), every count and length against the remaining bytes, UTF-8 of every string,
/// duplicate keys and tensor names, array nesting depth, the alignment, every tensor's shape,
/// ggml type, alignment and that its data lies inside `bytes` without overlapping another's.
pub fn parse_header(bytes: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = match bytes.get(..4) {
        Some(m) if m == GGUF_MAGIC => c.array(&|| "magic".into())?,
        Some(m) => return Err(GgufError::BadMagic { found: m.to_vec() }),
        None => {
            return Err(GgufError::BadMagic {
                found: bytes.to_vec(),
            })
        }
    };
    debug_assert_eq!(magic, GGUF_MAGIC);
    let version = c.u32(&|| "version".into())?;
    check_version(version)?;

    // Minimum encoded sizes: a tensor info is name length (8) + n_dims (4) + type (4) + offset
    // (8); a key-value pair is key length (8) + type (4) + a value of at least one byte.
    let n_tensors = c.count(24, &|| "tensor count".into())?;
    let n_kv = c.count(13, &|| "metadata key-value count".into())?;

    let mut metadata = Metadata::new();
    metadata.reserve(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let ty = c.value_type(&key)?;
        let value = c.value(ty, &key, 0)?;
        metadata.insert_new(key, value)?;
    }
    let alignment = alignment_of(&metadata)?;

    let mut raw = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadShape {
                tensor: name,
                dims: Vec::new(),
                reason: format!("{n_dims} dimensions, ggml allows at most {MAX_DIMS}"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = c.u32(&|| format!("ggml type of tensor {name:?}"))?;
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
            tensor: name.clone(),
            id: type_id,
        })?;
        let n_bytes = tensor_bytes(ggml_type, &dims).map_err(|reason| GgufError::BadShape {
            tensor: name.clone(),
            dims: dims.clone(),
            reason,
        })?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: name,
                offset,
                alignment,
            });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name });
        }
        raw.push((name, dims, ggml_type, offset, n_bytes));
    }

    let file_len = bytes.len() as u64;
    let data_offset = align_up(c.offset(), alignment).unwrap_or(u64::MAX);
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ggml_type, offset, n_bytes) in raw {
        let abs = data_offset.checked_add(offset);
        let end = abs.and_then(|a| a.checked_add(n_bytes));
        match (abs, end) {
            (Some(abs_offset), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                abs_offset,
                n_bytes,
            }),
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: name,
                    start: abs.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    check_overlap(&tensors)?;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn check_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.abs_offset);
    for w in order.windows(2) {
        if w[1].abs_offset < w[0].abs_offset + w[0].n_bytes {
            return Err(GgufError::TensorsOverlap {
                first: w[0].name.clone(),
                second: w[1].name.clone(),
            });
        }
    }
    Ok(())
}
