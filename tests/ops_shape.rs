//! Reductions, matmul/linear, shape and view ops (and chains of views, where stride bugs live),
//! indexing: forward against f64 references, backward against central finite differences.

mod common;

use common::{c, check, ravel, unravel, x};
use ssod::ops;
use ssod::{Shape, Tensor};

/// Reference of a pure data-movement op: `out[o] = in[f(o)]` for every multi-index `o` of `out`.
fn moved(
    in_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(&[usize]) -> Vec<usize>,
) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let (is, os) = (in_shape.to_vec(), out_shape.to_vec());
    move |v: &[Vec<f64>]| {
        (0..os.iter().product())
            .map(|p| v[0][ravel(&f(&unravel(p, &os)), &is)])
            .collect()
    }
}

/// Reference of sum (or mean) over `axes` (output in row-major order of the kept axes).
fn reduce_ref(shape: &[usize], axes: &[usize], mean: bool) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let shape = shape.to_vec();
    let axes = axes.to_vec();
    move |v: &[Vec<f64>]| {
        let kept: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(a, &d)| if axes.contains(&a) { 1 } else { d })
            .collect();
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        let mut out = vec![0f64; kept.iter().product()];
        for (p, &val) in v[0].iter().enumerate() {
            let mut idx = unravel(p, &shape);
            axes.iter().for_each(|&a| idx[a] = 0);
            out[ravel(&idx, &kept)] += val;
        }
        if mean {
            out.iter_mut().for_each(|o| *o /= count as f64);
        }
        out
    }
}

#[test]
fn sum_mean_over_axes() {
    let s = [2, 3, 4];
    for (axes, iaxes) in [
        (&[0isize][..], &[0usize][..]),
        (&[1], &[1]),
        (&[-1], &[2]),
        (&[0, 2], &[0, 2]),
        (&[2, 0, 1], &[0, 1, 2]),
    ] {
        for keepdim in [true, false] {
            let want: Vec<usize> = if keepdim {
                s.iter()
                    .enumerate()
                    .map(|(a, &d)| if iaxes.contains(&a) { 1 } else { d })
                    .collect()
            } else {
                s.iter()
                    .enumerate()
                    .filter(|(a, _)| !iaxes.contains(a))
                    .map(|(_, &d)| d)
                    .collect()
            };
            let w2 = want.clone();
            check(
                &format!("sum axes {axes:?} keepdim={keepdim}"),
                &[x(&s, 1)],
                |t| {
                    let y = ops::sum(&t[0], axes, keepdim)?;
                    assert_eq!(y.dims(), &w2[..], "sum output shape");
                    Ok(y)
                },
                reduce_ref(&s, iaxes, false),
            );
            check(
                &format!("mean axes {axes:?} keepdim={keepdim}"),
                &[x(&s, 2)],
                |t| {
                    let y = ops::mean(&t[0], axes, keepdim)?;
                    assert_eq!(y.dims(), &want[..], "mean output shape");
                    Ok(y)
                },
                reduce_ref(&s, iaxes, true),
            );
        }
    }
    check(
        "sum_all",
        &[x(&s, 3)],
        |t| ops::sum_all(&t[0]),
        |v| vec![v[0].iter().sum()],
    );
    check(
        "mean_all",
        &[x(&s, 4)],
        |t| ops::mean_all(&t[0]),
        |v| vec![v[0].iter().sum::<f64>() / 24.0],
    );
    check(
        "Tensor::sum_all",
        &[x(&s, 5)],
        |t| t[0].sum_all(),
        |v| vec![v[0].iter().sum()],
    );
    check(
        "Tensor::mean_all",
        &[x(&s, 6)],
        |t| t[0].mean_all(),
        |v| vec![v[0].iter().sum::<f64>() / 24.0],
    );
    // A reduction of a view (transpose) reads the logical order.
    check(
        "sum axis 1 of transpose",
        &[x(&[4, 3], 7)],
        |t| ops::sum(&ops::transpose(&t[0], 0, 1)?, &[1], false),
        |v| {
            (0..3)
                .map(|j| (0..4).map(|i| v[0][i * 3 + j]).sum())
                .collect()
        },
    );
    check(
        "sum_to_shape [2,3,4] -> [3,1]",
        &[x(&s, 8)],
        |t| ops::sum_to_shape(&t[0], &Shape(vec![3, 1])),
        |v| {
            (0..3)
                .map(|j| {
                    (0..2)
                        .flat_map(|i| (0..4).map(move |k| (i, k)))
                        .map(|(i, k)| v[0][(i * 3 + j) * 4 + k])
                        .sum()
                })
                .collect()
        },
    );
}

#[test]
fn max_axis_cases() {
    let s = [2, 3, 4];
    for (axis, a) in [(0isize, 0usize), (1, 1), (-1, 2)] {
        for keepdim in [true, false] {
            let out: Vec<usize> = s
                .iter()
                .enumerate()
                .map(|(i, &d)| if i == a { 1 } else { d })
                .collect();
            check(
                &format!("max_axis {axis} keepdim={keepdim}"),
                &[x(&s, 10 + a as u64)],
                |t| ops::max_axis(&t[0], axis, keepdim),
                |v| {
                    (0..out.iter().product())
                        .map(|p| {
                            let mut idx = unravel(p, &out);
                            (0..s[a])
                                .map(|i| {
                                    idx[a] = i;
                                    v[0][ravel(&idx, &s)]
                                })
                                .fold(f64::NEG_INFINITY, f64::max)
                        })
                        .collect()
                },
            );
        }
    }
}

/// Batched matmul reference: `a [B, m, k] · b [B, k, n]` (b shared when `b_batched` is false).
fn matmul_ref(
    bsz: usize,
    m: usize,
    k: usize,
    n: usize,
    b_batched: bool,
) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    move |v: &[Vec<f64>]| {
        let mut out = vec![0f64; bsz * m * n];
        for bi in 0..bsz {
            let bo = if b_batched { bi * k * n } else { 0 };
            for i in 0..m {
                for j in 0..n {
                    out[(bi * m + i) * n + j] = (0..k)
                        .map(|t| v[0][(bi * m + i) * k + t] * v[1][bo + t * n + j])
                        .sum();
                }
            }
        }
        out
    }
}

#[test]
fn matmul_cases() {
    check(
        "matmul 2-D [3,5]x[5,4]",
        &[x(&[3, 5], 20), x(&[5, 4], 21)],
        |t| ops::matmul(&t[0], &t[1]),
        matmul_ref(1, 3, 5, 4, false),
    );
    check(
        "matmul batched [2,3,5]x[2,5,4]",
        &[x(&[2, 3, 5], 22), x(&[2, 5, 4], 23)],
        |t| ops::matmul(&t[0], &t[1]),
        matmul_ref(2, 3, 5, 4, true),
    );
    check(
        "matmul batched, shared b [2,3,5]x[5,4]",
        &[x(&[2, 3, 5], 24), x(&[5, 4], 25)],
        |t| ops::matmul(&t[0], &t[1]),
        matmul_ref(2, 3, 5, 4, false),
    );
    check(
        "matmul 4-D [2,2,3,5]x[2,2,5,1]",
        &[x(&[2, 2, 3, 5], 26), x(&[2, 2, 5, 1], 27)],
        |t| ops::matmul(&t[0], &t[1]),
        matmul_ref(4, 3, 5, 1, true),
    );
    // a · bᵀ through a transposed view of b [4, 5].
    check(
        "matmul with transposed view",
        &[x(&[3, 5], 28), x(&[4, 5], 29)],
        |t| ops::matmul(&t[0], &ops::transpose(&t[1], 0, 1)?),
        |v| {
            (0..12)
                .map(|p| {
                    (0..5)
                        .map(|t| v[0][(p / 4) * 5 + t] * v[1][(p % 4) * 5 + t])
                        .sum()
                })
                .collect()
        },
    );
}

fn linear_ref(rows: usize, inf: usize, outf: usize) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    move |v: &[Vec<f64>]| {
        (0..rows * outf)
            .map(|p| {
                let (r, o) = (p / outf, p % outf);
                (0..inf)
                    .map(|i| v[0][r * inf + i] * v[1][o * inf + i])
                    .sum::<f64>()
                    + v.get(2).map_or(0.0, |b| b[o])
            })
            .collect()
    }
}

#[test]
fn linear_cases() {
    check(
        "linear with bias [4,5]->3",
        &[x(&[4, 5], 30), x(&[3, 5], 31), x(&[3], 32)],
        |t| ops::linear(&t[0], &t[1], Some(&t[2])),
        linear_ref(4, 5, 3),
    );
    check(
        "linear no bias [4,5]->3",
        &[x(&[4, 5], 33), x(&[3, 5], 34)],
        |t| ops::linear(&t[0], &t[1], None),
        linear_ref(4, 5, 3),
    );
    check(
        "linear 3-D x [2,3,5]->4",
        &[x(&[2, 3, 5], 35), x(&[4, 5], 36), x(&[4], 37)],
        |t| ops::linear(&t[0], &t[1], Some(&t[2])),
        linear_ref(6, 5, 4),
    );
    check(
        "linear 1-D x [5]->2",
        &[x(&[5], 38), x(&[2, 5], 39)],
        |t| ops::linear(&t[0], &t[1], None),
        linear_ref(1, 5, 2),
    );
    // x a permuted (non-contiguous) view.
    check(
        "linear of permuted x",
        &[x(&[5, 4], 40), x(&[3, 5], 41), x(&[3], 42)],
        |t| ops::linear(&ops::transpose(&t[0], 0, 1)?, &t[1], Some(&t[2])),
        |v| {
            let xt: Vec<f64> = (0..20).map(|p| v[0][(p % 5) * 4 + p / 5]).collect();
            linear_ref(4, 5, 3)(&[xt, v[1].clone(), v[2].clone()])
        },
    );
}

/// Empty pieces take no room (and the next piece lands where they would have), and an empty
/// result is an empty tensor of the right shape.
#[test]
fn cat_with_empty_pieces() {
    let a = Tensor::from_vec((0..8).map(|v| v as f32).collect(), [2, 1, 4]).unwrap();
    let empty = Tensor::zeros([2, 0, 4]);
    let b = Tensor::from_vec((8..16).map(|v| v as f32).collect(), [2, 1, 4]).unwrap();
    let y = ops::cat(&[empty.clone(), a, empty.clone(), b], 1).unwrap();
    assert_eq!(y.dims(), [2, 2, 4]);
    let want: Vec<f32> = [0..4, 8..12, 4..8, 12..16]
        .into_iter()
        .flatten()
        .map(|v| v as f32)
        .collect();
    assert_eq!(y.to_vec(), want);
    let none = ops::cat(&[empty.clone(), empty], 1).unwrap();
    assert_eq!(none.dims(), [2, 0, 4]);
    assert!(none.to_vec().is_empty());
}

#[test]
fn cat_and_split() {
    // cat along axis 1 of [2,1,4], [2,3,4], [2,2,4] -> [2,6,4].
    check(
        "cat axis 1",
        &[x(&[2, 1, 4], 50), x(&[2, 3, 4], 51), x(&[2, 2, 4], 52)],
        |t| ops::cat(t, 1),
        |v| {
            let mut out = vec![];
            for i in 0..2 {
                for (part, len) in [(0, 1), (1, 3), (2, 2)] {
                    out.extend_from_slice(&v[part][i * len * 4..(i + 1) * len * 4]);
                }
            }
            out
        },
    );
    check(
        "cat axis -1",
        &[x(&[2, 3], 53), x(&[2, 2], 54)],
        |t| ops::cat(t, -1),
        |v| {
            vec![
                v[0][0], v[0][1], v[0][2], v[1][0], v[1][1], v[0][3], v[0][4], v[0][5], v[1][2],
                v[1][3],
            ]
        },
    );
    check(
        "cat axis 0 with a view",
        &[x(&[2, 3], 55), x(&[3, 2], 56)],
        |t| ops::cat(&[t[0].clone(), ops::transpose(&t[1], 0, 1)?], 0),
        |v| {
            let mut out = v[0].clone();
            out.extend((0..6).map(|p| v[1][(p % 3) * 2 + p / 3]));
            out
        },
    );
    // The same tensor twice in one cat: both pieces' gradients accumulate into it.
    check(
        "cat of x with itself",
        &[x(&[2, 3], 59)],
        |t| ops::cat(&[t[0].clone(), t[0].clone()], 0),
        |v| [v[0].clone(), v[0].clone()].concat(),
    );
    let s = [2, 6, 3];
    for (k, (start, len)) in [(0usize, 1usize), (1, 3), (4, 2)].into_iter().enumerate() {
        check(
            &format!("split [1,3,2] axis 1 piece {k}"),
            &[x(&s, 57)],
            |t| {
                let pieces = ops::split(&t[0], &[1, 3, 2], 1)?;
                assert_eq!(pieces.len(), 3);
                Ok(pieces[k].clone())
            },
            moved(&s, &[2, len, 3], move |o| vec![o[0], o[1] + start, o[2]]),
        );
    }
    // Split then cat in another order: every piece's gradient lands at its place.
    check(
        "split then cat reversed",
        &[x(&s, 58)],
        |t| {
            let p = ops::split(&t[0], &[1, 3, 2], -2)?;
            ops::cat(&[p[2].clone(), p[0].clone(), p[1].clone()], 1)
        },
        moved(&s, &s, |o| vec![o[0], [4, 5, 0, 1, 2, 3][o[1]], o[2]]),
    );
}

#[test]
fn views() {
    let s = [2, 3, 4];
    check(
        "reshape [2,3,4] -> [4,6]",
        &[x(&s, 60)],
        |t| ops::reshape(&t[0], [4, 6]),
        |v| v[0].clone(),
    );
    check(
        "Tensor::reshape",
        &[x(&s, 61)],
        |t| t[0].reshape([6, 4]),
        |v| v[0].clone(),
    );
    check(
        "permute [2,0,1]",
        &[x(&s, 62)],
        |t| ops::permute(&t[0], &[2, 0, 1]),
        moved(&s, &[4, 2, 3], |o| vec![o[1], o[2], o[0]]),
    );
    check(
        "Tensor::permute [1,2,0]",
        &[x(&s, 63)],
        |t| t[0].permute(&[1, 2, 0]),
        moved(&s, &[3, 4, 2], |o| vec![o[2], o[0], o[1]]),
    );
    check(
        "transpose 0,-1",
        &[x(&s, 64)],
        |t| ops::transpose(&t[0], 0, -1),
        moved(&s, &[4, 3, 2], |o| vec![o[2], o[1], o[0]]),
    );
    check(
        "narrow axis 2 1..4",
        &[x(&s, 65)],
        |t| ops::narrow(&t[0], 2, 1, 3),
        moved(&s, &[2, 3, 3], |o| vec![o[0], o[1], o[2] + 1]),
    );
    check(
        "narrow axis 0 1..2",
        &[x(&s, 66)],
        |t| ops::narrow(&t[0], 0, 1, 1),
        moved(&s, &[1, 3, 4], |o| vec![o[0] + 1, o[1], o[2]]),
    );
    check(
        "slice_step axis 1 0:3:2",
        &[x(&s, 67)],
        |t| ops::slice_step(&t[0], 1, 0, 3, 2),
        moved(&s, &[2, 2, 4], |o| vec![o[0], 2 * o[1], o[2]]),
    );
    check(
        "slice_step end past dim 1:99:3",
        &[x(&s, 68)],
        |t| ops::slice_step(&t[0], -1, 1, 99, 3),
        moved(&s, &[2, 3, 1], |o| vec![o[0], o[1], 1 + 3 * o[2]]),
    );
    check(
        "unsqueeze 1",
        &[x(&s, 69)],
        |t| {
            let y = ops::unsqueeze(&t[0], 1)?;
            assert_eq!(y.dims(), [2, 1, 3, 4]);
            Ok(y)
        },
        |v| v[0].clone(),
    );
    check(
        "unsqueeze at end then squeeze -1",
        &[x(&s, 70)],
        |t| {
            let y = ops::squeeze(&ops::unsqueeze(&t[0], 3)?, -1)?;
            assert_eq!(y.dims(), [2, 3, 4]);
            Ok(y)
        },
        |v| v[0].clone(),
    );
    check(
        "flatten 1..=2",
        &[x(&s, 71)],
        |t| {
            let y = ops::flatten(&t[0], 1, 2)?;
            assert_eq!(y.dims(), [2, 12]);
            Ok(y)
        },
        |v| v[0].clone(),
    );
    check(
        "broadcast_to [3,1] -> [2,3,4]",
        &[x(&[3, 1], 72)],
        |t| ops::broadcast_to(&t[0], &Shape(vec![2, 3, 4])),
        moved(&[3, 1], &s, |o| vec![o[1], 0]),
    );
    check(
        "broadcast_to [4] -> [3,4]",
        &[x(&[4], 73)],
        |t| ops::broadcast_to(&t[0], &Shape(vec![3, 4])),
        moved(&[4], &[3, 4], |o| vec![o[1]]),
    );
    check(
        "contiguous of permute",
        &[x(&s, 74)],
        |t| {
            let y = ops::contiguous(&ops::permute(&t[0], &[2, 0, 1])?)?;
            assert!(y.is_contiguous());
            Ok(y)
        },
        moved(&s, &[4, 2, 3], |o| vec![o[1], o[2], o[0]]),
    );
    check(
        "Tensor::contiguous of transpose",
        &[x(&s, 75)],
        |t| ops::transpose(&t[0], 1, 2)?.contiguous(),
        moved(&s, &[2, 4, 3], |o| vec![o[0], o[2], o[1]]),
    );
}

/// Focus (YOLOX stem): `cat(x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])`.
#[test]
fn focus_slices() {
    let s = [2, 3, 6, 8];
    let ss = |t: &Tensor, r: usize, c: usize| {
        ops::slice_step(&ops::slice_step(t, 2, r, 6, 2)?, 3, c, 8, 2)
    };
    check(
        "slice x[..., ::2, ::2]",
        &[x(&s, 80)],
        |t| ss(&t[0], 0, 0),
        moved(&s, &[2, 3, 3, 4], |o| vec![o[0], o[1], 2 * o[2], 2 * o[3]]),
    );
    check(
        "slice x[..., 1::2, ::2]",
        &[x(&s, 81)],
        |t| ss(&t[0], 1, 0),
        moved(&s, &[2, 3, 3, 4], |o| {
            vec![o[0], o[1], 2 * o[2] + 1, 2 * o[3]]
        }),
    );
    check(
        "focus cat of 4 slices",
        &[x(&s, 82)],
        |t| {
            ops::cat(
                &[
                    ss(&t[0], 0, 0)?,
                    ss(&t[0], 1, 0)?,
                    ss(&t[0], 0, 1)?,
                    ss(&t[0], 1, 1)?,
                ],
                1,
            )
        },
        moved(&s, &[2, 12, 3, 4], |o| {
            let (part, ch) = (o[1] / 3, o[1] % 3);
            let (r, c) = [(0, 0), (1, 0), (0, 1), (1, 1)][part];
            vec![o[0], ch, 2 * o[2] + r, 2 * o[3] + c]
        }),
    );
}

/// Views of views: permute, then slice, then narrow, then reshape (a copy, since the view is not
/// contiguous), then slice again.
#[test]
fn view_chains() {
    let s = [2, 3, 4, 5];
    // permute -> [2,4,5,3]; slice axis 1 1::2 -> [2,2,5,3]; narrow axis 2 1..4 -> [2,2,3,3].
    let chain = |o: &[usize]| vec![o[0], o[3], 1 + 2 * o[1], 1 + o[2]];
    check(
        "permute.slice.narrow",
        &[x(&s, 90)],
        |t| {
            ops::narrow(
                &ops::slice_step(&ops::permute(&t[0], &[0, 2, 3, 1])?, 1, 1, 4, 2)?,
                2,
                1,
                3,
            )
        },
        moved(&s, &[2, 2, 3, 3], chain),
    );
    check(
        "permute.slice.narrow.reshape",
        &[x(&s, 91)],
        |t| {
            let v = ops::narrow(
                &ops::slice_step(&ops::permute(&t[0], &[0, 2, 3, 1])?, 1, 1, 4, 2)?,
                2,
                1,
                3,
            )?;
            ops::reshape(&v, [4, 9])
        },
        moved(&s, &[4, 9], move |o| {
            chain(&unravel(o[0] * 9 + o[1], &[2, 2, 3, 3]))
        }),
    );
    check(
        "permute.slice.reshape.slice.transpose",
        &[x(&s, 92)],
        |t| {
            let v = ops::slice_step(&ops::permute(&t[0], &[3, 1, 0, 2])?, 2, 1, 2, 1)?; // [5,3,1,4]
            let r = ops::reshape(&v, [15, 4])?;
            ops::transpose(&ops::slice_step(&r, 0, 2, 15, 3)?, 0, 1) // [4, 5]
        },
        moved(&s, &[4, 5], |o| {
            let row = 2 + 3 * o[1]; // row of the [15, 4] matrix
            let (a, b) = (row / 3, row % 3); // [5, 3] index
            vec![1, b, o[0], a]
        }),
    );
    // A view with an offset, reshaped without copy (narrow of axis 0 stays contiguous), then
    // permuted and summed.
    check(
        "narrow0.reshape.permute.sum",
        &[x(&s, 93)],
        |t| {
            let v = ops::reshape(&ops::narrow(&t[0], 0, 1, 1)?, [3, 20])?;
            ops::sum(&ops::permute(&v, &[1, 0])?, &[1], false)
        },
        |v| {
            (0..20)
                .map(|j| (0..3).map(|i| v[0][60 + i * 20 + j]).sum())
                .collect()
        },
    );
    // elementwise op between two different views of the same tensor (shared storage).
    check(
        "mul of two views of one tensor",
        &[x(&[4, 4], 94)],
        |t| {
            ops::mul(
                &ops::transpose(&t[0], 0, 1)?,
                &ops::slice_step(&ops::reshape(&t[0], [2, 8])?, 1, 0, 8, 1)?.reshape([4, 4])?,
            )
        },
        |v| {
            (0..16)
                .map(|p| v[0][(p % 4) * 4 + p / 4] * v[0][p])
                .collect()
        },
    );
}

#[test]
fn index_select_and_gather() {
    let s = [3, 4, 2];
    // Repeated indices: the scatter-add of the backward must accumulate.
    let idx = [2.0, 0.0, 2.0, 2.0, 1.0];
    check(
        "index_select axis 1 repeated",
        &[x(&s, 100), c(idx.to_vec(), &[5])],
        |t| ops::index_select(&t[0], 1, &t[1]),
        moved(&s, &[3, 5, 2], move |o| {
            vec![o[0], idx[o[1]] as usize, o[2]]
        }),
    );
    check(
        "index_select axis 0 repeated",
        &[x(&s, 101), c(vec![1.0, 1.0], &[2])],
        |t| ops::index_select(&t[0], 0, &t[1]),
        moved(&s, &[2, 4, 2], |o| vec![1, o[1], o[2]]),
    );
    check(
        "index_select axis -1",
        &[x(&s, 102), c(vec![1.0, 0.0, 1.0], &[3])],
        |t| ops::index_select(&t[0], -1, &t[1]),
        moved(&s, &[3, 4, 3], |o| vec![o[0], o[1], [1, 0, 1][o[2]]]),
    );
    // gather axis 1 with index [3, 3, 2] (values in 0..4, repeats).
    let gidx: Vec<f32> = vec![
        0., 3., 3., 3., 1., 0., 2., 2., 2., 1., 1., 1., 0., 0., 3., 3., 0., 1.,
    ];
    let g2 = gidx.clone();
    check(
        "gather axis 1 repeated",
        &[x(&s, 103), c(gidx, &[3, 3, 2])],
        |t| ops::gather(&t[0], 1, &t[1]),
        moved(&s, &[3, 3, 2], move |o| {
            vec![o[0], g2[ravel(o, &[3, 3, 2])] as usize, o[2]]
        }),
    );
    let gl = vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    let g3 = gl.clone();
    check(
        "gather axis -1",
        &[x(&s, 104), c(gl, &[3, 4, 1])],
        |t| ops::gather(&t[0], -1, &t[1]),
        moved(&s, &[3, 4, 1], move |o| {
            vec![o[0], o[1], g3[ravel(o, &[3, 4, 1])] as usize]
        }),
    );
}

#[test]
fn infer_shape_resolves_minus_one() {
    assert_eq!(
        ops::infer_shape("reshape", &[2, -1, 4], 24).unwrap(),
        Shape(vec![2, 3, 4])
    );
    assert_eq!(
        ops::infer_shape("reshape", &[-1], 7).unwrap(),
        Shape(vec![7])
    );
    assert_eq!(
        ops::infer_shape("reshape", &[3, 5], 15).unwrap(),
        Shape(vec![3, 5])
    );
    for (dims, n) in [(&[-1, -1][..], 4), (&[-1, 5], 12), (&[2, -3], 6)] {
        let e = ops::infer_shape("reshape", dims, n).unwrap_err();
        assert!(e.to_string().contains("reshape"), "{dims:?} for {n}: {e}");
    }
}

/// NaN propagates through max (as torch.max).
#[test]
fn max_propagates_nan() {
    let t = Tensor::from_vec(vec![1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    let m = ops::max_axis(&t, 1, false).unwrap().to_vec();
    assert!(m[0].is_nan() && m[1] == 6.0, "{m:?}");
    let p = ops::max_pool2d(
        &t.reshape([1, 1, 2, 3]).unwrap(),
        ops::Pool2dParams {
            kernel: 2,
            stride: 1,
            padding: 0,
        },
    )
    .unwrap()
    .to_vec();
    assert!(p[0].is_nan() && p[1].is_nan(), "{p:?}");
}

/// Bad arguments are errors naming the op, not panics.
#[test]
fn shape_errors_name_the_op() {
    let t = Tensor::zeros([2, 3]);
    let cases: Vec<(&str, ssod::Result<Tensor>)> = vec![
        ("reshape", ops::reshape(&t, [4, 2])),
        ("permute", ops::permute(&t, &[0, 0])),
        ("narrow", ops::narrow(&t, 1, 2, 2)),
        ("squeeze", ops::squeeze(&t, 0)),
        ("cat", ops::cat(&[t.clone(), Tensor::zeros([3, 3])], 1)),
        (
            "index_select",
            ops::index_select(&t, 1, &Tensor::from_vec(vec![3.0], [1]).unwrap()),
        ),
        (
            "gather",
            ops::gather(&t, 1, &Tensor::from_vec(vec![0.5; 2], [2, 1]).unwrap()),
        ),
        ("matmul", ops::matmul(&t, &Tensor::zeros([2, 3]))),
        ("add", ops::add(&t, &Tensor::zeros([2]))),
        ("sum", ops::sum(&t, &[1, -1], false)),
        ("max", ops::max_axis(&t, 2, false)),
        (
            "conv2d",
            ops::conv2d(
                &Tensor::zeros([1, 3, 5, 5]),
                &Tensor::zeros([4, 2, 3, 3]),
                None,
                ops::Conv2dParams {
                    stride: 1,
                    padding: 0,
                    groups: 2,
                },
            ),
        ),
        (
            "max_pool2d",
            ops::max_pool2d(
                &t,
                ops::Pool2dParams {
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                },
            ),
        ),
        (
            "cross_entropy",
            ops::cross_entropy(&t, &Tensor::from_vec(vec![0.0, 1.5], [2]).unwrap()),
        ),
        (
            "bce_with_logits",
            ops::bce_with_logits(&t, &Tensor::zeros([3, 2]), None),
        ),
    ];
    for (op, r) in cases {
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{op}: bad arguments gave Ok"));
        assert!(
            e.to_string().contains(op),
            "{op}: error does not name the op: {e}"
        );
    }
}

/// Products big enough for the threaded sgemm paths. Finite differences would be slow here, so
/// the gradients are checked against their closed forms in f64: for L = Σ (A·B) ∘ R,
/// dA = R·Bᵀ and dB = Aᵀ·R (summed over the batch when B is shared). Gradient entries are sums of
/// ≤ 200 products of N(0,1) values (|g| ≲ 60), so f32 accumulation error stays ≪ 1e-3.
#[test]
fn large_matmul() {
    for (batch, m, k, n, b_batched) in [
        (1, 130, 257, 66, false),
        (6, 33, 70, 41, true),
        (6, 33, 70, 41, false),
    ] {
        let name = format!("matmul batch {batch} [{m}x{k}]·[{k}x{n}] b_batched={b_batched}");
        let nb = if b_batched { batch } else { 1 };
        let (av, bv, rv) = (
            common::randn(batch * m * k, 1),
            common::randn(nb * k * n, 2),
            common::randn(batch * m * n, 3),
        );
        let a_shape = if batch == 1 {
            vec![m, k]
        } else {
            vec![batch, m, k]
        };
        let b_shape = if b_batched {
            vec![batch, k, n]
        } else {
            vec![k, n]
        };
        let a = Tensor::from_vec(av.clone(), a_shape)
            .unwrap()
            .with_requires_grad(true);
        let b = Tensor::from_vec(bv.clone(), b_shape)
            .unwrap()
            .with_requires_grad(true);
        let y = ops::matmul(&a, &b).unwrap();
        let r = Tensor::from_vec(rv.clone(), y.shape().clone()).unwrap();
        ops::sum_all(&ops::mul(&y, &r).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let (yv, ga, gb) = (
            y.to_vec(),
            a.grad().unwrap().to_vec(),
            b.grad().unwrap().to_vec(),
        );
        let (mut want_ga, mut want_gb) = (vec![0f64; av.len()], vec![0f64; bv.len()]);
        for bi in 0..batch {
            let bo = if b_batched { bi * k * n } else { 0 };
            for i in 0..m {
                for j in 0..n {
                    let yo = (bi * m + i) * n + j;
                    let want: f64 = (0..k)
                        .map(|t| av[(bi * m + i) * k + t] as f64 * bv[bo + t * n + j] as f64)
                        .sum();
                    assert!(
                        (yv[yo] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{name}: y[{yo}] ours {} vs {want}",
                        yv[yo]
                    );
                    let rr = rv[yo] as f64;
                    for t in 0..k {
                        want_ga[(bi * m + i) * k + t] += rr * bv[bo + t * n + j] as f64;
                        want_gb[bo + t * n + j] += rr * av[(bi * m + i) * k + t] as f64;
                    }
                }
            }
        }
        common::assert_close(&format!("{name}: dA"), &ga, &want_ga, 1e-3);
        common::assert_close(&format!("{name}: dB"), &gb, &want_gb, 1e-3);
        println!("{name}: ok");
    }
}
