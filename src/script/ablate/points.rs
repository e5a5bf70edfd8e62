//! The points of one `ablate` call: each restored from the cache, computed here under a claim
//! (crate::script::claim), or left to another process (another shard's point, or one a live
//! process is computing while this run is a shard). An unsharded run waits for points that live
//! processes are computing, so it ends with every point.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, FnPtr, Map, NativeCallContext, Position};
use serde::{Deserialize, Serialize};

use super::{label_of, Axes, Row};
use crate::atomic_file::write_atomic;
use crate::digest::hash_parts;
use crate::progress::INTERRUPTED;
use crate::script::api::notebook::{OutputItem, RunContext};
use crate::script::cache::{to_json, CellCache};
use crate::script::claim::{try_claim, Claim, ClaimOutcome, ClaimRules};
use crate::script::convert::{script_err, ScriptResult};

/// How often an unsharded run looks again at a point another process is computing.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// One finished point: its metrics in the order the closure's map had them.
#[derive(Serialize, Deserialize)]
struct PointRecord {
    metrics: Vec<(String, f64)>,
}

/// What one `ablate` call is made of.
pub(super) struct Plan<'a> {
    pub axes: &'a Axes,
    pub points: &'a [Vec<usize>],
    pub seeds: &'a [i64],
    /// The calling cell's key and which `ablate` of the cell this is.
    pub cell_key: &'a str,
    pub index: usize,
}

/// The rows present after the loop, and where they came from.
pub(super) struct Tally {
    pub rows: Vec<Row>,
    pub computed: usize,
    pub restored: usize,
    /// Points neither cached nor computed here (only in a sharded run).
    pub missing: usize,
}

/// Who provides a point.
enum Source {
    Cached(Vec<(String, f64)>),
    /// Compute it here; the claim (when there is a cache) is held until the result is written.
    Compute(Option<Claim>),
    /// Another process does (the reason, for the log).
    Elsewhere(String),
}

fn read_point(file: &Path) -> Option<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(file).ok()?;
    serde_json::from_str::<PointRecord>(&text)
        .ok()
        .map(|r| r.metrics)
}

fn interrupted() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from("interrupted"),
        Position::NONE,
    ))
}

/// Decide who provides the point cached at `file` (claimed at `claim`); `owned`: whether this
/// process's shard owns it.
fn acquire(
    ctx: &RunContext,
    file: &Path,
    claim: &Path,
    owned: bool,
    what: &str,
) -> ScriptResult<Source> {
    let label = match ctx.shard {
        Some(s) => format!("shard {s}"),
        None => "unsharded run".to_string(),
    };
    let mut announced = false;
    loop {
        if !ctx.fresh {
            if let Some(m) = read_point(file) {
                return Ok(Source::Cached(m));
            }
        }
        if !owned {
            return Ok(Source::Elsewhere("left to its shard".into()));
        }
        match try_claim(claim, &ClaimRules::default(), &label)
            .map_err(|e| script_err(format!("ablate: {e}")))?
        {
            ClaimOutcome::Acquired(c) => {
                // Finished by another process between the look above and the claim?
                if !ctx.fresh {
                    if let Some(m) = read_point(file) {
                        return Ok(Source::Cached(m));
                    }
                }
                if let Some(h) = c.took_over() {
                    ctx.emit(OutputItem::Text(format!(
                        "ablate: {what}: took over the stale claim of {}",
                        h.describe()
                    )));
                }
                return Ok(Source::Compute(Some(c)));
            }
            ClaimOutcome::Held(h) if ctx.shard.is_some() => {
                return Ok(Source::Elsewhere(format!("running in {}", h.describe())));
            }
            ClaimOutcome::Held(h) => {
                if !announced {
                    ctx.emit(OutputItem::Text(format!(
                        "ablate: {what}: waiting for {} to finish it (its claim is taken over after {} s without a refresh)",
                        h.describe(),
                        ClaimRules::default().stale_after.as_secs()
                    )));
                    announced = true;
                }
                if INTERRUPTED.load(Ordering::Relaxed) {
                    return Err(interrupted());
                }
                std::thread::sleep(WAIT_POLL);
            }
        }
    }
}

/// Every point of the plan, in order (see crate::script::shard for the numbering).
pub(super) fn run_points(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    f: &FnPtr,
    plan: &Plan,
) -> ScriptResult<Tally> {
    let cache = ctx.cache_dir.clone().map(CellCache::at);
    let total = plan.points.len() * plan.seeds.len();
    let mut tally = Tally {
        rows: Vec::new(),
        computed: 0,
        restored: 0,
        missing: 0,
    };
    let mut number = 0;
    for (pi, p) in plan.points.iter().enumerate() {
        for &seed in plan.seeds {
            let owned = ctx.shard.is_none_or(|s| s.owns(number));
            number += 1;
            let key = point_key(plan, p, seed);
            let what = format!("[{number}/{total}] {}, seed={seed}", label_of(plan.axes, p));
            let source = match &cache {
                Some(c) => acquire(
                    ctx,
                    &c.ablation_point(&key),
                    &c.ablation_claim(&key),
                    owned,
                    &what,
                )?,
                None if owned => Source::Compute(None),
                None => Source::Elsewhere("left to its shard".into()),
            };
            let (metrics, note) = match source {
                Source::Cached(m) => {
                    tally.restored += 1;
                    (m, " (restored)")
                }
                Source::Compute(claim) => {
                    let file = cache.as_ref().map(|c| c.ablation_point(&key));
                    let cfg = point_config(plan.axes, p, seed);
                    let m = compute(nc, ctx, f, cfg, file.as_deref())?;
                    if claim.as_ref().is_some_and(Claim::lost) {
                        ctx.emit(OutputItem::Text(format!(
                            "note: ablate {what}: another process judged this point's claim stale and may have computed it too (same result)"
                        )));
                    }
                    drop(claim);
                    tally.computed += 1;
                    (m, "")
                }
                Source::Elsewhere(why) => {
                    tally.missing += 1;
                    ctx.emit(OutputItem::Text(format!("ablate {what}: {why}")));
                    continue;
                }
            };
            let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            ctx.emit(OutputItem::Text(format!(
                "ablate {what}: {}{note}",
                shown.join(" ")
            )));
            tally.rows.push((pi, seed, metrics));
        }
    }
    Ok(tally)
}

/// The closure's argument for point `p` and `seed`: the point's grid values and `seed`.
fn point_config(axes: &Axes, p: &[usize], seed: i64) -> Map {
    let mut cfg = Map::new();
    for ((k, vals), &i) in axes.iter().zip(p) {
        cfg.insert(k.as_str().into(), vals[i].clone());
    }
    cfg.insert("seed".into(), Dynamic::from_int(seed));
    cfg
}

/// The cache key of point `p` and `seed`: the calling cell's key, which ablation of the cell,
/// the point's values and the seed.
fn point_key(plan: &Plan, p: &[usize], seed: i64) -> String {
    let point_json = plan
        .axes
        .iter()
        .zip(p)
        .map(|((k, vals), &i)| format!("{k}={:?}", vals[i].to_string()))
        .collect::<Vec<_>>()
        .join(";");
    hash_parts(&[
        "ssod-ablate-v1",
        plan.cell_key,
        &plan.index.to_string(),
        &point_json,
        &seed.to_string(),
    ])
}

/// Run the closure for one point and cache its metrics at `file` (when caching).
fn compute(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    f: &FnPtr,
    cfg: Map,
    file: Option<&Path>,
) -> ScriptResult<Vec<(String, f64)>> {
    let work = file.map(|f| f.with_extension("partial"));
    let out = run_point(nc, ctx, f, cfg, work.as_deref())?;
    let m = out.read_lock::<Map>().map(|m| m.clone()).ok_or_else(|| {
        script_err(format!(
            "ablate: the function must return a map of metrics, got {}",
            out.type_name()
        ))
    })?;
    let metrics = numeric_metrics(&m);
    if let Some(file) = file {
        let rec = PointRecord {
            metrics: metrics.clone(),
        };
        if let Err(e) = to_json(&rec).and_then(|t| write_atomic(file, t.as_bytes())) {
            ctx.emit(OutputItem::Text(format!(
                "note: ablation point not cached: {e}"
            )));
        }
    }
    Ok(metrics)
}

/// The numeric entries of the closure's result (ints, floats, bools as 0/1 are left out).
fn numeric_metrics(m: &Map) -> Vec<(String, f64)> {
    m.iter()
        .filter_map(|(k, v)| {
            let v = v.flatten_clone();
            if let Ok(f) = v.as_float() {
                Some((k.to_string(), f))
            } else {
                v.as_int().ok().map(|i| (k.to_string(), i as f64))
            }
        })
        .collect()
}

/// Run the closure for one point with relative outputs in `work` (when caching), then move
/// what it wrote into the run folder.
fn run_point(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    f: &FnPtr,
    cfg: Map,
    work: Option<&Path>,
) -> ScriptResult<Dynamic> {
    if let Some(dir) = work {
        if ctx.fresh && dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| script_err(format!("ablate: {}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| script_err(format!("ablate: {}: {e}", dir.display())))?;
    }
    let previous = std::mem::replace(&mut ctx.cell().point_dir, work.map(Path::to_path_buf));
    let out = f.call_within_context(nc, (Dynamic::from_map(cfg),));
    ctx.cell().point_dir = previous;
    let out: Dynamic = out?;
    if let (Some(dir), Some(run_dir)) = (work, &ctx.run_dir) {
        if let Err(e) = move_entries(dir, run_dir) {
            ctx.emit(OutputItem::Text(format!(
                "note: the point's outputs stay in {}: {e}",
                dir.display()
            )));
        }
    }
    Ok(out)
}

/// Move every entry of `from` into `to` (renames; a name taken in `to` gets a `-2`, `-3`...
/// suffix), then remove `from`.
pub(crate) fn move_entries(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let mut target = to.join(&name);
        let mut n = 2;
        while target.exists() {
            target = to.join(format!("{name}-{n}"));
            n += 1;
        }
        std::fs::rename(entry.path(), target)?;
    }
    std::fs::remove_dir(from)
}
