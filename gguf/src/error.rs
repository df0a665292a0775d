//! The error type of every fallible operation in this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a GGUF file.
///
/// Each variant names what was wrong (byte offset, metadata key or tensor name) so that a
/// one-line message is enough to locate the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, mapped or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The operating system error.
        source: std::io::Error,
    },
    /// Writing to the output failed.
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The bytes found at offset 0.
        found: Vec<u8>,
    },
    /// The file is a byte-swapped (big-endian) GGUF.
    #[error(
        "big-endian GGUF not supported (version field reads {version:#010x} little-endian); \
         convert the file to little-endian"
    )]
    BigEndian {
        /// The version field as read little-endian.
        version: u32,
    },
    /// The GGUF version is not 2 or 3.
    #[error("unsupported GGUF version {version}: only versions 2 and 3 are supported{hint}")]
    UnsupportedVersion {
        /// The version found in the file.
        version: u32,
        /// Extra advice (for example, to re-convert v1 files).
        hint: &'static str,
    },
    /// The data ends before a field that must be there.
    #[error(
        "truncated GGUF: {what} at offset {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the data.
        available: u64,
    },
    /// A count or length in the header cannot possibly fit in the rest of the file.
    #[error(
        "corrupt GGUF: {what} at offset {offset} is {count}, which cannot fit in the {available} \
         bytes left"
    )]
    CountTooLarge {
        /// The count or length field.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// The value found.
        count: u64,
        /// Bytes left in the data.
        available: u64,
    },
    /// A string is not valid UTF-8.
    #[error("corrupt GGUF: {what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The string field.
        what: String,
        /// Byte offset of the string's bytes.
        offset: u64,
    },
    /// A metadata value type id is not one GGUF defines.
    #[error("corrupt GGUF: unknown metadata value type {id} for key {key:?} at offset {offset}")]
    UnknownValueType {
        /// The key whose value has the bad type.
        key: String,
        /// The type id found.
        id: u32,
        /// Byte offset of the type field.
        offset: u64,
    },
    /// Arrays nest deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("corrupt GGUF: array for key {key:?} nests deeper than {limit} levels")]
    ArrayTooDeep {
        /// The key holding the array.
        key: String,
        /// The nesting limit.
        limit: usize,
    },
    /// An array holds an element of another type than the array's element type (writer input).
    #[error("array for key {key:?} declares elements of type {expected} but holds a {found}")]
    MixedArray {
        /// The key holding the array.
        key: String,
        /// The declared element type.
        expected: String,
        /// The type of the offending element.
        found: String,
    },
    /// The same metadata key occurs twice.
    #[error("corrupt GGUF: metadata key {key:?} occurs twice")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The same tensor name occurs twice.
    #[error("corrupt GGUF: tensor name {name:?} occurs twice")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
    },
    /// `general.alignment` is zero, not a power of two or not an unsigned integer.
    #[error("invalid general.alignment {value}: must be a power of two (default 32)")]
    BadAlignment {
        /// The value found, as text.
        value: String,
    },
    /// A tensor's ggml type id is unknown or removed from ggml.
    #[error("tensor {tensor:?}: unknown ggml type id {id}")]
    UnknownGgmlType {
        /// The tensor.
        tensor: String,
        /// The type id found.
        id: u32,
    },
    /// A tensor's shape is invalid (dimension count, overflow, or not a whole number of blocks).
    #[error("tensor {tensor:?}: invalid shape {dims:?}: {reason}")]
    BadShape {
        /// The tensor.
        tensor: String,
        /// The dimensions found (possibly only the first few).
        dims: Vec<u64>,
        /// What is wrong with them.
        reason: String,
    },
    /// A tensor's data offset is not a multiple of the alignment.
    #[error(
        "tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data lies (partly) outside the file.
    #[error(
        "tensor {tensor:?}: data at bytes {start}..{end} lies outside the file ({file_len} bytes); \
         the file is truncated or corrupt"
    )]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start offset (saturated on overflow).
        start: u64,
        /// Absolute end offset (saturated on overflow).
        end: u64,
        /// Length of the data.
        file_len: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("corrupt GGUF: data of tensors {first:?} and {second:?} overlap")]
    TensorsOverlap {
        /// The tensor starting first.
        first: String,
        /// The tensor overlapping it.
        second: String,
    },
    /// A metadata key the caller needs is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key asked for.
        key: String,
    },
    /// A metadata value has another type than the caller asked for.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        /// The key asked for.
        key: String,
        /// What the getter accepts.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// No tensor has this name.
    #[error("tensor {name:?} not found")]
    TensorNotFound {
        /// The name asked for.
        name: String,
    },
    /// The writer was used out of order or given data of the wrong size.
    #[error("GGUF writer: {0}")]
    Writer(String),
}

/// Result alias with [`GgufError`].
pub type Result<T> = std::result::Result<T, GgufError>;
