//! The engine's typed errors: each names what went wrong and what to change.

use std::path::PathBuf;

/// Everything that can stop the streaming engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file is missing or unreadable.
    #[error("cannot open model {path}: {reason} (check the path given to --model)")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What the operating system or the GGUF reader said.
        reason: String,
    },
    /// The GGUF is not a Llama model the engine can run.
    #[error("{path} is not a runnable Llama GGUF: {reason}")]
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A budget string did not parse.
    #[error("{flag} {text}: {reason} (write a size such as 24GiB, 512MiB or 0)")]
    BadSize {
        /// The flag.
        flag: &'static str,
        /// What was given.
        text: String,
        /// Why it did not parse.
        reason: String,
    },
    /// The VRAM budget cannot hold what must stay on the device plus the streaming slots.
    #[error(
        "--vram-budget {budget} is too small: the device needs {fixed} for the embedding, \
         final norm and LM head, the KV cache of {ctx} positions and workspaces, plus {slots} \
         streaming slots of {slot} each ({need} in all). Raise --vram-budget to at least {need}, \
         or lower --ctx"
    )]
    BudgetTooSmall {
        /// The budget given.
        budget: String,
        /// Bytes that must be resident whatever the plan.
        fixed: String,
        /// Context positions asked for.
        ctx: usize,
        /// Slot count.
        slots: usize,
        /// Bytes per slot (the largest layer).
        slot: String,
        /// The least budget that runs.
        need: String,
    },
    /// The self-speculative draft's layers do not all fit on the device.
    #[error(
        "the draft's first {layers} layers ({bytes}) do not fit in the {room} the device budget \
         leaves for resident layers: lower --draft-layers or raise --vram-budget"
    )]
    DraftNotResident {
        /// Draft layers asked for.
        layers: usize,
        /// Their bytes.
        bytes: String,
        /// Device bytes left for resident layers.
        room: String,
    },
    /// A flag is inconsistent with the rest.
    #[error("{0}")]
    Usage(String),
    /// The tier planner refused.
    #[error("tier planning failed: {0}")]
    Plan(String),
    /// The skip map could not be used.
    #[error("skip map {path}: {reason}")]
    SkipMap {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The NVMe-direct path could not start.
    #[error(
        "NVMe direct on {bdf}: {reason}. The controller must be bound to vfio-pci with the IOMMU \
         on, and the model's extents saved while it was mounted (nvme-read --extents-of MODEL \
         --save-extents MODEL.extents); or drop --nvme-pci to read through the kernel"
    )]
    Nvme {
        /// The PCI address given.
        bdf: String,
        /// What failed.
        reason: String,
    },
    /// Allocating host or device memory failed.
    #[error("out of memory allocating {what} ({bytes}): {reason}. Lower --vram-budget / --ram-budget or --ctx")]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// How much.
        bytes: String,
        /// The allocator's message.
        reason: String,
    },
    /// A data path failed while streaming.
    #[error("streaming failed at layer {layer}: {reason} (try another --path, or a larger --ram-budget to keep layers in RAM)")]
    Stream {
        /// The layer being streamed, when known.
        layer: String,
        /// What failed.
        reason: String,
    },
    /// The compute backend failed.
    #[error("compute failed: {0}")]
    Compute(String),
    /// CUDA was asked for but is not there.
    #[error("CUDA is not available: {0} (build with --features cuda on a machine with an NVIDIA driver, or use --device cpu)")]
    NoCuda(String),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, EngineError>;

/// A pipeline error turned into the engine's: allocation failures become [`EngineError::OutOfMemory`],
/// the rest [`EngineError::Stream`].
pub fn from_pipeline(e: slep_pipeline::PipelineError) -> EngineError {
    use slep_pipeline::PipelineError as P;
    match e {
        P::Alloc { bytes, what } => EngineError::OutOfMemory {
            what: what.to_string(),
            bytes: tier_cache::units::format_bytes(bytes as u64),
            reason: "allocation failed".into(),
        },
        P::Consumer { key, source, .. } => EngineError::Stream {
            layer: key.to_string(),
            reason: source.to_string(),
        },
        other => {
            let text = other.to_string();
            if text.contains("OUT_OF_MEMORY") || text.contains("out of memory") {
                EngineError::OutOfMemory {
                    what: "streaming buffers".into(),
                    bytes: "?".into(),
                    reason: text,
                }
            } else {
                EngineError::Stream {
                    layer: "?".into(),
                    reason: text,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_become_out_of_memory_that_names_the_budgets() {
        let e = from_pipeline(slep_pipeline::PipelineError::Alloc {
            bytes: 3 << 30,
            what: "device slot",
        });
        assert!(matches!(e, EngineError::OutOfMemory { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("device slot") && text.contains("3.0 GiB"),
            "{text}"
        );
        assert!(
            text.contains("--vram-budget") && text.contains("--ram-budget"),
            "{text}"
        );
    }

    #[test]
    fn stream_failures_name_the_layer_and_what_to_try() {
        let e = from_pipeline(slep_pipeline::PipelineError::Consumer {
            index: 3,
            key: 41,
            source: "device lost".into(),
        });
        let text = e.to_string();
        assert!(matches!(e, EngineError::Stream { .. }));
        assert!(
            text.contains("layer 41") && text.contains("device lost"),
            "{text}"
        );
        assert!(text.contains("--path"), "{text}");
    }
}
