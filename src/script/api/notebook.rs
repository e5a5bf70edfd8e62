//! Notebook functions: `param`, `show`, `table`, `write_csv`, `run_dir`, `ablate`, `cached`.
//!
//! They need per-run state (the `--set` values, the run folder, the current cell's output), kept
//! in a [`RunContext`] that the engine is built with ([`super::new_engine_with`]). The engine that
//! `ssod doc` builds gets a detached context: no run folder (relative paths resolve against the
//! working directory) and no parameters.

mod codecs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext, FLOAT, INT};
use serde::{Deserialize, Serialize};

use super::Api;
use crate::csv_table::csv_string;
use crate::script::convert::{lift, script_err, ScriptResult};
use crate::tensor::Device;

pub use codecs::register_builtin_codecs;

/// One piece of a cell's output, in order: printed text, a markdown table, an image in the run
/// folder (path relative to it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OutputItem {
    Text(String),
    Markdown(String),
    Image(String),
}

/// What the running cell produced so far.
#[derive(Default)]
pub struct CellState {
    /// The cell's cache key (ablation points are keyed under it).
    pub key: String,
    pub output: Vec<OutputItem>,
    /// Files the cell wrote into the run folder (relative paths), cached with the cell.
    pub files: Vec<String>,
    /// How many `ablate` calls the cell made so far (each gets its own cache namespace).
    pub ablations: usize,
    /// While an `ablate` point runs: its work folder in the cache, where relative output
    /// paths go, so that a point a killed process left half done resumes from its own
    /// checkpoints (moved into the run folder when the point finishes).
    pub point_dir: Option<PathBuf>,
    /// Keys of the values `cached` computed in this cell (shared within the cell under
    /// `--fresh`).
    pub cached_keys: Vec<String>,
    /// Set by `ablate` in a sharded run when this shard's points are done but others are still
    /// missing: the summary to print. The notebook stops after this cell without caching it.
    pub shard_stop: Option<String>,
}

/// Per-run state shared by the notebook functions.
pub struct RunContext {
    /// `--set key=value` pairs.
    pub params: BTreeMap<String, String>,
    /// Keys read by `param`, with the value used (as text).
    pub params_read: Mutex<BTreeMap<String, String>>,
    /// The run folder; `None` for a detached context (relative paths resolve against the cwd).
    pub run_dir: Option<PathBuf>,
    /// The cache folder (ablation points); `None`: nothing is cached.
    pub cache_dir: Option<PathBuf>,
    pub cell: Mutex<CellState>,
    /// Echo output to stdout as it is produced (the notebook prints live).
    pub echo: bool,
    /// `--fresh`: do not read cached results (ablation points included); still write them.
    pub fresh: bool,
    /// Where training runs (`--device`; the REPL and detached contexts use the CPU).
    pub device: Device,
    /// `--shard I/N`: compute only this shard's ablation points.
    pub shard: Option<crate::script::shard::Shard>,
}

impl RunContext {
    /// No run folder, no parameters, no cache: for `ssod doc` and plain engines.
    pub fn detached() -> Arc<Self> {
        // Before the first engine: closures get the same names in every process.
        crate::script::notebook::fix_hashing_seed();
        Arc::new(RunContext {
            params: BTreeMap::new(),
            params_read: Mutex::new(BTreeMap::new()),
            run_dir: None,
            cache_dir: None,
            cell: Mutex::new(CellState::default()),
            echo: true,
            fresh: false,
            device: Device::Cpu,
            shard: None,
        })
    }

    pub fn cell(&self) -> MutexGuard<'_, CellState> {
        self.cell.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_params(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.params_read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record output (and echo it).
    pub fn emit(&self, item: OutputItem) {
        if self.echo {
            match &item {
                OutputItem::Text(s) | OutputItem::Markdown(s) => println!("{s}"),
                OutputItem::Image(p) => println!("[image: {p}]"),
            }
        }
        // A detached context (plain `run_script_file`, `ssod doc`) keeps nothing.
        if self.run_dir.is_some() {
            self.cell().output.push(item);
        }
    }

    /// A path as scripts mean it: relative paths resolve inside the run folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if !p.is_relative() {
            return p.to_path_buf();
        }
        if let Some(point) = &self.cell().point_dir {
            return point.join(p);
        }
        match &self.run_dir {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }

    /// Remember a file written into the run folder (cached with the cell, linked by the report).
    pub fn record_file(&self, path: &Path) {
        if let Some(dir) = &self.run_dir {
            if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel.to_string_lossy().to_string();
                let mut cell = self.cell();
                if !cell.files.contains(&rel) {
                    cell.files.push(rel);
                }
            }
        }
    }

    /// A file name in the run folder that is not taken yet: `stem.ext`, `stem-2.ext`, ...
    pub fn fresh_name(&self, stem: &str, ext: &str) -> PathBuf {
        let mut n = 1;
        loop {
            let name = if n == 1 {
                format!("{stem}.{ext}")
            } else {
                format!("{stem}-{n}.{ext}")
            };
            let p = self.resolve(&name);
            if !p.exists() {
                return p;
            }
            n += 1;
        }
    }

    /// The `--set` value of `key` (marked as read), or `None`.
    fn param_text(&self, key: &str, default_text: String) -> Option<String> {
        let value = self.params.get(key).cloned();
        self.read_params()
            .insert(key.to_string(), value.clone().unwrap_or(default_text));
        value
    }
}

fn param_err(key: &str, value: &str, ty: &str) -> Box<rhai::EvalAltResult> {
    script_err(format!(
        "param `{key}`: --set value `{value}` is not {ty} (the default's type)"
    ))
}

/// A cell of a table or CSV: floats with up to 6 significant decimals, strings as they are.
fn cell_text(d: &Dynamic) -> String {
    if let Ok(f) = d.as_float() {
        let s = format!("{f:.6}");
        let s = s.trim_end_matches('0');
        let s = s
            .strip_suffix('.')
            .map(|x| format!("{x}.0"))
            .unwrap_or(s.into());
        return s;
    }
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return s.to_string();
    }
    d.to_string()
}

/// Columns of an array of maps: the first row's keys, then keys that appear later.
fn rows_of(op: &str, rows: &Array) -> ScriptResult<(Vec<String>, Vec<Map>)> {
    let mut columns: Vec<String> = Vec::new();
    let mut maps = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let m = r.read_lock::<Map>().ok_or_else(|| {
            script_err(format!(
                "{op}: row {i} is a {}, expected a map",
                r.type_name()
            ))
        })?;
        for k in m.keys() {
            if !columns.iter().any(|c| c == k.as_str()) {
                columns.push(k.to_string());
            }
        }
        maps.push(m.clone());
    }
    Ok((columns, maps))
}

/// An array of maps as a markdown table (missing entries empty).
pub fn markdown_rows(op: &str, rows: &Array) -> ScriptResult<String> {
    markdown_rows_ordered(op, rows, None)
}

/// Rhai maps iterate their keys sorted; `columns` gives the table's column order (and subset).
pub fn markdown_rows_ordered(
    op: &str,
    rows: &Array,
    columns: Option<Vec<String>>,
) -> ScriptResult<String> {
    let (found, maps) = rows_of(op, rows)?;
    let columns = match columns {
        Some(cols) => {
            if let Some(missing) = cols.iter().find(|c| !found.contains(c)) {
                return Err(script_err(format!(
                    "{op}: column `{missing}` is in no row (columns: {})",
                    found.join(", ")
                )));
            }
            cols
        }
        None => found,
    };
    if columns.is_empty() {
        return Ok("(empty table)".into());
    }
    let esc = |s: String| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("| {} |\n", columns.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(columns.len())));
    for m in &maps {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                m.get(c.as_str())
                    .map(cell_text)
                    .map(esc)
                    .unwrap_or_default()
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    Ok(out.trim_end().to_string())
}

/// Write a file that must not exist yet (temporary file + rename).
pub fn write_new_file(op: &str, path: &Path, bytes: &[u8]) -> ScriptResult<()> {
    if path.exists() {
        return Err(script_err(format!(
            "{op}: `{}` already exists (outputs are never overwritten)",
            path.display()
        )));
    }
    crate::atomic_file::write_atomic(path, bytes).map_err(|e| script_err(format!("{op}: {e}")))
}

pub fn register(api: &mut Api, ctx: &Arc<RunContext>) {
    let c = ctx.clone();
    func!(
        api,
        "param",
        &["key: String", "default: i64"],
        "i64",
        "The `--set key=value` value as an integer, or the default.",
        move |key: &str, d: INT| -> ScriptResult<INT> {
            match c.param_text(key, d.to_string()) {
                None => Ok(d),
                Some(v) => v
                    .trim()
                    .parse::<INT>()
                    .map_err(|_| param_err(key, &v, "an integer")),
            }
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "param",
        &["key: String", "default: f64"],
        "f64",
        "The `--set key=value` value as a float, or the default.",
        move |key: &str, d: FLOAT| -> ScriptResult<FLOAT> {
            match c.param_text(key, d.to_string()) {
                None => Ok(d),
                Some(v) => v
                    .trim()
                    .parse::<FLOAT>()
                    .map_err(|_| param_err(key, &v, "a number")),
            }
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "param",
        &["key: String", "default: bool"],
        "bool",
        "The `--set key=value` value as a bool (true/false/1/0/yes/no), or the default.",
        move |key: &str, d: bool| -> ScriptResult<bool> {
            match c.param_text(key, d.to_string()) {
                None => Ok(d),
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(param_err(key, &v, "true or false")),
                },
            }
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "param",
        &["key: String", "default: String"],
        "String",
        "The `--set key=value` value as a string, or the default.",
        move |key: &str, d: &str| -> String {
            c.param_text(key, d.to_string()).unwrap_or(d.into())
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "run_dir",
        &[],
        "String",
        "This run's output folder (relative paths of show/write_csv/plots resolve inside it).",
        move || -> String {
            c.run_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| ".".into())
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "table",
        &["rows: Array"],
        "()",
        "Print an array of maps as a markdown table (rendered as a table in report.md).",
        move |rows: Array| -> ScriptResult<()> {
            let md = markdown_rows("table", &rows)?;
            c.emit(OutputItem::Markdown(md));
            Ok(())
        }
    );
    let c = ctx.clone();
    func!(
        api,
        "table",
        &["rows: Array", "columns: Array"],
        "()",
        "Print an array of maps as a markdown table with the given column order.",
        move |rows: Array, columns: Array| -> ScriptResult<()> {
            let cols = columns.iter().map(|c| c.to_string()).collect();
            let md = markdown_rows_ordered("table", &rows, Some(cols))?;
            c.emit(OutputItem::Markdown(md));
            Ok(())
        }
    );
    let c = ctx.clone();
    func!(api, "write_csv", &["path: String", "rows: Array"], "String",
        "Write an array of maps as CSV (relative paths go into the run folder; never overwrites); returns the path.",
        move |path: &str, rows: Array| -> ScriptResult<String> {
            let (columns, maps) = rows_of("write_csv", &rows)?;
            let fields: Vec<Vec<String>> = maps
                .iter()
                .map(|m| columns.iter().map(|k| m.get(k.as_str()).map(cell_text).unwrap_or_default()).collect())
                .collect();
            let p = c.resolve(path);
            let text = lift(csv_string(&columns, &fields))?;
            write_new_file("write_csv", &p, text.as_bytes())?;
            c.record_file(&p);
            Ok(p.display().to_string())
        });
    let c = ctx.clone();
    func!(api, "show", &["image_path: String"], "String",
        "Show a PNG/JPEG in the report: copied into the run folder (unless already there) and linked.",
        move |path: &str| -> ScriptResult<String> { show(&c, path) });
    let c = ctx.clone();
    func!(api, "ablate", &["grid: Map", "seeds: Array", "f: FnPtr"], "Array",
        "Run f(cfg) for every point of the grid (map of lists) x seeds (cfg = point + seed); caches each point, writes ablation.csv, a mean ± std table and a bar chart; returns the rows.",
        move |nc: NativeCallContext, grid: Map, seeds: Array, f: FnPtr| -> ScriptResult<Array> {
            crate::script::ablate::ablate(&nc, &c, grid, seeds, f)
        });
    let c = ctx.clone();
    func!(api, "cached", &["name: String", "f: FnPtr"], "Dynamic",
        "f() computed once per cell and name and kept in the notebook cache (models and tensors too); every call gets its own copy. While f runs, relative outputs go to a work folder in the cache, so an interrupted f (pretraining) resumes; its files then move into the run folder.",
        move |nc: NativeCallContext, name: &str, f: FnPtr| -> ScriptResult<Dynamic> {
            crate::script::memo::cached(&nc, &c, name, f)
        });
}

fn show(c: &RunContext, path: &str) -> ScriptResult<String> {
    // An existing path as given (cwd-relative) first, then inside the run folder.
    let given = Path::new(path);
    let src = if given.exists() {
        given.to_path_buf()
    } else {
        c.resolve(path)
    };
    if !src.is_file() {
        return Err(script_err(format!("show: image `{path}` not found")));
    }
    let Some(dir) = &c.run_dir else {
        c.emit(OutputItem::Image(src.display().to_string()));
        return Ok(src.display().to_string());
    };
    let inside = match (src.canonicalize(), dir.canonicalize()) {
        (Ok(s), Ok(d)) => s.strip_prefix(&d).ok().map(|r| r.to_path_buf()),
        _ => None,
    };
    let dest = match inside {
        Some(rel) => dir.join(rel),
        None => {
            let stem = src
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "image".into());
            let ext = src
                .extension()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "png".into());
            let dest = c.fresh_name(&stem, &ext);
            std::fs::copy(&src, &dest).map_err(|e| {
                script_err(format!("show: copy `{path}` to {}: {e}", dest.display()))
            })?;
            dest
        }
    };
    c.record_file(&dest);
    let rel = dest
        .strip_prefix(dir)
        .map(|r| r.to_string_lossy().to_string())
        .unwrap_or_else(|_| dest.display().to_string());
    c.emit(OutputItem::Image(rel.clone()));
    Ok(dest.display().to_string())
}

/// Route `print` and `debug` into the context (the cell's output), echoing them live.
pub fn hook_output(engine: &mut rhai::Engine, ctx: &Arc<RunContext>) {
    let c = ctx.clone();
    engine.on_print(move |s| c.emit(OutputItem::Text(s.to_string())));
    let c = ctx.clone();
    engine.on_debug(move |s, _, _| c.emit(OutputItem::Text(s.to_string())));
}

/// The context of the notebook (or REPL) running in this process, for API functions that write
/// files: [`output_path`] and [`record_output`].
fn current() -> &'static std::sync::RwLock<Option<Arc<RunContext>>> {
    static CURRENT: std::sync::OnceLock<std::sync::RwLock<Option<Arc<RunContext>>>> =
        std::sync::OnceLock::new();
    CURRENT.get_or_init(|| std::sync::RwLock::new(None))
}

/// Make `ctx` the process's current run (the notebook and the REPL call this).
pub fn set_current(ctx: Option<Arc<RunContext>>) {
    *current().write().unwrap_or_else(|p| p.into_inner()) = ctx;
}

/// The device of the current run (`--device`), the CPU when no notebook runs.
pub fn run_device() -> Device {
    current()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(Device::Cpu, |ctx| ctx.device)
}

/// Whether an `ablate` point is running (its outputs go to its work folder, and training and
/// pretraining resume from what an interrupted earlier attempt left there).
pub fn in_ablation_point() -> bool {
    current()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|ctx| ctx.cell().point_dir.is_some())
}

/// Where an API function should write a file a script named: relative paths go into the
/// current run folder (the working directory when no notebook runs).
pub fn output_path(path: &str) -> PathBuf {
    match current().read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(ctx) => ctx.resolve(path),
        None => PathBuf::from(path),
    }
}

/// Tell the notebook that an API function wrote `path` (cached with the cell, restored into
/// later run folders); `image: true` also shows it in the report like `show`.
pub fn record_output(path: &Path, image: bool) {
    if let Some(ctx) = current().read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        ctx.record_file(path);
        if image {
            if let Some(dir) = &ctx.run_dir {
                if let Ok(rel) = path.strip_prefix(dir) {
                    ctx.emit(OutputItem::Image(rel.to_string_lossy().to_string()));
                }
            }
        }
    }
}
