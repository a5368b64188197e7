//! The hospital-side inference server.
