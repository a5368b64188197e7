//! Optimisation: AdamW with parameter groups (weight-decay exclusions, layer-wise lr decay), global-norm gradient
//! clipping and a serialisable state, so a resumed run continues bit-identically.

mod adamw;
pub mod groups;

pub use adamw::{AdamW, ParamGroup};
