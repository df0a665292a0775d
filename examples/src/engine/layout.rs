//! Where every weight of a Llama GGUF lies: each layer as one streamable item (its byte spans in
//! the file, delivered back to back into a slot) and each of its nine tensors at an offset inside
//! that item; plus the non-layer tensors that always stay resident.

use std::ops::Range;

use gguf::{GgmlType, GgufFile};
use llama_model::config::LlamaConfig;
use llama_model::cpu::LAYER_TENSOR_NAMES;
use slep_pipeline::{ByteRange, Item};

use super::error::{EngineError, Result};

/// One tensor of a layer, located inside the layer's packed bytes.
#[derive(Debug, Clone)]
pub struct TensorSlot {
    /// Full GGUF name (`blk.3.attn_q.weight`).
    pub name: String,
    /// Byte range inside the layer's packed bytes (the slot).
    pub range: Range<usize>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Elements per row.
    pub row_len: usize,
    /// Rows.
    pub n_rows: usize,
}

/// One layer: its byte spans in the file and its tensors inside the packed bytes.
#[derive(Debug, Clone)]
pub struct LayerLayout {
    /// Layer index.
    pub index: usize,
    /// Absolute byte ranges in the file, in order (one for every real file).
    pub spans: Vec<Range<u64>>,
    /// Packed size (sum of the spans).
    pub bytes: u64,
    /// The nine tensors in `LAYER_TENSOR_NAMES` order.
    pub tensors: Vec<TensorSlot>,
}

impl LayerLayout {
    /// The pipeline item that streams this layer (key = layer index).
    pub fn item(&self) -> Item {
        Item::new(
            self.index as u64,
            self.spans
                .iter()
                .map(|r| ByteRange::new(r.start, r.end - r.start))
                .collect(),
        )
    }

    /// Copies the layer's packed bytes out of the whole file's bytes.
    pub fn pack(&self, file: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.bytes as usize);
        for r in &self.spans {
            let s = file.get(r.start as usize..r.end as usize).ok_or_else(|| {
                EngineError::Usage(format!("layer {} lies outside the file", self.index))
            })?;
            out.extend_from_slice(s);
        }
        Ok(out)
    }
}

/// A tensor that is not part of a layer, as an absolute range of the file.
#[derive(Debug, Clone)]
pub struct GlobalTensor {
    /// GGUF name.
    pub name: String,
    /// Absolute byte range in the file.
    pub range: Range<usize>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Elements per row.
    pub row_len: usize,
    /// Rows.
    pub n_rows: usize,
}

/// Every weight the forward pass reads.
#[derive(Debug, Clone)]
pub struct ModelLayout {
    /// The layers.
    pub layers: Vec<LayerLayout>,
    /// Token embedding.
    pub token_embd: GlobalTensor,
    /// Final norm.
    pub output_norm: GlobalTensor,
    /// LM head (the embedding again when tied).
    pub lm_head: GlobalTensor,
}

fn shape(info: &gguf::TensorInfo) -> Option<(usize, usize)> {
    let row_len = usize::try_from(*info.dims.first()?).ok()?;
    let mut n_rows = 1usize;
    for d in info.dims.iter().skip(1) {
        n_rows = n_rows.checked_mul(usize::try_from(*d).ok()?)?;
    }
    Some((row_len, n_rows))
}

fn global(file: &GgufFile, name: &str) -> std::result::Result<GlobalTensor, String> {
    let info = file
        .tensor(name)
        .ok_or_else(|| format!("tensor {name} is missing"))?;
    let r = info.byte_range();
    let len = file.as_bytes().len() as u64;
    if r.end > len || r.start > r.end {
        return Err(format!("tensor {name} lies outside the file"));
    }
    let (row_len, n_rows) = shape(info).ok_or_else(|| format!("tensor {name}: bad dims"))?;
    Ok(GlobalTensor {
        name: name.to_string(),
        range: r.start as usize..r.end as usize,
        ggml_type: info.ggml_type,
        row_len,
        n_rows,
    })
}

impl ModelLayout {
    /// Locates every weight of `file` (a Llama GGUF with `config`).
    pub fn of(file: &GgufFile, config: &LlamaConfig) -> std::result::Result<Self, String> {
        let token_embd = global(file, "token_embd.weight")?;
        let output_norm = global(file, "output_norm.weight")?;
        let lm_head = if config.tied_output {
            token_embd.clone()
        } else {
            global(file, "output.weight")?
        };
        let file_len = file.as_bytes().len() as u64;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let spans = file.layer_span(i);
            if spans.is_empty() || spans.iter().any(|r| r.end > file_len) {
                return Err(format!("layer {i} has no tensors or lies outside the file"));
            }
            let mut tensors = Vec::with_capacity(9);
            for n in LAYER_TENSOR_NAMES {
                let name = format!("blk.{i}.{n}");
                let info = file
                    .tensor(&name)
                    .ok_or_else(|| format!("tensor {name} is missing"))?;
                let r = info.byte_range();
                let mut base = 0u64;
                let mut at = None;
                for s in &spans {
                    if r.start >= s.start && r.end <= s.end {
                        at = Some(base + (r.start - s.start));
                        break;
                    }
                    base += s.end - s.start;
                }
                let off = at.ok_or_else(|| format!("tensor {name} is outside its layer's span"))?;
                let (row_len, n_rows) =
                    shape(info).ok_or_else(|| format!("tensor {name}: bad dims"))?;
                tensors.push(TensorSlot {
                    name,
                    range: off as usize..(off + (r.end - r.start)) as usize,
                    ggml_type: info.ggml_type,
                    row_len,
                    n_rows,
                });
            }
            let bytes = spans.iter().map(|r| r.end - r.start).sum();
            layers.push(LayerLayout {
                index: i,
                spans,
                bytes,
                tensors,
            });
        }
        Ok(Self {
            layers,
            token_embd,
            output_norm,
            lm_head,
        })
    }

    /// Bytes of the largest layer (the slot size).
    pub fn max_layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.bytes).max().unwrap_or(0)
    }

    /// Bytes of the non-layer tensors (the LM head counted once when tied).
    pub fn global_bytes(&self) -> u64 {
        let len = |t: &GlobalTensor| (t.range.end - t.range.start) as u64;
        let head = if self.lm_head.range == self.token_embd.range {
            0
        } else {
            len(&self.lm_head)
        };
        len(&self.token_embd) + len(&self.output_norm) + head
    }
}
