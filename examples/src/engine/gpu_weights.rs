//! The CUDA engine's device copies of the weights that do not stream (embedding, final norm,
//! LM head, resident layers) and the views of a layer's tensors in a resident buffer or a
//! streamed slot.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::CudaSlice;
use llama_model::cuda::{CudaBackend, DeviceLayerWeights, DeviceWeight};
use slep_pipeline::CudaTransfer;

use super::backend::LayerData;
use super::error::{EngineError, Result};
use super::gpu::gpu_err;
use super::layout::{GlobalTensor, LayerLayout};
use super::plan::Home;
use super::setup::Setup;
use super::sources::bytes_bar;

fn upload(backend: &CudaBackend, bytes: &[u8], what: &str) -> Result<CudaSlice<u8>> {
    backend
        .stream()
        .clone_htod(bytes)
        .map_err(|e| EngineError::OutOfMemory {
            what: what.to_string(),
            bytes: super::budget::show(bytes.len() as u64),
            reason: e.to_string(),
        })
}

fn weight<'a>(
    buf: &'a CudaSlice<u8>,
    range: std::ops::Range<usize>,
    t: (gguf::GgmlType, usize, usize),
) -> Result<DeviceWeight<'a>> {
    if range.end > buf.len() {
        return Err(EngineError::Compute(format!(
            "tensor bytes {range:?} outside a buffer of {}",
            buf.len()
        )));
    }
    DeviceWeight::new(buf.slice(range), t.0, t.1, t.2).map_err(gpu_err("weight view"))
}

fn global<'a>(buf: &'a CudaSlice<u8>, t: &GlobalTensor) -> Result<DeviceWeight<'a>> {
    weight(buf, 0..t.range.len(), (t.ggml_type, t.row_len, t.n_rows))
}

/// The nine device views of `layer` inside `buf` (its packed bytes).
pub(super) fn layer_views<'a>(
    layer: &LayerLayout,
    buf: &'a CudaSlice<u8>,
) -> Result<DeviceLayerWeights<'a>> {
    let mut v = Vec::with_capacity(9);
    for t in &layer.tensors {
        v.push(weight(
            buf,
            t.range.clone(),
            (t.ggml_type, t.row_len, t.n_rows),
        )?);
    }
    let arr: [DeviceWeight<'a>; 9] = v
        .try_into()
        .map_err(|_| EngineError::Compute(format!("layer {} lacks tensors", layer.index)))?;
    Ok(DeviceLayerWeights::from_array(arr))
}

/// The device buffers that never move: embedding, final norm, LM head, resident layers.
pub(super) struct Weights {
    /// The token embedding.
    pub(super) embd: CudaSlice<u8>,
    /// The final norm.
    pub(super) norm: CudaSlice<u8>,
    /// The LM head, where it is not the embedding.
    pub(super) head: Option<CudaSlice<u8>>,
    /// Resident layers' packed bytes by index.
    pub(super) resident: HashMap<usize, CudaSlice<u8>>,
}

impl Weights {
    /// The embedding's view.
    pub(super) fn embd<'a>(&'a self, setup: &Setup) -> Result<DeviceWeight<'a>> {
        global(&self.embd, &setup.layout.token_embd)
    }

    /// The final norm's and the LM head's views.
    pub(super) fn norm_head<'a>(
        &'a self,
        setup: &Setup,
    ) -> Result<(DeviceWeight<'a>, DeviceWeight<'a>)> {
        let lay = &setup.layout;
        Ok((
            global(&self.norm, &lay.output_norm)?,
            global(self.head.as_ref().unwrap_or(&self.embd), &lay.lm_head)?,
        ))
    }

    /// Resident layer `i`'s buffer.
    pub(super) fn resident(&self, i: usize) -> Result<&CudaSlice<u8>> {
        self.resident
            .get(&i)
            .ok_or_else(|| EngineError::Compute(format!("layer {i} is not on the device")))
    }

    /// The device views of `layer` in this pass: its resident buffer, or the slot after the
    /// compute stream waits for the slot's copy. Returns the views and, for a slot, the
    /// transfer to release it with.
    pub(super) fn views<'a>(
        &'a self,
        layer: &LayerLayout,
        data: &LayerData<'_, 'a, CudaTransfer>,
        state_stream: &Arc<cudarc::driver::CudaStream>,
    ) -> Result<DeviceLayerWeights<'a>> {
        match data {
            LayerData::Resident => layer_views(layer, self.resident(layer.index)?),
            LayerData::Slot(ready, slot) => {
                if let Some(ev) = ready.event() {
                    state_stream
                        .wait(ev.event())
                        .map_err(|e| EngineError::Compute(e.to_string()))?;
                }
                layer_views(layer, slot.slice())
            }
        }
    }
}

/// Uploads layer `i`'s packed bytes from the mapped file into a new device buffer.
pub(super) fn upload_layer(
    backend: &CudaBackend,
    setup: &Setup,
    i: usize,
) -> Result<CudaSlice<u8>> {
    let file = setup.file.as_bytes();
    let l = setup
        .layout
        .layers
        .get(i)
        .ok_or_else(|| EngineError::Usage(format!("layer {i} is not in the model")))?;
    match l.spans.as_slice() {
        [r] => upload(
            backend,
            &file[r.start as usize..r.end as usize],
            "resident layer",
        ),
        _ => upload(backend, &l.pack(file)?, "resident layer"),
    }
}

/// Uploads the embedding, final norm, LM head and every resident layer.
pub(super) fn upload_weights(
    backend: &CudaBackend,
    setup: &Setup,
    verbose: bool,
) -> Result<Weights> {
    let file = setup.file.as_bytes();
    let lay = &setup.layout;
    let embd = upload(
        backend,
        &file[lay.token_embd.range.clone()],
        "token embedding",
    )?;
    let norm = upload(backend, &file[lay.output_norm.range.clone()], "output norm")?;
    let head = if lay.lm_head.range == lay.token_embd.range {
        None
    } else {
        Some(upload(
            backend,
            &file[lay.lm_head.range.clone()],
            "LM head",
        )?)
    };
    let dev = setup.plan.layers(Home::Device);
    let total: u64 = dev.iter().map(|&i| lay.layers[i].bytes).sum();
    let bar = bytes_bar(verbose, total, "uploading resident layers");
    let mut resident = HashMap::new();
    for &i in &dev {
        resident.insert(i, upload_layer(backend, setup, i)?);
        bar.inc(lay.layers[i].bytes);
    }
    bar.finish_and_clear();
    Ok(Weights {
        embd,
        norm,
        head,
        resident,
    })
}
