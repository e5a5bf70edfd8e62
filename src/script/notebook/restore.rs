//! Restoring a notebook's leading cells from the cache: their functions, the scope after the
//! last of them (paths moved from the earlier run folder to this one), and their files.

use std::sync::Arc;

use rhai::Dynamic;

use super::{Cell, Session};
use crate::script::api::notebook::RunContext;
use crate::script::cache::{CellCache, CellRecord};
use crate::Result;

/// Restore the cells whose cache `keys` are given (the leading cells with complete entries):
/// their functions, the scope after the last of them, and their files in `run_dir`. Returns
/// their records; none when the cache could not be read (every cell then reruns, in a fresh
/// session).
pub(super) fn restore_cells(
    session: &mut Session,
    cache: &CellCache,
    keys: &[String],
    cells: &[Cell],
    run_dir: &std::path::Path,
    ctx: &Arc<RunContext>,
) -> Vec<CellRecord> {
    if keys.is_empty() {
        return Vec::new();
    }
    // Functions first: restored closures are looked up among them.
    for cell in &cells[..keys.len()] {
        if let Err(msg) = session.define_functions(cell) {
            println!("note: {msg}");
        }
    }
    let resolver = session.closure_resolver();
    let loaded = (|| -> Result<_> {
        let recs = keys
            .iter()
            .map(|k| cache.load_record(k))
            .collect::<Result<Vec<_>>>()?;
        let vars = cache.load_scope(&keys[keys.len() - 1], &resolver)?;
        for (k, r) in keys.iter().zip(&recs) {
            cache.restore_files(k, r, run_dir)?;
        }
        Ok((recs, vars))
    })();
    match loaded {
        Ok((recs, vars)) => {
            let old_dir = recs.last().map(|r| r.run_dir.clone()).unwrap_or_default();
            let new_dir = run_dir.display().to_string();
            for (name, constant, value) in vars {
                let value = rebase_paths(value, &old_dir, &new_dir);
                if constant {
                    session.scope.push_constant_dynamic(name, value);
                } else {
                    session.scope.push_dynamic(name, value);
                }
            }
            recs
        }
        Err(e) => {
            println!("cache: could not restore ({e}); recomputing every cell");
            let file = session.file.clone();
            let text = session.text.clone();
            *session = Session::new(ctx.clone(), file, text);
            Vec::new()
        }
    }
}

/// Strings (also inside arrays and maps) that start with the folder `old` start with `new`
/// instead.
fn rebase_paths(v: Dynamic, old: &str, new: &str) -> Dynamic {
    if old.is_empty() || old == new {
        return v;
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        if let Some(rest) = s.strip_prefix(old) {
            if rest.is_empty()
                || rest.starts_with(std::path::MAIN_SEPARATOR)
                || rest.starts_with('/')
            {
                return Dynamic::from(format!("{new}{rest}"));
            }
        }
        return v.clone();
    }
    if v.is_array() {
        let a = v.cast::<rhai::Array>();
        return Dynamic::from_array(a.into_iter().map(|x| rebase_paths(x, old, new)).collect());
    }
    if v.is_map() {
        let m = v.cast::<rhai::Map>();
        return Dynamic::from_map(
            m.into_iter()
                .map(|(k, x)| (k, rebase_paths(x, old, new)))
                .collect(),
        );
    }
    v
}
