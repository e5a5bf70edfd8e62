//! Scalar math the CPU kernels share: a vectorisable `exp` and the logistic sigmoid built on it.
//! Both are `#[inline(always)]` so `simd_fn!` bodies widen them.

/// `e^x` for f32 without a libm call, so loops over activations vectorise: `2^k · p(r)` with
/// `x = k·ln2 + r`, |r| ≤ ln2/2, p a degree-6 Taylor polynomial (relative error < 2e-7 over the
/// whole range, i.e. ~1-2 ulp). Saturates to 0 below −87.3 and to f32::MAX-ish above 88.7.
///
/// Float-only arithmetic: on the baseline x86-64 target `f32::round` is a `roundf` call and
/// `as i32` a saturating scalar conversion, either of which keeps callers' loops scalar. `k` is
/// rounded half away from zero (as `round`) by the 1.5·2²³ trick (nearest-even) corrected on
/// exact ties, and `2^k` is built from the bits of `k + 127 + 1.5·2²³`.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.7);
    let t = x * std::f32::consts::LOG2_E;
    // |t| < 129: rounding with MAGIC and `t - rn` are exact.
    let rn = (t + MAGIC) - MAGIC;
    let d = t - rn;
    let up = if d == 0.5 && t > 0.0 { 1.0 } else { 0.0 };
    let down = if d == -0.5 && t < 0.0 { 1.0 } else { 0.0 };
    let k = rn + up - down;
    // Cody-Waite split of ln 2 keeps r exact enough for f32.
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k + 127 in [1, 255] sits in the low mantissa bits; the shift drops MAGIC's bits.
    let scale = f32::from_bits((k + 127.0 + MAGIC).to_bits() << 23);
    p * scale
}

/// Logistic sigmoid of one value, branch-free (vectorises) and saturating cleanly at ±∞
/// (logits near ±300 give exactly 0 or 1, never NaN).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[cfg(test)]
mod tests {
    use super::exp_fast;

    /// The same function written with `round` and an integer exponent (the form it replaced).
    fn exp_fast_reference(x: f32) -> f32 {
        let x = x.clamp(-87.3, 88.7);
        let k = (x * std::f32::consts::LOG2_E).round();
        let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        p * f32::from_bits(((k as i32 + 127) as u32) << 23)
    }

    /// Bit for bit, rounding ties (`x·log2(e)` at k + 0.5) and the clamp edges included.
    #[test]
    fn exp_fast_matches_the_rounding_form_bit_for_bit() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-3).collect();
        for k in -130..130 {
            let t = (k as f32 + 0.5) / std::f32::consts::LOG2_E;
            xs.extend([
                t,
                -t,
                t.next_up(),
                t.next_down(),
                -t.next_up(),
                -t.next_down(),
            ]);
        }
        xs.extend([0.0, -0.0, 87.3, -87.3, 88.7, -88.7, 1e30, -1e30]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, 1e-40]);
        for x in xs {
            assert_eq!(
                exp_fast(x).to_bits(),
                exp_fast_reference(x).to_bits(),
                "x = {x}"
            );
        }
        assert!(exp_fast(f32::NAN).is_nan());
    }
}
