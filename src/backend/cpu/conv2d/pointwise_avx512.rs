//! 1×1 stride-1 convs with few channels (YOLOX's dark2 CSP, most of YOLOX-nano) on AVX-512
//! register-blocked kernels.
//!
//! Through the `gemm` crate these shapes (few channels, long planes: dark2's 64→32 at 160² is
//! m=32, k=64, n=25600 per item) spend as long packing and streaming the plane as multiplying,
//! and the weight gradient with 64 output channels ran at 35-65 GFLOP/s (2 cores). Here each
//! output tile lives in registers while the input channels stream past once: 32 positions of
//! every input row are copied side by side (rows of a 160² plane are a whole number of pages
//! apart and would evict each other from L1), prefetched two blocks ahead (64 rows in flight are
//! more streams than the hardware prefetcher follows). Non-temporal stores for the output were
//! tried and dropped: slower into freshly mapped buffers (63 → 36 GFLOP/s input gradient), no
//! gain into recycled ones. Measured in BENCHMARKS.md ("pointwise AVX-512 kernels").
//!
//! * [`channel_mix`]: `out[o, p] = Σ_i a(o, i) · src[i, p]`, the forward (`a = w`) and the input
//!   gradient (`a = wᵀ`). Each output element sums its inputs in index order with one FMA per
//!   term, so results do not depend on how positions are split across threads.
//! * [`weight_grad`]: `dw[o, i] = Σ_p dy[o, p] · x[i, p]` for one batch item, 16 lanes of
//!   partial sums per weight (lane l takes positions l, l+16, …, panel after panel) reduced at
//!   the end in a fixed tree order: deterministic too.
//!
//! Callers check [`available`] (AVX-512F at the current [`crate::backend::cpu::simd`] level).

use crate::backend::cpu::simd::{level, SimdLevel};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Output rows per register tile of [`channel_mix`] (× 2 vectors of 16 positions: 24 of the
/// 32 zmm registers hold accumulators).
const MIX_ROWS: usize = 12;
/// Positions per register tile of [`channel_mix`].
const MIX_COLS: usize = 32;
/// How far ahead (floats) each input row is prefetched: two tiles.
const PREFETCH_AHEAD: usize = 64;
/// Positions per thread task when one item's [`channel_mix`] is split across threads.
const MIX_TASK_POSITIONS: usize = 4096;
/// `weight_grad` tile: output rows × input rows of 16-lane accumulators.
const WG_ROWS: usize = 4;
const WG_COLS: usize = 4;
/// Positions per panel of [`weight_grad`]: the panel's rows (≤ a few hundred KB) stay in L2
/// while every tile of the weight gradient passes over them.
const WG_PANEL: usize = 512;

/// Channel counts (per group, in and out) up to which these kernels beat the `gemm` crate on
/// the benchmark VM; past them the crate's cache blocking wins (256→128 at 40²: weight
/// gradient 81 vs 175 GFLOP/s).
pub(super) const MAX_CHANNELS: usize = 64;

/// Whether these kernels may run: the CPU has AVX-512F and the SIMD level is not forced lower.
pub(super) fn available() -> bool {
    level() == SimdLevel::Avx512
}

/// A matrix `a(o, i) = data[o·row_stride + i·col_stride]` of mixing weights.
#[derive(Clone, Copy)]
pub(super) struct Mixing<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `out[o·plane + p] = Σ_i a(o, i) · src[i·plane + p]` for `o < n_out`, `i < n_in`, every `p`
/// (overwrites `out`). `threads > 1` splits the positions into tasks on the rayon pool.
///
/// Panics unless `src` holds `n_in` planes and `out` `n_out` planes, `a` covers `n_out × n_in`,
/// and [`available`] holds.
pub(super) fn channel_mix(
    a: Mixing,
    src: &[f32],
    n_in: usize,
    out: &mut [f32],
    n_out: usize,
    plane: usize,
    threads: usize,
) {
    assert!(available(), "channel_mix needs AVX-512F");
    assert!(src.len() >= n_in * plane && out.len() >= n_out * plane);
    if n_out == 0 || plane == 0 {
        return;
    }
    if n_in > 0 {
        let last = (n_out - 1) * a.row_stride + (n_in - 1) * a.col_stride;
        assert!(last < a.data.len(), "channel_mix: weights out of bounds");
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |begin: usize, end: usize| {
        let out_ptr = &out_ptr;
        // SAFETY: AVX-512F is present (`available`); every access stays inside the checked
        // buffers (rows < n_in / n_out, positions < plane, masked at the end); tasks write
        // disjoint position ranges of `out`, which is exclusively borrowed for the call.
        unsafe { mix_positions(a, src.as_ptr(), n_in, out_ptr.0, n_out, plane, begin, end) }
    };
    if threads > 1 && plane > MIX_TASK_POSITIONS {
        (0..plane.div_ceil(MIX_TASK_POSITIONS))
            .into_par_iter()
            .for_each(|t| {
                let begin = t * MIX_TASK_POSITIONS;
                run(begin, (begin + MIX_TASK_POSITIONS).min(plane))
            });
    } else {
        run(0, plane);
    }
}

/// A pointer that rayon tasks writing disjoint parts of one buffer may share.
struct SendPtr(*mut f32);
// SAFETY: only used by `channel_mix`, whose tasks write disjoint position ranges.
unsafe impl Sync for SendPtr {}

/// Lane masks for the two vectors of a tile holding `len` (1..=32) positions.
#[inline(always)]
fn tile_masks(len: usize) -> (__mmask16, __mmask16) {
    let bits = if len >= 32 {
        u32::MAX
    } else {
        (1u32 << len) - 1
    };
    (bits as u16, (bits >> 16) as u16)
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn mix_positions(
    a: Mixing,
    src: *const f32,
    n_in: usize,
    out: *mut f32,
    n_out: usize,
    plane: usize,
    begin: usize,
    end: usize,
) {
    // The block's input rows, copied next to each other: read in place, rows a whole number of
    // pages apart (160² floats = 25 pages) fall into the same L1 sets and evict each other
    // before the next row tile reuses them.
    let mut pack = vec![_mm512_setzero_ps(); 2 * n_in];
    let mut p0 = begin;
    while p0 < end {
        let len = (end - p0).min(MIX_COLS);
        let (m0, m1) = tile_masks(len);
        for (i, v) in pack.chunks_exact_mut(2).enumerate() {
            let row = src.add(i * plane + p0);
            // Masked lanes are not read (no fault), but the pointer past the end must not be
            // formed with `add`: wrapping arithmetic for it and for the prefetch addresses.
            v[0] = _mm512_maskz_loadu_ps(m0, row);
            v[1] = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PREFETCH_AHEAD) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PREFETCH_AHEAD + 16) as *const i8);
        }
        let mut o0 = 0;
        while o0 < n_out {
            let rows = (n_out - o0).min(MIX_ROWS);
            let t = MixTile {
                a,
                o0,
                pack: &pack,
                out,
                plane,
                p0,
                masks: (m0, m1),
            };
            match rows {
                12 => mix_tile::<12>(&t),
                11 => mix_tile::<11>(&t),
                10 => mix_tile::<10>(&t),
                9 => mix_tile::<9>(&t),
                8 => mix_tile::<8>(&t),
                7 => mix_tile::<7>(&t),
                6 => mix_tile::<6>(&t),
                5 => mix_tile::<5>(&t),
                4 => mix_tile::<4>(&t),
                3 => mix_tile::<3>(&t),
                2 => mix_tile::<2>(&t),
                _ => mix_tile::<1>(&t),
            }
            o0 += rows;
        }
        p0 += len;
    }
}

/// One register tile of [`channel_mix`]: output rows `o0..o0 + R`, positions `p0..p0 + 32`
/// (lanes past the plane's end masked off).
struct MixTile<'a> {
    a: Mixing<'a>,
    o0: usize,
    /// The block's input rows, two vectors each.
    pack: &'a [__m512],
    out: *mut f32,
    plane: usize,
    p0: usize,
    masks: (__mmask16, __mmask16),
}

#[inline(always)]
unsafe fn mix_tile<const R: usize>(t: &MixTile) {
    let (m0, m1) = t.masks;
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let w = t.a.data.as_ptr().add(t.o0 * t.a.row_stride);
    for (i, s) in t.pack.chunks_exact(2).enumerate() {
        let (s0, s1) = (s[0], s[1]);
        let wi = w.add(i * t.a.col_stride);
        for r in 0..R {
            let wv = _mm512_set1_ps(*wi.add(r * t.a.row_stride));
            acc0[r] = _mm512_fmadd_ps(wv, s0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(wv, s1, acc1[r]);
        }
    }
    for r in 0..R {
        let dst = t.out.add((t.o0 + r) * t.plane + t.p0);
        _mm512_mask_storeu_ps(dst, m0, acc0[r]);
        _mm512_mask_storeu_ps(dst.wrapping_add(16), m1, acc1[r]);
    }
}

/// `dw[o·n_in + i] = Σ_p dy[o·plane + p] · x[i·plane + p]` for one batch item (overwrites `dw`,
/// `n_out × n_in`). Single-threaded: callers run items in parallel.
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
                match (rows, cols) {
                    (4, 4) => wg_tile::<4, 4>(&t),
                    (4, 3) => wg_tile::<4, 3>(&t),
                    (4, 2) => wg_tile::<4, 2>(&t),
                    (4, _) => wg_tile::<4, 1>(&t),
                    (3, 4) => wg_tile::<3, 4>(&t),
                    (3, 3) => wg_tile::<3, 3>(&t),
                    (3, 2) => wg_tile::<3, 2>(&t),
                    (3, _) => wg_tile::<3, 1>(&t),
                    (2, 4) => wg_tile::<2, 4>(&t),
                    (2, 3) => wg_tile::<2, 3>(&t),
                    (2, 2) => wg_tile::<2, 2>(&t),
                    (2, _) => wg_tile::<2, 1>(&t),
                    (_, 4) => wg_tile::<1, 4>(&t),
                    (_, 3) => wg_tile::<1, 3>(&t),
                    (_, 2) => wg_tile::<1, 2>(&t),
                    (_, _) => wg_tile::<1, 1>(&t),
                }
                i0 += cols;
            }
            o0 += rows;
        }
        p0 += panel;
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
