//! conv2d, batch_norm2d and the pooling ops on odd shapes (5×7 maps, batch 1 and 3, stride 2,
//! padding 0/1, groups 1, 2 and = channels): forward against f64 loops, backward against central
//! finite differences.

mod common;

use common::{assert_close, c, check, x, xu};
use ssod::ops::{self, BatchNormParams, Conv2dParams, Pool2dParams};
use ssod::Tensor;

/// Plain conv2d (cross-correlation, zero padding, groups) in f64.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    (n, ci, h, wd): (usize, usize, usize, usize),
    (k, kh, kw): (usize, usize, usize),
    stride: usize,
    pad: usize,
    groups: usize,
) -> Vec<f64> {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (wd + 2 * pad - kw) / stride + 1;
    let (cg, kg) = (ci / groups, k / groups);
    let mut y = vec![0f64; n * k * ho * wo];
    for ni in 0..n {
        for ko in 0..k {
            let g = ko / kg;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = b.map_or(0.0, |b| b[ko]);
                    for cc in 0..cg {
                        let cin = g * cg + cc;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((ni * ci + cin) * h + iy as usize) * wd + ix as usize;
                                let wi = ((ko * cg + cc) * kh + ky) * kw + kx;
                                s += x[xi] * w[wi];
                            }
                        }
                    }
                    y[((ni * k + ko) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    y
}

/// One conv2d case: batch n, channels c -> k, kernel, stride, padding, groups, bias, on 5×7.
#[allow(clippy::too_many_arguments)]
fn conv_case(
    n: usize,
    ci: usize,
    k: usize,
    ks: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    bias: bool,
) {
    let (h, w) = (5, 7);
    let name = format!("conv2d n{n} c{ci} k{k} {ks}x{ks} s{stride} p{pad} g{groups} bias={bias}");
    let seed = (n * 1000 + ci * 100 + k * 10 + ks + stride * 7 + pad * 3 + groups * 11) as u64;
    let mut inputs = vec![
        x(&[n, ci, h, w], seed),
        x(&[k, ci / groups, ks, ks], seed + 1),
    ];
    if bias {
        inputs.push(x(&[k], seed + 2));
    }
    let p = Conv2dParams {
        stride,
        padding: pad,
        groups,
    };
    check(
        &name,
        &inputs,
        |t| ops::conv2d(&t[0], &t[1], t.get(2), p),
        |v| {
            conv_ref(
                &v[0],
                &v[1],
                v.get(2).map(|b| &b[..]),
                (n, ci, h, w),
                (k, ks, ks),
                stride,
                pad,
                groups,
            )
        },
    );
}

#[test]
fn conv2d_cases() {
    conv_case(1, 3, 4, 3, 1, 1, 1, true);
    conv_case(1, 3, 4, 3, 1, 0, 1, false);
    conv_case(3, 3, 4, 3, 2, 1, 1, false);
    conv_case(3, 3, 4, 3, 2, 0, 1, true);
    conv_case(1, 4, 6, 3, 1, 1, 2, true);
    conv_case(3, 4, 2, 3, 2, 0, 2, false);
    conv_case(1, 4, 4, 3, 1, 1, 4, true); // depthwise: groups = channels
    conv_case(3, 4, 4, 3, 2, 1, 4, false); // depthwise, stride 2
    conv_case(3, 2, 4, 3, 1, 1, 2, true); // groups = channels, channel multiplier 2
    conv_case(3, 4, 8, 1, 1, 0, 1, false); // 1x1
    conv_case(1, 4, 4, 1, 2, 0, 2, true); // 1x1, stride 2, groups 2
    conv_case(3, 2, 3, 1, 1, 1, 1, true); // 1x1 with padding 1 (a border of bias-only outputs)
}

/// Non-square kernels (3×1 and 1×3), stride 2 and padding 1.
#[test]
fn conv2d_non_square_kernels() {
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        groups: 1,
    };
    for (kh, kw) in [(3, 1), (1, 3)] {
        check(
            &format!("conv2d n3 c2 k3 {kh}x{kw} s2 p1"),
            &[
                x(&[3, 2, 5, 7], 40 + kh as u64),
                x(&[3, 2, kh, kw], 50 + kw as u64),
                x(&[3], 60),
            ],
            |t| ops::conv2d(&t[0], &t[1], Some(&t[2]), p),
            |v| {
                conv_ref(
                    &v[0],
                    &v[1],
                    Some(&v[2]),
                    (3, 2, 5, 7),
                    (3, kh, kw),
                    2,
                    1,
                    1,
                )
            },
        );
    }
}

/// conv2d with a non-contiguous input (a permuted view) and a weight that does not require grad.
#[test]
fn conv2d_view_input_and_frozen_weight() {
    // t[0] is [1, 5, 7, 3] (NHWC); the op sees its NCHW permutation.
    let wv = common::randn(4 * 3 * 9, 7);
    let w64: Vec<f64> = wv.iter().map(|&v| v as f64).collect();
    check(
        "conv2d of NHWC->NCHW permute, frozen weight",
        &[x(&[1, 5, 7, 3], 6), c(wv.clone(), &[4, 3, 3, 3])],
        |t| {
            ops::conv2d(
                &t[0].permute(&[0, 3, 1, 2])?,
                &t[1],
                None,
                Conv2dParams {
                    stride: 1,
                    padding: 1,
                    groups: 1,
                },
            )
        },
        |v| {
            let mut nchw = vec![0f64; 105];
            for cc in 0..3 {
                for p in 0..35 {
                    nchw[cc * 35 + p] = v[0][p * 3 + cc];
                }
            }
            conv_ref(&nchw, &w64, None, (1, 3, 5, 7), (4, 3, 3), 1, 1, 1)
        },
    );
}

/// Batch norm in f64: per channel mean and variance of the batch (biased) in training, of the
/// running stats in eval.
fn bn_ref(
    v: &[Vec<f64>],
    (n, ch, plane): (usize, usize, usize),
    stats: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Vec<f64> {
    let (x, g, b) = (&v[0], &v[1], &v[2]);
    let mut y = vec![0f64; x.len()];
    for cc in 0..ch {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..plane).map(move |p| (i, p)))
            .map(|(i, p)| x[(i * ch + cc) * plane + p])
            .collect();
        let (mean, var) = match stats {
            Some((m, s)) => (m[cc], s[cc]),
            None => {
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                (
                    m,
                    vals.iter().map(|a| (a - m).powi(2)).sum::<f64>() / vals.len() as f64,
                )
            }
        };
        for i in 0..n {
            for p in 0..plane {
                let at = (i * ch + cc) * plane + p;
                y[at] = (x[at] - mean) / (var + eps).sqrt() * g[cc] + b[cc];
            }
        }
    }
    y
}

/// `fused`: the op is `batch_norm_silu2d` and the reference applies SiLU to the BN output.
fn bn_case(n: usize, ch: usize, training: bool, fused: bool) {
    let (h, w) = (5, 7);
    let p = BatchNormParams {
        training,
        momentum: 0.1,
        eps: 1e-3,
    };
    let rm: Vec<f32> = (0..ch).map(|i| 0.1 * i as f32 - 0.2).collect();
    let rv: Vec<f32> = (0..ch).map(|i| 0.5 + 0.25 * i as f32).collect();
    let (rm64, rv64): (Vec<f64>, Vec<f64>) = (
        rm.iter().map(|&v| v as f64).collect(),
        rv.iter().map(|&v| v as f64).collect(),
    );
    let name = format!("batch_norm2d n{n} c{ch} training={training} fused_silu={fused}");
    // x has a per-channel offset so the mean is not ~0.
    let mut xin = x(&[n, ch, h, w], 200 + n as u64);
    xin.values
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = *v * 1.5 + ((i / (h * w)) % ch) as f32);
    check(
        &name,
        &[xin, xu(&[ch], 0.5, 1.5, 201), x(&[ch], 202)],
        |t| {
            let (m, v) = (
                Tensor::from_vec(rm.clone(), [ch])?,
                Tensor::from_vec(rv.clone(), [ch])?,
            );
            if fused {
                ops::batch_norm_silu2d(&t[0], &t[1], &t[2], &m, &v, p)
            } else {
                ops::batch_norm2d(&t[0], &t[1], &t[2], &m, &v, p)
            }
        },
        |v| {
            let y = bn_ref(
                v,
                (n, ch, h * w),
                if training { None } else { Some((&rm64, &rv64)) },
                1e-3,
            );
            if fused {
                y.iter().map(|&a| a / (1.0 + (-a).exp())).collect()
            } else {
                y
            }
        },
    );
}

#[test]
fn batch_norm2d_cases() {
    for fused in [false, true] {
        bn_case(3, 4, true, fused);
        bn_case(1, 3, true, fused);
        bn_case(3, 4, false, fused);
        bn_case(1, 2, false, fused);
    }
}

/// Running stats after one training step: running = (1 − m)·running + m·batch, with the
/// unbiased batch variance (PyTorch); eval mode leaves them alone.
#[test]
fn batch_norm2d_running_stats() {
    let (n, ch, h, w) = (3, 2, 5, 7);
    let xv = common::randn(n * ch * h * w, 300);
    let xt = Tensor::from_vec(xv.clone(), [n, ch, h, w]).unwrap();
    let (g, b) = (Tensor::ones([ch]), Tensor::zeros([ch]));
    let rm = Tensor::from_vec(vec![0.5, -1.0], [ch]).unwrap();
    let rv = Tensor::from_vec(vec![2.0, 0.25], [ch]).unwrap();
    let m = 0.03;
    ops::batch_norm2d(
        &xt,
        &g,
        &b,
        &rm,
        &rv,
        BatchNormParams {
            training: true,
            momentum: m,
            eps: 1e-3,
        },
    )
    .unwrap();
    let count = (n * h * w) as f64;
    let (mut want_m, mut want_v) = (vec![], vec![]);
    for (cc, (r_m, r_v)) in [(0.5f64, 2.0f64), (-1.0, 0.25)].into_iter().enumerate() {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..h * w).map(move |p| (i, p)))
            .map(|(i, p)| xv[(i * ch + cc) * h * w + p] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / count;
        let unbiased = vals.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (count - 1.0);
        want_m.push((1.0 - m as f64) * r_m + m as f64 * mean);
        want_v.push((1.0 - m as f64) * r_v + m as f64 * unbiased);
    }
    assert_close("running_mean after one step", &rm.to_vec(), &want_m, 1e-6);
    assert_close("running_var after one step", &rv.to_vec(), &want_v, 1e-6);
    // Eval: stats unchanged.
    ops::batch_norm2d(
        &xt,
        &g,
        &b,
        &rm,
        &rv,
        BatchNormParams {
            training: false,
            momentum: m,
            eps: 1e-3,
        },
    )
    .unwrap();
    assert_close("running_mean after eval", &rm.to_vec(), &want_m, 1e-6);
    assert_close("running_var after eval", &rv.to_vec(), &want_v, 1e-6);
}

/// Eval mode with running statistics away from the defaults (means and betas in ±0.5, as in a
/// trained or user-initialised checkpoint) on small activations, as deep in a randomly
/// initialised YOLOX, where `bn ≈ −mean·inv·gamma + beta` and the input's own part is small:
/// `batch_norm2d` and the fused `batch_norm_silu2d` per element against f64, to f32 rounding
/// (`|ours − ref| ≤ 8·2⁻²⁴·(|x̂·gamma| + |beta|)`, about 8 roundings of the terms' size), not
/// the generic 1e-5 of `check`.
#[test]
fn batch_norm_eval_shifted_statistics_to_f32_rounding() {
    let (n, ch, h, w) = (2, 6, 5, 7);
    let plane = h * w;
    let eps = 1e-3f32;
    let p = BatchNormParams {
        training: false,
        momentum: 0.03,
        eps,
    };
    let unit = 2f64.powi(-24);
    // (gamma, running_var): YOLOX's defaults, then random ones.
    let affine = [
        (vec![1.0; ch], vec![1.0; ch]),
        (
            common::uniform(ch, 0.5, 1.5, 402),
            common::uniform(ch, 0.05, 2.0, 403),
        ),
    ];
    for (k, (gv, vv)) in affine.into_iter().enumerate() {
        let mv = common::uniform(ch, -0.5, 0.5, 400 + 10 * k as u64);
        let bv = common::uniform(ch, -0.5, 0.5, 401 + 10 * k as u64);
        // Per plane a different activation scale: 1e-3 (deep layers), 0.1, 3; plus planes that
        // sit on the running mean (x − mean cancels).
        let mut xv = common::randn(n * ch * plane, 404 + k as u64);
        for (i, pl) in xv.chunks_mut(plane).enumerate() {
            let c = i % ch;
            match i % 4 {
                0 => pl.iter_mut().for_each(|v| *v *= 1e-3),
                1 => pl.iter_mut().for_each(|v| *v *= 0.1),
                2 => pl.iter_mut().for_each(|v| *v *= 3.0),
                _ => pl.iter_mut().for_each(|v| *v = mv[c] + *v * 1e-3),
            }
        }
        let t = |v: &Vec<f32>, dims: &[usize]| Tensor::from_vec(v.clone(), dims.to_vec()).unwrap();
        let (xt, gt, bt) = (t(&xv, &[n, ch, h, w]), t(&gv, &[ch]), t(&bv, &[ch]));
        let (mt, vt) = (t(&mv, &[ch]), t(&vv, &[ch]));
        let y = ops::batch_norm2d(&xt, &gt, &bt, &mt, &vt, p)
            .unwrap()
            .to_vec();
        let ys = ops::batch_norm_silu2d(&xt, &gt, &bt, &mt, &vt, p)
            .unwrap()
            .to_vec();
        let (mut worst, mut worst_silu) = (0f64, 0f64);
        for (i, &xi) in xv.iter().enumerate() {
            let c = (i / plane) % ch;
            let inv = 1.0 / (vv[c] as f64 + eps as f64).sqrt();
            let term = (xi as f64 - mv[c] as f64) * inv * gv[c] as f64;
            let bn = term + bv[c] as f64;
            let silu = bn / (1.0 + (-bn).exp());
            let size = term.abs() + (bv[c] as f64).abs();
            for (ours, want, worst) in [(y[i], bn, &mut worst), (ys[i], silu, &mut worst_silu)] {
                let err = (ours as f64 - want).abs() / (unit * size);
                *worst = worst.max(err);
                assert!(
                    err <= 8.0,
                    "affine {k}, element {i}: ours {ours}, f64 {want}: {err:.2} roundings of {size:.3e}"
                );
            }
        }
        println!(
            "affine {k}: batch_norm2d within {worst:.2}, batch_norm_silu2d within {worst_silu:.2} \
             roundings (2^-24 of |x̂·gamma| + |beta|)"
        );
    }
}

/// Pooling reference: max (padding = −∞) or average (padding counts as zero, divisor k²).
fn pool_ref(
    x: &[f64],
    (planes, h, w): (usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
    max: bool,
) -> Vec<f64> {
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let mut y = vec![];
    for pl in 0..planes {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = x[pl * h * w + iy as usize * w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                y.push(if max { acc } else { acc / (k * k) as f64 });
            }
        }
    }
    y
}

fn pool_case(n: usize, ch: usize, k: usize, s: usize, p: usize, max: bool) {
    let (h, w) = (5, 7);
    let name = format!(
        "{} n{n} c{ch} k{k} s{s} p{p}",
        if max { "max_pool2d" } else { "avg_pool2d" }
    );
    let params = Pool2dParams {
        kernel: k,
        stride: s,
        padding: p,
    };
    check(
        &name,
        &[x(&[n, ch, h, w], (n * 31 + k * 7 + s * 3 + p) as u64)],
        |t| {
            if max {
                ops::max_pool2d(&t[0], params)
            } else {
                ops::avg_pool2d(&t[0], params)
            }
        },
        |v| pool_ref(&v[0], (n * ch, h, w), k, s, p, max),
    );
}

#[test]
fn pool_cases() {
    pool_case(1, 2, 5, 1, 2, true); // SPP
    pool_case(3, 2, 5, 1, 2, true);
    pool_case(3, 2, 2, 2, 0, true);
    pool_case(1, 3, 3, 2, 1, true);
    pool_case(3, 2, 2, 2, 0, false);
    pool_case(1, 3, 3, 2, 1, false);
    pool_case(3, 2, 3, 1, 1, false);
}

/// max_pool2d on a view: the input is an NHWC tensor permuted to NCHW.
#[test]
fn max_pool2d_of_view() {
    check(
        "max_pool2d of permute",
        &[x(&[2, 5, 7, 3], 400)],
        |t| {
            ops::max_pool2d(
                &t[0].permute(&[0, 3, 1, 2])?,
                Pool2dParams {
                    kernel: 5,
                    stride: 1,
                    padding: 2,
                },
            )
        },
        |v| {
            let mut nchw = vec![0f64; v[0].len()];
            for (i, &a) in v[0].iter().enumerate() {
                let (ni, rest) = (i / 105, i % 105);
                let (p, cc) = (rest / 3, rest % 3);
                nchw[(ni * 3 + cc) * 35 + p] = a;
            }
            pool_ref(&nchw, (6, 5, 7), 5, 1, 2, true)
        },
    );
}

#[test]
fn global_avg_pool2d_and_upsample() {
    check(
        "global_avg_pool2d n3 c2",
        &[x(&[3, 2, 5, 7], 500)],
        |t| ops::global_avg_pool2d(&t[0]),
        |v| {
            v[0].chunks(35)
                .map(|p| p.iter().sum::<f64>() / 35.0)
                .collect()
        },
    );
    check(
        "upsample_nearest2x n3 c2",
        &[x(&[3, 2, 5, 7], 501)],
        |t| {
            let y = ops::upsample_nearest2x(&t[0])?;
            assert_eq!(y.dims(), [3, 2, 10, 14]);
            Ok(y)
        },
        |v| {
            let mut y = vec![];
            for pl in 0..6 {
                for oy in 0..10 {
                    for ox in 0..14 {
                        y.push(v[0][pl * 35 + (oy / 2) * 7 + ox / 2]);
                    }
                }
            }
            y
        },
    );
}

/// max_pool2d's gradient goes to the first maximal element on ties (documented): a window of
/// equal values sends its whole gradient to its top-left element.
#[test]
fn max_pool2d_tie_goes_to_first() {
    let xt = Tensor::from_vec(vec![1.0; 4], [1, 1, 2, 2])
        .unwrap()
        .with_requires_grad(true);
    ops::max_pool2d(
        &xt,
        Pool2dParams {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
    )
    .unwrap()
    .sum_all()
    .unwrap()
    .backward()
    .unwrap();
    assert_eq!(xt.grad().unwrap().to_vec(), vec![1.0, 0.0, 0.0, 0.0]);
}

/// The BN kernels run AVX-512, AVX2 or baseline code depending on the CPU
/// (`backend::cpu::simd`): all three must give the same bits, forward and backward, in training
/// mode and in eval mode with non-default running statistics, so results do not depend on the
/// machine. Sizes with remainders after the 8-lane loops.
#[test]
fn batch_norm_silu_same_bits_at_every_simd_level() {
    use ssod::backend::cpu::simd::{force_level, SimdLevel};
    let (n, ch, h, w) = (3, 5, 9, 11);
    let run = |level: SimdLevel| -> Vec<Vec<u32>> {
        force_level(Some(level));
        let xt = Tensor::from_vec(common::randn(n * ch * h * w, 310), [n, ch, h, w])
            .unwrap()
            .with_requires_grad(true);
        let g = Tensor::from_vec(common::randn(ch, 311), [ch])
            .unwrap()
            .with_requires_grad(true);
        let b = Tensor::from_vec(common::randn(ch, 312), [ch])
            .unwrap()
            .with_requires_grad(true);
        let (rm, rv) = (Tensor::zeros([ch]), Tensor::ones([ch]));
        let dy = Tensor::from_vec(common::randn(n * ch * h * w, 313), [n, ch, h, w]).unwrap();
        let y = ops::batch_norm_silu2d(&xt, &g, &b, &rm, &rv, BatchNormParams::default()).unwrap();
        ops::sum_all(&ops::mul(&y, &dy).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect();
        let mut out = vec![
            bits(&y),
            bits(&xt.grad().unwrap()),
            bits(&g.grad().unwrap()),
            bits(&b.grad().unwrap()),
            bits(&rm),
            bits(&rv),
        ];
        // Eval mode with running statistics away from the defaults.
        let rm = Tensor::from_vec(common::uniform(ch, -0.5, 0.5, 314), [ch]).unwrap();
        let rv = Tensor::from_vec(common::uniform(ch, 0.1, 2.0, 315), [ch]).unwrap();
        let xe = xt.detach().with_requires_grad(true);
        let eval = BatchNormParams {
            training: false,
            ..BatchNormParams::default()
        };
        let y = ops::batch_norm_silu2d(&xe, &g, &b, &rm, &rv, eval).unwrap();
        ops::sum_all(&ops::mul(&y, &dy).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        out.extend([bits(&y), bits(&xe.grad().unwrap())]);
        out
    };
    let baseline = run(SimdLevel::Baseline);
    let widest = run(SimdLevel::Avx512);
    let avx2 = run(SimdLevel::Avx2);
    force_level(None);
    assert!(
        baseline == widest && baseline == avx2,
        "BN results differ between SIMD levels"
    );
}
