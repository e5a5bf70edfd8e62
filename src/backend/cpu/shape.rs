//! Copies behind the shape ops on the CPU: one piece of a concatenation, and the scatter of a
//! strided view's gradient. `ops::shape` builds the views and records; the CUDA twin is
//! `backend::cuda::layout`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::strided::StridedIter;

/// Write one piece of a concatenation into every output row: the output is `[outer, row]` and
/// the piece `[outer, piece_len]`, landing at `at..at + piece_len` of each row. Rows in
/// parallel; `out` may be uninitialised (the pieces together write every element).
pub fn cat_piece(
    out: &mut [MaybeUninit<f32>],
    piece: &[f32],
    row: usize,
    (at, piece_len): (usize, usize),
) {
    out.par_chunks_mut(row)
        .zip(piece.par_chunks(piece_len))
        .for_each(|(dst, src)| {
            let dst = &mut dst[at..at + piece_len];
            for (d, s) in dst.iter_mut().zip(src) {
                d.write(*s);
            }
        })
}

/// `len` zeros with `values` (row-major over `dims`) added at the positions a view with
/// `strides` and `offset` reads.
pub fn scatter_strided(
    values: &[f32],
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    len: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; len];
    for (&v, at) in values.iter().zip(StridedIter::with(dims, strides, offset)) {
        out[at] += v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every other column of a `[2, 4]` matrix from column 1: `[2, 2]` values land at 1, 3, 5, 7.
    #[test]
    fn scatter_strided_lands_at_the_view_positions() {
        let got = scatter_strided(&[1., 2., 3., 4.], &[2, 2], &[4, 2], 1, 8);
        assert_eq!(got, [0., 1., 0., 2., 0., 3., 0., 4.]);
    }

    /// Two pieces of widths 1 and 2 tile rows of 3.
    #[test]
    fn cat_pieces_tile_the_rows() {
        let mut out = vec![MaybeUninit::new(-1f32); 6];
        cat_piece(&mut out, &[1., 2.], 3, (0, 1));
        cat_piece(&mut out, &[3., 4., 5., 6.], 3, (1, 2));
        // SAFETY: both pieces wrote, and the buffer started initialised.
        let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(out, [1., 3., 4., 2., 5., 6.]);
    }
}
