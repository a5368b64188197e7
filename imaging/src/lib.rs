//! medmae's shared, pure-Rust imaging pipeline (no libtorch, no async): used identically by training and serving.

pub mod datasets;
pub mod dicom;
pub mod draw;
pub mod error;
pub mod fingerprint;
pub mod inference;
pub mod io;
pub mod loader;
pub mod metrics;
pub mod orient;
pub mod prepare;
pub mod pseudo3d;
pub mod sample;
pub mod slices;
pub mod sliding;
pub mod synthetic;
pub mod transforms;
pub mod volume;

pub use error::{ImagingError, Result};
pub use sample::{Rng, Sample};
pub use volume::Volume;
