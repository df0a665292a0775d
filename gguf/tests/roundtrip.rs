//! Property test: random metadata (nested arrays included) and random tensors, written by
//! `GgufWriter` and read back, come back equal; plus the writer's own error checks.

mod common;

use common::gen::{metadata, same_value, tensors, write};
use gguf::{Array, Value};
use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Metadata, MetadataValueType, TensorDecl};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_then_read_gives_back_the_same_file(meta in metadata(), ts in tensors(6)) {
        let bytes = write(&meta, &ts);
        let f = GgufFile::from_bytes(bytes).unwrap();
        prop_assert_eq!(f.version(), 3);
        prop_assert_eq!(f.metadata().len(), meta.len());
        for ((k1, v1), (k2, v2)) in meta.iter().zip(f.metadata().iter()) {
            prop_assert_eq!(k1, k2);
            prop_assert!(same_value(v1, v2), "{} differs: {:?} vs {:?}", k1, v1, v2);
        }
        let align = meta.get_u64("general.alignment").unwrap_or(32);
        prop_assert_eq!(f.alignment(), align);
        prop_assert_eq!(f.data_offset() % align, 0);
        prop_assert_eq!(f.tensors().len(), ts.len());
        for ((decl, data), info) in ts.iter().zip(f.tensors()) {
            prop_assert_eq!(&info.name, &decl.name);
            prop_assert_eq!(&info.dims, &decl.dims);
            prop_assert_eq!(info.ggml_type, decl.ggml_type);
            prop_assert_eq!(info.offset % align, 0);
            prop_assert_eq!(f.tensor_data(info), data.as_slice());
        }
        // Every layer's span covers exactly its tensors' bytes (plus padding between them).
        for i in 0..f.block_count() {
            let span = f.layer_span(i);
            for t in f.layer_tensors(i) {
                let r = t.byte_range();
                prop_assert!(r.is_empty() || span.iter().any(|s| s.start <= r.start && r.end <= s.end));
            }
        }
    }
}

fn decls() -> Vec<TensorDecl> {
    vec![
        TensorDecl::new("a", &[8], GgmlType::F32),
        TensorDecl::new("b", &[32, 2], GgmlType::Q8_0),
    ]
}

#[test]
fn writer_enforces_order_sizes_and_completeness() {
    let m = Metadata::new();
    let mut w = GgufWriter::new(Vec::new(), &m, &decls()).unwrap();
    assert_eq!(w.next_tensor(), Some("a"));
    assert!(matches!(
        w.write_tensor("b", &[0; 68]),
        Err(GgufError::Writer(_))
    ));
    assert!(matches!(
        w.write_tensor("a", &[0; 31]),
        Err(GgufError::Writer(_))
    ));
    w.write_tensor("a", &[0; 32]).unwrap();
    // Q8_0: 34 bytes per 32 elements (ggml block_q8_0), two rows.
    let short: &[u8] = &[0; 60];
    assert!(matches!(
        w.write_tensor_from("b", short),
        Err(GgufError::Writer(_))
    ));

    let mut w = GgufWriter::new(Vec::new(), &m, &decls()).unwrap();
    w.write_tensor("a", &[0; 32]).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("\"b\""), "{e}");

    let mut w = GgufWriter::new(Vec::new(), &m, &decls()).unwrap();
    w.write_tensor("a", &[1; 32]).unwrap();
    w.write_tensor("b", &[2; 68]).unwrap();
    assert!(w.write_tensor("c", &[]).is_err());
    let bytes = w.finish().unwrap();
    // Data section: a (32 bytes, already aligned), then b at offset 32, padded to 128 in total.
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.tensor("b").unwrap().offset, 32);
    assert_eq!(f.as_bytes().len() as u64, f.data_offset() + 128);
}

#[test]
fn writer_rejects_invalid_declarations_and_metadata() {
    let m = Metadata::new();
    let dup = [
        TensorDecl::new("a", &[8], GgmlType::F32),
        TensorDecl::new("a", &[8], GgmlType::F32),
    ];
    assert!(matches!(
        GgufWriter::new(Vec::new(), &m, &dup),
        Err(GgufError::DuplicateTensor { .. })
    ));
    let bad_shape = [TensorDecl::new("q", &[16], GgmlType::Q4_0)];
    assert!(matches!(
        GgufWriter::new(Vec::new(), &m, &bad_shape),
        Err(GgufError::BadShape { .. })
    ));
    let mut mixed = Metadata::new();
    mixed.insert(
        "k",
        Value::Array(Array {
            elem_type: MetadataValueType::U8,
            values: vec![Value::U8(1), Value::I8(1)],
        }),
    );
    assert!(matches!(
        GgufWriter::new(Vec::new(), &mixed, &[]),
        Err(GgufError::MixedArray { .. })
    ));
    let mut align = Metadata::new();
    align.insert("general.alignment", Value::U32(24));
    assert!(matches!(
        GgufWriter::new(Vec::new(), &align, &[]),
        Err(GgufError::BadAlignment { .. })
    ));
    align.insert("general.alignment", Value::U64(64));
    assert!(matches!(
        GgufWriter::new(Vec::new(), &align, &[]),
        Err(GgufError::BadAlignment { .. })
    ));
}

#[test]
fn layer_span_merges_padding_and_keeps_separate_ranges() {
    // Alignment 32; F32 tensors of 1 element (4 bytes, padded to 32) and 8 elements (32 bytes).
    let decls = [
        TensorDecl::new("blk.0.a", &[1], GgmlType::F32), // offset 0, 4 bytes
        TensorDecl::new("blk.0.b", &[8], GgmlType::F32), // offset 32, 32 bytes
        TensorDecl::new("blk.1.a", &[8], GgmlType::F32), // offset 64
        TensorDecl::new("blk.0.c", &[8], GgmlType::F32), // offset 96
        TensorDecl::new("output_norm.weight", &[8], GgmlType::F32), // offset 128
    ];
    let mut w = GgufWriter::new(Vec::new(), &Metadata::new(), &decls).unwrap();
    for d in &decls {
        let n = d.dims[0] as usize * 4;
        w.write_tensor(&d.name, &vec![7u8; n]).unwrap();
    }
    let f = GgufFile::from_bytes(w.finish().unwrap()).unwrap();
    let d = f.data_offset();
    // a and b are separated only by padding: one range; c is after blk.1.a: a second range.
    assert_eq!(f.layer_span(0), vec![d..d + 64, d + 96..d + 128]);
    assert_eq!(f.layer_span(1), vec![d + 64..d + 96]);
    assert!(f.layer_span(2).is_empty());
    assert_eq!(f.block_count(), 2);
    let names: Vec<&str> = f.layer_tensors(0).iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["blk.0.a", "blk.0.b", "blk.0.c"]);
    assert_eq!(f.non_layer_tensors().len(), 1);
    assert_eq!(f.tensor("blk.0.c").unwrap().offset, 96);
}
