//! The streaming engine on the CPU backend with the real default model (SmolLM2-135M): forced to
//! stream (tiny device budget) through every data path that runs without a GPU, its greedy
//! tokens must equal those of llama-model's resident `cpu::Model` (itself checked against
//! llama.cpp); with skipped layers they must equal llama-model's own layer-plan runner. The
//! NVMe-direct path runs over the nvme-direct crate's emulated controller holding the model's
//! bytes; an injected device error must surface as a typed error, not a hang or a panic.

use std::path::Path;

use llama_model::cpu::Model;
use llama_model::skip::{LayerPlan, Logits, Runner};
use nvme_direct::emu::{EmuConfig, Emulator};
use nvme_direct::{Config, Controller, ExtentReader, FileLocation};
use slep_pipeline::NvmeSource;
use vramless_engine::engine::{
    argmax, DataPath, Device, Engine, EngineError, EngineOptions, Home, Hybrid, Skip,
};

#[macro_use]
mod common;
use common::{prompt, reference};

const STEPS: usize = 10;

/// Device budget that leaves room for only a few resident layers: the fixed part plus slots
/// plus `extra` bytes.
fn streaming_opts(path: DataPath, ram: u64) -> EngineOptions {
    EngineOptions {
        vram_budget: Some(130 << 20),
        ram_budget: Some(ram),
        path,
        ctx: 256,
        verbose: false,
        ..EngineOptions::default()
    }
}

#[test]
fn streamed_greedy_tokens_equal_resident_on_every_cpu_path() {
    let model = model_or_skip!();
    let p = prompt(&model);
    let want = reference(&model, &p, STEPS);
    let cases = [
        (
            "resident (automatic budgets)",
            EngineOptions {
                ctx: 256,
                verbose: false,
                ..EngineOptions::default()
            },
        ),
        ("pinned RAM", streaming_opts(DataPath::Auto, 1 << 30)),
        ("O_DIRECT cpu worker", streaming_opts(DataPath::Direct, 0)),
        ("mmap cpu worker", streaming_opts(DataPath::Mmap, 0)),
        (
            "mmap baseline",
            streaming_opts(DataPath::MmapBaseline, 1 << 30),
        ),
        (
            "pinned + storage mix",
            streaming_opts(DataPath::Direct, 20 << 20),
        ),
        (
            "O_DIRECT without read-ahead",
            EngineOptions {
                prefetch: 0,
                ..streaming_opts(DataPath::Direct, 0)
            },
        ),
    ];
    for (name, opts) in cases {
        let mut e = Engine::open(&model, &opts).unwrap_or_else(|err| panic!("{name}: {err}"));
        let plan = e.plan().clone();
        match name {
            "resident (automatic budgets)" => assert!(!plan.streaming, "{name}"),
            "pinned RAM" => assert!(plan.layers(Home::Pinned).len() > 20, "{name}"),
            "pinned + storage mix" => {
                assert!(
                    !plan.layers(Home::Pinned).is_empty() && !plan.layers(Home::Storage).is_empty(),
                    "{name}"
                )
            }
            _ => assert!(plan.layers(Home::Storage).len() > 20, "{name}"),
        }
        let got = e.greedy(&p, STEPS).unwrap();
        assert_eq!(
            got, want,
            "{name}: streamed greedy tokens differ from resident cpu::Model"
        );
        if plan.streaming {
            let st = e.stats();
            // Every pass streamed exactly the planned non-resident bytes.
            let planned: u64 = plan
                .layers(Home::Pinned)
                .iter()
                .chain(plan.layers(Home::Storage).iter())
                .map(|&i| e.layer_bytes()[i])
                .sum();
            assert_eq!(st.copy_bytes, planned * st.passes, "{name}");
        }
    }
}

#[test]
fn skipped_layers_match_llama_models_layer_plan_runner() {
    let model = model_or_skip!();
    let p = prompt(&model);
    let skip = vec![5, 11, 20];
    let m = Model::open(&model).unwrap();
    let n = m.config().n_layers;
    let mut r = Runner::new(&m, LayerPlan::full(n).without(&skip), 256).unwrap();
    let mut want = vec![argmax(&r.feed(&p, Logits::Last).unwrap())];
    while want.len() < STEPS {
        let t = *want.last().unwrap();
        want.push(argmax(&r.feed(&[t], Logits::Last).unwrap()));
    }
    for opts in [
        EngineOptions {
            skip: Skip::Layers(skip.clone()),
            ..streaming_opts(DataPath::Direct, 0)
        },
        EngineOptions {
            skip: Skip::Layers(skip.clone()),
            ctx: 256,
            verbose: false,
            ..EngineOptions::default()
        },
    ] {
        let mut e = Engine::open(&model, &opts).unwrap();
        assert_eq!(e.plan().layers(Home::Skipped), skip);
        let got = e.greedy(&p, STEPS).unwrap();
        assert_eq!(got, want, "skip {skip:?}, streaming {}", e.plan().streaming);
        if e.plan().streaming {
            let streamed_layers = e.stats().copy_bytes / e.stats().passes;
            let never: u64 = skip.iter().map(|&i| e.layer_bytes()[i]).sum();
            assert!(never > 0 && streamed_layers > 0);
            let storage: u64 = e
                .plan()
                .layers(Home::Storage)
                .iter()
                .map(|&i| e.layer_bytes()[i])
                .sum();
            assert_eq!(
                streamed_layers, storage,
                "skipped layers must never be read"
            );
        }
    }
}

fn nvme_source(model: &Path, emu: &Emulator) -> NvmeSource<ExtentReader<Emulator, Emulator>> {
    let len = std::fs::metadata(model).unwrap().len();
    let ctrl = Controller::new(emu.clone(), emu.clone(), Config::default()).unwrap();
    NvmeSource::new(ExtentReader::new(ctrl, 1, FileLocation::Raw(0), len).unwrap())
}

#[test]
fn nvme_direct_path_over_the_emulated_controller() {
    let model = model_or_skip!();
    let p = prompt(&model);
    let want = reference(&model, &p, STEPS);
    let mut image = std::fs::read(&model).unwrap();
    image.resize(image.len().div_ceil(4096) * 4096, 0);
    let emu = Emulator::new(EmuConfig::default(), image);
    let opts = streaming_opts(DataPath::Nvme, 0);
    let src = nvme_source(&model, &emu);
    let mut e = Engine::open_with_storage(&model, &opts, Some(Box::new(src))).unwrap();
    assert!(e.plan().layers(Home::Storage).len() > 20);
    assert_eq!(
        e.greedy(&p, 4).unwrap(),
        want[..4],
        "NVMe-direct tokens differ"
    );

    // A device error mid-stream: a typed error naming the stream, the sequence rolled back.
    let before = e.n_past();
    emu.inject(
        3,
        nvme_direct::emu::Fault::Status {
            sct: 0,
            sc: 0x04,
            dnr: true,
            more: false,
        },
    );
    let err = e.decode_argmax(want[4]).unwrap_err();
    assert!(matches!(err, EngineError::Stream { .. }), "{err}");
    assert_eq!(
        e.n_past(),
        before,
        "a failed token must leave the cache as it was"
    );
}

#[test]
fn typed_errors_say_what_to_change() {
    let model = model_or_skip!();
    // Budget below the slots.
    let e = Engine::open(
        &model,
        &EngineOptions {
            vram_budget: Some(8 << 20),
            ..streaming_opts(DataPath::Auto, 0)
        },
    )
    .unwrap_err();
    assert!(matches!(e, EngineError::BudgetTooSmall { .. }), "{e}");
    assert!(e.to_string().contains("Raise the device budget"), "{e}");
    // Missing file.
    let e = Engine::open(
        Path::new("/nonexistent/model.gguf"),
        &streaming_opts(DataPath::Auto, 0),
    )
    .unwrap_err();
    assert!(matches!(e, EngineError::ModelFile { .. }), "{e}");
    assert!(e.to_string().contains("check the model path"), "{e}");
    // NVMe direct with no such controller.
    let opts = EngineOptions {
        nvme_pci: Some("0000:ff:1f.7".into()),
        ..streaming_opts(DataPath::Nvme, 0)
    };
    let e = Engine::open(&model, &opts).unwrap_err();
    assert!(matches!(e, EngineError::Nvme { .. }), "{e}");
    assert!(e.to_string().contains("vfio-pci"), "{e}");
    // Skipping the first layer.
    let opts = EngineOptions {
        skip: Skip::Layers(vec![0]),
        ..streaming_opts(DataPath::Auto, 0)
    };
    assert!(matches!(
        Engine::open(&model, &opts).unwrap_err(),
        EngineError::Usage(_)
    ));
    // A size that does not parse.
    let args = vramless_engine::engine::cli::EngineArgs {
        vram_budget: Some("24 parsecs".into()),
        slots: 3,
        storage_bw: "2GB/s".into(),
        ..Default::default()
    };
    let e = args
        .options(vramless_engine::engine::Device::Cpu, 256)
        .unwrap_err();
    assert!(matches!(e, EngineError::BadSize { .. }), "{e}");
    // Hybrid layers: a mode that does not parse, a kernel that does not exist, and the CPU
    // device (nothing crosses a bus there) are usage errors that say what to use.
    for (hybrid, kernel, device, says) in [
        ("1.5", "q8", Device::Cuda, "0 to 0.95"),
        ("sometimes", "q8", Device::Cuda, "use off, auto"),
        ("auto", "avx9", Device::Cuda, "use q8, f32 or match"),
        ("0.5", "q8", Device::Cpu, "needs --device cuda"),
    ] {
        let args = vramless_engine::engine::cli::EngineArgs {
            hybrid: hybrid.into(),
            hybrid_kernel: kernel.into(),
            slots: 3,
            storage_bw: "2GB/s".into(),
            ..Default::default()
        };
        let e = args.options(device, 256).unwrap_err();
        assert!(matches!(e, EngineError::Usage(_)), "{hybrid} {kernel}: {e}");
        assert!(e.to_string().contains(says), "{hybrid} {kernel}: {e}");
    }
    let args = vramless_engine::engine::cli::EngineArgs {
        hybrid: "0.25".into(),
        hybrid_kernel: "f32".into(),
        slots: 3,
        storage_bw: "2GB/s".into(),
        ..Default::default()
    };
    let o = args.options(Device::Cuda, 256).unwrap();
    assert_eq!(o.hybrid, Hybrid::Fraction(0.25));
    assert_eq!(o.hybrid_kernel, Some(llama_model::cpu::Kernel::F32));
    assert!(args.any(), "--hybrid alone asks for the streaming engine");
    // CUDA asked for in a CPU-only build.
    #[cfg(not(feature = "cuda"))]
    {
        let opts = EngineOptions {
            device: vramless_engine::engine::Device::Cuda,
            ..streaming_opts(DataPath::Auto, 0)
        };
        assert!(matches!(
            Engine::open(&model, &opts).unwrap_err(),
            EngineError::NoCuda(_)
        ));
    }
}
