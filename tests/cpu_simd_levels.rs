//! A whole YOLOX forward and backward gives the same bits at every CPU SIMD level (AVX-512,
//! AVX2 + FMA, baseline; `backend::cpu::simd`): the loss, every parameter's gradient and the BN
//! running statistics. Levels the CPU lacks run at the widest it has, so on a CPU without
//! AVX-512 two of the three runs are the same level (the test says which it compared).
//! `SimdLevel` is process-wide, which is why this is its own test binary.

use ssod::backend::cpu::simd::{force_level, level, SimdLevel};
use ssod::models::{YoloX, YoloXConfig};
use ssod::Tensor;

/// Loss bits, then (name, value bits) of every parameter's gradient and every buffer.
fn step_bits(simd: SimdLevel) -> (SimdLevel, u32, Vec<(String, Vec<u32>)>) {
    force_level(Some(simd));
    let ran_at = level();
    // Width 0.25: dark2's 1×1 convs have ≤ 64 channels (the pointwise weight-gradient kernel)
    // and the deeper ones more (the gemm paths).
    let mut cfg = YoloXConfig::custom(0.33, 0.25, false, 2);
    cfg.seed = 5;
    let model = YoloX::new(cfg).unwrap();
    model.set_training(true);
    let images = ssod::ops::mul_scalar(&Tensor::rand(vec![2, 3, 96, 64], 9), 255.0).unwrap();
    let out = model.forward(&images).unwrap();
    let loss = out.mul(&out).unwrap().mean_all().unwrap();
    loss.backward().unwrap();
    let mut bits = Vec::new();
    for e in model.store.entries() {
        let values = match e.tensor.grad() {
            Some(g) => g.to_vec(),
            None => e.tensor.to_vec(),
        };
        bits.push((e.name, values.iter().map(|v| v.to_bits()).collect()));
    }
    force_level(None);
    (ran_at, loss.to_vec()[0].to_bits(), bits)
}

#[test]
fn a_training_step_has_the_same_bits_at_every_simd_level() {
    let runs: Vec<_> = [SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Baseline]
        .into_iter()
        .map(step_bits)
        .collect();
    let levels: Vec<SimdLevel> = runs.iter().map(|r| r.0).collect();
    println!("compared levels {levels:?}");
    let (_, loss0, grads0) = &runs[0];
    for (at, loss, grads) in &runs[1..] {
        assert_eq!(
            loss, loss0,
            "loss differs between {:?} and {at:?}",
            levels[0]
        );
        for ((name, a), (_, b)) in grads0.iter().zip(grads) {
            assert!(
                a == b,
                "{name} differs between {:?} and {at:?} ({} of {} values)",
                levels[0],
                a.iter().zip(b).filter(|(x, y)| x != y).count(),
                a.len()
            );
        }
    }
    // The comparison is between distinct levels wherever the CPU has more than one.
    assert!(levels.contains(&SimdLevel::Baseline));
}
