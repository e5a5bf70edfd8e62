//! Parity cases: unary and binary elementwise ops, reductions, softmax.

use super::*;

// ---- unary ----

pub(super) fn unary_case(
    name: &'static str,
    kernels: &'static [&'static str],
    op: ew::Unary,
    lo: f32,
    hi: f32,
) -> Case {
    let dims = [3usize, 5, 7, 11];
    let n: usize = dims.iter().product();
    Case {
        name,
        kernels,
        shape: dims_str(&dims),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| vec![uniform(rng, n, lo, hi), uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(&[tensor(&inp[0], &dims)?], &inp[1], |t| match op {
                    ew::Unary::Silu => ops::silu(&t[0]),
                    ew::Unary::Sigmoid => ops::sigmoid(&t[0]),
                    ew::Unary::Relu => ops::relu(&t[0]),
                    ew::Unary::Exp => ops::exp(&t[0]),
                    ew::Unary::Log => ops::log(&t[0]),
                    ew::Unary::Sqrt => ops::sqrt(&t[0]),
                    ew::Unary::Abs => ops::abs(&t[0]),
                    ew::Unary::Clamp { min, max } => ops::clamp(&t[0], min, max),
                    ew::Unary::Pow(p) => ops::pow_scalar(&t[0], p),
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, dy) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            let ((y, dx), ms) = timed(dev, || {
                let y = ew::unary_fwd(dev, op, &x)?;
                let saved = if op.saves_output() { &y } else { &x };
                let dx = ew::unary_bwd(dev, op, &dy, saved)?;
                Ok((y, dx))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

pub(super) fn unary_cases() -> Vec<Case> {
    vec![
        // Logits up to ±30 (σ saturates; the stable forms must agree).
        unary_case(
            "silu",
            &["silu_fwd_f32", "silu_bwd_f32"],
            ew::Unary::Silu,
            -30.0,
            30.0,
        ),
        unary_case(
            "sigmoid",
            &["sigmoid_fwd_f32", "sigmoid_bwd_f32"],
            ew::Unary::Sigmoid,
            -30.0,
            30.0,
        ),
        unary_case(
            "relu",
            &["relu_fwd_f32", "relu_bwd_f32"],
            ew::Unary::Relu,
            -3.0,
            3.0,
        ),
        unary_case(
            "exp",
            &["exp_fwd_f32", "exp_bwd_f32"],
            ew::Unary::Exp,
            -5.0,
            5.0,
        ),
        unary_case(
            "log",
            &["log_fwd_f32", "log_bwd_f32"],
            ew::Unary::Log,
            0.01,
            10.0,
        ),
        unary_case(
            "sqrt",
            &["sqrt_fwd_f32", "sqrt_bwd_f32"],
            ew::Unary::Sqrt,
            0.01,
            10.0,
        ),
        unary_case(
            "abs",
            &["abs_fwd_f32", "abs_bwd_f32"],
            ew::Unary::Abs,
            -3.0,
            3.0,
        ),
        unary_case(
            "clamp [-0.5, 0.7]",
            &["clamp_fwd_f32", "clamp_bwd_f32"],
            ew::Unary::Clamp {
                min: -0.5,
                max: 0.7,
            },
            -2.0,
            2.0,
        ),
        unary_case(
            "pow 2.5",
            &["pow_fwd_f32", "pow_bwd_f32"],
            ew::Unary::Pow(2.5),
            0.1,
            3.0,
        ),
        unary_case(
            "pow 2",
            &["pow_fwd_f32", "pow_bwd_f32"],
            ew::Unary::Pow(2.0),
            -3.0,
            3.0,
        ),
    ]
}

// ---- binary ----

fn binary_cpu(op: ew::Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match op {
        ew::Binary::Add => ops::add(a, b),
        ew::Binary::Sub => ops::sub(a, b),
        ew::Binary::Mul => ops::mul(a, b),
        ew::Binary::Div => ops::div(a, b),
    }
}

pub(super) fn binary_case(
    name: &'static str,
    kernels: &'static [&'static str],
    op: ew::Binary,
    bcast: bool,
) -> Case {
    let a_dims: Vec<usize> = vec![2, 3, 5, 7];
    let b_dims: Vec<usize> = if bcast { vec![3, 1, 7] } else { a_dims.clone() };
    let (na, nb): (usize, usize) = (a_dims.iter().product(), b_dims.iter().product());
    let (ad, bd) = (a_dims.clone(), b_dims.clone());
    Case {
        name,
        kernels,
        shape: format!("{a_dims:?} ∘ {b_dims:?}"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            vec![
                uniform(rng, na, -2.0, 2.0),
                signed_away(rng, nb, 0.5, 2.0),
                uniform(rng, na, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let (a, b) = (tensor(&inp[0], &ad)?, tensor(&inp[1], &bd)?);
            if op == ew::Binary::Div && !bcast {
                let ((y, g), ms) =
                    timed_cpu(|| with_grads(&[a, b], &inp[2], |t| ops::div(&t[0], &t[1])))?;
                return Ok(out(
                    vec![("y", y), ("ga", g[0].clone()), ("gb", g[1].clone())],
                    ms,
                ));
            }
            let (y, ms) = timed_cpu(|| binary_cpu(op, &a, &b))?;
            Ok(out(vec![("y", y.to_vec())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (a, b, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            if bcast {
                let ((y, _), ms) =
                    timed(dev, || ew::binary_bcast(dev, op, &a, &a_dims, &b, &b_dims))?;
                return Ok(out(vec![("y", dev.download(&y)?)], ms));
            }
            if op == ew::Binary::Div {
                let ((y, ga, gb), ms) = timed(dev, || {
                    let y = ew::binary(dev, op, &a, &b)?;
                    let (ga, gb) = ew::div_bwd(dev, &g, &a, &b)?;
                    Ok((y, ga, gb))
                })?;
                return Ok(out(
                    vec![
                        ("y", dev.download(&y)?),
                        ("ga", dev.download(&ga)?),
                        ("gb", dev.download(&gb)?),
                    ],
                    ms,
                ));
            }
            let (y, ms) = timed(dev, || ew::binary(dev, op, &a, &b))?;
            Ok(out(vec![("y", dev.download(&y)?)], ms))
        }),
    }
}

pub(super) fn binary_cases() -> Vec<Case> {
    use ew::Binary::*;
    vec![
        binary_case("add", &["add_f32"], Add, false),
        binary_case("sub", &["sub_f32"], Sub, false),
        binary_case("mul", &["mul_f32"], Mul, false),
        binary_case("div (+ backward)", &["div_f32", "div_bwd_f32"], Div, false),
        binary_case("add broadcast", &["add_bcast_f32"], Add, true),
        binary_case("sub broadcast", &["sub_bcast_f32"], Sub, true),
        binary_case("mul broadcast", &["mul_bcast_f32"], Mul, true),
        binary_case("div broadcast", &["div_bcast_f32"], Div, true),
    ]
}

// ---- reduce ----

pub(super) fn reduce_cases() -> Vec<Case> {
    let n = 100_003usize;
    let dims = vec![3usize, 5, 7, 9];
    let total: usize = dims.iter().product();
    let mut v = vec![Case {
        name: "sum_all",
        kernels: &["sum_partial_f32"],
        shape: format!("[{n}]"),
        // 1e-3: 1e5 mixed-sign values; the CPU sums in f64, the GPU in an f32 tree, and the
        // result is a small difference of large partial sums.
        tol: 1e-3,
        measure: Measure::PerElement,
        make: Box::new(move |rng| vec![uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let (s, ms) = timed_cpu(|| ops::sum_all(&Tensor::from_vec(inp[0].clone(), [n])?))?;
            Ok(out(vec![("sum", s.to_vec())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let x = dev.upload(&inp[0])?;
            let (s, ms) = timed(dev, || reduce::sum_all(dev, &x))?;
            Ok(out(vec![("sum", dev.download(&s)?)], ms))
        }),
    }];
    for (name, axes, kept) in [
        ("sum over axes 0,2", vec![0isize, 2], vec![1usize, 5, 1, 9]),
        ("sum over axes 1,3", vec![1, 3], vec![3, 1, 7, 1]),
    ] {
        let (d1, d2) = (dims.clone(), dims.clone());
        let kept2 = kept.clone();
        v.push(Case {
            name,
            kernels: &["sum_keepdim_f32"],
            shape: format!("{dims:?} -> {kept:?}"),
            tol: 1e-4,
            measure: Measure::PerElement,
            make: Box::new(move |rng| vec![uniform(rng, total, -1.0, 1.0)]),
            cpu: Box::new(move |inp| {
                let (s, ms) = timed_cpu(|| {
                    ops::sum(&Tensor::from_vec(inp[0].clone(), d1.clone())?, &axes, true)
                })?;
                Ok(out(vec![("sum", s.to_vec())], ms))
            }),
            gpu: Box::new(move |dev, inp| {
                let x = dev.upload(&inp[0])?;
                let (s, ms) = timed(dev, || reduce::sum_keepdim(dev, &x, &d2, &kept2))?;
                Ok(out(vec![("sum", dev.download(&s)?)], ms))
            }),
        });
    }
    v
}

// ---- softmax ----

pub(super) fn softmax_case(
    name: &'static str,
    kernels: &'static [&'static str],
    log: bool,
) -> Case {
    let dims = [3usize, 7, 5];
    let (outer, len, inner) = (3usize, 7usize, 5usize);
    let n = outer * len * inner;
    Case {
        name,
        kernels,
        shape: format!("{dims:?} axis 1"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| vec![uniform(rng, n, -20.0, 20.0), uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(&[tensor(&inp[0], &dims)?], &inp[1], |t| {
                    if log {
                        ops::log_softmax(&t[0], 1)
                    } else {
                        ops::softmax(&t[0], 1)
                    }
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, dy) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            // The backward kernel gets the reference's y (the forward is checked by row `y`):
            // with logits up to ±20, dx = y·(dy − Σdy·y) cancels, and expf's last-ulp
            // differences in y would otherwise be measured as the backward's error.
            let xt = Tensor::from_vec(inp[0].clone(), dims.to_vec())?;
            let y_ref = if log {
                ops::log_softmax(&xt, 1)?
            } else {
                ops::softmax(&xt, 1)?
            };
            let y_ref = dev.upload(&y_ref.to_vec())?;
            let ((y, dx), ms) = timed(dev, || {
                let y = softmax::fwd(dev, &x, outer, len, inner, log)?;
                let dx = softmax::bwd(dev, &dy, &y_ref, outer, len, inner, log)?;
                Ok((y, dx))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}
