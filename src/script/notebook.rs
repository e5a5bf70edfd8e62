//! Notebooks: a script split into cells at `// %% Title` lines, run in order in one persistent
//! scope, each cell's output printed under its title with its run time, cached on disk
//! ([`crate::script::cache`]) and written into the run folder's `report.md`.
//!
//! Scope across cells: every cell is compiled as its own AST (so a syntax error names its cell
//! and the cells before it still run); variables live in one [`Scope`]; function definitions of
//! every cell run so far are kept in a functions-only AST that is merged in front of each new
//! cell, so `fn`s (and closures stored in variables) defined in an earlier cell stay callable.
//! Each cell's source is compiled after as many blank lines as it starts below the top of the
//! file, so every position Rhai reports is a position in the whole file.
//!
//! Rules a user sees (`ssod run SCRIPT [--device cpu|cuda|auto] [--set k=v]... [--out DIR] [--fresh]
//! [--cache DIR] [--shard I/N]`):
//! - Run folder: `runs/<script-stem>/<YYYYmmdd-HHMMSS>/` under the working directory (`-2`, `-3`
//!   ... appended when the second is taken), or `--out DIR`, which must not exist or be empty:
//!   a run never writes over an earlier run's files (`--fresh` does not change that). The folder
//!   holds `report.md` and every file the script wrote through relative paths.
//! - Cache: `.ssod-cache/` next to the script, or `--cache DIR` (created if missing; several
//!   processes may share it, [`crate::script::cache`] has the layout and keys).
//!   The leading cells whose keys are cached are restored (variables, printed output, files);
//!   the first changed cell and everything after it run. `--fresh` reads nothing from the cache
//!   (it still writes). The key covers the source, not the files a cell reads: after changing an
//!   input file, run with `--fresh`.
//! - A failing cell prints `file:line:col: message`, the line and a caret, stops the run (later
//!   cells are "not run"), keeps the earlier cells' cache entries, writes the report and exits 1.
//!   Ctrl-C stops the running cell at its next Rhai operation (a native op runs to its end;
//!   long native loops can poll [`crate::script::progress::Progress::interrupted`]), writes the
//!   report and exits 130; a second Ctrl-C exits at once.
//! - `--set` keys that no `param` call read are warned about at the end of a completed run.
//! - `--shard I/N` ([`crate::script::shard`]): every cell runs (or is restored) as usual, but each
//!   `ablate` computes only this shard's points. When points of other shards are still missing,
//!   the run stops after that cell without caching it (later cells "not run"), prints how many
//!   points it computed and how many are missing, and ends successfully ([`RunEnd::ShardDone`]);
//!   a run without `--shard` then finds every point cached and writes the tables
//!   (docs/cluster.md).

mod report;
mod restore;
mod run_folder;
mod runner;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Scope, AST};

use crate::script::api::notebook::{CellState, OutputItem, RunContext};
use crate::script::cache::{cell_key, CellCache, CellRecord};
use crate::script::format_script_error;
use crate::tensor::Device;
use crate::{Error, Result};
use restore::restore_cells;

pub use report::write_report;
pub use run_folder::{new_run_dir, prepare_out_dir, timestamp};
pub use runner::run_notebook;

/// One cell of a script.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// The text after `// %%` (trimmed); `Cell N` when empty or before the first marker.
    pub title: String,
    /// The cell's lines (without the marker line).
    pub source: String,
    /// 1-based line in the file of the cell's first source line.
    pub first_line: usize,
}

/// Whether a line is a cell marker, and its title.
fn marker(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("// %%").map(str::trim)
}

/// Split a script into cells at `// %% Title` lines. Text before the first marker is an untitled
/// first cell unless it is blank.
pub fn split_cells(source: &str) -> Vec<Cell> {
    let mut cells: Vec<Cell> = Vec::new();
    let mut current = Cell {
        title: String::new(),
        source: String::new(),
        first_line: 1,
    };
    let mut has_marker = false;
    for (i, line) in source.lines().enumerate() {
        if let Some(title) = marker(line) {
            if has_marker || !current.source.trim().is_empty() {
                cells.push(current);
            }
            has_marker = true;
            current = Cell {
                title: title.to_string(),
                source: String::new(),
                first_line: i + 2,
            };
        } else {
            current.source.push_str(line);
            current.source.push('\n');
        }
    }
    if has_marker || !current.source.trim().is_empty() {
        cells.push(current);
    }
    for (i, c) in cells.iter_mut().enumerate() {
        if c.title.is_empty() {
            c.title = format!("Cell {}", i + 1);
        }
    }
    cells
}

/// Set by the SIGINT handler; checked by the engine's progress callback between operations.
pub use crate::progress::INTERRUPTED;

extern "C" fn on_sigint(_: libc::c_int) {
    // A second Ctrl-C while the first is still being handled: leave at once.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Make Ctrl-C stop the running cell instead of the process (a second Ctrl-C still exits).
pub fn install_interrupt_handler() {
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Rhai names a closure `anon$<hash of its source>`; the hash is seeded at random per process
/// unless a seed is set before the first engine. A fixed seed makes the names the same in every
/// run, so a cached closure is found again among the functions of the restored cells. (The
/// random seed protects hash maps from crafted keys; a notebook's scripts are its user's own.)
pub(crate) fn fix_hashing_seed() {
    // Err: already set (by an earlier session in this process): keep it.
    let _ = rhai::config::hashing::set_hashing_seed(Some([
        0x5353_4f44_6e62_0001,
        0x6365_6c6c_7300_0002,
        0x7373_6f64_0000_0003,
        0x0000_0000_0000_0004,
    ]));
}

/// How a cell ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CellStatus {
    Ran,
    Restored,
    Failed(String),
    Interrupted,
    /// A sharded run's `ablate` finished this shard's points with others missing (the summary).
    ShardDone(String),
    NotRun,
}

/// A cell's outcome, for the report.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub cell: Cell,
    pub status: CellStatus,
    pub output: Vec<OutputItem>,
    pub seconds: f64,
    /// Why the cell was not cached, if it ran and was not.
    pub cache_note: Option<String>,
}

/// An engine, one scope and the functions defined so far: cells run one after the other.
pub struct Session {
    pub engine: Engine,
    pub scope: Scope<'static>,
    functions: AST,
    pub ctx: Arc<RunContext>,
    /// File name and whole text, for error messages.
    file: String,
    text: String,
}

impl Session {
    pub fn new(ctx: Arc<RunContext>, file: String, text: String) -> Self {
        fix_hashing_seed();
        let (mut engine, _) = crate::script::api::new_engine_with(&ctx);
        engine.on_progress(|_| {
            if INTERRUPTED.load(Ordering::Relaxed) {
                Some(Dynamic::from("interrupted"))
            } else {
                None
            }
        });
        Session {
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            ctx,
            file,
            text,
        }
    }

    /// Replace the text errors are shown against (the REPL grows it cell by cell).
    pub fn set_text(&mut self, text: String) {
        self.text = text;
    }

    fn compile(&self, cell: &Cell) -> std::result::Result<AST, String> {
        let padded = format!(
            "{}{}",
            "\n".repeat(cell.first_line.saturating_sub(1)),
            cell.source
        );
        self.engine
            .compile(&padded)
            .map_err(|e| format_script_error(&self.file, &self.text, &EvalAltResult::from(e)))
    }

    /// Keep the cell's function definitions without running it (a restored cell).
    pub fn define_functions(&mut self, cell: &Cell) -> std::result::Result<(), String> {
        let ast = self.compile(cell)?;
        self.functions = self.functions.merge(&ast.clone_functions_only());
        Ok(())
    }

    /// Function pointers to the closures defined by the cells so far, by name.
    pub fn closure_resolver(&self) -> impl Fn(&str) -> Option<rhai::FnPtr> {
        let module =
            rhai::Module::eval_ast_as_new(Scope::new(), &self.functions, &self.engine).ok();
        move |name: &str| {
            let m = module.as_ref()?;
            (0..=32).find_map(|n| {
                m.get_script_fn(name, n)
                    .map(|d| rhai::FnPtr::from(d.clone()))
            })
        }
    }

    /// Run a cell in the session's scope. The cell's output is in `ctx.cell()` afterwards.
    pub fn run_cell(&mut self, cell: &Cell) -> CellStatus {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let ast = match self.compile(cell) {
            Ok(a) => a,
            Err(msg) => return CellStatus::Failed(msg),
        };
        // Functions are kept even if the cell fails later (they were defined by the source).
        self.functions = self.functions.merge(&ast.clone_functions_only());
        let whole = self.functions.merge(&ast);
        match self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &whole)
        {
            Ok(v) => {
                if !v.is_unit() {
                    self.ctx.emit(OutputItem::Text(v.to_string()));
                }
                CellStatus::Ran
            }
            Err(e) if is_interrupt(&e) => CellStatus::Interrupted,
            Err(e) => CellStatus::Failed(format_script_error(&self.file, &self.text, &e)),
        }
    }
}

/// Whether an error is (or wraps) the progress callback's termination.
fn is_interrupt(e: &EvalAltResult) -> bool {
    match e {
        EvalAltResult::ErrorTerminated(..) => true,
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => is_interrupt(inner),
        _ => INTERRUPTED.load(Ordering::Relaxed),
    }
}

/// Which device a run uses: its name (for cache keys and the report), the device, and a note
/// to print (`auto` falling back to the CPU says why).
pub fn resolve_device(device: &str) -> Result<(String, Device, Option<String>)> {
    let (d, note) = Device::resolve(device)?;
    Ok((d.to_string(), d, note))
}

/// Parse `key=value` (`--set`).
pub fn parse_set(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::InvalidArgument(format!(
            "--set `{s}`: expected key=value"
        ))),
    }
}

/// What `ssod run` was asked to do.
pub struct NotebookOptions {
    pub script: PathBuf,
    pub device: String,
    pub sets: Vec<String>,
    pub out: Option<PathBuf>,
    pub fresh: bool,
    /// Where `runs/` goes when `out` is not given (the working directory).
    pub runs_root: PathBuf,
    /// `--cache DIR`: the cache folder instead of `.ssod-cache/` next to the script.
    pub cache: Option<PathBuf>,
    /// `--shard I/N`: compute only this shard's ablation points.
    pub shard: Option<crate::script::shard::Shard>,
}

/// How a notebook run ended.
#[derive(Debug, PartialEq)]
pub enum RunEnd {
    Completed,
    /// A cell failed (its 1-based index).
    Failed(usize),
    Interrupted(usize),
    /// A sharded run stopped after this cell (1-based): its ablation points are done, other
    /// shards' are missing (the summary).
    ShardDone(usize, String),
}

pub struct NotebookSummary {
    pub run_dir: PathBuf,
    pub end: RunEnd,
    pub results: Vec<CellResult>,
}

fn print_header(i: usize, n: usize, cell: &Cell, note: &str) {
    println!("\n── [{}/{n}] {} {note}", i + 1, cell.title);
}
