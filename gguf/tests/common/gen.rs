//! Proptest strategies for random metadata and tensors, and a helper that writes them.

use gguf::{Array, GgufWriter, Metadata, MetadataValueType, TensorDecl, Value};
use proptest::prelude::*;

const SCALARS: [MetadataValueType; 12] = [
    MetadataValueType::U8,
    MetadataValueType::I8,
    MetadataValueType::U16,
    MetadataValueType::I16,
    MetadataValueType::U32,
    MetadataValueType::I32,
    MetadataValueType::F32,
    MetadataValueType::Bool,
    MetadataValueType::String,
    MetadataValueType::U64,
    MetadataValueType::I64,
    MetadataValueType::F64,
];

/// A value of type `ty`; arrays nest at most `depth` more levels.
pub fn value_of(ty: MetadataValueType, depth: u32) -> BoxedStrategy<Value> {
    use MetadataValueType as T;
    match ty {
        T::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        T::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        T::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        T::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        T::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        T::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        // Any bit pattern, NaNs included: compared bit for bit by `same_value`.
        T::F32 => any::<u32>()
            .prop_map(|b| Value::F32(f32::from_bits(b)))
            .boxed(),
        T::F64 => any::<u64>()
            .prop_map(|b| Value::F64(f64::from_bits(b)))
            .boxed(),
        T::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        T::String => "\\PC{0,12}".prop_map(Value::String).boxed(),
        T::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        T::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        T::Array => array_value(depth.saturating_sub(1)),
    }
}

/// An array whose elements may themselves be arrays while `depth > 0`.
pub fn array_value(depth: u32) -> BoxedStrategy<Value> {
    let mut types = SCALARS.to_vec();
    if depth > 0 {
        types.push(MetadataValueType::Array);
    }
    proptest::sample::select(types)
        .prop_flat_map(move |t| {
            proptest::collection::vec(value_of(t, depth), 0..6).prop_map(move |values| {
                Value::Array(Array {
                    elem_type: t,
                    values,
                })
            })
        })
        .boxed()
}

/// Any value, arrays nested up to three levels.
pub fn any_value() -> BoxedStrategy<Value> {
    let mut types = SCALARS.to_vec();
    types.push(MetadataValueType::Array);
    proptest::sample::select(types)
        .prop_flat_map(|t| value_of(t, 3))
        .boxed()
}

/// Random metadata with unique keys, optionally with a random power-of-two alignment.
pub fn metadata() -> impl Strategy<Value = Metadata> {
    (
        proptest::collection::vec(("[a-z._]{1,12}", any_value()), 0..10),
        proptest::option::of(0u32..9),
    )
        .prop_map(|(kvs, align)| {
            let mut m = Metadata::new();
            if let Some(a) = align {
                m.insert("general.alignment", Value::U32(1 << a));
            }
            for (i, (k, v)) in kvs.into_iter().enumerate() {
                m.insert(format!("{k}{i}"), v);
            }
            m
        })
}

/// One tensor: declaration plus data bytes of exactly the right size.
pub fn tensor(index: usize) -> impl Strategy<Value = (TensorDecl, Vec<u8>)> {
    (
        proptest::sample::select(gguf::ALL_TYPES.to_vec()),
        1u64..3,
        proptest::collection::vec(1u64..4, 0..4),
        proptest::option::of(0usize..4),
    )
        .prop_flat_map(move |(ty, blocks, rest, layer)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(rest);
            let name = match layer {
                Some(l) => format!("blk.{l}.t{index}"),
                None => format!("t{index}"),
            };
            let decl = TensorDecl::new(name, &dims, ty);
            let n: u64 =
                dims.iter().product::<u64>() / ty.block_size() as u64 * ty.type_size() as u64;
            proptest::collection::vec(any::<u8>(), n as usize)
                .prop_map(move |data| (decl.clone(), data))
        })
}

/// Up to `max` tensors with unique names.
pub fn tensors(max: usize) -> impl Strategy<Value = Vec<(TensorDecl, Vec<u8>)>> {
    (0..=max).prop_flat_map(|n| (0..n).map(tensor).collect::<Vec<_>>())
}

/// Writes a file with the given metadata and tensors (every other tensor through a reader).
pub fn write(meta: &Metadata, tensors: &[(TensorDecl, Vec<u8>)]) -> Vec<u8> {
    let decls: Vec<TensorDecl> = tensors.iter().map(|(d, _)| d.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), meta, &decls).unwrap();
    for (i, (d, data)) in tensors.iter().enumerate() {
        if i % 2 == 0 {
            w.write_tensor(&d.name, data).unwrap();
        } else {
            w.write_tensor_from(&d.name, data.as_slice()).unwrap();
        }
    }
    w.finish().unwrap()
}

/// Structural equality with floats compared bit for bit.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.elem_type == y.elem_type
                && x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}
