//! ONNX Runtime backend (`ort` 2.0 with a dynamically loaded `libonnxruntime`).

use std::sync::{Mutex, OnceLock};

use ndarray::{ArrayD, Axis};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::{check_output, Backend, BackendOptions};
use crate::error::ServeError;
use crate::model::ModelInfo;

/// A model in a small pool of ONNX Runtime sessions. `Session::run` needs `&mut`, so each session serves one call
/// at a time. On the CPU a batch of windows is split across [`CPU_SESSIONS`] sessions that run concurrently, the
/// thread budget (`threads`) divided between them and intra-op spinning off: the transformer part of a UNETR is
/// made of many small ops whose intra-op fork/join costs more than it saves, so two single-thread sessions side by
/// side finish a batch of two 64³ windows in ~0.75× the time of one 2-thread session (2-core bench machine).
pub struct OrtBackend {
    sessions: Vec<Mutex<Session>>,
    info: ModelInfo,
    name: &'static str,
}

/// Sessions per model on the CPU (the weights are held once per session).
pub const CPU_SESSIONS: usize = 2;

/// The process-wide ONNX Runtime environment (kept alive for the sessions), or why it could not be created.
static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

fn err(msg: impl std::fmt::Display) -> ServeError {
    ServeError::Backend {
        backend: "ort",
        msg: msg.to_string(),
    }
}

/// Load the ONNX Runtime library and create the environment, once per process.
fn init(opts: &BackendOptions) -> Result<&'static Environment, ServeError> {
    let env = ENV.get_or_init(|| {
        let p = opts.ort_library.as_ref().ok_or("the ort backend needs the ONNX Runtime library: pass --ort-library or set ORT_DYLIB_PATH to libonnxruntime.so")?;
        let builder = ort::init_from(p).map_err(|e| format!("loading ONNX Runtime from {}: {e}", p.display()))?;
        builder.with_name("medmae-serve").build().map_err(|e| format!("creating the ONNX Runtime environment: {e}"))
    });
    env.as_ref().map_err(err)
}

impl OrtBackend {
    /// Create a session for `info.path`.
    pub fn load(info: &ModelInfo, opts: &BackendOptions) -> Result<Self, ServeError> {
        let env = init(opts)?;
        let mut sessions = Vec::new();
        let mut name = "ort-cpu";
        // One CUDA session (the device does the parallel work); on one CPU thread, sessions side by side gain nothing.
        let budget = if opts.threads > 0 {
            opts.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let count = if opts.use_gpu {
            1
        } else {
            CPU_SESSIONS.min(budget)
        };
        let intra = (budget / count).max(1);
        for _ in 0..count {
            let mut builder = Session::builder(env)
                .map_err(err)?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| err(e.to_string()))?
                .with_intra_op_spinning(false)
                .map_err(|e| err(e.to_string()))?;
            if opts.threads > 0 || count > 1 {
                builder = builder
                    .with_intra_threads(intra)
                    .map_err(|e| err(e.to_string()))?;
            }
            if opts.use_gpu {
                name = register_gpu(&mut builder, opts)?;
            }
            let session = builder.commit_from_file(&info.path).map_err(|e| {
                if opts.use_gpu {
                    err(format!(
                        "{}: creating the session on the CUDA execution provider: {e} (is an NVIDIA GPU with its \
                         driver visible? check nvidia-smi and CUDA_VISIBLE_DEVICES, or serve without --gpu)",
                        info.path.display()
                    ))
                } else {
                    err(format!("{}: {e}", info.path.display()))
                }
            })?;
            sessions.push(Mutex::new(session));
        }
        Ok(Self {
            sessions,
            info: info.clone(),
            name,
        })
    }

    /// Run `input` (any batch size) on session `i`.
    fn run_on(
        &self,
        i: usize,
        input: ndarray::ArrayViewD<'_, f32>,
    ) -> Result<ArrayD<f32>, ServeError> {
        let n = input.shape().first().copied().unwrap_or(0);
        let shape: Vec<usize> = input.shape().to_vec();
        let data = match input.as_slice() {
            Some(s) => s.to_vec(),
            None => input.iter().copied().collect(),
        };
        let tensor = Tensor::from_array((shape, data)).map_err(err)?;
        let mut session = self
            .sessions
            .get(i)
            .ok_or_else(|| err(format!("no session {i}")))?
            .lock()
            .map_err(|_| err("session lock poisoned by an earlier panic"))?;
        let outputs = session
            .run(ort::inputs![self.info.input.name.as_str() => tensor])
            .map_err(err)?;
        let value = outputs
            .get(self.info.output.name.as_str())
            .ok_or_else(|| err(format!("no output named {:?}", self.info.output.name)))?;
        let (oshape, odata) = value.try_extract_tensor::<f32>().map_err(err)?;
        let oshape: Vec<usize> = oshape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative output dim {d}"))))
            .collect::<Result<_, _>>()?;
        check_output("ort", &self.info, n, &oshape)?;
        ArrayD::from_shape_vec(oshape, odata.to_vec()).map_err(err)
    }
}

/// Put ONNX Runtime's CUDA execution provider first on `builder`. `--gpu` is a request, not a hint: when the provider
/// cannot be used the model fails to load with the reason (no silent CPU fallback).
#[cfg(feature = "cuda")]
fn register_gpu(
    builder: &mut ort::session::builder::SessionBuilder,
    opts: &BackendOptions,
) -> Result<&'static str, ServeError> {
    use ort::ep::ExecutionProvider;
    let library = opts
        .ort_library
        .as_ref()
        .map_or_else(|| "libonnxruntime".to_owned(), |p| p.display().to_string());
    if !ort::ep::CUDA::is_available().map_err(err)? {
        return Err(err(format!(
            "--gpu: {library} has no CUDA execution provider (a CPU build of ONNX Runtime); point --ort-library or \
             ORT_DYLIB_PATH at the libonnxruntime.so of onnxruntime-gpu (scripts/gpu-build installs one)"
        )));
    }
    ort::ep::CUDA::default().register(builder).map_err(|e| {
        err(format!(
            "--gpu: ONNX Runtime's CUDA execution provider could not be started: {e} (it needs an NVIDIA GPU with \
             its driver, libcuda.so.1, and the CUDA 13 and cuDNN 9 libraries on LD_LIBRARY_PATH: see \
             scripts/gpu-build's env-gpu.sh)"
        ))
    })?;
    Ok("ort-cuda")
}

#[cfg(not(feature = "cuda"))]
fn register_gpu(
    _builder: &mut ort::session::builder::SessionBuilder,
    _opts: &BackendOptions,
) -> Result<&'static str, ServeError> {
    Err(err(
        "--gpu: this medmae-serve was built without the `cuda` feature (ONNX Runtime on the CPU only); rebuild \
         with `cargo build -p medmae-inference-server --features cuda` (see scripts/gpu-build) or serve without --gpu",
    ))
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError> {
        let n = input.shape().first().copied().unwrap_or(0);
        let parts = self.sessions.len().clamp(1, n.max(1));
        if parts == 1 {
            return self.run_on(0, input.view());
        }
        // Split the batch into `parts` contiguous chunks, one per session, run side by side.
        let chunk = n.div_ceil(parts);
        let chunks: Vec<_> = input.axis_chunks_iter(Axis(0), chunk).collect();
        let outs: Vec<Result<ArrayD<f32>, ServeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| s.spawn(move || self.run_on(i, c.view())))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(err("an ONNX Runtime worker panicked")))
                })
                .collect()
        });
        let outs: Vec<ArrayD<f32>> = outs.into_iter().collect::<Result<_, _>>()?;
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(err)
    }
}
