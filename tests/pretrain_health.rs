//! The embedding health check reads the weights, not the state of BN's running statistics: a
//! backbone whose running statistics have moved part of the way from their initial values (a
//! run's first steps) reads as collapsed in eval mode, and precise BN (the default) reads it as
//! it is and leaves the statistics as they were, so a run with the check ends where a run
//! without it ends; a collapse the weights cause is still read.

mod ssl_support;

use ssl_support::*;
use ssod::nn::TensorKind;
use ssod::pretrain::data::images_to_input;
use ssod::pretrain::{embedding_health, FrameSet, HealthConfig, InputNorm};
use ssod::tensor::Tensor;

fn frames() -> (Vec<Frame>, FrameSet) {
    let frames = videos(4, 4, 3);
    let set = FrameSet::from_images(frames.iter().map(|f| f.image.clone()).collect());
    (frames, set)
}

fn health_cfg(precise_bn: bool) -> HealthConfig {
    HealthConfig {
        image_size: Some([64, 64]),
        samples: 16,
        precise_bn,
        ..HealthConfig::default()
    }
}

fn buffer_bits(model: &ssod::models::YoloX) -> Vec<Vec<u32>> {
    model
        .store
        .entries()
        .iter()
        .filter(|e| e.kind == TensorKind::Buffer)
        .map(|e| e.tensor.to_vec().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Two training-mode forwards at YOLOX's BN momentum (0.03), as a run's first two steps do
/// before any weight has changed much: the running statistics move 6 % of the way from
/// (mean 0, var 1) to the frames' own.
fn first_steps_statistics(model: &ssod::models::YoloX, frames: &[Frame]) {
    model.set_training(true);
    for chunk in frames.chunks(8).take(2) {
        let images: Vec<&image::RgbImage> = chunk.iter().map(|f| &f.image).collect();
        let x = images_to_input(&images, &vec![false; images.len()], InputNorm::Bgr255).unwrap();
        ssod::autograd::no_grad(|| model.forward(&x)).unwrap();
    }
    model.set_training(false);
}

#[test]
fn stale_bn_statistics_read_as_collapse_only_without_precise_bn() {
    let (frames, set) = frames();
    for seed in [1u64, 2] {
        let model = tiny_model(seed);
        first_steps_statistics(&model, &frames);
        let stale = embedding_health(&model, &set, &health_cfg(false)).unwrap();
        let before = buffer_bits(&model);
        let precise = embedding_health(&model, &set, &health_cfg(true)).unwrap();
        println!(
            "seed {seed}: std_ratio {:.2e} with the running statistics, {:.3} with precise BN",
            stale.std_ratio, precise.std_ratio
        );
        assert!(stale.collapsed, "seed {seed}: {stale:?}");
        assert!(
            !precise.collapsed && precise.std_ratio > 10.0 * stale.std_ratio,
            "seed {seed}: {precise:?}"
        );
        assert!(
            buffer_bits(&model) == before,
            "seed {seed}: the check changed the model's BN statistics"
        );
    }
}

#[test]
fn a_collapse_the_weights_cause_is_still_read() {
    let (_, set) = frames();
    let model = tiny_model(1);
    // C5's last conv outputs zeros: after its BN every image has the same C5.
    let last = model
        .store
        .entries()
        .into_iter()
        .find(|e| e.name.contains("dark5.2.conv3") && e.name.ends_with("conv.weight"))
        .expect("C5's last conv");
    last.tensor
        .assign(&Tensor::zeros(last.tensor.dims()))
        .unwrap();
    let h = embedding_health(&model, &set, &health_cfg(true)).unwrap();
    assert!(h.collapsed && h.effective_rank < 1.01, "{h:?}");
}

#[test]
fn a_run_with_the_check_computes_the_same_weights_as_one_without() {
    use ssod::pretrain::ssl::{pretrain_simsiam, SimSiamConfig};
    let (_, set) = frames();
    let run = |health: Option<HealthConfig>| {
        let model = tiny_model(4);
        let mut cfg = SimSiamConfig::default();
        cfg.common.epochs = 2;
        cfg.common.batch_size = 4;
        cfg.common.max_steps_per_epoch = Some(2);
        cfg.common.image_size = [64, 64];
        cfg.common.health = health;
        let report = pretrain_simsiam(&model, &set, &cfg).unwrap();
        let bits: Vec<Vec<u32>> = model
            .store
            .entries()
            .iter()
            .map(|e| e.tensor.to_vec().iter().map(|v| v.to_bits()).collect())
            .collect();
        let losses: Vec<u64> = report.epochs.iter().map(|e| e.loss.to_bits()).collect();
        (
            bits,
            losses,
            report.epochs.iter().all(|e| e.health.is_some()),
        )
    };
    let checked = run(Some(health_cfg(true)));
    let unchecked = run(None);
    assert!(checked.2, "the checked run has the health of every epoch");
    assert_eq!(checked.1, unchecked.1, "losses");
    assert!(
        checked.0 == unchecked.0,
        "the weights or BN statistics differ"
    );
}
