//! softmax and log_softmax along the middle axis of a contiguous `[outer, len, inner]` block on
//! the CPU (slices in, `Vec` out); element `(o, i, j)` sits at `(o·len + i)·inner + j`.
//! `ops::softmax` validates, dispatches and records; the CUDA twin is `backend::cuda::softmax`.

/// The `(outer, len, inner)` split of a tensor at the softmax axis.
pub type AxisSplit = (usize, usize, usize);

/// `log_softmax` values: `(x − m) − ln Σ e^(x−m)` with `m` the row's max.
pub fn log_softmax(v: &[f32], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * len + i) * inner + j;
            let m = (0..len).map(|i| v[at(i)]).fold(f32::NEG_INFINITY, f32::max);
            // (x − m) − ln Σ e^(x−m): subtracting the max first keeps full precision for
            // large logits (m + ln Σ rounded in f32 would lose ~1e-4 at |x| ~ 1000).
            let log_sum = (0..len)
                .map(|i| ((v[at(i)] - m) as f64).exp())
                .sum::<f64>()
                .ln();
            for i in 0..len {
                out[at(i)] = ((v[at(i)] - m) as f64 - log_sum) as f32;
            }
        }
    }
    out
}

/// `softmax` values: `e^log_softmax`.
pub fn softmax(v: &[f32], split: AxisSplit) -> Vec<f32> {
    log_softmax(v, split).into_iter().map(f32::exp).collect()
}

/// log_softmax backward from the output `y`: `dx = g − softmax · Σ g`.
pub fn log_softmax_bwd(gv: &[f32], yv: &[f32], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let mut dx = vec![0f32; gv.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * len + i) * inner + j;
            // In f64: dx cancels where g ≈ softmax·Σg (the CUDA kernel sums in double too).
            let s = (0..len).map(|i| gv[at(i)] as f64).sum::<f64>() as f32;
            for i in 0..len {
                dx[at(i)] = gv[at(i)] - yv[at(i)].exp() * s;
            }
        }
    }
    dx
}

/// softmax backward from the output `y`: `dx = y · (g − Σ g·y)`.
pub fn softmax_bwd(gv: &[f32], yv: &[f32], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let mut dx = vec![0f32; gv.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * len + i) * inner + j;
            // In f64: dx = y·(g − s) cancels where g ≈ s (the CUDA kernel sums in double).
            let s = (0..len)
                .map(|i| gv[at(i)] as f64 * yv[at(i)] as f64)
                .sum::<f64>() as f32;
            for i in 0..len {
                dx[at(i)] = yv[at(i)] * (gv[at(i)] - s);
            }
        }
    }
    dx
}
