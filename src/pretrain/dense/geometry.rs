//! Where the two views of dense contrast look (docs/pretraining.md, "Dense contrast"): each view
//! is a random resized crop of the image (torchvision's `RandomResizedCrop` draw), maybe flipped
//! left-right, so every cell of a view's feature map has a known centre in image pixels, and the
//! cell of the other view that sees the same place is found by geometry alone (PixPro's
//! positive rule, Xie et al. CVPR 2021, with one positive: the cell that holds the point). The
//! feature rule (DenseCL, Wang et al. CVPR 2021: the most similar cell) is [`argmax_matches`].
//!
//! Coordinates are continuous pixel edges: pixel `i` spans `[i, i + 1)`, so a view of width `w`
//! cut at `x` covers image x in `[x, x + w)`, and view coordinate `u ∈ [0, 1]` maps to image
//! `x + u·w` (`x + (1 − u)·w` when flipped).

use rand::seq::SliceRandom;
use rand::Rng;

use crate::pretrain::ssl::ViewAugment;

/// The part of the image (pixels, after the resize to `image_size`) one view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewBox {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    /// Mirrored left-right after the crop.
    pub flipped: bool,
}

/// The cells of one feature map of a view: `cols × rows`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub cols: usize,
    pub rows: usize,
}

impl Grid {
    pub fn cells(self) -> usize {
        self.cols * self.rows
    }
}

/// One view's box: `aug`'s RandomResizedCrop rectangle of a `w`×`h` image, then its flip draw
/// (the order torchvision's pipeline draws them in).
pub fn draw_view(aug: &ViewAugment, [w, h]: [usize; 2], rng: &mut impl Rng) -> ViewBox {
    let (x, y, cw, ch) = aug.crop_rect(w as u32, h as u32, rng);
    ViewBox {
        x: x as usize,
        y: y as usize,
        w: cw as usize,
        h: ch as usize,
        flipped: rng.random::<f64>() < aug.flip_prob,
    }
}

/// Centre of cell `index` (row-major in `grid`) of a view, in image pixels.
pub fn cell_center_in_image(view: &ViewBox, grid: Grid, index: usize) -> (f64, f64) {
    let (col, row) = (index % grid.cols, index / grid.cols);
    let mut u = (col as f64 + 0.5) / grid.cols as f64;
    if view.flipped {
        u = 1.0 - u;
    }
    let v = (row as f64 + 0.5) / grid.rows as f64;
    (
        view.x as f64 + u * view.w as f64,
        view.y as f64 + v * view.h as f64,
    )
}

/// The cell of a view (row-major in `grid`) that holds image point `(x, y)`, None outside the
/// view. A point on the view's far edge belongs to the last cell.
pub fn cell_at_image_point(view: &ViewBox, grid: Grid, (x, y): (f64, f64)) -> Option<usize> {
    let mut u = (x - view.x as f64) / view.w as f64;
    let v = (y - view.y as f64) / view.h as f64;
    if !(0.0..=1.0).contains(&u) || !(0.0..=1.0).contains(&v) {
        return None;
    }
    if view.flipped {
        u = 1.0 - u;
    }
    let col = ((u * grid.cols as f64) as usize).min(grid.cols - 1);
    let row = ((v * grid.rows as f64) as usize).min(grid.rows - 1);
    Some(row * grid.cols + col)
}

/// Geometric positives: every cell `i` of view 1 whose centre lies inside view 2, paired with
/// the cell `j` of view 2 that holds that centre, as `(i, j)` in view 1's row-major order.
pub fn geometric_matches(view1: &ViewBox, view2: &ViewBox, grid: Grid) -> Vec<(usize, usize)> {
    (0..grid.cells())
        .filter_map(|i| {
            cell_at_image_point(view2, grid, cell_center_in_image(view1, grid, i)).map(|j| (i, j))
        })
        .collect()
}

/// DenseCL's positives: for each row `i` of `similarity` (`[n1, n2]` row-major: view-1 cell
/// against view-2 cell), the column of its largest value (the first on ties; NaN never wins).
pub fn argmax_matches(similarity: &[f32], n1: usize, n2: usize) -> Vec<(usize, usize)> {
    (0..n1)
        .map(|i| {
            let row = &similarity[i * n2..(i + 1) * n2];
            let mut best = 0;
            for (j, &s) in row.iter().enumerate() {
                if s > row[best] || row[best].is_nan() {
                    best = j;
                }
            }
            (i, best)
        })
        .collect()
}

/// At most `k` of `pairs`, drawn without replacement and kept in their order.
pub fn sample_pairs(pairs: &[(usize, usize)], k: usize, rng: &mut impl Rng) -> Vec<(usize, usize)> {
    if pairs.len() <= k {
        return pairs.to_vec();
    }
    let mut picked: Vec<usize> = (0..pairs.len()).collect();
    picked.shuffle(rng);
    picked.truncate(k);
    picked.sort_unstable();
    picked.into_iter().map(|p| pairs[p]).collect()
}

/// Logit offset that takes a pair out of the softmax (`exp` of it is 0 in f32).
pub const EXCLUDED: f32 = -1e4;

/// `[n, n]` offsets for the pairs' logits (row: a query, column: a key; `image_of[i]`: the image
/// of pair i): 0 on the diagonal (the positive) and between different images (the negatives),
/// [`EXCLUDED`] between two cells of one image (DenseCL's negatives are other images only).
pub fn same_image_offsets(image_of: &[usize]) -> Vec<f32> {
    let n = image_of.len();
    let mut out = vec![0.0; n * n];
    for (i, &a) in image_of.iter().enumerate() {
        for (j, &b) in image_of.iter().enumerate() {
            if i != j && a == b {
                out[i * n + j] = EXCLUDED;
            }
        }
    }
    out
}

/// Also takes out, in the cell offsets `offsets [n, n]` of [`same_image_offsets`], every pair
/// of cells whose images are excluded at the image level: `excluded [images, images]`
/// (row: the query's image, column: the key's; non-zero: not a negative), e.g. two frames of
/// one video in temporal contrast.
pub fn exclude_image_pairs(
    offsets: &mut [f32],
    image_of: &[usize],
    excluded: &[f32],
    images: usize,
) {
    let n = image_of.len();
    for (i, &a) in image_of.iter().enumerate() {
        for (j, &b) in image_of.iter().enumerate() {
            if excluded[a * images + b] != 0.0 {
                offsets[i * n + j] = EXCLUDED;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;

    const G4: Grid = Grid { cols: 4, rows: 2 };

    #[test]
    fn cell_centres_by_hand() {
        // View x 20..60, y 10..30 (40×20), 4×2 cells of 10×10 px.
        let v = ViewBox {
            x: 20,
            y: 10,
            w: 40,
            h: 20,
            flipped: false,
        };
        assert_eq!(cell_center_in_image(&v, G4, 0), (25.0, 15.0));
        assert_eq!(cell_center_in_image(&v, G4, 3), (55.0, 15.0));
        assert_eq!(cell_center_in_image(&v, G4, 5), (35.0, 25.0));
        // Flipped: view column 0 shows the image's right end.
        let f = ViewBox { flipped: true, ..v };
        assert_eq!(cell_center_in_image(&f, G4, 0), (55.0, 15.0));
        assert_eq!(cell_center_in_image(&f, G4, 5), (45.0, 25.0));
        assert_eq!(cell_at_image_point(&v, G4, (25.0, 15.0)), Some(0));
        assert_eq!(cell_at_image_point(&v, G4, (59.9, 29.9)), Some(7));
        assert_eq!(cell_at_image_point(&v, G4, (60.0, 30.0)), Some(7)); // far edge
        assert_eq!(cell_at_image_point(&f, G4, (59.9, 10.0)), Some(0));
        assert_eq!(cell_at_image_point(&v, G4, (19.9, 15.0)), None);
        assert_eq!(cell_at_image_point(&v, G4, (30.0, 30.5)), None);
        for i in 0..8 {
            for view in [&v, &f] {
                let c = cell_center_in_image(view, G4, i);
                assert_eq!(
                    cell_at_image_point(view, G4, c),
                    Some(i),
                    "{view:?} cell {i}"
                );
            }
        }
    }

    #[test]
    fn geometric_matches_by_hand() {
        // View 1: image x 0..80, y 0..40, cells 20×20; view 2: the right half x 40..80, same
        // rows, cells 10×20. View-1 columns 2 and 3 (centres x 50, 70) fall in view 2 at
        // u = 0.25 and 0.75: view-2 columns 1 and 3.
        let v1 = ViewBox {
            x: 0,
            y: 0,
            w: 80,
            h: 40,
            flipped: false,
        };
        let v2 = ViewBox {
            x: 40,
            y: 0,
            w: 40,
            h: 40,
            flipped: false,
        };
        assert_eq!(
            geometric_matches(&v1, &v2, G4),
            vec![(2, 1), (3, 3), (6, 5), (7, 7)]
        );
        // View 2 flipped: u → 1 − u (0.75 and 0.25), so columns 2 and 3 land on view-2
        // columns 3 and 1.
        let v2f = ViewBox {
            flipped: true,
            ..v2
        };
        assert_eq!(
            geometric_matches(&v1, &v2f, G4),
            vec![(2, 3), (3, 1), (6, 7), (7, 5)]
        );
        // A view against itself: every cell matches itself, flipped or not.
        for v in [v1, v2f] {
            let m = geometric_matches(&v, &v, G4);
            assert_eq!(m, (0..8).map(|i| (i, i)).collect::<Vec<_>>());
        }
        // Disjoint views: no positives.
        let left = ViewBox { w: 30, ..v1 };
        assert!(geometric_matches(&left, &v2, G4).is_empty());
    }

    #[test]
    fn argmax_matches_by_hand() {
        // Rows: view-1 cells; the first max wins ties; a NaN never wins.
        let sim = [
            0.1,
            0.9,
            0.3,
            /**/ 0.5,
            0.5,
            0.2,
            /**/ f32::NAN,
            -1.0,
            -0.5,
        ];
        assert_eq!(argmax_matches(&sim, 3, 3), vec![(0, 1), (1, 0), (2, 2)]);
    }

    #[test]
    fn same_image_offsets_by_hand() {
        let e = EXCLUDED;
        assert_eq!(
            same_image_offsets(&[0, 0, 1]),
            vec![0.0, e, 0.0, e, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        // Images 0 and 1 excluded one way (query of image 1, key of image 0): cell 2 (image 1)
        // loses cells 0 and 1 (image 0) as negatives; cells 0 and 1 keep cell 2.
        let mut off = same_image_offsets(&[0, 0, 1]);
        exclude_image_pairs(&mut off, &[0, 0, 1], &[0.0, 0.0, e, 0.0], 2);
        assert_eq!(off, vec![0.0, e, 0.0, e, 0.0, 0.0, e, e, 0.0]);
    }

    #[test]
    fn drawn_views_stay_inside_the_image_and_flip_about_half_the_time() {
        let aug = ViewAugment::default();
        let mut flips = 0;
        for seed in 0..400u64 {
            let v = draw_view(&aug, [160, 96], &mut rng_for(seed, "view"));
            assert!(
                v.w >= 1 && v.h >= 1 && v.x + v.w <= 160 && v.y + v.h <= 96,
                "{v:?}"
            );
            flips += usize::from(v.flipped);
        }
        assert!((150..=250).contains(&flips), "{flips} flips of 400");
    }

    #[test]
    fn sample_pairs_keeps_order_and_count() {
        let pairs: Vec<(usize, usize)> = (0..10).map(|i| (i, 9 - i)).collect();
        assert_eq!(sample_pairs(&pairs, 20, &mut rng_for(1, "s")), pairs);
        let some = sample_pairs(&pairs, 4, &mut rng_for(1, "s"));
        assert_eq!(some.len(), 4);
        assert!(some.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(some.iter().all(|p| pairs.contains(p)));
    }
}
