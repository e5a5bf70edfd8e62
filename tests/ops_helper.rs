//! The gradient-check helper itself must be able to fail: an op with a wrong backward rule, a
//! forward that disagrees with its reference, or a gradient that is off by a small relative amount
//! must each panic with a message that names the op and the index.

mod common;

use common::{check, x};
use ssod::autograd::record;
use ssod::ops;
use ssod::Tensor;

/// `y = x²` whose backward returns `factor·x` (correct for factor = 2).
fn square_with_backward(xt: &Tensor, factor: f32) -> ssod::Result<Tensor> {
    let y = Tensor::from_vec(
        xt.to_vec().iter().map(|v| v * v).collect(),
        xt.shape().clone(),
    )?;
    let saved = xt.detach();
    record("square", y, &[xt], move |g| {
        Ok(vec![Some(ops::mul(g, &ops::mul_scalar(&saved, factor)?)?)])
    })
}

#[test]
fn helper_accepts_a_correct_backward() {
    check(
        "square (correct)",
        &[x(&[3, 4], 1)],
        |t| square_with_backward(&t[0], 2.0),
        |v| v[0].iter().map(|a| a * a).collect(),
    );
}

#[test]
#[should_panic(expected = "square (wrong): gradient mismatch for input 0")]
fn helper_rejects_a_wrong_backward() {
    check(
        "square (wrong)",
        &[x(&[3, 4], 1)],
        |t| square_with_backward(&t[0], 1.0),
        |v| v[0].iter().map(|a| a * a).collect(),
    );
}

#[test]
#[should_panic(expected = "gradient mismatch")]
fn helper_rejects_a_gradient_off_by_three_percent() {
    check(
        "square (3% off)",
        &[x(&[3, 4], 1)],
        |t| square_with_backward(&t[0], 2.06),
        |v| v[0].iter().map(|a| a * a).collect(),
    );
}

#[test]
#[should_panic(expected = "exp (vs wrong reference): forward mismatch at output index")]
fn helper_rejects_a_wrong_forward() {
    check(
        "exp (vs wrong reference)",
        &[x(&[5], 2)],
        |t| ops::exp(&t[0]),
        |v| v[0].iter().map(|a| a.exp() * (1.0 + 1e-4)).collect(),
    );
}
