//! MONAI-style transforms, one module each, built from config into a `Compose`.

pub mod spec;

pub use spec::{Select, Source, TransformSpec};
