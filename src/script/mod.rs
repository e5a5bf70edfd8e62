//! The Rhai host: an `Engine` with ssod's API registered (`api/<domain>.rs`), and running a script
//! file with errors that show file:line:column and the source line.

pub mod api;
mod convert;
mod run;

pub use api::{new_engine, FnDoc};
pub use run::{format_script_error, run_script_file, ScriptRun};
