//! Batch normalisation over `[N, C, H, W]` on the CPU (slices in, `Vec` out), with the fused
//! SiLU of YOLOX's BaseConv ([`Activation::Silu`]). `ops::batch_norm` validates, dispatches and
//! records; the CUDA twin is `backend::cuda::batch_norm`.
//!
//! The forward reads x twice (stats, output) and writes only y; the backward recomputes xhat and
//! σ from the saved x (two passes) instead of storing them. Sums are per (image, channel) plane
//! with 8 f64 lanes, combined per channel in image order: deterministic whatever the thread
//! count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::backend::cpu::math::sigmoid_f32;
use crate::backend::cpu::simd::simd_fn;
use crate::backend::cpu::uninit::filled_vec;

pub use crate::backend::Activation;

/// The sizes and mode of one BN call: `x [n, c, H, W]` with `plane = H·W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnCall {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
    pub activation: Activation,
    /// Batch statistics (training) or the running ones (eval): the backward differs.
    pub training: bool,
}

/// Per channel `(mean, 1/sqrt(var + eps))`.
pub type Stat = (f32, f32);

/// The per-channel affine map a forward applied, kept for its backward (`x` is kept by the op).
pub struct Normalizer {
    pub stats: Vec<Stat>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Lanes of independent f64 accumulators in the per-plane sums: the loop vectorises and is not
/// bound by the latency of one add chain. The order is fixed (lane k takes elements k, k+8, …,
/// then the lanes are added in order), so results do not depend on the thread count.
const LANES: usize = 8;

/// Elements per block of the per-plane sums: each block is summed once per sum, so the loop
/// keeps one accumulator array (LLVM vectorises that at full width; two sums in one loop were
/// compiled to 2-lane f64 vectors) while the block stays in L1.
const SUM_BLOCK: usize = 512;

/// `acc[i % 8] += v[i]` in f64 over the first `v.len() / 8 · 8` elements of `v`.
#[inline(always)]
fn add_to_lanes(acc: &mut [f64; LANES], v: &[f32]) {
    for ch in v.chunks_exact(LANES) {
        for k in 0..LANES {
            acc[k] += ch[k] as f64;
        }
    }
}

/// `acc[i % 8] += v[i]²` in f64 (squared in f64), like [`add_to_lanes`].
#[inline(always)]
fn add_squares_to_lanes(acc: &mut [f64; LANES], v: &[f32]) {
    for ch in v.chunks_exact(LANES) {
        for k in 0..LANES {
            let x = ch[k] as f64;
            acc[k] += x * x;
        }
    }
}

/// `(Σd, Σ(d·xhat))` over one plane in f64, `xhat = (x − mean)·inv` recomputed from x; the
/// product `d·xhat` is f32. Lane k takes elements k, k+8, …; the lanes are then added in order
/// and the last `len % 8` elements after them.
#[inline(always)]
fn plane_grad_sums(d: &[f32], x: &[f32], mean: f32, inv: f32) -> (f64, f64) {
    let (mut a1, mut a2) = ([0f64; LANES], [0f64; LANES]);
    let mut prod = [0f32; SUM_BLOCK];
    for (db, xb) in d.chunks(SUM_BLOCK).zip(x.chunks(SUM_BLOCK)) {
        add_to_lanes(&mut a1, db);
        let prod = &mut prod[..db.len()];
        for ((p, &dv), &xv) in prod.iter_mut().zip(db).zip(xb) {
            *p = dv * ((xv - mean) * inv);
        }
        add_to_lanes(&mut a2, prod);
    }
    let (mut s1, mut s2) = (a1.iter().sum::<f64>(), a2.iter().sum::<f64>());
    let tail = d.len() / LANES * LANES;
    for (&dv, &xv) in d[tail..].iter().zip(&x[tail..]) {
        s1 += dv as f64;
        s2 += (dv * ((xv - mean) * inv)) as f64;
    }
    (s1, s2)
}

simd_fn! {
/// `(Σx, Σx²)` over one plane, in f64 (x² in f64 too); lanes and order as in
/// [`plane_grad_sums`].
fn plane_moments(xs: &[f32]) -> (f64, f64) {
    let (mut a1, mut a2) = ([0f64; LANES], [0f64; LANES]);
    for b in xs.chunks(SUM_BLOCK) {
        add_to_lanes(&mut a1, b);
        add_squares_to_lanes(&mut a2, b);
    }
    let (mut s1, mut s2) = (a1.iter().sum::<f64>(), a2.iter().sum::<f64>());
    for &v in &xs[xs.len() / LANES * LANES..] {
        let v = v as f64;
        s1 += v;
        s2 += v * v;
    }
    (s1, s2)
}
}

simd_fn! {
/// One plane of the forward output from its input: `bn = (x − mean)·inv·g + b`, then SiLU.
/// Writes every element of `y` (`y.len() == x.len()`, asserted): `y` may be uninitialised.
fn plane_forward(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    mean: f32,
    inv: f32,
    g: f32,
    b: f32,
    act: Activation,
) {
    assert_eq!(y.len(), x.len(), "batch_norm: plane lengths");
    if act == Activation::Silu {
        for (o, &v) in y.iter_mut().zip(x) {
            let bn = (v - mean) * inv * g + b;
            o.write(bn * sigmoid_f32(bn));
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write((v - mean) * inv * g + b);
        }
    }
}
}

simd_fn! {
/// Backward pass 1 over one plane: the gradient at the BN output `d_bn` (into `d`, which may be
/// uninitialised: every element is written; with SiLU through its derivative, bn and σ
/// recomputed from x) and its sums `(Σd_bn, Σ(d_bn·xhat))`.
fn plane_grad_at_bn(
    d: &mut [MaybeUninit<f32>],
    dy: &[f32],
    x: &[f32],
    stat: Stat,
    g: f32,
    b: f32,
    act: Activation,
) -> (f64, f64) {
    let (mean, inv) = stat;
    assert!(d.len() == dy.len() && d.len() == x.len(), "batch_norm: plane lengths");
    if act == Activation::Silu {
        for ((o, &dv), &v) in d.iter_mut().zip(dy).zip(x) {
            let bn = (v - mean) * inv * g + b;
            let sv = sigmoid_f32(bn);
            o.write(dv * (sv * (1.0 + bn * (1.0 - sv))));
        }
    } else {
        for (o, &dv) in d.iter_mut().zip(dy) {
            o.write(dv);
        }
    }
    // SAFETY: the loop above wrote every element (equal lengths, asserted).
    let d = unsafe { &*(d as *const [MaybeUninit<f32>] as *const [f32]) };
    plane_grad_sums(d, x, mean, inv)
}
}

simd_fn! {
/// Backward pass 2 over one plane, in place (training mode):
/// `dx = scale·(m·d_bn − s1 − xhat·s2)` with `scale = gamma·inv/m`.
fn plane_grad_input(d: &mut [f32], x: &[f32], stat: Stat, scale: f32, m: f32, sums: (f32, f32)) {
    let ((mean, inv), (s1, s2)) = (stat, sums);
    for (o, &v) in d.iter_mut().zip(x) {
        let xh = (v - mean) * inv;
        *o = scale * (m * *o - s1 - xh * s2);
    }
}
}

/// Per-plane sums (plane i = image i / c, channel i % c) combined per channel in image order.
fn per_channel(c: usize, per_plane: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = vec![(0f64, 0f64); c];
    for (i, &(a, b)) in per_plane.iter().enumerate() {
        let o = &mut out[i % c];
        o.0 += a;
        o.1 += b;
    }
    out
}

/// Per channel `(mean, biased variance)` of `x` in f64.
pub fn batch_moments(x: &[f32], call: &BnCall) -> Vec<(f64, f64)> {
    let per_plane: Vec<(f64, f64)> = x.par_chunks(call.plane.max(1)).map(plane_moments).collect();
    let sums = per_channel(call.c, &per_plane);
    let cnt = (call.n * call.plane) as f64;
    sums.iter()
        .map(|&(s1, s2)| (s1 / cnt, (s2 / cnt - (s1 / cnt).powi(2)).max(0.0)))
        .collect()
}

/// `running = (1 − momentum)·running + momentum·batch mean`, in place.
pub fn update_running_mean(running_mean: &mut [f32], moments: &[(f64, f64)], momentum: f32) {
    running_mean
        .iter_mut()
        .zip(moments)
        .for_each(|(r, m)| *r = (1.0 - momentum) * *r + momentum * m.0 as f32)
}

/// `running = (1 − momentum)·running + momentum·unbiased batch variance` over `count` values per
/// channel, in place.
pub fn update_running_var(
    running_var: &mut [f32],
    moments: &[(f64, f64)],
    momentum: f32,
    count: usize,
) {
    let cnt = count as f64;
    let unbias = cnt / (cnt - 1.0);
    running_var
        .iter_mut()
        .zip(moments)
        .for_each(|(r, m)| *r = (1.0 - momentum) * *r + momentum * (m.1 * unbias) as f32)
}

/// Per-channel stats from the batch moments (training).
pub fn batch_stats(moments: &[(f64, f64)], eps: f32) -> Vec<Stat> {
    moments
        .iter()
        .map(|&(m, v)| (m as f32, (1.0 / (v + eps as f64).sqrt()) as f32))
        .collect()
}

/// Per-channel stats from the running ones (eval).
pub fn running_stats(running_mean: &[f32], running_var: &[f32], eps: f32) -> Vec<Stat> {
    running_mean
        .iter()
        .zip(running_var)
        .map(|(&m, &v)| (m, 1.0 / (v + eps).sqrt()))
        .collect()
}

/// Forward: `gamma·xhat + beta` (through SiLU with [`Activation::Silu`]) in one pass from x.
pub fn fwd(x: &[f32], call: &BnCall, norm: &Normalizer) -> Vec<f32> {
    let (c, pl) = (call.c, call.plane.max(1));
    // Written plane by plane without zeroing first (a memset of every BN output was ~3 % of a
    // YOLOX-nano step).
    let write_planes = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(pl)
            .zip(x.par_chunks(pl))
            .enumerate()
            .for_each(|(i, (yy, xx))| {
                let ch = i % c;
                let (mean, inv) = norm.stats[ch];
                plane_forward(
                    yy,
                    xx,
                    mean,
                    inv,
                    norm.gamma[ch],
                    norm.beta[ch],
                    call.activation,
                );
            })
    };
    // SAFETY: the planes tile all x.len() elements and plane_forward writes each.
    let (y, ()) = unsafe { filled_vec(x.len(), write_planes) };
    y
}

/// Backward from the gradient of the op's output: `(dx, dgamma, dbeta)`. With SiLU its backward
/// is fused in: `d_bn = dy·σ·(1 + bn·(1 − σ))`, bn and σ recomputed from x.
pub fn bwd(
    dy: &[f32],
    x: &[f32],
    call: &BnCall,
    norm: &Normalizer,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, plane) = (call.c, call.plane);
    let pl = plane.max(1);
    let Normalizer { stats, gamma, beta } = norm;
    // Pass 1, per plane: d_bn (into dx) and (Σd_bn, Σ(d_bn·xhat)) in f64.
    let write_planes = |dx: &mut [MaybeUninit<f32>]| -> Vec<(f64, f64)> {
        dx.par_chunks_mut(pl)
            .zip(dy.par_chunks(pl))
            .zip(x.par_chunks(pl))
            .enumerate()
            .map(|(i, ((dd, dyp), xp))| {
                let ch = i % c;
                plane_grad_at_bn(dd, dyp, xp, stats[ch], gamma[ch], beta[ch], call.activation)
            })
            .collect()
    };
    // SAFETY: the planes tile all dy.len() elements and plane_grad_at_bn writes each.
    let (mut dx, per_plane) = unsafe { filled_vec(dy.len(), write_planes) };
    let sums = per_channel(c, &per_plane);
    // Pass 2, in place: dx = gamma·inv/M · (M·d_bn − Σd_bn − xhat·Σ(d_bn·xhat)).
    let m = (call.n * plane) as f32;
    dx.par_chunks_mut(pl)
        .zip(x.par_chunks(pl))
        .enumerate()
        .for_each(|(i, (dd, xp))| {
            let ch = i % c;
            let (_, inv) = stats[ch];
            if call.training {
                let s = (sums[ch].0 as f32, sums[ch].1 as f32);
                plane_grad_input(dd, xp, stats[ch], gamma[ch] * inv / m, m, s);
            } else {
                let scale = gamma[ch] * inv;
                dd.iter_mut().for_each(|o| *o *= scale);
            }
        });
    let dgamma = sums.iter().map(|v| v.1 as f32).collect();
    let dbeta = sums.iter().map(|v| v.0 as f32).collect();
    (dx, dgamma, dbeta)
}
