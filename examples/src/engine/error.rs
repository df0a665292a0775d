//! The engine's typed errors: each names what went wrong and what to change, and carries the
//! error it came from as its `source()` (compute, CUDA, pipeline, planner and file errors are
//! wrapped, not flattened into text). Messages name the setting to change (the device budget,
//! the context), not a command-line flag: the library serves programs with other interfaces.

use std::path::PathBuf;

use tier_cache::units::format_bytes as show;

/// Everything that can stop the streaming engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model file is missing or unreadable.
    #[error("cannot open model {path}: {source} (check the model path)")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What the GGUF reader (or the operating system under it) said.
        #[source]
        source: gguf::GgufError,
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
        /// The setting it was given for.
        flag: &'static str,
        /// What was given.
        text: String,
        /// Why it did not parse.
        reason: String,
    },
    /// The device budget cannot hold what must stay on the device plus the streaming slots.
    #[error(
        "the device budget {} is too small: the device needs {} for the embedding, final norm \
         and LM head, the KV pool ({seqs} sequences x {ctx} positions = {}) and workspaces, plus \
         {slots} streaming slots of {} each ({} in all). Raise the device budget to at least {}, \
         or lower the context per sequence or the number of sequences",
        show(*.budget), show(*.fixed), show(*.kv), show(*.slot), show(*.need), show(*.need)
    )]
    BudgetTooSmall {
        /// The budget given, bytes.
        budget: u64,
        /// Bytes that must be resident whatever the plan (the KV pool included).
        fixed: u64,
        /// Sequences the KV pool holds.
        seqs: usize,
        /// Context positions per sequence.
        ctx: usize,
        /// Bytes of the KV pool.
        kv: u64,
        /// Slot count.
        slots: usize,
        /// Bytes per slot (the largest layer).
        slot: u64,
        /// The least budget that runs, bytes.
        need: u64,
    },
    /// The self-speculative draft's layers do not all fit on the device.
    #[error(
        "the draft's first {layers} layers ({bytes}) do not fit in the {room} the device budget \
         leaves for resident layers: use fewer draft layers or a larger device budget"
    )]
    DraftNotResident {
        /// Draft layers asked for.
        layers: usize,
        /// Their bytes.
        bytes: String,
        /// Device bytes left for resident layers.
        room: String,
    },
    /// A setting or a call is inconsistent with the rest.
    #[error("{0}")]
    Usage(String),
    /// A sequence cannot join the batch engine (empty prompt, too long, too many sequences).
    #[error("{0}")]
    Sequence(String),
    /// The tier planner refused.
    #[error("tier planning failed: {0}")]
    Plan(#[source] tier_cache::PlanError),
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
         --save-extents MODEL.extents); or read the model through the kernel instead"
    )]
    Nvme {
        /// The PCI address given.
        bdf: String,
        /// What failed.
        reason: String,
    },
    /// Allocating host or device memory failed.
    #[error(
        "out of memory allocating {what} ({bytes}): {reason}. Lower the device or pinned-RAM \
         budget, the context or the number of sequences"
    )]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// How much.
        bytes: String,
        /// The allocator's message.
        reason: String,
    },
    /// A data path failed while streaming.
    #[error(
        "streaming failed at layer {layer}: {source} (try another data path, or a larger \
         pinned-RAM budget to keep layers in RAM)"
    )]
    Stream {
        /// The layer being streamed, when known.
        layer: String,
        /// What failed.
        #[source]
        source: slep_pipeline::PipelineError,
    },
    /// The CPU forward pass failed.
    #[error("compute failed in {what}: {source}")]
    Forward {
        /// What was being computed.
        what: String,
        /// The forward pass's error.
        #[source]
        source: llama_model::cpu::ForwardError,
    },
    /// A CUDA call failed.
    #[cfg(feature = "cuda")]
    #[error("CUDA failed in {what}: {source}")]
    Cuda {
        /// What was being done.
        what: String,
        /// The backend's error.
        #[source]
        source: llama_model::cuda::CudaError,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The compute backend failed in a way no other variant describes.
    #[error("compute failed: {0}")]
    Compute(String),
    /// CUDA was asked for but is not there.
    #[error(
        "CUDA is not available: {0} (build with the `cuda` feature on a machine with an NVIDIA \
         driver, or run on the CPU)"
    )]
    NoCuda(String),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, EngineError>;

/// A CPU forward-pass error in `what`.
pub fn forward_err(what: &str) -> impl Fn(llama_model::cpu::ForwardError) -> EngineError + '_ {
    move |source| EngineError::Forward {
        what: what.to_string(),
        source,
    }
}

/// A pipeline error turned into the engine's: allocation failures become
/// [`EngineError::OutOfMemory`], the rest [`EngineError::Stream`] (with the layer when the
/// consumer failed on one).
pub fn from_pipeline(e: slep_pipeline::PipelineError) -> EngineError {
    use slep_pipeline::PipelineError as P;
    match e {
        P::Alloc { bytes, what } => EngineError::OutOfMemory {
            what: what.to_string(),
            bytes: tier_cache::units::format_bytes(bytes as u64),
            reason: "allocation failed".into(),
        },
        P::Consumer { key, .. } => EngineError::Stream {
            layer: key.to_string(),
            source: e,
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
                    source: other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

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
            text.contains("device or pinned-RAM budget") && !text.contains("--"),
            "{text}"
        );
    }

    #[test]
    fn stream_failures_name_the_layer_keep_their_source_and_say_what_to_try() {
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
        assert!(
            text.contains("another data path") && !text.contains("--"),
            "{text}"
        );
        let source = e.source().expect("the pipeline error is the source");
        assert!(source.to_string().contains("device lost"), "{source}");
    }

    #[test]
    fn forward_errors_are_wrapped_not_flattened() {
        let e = forward_err("layer 3")(llama_model::cpu::ForwardError::Batch("x".into()));
        assert!(e.to_string().contains("layer 3"), "{e}");
        assert!(e
            .source()
            .is_some_and(|s| s.downcast_ref::<llama_model::cpu::ForwardError>().is_some()));
    }
}
