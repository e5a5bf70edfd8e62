//! ssod: a Rust workbench for self-supervised pretraining of object detectors.
//!
//! Layers (arrows point down only; see DESIGN.md):
//! script -> train / eval / pretrain -> detect -> data / models -> nn -> ops -> autograd -> tensor -> backend

pub mod error;
pub mod rng;
pub use error::{Error, Result};

pub mod backend;
pub mod tensor;
pub mod autograd;
pub mod ops;
pub mod nn;
pub mod models;
pub mod detect;
pub mod data;
pub mod eval;
pub mod pretrain;
pub mod train;
pub mod script;

// pub use tensor::{Device, Shape, Tensor};

/// The version string that keys notebook caches.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
