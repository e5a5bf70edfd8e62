//! Launchers of `kernels/conv2d_mma.cu` and `kernels/conv2d_tf32.cu` (their tiling and gathers
//! in `kernels/conv2d_mma.cuh`): the convolution's three products as implicit GEMMs on
//! the tensor cores, with no column matrix and one launch for the whole batch. The arithmetic
//! follows the device's [`MatrixPrecision`]: bf16 operands (`conv2d_mma_*`), TF32 operands
//! (`conv2d_tf32_*`), or in f32 three TF32 products per product (`conv2d_tf32x3_*`: each
//! operand split into a TF32 part and a TF32 remainder, good to about f32 rounding); all
//! accumulate in f32. CPU twin: `src/backend/cpu/conv2d.rs`.
//!
//! Taken for convs with one group when the device's
//! [`ConvAlgorithm`](super::super::ConvAlgorithm) is `Implicit`, or is
//! `Auto` and they are the faster (`conv2d/algorithm.rs`; `SSOD_CUDA_CONV=implicit|auto`, or
//! `CudaDevice::set_conv_algorithm`); `Auto` is the default (checked in emulation without a GPU
//! and on an H200: BENCHMARKS.md, docs/cuda.md). The selftest checks them either way.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};

use super::super::bf16::{stores_bf16, widened_unless, CudaBuffer, CudaValues};
use super::super::context::{grid_1d, CudaDevice, MatrixPrecision};
use super::super::launch::Kernel;
use super::super::structs::cuda_struct;
use super::super::{check_len, KernelFile};
use super::{check_geometry, check_input_len};
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::{Error, Result};

mod tap_major;

use tap_major::{fwd_taps, packed_weights, tap_kernels, TAP_MAJOR_CHANNELS};

/// Mirrors `struct MmaConvGeom` of conv2d_mma.cuh (all i32: [`check_geometry`] keeps every
/// tensor under 2^31 elements).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MmaConvGeom {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    k: i32,
    kh: i32,
    kw: i32,
    stride: i32,
    pad: i32,
    ho: i32,
    wo: i32,
    split_len: i32,
    phase_h: i32,
    phase_w: i32,
}
cuda_struct!(MmaConvGeom mirrors "MmaConvGeom" in KernelFile::Conv2dMma, size 56, align 4, {
    n @ 0, c @ 4, h @ 8, w @ 12, k @ 16, kh @ 20, kw @ 24, stride @ 28, pad @ 32, ho @ 36,
    wo @ 40, split_len @ 44, phase_h @ 48, phase_w @ 52,
});

impl MmaConvGeom {
    /// Elements of x `[N, C, H, W]`, w `[K, C, kh, kw]` and y `[N, K, Ho, Wo]`.
    fn lens(&self) -> (usize, usize, usize) {
        let p = |v: [i32; 4]| v.iter().map(|&d| d.max(0) as usize).product::<usize>();
        (
            p([self.n, self.c, self.h, self.w]),
            p([self.k, self.c, self.kh, self.kw]),
            p([self.n, self.k, self.ho, self.wo]),
        )
    }
}

/// The block tiles of conv2d_mma.cuh: 64 or 128 rows (`TM`, 2·TM threads) by `TILE_N` columns;
/// `TILE_K` is the largest of the arithmetics' `K_TILE` (32 bf16, 16 TF32, 8 for the f32
/// split), a multiple of the others, so a split of whole `TILE_K` runs is whole tiles for all.
const TILE_N: usize = 128;
const TILE_K: usize = 32;

/// Whether `dev` has the tensor cores these kernels need (`mma.sync` with bf16 and TF32
/// operands: compute capability 8.0 or newer).
pub fn supported(dev: &CudaDevice) -> bool {
    dev.compute_capability() >= (8, 0)
}

/// A kernel in its 64-row form and, where its file has one, its 128-row form.
#[derive(Clone, Copy)]
struct Pick {
    rows64: &'static str,
    rows128: Option<&'static str>,
}

impl Pick {
    const fn both(rows64: &'static str, rows128: &'static str) -> Pick {
        Pick {
            rows64,
            rows128: Some(rows128),
        }
    }
    const fn short(rows64: &'static str) -> Pick {
        Pick {
            rows64,
            rows128: None,
        }
    }
    /// The form for a product of `m_len` rows (128-row tiles above 64 rows: the gathered
    /// operand then serves twice the rows) and its launch, one block per tile, `splits` times.
    fn launch_for(
        self,
        m_len: usize,
        n_len: usize,
        splits: usize,
    ) -> Result<(&'static str, LaunchConfig)> {
        let (sym, rows) = match self.rows128 {
            Some(tall) if m_len > 64 => (tall, 128),
            _ => (self.rows64, 64),
        };
        let blocks = m_len.div_ceil(rows) * n_len.div_ceil(TILE_N) * splits;
        if blocks > i32::MAX as usize {
            return Err(Error::op(
                "conv2d (cuda, implicit gemm)",
                format!("{blocks} blocks exceed one launch"),
            ));
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (2 * rows as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        Ok((sym, cfg))
    }
}

/// The kernels of one arithmetic on f32 operands (the bf16 arithmetic has bf16-storage
/// variants as well, picked in [`fwd`] and [`bwd_weight`]), and the file they are in.
struct Kernels {
    file: KernelFile,
    fwd: Pick,
    bwd_input: Pick,
    bwd_weight: Pick,
    sum_splits: &'static str,
}

fn kernels(p: MatrixPrecision) -> Kernels {
    match p {
        MatrixPrecision::Bf16 => Kernels {
            file: KernelFile::Conv2dMma,
            sum_splits: "conv2d_mma_sum_splits",
            fwd: Pick::short("conv2d_mma_fwd_f32_to_f32"),
            bwd_input: Pick::both("conv2d_mma_bwd_input_f32", "conv2d_mma_m128_bwd_input_f32"),
            bwd_weight: Pick::short("conv2d_mma_bwd_weight_f32"),
        },
        MatrixPrecision::Tf32 => Kernels {
            file: KernelFile::Conv2dTf32,
            sum_splits: "conv2d_tf32_sum_splits",
            fwd: Pick::both("conv2d_tf32_fwd_f32", "conv2d_tf32_m128_fwd_f32"),
            bwd_input: Pick::both(
                "conv2d_tf32_bwd_input_f32",
                "conv2d_tf32_m128_bwd_input_f32",
            ),
            bwd_weight: Pick::both(
                "conv2d_tf32_bwd_weight_f32",
                "conv2d_tf32_m128_bwd_weight_f32",
            ),
        },
        MatrixPrecision::F32 => Kernels {
            file: KernelFile::Conv2dTf32,
            sum_splits: "conv2d_tf32_sum_splits",
            fwd: Pick::both("conv2d_tf32x3_fwd_f32", "conv2d_tf32x3_m128_fwd_f32"),
            bwd_input: Pick::both(
                "conv2d_tf32x3_bwd_input_f32",
                "conv2d_tf32x3_m128_bwd_input_f32",
            ),
            bwd_weight: Pick::both(
                "conv2d_tf32x3_bwd_weight_f32",
                "conv2d_tf32x3_m128_bwd_weight_f32",
            ),
        },
    }
}

fn geom(g: &Conv2dGeometry, split_len: usize) -> Result<MmaConvGeom> {
    check_geometry(g)?;
    if g.groups != 1 {
        return Err(Error::op(
            "conv2d (cuda, implicit gemm)",
            format!("groups must be 1, got {} in {g:?}", g.groups),
        ));
    }
    let i = |v: usize| v as i32; // every size is below a tensor length < 2^31
    Ok(MmaConvGeom {
        n: i(g.batch),
        c: i(g.in_channels),
        h: i(g.in_h),
        w: i(g.in_w),
        k: i(g.out_channels),
        kh: i(g.kernel_h),
        kw: i(g.kernel_w),
        stride: i(g.stride),
        pad: i(g.padding),
        ho: i(g.out_h()),
        wo: i(g.out_w()),
        split_len: i(split_len),
        phase_h: 0,
        phase_w: 0,
    })
}

/// One stride phase along one axis, as `StridePhase` of conv2d_mma.cuh: the input positions
/// `first + s·i` (`count` of them) with `(position + pad) % s == phase`, and the `taps` kernel
/// offsets `phase + s·a` that reach them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StridePhase {
    pub first: usize,
    pub count: usize,
    pub taps: usize,
}

impl StridePhase {
    pub(crate) fn of(phase: usize, size: usize, kernel: usize, stride: usize, pad: usize) -> Self {
        let first = (phase + stride - pad % stride) % stride;
        StridePhase {
            first,
            count: if first < size {
                (size - first).div_ceil(stride)
            } else {
                0
            },
            taps: if phase < kernel {
                (kernel - phase).div_ceil(stride)
            } else {
                0
            },
        }
    }
}

/// [`supported`], or the reason and the way out.
fn check_tensor_cores(dev: &CudaDevice) -> Result<()> {
    if supported(dev) {
        return Ok(());
    }
    Err(Error::op(
        "conv2d (cuda, implicit gemm)",
        format!(
            "the implicit-GEMM convs need compute capability 8.0 or newer (bf16/TF32 \
             mma.sync); this GPU is {}: use the im2col convs (SSOD_CUDA_CONV unset, im2col \
             or auto)",
            dev.arch()
        ),
    ))
}

/// Runs `pick` over the `m_len × n_len` product (`splits` times) on `(a, b, c)`, which hold
/// (at least) `lens` elements: the ones the geometry `mg` makes the kernel index.
fn launch<A: DeviceRepr, B: DeviceRepr, C: DeviceRepr>(
    dev: &CudaDevice,
    (file, pick): (KernelFile, Pick),
    (m_len, n_len, splits): (usize, usize, usize),
    (a, b, c): (&CudaSlice<A>, &CudaSlice<B>, &mut CudaSlice<C>),
    (lens, mg): ([usize; 3], &MmaConvGeom),
) -> Result<()> {
    let (sym, cfg) = pick.launch_for(m_len, n_len, splits)?;
    check_tensor_cores(dev)?;
    // The grid is the kernel's tile count.
    Kernel::new(dev, file, sym)
        .reads("first operand", a, lens[0])
        .reads("second operand", b, lens[1])
        .writes("product", c, lens[2])
        .value(mg)
        .launch(cfg)
}

/// Forward: `y = conv(x, w)`, x f32 or bf16 bits; y bf16 bits when `out_bf16`, bf16 storage
/// is on and the device is in bf16 product mode, f32 otherwise.
pub fn fwd(
    dev: &CudaDevice,
    x: CudaValues,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
    out_bf16: bool,
) -> Result<CudaBuffer> {
    let mg = geom(g, 0)?;
    check_len("conv2d_fwd", "w", w, g.w_len())?;
    check_input_len("conv2d_fwd", x, g)?;
    let shape = (g.out_channels, g.batch * g.out_h() * g.out_w(), 1);
    let precision = dev.matrix_precision();
    // Only the bf16 arithmetic reads and writes bf16 storage.
    let mut wide = None;
    let (x, bf16_out) = if precision == MatrixPrecision::Bf16 {
        (x, out_bf16 && stores_bf16(dev))
    } else {
        (CudaValues::F32(f32_values(dev, x, &mut wide)?), false)
    };
    let k = kernels(precision);
    // Tap-major where the channels allow (every conv of YOLOX-s but the stem).
    if g.in_channels.is_multiple_of(TAP_MAJOR_CHANNELS) {
        check_tensor_cores(dev)?;
        let t = tap_kernels(precision);
        if let Some(y) = fwd_taps(dev, (k.file, &t), (x, bf16_out), w, g, &mg)? {
            return Ok(y);
        }
    }
    let pick = match (x, bf16_out) {
        (CudaValues::F32(_), false) => k.fwd,
        (CudaValues::F32(_), true) => Pick::short("conv2d_mma_fwd_f32_to_bf16"),
        (CudaValues::Bf16(_), false) => Pick::short("conv2d_mma_fwd_bf16_to_f32"),
        (CudaValues::Bf16(_), true) => Pick::both(
            "conv2d_mma_fwd_bf16_to_bf16",
            "conv2d_mma_m128_fwd_bf16_to_bf16",
        ),
    };
    let run = (k.file, pick);
    let n = g.y_len();
    Ok(match (x, bf16_out) {
        (CudaValues::F32(x), false) => {
            CudaBuffer::F32(fwd_into(dev, run, shape, x, w, dev.alloc(n)?, &mg)?)
        }
        (CudaValues::F32(x), true) => {
            CudaBuffer::Bf16(fwd_into(dev, run, shape, x, w, dev.alloc_u16(n)?, &mg)?)
        }
        (CudaValues::Bf16(x), false) => {
            CudaBuffer::F32(fwd_into(dev, run, shape, x, w, dev.alloc(n)?, &mg)?)
        }
        (CudaValues::Bf16(x), true) => {
            CudaBuffer::Bf16(fwd_into(dev, run, shape, x, w, dev.alloc_u16(n)?, &mg)?)
        }
    })
}

/// [`launch`] of a forward kernel writing `y`, which it returns (`w` the weights as the kernel
/// takes them: f32, or packed for the tap-major forms).
fn fwd_into<X: DeviceRepr, W: DeviceRepr, Y: DeviceRepr>(
    dev: &CudaDevice,
    run: (KernelFile, Pick),
    shape: (usize, usize, usize),
    x: &CudaSlice<X>,
    w: &CudaSlice<W>,
    mut y: CudaSlice<Y>,
    mg: &MmaConvGeom,
) -> Result<CudaSlice<Y>> {
    // The packed weights of the tap-major forms have the weights' length.
    let (x_len, w_len, y_len) = mg.lens();
    launch(dev, run, shape, (x, w, &mut y), ([x_len, w_len, y_len], mg))?;
    Ok(y)
}

/// Gradient with respect to the input (f32).
pub fn bwd_input(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    let mg = geom(g, 0)?;
    check_len("conv2d_bwd_input", "dy", dy, g.y_len())?;
    check_len("conv2d_bwd_input", "w", w, g.w_len())?;
    let s = g.stride;
    // A phase without taps (a kernel smaller than the stride) leaves its positions at zero.
    let mut dx = if g.kernel_h < s || g.kernel_w < s {
        dev.zeros(g.x_len())?
    } else {
        dev.alloc(g.x_len())?
    };
    let precision = dev.matrix_precision();
    let k = kernels(precision);
    let taps =
        Some(tap_kernels(precision)).filter(|_| g.out_channels.is_multiple_of(TAP_MAJOR_CHANNELS));
    if taps.is_some() {
        // Before the packing kernel's file is compiled (the mma forms need sm_80).
        check_tensor_cores(dev)?;
    }
    for phase_h in 0..s {
        let ph = StridePhase::of(phase_h, g.in_h, g.kernel_h, s, g.padding);
        for phase_w in 0..s {
            let pw = StridePhase::of(phase_w, g.in_w, g.kernel_w, s, g.padding);
            if ph.count * pw.count == 0 || ph.taps * pw.taps == 0 {
                continue;
            }
            let shape = (g.in_channels, g.batch * ph.count * pw.count, 1);
            let mg = MmaConvGeom {
                phase_h: phase_h as i32,
                phase_w: phase_w as i32,
                ..mg
            };
            match &taps {
                Some(t) => {
                    let len = g.in_channels * ph.taps * pw.taps * g.out_channels;
                    let (pack, run) = ((k.file, t.pack_bwd_input), (k.file, t.bwd_input));
                    // The bf16 arithmetic packs bf16 bits, the others f32.
                    let lens = ([g.y_len(), len, g.x_len()], &mg);
                    if precision == MatrixPrecision::Bf16 {
                        let wp = packed_weights(dev, pack, w, dev.alloc_u16(len)?, &mg)?;
                        launch(dev, run, shape, (dy, &wp, &mut dx), lens)?;
                    } else {
                        let wp = packed_weights(dev, pack, w, dev.alloc(len)?, &mg)?;
                        launch(dev, run, shape, (dy, &wp, &mut dx), lens)?;
                    }
                }
                None => {
                    let lens = ([g.y_len(), g.w_len(), g.x_len()], &mg);
                    launch(dev, (k.file, k.bwd_input), shape, (dy, w, &mut dx), lens)?
                }
            }
        }
    }
    Ok(dx)
}

/// `x` as f32 (bf16 storage widened into `wide`: only the bf16 arithmetic reads bf16 bits).
fn f32_values<'a>(
    dev: &CudaDevice,
    x: CudaValues<'a>,
    wide: &'a mut Option<CudaSlice<f32>>,
) -> Result<&'a CudaSlice<f32>> {
    match widened_unless(dev, x, false, wide)? {
        CudaValues::F32(x) => Ok(x),
        CudaValues::Bf16(_) => Err(Error::op(
            "conv2d (cuda, implicit gemm)",
            "bf16 input was not widened",
        )),
    }
}

/// Blocks the weight gradient aims at: a few waves of the largest GPUs' resident blocks.
const WEIGHT_GRAD_BLOCKS: usize = 1024;
/// Each split reduces at least this many tiles of TILE_K output positions.
const MIN_TILES_PER_SPLIT: usize = 8;
/// At most this many floats of partial sums.
const PARTIAL_BUDGET: usize = 1 << 26;

/// How the weight gradient's reduction over `r_len` output positions is split across blocks:
/// `(splits, positions per split)`, a multiple of TILE_K so no tile straddles two splits.
pub(crate) fn weight_grad_splits(m_len: usize, n_len: usize, r_len: usize) -> (usize, usize) {
    // Counted in 64-row tiles whichever height runs (a fixed function of the shape).
    let tiles = m_len.div_ceil(64) * n_len.div_ceil(TILE_N);
    let k_tiles = r_len.div_ceil(TILE_K).max(1);
    let by_budget = PARTIAL_BUDGET / (m_len * n_len).max(1);
    let want = (WEIGHT_GRAD_BLOCKS / tiles.max(1))
        .min(k_tiles.div_ceil(MIN_TILES_PER_SPLIT))
        .min(by_budget)
        .max(1);
    let split_len = k_tiles.div_ceil(want) * TILE_K;
    (r_len.div_ceil(split_len).max(1), split_len)
}

/// Gradient with respect to the weight, summed over the batch: per-split partial sums, then
/// `conv2d_mma_sum_splits` (`conv2d_tf32_sum_splits`) adds them in split order (deterministic,
/// no atomics).
pub fn bwd_weight(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    x: CudaValues,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    check_geometry(g)?;
    check_len("conv2d_bwd_weight", "dy", dy, g.y_len())?;
    check_input_len("conv2d_bwd_weight", x, g)?;
    let (m_len, n_len) = (g.out_channels, g.w_len() / g.out_channels);
    let r_len = g.batch * g.out_h() * g.out_w();
    let (splits, split_len) = weight_grad_splits(m_len, n_len, r_len);
    let mg = geom(g, split_len)?;
    let shape = (m_len, n_len, splits);
    let mut dw = dev.alloc(g.w_len())?;
    let mut part = if splits == 1 {
        None
    } else {
        Some(dev.alloc(splits * g.w_len())?)
    };
    let target = part.as_mut().unwrap_or(&mut dw);
    // One w-sized slab of partial sums per split (dw itself when there is one split).
    let lens = ([g.y_len(), g.x_len(), splits * g.w_len()], &mg);
    let precision = dev.matrix_precision();
    match x {
        CudaValues::Bf16(x) if precision == MatrixPrecision::Bf16 => {
            let pick = Pick::both(
                "conv2d_mma_bwd_weight_bf16",
                "conv2d_mma_m128_bwd_weight_bf16",
            );
            launch(
                dev,
                (KernelFile::Conv2dMma, pick),
                shape,
                (dy, x, target),
                lens,
            )?
        }
        x => {
            let mut wide = None;
            let x = f32_values(dev, x, &mut wide)?;
            let k = kernels(precision);
            launch(dev, (k.file, k.bwd_weight), shape, (dy, x, target), lens)?
        }
    }
    if let Some(part) = part {
        let k = kernels(precision);
        let sym = k.sum_splits;
        let (len, count) = (g.w_len() as i64, splits as i32);
        Kernel::new(dev, k.file, sym)
            .reads("partial sums [splits, w]", &part, splits * g.w_len())
            .writes("dw", &mut dw, g.w_len())
            .value(&len)
            .value(&count)
            .launch(grid_1d(g.w_len()))?;
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_phases_cover_every_input_position_and_tap_once() {
        for (size, kernel, stride, pad) in [
            (13, 3, 2, 1),
            (11, 5, 2, 2),
            (9, 1, 2, 0),
            (10, 3, 3, 0),
            (7, 3, 1, 1),
        ] {
            let mut positions = vec![0; size];
            let mut taps = vec![0; kernel];
            for phase in 0..stride {
                let p = StridePhase::of(phase, size, kernel, stride, pad);
                for i in 0..p.count {
                    let at = p.first + stride * i;
                    assert_eq!((at + pad) % stride, phase);
                    positions[at] += 1;
                }
                for a in 0..p.taps {
                    taps[phase + stride * a] += 1;
                }
                // The kernel's first output row: (first + pad - phase) / stride, exact.
                assert_eq!((p.first + pad + stride - phase) % stride, 0);
            }
            assert!(
                positions.iter().all(|&c| c == 1),
                "{size} {kernel} {stride} {pad}: {positions:?}"
            );
            assert!(
                taps.iter().all(|&c| c == 1),
                "{size} {kernel} {stride} {pad}: {taps:?}"
            );
        }
        // 1×1 stride 2: the odd positions get no tap.
        assert_eq!(StridePhase::of(1, 9, 1, 2, 0).taps, 0);
    }

    #[test]
    fn weight_grad_splits_cover_the_positions_in_whole_tiles() {
        // The selftest rows' shapes (run.py mirrors this function and checks the same counts).
        assert_eq!(weight_grad_splits(70, 45, 2 * 11 * 13), (2, 160));
        assert_eq!(weight_grad_splits(6, 3 * 25, 2 * 20 * 18), (3, 256));
        assert_eq!(weight_grad_splits(9, 54, 3 * 7 * 6), (1, 128));
        // YOLOX-s shapes at 640/16: a 32→64 3×3 s2 conv on 320² and a 512→512 1×1 on 20².
        for (m, n, r) in [
            (64, 288, 16 * 160 * 160),
            (512, 512, 16 * 20 * 20),
            (1, 1, 1),
        ] {
            let (splits, len) = weight_grad_splits(m, n, r);
            assert_eq!(len % TILE_K, 0);
            assert!(
                splits * len >= r && (splits - 1) * len < r,
                "{m} {n} {r}: {splits} × {len}"
            );
            assert!(splits * m * n <= PARTIAL_BUDGET.max(m * n));
            let blocks = m.div_ceil(64) * n.div_ceil(TILE_N) * splits;
            assert!(blocks <= WEIGHT_GRAD_BLOCKS.max(m.div_ceil(64) * n.div_ceil(TILE_N)));
        }
    }
}
