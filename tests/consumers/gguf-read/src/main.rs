//! Reads a GGUF's metadata and one tensor with `vramless-gguf` alone and prints them in a plain
//! form that `check_gguf.py` compares with the `gguf` Python package (llama.cpp's reader).
//!
//! Usage: consumer-gguf-read MODEL.gguf TENSOR_NAME

use std::process::ExitCode;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(name)) = (args.next(), args.next()) else {
        return Err("usage: consumer-gguf-read MODEL.gguf TENSOR_NAME".into());
    };
    let file = gguf::GgufFile::open(&path)?;
    let meta = file.metadata();
    let arch = meta.get_str("general.architecture")?;
    println!("version {}", file.version());
    println!("architecture {arch}");
    println!(
        "block_count {}",
        meta.get_u32(&format!("{arch}.block_count"))?
    );
    println!("metadata {}", meta.len());
    println!("tensors {}", file.tensors().len());
    let info = file
        .tensor(&name)
        .ok_or_else(|| format!("no tensor {name} in {path}"))?;
    let dims: Vec<String> = info.dims.iter().map(|d| d.to_string()).collect();
    println!(
        "tensor {} {:?} {}",
        info.name,
        info.ggml_type,
        dims.join(" ")
    );
    let values = gguf::quant::dequantize_to_vec(info.ggml_type, file.tensor_data(info))?;
    println!("count {}", values.len());
    let head: Vec<String> = values.iter().take(64).map(|v| format!("{v:e}")).collect();
    println!("head {}", head.join(" "));
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    println!("sum {sum:e}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer-gguf-read: error: {e}");
            ExitCode::FAILURE
        }
    }
}
