//! Operational concerns shared by every RPC: bearer-token auth, admission control (bounded concurrency + queue)
//! and Prometheus metrics.

pub mod admission;
pub mod auth;
pub mod metrics;

pub use admission::{Admission, Permit};
pub use auth::BearerAuth;
pub use metrics::Metrics;
