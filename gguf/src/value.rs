//! Metadata values: the thirteen GGUF value types, including (nested) arrays.

use std::fmt;

/// The type of a metadata value, with the numeric ids GGUF stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MetadataValueType {
    /// Unsigned 8-bit integer (id 0).
    U8 = 0,
    /// Signed 8-bit integer (id 1).
    I8 = 1,
    /// Unsigned 16-bit integer (id 2).
    U16 = 2,
    /// Signed 16-bit integer (id 3).
    I16 = 3,
    /// Unsigned 32-bit integer (id 4).
    U32 = 4,
    /// Signed 32-bit integer (id 5).
    I32 = 5,
    /// 32-bit float (id 6).
    F32 = 6,
    /// Boolean stored as one byte, 0 or 1 (id 7).
    Bool = 7,
    /// UTF-8 string with a u64 length prefix (id 8).
    String = 8,
    /// Array: u32 element type, u64 count, elements (id 9).
    Array = 9,
    /// Unsigned 64-bit integer (id 10).
    U64 = 10,
    /// Signed 64-bit integer (id 11).
    I64 = 11,
    /// 64-bit float (id 12).
    F64 = 12,
}

impl MetadataValueType {
    /// The type with GGUF id `id`, or `None` for ids GGUF does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        use MetadataValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The numeric id stored in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Lower-case name (`"u32"`, `"string"`, `"array"`, ...).
    pub fn name(self) -> &'static str {
        use MetadataValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The smallest number of bytes one value of this type takes in a file.
    pub(crate) fn min_encoded_size(self) -> u64 {
        use MetadataValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for MetadataValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An array value: its declared element type and its elements.
///
/// For arrays of arrays (`elem_type == Array`) every element is a [`Value::Array`] with its own
/// element type.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The element type declared in the file.
    pub elem_type: MetadataValueType,
    /// The elements, each of type `elem_type`.
    pub values: Vec<Value>,
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A type description such as `"array of string"`.
    pub fn type_name(&self) -> String {
        format!("array of {}", self.elem_type)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 32-bit integer.
    I32(i32),
    /// 32-bit float.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values of one type.
    Array(Array),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// Signed 64-bit integer.
    I64(i64),
    /// 64-bit float.
    F64(f64),
}

impl Value {
    /// The GGUF type of this value.
    pub fn value_type(&self) -> MetadataValueType {
        use MetadataValueType as T;
        match self {
            Value::U8(_) => T::U8,
            Value::I8(_) => T::I8,
            Value::U16(_) => T::U16,
            Value::I16(_) => T::I16,
            Value::U32(_) => T::U32,
            Value::I32(_) => T::I32,
            Value::F32(_) => T::F32,
            Value::Bool(_) => T::Bool,
            Value::String(_) => T::String,
            Value::Array(_) => T::Array,
            Value::U64(_) => T::U64,
            Value::I64(_) => T::I64,
            Value::F64(_) => T::F64,
        }
    }

    /// A type description for error messages: `"u32"`, `"string"`, `"array of i32"`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => a.type_name(),
            other => other.value_type().name().to_string(),
        }
    }

    /// The value as a signed 128-bit integer when it is any integer type.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as `f64` when it is `F32` or `F64`.
    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, when this is a `String` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, when this is an `Array` value.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// Human-readable rendering; arrays longer than 8 elements are summarised as
    /// `[a, b, c, ... (N elements)]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(a) => {
                const SHOWN: usize = 8;
                f.write_str("[")?;
                for (i, v) in a.values.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.values.len() > SHOWN {
                    write!(f, ", ... ({} elements)", a.values.len())?;
                }
                f.write_str("]")
            }
        }
    }
}
