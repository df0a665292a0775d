//! Issue #4: `synth-model` files must be loadable by llama.cpp. Each SmolLM2-shaped synthetic
//! file (Q4_K_M and Q8_0) is read with llama.cpp's own GGUF reader, the `gguf` Python package
//! (pinned and installed by `scripts/test.sh`), and checked against what llama.cpp's loader
//! needs: the metadata keys its llama loader reads without a default, every `llama.*` key the
//! real SmolLM2-135M GGUF has (read the same way: the outside reference for names, value types
//! and the SmolLM2 shape), every tensor's name, shape and type, block-aligned rows, sizes and
//! aligned, non-overlapping data inside the file.
//!
//! Skips loudly without python3 + `gguf` or the real model; with `CI=true` both are mandatory.

use std::path::Path;
use std::process::Command;

/// The check, run as `python3 -c CHECK SYNTH REAL QUANT`; prints what it checked, exits 1 on
/// the first list of problems.
const CHECK: &str = r#"
import importlib.metadata, os, sys
import gguf
from gguf import GGUFReader, GGMLQuantizationType as QT

synth_path, real_path, quant = sys.argv[1:4]
s, r = GGUFReader(synth_path), GGUFReader(real_path)
errors = []
def val(rd, k):
    return rd.fields[k].contents()

# Keys llama.cpp's loader reads with no default for a Llama model with a BPE (gpt2) vocabulary.
required = ["general.architecture", "llama.context_length", "llama.embedding_length",
            "llama.block_count", "llama.feed_forward_length", "llama.attention.head_count",
            "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
            "tokenizer.ggml.tokens", "tokenizer.ggml.merges"]
for k in required:
    if k not in r.fields:
        errors.append(f"the real file lacks {k}: this key list is out of date")
    if k not in s.fields:
        errors.append(f"missing required key {k}")
# Every llama.* key of the real file, with its value type; shared tokenizer keys with theirs.
for k, f in r.fields.items():
    ours = s.fields.get(k)
    must = k.startswith("llama.") or k == "general.architecture"
    if ours is None:
        if must:
            errors.append(f"missing {k} (the real SmolLM2 file has it)")
    elif (must or k.startswith("tokenizer.")) and ours.types != f.types:
        errors.append(f"{k}: value type {ours.types}, real file {f.types}")
if errors:
    sys.exit("\n".join(errors))

if val(s, "general.architecture") != "llama":
    errors.append("general.architecture is not llama")
if val(s, "tokenizer.ggml.model") != "gpt2":
    errors.append("tokenizer.ggml.model is not gpt2")
# The smollm2-135m preset has the real model's shape.
for k in ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
          "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count"]:
    if val(s, k) != val(r, k):
        errors.append(f"{k} = {val(s, k)}, SmolLM2-135M has {val(r, k)}")
n_vocab = len(s.fields["tokenizer.ggml.tokens"].data)
if "tokenizer.ggml.token_type" in s.fields and len(s.fields["tokenizer.ggml.token_type"].data) != n_vocab:
    errors.append("token_type and tokens differ in length")
if "llama.vocab_size" in s.fields and val(s, "llama.vocab_size") != n_vocab:
    errors.append(f"llama.vocab_size {val(s, 'llama.vocab_size')} != {n_vocab} tokens")

# Tensors: llama.cpp's names and shapes (ne order), from the synthetic file's own metadata.
d, ff = val(s, "llama.embedding_length"), val(s, "llama.feed_forward_length")
nh = val(s, "llama.attention.head_count")
nkv = val(s, "llama.attention.head_count_kv") if "llama.attention.head_count_kv" in s.fields else nh
kv = nkv * (d // nh)
want = {"token_embd.weight": [d, n_vocab], "output_norm.weight": [d]}
for i in range(val(s, "llama.block_count")):
    for n, shape in [("attn_norm", [d]), ("attn_q", [d, d]), ("attn_k", [d, kv]), ("attn_v", [d, kv]),
                     ("attn_output", [d, d]), ("ffn_norm", [d]), ("ffn_gate", [d, ff]),
                     ("ffn_up", [d, ff]), ("ffn_down", [ff, d])]:
        want[f"blk.{i}.{n}.weight"] = shape
# Optional: `output` (absent = tied to token_embd, as in SmolLM2), llama3 `rope_freqs`.
if "output.weight" in [t.name for t in s.tensors]:
    want["output.weight"] = [d, n_vocab]
if "rope_freqs.weight" in [t.name for t in s.tensors]:
    want["rope_freqs.weight"] = [val(s, "llama.rope.dimension_count") // 2]
got = {t.name: t for t in s.tensors}
real = {t.name: t for t in r.tensors}
if set(got) != set(want):
    errors.append(f"tensor names: extra {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}")
if not set(real) <= set(got) or not set(got) - set(real) <= {"output.weight", "rope_freqs.weight"}:
    errors.append("tensor names differ from the real SmolLM2 file's beyond output/rope_freqs")
matrix_types = {"q8_0": {QT.Q8_0}, "q4_k_m": {QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0}}[quant]
ends = []
for name, t in got.items():
    shape = [int(x) for x in t.shape]
    if name in want and shape != want[name]:
        errors.append(f"{name}: shape {shape}, want {want[name]}")
    if name in real and name != "token_embd.weight" and shape != [int(x) for x in real[name].shape]:
        errors.append(f"{name}: shape {shape}, real file {list(real[name].shape)}")
    allowed = {QT.F32} if len(shape) == 1 else matrix_types
    if t.tensor_type not in allowed:
        errors.append(f"{name}: type {t.tensor_type.name} not in {sorted(x.name for x in allowed)}")
    block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
    if shape[0] % block:
        errors.append(f"{name}: rows of {shape[0]} are not whole {t.tensor_type.name} blocks of {block}")
    if int(t.n_bytes) != int(t.n_elements) // block * size:
        errors.append(f"{name}: {t.n_bytes} bytes for {t.n_elements} elements")
    if t.data_offset % s.alignment:
        errors.append(f"{name}: data offset {t.data_offset} not aligned to {s.alignment}")
    ends.append((int(t.data_offset), int(t.data_offset) + int(t.n_bytes), name))
ends.sort()
for (a0, a1, an), (b0, b1, bn) in zip(ends, ends[1:]):
    if a1 > b0:
        errors.append(f"{an} overlaps {bn}")
if ends and ends[-1][1] > os.path.getsize(synth_path):
    errors.append(f"{ends[-1][2]} ends past the end of the file")
if errors:
    sys.exit("\n".join(errors[:20]))
print(f"{quant}: {len(got)} tensors, {len([k for k in s.fields if not k.startswith('GGUF.')])} keys "
      f"read by gguf {importlib.metadata.version('gguf')}: ok")
"#;

#[test]
fn synth_smollm2_files_pass_llama_cpp_gguf_reader() {
    let has_gguf = Command::new("python3")
        .args(["-c", "import gguf"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_gguf {
        return test_support::skip(
            "python3 with llama.cpp's `gguf` package is missing \
             (python3 -m pip install gguf==0.19.0; scripts/test.sh installs it)",
        );
    }
    let Some(real) = test_support::model_or_skip() else {
        return;
    };
    let vocab = test_support::fixture(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf"),
    );
    let dir = std::env::temp_dir().join(format!("vramless-synth-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for quant in ["q4_k_m", "q8_0"] {
        let out = dir.join(format!("smollm2-{quant}.gguf"));
        let st = Command::new(env!("CARGO_BIN_EXE_synth-model"))
            .args(["--shape", "smollm2-135m", "--quant", quant, "--vocab"])
            .arg(&vocab)
            .arg("--out")
            .arg(&out)
            .status()
            .expect("run synth-model");
        assert!(st.success(), "synth-model --quant {quant} failed");
        let res = Command::new("python3")
            .args(["-c", CHECK])
            .arg(&out)
            .arg(&real)
            .arg(quant)
            .output()
            .expect("run python3");
        let _ = std::fs::remove_file(&out);
        eprint!("{}", String::from_utf8_lossy(&res.stdout));
        assert!(
            res.status.success(),
            "{quant}: llama.cpp's gguf reader finds problems:\n{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    let _ = std::fs::remove_dir(&dir);
}
