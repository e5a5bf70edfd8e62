//! Elementwise maps on the CPU (slices in, `Vec` out): one function per value, or per pair of
//! values, in parallel above a size where rayon's hand-off pays. Each output depends on its own
//! inputs only, so the thread count never changes a bit.

use rayon::prelude::*;

/// Maps above this size run on rayon; below it the thread hand-off costs more.
const PAR_MIN_LEN: usize = 1 << 15;

/// `f` applied to every value.
pub fn map(v: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if v.len() >= PAR_MIN_LEN {
        v.par_iter().map(|&a| f(a)).collect::<Vec<f32>>()
    } else {
        v.iter().map(|&a| f(a)).collect()
    }
}

/// `f(a, b)` over two slices of the same length.
pub fn zip(va: &[f32], vb: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    if va.len() >= PAR_MIN_LEN {
        va.par_iter()
            .zip(vb.par_iter())
            .map(|(&x, &y)| f(x, y))
            .collect::<Vec<f32>>()
    } else {
        va.iter().zip(vb.iter()).map(|(&x, &y)| f(x, y)).collect()
    }
}

/// `f(a, b)` over the NumPy broadcast `out_dims` of `a` (shape `a_dims`) and `b` (`b_dims`), both
/// contiguous, in row-major order of the output.
pub fn broadcast_zip(
    (va, a_dims): (&[f32], &[usize]),
    (vb, b_dims): (&[f32], &[usize]),
    out_dims: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    if vb.len() == 1 {
        let s = vb[0];
        return va.iter().map(|&x| f(x, s)).collect();
    }
    if va.len() == 1 && out_dims == b_dims {
        let s = va[0];
        return vb.iter().map(|&y| f(s, y)).collect();
    }
    let (sa, sb) = (
        broadcast_strides(a_dims, out_dims),
        broadcast_strides(b_dims, out_dims),
    );
    let rank = out_dims.len();
    let numel: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(numel);
    let (mut index, mut i, mut j) = (vec![0usize; rank], 0usize, 0usize);
    for _ in 0..numel {
        out.push(f(va[i], vb[j]));
        for ax in (0..rank).rev() {
            index[ax] += 1;
            i += sa[ax];
            j += sb[ax];
            if index[ax] < out_dims[ax] {
                break;
            }
            i -= sa[ax] * index[ax];
            j -= sb[ax] * index[ax];
            index[ax] = 0;
        }
    }
    out
}

/// Strides of a contiguous `dims` read as the broadcast `out_dims`: 0 along the axes it lacks or
/// has as 1 where the output does not.
fn broadcast_strides(dims: &[usize], out_dims: &[usize]) -> Vec<usize> {
    let off = out_dims.len() - dims.len();
    let mut contiguous = vec![1usize; dims.len()];
    for ax in (0..dims.len().saturating_sub(1)).rev() {
        contiguous[ax] = contiguous[ax + 1] * dims[ax + 1];
    }
    (0..out_dims.len())
        .map(|ax| {
            if ax < off || dims[ax - off] == 1 && out_dims[ax] != 1 {
                0
            } else {
                contiguous[ax - off]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[2, 1] + [3]` and `[1, 3] · [2, 1]`, hand-computed.
    #[test]
    fn broadcast_zip_pairs_the_broadcast_elements() {
        let a = [10.0, 20.0];
        let b = [1.0, 2.0, 3.0];
        let sum = broadcast_zip((&a, &[2, 1]), (&b, &[3]), &[2, 3], |x, y| x + y);
        assert_eq!(sum, [11., 12., 13., 21., 22., 23.]);
        let prod = broadcast_zip((&b, &[1, 3]), (&a, &[2, 1]), &[2, 3], |x, y| x * y);
        assert_eq!(prod, [10., 20., 30., 20., 40., 60.]);
    }
}
