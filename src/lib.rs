//! ssod: a Rust workbench for self-supervised pretraining of object detectors.
//!
//! Layers (arrows point down only; docs/design.md; `tests/architecture.rs` checks the
//! backend's):
//! selftest -> script -> train / eval / pretrain -> detect -> data / models -> nn -> ops -> autograd
//! -> tensor -> backend. `selftest` (the CUDA parity table) compares whole steps of the layers
//! below it against the CPU, so it sits on top.

pub mod atomic_file;
pub mod csv_table;
pub mod digest;
pub mod error;
pub mod progress;
pub mod rng;
pub use error::{Error, Result};

pub mod autograd;
pub mod backend;
pub mod data;
pub mod detect;
pub mod eval;
pub mod export;
pub mod models;
pub mod nn;
pub mod ops;
pub mod pretrain;
pub mod script;
pub mod selftest;
pub mod tensor;
pub mod train;

pub use tensor::{Device, Shape, Tensor};

/// The version string that keys notebook caches.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
