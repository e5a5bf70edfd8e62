//! Reductions on the CPU (slices in, `Vec` out): sums in f64 in logical order (so results do not
//! depend on the thread count) and max over one axis. `ops::reduce` validates, dispatches and
//! records; the CUDA twin is `backend::cuda::reduce`.

use super::strided::StridedIter;

/// Sum of a contiguous `v` of shape `dims` down to `kept` (same rank, 1 where reduced), in f64,
/// each output accumulating its inputs in logical order.
pub fn sum_keepdim(v: &[f32], dims: &[usize], kept: &[usize]) -> Vec<f32> {
    let rank = dims.len();
    // Where one step along each axis moves in the output: 0 along a reduced axis.
    let mut out_strides = vec![0usize; rank];
    let mut stride = 1;
    for ax in (0..rank).rev() {
        out_strides[ax] = if kept[ax] == 1 { 0 } else { stride };
        stride *= kept[ax];
    }
    let mut acc = vec![0f64; kept.iter().product()];
    for (&val, o) in v.iter().zip(StridedIter::with(dims, &out_strides, 0)) {
        acc[o] += val as f64;
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// Sum of every value, in f64, in order.
pub fn sum_all(v: &[f32]) -> f32 {
    v.iter().map(|&a| a as f64).sum::<f64>() as f32
}

/// The `(outer, len, inner)` split of a contiguous shape at the reduced axis.
pub type AxisSplit = (usize, usize, usize);

/// Max over the middle axis: the values `[outer·inner]` and the index along the axis of the
/// first maximal element (NaN propagates, as torch.max).
pub fn max_fwd(v: &[f32], (outer, len, inner): AxisSplit) -> (Vec<f32>, Vec<usize>) {
    let mut values = vec![0f32; outer * inner];
    let mut argmax = vec![0usize; outer * inner];
    for o in 0..outer {
        for j in 0..inner {
            let mut best = v[o * len * inner + j];
            let mut bi = 0;
            for i in 1..len {
                let c = v[(o * len + i) * inner + j];
                if c > best || (c.is_nan() && !best.is_nan()) {
                    best = c;
                    bi = i;
                }
            }
            values[o * inner + j] = best;
            argmax[o * inner + j] = bi;
        }
    }
    (values, argmax)
}

/// Max backward: each output's gradient at its argmax, zeros elsewhere.
pub fn max_bwd(gv: &[f32], argmax: &[usize], (outer, len, inner): AxisSplit) -> Vec<f32> {
    let mut gx = vec![0f32; outer * len * inner];
    for o in 0..outer {
        for j in 0..inner {
            gx[(o * len + argmax[o * inner + j]) * inner + j] = gv[o * inner + j];
        }
    }
    gx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: `[2, 3, 2]` summed over axis 1, then over axes 0 and 2.
    #[test]
    fn sum_keepdim_adds_the_reduced_axes() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        // x[a][b][c] = 6a + 2b + c: over b, 3·(6a + c) + 6.
        assert_eq!(sum_keepdim(&v, &[2, 3, 2], &[2, 1, 2]), [6., 9., 24., 27.]);
        // Over a and c: Σ (6a + 2b + c) = 4·2b + 2·6 + 2·1 = 8b + 14.
        assert_eq!(sum_keepdim(&v, &[2, 3, 2], &[1, 3, 1]), [14., 22., 30.]);
        assert_eq!(sum_keepdim(&v, &[2, 3, 2], &[1, 1, 1]), [66.]);
    }
}
