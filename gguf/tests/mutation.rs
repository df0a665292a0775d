//! Hardening: mutated valid files (truncated, bytes flipped, counts overwritten with huge
//! values) must parse to `Ok` or `Err`, never panic, and never make a single allocation larger
//! than a small multiple of the input size.
//!
//! Inputs: random files written by `GgufWriter` and the real Llama 3 vocabulary file (plus the
//! default model's header when it is available).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::gen::{metadata, tensors, write};
use gguf::{parse_header, GgufFile};
use proptest::prelude::*;

/// Tracks the largest single allocation made by the current thread.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only records sizes in a thread-local cell
// (const-initialised, no destructor, so it never allocates itself).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Parses `bytes` and checks the allocation bound. A `Value` is 32 bytes and the smallest
/// encoded value 1 byte, so no structure may exceed ~32x the input; 64x leaves room.
fn parse_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    LARGEST.with(|l| l.set(0));
    let result = parse_header(bytes);
    let largest = LARGEST.with(|l| l.get());
    let limit = 64 * bytes.len() + (64 << 10);
    prop_assert!(
        largest <= limit,
        "one allocation of {largest} bytes for {} input bytes ({:?})",
        bytes.len(),
        result.as_ref().err()
    );
    // Whatever parses must be internally consistent.
    if let Ok(h) = result {
        for t in &h.tensors {
            prop_assert!(t.byte_range().end <= bytes.len() as u64);
            prop_assert_eq!(t.offset % h.alignment, 0);
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Huge(usize, u64),
}

fn mutation(len: usize) -> impl Strategy<Value = Mutation> {
    let len = len.max(1);
    let huge = prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1u64 << 32),
        Just(1u64 << 40),
        Just(u64::from(u32::MAX)),
        any::<u64>()
    ];
    prop_oneof![
        (0..len).prop_map(Mutation::Truncate),
        proptest::collection::vec((0..len, 1u8..=255), 1..8).prop_map(Mutation::Flip),
        (0..len, huge).prop_map(|(at, v)| Mutation::Huge(at, v)),
    ]
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match m {
        Mutation::Truncate(at) => b.truncate(*at),
        Mutation::Flip(flips) => {
            for &(at, x) in flips {
                b[at] ^= x;
            }
        }
        Mutation::Huge(at, v) => {
            let end = (*at + 8).min(b.len());
            b[*at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_writer_files_never_panic(
        (bytes, m) in (metadata(), tensors(4))
            .prop_map(|(meta, ts)| write(&meta, &ts))
            .prop_flat_map(|b| { let l = b.len(); (Just(b), mutation(l)) })
    ) {
        parse_bounded(&apply(&bytes, &m))?;
    }

    #[test]
    fn every_truncation_of_a_writer_file_is_an_error(
        (meta, ts) in (metadata(), tensors(3))
    ) {
        let bytes = write(&meta, &ts);
        let end_of_data = GgufFile::parse(&bytes).unwrap().tensors().iter()
            .map(|t| t.byte_range().end).max().unwrap_or(0) as usize;
        for cut in 0..bytes.len() {
            let r = parse_header(&bytes[..cut]);
            // Cutting the header or any tensor's data must fail; only trailing padding may go.
            if cut < end_of_data {
                prop_assert!(r.is_err(), "cut at {} of {} parsed", cut, bytes.len());
            }
        }
    }
}

/// The Llama 3 vocabulary GGUF (part of the repository: missing fails), read once.
fn vocab_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let p = test_support::fixture(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf"),
        );
        std::fs::read(p).unwrap()
    })
}

proptest! {
    // Each case parses a 7.8 MB file with 400k strings: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn mutated_llama3_vocab_never_panics(m in mutation(7_818_140)) {
        let bytes = vocab_bytes();
        prop_assume!(match &m {
            Mutation::Truncate(at) => *at <= bytes.len(),
            Mutation::Flip(f) => f.iter().all(|&(at, _)| at < bytes.len()),
            Mutation::Huge(at, _) => *at < bytes.len(),
        });
        parse_bounded(&apply(bytes, &m))?;
    }
}

#[test]
fn default_model_header_mutations_never_panic() {
    let Some(path) = test_support::model_or_skip() else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let data_offset = parse_header(&bytes).unwrap().data_offset as usize;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(12));
    // Mutations land inside the header (metadata and tensor infos) only.
    runner
        .run(&mutation(data_offset), |m| {
            let b = apply(&bytes, &m);
            parse_bounded(&b)
        })
        .unwrap();
}

#[test]
fn allocation_tracker_sees_large_allocations() {
    // The bound checked by `parse_bounded` is only meaningful if the tracker records sizes.
    LARGEST.with(|l| l.set(0));
    let v = std::hint::black_box(vec![1u8; 3 << 20]);
    assert!(LARGEST.with(|l| l.get()) >= 3 << 20);
    drop(v);
}
