//! The one gradient-check helper of the op tests (docs/design.md), plus seeded random inputs.
//!
//! `check(op, inputs, ours, reference)`:
//! - forward: our f32 output against a plain f64 reference written in the test;
//! - backward: loss = Σ ours·r with fixed seeded weights r, `backward()`, and each differentiable
//!   input's `.grad()` against central finite differences of Σ reference·r computed in f64.
//!
//! Every case prints one line with the max error per input; a failure names the op, the input, the
//! index and both values.
//!
//! Skips: a test that cannot run here (a missing tool, or no GPU) calls [`tool_or_skip`] or
//! [`gpu_or_skip`] and returns when told to; see [`skip`].
#![allow(dead_code)]

use ssod::ops;
use ssod::Tensor;

/// A deterministic generator (SplitMix64): the tests need no RNG crate and give the same values
/// on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// `n` seeded standard-normal values (as f32).
pub fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

/// `n` seeded values uniform in [lo, hi).
pub fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| (lo + (hi - lo) * r.uniform()) as f32)
        .collect()
}

/// One input of a checked op: values, shape, and whether it takes a gradient.
#[derive(Clone, Debug)]
pub struct Input {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
    pub grad: bool,
}

/// A differentiable input of standard-normal values.
pub fn x(shape: &[usize], seed: u64) -> Input {
    let n = shape.iter().product();
    Input {
        values: randn(n, seed),
        shape: shape.to_vec(),
        grad: true,
    }
}

/// A differentiable input of uniform values in [lo, hi) (for log, sqrt, div...).
pub fn xu(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Input {
    let n = shape.iter().product();
    Input {
        values: uniform(n, lo, hi, seed),
        shape: shape.to_vec(),
        grad: true,
    }
}

/// A differentiable input with given values.
pub fn xv(values: Vec<f32>, shape: &[usize]) -> Input {
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "xv: values do not fit shape {shape:?}"
    );
    Input {
        values,
        shape: shape.to_vec(),
        grad: true,
    }
}

/// A constant input (indices, labels, targets): no gradient.
pub fn c(values: Vec<f32>, shape: &[usize]) -> Input {
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "c: values do not fit shape {shape:?}"
    );
    Input {
        values,
        shape: shape.to_vec(),
        grad: false,
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

/// Flat position of a multi-index in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// Read `v` (of shape `shape`) at the multi-index `idx` of the broadcast `out` shape (NumPy rules).
pub fn bcast_at(v: &[f64], shape: &[usize], idx: &[usize]) -> f64 {
    let off = idx.len() - shape.len();
    let j: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(a, &d)| if d == 1 { 0 } else { idx[a + off] })
        .collect();
    v[ravel(&j, shape)]
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Tolerances of [`check_with`].
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Forward: |ours − ref| <= fwd·(|ref| + max|ref|) + 1e-7.
    pub fwd: f64,
    /// Backward: |ours − fd| <= bwd_rel·|fd| + bwd_abs·max(1, max|fd| of that input).
    pub bwd_rel: f64,
    pub bwd_abs: f64,
}

pub const TOL: Tol = Tol {
    fwd: 1e-5,
    bwd_rel: 1e-3,
    bwd_abs: 1e-4,
};

/// Check forward and backward of `ours` against `reference` with the default tolerances.
pub fn check(
    op: &str,
    inputs: &[Input],
    ours: impl Fn(&[Tensor]) -> ssod::Result<Tensor>,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
) {
    check_with(op, TOL, inputs, ours, reference)
}

pub fn check_with(
    op: &str,
    tol: Tol,
    inputs: &[Input],
    ours: impl Fn(&[Tensor]) -> ssod::Result<Tensor>,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
) {
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            Tensor::from_vec(i.values.clone(), i.shape.clone())
                .unwrap_or_else(|e| panic!("{op}: bad test input: {e}"))
                .with_requires_grad(i.grad)
        })
        .collect();
    let ref_in: Vec<Vec<f64>> = inputs
        .iter()
        .map(|i| i.values.iter().map(|&v| v as f64).collect())
        .collect();

    // (a) forward.
    let y = ours(&tensors).unwrap_or_else(|e| panic!("{op}: forward failed: {e}"));
    let yv = y.to_vec();
    let want = reference(&ref_in);
    assert_eq!(
        yv.len(),
        want.len(),
        "{op}: ours has {} values (shape {:?}), the reference {}",
        yv.len(),
        y.dims(),
        want.len()
    );
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut fwd_err = 0f64;
    for (i, (&o, &w)) in yv.iter().zip(&want).enumerate() {
        let err = (o as f64 - w).abs();
        fwd_err = fwd_err.max(err);
        let allowed = tol.fwd * (w.abs() + scale) + 1e-7;
        assert!(
            err <= allowed || (o.is_nan() && w.is_nan()),
            "{op}: forward mismatch at output index {i} (of shape {:?}): ours {o} vs reference {w} (err {err:.3e} > {allowed:.3e})",
            y.dims()
        );
    }

    // (b) backward: loss = Σ y·r.
    let mut rng = Rng::new(seed_of(op));
    let r: Vec<f64> = (0..want.len()).map(|_| rng.normal()).collect();
    let mut line = format!("{op}: fwd max err {fwd_err:.2e}");
    if inputs.iter().any(|i| i.grad) {
        let rt = Tensor::from_vec(r.iter().map(|&v| v as f32).collect(), y.shape().clone())
            .expect("r fits y");
        let loss = ops::sum_all(&ops::mul(&y, &rt).expect("mul")).expect("sum_all");
        loss.backward()
            .unwrap_or_else(|e| panic!("{op}: backward failed: {e}"));
        let objective = |xs: &[Vec<f64>]| {
            reference(xs)
                .iter()
                .zip(&r)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        };
        for (k, inp) in inputs.iter().enumerate() {
            if !inp.grad {
                continue;
            }
            let g = tensors[k]
                .grad()
                .unwrap_or_else(|| panic!("{op}: input {k} got no gradient"));
            assert_eq!(
                g.dims(),
                &inp.shape[..],
                "{op}: input {k}: gradient shape {:?} vs input shape {:?}",
                g.dims(),
                inp.shape
            );
            let gv = g.to_vec();
            let mut xs = ref_in.clone();
            let fd: Vec<f64> = (0..inp.values.len())
                .map(|j| {
                    let x0 = xs[k][j];
                    let h = 1e-6 * x0.abs().max(1.0);
                    xs[k][j] = x0 + h;
                    let fp = objective(&xs);
                    xs[k][j] = x0 - h;
                    let fm = objective(&xs);
                    xs[k][j] = x0;
                    (fp - fm) / (2.0 * h)
                })
                .collect();
            let gscale = fd.iter().fold(1f64, |m, v| m.max(v.abs()));
            let mut err_max = 0f64;
            for (j, (&o, &w)) in gv.iter().zip(&fd).enumerate() {
                let err = (o as f64 - w).abs();
                err_max = err_max.max(err);
                let allowed = tol.bwd_rel * w.abs() + tol.bwd_abs * gscale;
                assert!(
                    err <= allowed,
                    "{op}: gradient mismatch for input {k} (shape {:?}) at index {j} {:?}: ours {o} vs finite difference {w} (err {err:.3e} > {allowed:.3e})",
                    inp.shape,
                    unravel(j, &inp.shape)
                );
            }
            line.push_str(&format!(", input {k} grad max err {err_max:.2e}"));
        }
    }
    println!("{line}");
}

/// Assert two f32 slices agree within `tol` (absolute), naming what and where.
pub fn assert_close(what: &str, ours: &[f32], want: &[f64], tol: f64) {
    assert_eq!(
        ours.len(),
        want.len(),
        "{what}: {} values vs {} expected",
        ours.len(),
        want.len()
    );
    for (i, (&o, &w)) in ours.iter().zip(want).enumerate() {
        assert!(
            (o as f64 - w).abs() <= tol,
            "{what}: index {i}: got {o}, expected {w} (tol {tol})"
        );
    }
}

/// Why a test (or its second half) does not run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// ffmpeg, NVRTC, g++, python3, numpy, pycocotools: CI installs them (`.ci/run`).
    Tool,
    /// A CUDA device: CI machines have none.
    Gpu,
}

/// The one way a test skips: exactly one line `SKIPPED <test>: <reason>` on the terminal, written
/// to the process's stderr directly (libtest captures `println!`/`eprintln!` of passing tests, so
/// those would show nothing). Under the `CI` environment variable only [`Missing::Gpu`] may skip;
/// a missing tool panics instead, so nothing is skipped silently there.
pub fn skip(missing: Missing, reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if missing == Missing::Tool && std::env::var_os("CI").is_some() {
        panic!("CI is set, so {test} may not skip: {reason}");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// True when `check` is `Ok` (the tools the test needs run); otherwise the skip line of
/// [`skip`] (a failure under `CI`) and false: the test returns.
pub fn tool_or_skip(check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(reason) => {
            skip(Missing::Tool, &reason);
            false
        }
    }
}

/// Ok when `program args...` starts and exits with success; the reason otherwise.
pub fn runs(program: &str, args: &[&str]) -> Result<(), String> {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Err(format!("`{program}` not found: {e}")),
    }
}

/// The CUDA device, or `None` after the skip line of [`skip`] (allowed under `CI`): the test, or
/// its GPU half, returns.
pub fn gpu_or_skip() -> Option<ssod::backend::cuda::CudaDevice> {
    match ssod::backend::cuda::CudaAvailability::probe() {
        Ok(dev) => Some(dev),
        Err(reason) => {
            skip(
                Missing::Gpu,
                &format!("no GPU, so its CUDA part does not run ({reason})"),
            );
            None
        }
    }
}
