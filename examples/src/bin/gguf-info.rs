//! `gguf-info FILE [--json]`: print what a GGUF file holds.
//!
//! Text mode prints the version, the metadata (long arrays and strings summarised), a tensor
//! table (name, type, dims, offset, bytes), per-layer byte totals and bytes per ggml type.
//!
//! `--json` prints one JSON object:
//! `{"version", "tensor_count", "alignment", "data_offset", "metadata": {...},
//!   "tensors": [{"name", "type", "dims", "offset", "abs_offset", "bytes"}]}`.
//! Metadata values are rendered in full (arrays as JSON arrays, nested arrays nested), so the
//! JSON is a faithful machine-readable copy of the header; non-finite floats, which JSON cannot
//! represent, become the strings `"NaN"`, `"inf"` and `"-inf"`. `offset` is relative to the data
//! section (as stored in the file), `abs_offset` is the absolute file offset.
//!
//! On an invalid file the exit code is 1 and stderr holds one line naming the problem.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gguf::{GgmlType, GgufFile, Value};
use serde_json::json;

/// Print the header, tensors and per-layer sizes of a GGUF file.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The GGUF file to inspect.
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Longest string shown in full in text mode.
const MAX_TEXT: usize = 120;

fn main() -> ExitCode {
    let args = Args::parse();
    let file = match GgufFile::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gguf-info: {}: {e}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let result = if args.json {
        print_json(&file, &mut out)
    } else {
        print_text(&args, &file, &mut out)
    }
    .and_then(|()| out.flush());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`gguf-info f | head`) is not an error worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gguf-info: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    let float = |f: f64| {
        serde_json::Number::from_f64(f).map_or_else(
            || {
                json!(if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                })
            },
            serde_json::Value::Number,
        )
    };
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => serde_json::Value::Array(a.values.iter().map(json_value).collect()),
    }
}

fn print_json(file: &GgufFile, out: &mut impl Write) -> io::Result<()> {
    let metadata: serde_json::Map<String, serde_json::Value> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect();
    let tensors: Vec<serde_json::Value> = file
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ggml_type.name(),
                "dims": t.dims,
                "offset": t.offset,
                "abs_offset": t.abs_offset,
                "bytes": t.n_bytes,
            })
        })
        .collect();
    let doc = json!({
        "version": file.version(),
        "tensor_count": file.tensors().len(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata": metadata,
        "tensors": tensors,
    });
    serde_json::to_writer(&mut *out, &doc)?;
    writeln!(out)
}

/// A value for text output: long strings cut, long arrays summarised by `Value`'s Display.
fn text_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) if s.chars().count() > MAX_TEXT => {
            let head: String = s.chars().take(MAX_TEXT).collect();
            format!("{head:?}... ({} chars)", s.chars().count())
        }
        other => other.to_string(),
    };
    if s.chars().count() > 4 * MAX_TEXT {
        let head: String = s.chars().take(4 * MAX_TEXT).collect();
        format!("{head}...")
    } else {
        s
    }
}

fn print_text(args: &Args, file: &GgufFile, out: &mut impl Write) -> io::Result<()> {
    let total_len = file.as_bytes().len();
    writeln!(out, "file: {} ({total_len} bytes)", args.file.display())?;
    writeln!(
        out,
        "GGUF version {}, {} metadata keys, {} tensors, alignment {}, data section at byte {}",
        file.version(),
        file.metadata().len(),
        file.tensors().len(),
        file.alignment(),
        file.data_offset()
    )?;

    writeln!(out, "\nmetadata:")?;
    for (key, value) in file.metadata().iter() {
        let ty = match value {
            Value::Array(a) => format!("{}[{}]", a.type_name(), a.len()),
            v => v.type_name(),
        };
        writeln!(out, "  {key} ({ty}) = {}", text_value(value))?;
    }

    writeln!(out, "\ntensors:")?;
    let name_w = file
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "  {:<name_w$}  {:<7}  {:<22}  {:>12}  {:>12}",
        "name", "type", "dims", "offset", "bytes"
    )?;
    for t in file.tensors() {
        let dims = format!("{:?}", t.dims);
        writeln!(
            out,
            "  {:<name_w$}  {:<7}  {:<22}  {:>12}  {:>12}",
            t.name,
            t.ggml_type.name(),
            dims,
            t.offset,
            t.n_bytes
        )?;
    }

    let blocks = file.block_count();
    if blocks > 0 {
        writeln!(out, "\nper layer:")?;
        // Hostile names such as blk.999999999.x would make this loop long; stop at the
        // indices that really exist.
        let mut present: Vec<usize> = file
            .tensors()
            .iter()
            .filter_map(|t| t.layer_index())
            .collect();
        present.sort_unstable();
        present.dedup();
        for i in present {
            let ts = file.layer_tensors(i);
            let bytes: u64 = ts.iter().map(|t| t.n_bytes).sum();
            let spans = file.layer_span(i);
            let spans: Vec<String> = spans
                .iter()
                .map(|r| format!("{}..{}", r.start, r.end))
                .collect();
            writeln!(
                out,
                "  blk.{i}: {} tensors, {bytes} bytes, file range {}",
                ts.len(),
                spans.join(", ")
            )?;
        }
    }
    let rest = file.non_layer_tensors();
    let rest_bytes: u64 = rest.iter().map(|t| t.n_bytes).sum();
    writeln!(
        out,
        "  non-layer: {} tensors, {rest_bytes} bytes",
        rest.len()
    )?;

    writeln!(out, "\nbytes per type:")?;
    let mut per_type: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let e = per_type.entry(t.ggml_type).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    for (ty, (n, bytes)) in &per_type {
        writeln!(out, "  {:<7} {n:>5} tensors  {bytes:>14} bytes", ty.name())?;
    }
    let total: u64 = per_type.values().map(|v| v.1).sum();
    writeln!(
        out,
        "  total   {:>5} tensors  {total:>14} bytes",
        file.tensors().len()
    )
}
