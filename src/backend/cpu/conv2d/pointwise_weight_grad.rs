//! The weight gradient of 1×1 stride-1 convs with few channels (YOLOX's dark2 CSP, most of
//! YOLOX-nano): an AVX-512 kernel and a portable twin that adds the same products in the same
//! order, so the result has the same bits at every SIMD level.
//!
//! `dw[o, i] = Σ_p dy[o, p] · x[i, p]` is a product with a long reduction (a whole plane, 25,600
//! positions at dark2) and a tiny result. Through the `gemm` crate it ran at 35–64 GFLOP/s (2
//! cores) with 64 output channels and ~80–95 with 32: the crate packs both long operands for a
//! result that fits in registers. Here every weight has 16 partial sums: lane `l` takes
//! positions `l, l+16, …` in increasing order, each a product then a sum (not fused: the
//! baseline level has no FMA instruction; a position past the plane's end adds `0·0`), and the
//! lanes are reduced at the end in a fixed tree ([`reduce_lanes`]). The AVX-512 kernel keeps a
//! 4 × 4 tile of weights' lanes in registers while 512-position panels of the rows stream past;
//! the portable twin ([`weight_grad_lanes_portable`], `simd_fn!`) walks the same panels weight
//! by weight. Neither depends on the thread count.
//!
//! Also tried: a register-blocked forward / input gradient (12 × 32 output tiles, input rows
//! packed per block, prefetch, optionally non-temporal stores). It was level with the crate at
//! 64→32 and 10–15 % slower at 64→64 and 32→64 (BENCHMARKS.md, "Run-time SIMD"), so those
//! stay on the crate.

use crate::backend::cpu::simd::simd_fn;
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::simd::{level, SimdLevel};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `weight_grad` tile: output rows × input rows of 16-lane accumulators.
#[cfg(target_arch = "x86_64")]
const WG_ROWS: usize = 4;
#[cfg(target_arch = "x86_64")]
const WG_COLS: usize = 4;
/// Positions per panel of [`weight_grad`]: the panel's rows (≤ a few hundred KB) stay in L2
/// while every tile of the weight gradient passes over them.
const WG_PANEL: usize = 512;

/// Channel counts (per group, in and out) up to which this kernel beats the `gemm` crate on the
/// benchmark VM; past them the crate's cache blocking wins (256→128 at 40²: 81 vs 175 GFLOP/s).
pub(super) const MAX_CHANNELS: usize = 64;

/// Whether the AVX-512 kernel runs: the CPU has AVX-512F and the SIMD level is not forced
/// lower (otherwise the portable twin does, with the same bits).
#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    level() == SimdLevel::Avx512
}

/// `dw[o·n_in + i] = Σ_p dy[o·plane + p] · x[i·plane + p]` for one batch item (overwrites `dw`,
/// `n_out × n_in`). Single-threaded: callers run batch items in parallel (a batch smaller than
/// the thread pool leaves threads idle here).
///
/// Panics unless the slices hold the planes.
pub(super) fn weight_grad(
    dy: &[f32],
    x: &[f32],
    n_out: usize,
    n_in: usize,
    plane: usize,
    dw: &mut [f32],
) {
    assert!(dy.len() >= n_out * plane && x.len() >= n_in * plane && dw.len() >= n_out * n_in);
    // 16 partial sums per weight, as plain floats (reduced below).
    let mut lanes = vec![0f32; n_out * n_in * 16];
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: AVX-512F is present; accesses stay inside the checked slices (positions
        // masked at the plane's end).
        unsafe { weight_grad_lanes(dy.as_ptr(), x.as_ptr(), n_out, n_in, plane, &mut lanes) };
        return reduce_all(&lanes, dw);
    }
    weight_grad_lanes_portable(dy, x, [n_out, n_in, plane], &mut lanes);
    reduce_all(&lanes, dw);
}

fn reduce_all(lanes: &[f32], dw: &mut [f32]) {
    for (d, l) in dw.iter_mut().zip(lanes.chunks_exact(16)) {
        *d = reduce_lanes(l);
    }
}

simd_fn! {
    /// The AVX-512 kernel's lanes without intrinsics: for each 512-position panel and each
    /// weight, lane `l` adds `dy · x` over the panel's positions `l, l+16, …` (zeros
    /// past the plane's end, as the kernel's masked loads give). Rust never fuses `a + b * c`,
    /// so every level rounds the product and the sum as the kernel does.
    /// Pairs of `dy` rows against pairs of `x` rows share their loads.
    fn weight_grad_lanes_portable(dy: &[f32], x: &[f32], dims: [usize; 3], lanes: &mut [f32]) {
        let [n_out, n_in, plane] = dims;
        let mut p0 = 0;
        while p0 < plane {
            let panel = (plane - p0).min(WG_PANEL);
            let mut o = 0;
            while o < n_out {
                let pair_o = o + 1 < n_out;
                let mut i = 0;
                while i < n_in {
                    let pair_i = i + 1 < n_in;
                    if pair_o && pair_i {
                        let (a0, a1) = (o * plane + p0, (o + 1) * plane + p0);
                        let (b0, b1) = (i * plane + p0, (i + 1) * plane + p0);
                        let mut acc = [[0f32; 16]; 4];
                        let at = [
                            (o * n_in + i) * 16,
                            (o * n_in + i + 1) * 16,
                            ((o + 1) * n_in + i) * 16,
                            ((o + 1) * n_in + i + 1) * 16,
                        ];
                        for (k, a) in acc.iter_mut().enumerate() {
                            a.copy_from_slice(&lanes[at[k]..at[k] + 16]);
                        }
                        lanes_2x2(
                            [&dy[a0..a0 + panel], &dy[a1..a1 + panel]],
                            [&x[b0..b0 + panel], &x[b1..b1 + panel]],
                            &mut acc,
                        );
                        for (k, a) in acc.iter().enumerate() {
                            lanes[at[k]..at[k] + 16].copy_from_slice(a);
                        }
                        i += 2;
                    } else {
                        for oo in o..(o + 1 + pair_o as usize) {
                            let at = (oo * n_in + i) * 16;
                            let mut acc = [0f32; 16];
                            acc.copy_from_slice(&lanes[at..at + 16]);
                            lanes_1x1(
                                &dy[oo * plane + p0..oo * plane + p0 + panel],
                                &x[i * plane + p0..i * plane + p0 + panel],
                                &mut acc,
                            );
                            lanes[at..at + 16].copy_from_slice(&acc);
                        }
                        i += 1;
                    }
                }
                o += 1 + pair_o as usize;
            }
            p0 += panel;
        }
    }
}

/// 16 lanes of `Σ dy·x` over the rows (zeros past their end), `acc` holding the lanes so far.
#[inline(always)]
fn lanes_1x1(dy: &[f32], x: &[f32], acc: &mut [f32; 16]) {
    let mut d_chunks = dy.chunks_exact(16);
    let mut x_chunks = x.chunks_exact(16);
    for (d, xs) in (&mut d_chunks).zip(&mut x_chunks) {
        for l in 0..16 {
            acc[l] += d[l] * xs[l];
        }
    }
    let (d, xs) = (padded(d_chunks.remainder()), padded(x_chunks.remainder()));
    if !d_chunks.remainder().is_empty() {
        for l in 0..16 {
            acc[l] += d[l] * xs[l];
        }
    }
}

/// [`lanes_1x1`] for 2 `dy` rows × 2 `x` rows at once: `acc` = `[d0·x0, d0·x1, d1·x0, d1·x1]`.
#[inline(always)]
fn lanes_2x2(dy: [&[f32]; 2], x: [&[f32]; 2], acc: &mut [[f32; 16]; 4]) {
    let [mut a00, mut a01, mut a10, mut a11] = *acc;
    let chunks = dy[0]
        .chunks_exact(16)
        .zip(dy[1].chunks_exact(16))
        .zip(x[0].chunks_exact(16).zip(x[1].chunks_exact(16)));
    let full = dy[0].len() / 16 * 16;
    for ((d0, d1), (x0, x1)) in chunks {
        for l in 0..16 {
            a00[l] += d0[l] * x0[l];
            a01[l] += d0[l] * x1[l];
            a10[l] += d1[l] * x0[l];
            a11[l] += d1[l] * x1[l];
        }
    }
    if full < dy[0].len() {
        let (d0, d1) = (padded(&dy[0][full..]), padded(&dy[1][full..]));
        let (x0, x1) = (padded(&x[0][full..]), padded(&x[1][full..]));
        for l in 0..16 {
            a00[l] += d0[l] * x0[l];
            a01[l] += d0[l] * x1[l];
            a10[l] += d1[l] * x0[l];
            a11[l] += d1[l] * x1[l];
        }
    }
    *acc = [a00, a01, a10, a11];
}

/// Up to 16 values, zeros after them.
#[inline(always)]
fn padded(v: &[f32]) -> [f32; 16] {
    std::array::from_fn(|l| v.get(l).copied().unwrap_or(0.0))
}

/// The 16 lanes summed pairwise in a fixed tree (same order whatever the machine).
fn reduce_lanes(l: &[f32]) -> f32 {
    let mut v: [f32; 16] = std::array::from_fn(|k| l[k]);
    let mut width = 8;
    while width > 0 {
        for k in 0..width {
            v[k] += v[k + width];
        }
        width /= 2;
    }
    v[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_lanes(
    dy: *const f32,
    x: *const f32,
    n_out: usize,
    n_in: usize,
    plane: usize,
    lanes: &mut [f32],
) {
    let mut p0 = 0;
    while p0 < plane {
        let panel = (plane - p0).min(WG_PANEL);
        let mut o0 = 0;
        while o0 < n_out {
            let rows = (n_out - o0).min(WG_ROWS);
            let mut i0 = 0;
            while i0 < n_in {
                let cols = (n_in - i0).min(WG_COLS);
                let t = WgTile {
                    dy: dy.add(o0 * plane + p0),
                    x: x.add(i0 * plane + p0),
                    plane,
                    len: panel,
                    lanes: lanes.as_mut_ptr().add((o0 * n_in + i0) * 16),
                    n_in,
                };
                match rows {
                    4 => wg_tile_cols::<4>(cols, &t),
                    3 => wg_tile_cols::<3>(cols, &t),
                    2 => wg_tile_cols::<2>(cols, &t),
                    _ => wg_tile_cols::<1>(cols, &t),
                }
                i0 += cols;
            }
            o0 += rows;
        }
        p0 += panel;
    }
}

/// [`wg_tile`] with `R` rows and `cols` (1..=[`WG_COLS`]) columns. (A 4 × 6 tile, 24
/// accumulators, was measured level at 64→32 and 5 % slower at 64→64:
/// BENCHMARKS.md, "Outputs written without zeroing".)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wg_tile_cols<const R: usize>(cols: usize, t: &WgTile) {
    match cols {
        4 => wg_tile::<R, 4>(t),
        3 => wg_tile::<R, 3>(t),
        2 => wg_tile::<R, 2>(t),
        _ => wg_tile::<R, 1>(t),
    }
}

/// One tile of [`weight_grad`]: `R` rows of `dy` against `C` rows of `x` over `len` positions,
/// added to the tile's 16-lane partial sums (`lanes`, row stride `n_in · 16`).
#[cfg(target_arch = "x86_64")]
struct WgTile {
    dy: *const f32,
    x: *const f32,
    plane: usize,
    len: usize,
    lanes: *mut f32,
    n_in: usize,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wg_tile<const R: usize, const C: usize>(t: &WgTile) {
    // acc[c][r]: x row c against dy row r.
    let mut acc = [[_mm512_setzero_ps(); R]; C];
    for (c, acc_c) in acc.iter_mut().enumerate() {
        for (r, a) in acc_c.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(t.lanes.add((r * t.n_in + c) * 16));
        }
    }
    let mut p = 0;
    while p < t.len {
        let m: __mmask16 = if t.len - p >= 16 {
            u16::MAX
        } else {
            (1u16 << (t.len - p)) - 1
        };
        let mut dyv = [_mm512_setzero_ps(); R];
        for (r, v) in dyv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(m, t.dy.add(r * t.plane + p));
        }
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(m, t.x.add(c * t.plane + p));
            for (a, &d) in acc_c.iter_mut().zip(&dyv) {
                // A product then a sum, not an FMA: the portable twin does the same two roundings
                // at every level (an FMA below AVX2 would be libm's slow `fmaf`).
                *a = _mm512_add_ps(*a, _mm512_mul_ps(d, xv));
            }
        }
        p += 16;
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (r, a) in acc_c.iter().enumerate() {
            _mm512_storeu_ps(t.lanes.add((r * t.n_in + c) * 16), *a);
        }
    }
}
