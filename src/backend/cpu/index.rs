//! Indexing along the middle axis of a contiguous `[outer, len, inner]` block on the CPU
//! (slices in, `Vec` out): `index_select` (whole rows) and `gather` (one index per element);
//! backwards scatter-add. Indices are in range (checked by `ops::index`); the CUDA twin is
//! `backend::cuda::index`.

/// The `(outer, len, inner)` split of `x` at the indexed axis.
pub type AxisSplit = (usize, usize, usize);

/// Rows `idx` of every outer block: `[outer, idx.len(), inner]`.
pub fn index_select_fwd(v: &[f32], idx: &[usize], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let k = idx.len();
    let mut out = vec![0f32; outer * k * inner];
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let src = (o * len + i) * inner;
            let dst = (o * k + j) * inner;
            out[dst..dst + inner].copy_from_slice(&v[src..src + inner]);
        }
    }
    out
}

/// `index_select` backward: each picked row's gradient added to its source row.
pub fn index_select_bwd(gv: &[f32], idx: &[usize], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let k = idx.len();
    let mut gx = vec![0f32; outer * len * inner];
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let dst = (o * len + i) * inner;
            let src = (o * k + j) * inner;
            for t in 0..inner {
                gx[dst + t] += gv[src + t];
            }
        }
    }
    gx
}

/// `out[o, j, t] = v[o, idx[o, j, t], t]` with `idx` of shape `[outer, k, inner]`.
pub fn gather_fwd(v: &[f32], idx: &[usize], (outer, len, inner): AxisSplit, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; idx.len()];
    for o in 0..outer {
        for j in 0..k {
            for t in 0..inner {
                let p = (o * k + j) * inner + t;
                out[p] = v[(o * len + idx[p]) * inner + t];
            }
        }
    }
    out
}

/// `gather` backward: each output's gradient added at its source element.
pub fn gather_bwd(gv: &[f32], idx: &[usize], (outer, len, inner): AxisSplit, k: usize) -> Vec<f32> {
    let mut gx = vec![0f32; outer * len * inner];
    for o in 0..outer {
        for j in 0..k {
            for t in 0..inner {
                let p = (o * k + j) * inner + t;
                gx[(o * len + idx[p]) * inner + t] += gv[p];
            }
        }
    }
    gx
}
