//! Where the patches of patch-contrastive SSL are cut (study strategy 3, docs/the-study.md).
//!
//! Defaults = the study (`sample/ssl.jpg`): frames resized to 1280×720; a 3×3 grid of s = 224 px
//! cells at origin `px ~ randint(0, 200)`, `py ~ randint(0, h − 3s − 1)`; the centre cell is the
//! anchor; its four edge neighbours (left, up, down, right) are the positives; four negatives at
//! `x ~ randint(w − 2s, w − s − 1)`, `y ~ randint(0, h − s − 1)` (the far right strip,
//! `"far_strip"`), or anywhere at least `negative_min_distance` px from the anchor
//! (`"distance"`, docs/the-study.md defect 11: the strip is a fixed spatial prior).

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::check_positive;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSampler {
    #[default]
    FarStrip,
    Distance,
}

/// Where patches are cut (all in frame pixels, after the resize).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchGeometry {
    /// `[width, height]` frames are resized to.
    pub frame_size: [usize; 2],
    pub patch_size: usize,
    pub num_positives: usize,
    pub num_negatives: usize,
    /// Grid origin x is drawn in `0..=min(origin_x_max, w − 3s)` (the study: 200).
    pub origin_x_max: usize,
    pub negative_sampler: NegativeSampler,
    /// `"distance"`: the gap between anchor and negative, `max(|dx|, |dy|) − s`, is at least this.
    pub negative_min_distance: usize,
}

impl Default for PatchGeometry {
    fn default() -> Self {
        PatchGeometry {
            frame_size: [1280, 720],
            patch_size: 224,
            num_positives: 4,
            num_negatives: 4,
            origin_x_max: 200,
            negative_sampler: NegativeSampler::FarStrip,
            negative_min_distance: 224,
        }
    }
}

/// The top-left corners of one frame's patches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPlan {
    pub anchor: (usize, usize),
    pub positives: Vec<(usize, usize)>,
    pub negatives: Vec<(usize, usize)>,
}

/// Gap between two s×s squares at corners `a` and `b`: `max(|dx|, |dy|) − s` (negative when they
/// overlap, 0 when they touch).
pub fn patch_gap(a: (usize, usize), b: (usize, usize), s: usize) -> i64 {
    let dx = (a.0 as i64 - b.0 as i64).abs();
    let dy = (a.1 as i64 - b.1 as i64).abs();
    dx.max(dy) - s as i64
}

impl PatchGeometry {
    pub fn validate(&self) -> Result<()> {
        let [w, h] = self.frame_size;
        let s = self.patch_size;
        check_positive("patch_size", s)?;
        if !(1..=4).contains(&self.num_positives) {
            return Err(Error::InvalidArgument(format!(
                "`num_positives` must be 1..=4 (the anchor's edge neighbours), got {}",
                self.num_positives
            )));
        }
        check_positive("num_negatives", self.num_negatives)?;
        if w < 3 * s || h < 3 * s {
            return Err(Error::InvalidArgument(format!(
                "`frame_size` {w}x{h} cannot hold a 3x3 grid of `patch_size` {s} cells"
            )));
        }
        if self.negative_sampler == NegativeSampler::FarStrip && (w < 2 * s + 1 || h < s + 1) {
            return Err(Error::InvalidArgument(format!(
                "`negative_sampler` \"far_strip\" needs frame width > 2·patch_size and height > patch_size, got {w}x{h}"
            )));
        }
        Ok(())
    }

    /// Draw one frame's patches (docs/the-study.md; randint bounds inclusive as Python's).
    pub fn plan(&self, rng: &mut impl Rng) -> Result<PatchPlan> {
        let [w, h] = self.frame_size;
        let s = self.patch_size;
        let px = rng.random_range(0..=self.origin_x_max.min(w - 3 * s));
        let py = rng.random_range(0..=(h - 3 * s).saturating_sub(1));
        let anchor = (px + s, py + s);
        // Grid (gx, gy) ∈ {(0,1), (1,0), (1,2), (2,1)}: left, up, down, right.
        let mut positives = vec![
            (px, py + s),
            (px + s, py),
            (px + s, py + 2 * s),
            (px + 2 * s, py + s),
        ];
        positives.shuffle(rng);
        positives.truncate(self.num_positives);
        let mut negatives = Vec::with_capacity(self.num_negatives);
        for _ in 0..self.num_negatives {
            let n = match self.negative_sampler {
                NegativeSampler::FarStrip => (
                    rng.random_range(w - 2 * s..=w - s - 1),
                    rng.random_range(0..=h - s - 1),
                ),
                NegativeSampler::Distance => {
                    let mut found = None;
                    for _ in 0..10_000 {
                        let c = (rng.random_range(0..=w - s), rng.random_range(0..=h - s));
                        if patch_gap(anchor, c, s) >= self.negative_min_distance as i64 {
                            found = Some(c);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "`negative_min_distance` {} leaves no room for a negative in a {w}x{h} frame",
                            self.negative_min_distance
                        ))
                    })?
                }
            };
            negatives.push(n);
        }
        Ok(PatchPlan {
            anchor,
            positives,
            negatives,
        })
    }
}
