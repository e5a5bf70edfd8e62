//! Launchers of `kernels/conv2d.cu`. CPU twin: `src/backend/cpu/conv2d.rs` (same
//! [`Conv2dGeometry`], same `fwd` / `bwd_input` / `bwd_weight`).
//!
//! The general path is im2col (or the input itself for 1×1, stride 1, no padding) + cuBLAS sgemm
//! per batch item and group (in bf16 product mode the column matrix is written as bf16 by
//! `conv2d_im2col_bf16` and only the other operand is rounded before the product); depthwise
//! convs (groups = C = K) use the direct kernels. The direct general kernels (`direct::*`) are
//! the GPU reference the fast path can be checked against. The weight gradient, whose reduction
//! over the output positions is split in slices on large maps, is in `conv2d/weight_grad.rs`;
//! the implicit-GEMM tensor-core kernels in `conv2d/implicit_gemm/`, and which of the two runs
//! a conv (the device's setting; by default `auto`'s measured choice) in `conv2d/algorithm.rs`.

use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr};

use super::bf16::{stores_bf16, to_bf16, widened_unless, CudaBuffer, CudaValues};
use super::context::{grid_1d, grid_per_item, ConvAlgorithm, CudaDevice, MatrixPrecision};
use super::gemm::{gemm_rm_batched_bf16_b, sgemm_rm_batched, used_len, Strided};
use super::launch::Kernel;
use super::structs::cuda_struct;
use super::{check_len, KernelFile};
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::{Error, Result};

pub mod algorithm;
pub mod direct;
pub mod implicit_gemm;
mod weight_grad;
use algorithm::{algorithm_for, ConvPass};
pub use weight_grad::bwd_weight;

/// Mirrors `struct ConvGeom` of conv2d.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    n: i64,
    c: i64,
    h: i64,
    w: i64,
    k: i64,
    kh: i64,
    kw: i64,
    stride: i64,
    pad: i64,
    groups: i64,
    ho: i64,
    wo: i64,
}
cuda_struct!(ConvGeom mirrors "ConvGeom" in KernelFile::Conv2d, size 96, align 8, {
    n @ 0, c @ 8, h @ 16, w @ 24, k @ 32, kh @ 40, kw @ 48, stride @ 56, pad @ 64, groups @ 72,
    ho @ 80, wo @ 88,
});

/// Check a geometry before any arithmetic on it (the CPU twin trusts its caller; here the
/// launcher is the last line before the GPU, so it refuses what would misindex).
pub fn check_geometry(g: &Conv2dGeometry) -> Result<()> {
    let bad = |msg: String| Err(Error::op("conv2d (cuda)", format!("{msg} in {g:?}")));
    if g.batch == 0 || g.in_channels == 0 || g.out_channels == 0 || g.in_h == 0 || g.in_w == 0 {
        return bad("empty tensor".into());
    }
    if g.kernel_h == 0 || g.kernel_w == 0 || g.stride == 0 || g.groups == 0 {
        return bad("kernel, stride and groups must be >= 1".into());
    }
    if !g.in_channels.is_multiple_of(g.groups) || !g.out_channels.is_multiple_of(g.groups) {
        return bad("groups must divide in and out channels".into());
    }
    if g.in_h + 2 * g.padding < g.kernel_h || g.in_w + 2 * g.padding < g.kernel_w {
        return bad("kernel larger than the padded input".into());
    }
    let lens = [g.x_len(), g.w_len(), g.y_len()];
    if lens.iter().any(|&l| l > i32::MAX as usize) {
        return bad("tensor too large for one launch (> 2^31 elements)".into());
    }
    Ok(())
}

fn geom(g: &Conv2dGeometry) -> ConvGeom {
    ConvGeom {
        n: g.batch as i64,
        c: g.in_channels as i64,
        h: g.in_h as i64,
        w: g.in_w as i64,
        k: g.out_channels as i64,
        kh: g.kernel_h as i64,
        kw: g.kernel_w as i64,
        stride: g.stride as i64,
        pad: g.padding as i64,
        groups: g.groups as i64,
        ho: g.out_h() as i64,
        wo: g.out_w() as i64,
    }
}

fn is_depthwise(g: &Conv2dGeometry) -> bool {
    g.groups == g.in_channels && g.groups == g.out_channels
}

fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0
}

fn launch_direct(
    dev: &CudaDevice,
    sym: &str,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    g: &Conv2dGeometry,
    per_item: bool,
) -> Result<()> {
    let cg = geom(g);
    let items = out.len();
    let cfg = if per_item {
        grid_per_item(items)
    } else {
        grid_1d(items)
    };
    let (a_len, b_len, out_len) = direct_lens(sym, g)?;
    Kernel::new(dev, KernelFile::Conv2d, sym)
        .reads("first operand", a, a_len)
        .reads("second operand", b, b_len)
        .writes("out", out, out_len)
        .value(&cg)
        .launch(cfg)
}

/// The lengths of a direct kernel's `(first operand, second operand, output)` from the
/// geometry: forward `(x, w, y)`, input gradient `(dy, w, dx)`, weight gradient `(dy, x, dw)`.
fn direct_lens(sym: &str, g: &Conv2dGeometry) -> Result<(usize, usize, usize)> {
    match sym {
        "conv2d_fwd_f32" | "conv2d_dw_fwd_f32" => Ok((g.x_len(), g.w_len(), g.y_len())),
        "conv2d_bwd_input_f32" | "conv2d_dw_bwd_input_f32" => Ok((g.y_len(), g.w_len(), g.x_len())),
        "conv2d_bwd_weight_f32" | "conv2d_dw_bwd_weight_f32" => {
            Ok((g.y_len(), g.x_len(), g.w_len()))
        }
        other => Err(Error::op(other, "not a direct conv kernel")),
    }
}

/// The input as the conv reads it: bf16 storage stays bf16 in bf16 product mode (the column
/// builder and the pointwise product take the bits as they are), except for the depthwise
/// kernels, which read f32; otherwise bf16 is widened into `wide`.
fn readable<'a>(
    dev: &CudaDevice,
    op: &str,
    x: CudaValues<'a>,
    g: &Conv2dGeometry,
    wide: &'a mut Option<CudaSlice<f32>>,
) -> Result<CudaValues<'a>> {
    check_input_len(op, x, g)?;
    widened_unless(dev, x, stores_bf16(dev) && !is_depthwise(g), wide)
}

/// `x` holds the geometry's N·C·H·W elements, in whichever storage.
fn check_input_len(op: &str, x: CudaValues, g: &Conv2dGeometry) -> Result<()> {
    if x.len() != g.x_len() {
        return Err(Error::ShapeMismatch {
            op: op.to_string(),
            expected: format!("x of {} elements", g.x_len()),
            got: format!("{} elements", x.len()),
        });
    }
    Ok(())
}

/// The f32 buffer of an input [`readable`] widened (the depthwise kernels' input).
fn f32_input<'a>(op: &str, x: CudaValues<'a>) -> Result<&'a CudaSlice<f32>> {
    match x {
        CudaValues::F32(s) => Ok(s),
        CudaValues::Bf16(_) => Err(Error::op(op, "bf16 input reached an f32-only kernel")),
    }
}

/// Forward: `y = conv(x, w)`. Outputs here are allocated without zeroing: every path (the
/// batched products with beta 0, col2im, the depthwise kernels) writes each element. `x` may be
/// in bf16 storage ([`super::bf16`]); with `out_bf16` (bf16 product mode) the products write y
/// as bf16 bits, rounded once from their f32 accumulators (the depthwise kernels write f32).
pub fn fwd(
    dev: &CudaDevice,
    x: CudaValues,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
    out_bf16: bool,
) -> Result<CudaBuffer> {
    check_geometry(g)?;
    let mut wide = None;
    let x = readable(dev, "conv2d_fwd", x, g, &mut wide)?;
    check_len("conv2d_fwd", "w", w, g.w_len())?;
    let run = |a| fwd_by(dev, a, x, w, g, out_bf16);
    run(algorithm_for(
        dev,
        g,
        ConvPass::Forward,
        (x, out_bf16),
        run,
    )?)
}

/// [`fwd`] by the given algorithm (on checked arguments).
fn fwd_by(
    dev: &CudaDevice,
    algorithm: ConvAlgorithm,
    x: CudaValues,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
    out_bf16: bool,
) -> Result<CudaBuffer> {
    if algorithm == ConvAlgorithm::Implicit {
        return implicit_gemm::fwd(dev, x, w, g, out_bf16);
    }
    if is_depthwise(g) {
        let xs = f32_input("conv2d_fwd", x)?;
        let mut y = dev.alloc(g.y_len())?;
        launch_direct(dev, "conv2d_dw_fwd_f32", xs, w, &mut y, g, false)?;
        return Ok(CudaBuffer::F32(y));
    }
    let mut y = if out_bf16 && stores_bf16(dev) {
        CudaBuffer::Bf16(dev.alloc_u16(g.y_len())?)
    } else {
        CudaBuffer::F32(dev.alloc(g.y_len())?)
    };
    let d = Dims::of(g);
    for grp in 0..g.groups {
        let w_g = w.slice(grp * d.kg * d.ckk..(grp + 1) * d.kg * d.ckk);
        for (n0, items) in d.chunks(g) {
            let y_off = (n0 * g.out_channels + grp * d.kg) * d.hw_out;
            let shared_w = Strided {
                ld: d.ckk,
                stride: 0,
            };
            let y_items = Strided {
                ld: d.hw_out,
                stride: g.out_channels * d.hw_out,
            };
            let shape = (d.kg, d.hw_out, d.ckk);
            // x itself (pointwise) or the chunk's column matrices, item i's `[ckk, HWo]` a
            // stride apart.
            let built;
            let (b, b_items) = if is_pointwise(g) {
                let x_off = (n0 * g.in_channels + grp * d.cg) * d.hw_in;
                let x_items = Strided {
                    ld: d.hw_out,
                    stride: g.in_channels * d.hw_in,
                };
                (Operand::of_input(x, x_off), x_items)
            } else {
                built = Columns::build(dev, x, g, &d, (n0, items, grp))?;
                let col_items = Strided {
                    ld: d.hw_out,
                    stride: d.ckk * d.hw_out,
                };
                (built.operand(0), col_items)
            };
            match &mut y {
                CudaBuffer::F32(y) => product(
                    dev,
                    false,
                    shape,
                    &w_g,
                    shared_w,
                    &b,
                    b_items,
                    &mut y.slice_mut(y_off..),
                    y_items,
                    items,
                )?,
                CudaBuffer::Bf16(y) => product_to_bf16(
                    dev,
                    shape,
                    (&w_g, shared_w),
                    (&b, b_items),
                    (&mut y.slice_mut(y_off..), y_items),
                    items,
                )?,
            }
        }
    }
    Ok(y)
}

/// The column matrices `[items, ckk, Ho·Wo]` of items `n0..n0 + items`, group `grp`: f32, or
/// in bf16 product mode bf16 bits written by `conv2d_im2col_bf16` directly (a third of the
/// traffic of an f32 matrix that the product would then round: f32 write, f32 read, bf16 write).
enum Columns {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

impl Columns {
    /// From an input [`readable`] made: bf16 bits give bf16 columns
    /// (`conv2d_im2col_bf16_of_bf16`), f32 gives bf16 columns in bf16 product mode
    /// (`conv2d_im2col_bf16`) and f32 columns otherwise (`conv2d_im2col_f32`).
    fn build(
        dev: &CudaDevice,
        x: CudaValues,
        g: &Conv2dGeometry,
        d: &Dims,
        (n0, items, grp): (usize, usize, usize),
    ) -> Result<Columns> {
        let len = items * d.ckk * d.hw_out;
        let chunk = (n0, items, grp);
        Ok(match x {
            CudaValues::Bf16(bits) => {
                let mut col = dev.alloc_u16(len)?;
                im2col(dev, "conv2d_im2col_bf16_of_bf16", bits, &mut col, g, chunk)?;
                Columns::Bf16(col)
            }
            CudaValues::F32(xs) if dev.matrix_precision() == MatrixPrecision::Bf16 => {
                let mut col = dev.alloc_u16(len)?;
                im2col(dev, "conv2d_im2col_bf16", xs, &mut col, g, chunk)?;
                Columns::Bf16(col)
            }
            CudaValues::F32(xs) => {
                let mut col = dev.alloc(len)?;
                im2col(dev, "conv2d_im2col_f32", xs, &mut col, g, chunk)?;
                Columns::F32(col)
            }
        })
    }
    /// The matrices from element `off` on, as the right operand of [`product`].
    fn operand(&self, off: usize) -> Operand<'_> {
        match self {
            Columns::F32(c) => Operand::F32(c.slice(off..)),
            Columns::Bf16(c) => Operand::Bf16(c.slice(off..)),
        }
    }
}

/// The right operand of a conv product: f32 values (rounded by the product itself in bf16 mode)
/// or bf16 bits.
enum Operand<'a> {
    F32(CudaView<'a, f32>),
    Bf16(CudaView<'a, u16>),
}

impl<'a> Operand<'a> {
    /// The input itself from element `off` on (the pointwise convs' operand).
    fn of_input(x: CudaValues<'a>, off: usize) -> Operand<'a> {
        match x {
            CudaValues::F32(s) => Operand::F32(s.slice(off..)),
            CudaValues::Bf16(b) => Operand::Bf16(b.slice(off..)),
        }
    }
}

/// `c[i] = a[i] · op(b[i])` (row-major, `b` transposed when `trans_b`) for `batch` items.
#[allow(clippy::too_many_arguments)]
fn product<A: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    trans_b: bool,
    shape: (usize, usize, usize),
    a: &A,
    sa: Strided,
    b: &Operand,
    sb: Strided,
    c: &mut C,
    sc: Strided,
    batch: usize,
) -> Result<()> {
    match b {
        Operand::F32(b) => {
            sgemm_rm_batched(dev, false, trans_b, shape, a, sa, b, sb, c, sc, batch, 0.0)
        }
        Operand::Bf16(b) => {
            gemm_rm_batched_bf16_b(dev, false, trans_b, shape, a, sa, b, sb, c, sc, batch, 0.0)
        }
    }
}

/// [`product`] (no transposes) writing `c` as bf16 bits (bf16 storage, bf16 product mode): an
/// f32 right operand is rounded to bf16 first (only the part the product reads).
fn product_to_bf16<A: DevicePtr<f32>, C: DevicePtrMut<u16>>(
    dev: &CudaDevice,
    (m, n, k): (usize, usize, usize),
    (a, sa): (&A, Strided),
    (b, sb): (&Operand, Strided),
    (c, sc): (&mut C, Strided),
    batch: usize,
) -> Result<()> {
    let shape = (m, n, k);
    match b {
        Operand::Bf16(bits) => {
            gemm_rm_batched_bf16_b(dev, false, false, shape, a, sa, bits, sb, c, sc, batch, 0.0)
        }
        Operand::F32(values) => {
            let bits = to_bf16(dev, values, used_len(k, n, sb, batch).min(values.len()))?;
            let bits = bits.slice(..);
            gemm_rm_batched_bf16_b(
                dev, false, false, shape, a, sa, &bits, sb, c, sc, batch, 0.0,
            )
        }
    }
}

/// Per-group sizes of a geometry and the batch chunks the im2col buffer is sized for.
struct Dims {
    cg: usize,
    kg: usize,
    hw_in: usize,
    hw_out: usize,
    ckk: usize,
}

/// Largest im2col buffer one chunk of items may take (floats; 256 MiB).
const COL_BUDGET: usize = 1 << 26;

impl Dims {
    fn of(g: &Conv2dGeometry) -> Dims {
        let cg = g.in_channels / g.groups;
        Dims {
            cg,
            kg: g.out_channels / g.groups,
            hw_in: g.in_h * g.in_w,
            hw_out: g.out_h() * g.out_w(),
            ckk: cg * g.kernel_h * g.kernel_w,
        }
    }
    /// `(first item, items)` runs covering the batch, each within [`COL_BUDGET`].
    fn chunks(&self, g: &Conv2dGeometry) -> Vec<(usize, usize)> {
        let per = (COL_BUDGET / (self.ckk * self.hw_out).max(1)).clamp(1, g.batch.max(1));
        (0..g.batch)
            .step_by(per)
            .map(|n0| (n0, per.min(g.batch - n0)))
            .collect()
    }
}

/// The column matrix `[items, C/g·kh·kw, Ho·Wo]` of items `n0..n0 + items`, group `grp`, by the
/// im2col kernel `sym` (input `X` f32 or bf16 bits, columns `T` f32 or bf16 bits, as
/// [`Columns::build`] pairs them).
fn im2col<X: DeviceRepr, T: DeviceRepr>(
    dev: &CudaDevice,
    sym: &str,
    x: &CudaSlice<X>,
    col: &mut CudaSlice<T>,
    g: &Conv2dGeometry,
    (n0, items, grp): (usize, usize, usize),
) -> Result<()> {
    let cg = geom(g);
    let (n64, items64, grp64) = (n0 as i64, items as i64, grp as i64);
    let len = col.len();
    // n0 + items <= N and grp < groups.
    Kernel::new(dev, KernelFile::Conv2d, sym)
        .reads("x [N, C, H, W]", x, g.x_len())
        .writes("columns", col, col_len(g, items))
        .value(&cg)
        .value(&n64)
        .value(&items64)
        .value(&grp64)
        .launch(grid_1d(len))
}

/// Elements of the column matrices of `items` items of one group: items·C/g·kh·kw·Ho·Wo.
fn col_len(g: &Conv2dGeometry, items: usize) -> usize {
    items * Dims::of(g).ckk * g.out_h() * g.out_w()
}

fn col2im(
    dev: &CudaDevice,
    col: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    g: &Conv2dGeometry,
    n0: usize,
    items: usize,
    grp: usize,
) -> Result<()> {
    let sym = "conv2d_col2im_f32";
    let cg = geom(g);
    let (n64, items64, grp64) = (n0 as i64, items as i64, grp as i64);
    let len = items * (g.in_channels / g.groups) * g.in_h * g.in_w;
    // Writes only the (n, grp) slabs of dx for n in n0..n0+items.
    Kernel::new(dev, KernelFile::Conv2d, sym)
        .reads("columns", col, col_len(g, items))
        .writes("dx [N, C, H, W]", dx, g.x_len())
        .value(&cg)
        .value(&n64)
        .value(&items64)
        .value(&grp64)
        .launch(grid_1d(len))
}

/// Gradient with respect to the input: `dx = conv_transpose(dy, w)`.
pub fn bwd_input(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    check_geometry(g)?;
    check_len("conv2d_bwd_input", "dy", dy, g.y_len())?;
    check_len("conv2d_bwd_input", "w", w, g.w_len())?;
    let run = |a| bwd_input_by(dev, a, dy, w, g);
    let f32_out = |a| run(a).map(CudaBuffer::F32);
    let dy_values = (CudaValues::F32(dy), false);
    run(algorithm_for(
        dev,
        g,
        ConvPass::InputGrad,
        dy_values,
        f32_out,
    )?)
}

/// [`bwd_input`] by the given algorithm (on checked arguments).
fn bwd_input_by(
    dev: &CudaDevice,
    algorithm: ConvAlgorithm,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    if algorithm == ConvAlgorithm::Implicit {
        return implicit_gemm::bwd_input(dev, dy, w, g);
    }
    let mut dx = dev.alloc(g.x_len())?;
    if is_depthwise(g) {
        launch_direct(dev, "conv2d_dw_bwd_input_f32", dy, w, &mut dx, g, false)?;
        return Ok(dx);
    }
    let d = Dims::of(g);
    for grp in 0..g.groups {
        let w_g = w.slice(grp * d.kg * d.ckk..(grp + 1) * d.kg * d.ckk);
        for (n0, items) in d.chunks(g) {
            let dy_off = (n0 * g.out_channels + grp * d.kg) * d.hw_out;
            let dy_ng = dy.slice(dy_off..);
            let shared_w = Strided {
                ld: d.ckk,
                stride: 0,
            };
            let dy_items = Strided {
                ld: d.hw_out,
                stride: g.out_channels * d.hw_out,
            };
            // dcol [ckk × HWo] = w_gᵀ [ckk × kg] · dy_ng [kg × HWo], per item
            let shape = (d.ckk, d.hw_out, d.kg);
            if is_pointwise(g) {
                let x_off = (n0 * g.in_channels + grp * d.cg) * d.hw_in;
                let mut dx_ng = dx.slice_mut(x_off..);
                let dx_items = Strided {
                    ld: d.hw_out,
                    stride: g.in_channels * d.hw_in,
                };
                sgemm_rm_batched(
                    dev, true, false, shape, &w_g, shared_w, &dy_ng, dy_items, &mut dx_ng,
                    dx_items, items, 0.0,
                )?;
            } else {
                let mut dcol = dev.alloc(items * d.ckk * d.hw_out)?;
                let col_items = Strided {
                    ld: d.hw_out,
                    stride: d.ckk * d.hw_out,
                };
                sgemm_rm_batched(
                    dev, true, false, shape, &w_g, shared_w, &dy_ng, dy_items, &mut dcol,
                    col_items, items, 0.0,
                )?;
                col2im(dev, &dcol, &mut dx, g, n0, items, grp)?;
            }
        }
    }
    Ok(dx)
}
