//! ONNX Runtime backend (`ort` 2.0 with a dynamically loaded `libonnxruntime`).

use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::{check_output, Backend, BackendOptions};
use crate::error::ServeError;
use crate::model::ModelInfo;

/// A model in an ONNX Runtime session. `Session::run` needs `&mut`, so calls are serialised per model; ORT
/// parallelises inside each call with its intra-op threads.
pub struct OrtBackend {
    session: Mutex<Session>,
    info: ModelInfo,
    name: &'static str,
}

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
        let mut builder = Session::builder(env)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?;
        if opts.threads > 0 {
            builder = builder
                .with_intra_threads(opts.threads)
                .map_err(|e| err(e.to_string()))?;
        }
        let mut name = "ort-cpu";
        if opts.use_gpu {
            name = register_gpu(&mut builder);
        }
        let session = builder
            .commit_from_file(&info.path)
            .map_err(|e| err(format!("{}: {e}", info.path.display())))?;
        Ok(Self {
            session: Mutex::new(session),
            info: info.clone(),
            name,
        })
    }
}

#[cfg(feature = "cuda")]
fn register_gpu(builder: &mut ort::session::builder::SessionBuilder) -> &'static str {
    use ort::ep::ExecutionProvider;
    let cuda = ort::ep::CUDA::default();
    match cuda.register(builder) {
        Ok(()) => "ort-cuda",
        Err(e) => {
            tracing::warn!(error = %e, "CUDA execution provider unavailable; falling back to ONNX Runtime CPU");
            "ort-cpu"
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn register_gpu(_builder: &mut ort::session::builder::SessionBuilder) -> &'static str {
    tracing::warn!("GPU requested but medmae-serve was built without the `cuda` feature; using ONNX Runtime CPU");
    "ort-cpu"
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError> {
        let n = input.shape().first().copied().unwrap_or(0);
        let shape: Vec<usize> = input.shape().to_vec();
        let data = input
            .as_standard_layout()
            .into_owned()
            .into_raw_vec_and_offset()
            .0;
        let tensor = Tensor::from_array((shape, data)).map_err(err)?;
        let mut session = self
            .session
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
