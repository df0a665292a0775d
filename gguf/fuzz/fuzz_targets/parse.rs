//! Fuzz target: any byte string must parse to `Ok` or `Err` without panicking; whatever parses
//! must be internally consistent and survive a write/read round trip through `GgufWriter`.

#![no_main]

use gguf::{GgufFile, GgufWriter, TensorDecl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    for t in file.tensors() {
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(t.offset % file.alignment(), 0);
    }
    for i in 0..file.block_count().min(1024) {
        let _ = file.layer_span(i);
    }
    let _ = file.non_layer_tensors();

    // Round trip: what we read, we can write, and reading that gives the same header.
    let decls: Vec<TensorDecl> = file
        .tensors()
        .iter()
        .map(|t| TensorDecl::new(t.name.clone(), &t.dims, t.ggml_type))
        .collect();
    let Ok(mut w) = GgufWriter::new(Vec::new(), file.metadata(), &decls) else {
        return; // e.g. general.alignment stored as another integer type than u32
    };
    for t in file.tensors() {
        w.write_tensor(&t.name, file.tensor_data(t)).unwrap();
    }
    let again = GgufFile::from_bytes(w.finish().unwrap()).unwrap();
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in file.tensors().iter().zip(again.tensors()) {
        assert_eq!(
            (&a.name, &a.dims, a.ggml_type),
            (&b.name, &b.dims, b.ggml_type)
        );
        assert_eq!(file.tensor_data(a), again.tensor_data(b));
    }
    assert_eq!(again.metadata().len(), file.metadata().len());
});
