//! The contracts between medmae's crates, with no libtorch: architecture configs (`model`), the exact tensor names
//! and shapes of a checkpoint (`weights`), and the `model.json` card that travels with every checkpoint and export.

pub mod card;
pub mod model;
pub mod weights;

pub use card::{InferenceSpec, ModelCard, OutputActivation, CARD_FORMAT_VERSION};
pub use model::{MaeConfig, ModelConfig, ReconLoss, SpecError, UnetrConfig, VitConfig, VitStyle};
pub use weights::{expected_weights, TensorSpec};
