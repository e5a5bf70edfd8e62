//! Per-op time profile (`ssod bench train --profile-ops`): with profiling on, every recorded op
//! and every backward rule waits for the GPU and charges the wall time since the previous mark
//! to its name. The waits serialise the GPU with the host, so totals run above an unprofiled
//! step; the ranking is what the profile is for. Host work between two ops (SimOTA, target
//! building) is charged to the op that follows it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Option<HashMap<String, (u64, f64)>>> = Mutex::new(None);

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    static IN_BACKWARD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the backward walk: ops run inside backward rules are charged as `<op> (backward)`.
pub(crate) struct BackwardPhase(bool);

impl BackwardPhase {
    pub(crate) fn enter() -> BackwardPhase {
        BackwardPhase(IN_BACKWARD.with(|b| b.replace(true)))
    }
}

impl Drop for BackwardPhase {
    fn drop(&mut self) {
        IN_BACKWARD.with(|b| b.set(self.0));
    }
}

/// Turn profiling on or off; turning it on clears the table.
pub fn set_profiling(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
    *TABLE.lock().unwrap_or_else(|p| p.into_inner()) = on.then(HashMap::new);
    LAST.with(|l| l.set(None));
}

pub fn is_profiling() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Start the clock without charging anything (call at the start of a measured region).
pub fn restart() {
    if is_profiling() {
        sync_gpu();
        LAST.with(|l| l.set(Some(Instant::now())));
    }
}

fn sync_gpu() {
    if let Ok(dev) = crate::backend::cuda::CudaAvailability::probe() {
        let _ = dev.synchronize();
    }
}

/// Charge the time since the previous mark to `name`.
pub(crate) fn mark(name: &str) {
    if !is_profiling() {
        return;
    }
    sync_gpu();
    let now = Instant::now();
    let Some(prev) = LAST.with(|l| l.replace(Some(now))) else {
        return;
    };
    let secs = now.duration_since(prev).as_secs_f64();
    let key = if IN_BACKWARD.with(|b| b.get()) {
        format!("{name} (backward)")
    } else {
        name.to_string()
    };
    if let Some(t) = TABLE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        let e = t.entry(key).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }
}

/// `(name, calls, seconds)`, most time first.
pub fn profile_table() -> Vec<(String, u64, f64)> {
    let guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let mut rows: Vec<(String, u64, f64)> = guard
        .as_ref()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.0, v.1)).collect())
        .unwrap_or_default();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}
