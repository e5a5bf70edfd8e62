//! How GPU results are judged and timed against their CPU references: the element-wise and
//! norm-wise comparisons the parity table (`ssod selftest`) prints and the conv autotuner
//! (`conv2d/algorithm.rs`) uses to refuse a kernel that disagrees, and the synchronised timer.

use std::time::Instant;

use super::context::CudaDevice;
use crate::Result;

/// `‖gpu − cpu‖ / ‖cpu‖` in f64 as a [`Diff`] (`first_bad` is 0 when over `tol`).
pub fn compare_norm(cpu: &[f32], gpu: &[f32], tol: f64) -> Diff {
    if cpu.len() != gpu.len() {
        return compare(cpu, gpu, tol);
    }
    let (mut num, mut den, mut max_abs) = (0f64, 0f64, 0f64);
    for (&c, &g) in cpu.iter().zip(gpu) {
        let d = g as f64 - c as f64;
        num += d * d;
        den += (c as f64) * (c as f64);
        max_abs = max_abs.max(d.abs());
    }
    let rel = if den > 0.0 {
        (num / den).sqrt()
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    Diff {
        max_abs,
        max_rel: rel,
        first_bad: (rel.is_nan() || rel > tol).then_some(0),
    }
}

/// Comparison of one output.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    /// First element whose error exceeds the tolerance.
    pub first_bad: Option<usize>,
}

/// Compare `gpu` to the reference `cpu` (lengths must agree; NaN only matches NaN, and equal
/// infinities match).
pub fn compare(cpu: &[f32], gpu: &[f32], tol: f64) -> Diff {
    if cpu.len() != gpu.len() {
        return Diff {
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            first_bad: Some(cpu.len().min(gpu.len())),
        };
    }
    let floor = relative_floor(cpu);
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        first_bad: None,
    };
    for (i, (&c, &g)) in cpu.iter().zip(gpu).enumerate() {
        let (abs, rel) = element_error(c, g, floor);
        d.max_abs = d.max_abs.max(abs);
        d.max_rel = d.max_rel.max(rel);
        if d.first_bad.is_none() && (rel.is_nan() || rel > tol) {
            d.first_bad = Some(i);
        }
    }
    d
}

/// The magnitude below which [`compare`] measures errors absolutely: 1 % of the largest finite
/// reference value (so near-zero outputs of a cancelling sum do not divide by ~0).
fn relative_floor(cpu: &[f32]) -> f64 {
    let scale = cpu
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, &v| m.max((v as f64).abs()));
    (0.01 * scale).max(f64::MIN_POSITIVE)
}

/// `(absolute, relative)` error of one element (NaN matches NaN, equal infinities match).
fn element_error(c: f32, g: f32, floor: f64) -> (f64, f64) {
    let (c, g) = (c as f64, g as f64);
    if c == g || (c.is_nan() && g.is_nan()) {
        (0.0, 0.0)
    } else if !c.is_finite() || !g.is_finite() {
        (f64::INFINITY, f64::INFINITY)
    } else {
        let a = (g - c).abs();
        (a, a / c.abs().max(floor))
    }
}

/// For a failed row, where it fails: how many elements are over `tol` by [`compare`]'s measure
/// and the first few (index, CPU, GPU), so one GPU run tells a layout or tail bug (every other
/// column, the last tile) from rounding (a few scattered elements).
pub fn failure_detail(cpu: &[f32], gpu: &[f32], tol: f64) -> String {
    const SHOWN: usize = 6;
    if cpu.len() != gpu.len() {
        return format!("{} CPU values, {} GPU values", cpu.len(), gpu.len());
    }
    let floor = relative_floor(cpu);
    let bad: Vec<usize> = (0..cpu.len())
        .filter(|&i| {
            let rel = element_error(cpu[i], gpu[i], floor).1;
            rel.is_nan() || rel > tol
        })
        .collect();
    let shown: Vec<String> = bad
        .iter()
        .take(SHOWN)
        .map(|&i| format!("[{i}] {:.4e} vs {:.4e}", cpu[i], gpu[i]))
        .collect();
    format!(
        "{} of {} elements over {tol:.0e} per element{}{}",
        bad.len(),
        cpu.len(),
        if shown.is_empty() { "" } else { ": " },
        shown.join(", ")
    )
}

/// Wait for the GPU, run `f`, wait again: `(result, ms)`.
pub fn timed<T>(dev: &CudaDevice, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    dev.synchronize()?;
    let t = Instant::now();
    let out = f()?;
    dev.synchronize()?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}
