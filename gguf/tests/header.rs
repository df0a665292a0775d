//! The reader on hand-built files (see `common`): every field's meaning and every rejection.

mod common;

use common::*;
use gguf::{parse_header, GgmlType, GgufError, GgufFile, MetadataValueType, Value};

/// A valid v2 file with one key of each scalar type, a nested array and two tensors.
fn sample(version: u32) -> Vec<u8> {
    let b = Bytes::header(version, 2, 6)
        .str("a.u8")
        .u32(T_U8)
        .u8(200)
        .str("a.i16")
        .u32(T_I16)
        .raw(&(-300i16).to_le_bytes())
        .str("a.f64")
        .u32(T_F64)
        .raw(&1.5f64.to_le_bytes())
        .str("a.bool")
        .u32(T_BOOL)
        .u8(1)
        .str("a.nested")
        .u32(T_ARRAY)
        .u32(T_ARRAY)
        .u64(2)
        .u32(T_I32)
        .u64(1)
        .raw(&(-7i32).to_le_bytes())
        .u32(T_STRING)
        .u64(2)
        .str("x")
        .str("ü")
        .str("a.s")
        .u32(T_STRING)
        .str("hello")
        .tensor("blk.3.w", &[32, 2], GGML_Q4_0, 0)
        .tensor("out", &[3], GGML_F32, 64)
        .pad(32);
    let data_start = b.0.len();
    let b = b.zeros(64).raw(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(b.0.len(), data_start + 64 + 12);
    b.0
}

#[test]
fn parses_every_field_of_a_hand_built_file() {
    for version in [2, 3] {
        let bytes = sample(version);
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version(), version);
        let m = f.metadata();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["a.u8", "a.i16", "a.f64", "a.bool", "a.nested", "a.s"]
        );
        assert_eq!(m.get("a.u8"), Some(&Value::U8(200)));
        assert_eq!(m.get_u32("a.u8").unwrap(), 200);
        assert_eq!(m.get_i32("a.i16").unwrap(), -300);
        assert_eq!(m.get_f32("a.f64").unwrap(), 1.5);
        assert!(m.get_bool("a.bool").unwrap());
        assert_eq!(m.get_str("a.s").unwrap(), "hello");
        let nested = m.get_array("a.nested").unwrap();
        assert_eq!(nested.elem_type, MetadataValueType::Array);
        assert_eq!(
            nested.values[0].as_array().unwrap().values,
            [Value::I32(-7)]
        );
        let strs = nested.values[1].as_array().unwrap();
        assert_eq!(
            strs.values,
            [Value::String("x".into()), Value::String("ü".into())]
        );

        assert_eq!(f.alignment(), 32);
        assert_eq!(f.data_offset() % 32, 0);
        let w = f.tensor("blk.3.w").unwrap();
        assert_eq!(w.ggml_type, GgmlType::Q4_0);
        assert_eq!((w.row_len(), w.n_rows(), w.n_elements()), (32, 2, 64));
        assert_eq!(w.n_bytes, 2 * 18);
        assert_eq!(w.abs_offset, f.data_offset());
        assert_eq!(w.layer_index(), Some(3));
        let out = f.tensor_bytes("out").unwrap();
        assert_eq!(out, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(f.block_count(), 4);
        assert_eq!(f.layer_span(3), vec![w.byte_range()]);
        assert!(f.layer_span(0).is_empty());
        assert_eq!(f.non_layer_tensors()[0].name, "out");
    }
}

#[test]
fn typed_getters_name_key_and_types() {
    let f = GgufFile::parse(&sample(3)).unwrap();
    let m = f.metadata();
    let e = m.get_str("a.u8").unwrap_err().to_string();
    assert!(
        e.contains("a.u8") && e.contains("string") && e.contains("u8"),
        "{e}"
    );
    assert!(matches!(
        m.get_u32("a.i16"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        m.get_u32("nope"),
        Err(GgufError::MissingKey { .. })
    ));
    assert_eq!(m.opt_u32("nope").unwrap(), None);
    assert!(m.opt_bool("a.s").is_err());
    let e = m.get_str_array("a.nested").unwrap_err().to_string();
    assert!(e.contains("array of array"), "{e}");
    assert!(m.get_f32_array("a.s").is_err());
}

fn err(bytes: &[u8]) -> GgufError {
    parse_header(bytes).expect_err("must be rejected")
}

#[test]
fn rejects_bad_magic_versions_and_big_endian() {
    assert!(matches!(err(b"GGU"), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GGML\x03\0\0\0"), GgufError::BadMagic { .. }));
    let v1 = err(&Bytes::header(1, 0, 0).0);
    assert!(v1.to_string().contains("v1"), "{v1}");
    assert!(matches!(
        err(&Bytes::header(4, 0, 0).0),
        GgufError::UnsupportedVersion { version: 4, .. }
    ));
    // A big-endian v3 file: the same magic bytes, every number byte-swapped.
    let be = Bytes::default()
        .raw(b"GGUF")
        .raw(&3u32.to_be_bytes())
        .raw(&0u64.to_be_bytes())
        .raw(&0u64.to_be_bytes());
    let e = err(&be.0);
    assert!(
        e.to_string().contains("big-endian GGUF not supported"),
        "{e}"
    );
}

#[test]
fn rejects_truncation_and_impossible_counts() {
    let bytes = sample(3);
    // Cut inside the header: a Truncated or CountTooLarge error, never a panic.
    for cut in 0..bytes.len() {
        assert!(parse_header(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let huge_tensors = Bytes::header(3, u64::MAX, 0);
    assert!(matches!(
        err(&huge_tensors.0),
        GgufError::CountTooLarge { .. }
    ));
    let huge_kv = Bytes::header(3, 0, 1 << 40);
    assert!(matches!(err(&huge_kv.0), GgufError::CountTooLarge { .. }));
    let huge_str = Bytes::header(3, 0, 1).u64(u64::MAX);
    assert!(matches!(err(&huge_str.0), GgufError::CountTooLarge { .. }));
    let huge_array = Bytes::header(3, 0, 1)
        .str("k")
        .u32(T_ARRAY)
        .u32(T_U64)
        .u64(1 << 61)
        .zeros(64);
    assert!(matches!(
        err(&huge_array.0),
        GgufError::CountTooLarge { .. }
    ));
}

#[test]
fn rejects_bad_values() {
    let one_kv = |ty: u32, value: &[u8]| Bytes::header(3, 0, 1).str("k").u32(ty).raw(value).0;
    assert!(matches!(
        err(&one_kv(13, &[0; 8])),
        GgufError::UnknownValueType { id: 13, .. }
    ));
    assert!(matches!(
        err(&one_kv(T_BOOL, &[2])),
        GgufError::WrongType { .. }
    ));
    let bad_utf8 = Bytes::header(3, 0, 1)
        .str("k")
        .u32(T_STRING)
        .u64(2)
        .raw(&[0xC3, 0x28]);
    assert!(matches!(err(&bad_utf8.0), GgufError::InvalidUtf8 { .. }));
    let dup = Bytes::header(3, 0, 2)
        .str("k")
        .u32(T_U8)
        .u8(1)
        .str("k")
        .u32(T_U8)
        .u8(2);
    assert!(matches!(err(&dup.0), GgufError::DuplicateKey { .. }));
    // Arrays of arrays nested far deeper than the limit.
    let mut deep = Bytes::header(3, 0, 1).str("k").u32(T_ARRAY);
    for _ in 0..1000 {
        deep = deep.u32(T_ARRAY).u64(1);
    }
    let deep = deep.u32(T_U8).u64(0);
    assert!(matches!(err(&deep.0), GgufError::ArrayTooDeep { .. }));
}

fn with_alignment(align: Value) -> Vec<u8> {
    let (ty, raw) = match align {
        Value::U32(v) => (T_U32, v.to_le_bytes().to_vec()),
        Value::F32(v) => (T_F32, v.to_le_bytes().to_vec()),
        _ => unreachable!(),
    };
    Bytes::header(3, 0, 1)
        .str("general.alignment")
        .u32(ty)
        .raw(&raw)
        .0
}

#[test]
fn alignment_must_be_a_power_of_two_integer() {
    for bad in [Value::U32(0), Value::U32(48), Value::F32(32.0)] {
        assert!(matches!(
            err(&with_alignment(bad)),
            GgufError::BadAlignment { .. }
        ));
    }
    let h = parse_header(&with_alignment(Value::U32(64))).unwrap();
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
}

#[test]
fn rejects_bad_tensor_infos() {
    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        Bytes::header(3, 1, 0)
            .tensor("t", dims, ty, offset)
            .pad(32)
            .zeros(data)
            .0
    };
    assert!(parse_header(&one(&[8], GGML_F32, 0, 32)).is_ok());
    assert!(matches!(
        err(&one(&[8], 31, 0, 32)),
        GgufError::UnknownGgmlType { id: 31, .. }
    ));
    assert!(matches!(
        err(&one(&[8], GGML_F32, 0, 31)),
        GgufError::TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        err(&one(&[8], GGML_F32, 16, 64)),
        GgufError::MisalignedTensor { .. }
    ));
    assert!(matches!(
        err(&one(&[8], GGML_F32, u64::MAX - 31, 64)),
        GgufError::TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        err(&one(&[1 << 32, 1 << 32], GGML_F32, 0, 32)),
        GgufError::BadShape { .. }
    ));
    assert!(matches!(
        err(&one(&[16], GGML_Q4_0, 0, 32)),
        GgufError::BadShape { .. }
    ));
    assert!(matches!(
        err(&one(&[1, 1, 1, 1, 1], GGML_F32, 0, 32)),
        GgufError::BadShape { .. }
    ));
    let n_dims_huge = Bytes::header(3, 1, 0).str("t").u32(u32::MAX).zeros(64);
    assert!(matches!(err(&n_dims_huge.0), GgufError::BadShape { .. }));

    let two = |second: &str, offset: u64| {
        Bytes::header(3, 2, 0)
            .tensor("a", &[16], GGML_F16, 0)
            .tensor(second, &[16], GGML_F16, offset)
            .pad(32)
            .zeros(64)
            .0
    };
    assert!(parse_header(&two("b", 32)).is_ok());
    assert!(matches!(
        err(&two("a", 32)),
        GgufError::DuplicateTensor { .. }
    ));
    assert!(matches!(
        err(&two("b", 0)),
        GgufError::TensorsOverlap { .. }
    ));
}

#[test]
fn open_reports_missing_file_with_its_path() {
    let e = GgufFile::open("/nonexistent/model.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn metadata_insert_remove_and_collect_keep_order() {
    let mut m: gguf::Metadata = [
        ("a", Value::U8(1)),
        ("b", Value::U8(2)),
        ("c", Value::U8(3)),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.insert("a", Value::U8(9)), Some(Value::U8(1)));
    assert_eq!(m.remove("b"), Some(Value::U8(2)));
    assert_eq!(m.remove("b"), None);
    m.extend([("d", Value::Bool(true))]);
    let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "c", "d"]);
    assert_eq!(m.get_u32("c").unwrap(), 3);
    assert_eq!(m.get_u32("a").unwrap(), 9);
    assert_eq!(m.len(), 3);
}
