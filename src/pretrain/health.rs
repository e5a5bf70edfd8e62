//! Embedding health of a backbone (docs/pretraining.md, "Health"): whether its image embeddings
//! (GAP of C5, L2-normalised) still spread out or have collapsed, the failure of
//! non-contrastive self-supervision.
//!
//! - `std_mean` / `std_min`: the per-dimension standard deviation of the normalised embeddings,
//!   averaged / smallest over dimensions. Spread-out embeddings on the unit sphere of `d`
//!   dimensions have std ≈ 1/√d; a collapsed set (every image the same vector) has 0
//!   (Chen & He 2021, SimSiam, Fig. 2). `std_ratio = std_mean · √d` puts it on a 0..~1 scale.
//! - `effective_rank`: exp of the entropy of the normalised singular values of the embedding
//!   matrix (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): 1 for a collapsed set, up to
//!   `min(n, d)` when every direction is used alike.
//! - `alignment`: `E ‖f(x) − f(x')‖²` over two augmented views of the same image, and
//!   `uniformity`: `log E exp(−2 ‖f(x) − f(y)‖²)` over pairs of different images (Wang & Isola
//!   2020, α = 2, t = 2). Lower is better for both; a collapsed set has alignment 0 and
//!   uniformity 0 (its maximum), spread-out sets reach about −4 (orthogonal vectors).
//! - `collapsed`: `std_ratio < collapse_below` (default 0.1: a tenth of the healthy spread).
//!
//! The check samples a fixed set of images (its own seeded draws: it never touches a training
//! run's random stream) and runs the backbone in eval mode without recording. By default
//! (`precise_bn`) it first recomputes the BN statistics on those images and puts the model's own
//! back afterwards: early in a run YOLOX's BN momentum of 0.03 has moved the running
//! statistics only part of the way from their initial values, and an eval-mode network with
//! such statistics reads as collapsed (every embedding the same direction) when the weights
//! are not. A run with the check computes the same weights as one without.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::data::{push_rgb_planes, FrameSet, ImageSource, InputNorm};
use super::device::{DeviceConfig, DeviceScope};
use super::ssl::views::ViewAugment;
use crate::autograd::no_grad;
use crate::models::YoloX;
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::train::evaluate::with_precise_bn;
use crate::{Error, Result};

/// What [`embedding_health`] samples and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Images sampled (a fixed, seeded subset; all when there are fewer).
    pub samples: usize,
    /// `[width, height]` of the network input; None: the run's input size (alone: 224×224).
    pub image_size: Option<[usize; 2]>,
    /// None: the run's input convention (alone: `bgr255`).
    pub input_norm: Option<InputNorm>,
    /// Images per forward pass.
    pub batch_size: usize,
    pub seed: u64,
    /// `collapsed` when `std_mean · √d` falls below this.
    pub collapse_below: f64,
    /// The two views whose embeddings `alignment` compares.
    pub views: ViewAugment,
    /// `cpu`, `cuda` or `auto` when called on its own (inside a run: the run's device).
    pub device: String,
    /// Measure with BN statistics recomputed on the sampled images (precise BN) and the model's
    /// own put back after; false: with the model's running statistics as they are.
    pub precise_bn: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            samples: 64,
            image_size: None,
            input_norm: None,
            batch_size: 32,
            seed: 0,
            collapse_below: 0.1,
            views: ViewAugment::default(),
            device: "cpu".into(),
            precise_bn: true,
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<()> {
        if self.samples < 2 {
            return Err(Error::InvalidArgument(format!(
                "health: `samples` must be >= 2 (uniformity compares pairs), got {}",
                self.samples
            )));
        }
        super::check_positive("batch_size", self.batch_size)?;
        if let Some([w, h]) = self.image_size {
            if w == 0 || h == 0 || !w.is_multiple_of(32) || !h.is_multiple_of(32) {
                return Err(Error::InvalidArgument(format!(
                    "health: `image_size` must be multiples of 32, got [{w}, {h}]"
                )));
            }
        }
        if !(self.collapse_below.is_finite() && self.collapse_below >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "health: `collapse_below` must be >= 0, got {}",
                self.collapse_below
            )));
        }
        self.views.validate("health.views")
    }

    /// The config with the run's input size and convention where it names none.
    pub fn for_run(&self, image_size: [usize; 2], norm: InputNorm) -> HealthConfig {
        HealthConfig {
            image_size: Some(self.image_size.unwrap_or(image_size)),
            input_norm: Some(self.input_norm.unwrap_or(norm)),
            ..self.clone()
        }
    }
}

/// The health of one set of embeddings (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Embedding dimension `d` and images sampled `n`.
    pub dim: usize,
    pub samples: usize,
    pub std_mean: f64,
    pub std_min: f64,
    /// `std_mean · √d`: ≈ 1 spread out, 0 collapsed.
    pub std_ratio: f64,
    pub effective_rank: f64,
    pub alignment: f64,
    pub uniformity: f64,
    pub collapsed: bool,
    #[serde(default)]
    pub seconds: f64,
}

/// Rows scaled to unit L2 norm (a zero row stays zero).
fn normalized(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter()
                .map(|v| if n > 0.0 { v / n } else { 0.0 })
                .collect()
        })
        .collect()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Eigenvalues of the symmetric matrix `a` (`n × n`, row-major) by cyclic Jacobi rotations.
pub fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let total: f64 = a.iter().map(|v| v * v).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-24 * total.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.5.1).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

/// exp(entropy of the normalised singular values) of the rows `z` (`n × d`), from the smaller
/// of the Gram matrices `z zᵀ` / `zᵀ z` (the same non-zero eigenvalues, σ²).
pub fn effective_rank(z: &[Vec<f64>]) -> f64 {
    let n = z.len();
    let d = z.first().map_or(0, |r| r.len());
    if n == 0 || d == 0 {
        return 0.0;
    }
    let gram = if n <= d {
        let mut g = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum();
            }
        }
        (g, n)
    } else {
        let mut g = vec![0f64; d * d];
        for row in z {
            for i in 0..d {
                for j in 0..d {
                    g[i * d + j] += row[i] * row[j];
                }
            }
        }
        (g, d)
    };
    let eigenvalues = symmetric_eigenvalues(gram.0, gram.1);
    let largest = eigenvalues.iter().cloned().fold(0.0, f64::max);
    // Rounding leaves eigenvalues of ~1e-16·λ_max where there are none (σ ~ 1e-8 would add
    // to the entropy): those count as 0.
    let sigma: Vec<f64> = eigenvalues
        .into_iter()
        .map(|l| if l > 1e-12 * largest { l.sqrt() } else { 0.0 })
        .collect();
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| s / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// The metrics of the module docs from raw embeddings: `plain` (one per image) and two views
/// `view_a`, `view_b` of the same images (normalised here).
pub fn health_metrics(
    plain: &[Vec<f64>],
    view_a: &[Vec<f64>],
    view_b: &[Vec<f64>],
    collapse_below: f64,
) -> Result<HealthReport> {
    let n = plain.len();
    let d = plain.first().map_or(0, |r| r.len());
    if n < 2 || d == 0 || view_a.len() != view_b.len() {
        return Err(Error::InvalidArgument(format!(
            "embedding health needs >= 2 embeddings of one size and matching views, got {n} of \
             size {d}, views {} and {}",
            view_a.len(),
            view_b.len()
        )));
    }
    let z = normalized(plain);
    let mut stds = Vec::with_capacity(d);
    for k in 0..d {
        let mean = z.iter().map(|r| r[k]).sum::<f64>() / n as f64;
        let var = z.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / n as f64;
        stds.push(var.sqrt());
    }
    let std_mean = stds.iter().sum::<f64>() / d as f64;
    let std_min = stds.iter().cloned().fold(f64::INFINITY, f64::min);
    let (a, b) = (normalized(view_a), normalized(view_b));
    let alignment = if a.is_empty() {
        f64::NAN
    } else {
        a.iter().zip(&b).map(|(x, y)| sq_dist(x, y)).sum::<f64>() / a.len() as f64
    };
    let mut pairs = 0usize;
    let mut sum = 0f64;
    for i in 0..n {
        for j in i + 1..n {
            sum += (-2.0 * sq_dist(&z[i], &z[j])).exp();
            pairs += 1;
        }
    }
    let std_ratio = std_mean * (d as f64).sqrt();
    Ok(HealthReport {
        dim: d,
        samples: n,
        std_mean,
        std_min,
        std_ratio,
        effective_rank: effective_rank(&z),
        alignment,
        uniformity: (sum / pairs as f64).ln(),
        collapsed: std_ratio < collapse_below,
        seconds: 0.0,
    })
}

/// GAP(C5) of `input [B, 3, h, w]` values on `device`, one row per image.
fn gap_c5(
    model: &YoloX,
    values: Vec<f32>,
    shape: [usize; 4],
    device: Device,
) -> Result<Vec<Vec<f64>>> {
    let x = Tensor::from_vec_on(values, shape, device)?;
    let (_, _, c5) = model.backbone.backbone.forward(&x)?;
    let g = ops::global_avg_pool2d(&c5)?;
    let d = g.dims()[1];
    Ok(g.to_vec()
        .chunks(d)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect())
}

/// The health of `model`'s embeddings of `sources` (the model's stores must be on `device`);
/// `cfg.image_size` and `cfg.input_norm` must be set ([`HealthConfig::for_run`]).
pub(crate) fn health_of_sources(
    model: &YoloX,
    sources: &[ImageSource],
    cfg: &HealthConfig,
    device: Device,
) -> Result<HealthReport> {
    let started = Instant::now();
    let [w, h] = cfg.image_size.unwrap_or([224, 224]);
    let norm = cfg.input_norm.unwrap_or_default();
    let mut picked: Vec<usize> = (0..sources.len()).collect();
    if picked.len() > cfg.samples {
        use rand::seq::SliceRandom;
        picked.shuffle(&mut rng_for(cfg.seed, "pretrain/health/sample"));
        picked.truncate(cfg.samples);
        picked.sort_unstable();
    }
    let plain_batch = |chunk: &[usize]| -> Result<Tensor> {
        let mut values = Vec::with_capacity(chunk.len() * 3 * w * h);
        for &i in chunk {
            let plain = sources[i].load_resized(w as u32, h as u32)?;
            push_rgb_planes(&plain, false, &mut values);
        }
        norm.apply_to_rgb_planes(&mut values, w * h);
        Tensor::from_vec_on(values, [chunk.len(), 3, h, w], device)
    };
    let measure = || -> Result<[Vec<Vec<f64>>; 3]> {
        let was_training = model.store.is_training();
        model.set_training(false);
        let result = embeddings_of(model, sources, &picked, ([w, h], norm), cfg, device);
        model.set_training(was_training);
        result
    };
    let [plain, a, b] = if cfg.precise_bn {
        let batches = picked.chunks(cfg.batch_size).map(plain_batch);
        with_precise_bn(model, batches, measure)?
    } else {
        measure()?
    };
    let mut report = health_metrics(&plain, &a, &b, cfg.collapse_below)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// GAP(C5) of the picked images as they are and of their two views, at `[w, h]` in `norm`, in
/// eval mode.
fn embeddings_of(
    model: &YoloX,
    sources: &[ImageSource],
    picked: &[usize],
    ([w, h], norm): ([usize; 2], InputNorm),
    cfg: &HealthConfig,
    device: Device,
) -> Result<[Vec<Vec<f64>>; 3]> {
    no_grad(|| -> Result<[Vec<Vec<f64>>; 3]> {
        let mut out: [Vec<Vec<f64>>; 3] = Default::default();
        for chunk in picked.chunks(cfg.batch_size) {
            let mut inputs: [Vec<f32>; 3] = Default::default();
            for &i in chunk {
                let img = sources[i].load()?;
                let plain = sources[i].load_resized(w as u32, h as u32)?;
                push_rgb_planes(&plain, false, &mut inputs[0]);
                let mut rng = rng_for(cfg.seed, &format!("pretrain/health/view/{i}"));
                let [_, first, second] = &mut inputs;
                cfg.views
                    .push_view_pair((&img, &img), [w, h], &mut rng, (first, second));
            }
            for (k, mut values) in inputs.into_iter().enumerate() {
                norm.apply_to_rgb_planes(&mut values, w * h);
                out[k].extend(gap_c5(model, values, [chunk.len(), 3, h, w], device)?);
            }
        }
        Ok(out)
    })
}

/// The embedding health of `model`'s backbone on `images` (see the module docs), computed on
/// `cfg.device`.
pub fn embedding_health(
    model: &YoloX,
    images: &FrameSet,
    cfg: &HealthConfig,
) -> Result<HealthReport> {
    cfg.validate()?;
    let device_cfg = DeviceConfig {
        device: cfg.device.clone(),
        ..DeviceConfig::default()
    };
    device_cfg.validate()?;
    if images.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "embedding health needs at least 2 images, got {}",
            images.len()
        )));
    }
    let scope = DeviceScope::enter(&device_cfg, &[&model.store])?;
    let cfg = cfg.for_run([224, 224], InputNorm::Bgr255);
    let report = health_of_sources(model, &images.frames, &cfg, scope.device);
    scope.leave()?;
    report
}

/// A warning line for a report that has collapsed since `start` (None otherwise; see
/// `HealthWatch` in this module).
pub fn collapse_warning(
    what: &str,
    epoch: usize,
    h: &HealthReport,
    start: Option<&HealthReport>,
) -> Option<String> {
    let narrowed = start.is_none_or(|s| h.std_ratio < s.std_ratio);
    (h.collapsed && narrowed).then(|| {
        let since = start.map_or(String::new(), |s| {
            format!("; {:.3}/√d at the start of the run", s.std_ratio)
        });
        format!(
            "warning: {what} epoch {}: the embedding has collapsed (std of the normalised \
             embedding {:.2e} = {:.3}/√d{since}, effective rank {:.2} of {})",
            epoch + 1,
            h.std_mean,
            h.std_ratio,
            h.effective_rank,
            h.dim.min(h.samples)
        )
    })
}

/// The health check a pretraining run makes after every epoch, with the health it started from.
///
/// The warning fires only for an embedding that is collapsed *and* narrower than when the run
/// (or its resumed part) started: a collapse the training caused, not one it began from (a
/// collapsed checkpoint, or a check with `precise_bn: false`, which reads a run's first epochs
/// as collapsed; see the module docs). The `collapsed` column of `epochs.csv` keeps the
/// absolute criterion.
pub(crate) struct HealthWatch<'a> {
    cfg: Option<HealthConfig>,
    sources: &'a [ImageSource],
    device: Device,
    what: &'a str,
    /// The health before the first epoch of this process.
    start: Option<HealthReport>,
}

impl<'a> HealthWatch<'a> {
    /// Measure the starting health (nothing when `health` is None or there are < 2 images).
    /// Eval mode, its own random draws: the run's weights and stream are untouched.
    pub(crate) fn start(
        model: &YoloX,
        health: Option<&HealthConfig>,
        sources: &'a [ImageSource],
        (size, norm): ([usize; 2], InputNorm),
        device: Device,
        what: &'a str,
    ) -> Result<Self> {
        let cfg = health
            .filter(|_| sources.len() >= 2)
            .map(|c| c.for_run(size, norm));
        let start = match &cfg {
            Some(c) => Some(health_of_sources(model, sources, c, device)?),
            None => None,
        };
        Ok(HealthWatch {
            cfg,
            sources,
            device,
            what,
            start,
        })
    }

    /// The health after `epoch` (None when switched off); a warning printed and kept in
    /// `report` when the embedding has collapsed since the start.
    pub(crate) fn after_epoch(
        &self,
        model: &YoloX,
        epoch: usize,
        report: &mut crate::pretrain::PretrainReport,
    ) -> Result<Option<HealthReport>> {
        let Some(cfg) = &self.cfg else {
            return Ok(None);
        };
        let h = health_of_sources(model, self.sources, cfg, self.device)?;
        if let Some(w) = collapse_warning(self.what, epoch, &h, self.start.as_ref()) {
            eprintln!("{w}");
            report.warnings.push(w);
        }
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collapsed_set_has_std_zero_and_rank_one() {
        let rows = vec![vec![3.0, 4.0, 0.0]; 5];
        let h = health_metrics(&rows, &rows, &rows, 0.1).unwrap();
        assert_eq!(h.std_mean, 0.0);
        assert_eq!(h.std_min, 0.0);
        assert!(
            (h.effective_rank - 1.0).abs() < 1e-9,
            "{}",
            h.effective_rank
        );
        assert_eq!(h.alignment, 0.0);
        // Every pair at distance 0: log E exp(0) = 0.
        assert!(h.uniformity.abs() < 1e-12);
        assert!(h.collapsed);
    }

    #[test]
    fn the_warning_needs_a_collapse_the_run_caused() {
        let at = |std_ratio: f64| HealthReport {
            std_ratio,
            collapsed: std_ratio < 0.1,
            dim: 8,
            samples: 4,
            ..Default::default()
        };
        // Random init (0.02) spreading out to 0.05: still under the line, but not a collapse.
        assert!(collapse_warning("m", 0, &at(0.05), Some(&at(0.02))).is_none());
        // Narrower than at the start: warned, with the starting value.
        let w = collapse_warning("m", 2, &at(0.01), Some(&at(0.02))).unwrap();
        assert!(
            w.contains("epoch 3") && w.contains("0.020/√d at the start"),
            "{w}"
        );
        // Healthy, or no start measured: the absolute criterion alone.
        assert!(collapse_warning("m", 0, &at(0.5), Some(&at(0.9))).is_none());
        assert!(collapse_warning("m", 0, &at(0.05), None).is_some());
    }

    #[test]
    fn an_orthonormal_set_has_full_rank_and_uniformity_minus_four() {
        // Rows e_0..e_3 scaled: normalised, each dimension holds one 1 and three 0s, so its std
        // is sqrt(1/4 − 1/16) = √3/4; every pair is at squared distance 2.
        let d = 4;
        let rows: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|k| if k == i { 2.0 + i as f64 } else { 0.0 })
                    .collect()
            })
            .collect();
        let views: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|v| -v).collect())
            .collect();
        let h = health_metrics(&rows, &rows, &views, 0.1).unwrap();
        assert!((h.std_mean - 3f64.sqrt() / 4.0).abs() < 1e-12);
        assert!((h.std_ratio - 3f64.sqrt() / 2.0).abs() < 1e-12);
        assert!(
            (h.effective_rank - 4.0).abs() < 1e-9,
            "{}",
            h.effective_rank
        );
        assert!((h.uniformity + 4.0).abs() < 1e-12);
        // Opposite vectors: ‖x − (−x)‖² = 4.
        assert!((h.alignment - 4.0).abs() < 1e-12);
        assert!(!h.collapsed);
    }

    #[test]
    fn effective_rank_of_two_unequal_directions() {
        // Singular values 3 and 1 (rows 3·e0, e1, n > d path too): p = (3/4, 1/4).
        let z = vec![vec![3.0, 0.0], vec![0.0, 1.0], vec![0.0, 0.0]];
        let p: [f64; 2] = [0.75, 0.25];
        let expected = (-(p[0] * p[0].ln() + p[1] * p[1].ln())).exp();
        assert!((effective_rank(&z) - expected).abs() < 1e-9);
    }

    #[test]
    fn jacobi_finds_the_eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut ev = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        ev.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert!(
            (ev[0] - 1.0).abs() < 1e-12 && (ev[1] - 3.0).abs() < 1e-12,
            "{ev:?}"
        );
    }

    #[test]
    fn too_few_embeddings_are_an_error() {
        let rows = vec![vec![1.0, 0.0]];
        assert!(health_metrics(&rows, &[], &[], 0.1).is_err());
    }
}
