//! Cosine similarity along the middle axis of contiguous `[outer, len, inner]` operands on the
//! CPU (slices in, `Vec` out), in f64: `a·b / (max(‖a‖, eps) · max(‖b‖, eps))`.
//! `ops::similarity` broadcasts, dispatches and records; the CUDA twin is
//! `backend::cuda::similarity`.

/// PyTorch's `F.cosine_similarity` eps.
const EPS: f64 = 1e-8;

/// The `(outer, len, inner)` split of the operands at the reduced axis.
pub type AxisSplit = (usize, usize, usize);

/// Per output position: `(dot, ‖a‖ clamped, ‖b‖ clamped)`, kept for the backward.
pub type Norms = (f64, f64, f64);

/// The similarities `[outer·inner]` and the per-position norms.
pub fn fwd(av: &[f32], bv: &[f32], (outer, len, inner): AxisSplit) -> (Vec<f32>, Vec<Norms>) {
    let mut stats = vec![(0f64, 0f64, 0f64); outer * inner];
    for o in 0..outer {
        for j in 0..inner {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for i in 0..len {
                let p = (o * len + i) * inner + j;
                let (x, y) = (av[p] as f64, bv[p] as f64);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            stats[o * inner + j] = (dot, na.sqrt().max(EPS), nb.sqrt().max(EPS));
        }
    }
    let values = stats
        .iter()
        .map(|&(d, na, nb)| (d / (na * nb)) as f32)
        .collect();
    (values, stats)
}

/// `(da, db)` from the output gradient `gv`:
/// `d cos/da = b/(|a||b|) − cos·a/|a|²` (the |a|²-term vanishes where |a| is clamped).
pub fn bwd(
    gv: &[f32],
    av: &[f32],
    bv: &[f32],
    stats: &[Norms],
    (outer, len, inner): AxisSplit,
) -> (Vec<f32>, Vec<f32>) {
    let mut ga = vec![0f32; av.len()];
    let mut gb = vec![0f32; bv.len()];
    for o in 0..outer {
        for j in 0..inner {
            let (dot, na, nb) = stats[o * inner + j];
            let cos = dot / (na * nb);
            let gg = gv[o * inner + j] as f64;
            let a_clamped = na <= EPS;
            let b_clamped = nb <= EPS;
            for i in 0..len {
                let p = (o * len + i) * inner + j;
                let (x, y) = (av[p] as f64, bv[p] as f64);
                let da = y / (na * nb) - if a_clamped { 0.0 } else { cos * x / (na * na) };
                let db = x / (na * nb) - if b_clamped { 0.0 } else { cos * y / (nb * nb) };
                ga[p] = (gg * da) as f32;
                gb[p] = (gg * db) as f32;
            }
        }
    }
    (ga, gb)
}
