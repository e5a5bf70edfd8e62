//! k-nearest-neighbour probe: a frozen backbone (eval mode, no gradients), features = GAP of C5,
//! L2-normalised; each held-out crop takes the majority label of its `k` most cosine-similar
//! training crops (a tie: the label of the nearest among the tied). The split is
//! [`linear_probe`](super::linear_probe)'s seeded split, so the two probes score the same crops.
//! No training at all: the score says how well the features already separate fg from bg
//! (Wu et al. 2018; DINO, Caron et al. 2021 use the same protocol).

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::check_positive;
use super::data::{seeded_split, CropSet, InputNorm};
use super::device::{DeviceConfig, DeviceScope};
use super::probe::{backbone_features, ProbeConfig};
use crate::train::config::Precision;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Neighbours that vote.
    pub k: usize,
    pub seed: u64,
    pub input_size: usize,
    pub input_norm: InputNorm,
    pub val_fraction: f64,
    /// Crops per backbone forward pass.
    pub batch_size: usize,
    /// `cpu`, `cuda` or `auto` for the backbone's forward passes.
    pub device: String,
    pub precision: Precision,
    pub workers: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 5,
            seed: 0,
            input_size: 224,
            input_norm: InputNorm::Bgr255,
            val_fraction: 0.2,
            batch_size: 64,
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KnnReport {
    /// Held-out accuracy.
    pub accuracy: f64,
    pub k: usize,
    pub feature_dim: usize,
    pub train_size: usize,
    pub val_size: usize,
    pub seconds: f64,
}

fn unit(v: &[f32]) -> Vec<f64> {
    let n = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    v.iter()
        .map(|&x| if n > 0.0 { x as f64 / n } else { 0.0 })
        .collect()
}

/// The label k-NN gives `query` (unit vector) among `train` (unit vectors, labels).
fn knn_label(query: &[f64], train: &[(Vec<f64>, u8)], k: usize) -> u8 {
    let mut sims: Vec<(f64, u8)> = train
        .iter()
        .map(|(x, y)| (x.iter().zip(query).map(|(a, b)| a * b).sum::<f64>(), *y))
        .collect();
    // Most similar first; equal similarities keep the training order (a stable sort).
    sims.sort_by(|a, b| b.0.total_cmp(&a.0));
    sims.truncate(k.min(train.len()));
    let mut votes = [0usize; 256];
    for &(_, y) in &sims {
        votes[y as usize] += 1;
    }
    let top = votes.iter().copied().max().unwrap_or(0);
    // Among the tied labels, the one of the nearest neighbour.
    sims.iter()
        .find(|(_, y)| votes[*y as usize] == top)
        .map_or(0, |(_, y)| *y)
}

/// Held-out accuracy of cosine k-NN: `train` and `test` are (features, label).
pub fn knn_accuracy(train: &[(Vec<f32>, u8)], test: &[(Vec<f32>, u8)], k: usize) -> f64 {
    if test.is_empty() {
        return f64::NAN;
    }
    let train: Vec<(Vec<f64>, u8)> = train.iter().map(|(x, y)| (unit(x), *y)).collect();
    let ok = test
        .iter()
        .filter(|(x, y)| knn_label(&unit(x), &train, k) == *y)
        .count();
    ok as f64 / test.len() as f64
}

/// Score `model`'s frozen features on fg/bg `crops` (see the module docs).
pub fn knn_probe(
    model: &crate::models::YoloX,
    crops: &CropSet,
    cfg: &KnnConfig,
) -> Result<KnnReport> {
    let device_cfg = DeviceConfig {
        device: cfg.device.clone(),
        precision: cfg.precision,
        workers: cfg.workers,
    };
    device_cfg.validate()?;
    check_positive("k", cfg.k)?;
    check_positive("batch_size", cfg.batch_size)?;
    if cfg.input_size == 0 || !cfg.input_size.is_multiple_of(32) {
        return Err(Error::InvalidArgument(format!(
            "`input_size` must be a positive multiple of 32, got {}",
            cfg.input_size
        )));
    }
    if !(cfg.val_fraction > 0.0 && cfg.val_fraction < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "`val_fraction` must be in (0, 1), got {}",
            cfg.val_fraction
        )));
    }
    if crops.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "the k-NN probe needs at least 2 crops, got {}",
            crops.len()
        )));
    }
    let started = Instant::now();
    let features_cfg = ProbeConfig {
        seed: cfg.seed,
        input_size: cfg.input_size,
        input_norm: cfg.input_norm,
        batch_size: cfg.batch_size,
        device: cfg.device.clone(),
        precision: cfg.precision,
        workers: cfg.workers,
        ..ProbeConfig::default()
    };
    let scope = DeviceScope::enter(&device_cfg, &[&model.store])?;
    let feats = backbone_features(
        model,
        &Arc::new(crops.crops.clone()),
        &features_cfg,
        scope.device,
    )?;
    scope.leave()?;
    if let Some(bad) = feats.iter().position(|f| f.iter().any(|v| !v.is_finite())) {
        return Err(Error::Msg(format!(
            "k-NN probe: backbone features of crop `{}` are not finite",
            crops.crops[bad].name
        )));
    }
    let (train, val) = seeded_split(feats.len(), cfg.val_fraction, cfg.seed);
    let pick = |idx: &[usize]| -> Vec<(Vec<f32>, u8)> {
        idx.iter()
            .map(|&i| (feats[i].clone(), crops.crops[i].label))
            .collect()
    };
    Ok(KnnReport {
        accuracy: knn_accuracy(&pick(&train), &pick(&val), cfg.k),
        k: cfg.k,
        feature_dim: feats[0].len(),
        train_size: train.len(),
        val_size: val.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_votes_by_cosine_not_by_length() {
        // Class 1 points along +x, class 0 along +y; lengths differ wildly (cosine ignores them).
        let train = vec![
            (vec![100.0, 1.0], 1),
            (vec![0.5, 0.01], 1),
            (vec![3.0, 0.2], 1),
            (vec![0.01, 2.0], 0),
            (vec![1.0, 50.0], 0),
        ];
        // Cosines (by hand): query (1, 0.1) → 0.9995, 0.9968, 0.9960 to the class-1 points;
        // (0.2, 1) → 0.984, 0.982 to the class-0 points, then 0.26 (class 1); (1, 1.05) →
        // 0.7378 (1,50) class 0, 0.7363 (3,0.2) class 1, 0.7276 (0.01,2) class 0, 0.704, 0.697
        // class 1: k = 1 and 3 say 0, k = 5 says 1 (3 votes to 2) — and k = 5 (everything)
        // also says 1 for the second query, which is wrong.
        let test = vec![
            (vec![1.0, 0.1], 1),
            (vec![0.2, 1.0], 0),
            (vec![1.0, 1.05], 1),
        ];
        assert!((knn_accuracy(&train, &test, 1) - 2.0 / 3.0).abs() < 1e-12);
        assert!((knn_accuracy(&train, &test, 3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(knn_accuracy(&train, &test[2..], 5), 1.0);
        assert!((knn_accuracy(&train, &test, 5) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_tie_goes_to_the_nearest_neighbour() {
        let train = vec![(vec![1.0, 0.0], 0), (vec![0.0, 1.0], 1)];
        // k = 2: one vote each; the nearest is class 1.
        assert_eq!(knn_accuracy(&train, &[(vec![0.1, 1.0], 1)], 2), 1.0);
        assert_eq!(knn_accuracy(&train, &[(vec![1.0, 0.1], 0)], 2), 1.0);
    }
}
