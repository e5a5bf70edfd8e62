//! softmax/log_softmax, the losses and cosine similarity: forward against f64 references,
//! backward against central finite differences; an extreme-input case (logits ±300) for
//! sigmoid, SiLU and BCE.

mod common;

use common::{bcast_at, c, check, ravel, unravel, x, xu};
use ssod::ops;
use ssod::Tensor;

/// (log_)softmax along axis `a` of `shape`, in f64.
fn softmax_ref(shape: &[usize], a: usize, log: bool) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let shape = shape.to_vec();
    move |v: &[Vec<f64>]| {
        (0..v[0].len())
            .map(|p| {
                let mut idx = unravel(p, &shape);
                let lse = (0..shape[a])
                    .map(|i| {
                        idx[a] = i;
                        v[0][ravel(&idx, &shape)].exp()
                    })
                    .sum::<f64>()
                    .ln();
                if log {
                    v[0][p] - lse
                } else {
                    (v[0][p] - lse).exp()
                }
            })
            .collect()
    }
}

#[test]
fn softmax_cases() {
    for (shape, axis, a) in [
        (&[3usize, 4][..], 0isize, 0usize),
        (&[3, 4], -1, 1),
        (&[2, 3, 4], 1, 1),
        (&[2, 3, 4], -1, 2),
        (&[2, 3, 4], 0, 0),
    ] {
        check(
            &format!("softmax {shape:?} axis {axis}"),
            &[x(shape, 10 + a as u64)],
            |t| ops::softmax(&t[0], axis),
            softmax_ref(shape, a, false),
        );
        check(
            &format!("log_softmax {shape:?} axis {axis}"),
            &[x(shape, 20 + a as u64)],
            |t| ops::log_softmax(&t[0], axis),
            softmax_ref(shape, a, true),
        );
    }
    // Large logits do not overflow (max-subtracted): the values of softmax([1, 0, −1999]),
    // 1/(1 + e⁻¹) = 0.7310586 and e⁻¹/(1 + e⁻¹) = 0.2689414, and the tiny one is 0.
    let big = Tensor::from_vec(vec![1000.0, 999.0, -1000.0], [3]).unwrap();
    let y = ops::softmax(&big, 0).unwrap().to_vec();
    assert!(
        (y[0] - 0.731_058_6).abs() < 1e-6 && (y[1] - 0.268_941_4).abs() < 1e-6 && y[2] == 0.0,
        "softmax of large logits: {y:?}"
    );
    check(
        "softmax of transposed view",
        &[x(&[4, 3], 30)],
        |t| ops::softmax(&ops::transpose(&t[0], 0, 1)?, -1),
        |v| {
            let tr: Vec<f64> = (0..12).map(|p| v[0][(p % 4) * 3 + p / 4]).collect();
            softmax_ref(&[3, 4], 1, false)(&[tr])
        },
    );
}

/// With logits ~1000 the log-sum-exp `m + ln Σ e^(x−m)` rounded to f32 loses ~1e-4 of absolute
/// precision before it is subtracted; `(x − m) − ln Σ` (PyTorch) keeps full precision.
#[test]
fn softmax_large_logits_precision() {
    let big = Tensor::from_vec(vec![1000.0, 999.0, -1000.0], [3]).unwrap();
    // Derivation: ln(e^0 + e^-1 + e^-2000) = ln(1 + e^-1) = 0.31326169, so
    // log_softmax = [-0.31326169, -1.31326169, -2000.31326169] and softmax = [0.73105858, 0.26894142, 0].
    let want = [
        -0.313_261_687_518_222_8_f64,
        -1.313_261_687_518_222_8,
        -2_000.313_261_687_518_2,
    ];
    let ls = ops::log_softmax(&big, 0).unwrap().to_vec();
    common::assert_close("log_softmax [1000, 999, -1000]", &ls[..2], &want[..2], 1e-6);
    // -2000.31: f32 spacing there is 1.2e-4.
    common::assert_close(
        "log_softmax [1000, 999, -1000]",
        &ls[2..],
        &want[2..],
        1.2e-4,
    );
    let sm = ops::softmax(&big, 0).unwrap().to_vec();
    common::assert_close("softmax [1000, 999, -1000]", &sm, &want.map(f64::exp), 1e-6);
    let ce = ops::cross_entropy(
        &big.reshape([1, 3]).unwrap(),
        &Tensor::from_vec(vec![0.0], [1]).unwrap(),
    )
    .unwrap();
    common::assert_close(
        "cross_entropy [1000, 999, -1000] label 0",
        &ce.to_vec(),
        &[-want[0]],
        1e-6,
    );
}

fn bce(x: f64, t: f64) -> f64 {
    // −[t·log σ(x) + (1 − t)·log(1 − σ(x))], written stably.
    x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
}

#[test]
fn bce_with_logits_cases() {
    let s = [3, 5];
    check(
        "bce_with_logits",
        &[x(&s, 40), xu(&s, 0.0, 1.0, 41)],
        |t| ops::bce_with_logits(&t[0], &t[1], None),
        |v| v[0].iter().zip(&v[1]).map(|(&a, &b)| bce(a, b)).collect(),
    );
    check(
        "bce_with_logits weighted",
        &[x(&s, 42), xu(&s, 0.0, 1.0, 43), xu(&s, 0.1, 2.0, 44)],
        |t| ops::bce_with_logits(&t[0], &t[1], Some(&t[2])),
        |v| (0..15).map(|i| bce(v[0][i], v[1][i]) * v[2][i]).collect(),
    );
    check(
        "bce_with_logits hard targets, const",
        &[
            xu(&s, -8.0, 8.0, 45),
            c([0.0, 1.0, 1.0, 0.0, 1.0].repeat(3), &s),
        ],
        |t| ops::bce_with_logits(&t[0], &t[1], None),
        |v| v[0].iter().zip(&v[1]).map(|(&a, &b)| bce(a, b)).collect(),
    );
}

/// Logits ±300: every value and gradient is finite and equals its exact limit.
#[test]
fn extreme_logits() {
    let xs = vec![300.0, 300.0, -300.0, -300.0, 300.0, -300.0];
    let ts = vec![1.0, 0.0, 0.0, 1.0, 0.25, 0.25];
    let lt = Tensor::from_vec(xs.clone(), [6])
        .unwrap()
        .with_requires_grad(true);
    let tt = Tensor::from_vec(ts.clone(), [6]).unwrap();
    let loss = ops::bce_with_logits(&lt, &tt, None).unwrap();
    // Limits: x→+∞: loss → x(1 − t); x→−∞: loss → −x·t (log1p(e^−300) = 0 in f32).
    // 300·(1−1)=0, 300·1=300, 300·0=0, 300·1=300, 300·0.75=225, 300·0.25=75.
    assert_eq!(
        loss.to_vec(),
        vec![0.0, 300.0, 0.0, 300.0, 225.0, 75.0],
        "bce at ±300"
    );
    loss.sum_all().unwrap().backward().unwrap();
    // d/dx = σ(x) − t with σ(300) = 1, σ(−300) = 0 (exactly, in f32).
    assert_eq!(
        lt.grad().unwrap().to_vec(),
        vec![0.0, 1.0, 0.0, -1.0, 0.75, -0.25],
        "bce gradient at ±300"
    );

    let x2 = Tensor::from_vec(vec![300.0, -300.0], [2])
        .unwrap()
        .with_requires_grad(true);
    let s = ops::sigmoid(&x2).unwrap();
    assert_eq!(s.to_vec(), vec![1.0, 0.0], "sigmoid at ±300");
    s.sum_all().unwrap().backward().unwrap();
    // σ' = σ(1 − σ) = 0 at both ends.
    assert_eq!(
        x2.grad().unwrap().to_vec(),
        vec![0.0, 0.0],
        "sigmoid gradient at ±300"
    );

    let x3 = Tensor::from_vec(vec![300.0, -300.0], [2])
        .unwrap()
        .with_requires_grad(true);
    let y = ops::silu(&x3).unwrap();
    // silu(300) = 300·1; silu(−300) = −300·e^−300 = −0 in f32.
    assert_eq!(y.to_vec(), vec![300.0, 0.0], "silu at ±300");
    y.sum_all().unwrap().backward().unwrap();
    // silu' = σ(1 + x(1 − σ)): at 300, 1·(1 + 300·0) = 1; at −300, 0·(...) = 0.
    let g = x3.grad().unwrap().to_vec();
    assert!(
        g.iter().all(|v| v.is_finite()),
        "silu gradient not finite: {g:?}"
    );
    assert_eq!(g, vec![1.0, 0.0], "silu gradient at ±300");
}

#[test]
fn cross_entropy_cases() {
    let labels = vec![2.0, 0.0, 4.0, 2.0];
    let l2 = labels.clone();
    check(
        "cross_entropy [4,5]",
        &[x(&[4, 5], 50), c(labels, &[4])],
        |t| ops::cross_entropy(&t[0], &t[1]),
        move |v| {
            let lsm = softmax_ref(&[4, 5], 1, true)(&v[..1]);
            (0..4).map(|i| -lsm[i * 5 + l2[i] as usize]).collect()
        },
    );
    check(
        "cross_entropy [1,2]",
        &[x(&[1, 2], 51), c(vec![1.0], &[1])],
        |t| ops::cross_entropy(&t[0], &t[1]),
        |v| {
            let lsm = softmax_ref(&[1, 2], 1, true)(&v[..1]);
            vec![-lsm[1]]
        },
    );
    let e = ops::cross_entropy(
        &Tensor::zeros([2, 3]),
        &Tensor::from_vec(vec![0.0, 3.0], [2]).unwrap(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("cross_entropy"),
        "bad label error: {e}"
    );
}

#[test]
fn l1_and_smooth_l1() {
    let s = [3, 4];
    check(
        "l1_loss",
        &[x(&s, 60), x(&s, 61)],
        |t| ops::l1_loss(&t[0], &t[1]),
        |v| v[0].iter().zip(&v[1]).map(|(a, b)| (a - b).abs()).collect(),
    );
    let sl1 = |beta: f64| {
        move |v: &[Vec<f64>]| {
            v[0].iter()
                .zip(&v[1])
                .map(|(a, b)| {
                    let d = (a - b).abs();
                    if d < beta {
                        0.5 * d * d / beta
                    } else {
                        d - 0.5 * beta
                    }
                })
                .collect::<Vec<f64>>()
        }
    };
    // beta 1 on N(0, 2) differences: both branches taken (checked below).
    let (a, b) = (x(&s, 62), x(&s, 63));
    let d: Vec<f32> = a
        .values
        .iter()
        .zip(&b.values)
        .map(|(p, q)| (p - q).abs())
        .collect();
    assert!(
        d.iter().any(|&v| v < 1.0) && d.iter().any(|&v| v > 1.0),
        "need both branches: {d:?}"
    );
    check(
        "smooth_l1 beta 1 (both branches)",
        &[a, b],
        |t| ops::smooth_l1_loss(&t[0], &t[1], 1.0),
        sl1(1.0),
    );
    check(
        "smooth_l1 beta 10 (quadratic)",
        &[x(&s, 64), x(&s, 65)],
        |t| ops::smooth_l1_loss(&t[0], &t[1], 10.0),
        sl1(10.0),
    );
    check(
        "smooth_l1 beta 0.01 (linear)",
        &[x(&s, 66), x(&s, 67)],
        |t| ops::smooth_l1_loss(&t[0], &t[1], 0.01),
        sl1(0.01),
    );
}

/// Cosine similarity in f64 along axis `a` of the broadcast shape `out`.
fn cos_ref(
    sa: &[usize],
    sb: &[usize],
    out: &[usize],
    a: usize,
) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let (sa, sb, out) = (sa.to_vec(), sb.to_vec(), out.to_vec());
    move |v: &[Vec<f64>]| {
        let red: Vec<usize> = out
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == a { 1 } else { d })
            .collect();
        (0..red.iter().product())
            .map(|p| {
                let mut idx = unravel(p, &red);
                let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
                for i in 0..out[a] {
                    idx[a] = i;
                    let (x, y) = (bcast_at(&v[0], &sa, &idx), bcast_at(&v[1], &sb, &idx));
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                dot / (na.sqrt().max(1e-8) * nb.sqrt().max(1e-8))
            })
            .collect()
    }
}

#[test]
fn cosine_similarity_cases() {
    check(
        "cosine_similarity [4,5] axis -1",
        &[x(&[4, 5], 70), x(&[4, 5], 71)],
        |t| ops::cosine_similarity(&t[0], &t[1], -1),
        cos_ref(&[4, 5], &[4, 5], &[4, 5], 1),
    );
    check(
        "cosine_similarity [2,3,4] axis 1",
        &[x(&[2, 3, 4], 72), x(&[2, 3, 4], 73)],
        |t| ops::cosine_similarity(&t[0], &t[1], 1),
        cos_ref(&[2, 3, 4], &[2, 3, 4], &[2, 3, 4], 1),
    );
    check(
        "cosine_similarity one [5] vs many [4,5]",
        &[x(&[5], 74), x(&[4, 5], 75)],
        |t| ops::cosine_similarity(&t[0], &t[1], -1),
        cos_ref(&[5], &[4, 5], &[4, 5], 1),
    );
    check(
        "cosine_similarity many [4,5] vs one [1,5]",
        &[x(&[4, 5], 76), x(&[1, 5], 77)],
        |t| ops::cosine_similarity(&t[0], &t[1], -1),
        cos_ref(&[4, 5], &[1, 5], &[4, 5], 1),
    );
    check(
        "cosine_similarity [2,3,1] vs [1,3,4] axis 1",
        &[x(&[2, 3, 1], 78), x(&[1, 3, 4], 79)],
        |t| ops::cosine_similarity(&t[0], &t[1], 1),
        cos_ref(&[2, 3, 1], &[1, 3, 4], &[2, 3, 4], 1),
    );
    // Scale invariance, hand-derived: cos([1,0],[3,3]) = 3/(1·√18) = 1/√2.
    let y = ops::cosine_similarity(
        &Tensor::from_vec(vec![1.0, 0.0], [2]).unwrap(),
        &Tensor::from_vec(vec![3.0, 3.0], [2]).unwrap(),
        0,
    )
    .unwrap();
    assert!(
        (y.item().unwrap() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
        "cos = {:?}",
        y
    );
    // A zero vector gives 0 (its norm clamped at eps = 1e-8), and the gradient
    // of the clamped form z·b / (eps·‖b‖): b / (eps·‖b‖), large but finite.
    let z = Tensor::zeros([3]).with_requires_grad(true);
    let y = ops::cosine_similarity(&z, &Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]).unwrap(), 0)
        .unwrap();
    assert_eq!(y.item().unwrap(), 0.0);
    y.backward().unwrap();
    let g = z.grad().unwrap().to_vec();
    let norm_b = 14f64.sqrt();
    for (k, &gk) in g.iter().enumerate() {
        let want = (k + 1) as f64 / (1e-8 * norm_b);
        assert!(
            (gk as f64 - want).abs() <= 1e-6 * want,
            "zero-vector gradient {g:?}: element {k} should be {want}"
        );
    }
}
