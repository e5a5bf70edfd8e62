//! Elementwise unary ops, their scalar forms, and broadcasting binary ops: forward against f64
//! references, backward against central finite differences (tests/common).

mod common;

use common::{bcast_at, check, unravel, x, xu, xv, Input};
use ssod::ops;
use ssod::Tensor;

/// Reference of a unary op applied elementwise.
fn un(f: impl Fn(f64) -> f64) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    move |v: &[Vec<f64>]| v[0].iter().map(|&a| f(a)).collect()
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Values in ±[0.2, 2.5] (away from the kinks of relu/abs/clamp at 0).
fn away_from_zero(shape: &[usize], seed: u64) -> Input {
    let mut i = xu(shape, 0.2, 2.5, seed);
    let signs = common::randn(i.values.len(), seed + 1);
    i.values
        .iter_mut()
        .zip(signs)
        .for_each(|(v, s)| *v *= s.signum());
    i
}

#[test]
fn unary_ops() {
    let s = [3, 4, 5];
    check("neg", &[x(&s, 1)], |t| ops::neg(&t[0]), un(|a| -a));
    check("exp", &[x(&s, 2)], |t| ops::exp(&t[0]), un(f64::exp));
    check(
        "log",
        &[xu(&s, 0.1, 5.0, 3)],
        |t| ops::log(&t[0]),
        un(f64::ln),
    );
    check(
        "sqrt",
        &[xu(&s, 0.1, 5.0, 4)],
        |t| ops::sqrt(&t[0]),
        un(f64::sqrt),
    );
    check(
        "abs",
        &[away_from_zero(&s, 5)],
        |t| ops::abs(&t[0]),
        un(f64::abs),
    );
    check(
        "relu",
        &[away_from_zero(&s, 6)],
        |t| ops::relu(&t[0]),
        un(|a| a.max(0.0)),
    );
    check("sigmoid", &[x(&s, 7)], |t| ops::sigmoid(&t[0]), un(sigmoid));
    check("tanh", &[x(&s, 8)], |t| ops::tanh(&t[0]), un(f64::tanh));
    check(
        "silu",
        &[x(&s, 9)],
        |t| ops::silu(&t[0]),
        un(|a| a * sigmoid(a)),
    );
    check(
        "silu wide",
        &[xu(&s, -12.0, 12.0, 10)],
        |t| ops::silu(&t[0]),
        un(|a| a * sigmoid(a)),
    );
    // Values in ±[0.2, 2.5]: the bounds ±1 are hit only with probability ~0.
    check(
        "clamp",
        &[away_from_zero(&s, 11)],
        |t| ops::clamp(&t[0], -1.0, 1.0),
        un(|a| a.clamp(-1.0, 1.0)),
    );
    check(
        "clamp min only",
        &[x(&s, 12)],
        |t| ops::clamp(&t[0], 0.3, f32::INFINITY),
        un(|a| a.max(0.3)),
    );
    check(
        "pow 2",
        &[x(&s, 13)],
        |t| ops::pow_scalar(&t[0], 2.0),
        un(|a| a * a),
    );
    check(
        "pow 3",
        &[x(&s, 14)],
        |t| ops::pow_scalar(&t[0], 3.0),
        un(|a| a.powi(3)),
    );
    check(
        "pow 0.5",
        &[xu(&s, 0.1, 4.0, 15)],
        |t| ops::pow_scalar(&t[0], 0.5),
        un(f64::sqrt),
    );
    check(
        "pow -1.5",
        &[xu(&s, 0.3, 4.0, 16)],
        |t| ops::pow_scalar(&t[0], -1.5),
        un(|a| a.powf(-1.5)),
    );
}

#[test]
fn scalar_forms() {
    let s = [2, 3, 4];
    check(
        "add_scalar",
        &[x(&s, 20)],
        |t| ops::add_scalar(&t[0], 1.5),
        un(|a| a + 1.5),
    );
    check(
        "sub_scalar",
        &[x(&s, 21)],
        |t| ops::sub_scalar(&t[0], 1.5),
        un(|a| a - 1.5),
    );
    check(
        "rsub_scalar",
        &[x(&s, 22)],
        |t| ops::rsub_scalar(&t[0], 1.5),
        un(|a| 1.5 - a),
    );
    check(
        "mul_scalar",
        &[x(&s, 23)],
        |t| ops::mul_scalar(&t[0], -2.5),
        un(|a| -2.5 * a),
    );
    check(
        "div_scalar",
        &[x(&s, 24)],
        |t| ops::div_scalar(&t[0], 4.0),
        un(|a| a / 4.0),
    );
    check(
        "rdiv_scalar",
        &[xu(&s, 0.5, 3.0, 25)],
        |t| ops::rdiv_scalar(&t[0], 3.0),
        un(|a| 3.0 / a),
    );
}

/// Ops on a non-contiguous input (a transposed view): the backward must land in the input's
/// logical index space.
#[test]
fn unary_on_views() {
    // out[i, j] = f(in[j, i]) for in [4, 3].
    let tr = |f: fn(f64) -> f64| {
        move |v: &[Vec<f64>]| {
            (0..12)
                .map(|p| f(v[0][(p % 4) * 3 + p / 4]))
                .collect::<Vec<f64>>()
        }
    };
    check(
        "exp of transpose",
        &[x(&[4, 3], 30)],
        |t| ops::exp(&ops::transpose(&t[0], 0, 1)?),
        tr(f64::exp),
    );
    check(
        "silu of transpose",
        &[x(&[4, 3], 31)],
        |t| ops::silu(&ops::transpose(&t[0], 0, 1)?),
        tr(|a| a * sigmoid(a)),
    );
}

/// Reference of a broadcasting binary op.
fn bin(sa: &[usize], sb: &[usize], f: fn(f64, f64) -> f64) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let (sa, sb) = (sa.to_vec(), sb.to_vec());
    let rank = sa.len().max(sb.len());
    let out: Vec<usize> = (0..rank)
        .map(|i| {
            let da = if i + sa.len() >= rank {
                sa[i + sa.len() - rank]
            } else {
                1
            };
            let db = if i + sb.len() >= rank {
                sb[i + sb.len() - rank]
            } else {
                1
            };
            da.max(db)
        })
        .collect();
    move |v: &[Vec<f64>]| {
        let n: usize = out.iter().product();
        (0..n)
            .map(|p| {
                let idx = unravel(p, &out);
                f(bcast_at(&v[0], &sa, &idx), bcast_at(&v[1], &sb, &idx))
            })
            .collect()
    }
}

type BinOp = fn(&Tensor, &Tensor) -> ssod::Result<Tensor>;

const PAIRS: &[(&[usize], &[usize])] = &[
    (&[2, 3, 4], &[2, 3, 4]),
    (&[2, 3, 4], &[3, 1]),
    (&[2, 3, 4], &[1]),
    (&[2, 3, 4], &[2, 1, 4]),
    (&[3, 1], &[2, 3, 4]),
    (&[1], &[2, 3, 4]),
];

fn check_binary(name: &str, op: BinOp, f: fn(f64, f64) -> f64, positive_b: bool) {
    for (k, (sa, sb)) in PAIRS.iter().enumerate() {
        let a = x(sa, 40 + k as u64);
        let b = if positive_b {
            xu(sb, 0.5, 2.0, 60 + k as u64)
        } else {
            x(sb, 60 + k as u64)
        };
        check(
            &format!("{name} {sa:?} with {sb:?}"),
            &[a, b],
            |t| op(&t[0], &t[1]),
            bin(sa, sb, f),
        );
    }
}

#[test]
fn binary_broadcasting() {
    // A 0-d scalar tensor against a matrix, and a transposed view against a row.
    check(
        "mul [] with [2,3]",
        &[x(&[], 110), x(&[2, 3], 111)],
        |t| ops::mul(&t[0], &t[1]),
        bin(&[], &[2, 3], |a, b| a * b),
    );
    check(
        "sub [2,3] with []",
        &[x(&[2, 3], 112), x(&[], 113)],
        |t| ops::sub(&t[0], &t[1]),
        bin(&[2, 3], &[], |a, b| a - b),
    );
    check(
        "add transpose([3,4]) with [3]",
        &[x(&[3, 4], 114), x(&[3], 115)],
        |t| ops::add(&ops::transpose(&t[0], 0, 1)?, &t[1]),
        |v| {
            (0..12)
                .map(|p| v[0][(p % 3) * 4 + p / 3] + v[1][p % 3])
                .collect()
        },
    );
    check_binary("add", ops::add, |a, b| a + b, false);
    check_binary("sub", ops::sub, |a, b| a - b, false);
    check_binary("mul", ops::mul, |a, b| a * b, false);
    check_binary("div", ops::div, |a, b| a / b, true);
}

/// maximum/minimum with values that never tie: a takes odd multiples of 0.1, b even ones.
fn no_tie(shape: &[usize], odd: bool, seed: u64) -> Input {
    let n: usize = shape.iter().product();
    let mut r = common::Rng::new(seed);
    let v = (0..n)
        .map(|_| {
            let k = (r.uniform() * 40.0) as i64 - 20;
            (0.1 * (2 * k + odd as i64) as f64) as f32
        })
        .collect();
    xv(v, shape)
}

#[test]
fn maximum_minimum_broadcasting() {
    for (k, (sa, sb)) in PAIRS.iter().enumerate() {
        let (a, b) = (
            no_tie(sa, true, 80 + k as u64),
            no_tie(sb, false, 90 + k as u64),
        );
        check(
            &format!("maximum {sa:?} with {sb:?}"),
            &[a.clone(), b.clone()],
            |t| ops::maximum(&t[0], &t[1]),
            bin(sa, sb, f64::max),
        );
        check(
            &format!("minimum {sa:?} with {sb:?}"),
            &[a, b],
            |t| ops::minimum(&t[0], &t[1]),
            bin(sa, sb, f64::min),
        );
    }
}

/// On a tie the whole gradient goes to `a` (documented in binary.rs): d/da = 1, d/db = 0.
#[test]
fn maximum_tie_goes_to_a() {
    let a = Tensor::from_vec(vec![1.0, 2.0], [2])
        .unwrap()
        .with_requires_grad(true);
    let b = Tensor::from_vec(vec![1.0, 3.0], [2])
        .unwrap()
        .with_requires_grad(true);
    ops::maximum(&a, &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    // Element 0 ties (goes to a); element 1 has b larger.
    assert_eq!(a.grad().unwrap().to_vec(), vec![1.0, 0.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![0.0, 1.0]);
}

/// Methods on Tensor forward to the ops.
#[test]
fn tensor_methods() {
    let s = [2, 3];
    check(
        "Tensor::add",
        &[x(&s, 100), x(&s, 101)],
        |t| t[0].add(&t[1]),
        bin(&s, &s, |a, b| a + b),
    );
    check(
        "Tensor::sub",
        &[x(&s, 102), x(&s, 103)],
        |t| t[0].sub(&t[1]),
        bin(&s, &s, |a, b| a - b),
    );
    check(
        "Tensor::mul",
        &[x(&s, 104), x(&s, 105)],
        |t| t[0].mul(&t[1]),
        bin(&s, &s, |a, b| a * b),
    );
    check(
        "Tensor::div",
        &[x(&s, 106), xu(&s, 0.5, 2.0, 107)],
        |t| t[0].div(&t[1]),
        bin(&s, &s, |a, b| a / b),
    );
}

/// Inputs large enough (≥ 2^15 values) to take the parallel (rayon) paths of the elementwise
/// maps. Finite differences over 40k inputs would be slow, so the gradient is checked against the
/// analytic derivative in f64: d/dx Σ f(x)·r = f'(x)·r.
#[test]
fn large_inputs_take_the_parallel_path() {
    let n = 40_000;
    let xv = common::randn(n, 900);
    let rv = common::randn(n, 901);
    let bv = common::uniform(n, 0.5, 2.0, 902);
    let xt = Tensor::from_vec(xv.clone(), [200, 200])
        .unwrap()
        .with_requires_grad(true);
    let bt = Tensor::from_vec(bv.clone(), [200, 200])
        .unwrap()
        .with_requires_grad(true);
    let rt = Tensor::from_vec(rv.clone(), [200, 200]).unwrap();
    // y = silu(x) / b
    let y = ops::div(&ops::silu(&xt).unwrap(), &bt).unwrap();
    ops::sum_all(&ops::mul(&y, &rt).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let (yv, gx, gb) = (
        y.to_vec(),
        xt.grad().unwrap().to_vec(),
        bt.grad().unwrap().to_vec(),
    );
    for i in 0..n {
        let (xa, b, r) = (xv[i] as f64, bv[i] as f64, rv[i] as f64);
        let s = sigmoid(xa);
        let want_y = xa * s / b;
        let want_gx = r * s * (1.0 + xa * (1.0 - s)) / b;
        let want_gb = -r * xa * s / (b * b);
        for (what, o, w) in [
            ("y", yv[i], want_y),
            ("dx", gx[i], want_gx),
            ("db", gb[i], want_gb),
        ] {
            assert!(
                (o as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "silu/div large: {what}[{i}]: ours {o} vs reference {w}"
            );
        }
    }
}
