//! The weight gradient of 1×1 stride-1 convs with few channels (YOLOX's dark2 CSP, most of
//! YOLOX-nano) on an AVX-512 kernel.
//!
//! `dw[o, i] = Σ_p dy[o, p] · x[i, p]` is a product with a long reduction (a whole plane, 25,600
//! positions at dark2) and a tiny result. Through the `gemm` crate it ran at 35–64 GFLOP/s (2
//! cores) with 64 output channels and ~80–95 with 32: the crate packs both long operands for a
//! result that fits in registers. Here a 4 × 4 tile of weights keeps 16-lane partial sums in
//! registers while 512-position panels of the rows stream past (lane l takes positions l,
//! l+16, …, panel after panel; the lanes are reduced at the end in a fixed tree order), so the
//! result does not depend on the thread count or the machine beyond AVX-512 itself.
//!
//! Also tried: a register-blocked forward / input gradient (12 × 32 output tiles, input rows
//! packed per block, prefetch, optionally non-temporal stores). It was level with the crate at
//! 64→32 and 10–15 % slower at 64→64 and 32→64 (BENCHMARKS.md, "Run-time SIMD"), so those
//! stay on the crate.
//!
//! Callers check [`available`] (AVX-512F at the current [`crate::backend::cpu::simd`] level).

use crate::backend::cpu::simd::{level, SimdLevel};
use std::arch::x86_64::*;

/// `weight_grad` tile: output rows × input rows of 16-lane accumulators.
const WG_ROWS: usize = 4;
const WG_COLS: usize = 4;
/// Positions per panel of [`weight_grad`]: the panel's rows (≤ a few hundred KB) stay in L2
/// while every tile of the weight gradient passes over them.
const WG_PANEL: usize = 512;

/// Channel counts (per group, in and out) up to which this kernel beats the `gemm` crate on the
/// benchmark VM; past them the crate's cache blocking wins (256→128 at 40²: 81 vs 175 GFLOP/s).
pub(super) const MAX_CHANNELS: usize = 64;

/// Whether the kernel may run: the CPU has AVX-512F and the SIMD level is not forced lower.
pub(super) fn available() -> bool {
    level() == SimdLevel::Avx512
}

/// `dw[o·n_in + i] = Σ_p dy[o·plane + p] · x[i·plane + p]` for one batch item (overwrites `dw`,
/// `n_out × n_in`). Single-threaded: callers run batch items in parallel (a batch smaller than
/// the thread pool leaves threads idle here).
///
/// Panics unless the slices hold the planes and [`available`] holds.
pub(super) fn weight_grad(
    dy: &[f32],
    x: &[f32],
    n_out: usize,
    n_in: usize,
    plane: usize,
    dw: &mut [f32],
) {
    assert!(available(), "weight_grad needs AVX-512F");
    assert!(dy.len() >= n_out * plane && x.len() >= n_in * plane && dw.len() >= n_out * n_in);
    // 16 partial sums per weight, as plain floats (reduced below).
    let mut lanes = vec![0f32; n_out * n_in * 16];
    // SAFETY: AVX-512F is present; accesses stay inside the checked slices (positions masked
    // at the plane's end).
    unsafe { weight_grad_lanes(dy.as_ptr(), x.as_ptr(), n_out, n_in, plane, &mut lanes) };
    for (d, l) in dw.iter_mut().zip(lanes.chunks_exact(16)) {
        *d = reduce_lanes(l);
    }
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
struct WgTile {
    dy: *const f32,
    x: *const f32,
    plane: usize,
    len: usize,
    lanes: *mut f32,
    n_in: usize,
}

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
                *a = _mm512_fmadd_ps(d, xv, *a);
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
