//! Operational concerns shared by every RPC: bearer-token auth, admission control (bounded concurrency + queue), the
//! bound on upload bytes held in memory, Prometheus metrics, accounting of every call at the gRPC edge, the shutdown
//! drain, and the allocator's retention of freed memory.

pub mod accounting;
pub mod admission;
pub mod auth;
pub mod drain;
pub mod memory;
pub mod metrics;
pub mod uploads;

pub use accounting::{Accounting, Calls};
pub use admission::{Admission, Permit};
pub use auth::BearerAuth;
pub use drain::{Drain, Exit};
pub use metrics::Metrics;
pub use uploads::{UploadBudget, UploadReservation};
