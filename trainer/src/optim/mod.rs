//! Optimisation: AdamW with parameter groups (weight-decay exclusions, layer-wise lr decay), global-norm gradient
//! clipping, AMP loss scaling, and serialisable state, so a resumed run continues bit-identically.

mod adamw;
mod fused;
pub mod groups;
pub mod scaler;

pub use adamw::{AdamW, ParamGroup};
pub use scaler::LossScaler;
