//! The vectorisable exp and sigmoid used by SiLU/sigmoid/BCE: accuracy against f64 over the
//! whole f32 range and clean saturation (no NaN at ±∞).

use ssod::ops::{exp_fast, sigmoid_scalar};

#[test]
fn exp_fast_is_within_two_ulp_of_f64_exp() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        let rel = ((exp_fast(x) as f64 - want) / want).abs();
        worst = worst.max(rel);
        x += 0.0137;
    }
    println!("exp_fast worst relative error {worst:e}");
    assert!(worst < 3e-7, "worst relative error {worst}");
}

#[test]
fn sigmoid_saturates_without_nan() {
    for (x, want) in [
        (-300.0f32, 0.0f32),
        (300.0, 1.0),
        (f32::NEG_INFINITY, 0.0),
        (f32::INFINITY, 1.0),
        (0.0, 0.5),
    ] {
        let s = sigmoid_scalar(x);
        assert!(
            (s - want).abs() < 1e-30 || (want == 0.5 && s == 0.5),
            "sigmoid({x}) = {s}"
        );
    }
    // Mid range against f64.
    for i in -200..=200 {
        let x = i as f32 * 0.1;
        let want = 1.0 / (1.0 + (-(x as f64)).exp());
        assert!(
            (sigmoid_scalar(x) as f64 - want).abs() < 1e-7,
            "sigmoid({x})"
        );
    }
}
