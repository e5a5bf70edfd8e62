//! `report.md` of a run: parameters, then per cell its title, status, time, source (collapsed),
//! printed output (fenced), tables and images inline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CellResult, CellStatus};
use crate::atomic_file::write_atomic;
use crate::script::api::notebook::OutputItem;
use crate::Result;

/// A fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in text.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn fenced(lang: &str, text: &str) -> String {
    let f = fence(text);
    format!("{f}{lang}\n{}\n{f}\n", text.trim_end_matches('\n'))
}

/// Write `run_dir/report.md`; returns its path.
pub fn write_report(
    run_dir: &Path,
    script: &Path,
    device: &str,
    params: &BTreeMap<String, String>,
    params_read: &BTreeMap<String, String>,
    results: &[CellResult],
    warnings: &[String],
) -> Result<PathBuf> {
    let mut md = String::new();
    let name = script
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    md.push_str(&format!("# {name}\n\n"));
    md.push_str(&format!(
        "- script: `{}`\n- ssod {} on {device}\n- run folder: `{}`\n\n",
        script.display(),
        crate::VERSION,
        run_dir.display()
    ));
    md.push_str("## Parameters\n\n");
    if params_read.is_empty() && params.is_empty() {
        md.push_str("(none)\n\n");
    } else {
        md.push_str("| key | value | source |\n|---|---|---|\n");
        let mut keys: Vec<&String> = params_read.keys().chain(params.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (value, source) = match (params.get(k), params_read.get(k)) {
                (Some(v), Some(_)) => (v.clone(), "--set"),
                (Some(v), None) => (v.clone(), "--set (unused)"),
                (None, Some(v)) => (v.clone(), "default"),
                (None, None) => continue,
            };
            md.push_str(&format!(
                "| {k} | {} | {source} |\n",
                value.replace('|', "\\|")
            ));
        }
        md.push('\n');
    }
    for w in warnings {
        md.push_str(&format!("> {w}\n\n"));
    }
    for (i, r) in results.iter().enumerate() {
        let status = match &r.status {
            CellStatus::Ran => format!("ran in {:.2} s", r.seconds),
            CellStatus::Restored => {
                format!("restored from cache (ran in {:.2} s originally)", r.seconds)
            }
            CellStatus::Failed(_) => format!("**failed** after {:.2} s", r.seconds),
            CellStatus::Interrupted => format!("**interrupted** after {:.2} s", r.seconds),
            CellStatus::ShardDone(_) => format!(
                "this shard's ablation points done in {:.2} s; others missing, so the run stops here",
                r.seconds
            ),
            CellStatus::NotRun => "not run (an earlier cell stopped the run)".to_string(),
        };
        md.push_str(&format!("## {}. {}\n\n*{status}*", i + 1, r.cell.title));
        if let Some(note) = &r.cache_note {
            md.push_str(&format!(" ({note})"));
        }
        md.push_str("\n\n<details><summary>source</summary>\n\n");
        md.push_str(&fenced("rust", &r.cell.source));
        md.push_str("\n</details>\n\n");
        let mut text = String::new();
        let flush = |text: &mut String, md: &mut String| {
            if !text.is_empty() {
                md.push_str(&fenced("text", text));
                md.push('\n');
                text.clear();
            }
        };
        for item in &r.output {
            match item {
                OutputItem::Text(s) => {
                    text.push_str(s);
                    text.push('\n');
                }
                OutputItem::Markdown(s) => {
                    flush(&mut text, &mut md);
                    md.push_str(s);
                    md.push_str("\n\n");
                }
                OutputItem::Image(p) => {
                    flush(&mut text, &mut md);
                    md.push_str(&format!("![{p}]({})\n\n", p.replace(' ', "%20")));
                }
            }
        }
        flush(&mut text, &mut md);
        if let CellStatus::Failed(msg) = &r.status {
            md.push_str("Error:\n\n");
            md.push_str(&fenced("text", msg));
            md.push('\n');
        }
    }
    let path = run_dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
