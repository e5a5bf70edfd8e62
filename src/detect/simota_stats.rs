//! What SimOTA did for objects of each size (`docs/simota-diagnostics.md`): per size bucket, the
//! ground-truth boxes seen, those left without a positive anchor, the positives assigned, the
//! positives whose predicted box has IoU 0 with their ground truth at assignment time (the IoU
//! loss `1 − IoU²` has no gradient there), and the mean IoU of the positives.
//!
//! The size of an object is `sqrt(w·h)` of its ground-truth box in training-input pixels (after
//! the letterbox and augmentation of the step). Buckets have inclusive lower bounds:
//! `<8`, `8-16`, `16-32`, `32-96`, `>=96`. The counts are read from an [`Assignment`], so the
//! host and the CUDA assigner (whose assignment is downloaded for the loss anyway) give them at
//! the same cost: one pass over the ground truth and the positives of each image.

use super::simota::Assignment;

/// The size buckets' names, smallest first.
pub const SIZE_BUCKETS: [&str; 5] = ["<8", "8-16", "16-32", "32-96", ">=96"];
/// Lower bounds (inclusive) of the buckets after the first, in training-input pixels of
/// `sqrt(w·h)`.
const BUCKET_LOWER_BOUNDS_PX: [f32; 4] = [8.0, 16.0, 32.0, 96.0];

/// The bucket of a cxcywh box: `sqrt(w·h)` against the bounds. A zero-size box (a mosaic
/// fallback's) is in the first bucket.
pub fn size_bucket(box_cxcywh: &[f32; 4]) -> usize {
    let size_px = (box_cxcywh[2].max(0.0) * box_cxcywh[3].max(0.0)).sqrt();
    BUCKET_LOWER_BOUNDS_PX
        .iter()
        .take_while(|&&lower| size_px >= lower)
        .count()
}

/// The counts of one size bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BucketCounts {
    /// Ground-truth boxes seen.
    pub gts: u64,
    /// Ground-truth boxes that got no positive anchor.
    pub unmatched_gts: u64,
    /// Positive anchors assigned to boxes of this bucket.
    pub positives: u64,
    /// Positives whose predicted box has IoU 0 with their ground truth at assignment time.
    pub positives_iou0: u64,
    /// Sum of the positives' IoUs (for the mean; f64, summed in image and anchor order).
    pub positive_iou_sum: f64,
}

impl BucketCounts {
    /// Mean IoU of the positives; NaN when there were none.
    pub fn mean_positive_iou(&self) -> f64 {
        if self.positives == 0 {
            f64::NAN
        } else {
            self.positive_iou_sum / self.positives as f64
        }
    }

    /// `unmatched_gts / gts`; NaN without ground truth.
    pub fn unmatched_share(&self) -> f64 {
        ratio(self.unmatched_gts, self.gts)
    }

    /// `positives_iou0 / positives`; NaN without positives.
    pub fn iou0_share(&self) -> f64 {
        ratio(self.positives_iou0, self.positives)
    }

    pub fn add(&mut self, o: &BucketCounts) {
        self.gts += o.gts;
        self.unmatched_gts += o.unmatched_gts;
        self.positives += o.positives;
        self.positives_iou0 += o.positives_iou0;
        self.positive_iou_sum += o.positive_iou_sum;
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        f64::NAN
    } else {
        part as f64 / whole as f64
    }
}

/// The counts of every size bucket, for one image, a batch or an epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AssignmentStats {
    /// One entry per [`SIZE_BUCKETS`] name, in that order.
    pub buckets: [BucketCounts; 5],
}

impl AssignmentStats {
    /// The counts of a batch: each image's ground-truth boxes (cxcywh) with its assignment.
    pub fn from_assignments<'a>(
        images: impl IntoIterator<Item = (&'a [[f32; 4]], &'a Assignment)>,
    ) -> Self {
        let mut stats = AssignmentStats::default();
        for (gt_boxes_cxcywh, assignment) in images {
            stats.add_image(gt_boxes_cxcywh, assignment);
        }
        stats
    }

    /// Add one image: its ground-truth boxes (cxcywh, training-input pixels) and the assignment
    /// made for them. A matched index outside the boxes (not an assignment of these boxes) is
    /// not counted.
    pub fn add_image(&mut self, gt_boxes_cxcywh: &[[f32; 4]], assignment: &Assignment) {
        let buckets: Vec<usize> = gt_boxes_cxcywh.iter().map(size_bucket).collect();
        let mut matched = vec![false; gt_boxes_cxcywh.len()];
        for (&g, &iou) in assignment.matched_gt.iter().zip(&assignment.pred_ious) {
            let Some(&bucket) = buckets.get(g) else {
                continue;
            };
            matched[g] = true;
            let counts = &mut self.buckets[bucket];
            counts.positives += 1;
            // IoU exactly 0: no overlap (both assigners return 0 for an empty intersection).
            counts.positives_iou0 += u64::from(iou <= 0.0);
            counts.positive_iou_sum += f64::from(iou);
        }
        for (&bucket, &got_one) in buckets.iter().zip(&matched) {
            self.buckets[bucket].gts += 1;
            self.buckets[bucket].unmatched_gts += u64::from(!got_one);
        }
    }

    pub fn add(&mut self, o: &AssignmentStats) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.add(b);
        }
    }

    /// Every bucket together.
    pub fn total(&self) -> BucketCounts {
        let mut t = BucketCounts::default();
        for b in &self.buckets {
            t.add(b);
        }
        t
    }

    /// `(bucket name, counts)` in bucket order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &BucketCounts)> {
        SIZE_BUCKETS.iter().copied().zip(&self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::super::simota::{simota_assign, SimOtaConfig, SimOtaInput, SimOtaMode};
    use super::*;

    #[test]
    fn buckets_have_inclusive_lower_bounds() {
        let side = |s: f32| size_bucket(&[50.0, 50.0, s, s]);
        assert_eq!(
            [side(0.0), side(7.99), side(8.0), side(15.9), side(16.0)],
            [0, 0, 1, 1, 2]
        );
        assert_eq!(
            [side(31.9), side(32.0), side(95.9), side(96.0)],
            [2, 3, 3, 4]
        );
        // sqrt(w·h): 4 × 64 has size 16.
        assert_eq!(size_bucket(&[0.0, 0.0, 4.0, 64.0]), 2);
        assert_eq!(size_bucket(&[0.0, 0.0, 0.0, 30.0]), 0);
    }

    #[test]
    fn hand_made_assignment_counts() {
        // Three boxes: size 4 (bucket <8), 20 (16-32), 100 (>=96). Anchors 1 and 3 go to box 0
        // (IoUs 0 and 0.5), anchor 4 to box 2 (IoU 0.25); box 1 gets nothing.
        let gts = [
            [10.0, 10.0, 4.0, 4.0],
            [50.0, 50.0, 20.0, 20.0],
            [200.0, 200.0, 100.0, 100.0],
        ];
        let assignment = Assignment {
            fg_mask: vec![false, true, false, true, true],
            matched_gt: vec![0, 0, 2],
            pred_ious: vec![0.0, 0.5, 0.25],
            num_fg: 3,
        };
        let s = AssignmentStats::from_assignments([(&gts[..], &assignment)]);
        let [small, b8, b16, b32, large] = s.buckets;
        assert_eq!((small.gts, small.unmatched_gts), (1, 0));
        assert_eq!((small.positives, small.positives_iou0), (2, 1));
        assert_eq!(small.mean_positive_iou(), 0.25);
        assert_eq!(small.iou0_share(), 0.5);
        assert_eq!(b8, BucketCounts::default());
        assert_eq!((b16.gts, b16.unmatched_gts, b16.positives), (1, 1, 0));
        assert_eq!(b16.unmatched_share(), 1.0);
        assert!(b16.mean_positive_iou().is_nan() && b16.iou0_share().is_nan());
        assert_eq!(b32, BucketCounts::default());
        assert_eq!((large.gts, large.unmatched_gts, large.positives), (1, 0, 1));
        assert_eq!((large.positives_iou0, large.mean_positive_iou()), (0, 0.25));
        let t = s.total();
        assert_eq!(
            (t.gts, t.unmatched_gts, t.positives, t.positives_iou0),
            (3, 1, 3, 1)
        );
        // Two images add up; an image without ground truth adds nothing.
        let mut twice = s.clone();
        twice.add(&s);
        twice.add_image(&[], &Assignment::default());
        assert_eq!(twice.buckets[0].gts, 2);
        assert_eq!(twice.buckets[0].positive_iou_sum, 1.0);
    }

    /// One stride-8 level of `n × n` anchors, every prediction the box `pred` (cxcywh), one
    /// class, logits 0: what SimOTA assigns to `gts`.
    fn assign_on_grid(n: usize, pred: [f32; 4], gts: &[[f32; 4]]) -> Assignment {
        let grids: Vec<(f32, f32)> = (0..n * n)
            .map(|i| ((i % n) as f32, (i / n) as f32))
            .collect();
        let a = grids.len();
        let boxes = vec![pred; a];
        let classes = vec![0; gts.len()];
        let (logits, strides) = (vec![0.0; a], vec![8.0; a]);
        let cfg = SimOtaConfig {
            mode: SimOtaMode::Release,
            center_radius: 2.5,
        };
        let inp = SimOtaInput {
            pred_boxes_cxcywh: &boxes,
            cls_logits: &logits,
            obj_logits: &logits,
            grids: &grids,
            strides: &strides,
            gt_boxes_cxcywh: gts,
            gt_classes: &classes,
            num_classes: 1,
        };
        simota_assign(&inp, &cfg).unwrap()
    }

    #[test]
    fn tiny_box_between_anchor_centres_gets_an_iou0_positive() {
        // Anchor centres of stride 8 sit at 4, 12, 20, ...; a 3 px box centred at (16, 16) holds
        // none of them. It still gets a positive from its centre prior (radius 2.5 strides, all
        // candidates penalised alike), and with every prediction a box far away (at (60, 60))
        // that positive's IoU is 0: the IoU loss gives it no gradient.
        let gts = [[16.0, 16.0, 3.0, 3.0]];
        let assignment = assign_on_grid(10, [60.0, 60.0, 6.0, 6.0], &gts);
        // dynamic k = max(1, int(Σ top-10 IoUs)) = 1 with every IoU 0.
        assert_eq!(assignment.num_fg, 1);
        let s = AssignmentStats::from_assignments([(&gts[..], &assignment)]);
        let small = s.buckets[0];
        assert_eq!((small.gts, small.unmatched_gts), (1, 0));
        assert_eq!((small.positives, small.positives_iou0), (1, 1));
        assert_eq!(small.mean_positive_iou(), 0.0);
        assert_eq!(small.iou0_share(), 1.0);
    }

    #[test]
    fn box_with_no_anchor_centre_inside_or_near_is_unmatched() {
        // A 3 px box at (100, 100) on a 4 × 4 grid of stride 8 (centres up to 28): no anchor is
        // inside it or within 2.5 strides (20 px) of its centre. A 20 px box at (12, 12) on the
        // same grid holds 9 anchor centres, and every prediction (16 px at its centre) has IoU
        // 0.64 with it: dynamic k = int(10 · 0.64) = 6. The far box's one pick (k = 1) is the
        // cheapest of the other box's candidates, all penalised for it: anchor 0, which the near
        // box also picked and wins at a lower cost. The far box ends with no positive.
        let gts = [[100.0, 100.0, 3.0, 3.0], [12.0, 12.0, 20.0, 20.0]];
        let assignment = assign_on_grid(4, [12.0, 12.0, 16.0, 16.0], &gts);
        assert_eq!(assignment.num_fg, 6);
        assert!(assignment.matched_gt.iter().all(|&g| g == 1));
        let s = AssignmentStats::from_assignments([(&gts[..], &assignment)]);
        let (tiny, mid) = (s.buckets[0], s.buckets[2]);
        assert_eq!((tiny.gts, tiny.unmatched_gts, tiny.positives), (1, 1, 0));
        assert_eq!((mid.gts, mid.unmatched_gts), (1, 0));
        assert_eq!(mid.positives, 6);
        assert_eq!(mid.positives_iou0, 0);
        // Prediction 16² inside the 20² box: IoU 256 / 400.
        assert!((mid.mean_positive_iou() - 0.64).abs() < 1e-6);
        assert_eq!(s.total().unmatched_share(), 0.5);
    }
}
