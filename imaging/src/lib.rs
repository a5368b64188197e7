//! medmae's shared, pure-Rust imaging pipeline (no libtorch, no async): used identically by training and serving.

pub mod error;
pub mod transforms;
pub mod volume;

pub use error::{ImagingError, Result};
pub use volume::Volume;
