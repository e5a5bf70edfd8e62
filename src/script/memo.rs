//! `cached(name, || value)`: compute a value once per notebook cell and name, and keep it in the
//! notebook cache, so that the ablation points that share it (a pretrained backbone used by
//! several fine-tuning points) compute it once and a later run gets it back.
//!
//! - Key: the calling cell's key and `name` (`cached/<key>.json` in the cache, a [`Saved`]
//!   value; models and tensors go to the content-addressed `objects/` like cell variables).
//! - While `f` runs, relative output paths go to its own work folder in the cache
//!   (`cached/<key>.partial/`), as for an `ablate` point: pretraining and training that a killed
//!   process left half done resume from their checkpoints there; when `f` finishes, its files
//!   move into the run folder.
//! - Every call returns a value decoded from the cache, so two callers never share one model's
//!   weights (a `Model` clone shares them, and training changes them in place).
//! - `--fresh` reads nothing that an earlier run cached; a value computed earlier in the same
//!   cell of this run is still shared. Without a cache (no notebook), `f` runs at every call.

use std::path::Path;
use std::sync::Arc;

use rhai::{Dynamic, FnPtr, NativeCallContext};

use crate::atomic_file::write_atomic;
use crate::digest::hash_parts;
use crate::script::api::notebook::{OutputItem, RunContext};
use crate::script::cache::{decode, encode, to_json, CellCache, Saved, Uncacheable};
use crate::script::convert::{script_err, ScriptResult};

/// The value cached under `file`, decoded (`None`: absent or unreadable, so recomputed).
fn read_cached(file: &Path, cache: &CellCache) -> Option<Dynamic> {
    let text = std::fs::read_to_string(file).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    decode(&saved, &cache.objects, &|_| None).ok()
}

/// Run `f` with relative outputs in `work`, then move what it wrote into the run folder.
fn run_in(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    f: &FnPtr,
    work: &Path,
    fresh_start: bool,
) -> ScriptResult<Dynamic> {
    let io = |e: std::io::Error| script_err(format!("cached: {}: {e}", work.display()));
    if fresh_start && work.exists() {
        std::fs::remove_dir_all(work).map_err(io)?;
    }
    std::fs::create_dir_all(work).map_err(io)?;
    let previous = ctx.cell().point_dir.replace(work.to_path_buf());
    let out = f.call_within_context::<Dynamic>(nc, ());
    ctx.cell().point_dir = previous;
    let out = out?;
    if let Some(run_dir) = &ctx.run_dir {
        if let Err(e) = crate::script::ablate::points::move_entries(work, run_dir) {
            ctx.emit(OutputItem::Text(format!(
                "note: the cached value's outputs stay in {}: {e}",
                work.display()
            )));
        }
    }
    Ok(out)
}

pub fn cached(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    name: &str,
    f: FnPtr,
) -> ScriptResult<Dynamic> {
    let Some(cache) = ctx.cache_dir.clone().map(CellCache::at) else {
        return f.call_within_context(nc, ());
    };
    let key = hash_parts(&["ssod-cached-v1", &ctx.cell().key, name]);
    let file = cache.root().join("cached").join(format!("{key}.json"));
    let computed_in_this_cell = ctx.cell().cached_keys.contains(&key);
    if !ctx.fresh || computed_in_this_cell {
        if let Some(v) = read_cached(&file, &cache) {
            ctx.emit(OutputItem::Text(format!("cached `{name}`: restored")));
            return Ok(v);
        }
    }
    let out = run_in(nc, ctx, &f, &file.with_extension("partial"), ctx.fresh)?;
    let saved = encode(&out, &cache.objects).map_err(|Uncacheable(why)| {
        script_err(format!(
            "cached `{name}`: the value cannot be cached: {why}"
        ))
    })?;
    to_json(&saved)
        .and_then(|text| write_atomic(&file, text.as_bytes()))
        .map_err(|e| script_err(format!("cached `{name}`: {e}")))?;
    ctx.cell().cached_keys.push(key);
    ctx.emit(OutputItem::Text(format!("cached `{name}`: computed")));
    decode(&saved, &cache.objects, &|_| None)
        .map_err(|e| script_err(format!("cached `{name}`: {e}")))
}
