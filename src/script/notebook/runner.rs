//! [`run_notebook`]: open the run folder and the cache, restore the leading cells the cache
//! holds, run the rest until one fails, is interrupted or ends its shard's part, then warn about
//! unread `--set` keys and write the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::*;

/// Run a notebook: cells, cache, report. Errors before the first cell (unreadable script, bad
/// options) are `Err`; a failing cell is `Ok` with [`RunEnd::Failed`] (its message was printed).
pub fn run_notebook(opts: &NotebookOptions) -> Result<NotebookSummary> {
    fix_hashing_seed();
    let text = std::fs::read_to_string(&opts.script).map_err(|e| Error::io(&opts.script, e))?;
    let (device, run_device, device_note) = resolve_device(&opts.device)?;
    if let Some(note) = device_note {
        println!("{note}");
    }
    let params = parse_sets(&opts.sets)?;
    let cells = split_cells(&text);
    let run_dir = open_run_dir(opts)?;
    let cache = open_cache(opts)?;
    let ctx = run_context(opts, &params, &run_dir, &cache, run_device);
    crate::script::api::notebook::set_current(Some(ctx.clone()));
    let file = opts.script.display().to_string();
    let session = Session::new(ctx.clone(), file, text);
    announce(&run_dir, opts.shard, &cache);
    let keys = cell_keys(&cells, &params, &device);

    let mut run = CellRun {
        session,
        ctx: ctx.clone(),
        cache,
        run_dir,
        cells: &cells,
        keys,
        end: RunEnd::Completed,
    };
    let (restored, mut results) = run.restore_leading(opts.fresh);
    for i in restored..cells.len() {
        results.push(run.run_or_skip(i));
    }
    let CellRun { run_dir, end, .. } = run;

    let warnings = unused_set_warnings(&params, &ctx, &end);
    for w in &warnings {
        eprintln!("{w}");
    }
    let report = write_report(
        &run_dir,
        &opts.script,
        &device,
        &params,
        &ctx.read_params(),
        &results,
        &warnings,
    )?;
    println!("\nreport: {}", report.display());
    Ok(NotebookSummary {
        run_dir,
        end,
        results,
    })
}

/// The `--set key=value` pairs.
fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for s in sets {
        let (k, v) = parse_set(s)?;
        params.insert(k, v);
    }
    Ok(params)
}

/// `--out DIR` (new or empty), else a fresh `runs/<stem>/<timestamp>/`; absolute, so
/// `run_dir()` strings stay valid whatever a script joins them with.
fn open_run_dir(opts: &NotebookOptions) -> Result<PathBuf> {
    let stem = opts
        .script
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "script".into());
    let run_dir = match &opts.out {
        Some(d) => prepare_out_dir(d)?,
        None => new_run_dir(&opts.runs_root.join("runs").join(&stem))?,
    };
    run_dir.canonicalize().map_err(|e| Error::io(&run_dir, e))
}

/// `--cache DIR` (created if missing), else `.ssod-cache/` next to the script.
fn open_cache(opts: &NotebookOptions) -> Result<CellCache> {
    Ok(match &opts.cache {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            CellCache::at(dir.clone())
        }
        None => CellCache::for_script(&opts.script),
    })
}

/// What the script API sees of this run.
fn run_context(
    opts: &NotebookOptions,
    params: &BTreeMap<String, String>,
    run_dir: &std::path::Path,
    cache: &CellCache,
    device: Device,
) -> Arc<RunContext> {
    Arc::new(RunContext {
        params: params.clone(),
        params_read: Mutex::new(BTreeMap::new()),
        run_dir: Some(run_dir.to_path_buf()),
        cache_dir: Some(cache.root().to_path_buf()),
        cell: Mutex::new(CellState::default()),
        echo: true,
        fresh: opts.fresh,
        device,
        shard: opts.shard,
    })
}

/// The run folder, and the shard's part when sharded.
fn announce(
    run_dir: &std::path::Path,
    shard: Option<crate::script::shard::Shard>,
    cache: &CellCache,
) {
    println!("run folder: {}", run_dir.display());
    if let Some(s) = shard {
        println!(
            "shard {s}: ablations compute the points whose number mod {} is {} (cache: {})",
            s.count,
            s.index,
            cache.root().display()
        );
    }
}

/// Each cell's cache key, chained through the keys of the cells before it.
fn cell_keys(cells: &[Cell], params: &BTreeMap<String, String>, device: &str) -> Vec<String> {
    let mut keys = Vec::with_capacity(cells.len());
    let mut prev = String::new();
    for c in cells {
        prev = cell_key(&prev, &c.title, &c.source, params, device);
        keys.push(prev.clone());
    }
    keys
}

/// The warnings for `--set` keys no `param` call read (a completed run only).
fn unused_set_warnings(
    params: &BTreeMap<String, String>,
    ctx: &RunContext,
    end: &RunEnd,
) -> Vec<String> {
    if *end != RunEnd::Completed {
        return Vec::new();
    }
    params
        .keys()
        .filter(|k| !ctx.read_params().contains_key(*k))
        .map(|k| format!("warning: --set {k} was given but no param(\"{k}\", ...) call read it"))
        .collect()
}

/// The cells of one run and what running them needs.
struct CellRun<'c> {
    session: Session,
    ctx: Arc<RunContext>,
    cache: CellCache,
    run_dir: PathBuf,
    cells: &'c [Cell],
    keys: Vec<String>,
    end: RunEnd,
}

impl CellRun<'_> {
    /// Restore the leading cells with complete cache entries (none with `fresh`) and print
    /// their output: `(cells restored, their results)`.
    fn restore_leading(&mut self, fresh: bool) -> (usize, Vec<CellResult>) {
        let n = self.cells.len();
        let mut restored = 0;
        if !fresh {
            restored = self.keys.iter().take_while(|k| self.cache.has(k)).count();
        }
        let records = restore_cells(
            &mut self.session,
            &self.cache,
            &self.keys[..restored],
            self.cells,
            &self.run_dir,
            &self.ctx,
        );
        if records.len() < restored {
            restored = 0;
        }
        if fresh {
            println!("--fresh: the cache is not read (finished cells are still saved)");
        } else if restored > 0 {
            println!(
                "cache: restoring {restored} of {n} cell(s) unchanged since an earlier run ({})",
                self.cache.root().display()
            );
        }
        let mut results = Vec::new();
        for (i, (cell, record)) in self.cells.iter().zip(&records).enumerate() {
            print_header(
                i,
                n,
                cell,
                &format!("(restored from cache; ran in {:.2} s)", record.seconds),
            );
            for item in &record.output {
                match item {
                    OutputItem::Text(s) | OutputItem::Markdown(s) => println!("{s}"),
                    OutputItem::Image(p) => println!("[image: {p}]"),
                }
            }
            self.ctx.read_params().extend(record.params_read.clone());
            results.push(CellResult {
                cell: cell.clone(),
                status: CellStatus::Restored,
                output: record.output.clone(),
                seconds: record.seconds,
                cache_note: None,
            });
        }
        (restored, results)
    }

    /// Cell `i`: run (and cache) it while the run goes on, else record it as not run.
    fn run_or_skip(&mut self, i: usize) -> CellResult {
        let cell = &self.cells[i];
        if self.end != RunEnd::Completed {
            return CellResult {
                cell: cell.clone(),
                status: CellStatus::NotRun,
                output: Vec::new(),
                seconds: 0.0,
                cache_note: None,
            };
        }
        print_header(i, self.cells.len(), cell, "");
        *self.ctx.cell() = CellState {
            key: self.keys[i].clone(),
            ..Default::default()
        };
        let read_before = self.ctx.read_params().clone();
        let t0 = Instant::now();
        let mut status = self.session.run_cell(cell);
        let seconds = t0.elapsed().as_secs_f64();
        let state = std::mem::take(&mut *self.ctx.cell());
        // Also when the script caught the stop: the cell's ablation is incomplete.
        if let Some(summary) = &state.shard_stop {
            if !matches!(status, CellStatus::Failed(_)) {
                status = CellStatus::ShardDone(summary.clone());
            }
        }
        let cache_note = self.conclude(i, &status, seconds, &state, &read_before);
        CellResult {
            cell: cell.clone(),
            status,
            output: state.output,
            seconds,
            cache_note,
        }
    }

    /// After cell `i` ran: cache it if it succeeded (returning why not when it could not be),
    /// or print how it ended and end the run.
    fn conclude(
        &mut self,
        i: usize,
        status: &CellStatus,
        seconds: f64,
        state: &CellState,
        read_before: &BTreeMap<String, String>,
    ) -> Option<String> {
        let title = &self.cells[i].title;
        match status {
            CellStatus::Ran => {
                println!("({seconds:.2} s)");
                return self.save(i, seconds, state, read_before);
            }
            CellStatus::Failed(msg) => {
                eprintln!("{msg}");
                eprintln!("cell {} `{title}` failed after {seconds:.2} s", i + 1);
                self.end = RunEnd::Failed(i + 1);
            }
            CellStatus::Interrupted => {
                eprintln!(
                    "cell {} `{title}` interrupted (Ctrl-C) after {seconds:.2} s",
                    i + 1
                );
                self.end = RunEnd::Interrupted(i + 1);
            }
            CellStatus::ShardDone(summary) => {
                println!("({seconds:.2} s; not cached: this shard's part of the ablation)");
                self.end = RunEnd::ShardDone(i + 1, summary.clone());
            }
            CellStatus::Restored | CellStatus::NotRun => {}
        }
        None
    }

    /// Cache cell `i` (its record: output, files, the params it read first); why not, when it
    /// could not be cached.
    fn save(
        &self,
        i: usize,
        seconds: f64,
        state: &CellState,
        read_before: &BTreeMap<String, String>,
    ) -> Option<String> {
        let params_read = self
            .ctx
            .read_params()
            .iter()
            .filter(|(k, _)| !read_before.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let record = CellRecord {
            version: crate::VERSION.to_string(),
            title: self.cells[i].title.clone(),
            output: state.output.clone(),
            files: state.files.clone(),
            params_read,
            seconds,
            run_dir: self.run_dir.display().to_string(),
        };
        let note = match self
            .cache
            .save(&self.keys[i], &self.session.scope, &record, &self.run_dir)
        {
            Ok(Ok(())) => return None,
            Ok(Err(why)) => format!("not cached: {}", why.0),
            Err(e) => format!("not cached: {e}"),
        };
        println!("note: cell {} {note}", i + 1);
        Some(note)
    }
}
