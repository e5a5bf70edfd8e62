//! The Rhai host: an `Engine` with ssod's API registered (`api/<domain>.rs`), running a script
//! file with errors that show file:line:column and the source line, notebooks (cells, cache,
//! report), the REPL, ablation grids and a progress display for long loops.

pub mod ablate;
pub mod api;
pub mod cache;
pub mod claim;
mod convert;
pub mod memo;
pub mod notebook;
pub use crate::progress;
pub mod repl;
mod run;
pub mod shard;
pub mod shared_fs;

pub use api::notebook::RunContext;
pub use api::{new_engine, new_engine_with, FnDoc};
pub use run::{format_script_error, run_script_file, ScriptRun};
