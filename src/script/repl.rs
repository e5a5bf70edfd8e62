//! `ssod repl`: cells typed at a prompt, run one at a time in the notebook's engine and scope.
//! A cell ends at a blank line or a line `;;`; errors are printed and the REPL goes on; Ctrl-C
//! stops the running cell; Ctrl-D (end of input) or `:quit` leaves. Every cell is recorded in
//! the run folder's `report.md` (nothing is cached).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::script::api::notebook::{CellState, RunContext};
use crate::script::notebook::{new_run_dir, write_report, Cell, CellResult, CellStatus, Session};
use crate::Result;

/// Run the REPL on `input` (stdin for `ssod repl`); outputs go to `runs/repl/<stamp>/`
/// under `runs_root` unless `out` is given.
pub fn run_repl(
    input: &mut dyn BufRead,
    runs_root: &std::path::Path,
    params: BTreeMap<String, String>,
) -> Result<PathBuf> {
    let run_dir = new_run_dir(&runs_root.join("runs").join("repl"))?;
    let run_dir = run_dir
        .canonicalize()
        .map_err(|e| crate::Error::io(&run_dir, e))?;
    let ctx = Arc::new(RunContext {
        params: params.clone(),
        params_read: Mutex::new(BTreeMap::new()),
        run_dir: Some(run_dir.clone()),
        cache_dir: None,
        cell: Mutex::new(CellState::default()),
        echo: true,
        fresh: false,
        device: crate::tensor::Device::Cpu,
        shard: None,
    });
    crate::script::api::notebook::set_current(Some(ctx.clone()));
    let mut session = Session::new(ctx.clone(), "<repl>".into(), String::new());
    let mut text = String::new();
    let mut results = Vec::new();
    println!(
        "ssod {} REPL: end a cell with a blank line or `;;`, leave with Ctrl-D or :quit. Outputs: {}",
        crate::VERSION,
        run_dir.display()
    );
    let mut pending = String::new();
    let mut first_line = 0;
    loop {
        print!(
            "{}",
            if pending.is_empty() {
                "ssod> "
            } else {
                "....> "
            }
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let eof = match input.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                eprintln!("repl: {e}");
                true
            }
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed == ":quit" {
            break;
        }
        let ends = eof || trimmed.is_empty() || trimmed == ";;";
        if !ends {
            if pending.is_empty() {
                first_line = text.lines().count() + 1;
            }
            pending.push_str(line.trim_end_matches(['\n', '\r']));
            pending.push('\n');
            continue;
        }
        if !pending.trim().is_empty() {
            text.push_str(&pending);
            session.set_text(text.clone());
            let cell = Cell {
                title: format!("In [{}]", results.len() + 1),
                source: std::mem::take(&mut pending),
                first_line,
            };
            *ctx.cell() = CellState::default();
            let t0 = Instant::now();
            let status = session.run_cell(&cell);
            let seconds = t0.elapsed().as_secs_f64();
            match &status {
                CellStatus::Failed(msg) => eprintln!("{msg}"),
                CellStatus::Interrupted => eprintln!("interrupted (Ctrl-C)"),
                _ => {}
            }
            let state = std::mem::take(&mut *ctx.cell());
            results.push(CellResult {
                cell,
                status,
                output: state.output,
                seconds,
                cache_note: None,
            });
        }
        pending.clear();
        if eof {
            break;
        }
    }
    println!();
    let report = write_report(
        &run_dir,
        std::path::Path::new("repl"),
        "cpu",
        &params,
        &ctx.read_params(),
        &results,
        &[],
    )?;
    println!("report: {}", report.display());
    Ok(run_dir)
}
