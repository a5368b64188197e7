//! The contracts between medmae's crates. This is the leaf crate: it depends on no other workspace crate and holds
//! each shared definition once — architecture configs (`model`), the declarative preprocessing list (`transforms`),
//! the exact tensor names and shapes of a checkpoint (`weights`), and the `model.json` card with its typed inference
//! spec (`card`) that travels with every checkpoint and export, the ONNX contract (`onnx`: export kinds and the
//! `medmae.*` metadata keys with their one writer and one reader), and the dataset selection shared by `prepare` and
//! training configs (`dataset`), and the file conventions every crate shares (`file`: an error naming the file,
//! atomic writes).

pub mod card;
pub mod dataset;
pub mod file;
pub mod model;
pub mod onnx;
pub mod transforms;
pub mod weights;

pub use card::{BlendMode, InferenceSpec, ModelCard, OutputActivation, CARD_FORMAT_VERSION};
pub use dataset::{DatasetKind, DatasetSource};
pub use file::FileError;
pub use model::{
    MaeConfig, ModelConfig, PixVariance, ReconLoss, SpecError, UnetrConfig, VitConfig, VitStyle,
};
pub use onnx::{ExportKind, MetadataError, OnnxMetadata, UnknownKind};
pub use transforms::{Select, Source, TransformSpec};
pub use weights::{expected_weights, TensorSpec};
