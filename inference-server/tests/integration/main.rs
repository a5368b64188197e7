//! Integration tests of medmae-serve: the real server binary on 127.0.0.1 with an ephemeral port, driven by
//! tritonclient (Python), a Rust tonic client and `medmae-client`.

mod common;
mod drain;
mod gpu;
mod kserve;
mod limits;
mod ops;
mod parity;
mod segment;
