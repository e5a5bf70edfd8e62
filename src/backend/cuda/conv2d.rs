//! Launchers of `kernels/conv2d.cu`. CPU twin: `src/backend/cpu/conv2d.rs` (same
//! [`Conv2dGeometry`], same `fwd` / `bwd_input` / `bwd_weight`).
//!
//! The default path is im2col (or the input itself for 1×1, stride 1, no padding) + cuBLAS sgemm
//! per batch item and group; depthwise convs (groups = C = K) use the direct kernels. The direct
//! general kernels (`direct::*`) are the GPU reference the fast path can be checked against.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use super::context::{cuda_err, grid_1d, grid_per_item, CudaDevice};
use super::gemm::sgemm_rm;
use super::{check_len, KernelFile};
use crate::backend::cpu::conv2d::Conv2dGeometry;
use crate::{Error, Result};

/// Mirrors `struct ConvGeom` of conv2d.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvGeom {
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
// SAFETY: twelve i64, `repr(C)`, the layout of the CUDA struct.
unsafe impl DeviceRepr for ConvGeom {}

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
    if g.in_channels % g.groups != 0 || g.out_channels % g.groups != 0 {
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
    let f = dev.function(KernelFile::Conv2d, sym)?;
    let cg = geom(g);
    let items = out.len();
    let cfg = if per_item {
        grid_per_item(items)
    } else {
        grid_1d(items)
    };
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(a).arg(b).arg(out).arg(&cg);
    // SAFETY: the launcher checked every buffer's length against the geometry.
    unsafe { lb.launch(cfg) }.map_err(|e| cuda_err(sym, e))?;
    Ok(())
}

/// Forward: `y = conv(x, w)`.
pub fn fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    check_geometry(g)?;
    check_len("conv2d_fwd", "x", x, g.x_len())?;
    check_len("conv2d_fwd", "w", w, g.w_len())?;
    let mut y = dev.zeros(g.y_len())?;
    if is_depthwise(g) {
        launch_direct(dev, "conv2d_dw_fwd_f32", x, w, &mut y, g, false)?;
        return Ok(y);
    }
    let (cg, kg) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let (hw_in, hw_out) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let ckk = cg * g.kernel_h * g.kernel_w;
    let mut col = if is_pointwise(g) {
        None
    } else {
        Some(dev.zeros(ckk * hw_out)?)
    };
    for n in 0..g.batch {
        for grp in 0..g.groups {
            let w_g = w.slice(grp * kg * ckk..(grp + 1) * kg * ckk);
            let y_off = (n * g.out_channels + grp * kg) * hw_out;
            let mut y_ng = y.slice_mut(y_off..y_off + kg * hw_out);
            match col.as_mut() {
                None => {
                    let x_off = (n * g.in_channels + grp * cg) * hw_in;
                    let x_ng = x.slice(x_off..x_off + cg * hw_in);
                    sgemm_rm(
                        dev, false, false, kg, hw_out, ckk, &w_g, ckk, &x_ng, hw_out, &mut y_ng,
                        0.0,
                    )?;
                }
                Some(col) => {
                    im2col(dev, x, col, g, n, grp)?;
                    sgemm_rm(
                        dev, false, false, kg, hw_out, ckk, &w_g, ckk, &*col, hw_out, &mut y_ng,
                        0.0,
                    )?;
                }
            }
        }
    }
    Ok(y)
}

fn im2col(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    col: &mut CudaSlice<f32>,
    g: &Conv2dGeometry,
    n: usize,
    grp: usize,
) -> Result<()> {
    let sym = "conv2d_im2col_f32";
    let f = dev.function(KernelFile::Conv2d, sym)?;
    let cg = geom(g);
    let (n64, grp64) = (n as i64, grp as i64);
    let items = col.len();
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(x).arg(col).arg(&cg).arg(&n64).arg(&grp64);
    // SAFETY: col holds C/g·kh·kw·Ho·Wo elements; n < N and grp < groups.
    unsafe { lb.launch(grid_1d(items)) }
        .map(|_| ())
        .map_err(|e| cuda_err(sym, e))
}

fn col2im(
    dev: &CudaDevice,
    col: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    g: &Conv2dGeometry,
    n: usize,
    grp: usize,
) -> Result<()> {
    let sym = "conv2d_col2im_f32";
    let f = dev.function(KernelFile::Conv2d, sym)?;
    let cg = geom(g);
    let (n64, grp64) = (n as i64, grp as i64);
    let items = (g.in_channels / g.groups) * g.in_h * g.in_w;
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(col).arg(dx).arg(&cg).arg(&n64).arg(&grp64);
    // SAFETY: writes only the (n, grp) slab of dx, reads col within C/g·kh·kw·Ho·Wo.
    unsafe { lb.launch(grid_1d(items)) }
        .map(|_| ())
        .map_err(|e| cuda_err(sym, e))
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
    let mut dx = dev.zeros(g.x_len())?;
    if is_depthwise(g) {
        launch_direct(dev, "conv2d_dw_bwd_input_f32", dy, w, &mut dx, g, false)?;
        return Ok(dx);
    }
    let (cg, kg) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let (hw_in, hw_out) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let ckk = cg * g.kernel_h * g.kernel_w;
    let pointwise = is_pointwise(g);
    let mut dcol = if pointwise {
        None
    } else {
        Some(dev.zeros(ckk * hw_out)?)
    };
    for n in 0..g.batch {
        for grp in 0..g.groups {
            let w_g = w.slice(grp * kg * ckk..(grp + 1) * kg * ckk);
            let dy_off = (n * g.out_channels + grp * kg) * hw_out;
            let dy_ng = dy.slice(dy_off..dy_off + kg * hw_out);
            // dcol [ckk × HWo] = w_gᵀ [ckk × kg] · dy_ng [kg × HWo]
            match dcol.as_mut() {
                None => {
                    let x_off = (n * g.in_channels + grp * cg) * hw_in;
                    let mut dx_ng = dx.slice_mut(x_off..x_off + cg * hw_in);
                    sgemm_rm(
                        dev, true, false, ckk, hw_out, kg, &w_g, ckk, &dy_ng, hw_out, &mut dx_ng,
                        0.0,
                    )?;
                }
                Some(dcol) => {
                    sgemm_rm(
                        dev, true, false, ckk, hw_out, kg, &w_g, ckk, &dy_ng, hw_out, dcol, 0.0,
                    )?;
                    col2im(dev, dcol, &mut dx, g, n, grp)?;
                }
            }
        }
    }
    Ok(dx)
}

/// Gradient with respect to the weight, summed over the batch.
pub fn bwd_weight(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    check_geometry(g)?;
    check_len("conv2d_bwd_weight", "dy", dy, g.y_len())?;
    check_len("conv2d_bwd_weight", "x", x, g.x_len())?;
    let mut dw = dev.zeros(g.w_len())?;
    if is_depthwise(g) {
        launch_direct(dev, "conv2d_dw_bwd_weight_f32", dy, x, &mut dw, g, true)?;
        return Ok(dw);
    }
    let (cg, kg) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let (hw_in, hw_out) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let ckk = cg * g.kernel_h * g.kernel_w;
    let mut col = if is_pointwise(g) {
        None
    } else {
        Some(dev.zeros(ckk * hw_out)?)
    };
    for grp in 0..g.groups {
        for n in 0..g.batch {
            let dy_off = (n * g.out_channels + grp * kg) * hw_out;
            let dy_ng = dy.slice(dy_off..dy_off + kg * hw_out);
            let beta = if n == 0 { 0.0 } else { 1.0 };
            let mut dw_g = dw.slice_mut(grp * kg * ckk..(grp + 1) * kg * ckk);
            // dw_g [kg × ckk] (+)= dy_ng [kg × HWo] · colᵀ [HWo × ckk]
            match col.as_mut() {
                None => {
                    let x_off = (n * g.in_channels + grp * cg) * hw_in;
                    let x_ng = x.slice(x_off..x_off + cg * hw_in);
                    sgemm_rm(
                        dev, false, true, kg, ckk, hw_out, &dy_ng, hw_out, &x_ng, hw_out,
                        &mut dw_g, beta,
                    )?;
                }
                Some(col) => {
                    im2col(dev, x, col, g, n, grp)?;
                    sgemm_rm(
                        dev, false, true, kg, ckk, hw_out, &dy_ng, hw_out, &*col, hw_out,
                        &mut dw_g, beta,
                    )?;
                }
            }
        }
    }
    Ok(dw)
}

/// The direct kernels (one thread per output element; bwd_weight one block per weight): the GPU
/// reference for the im2col + cuBLAS path, and the path for shapes cuBLAS does not like.
pub mod direct {
    use super::*;

    pub fn fwd(
        dev: &CudaDevice,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &Conv2dGeometry,
    ) -> Result<CudaSlice<f32>> {
        check_geometry(g)?;
        check_len("conv2d_fwd", "x", x, g.x_len())?;
        check_len("conv2d_fwd", "w", w, g.w_len())?;
        let mut y = dev.zeros(g.y_len())?;
        launch_direct(dev, "conv2d_fwd_f32", x, w, &mut y, g, false)?;
        Ok(y)
    }

    pub fn bwd_input(
        dev: &CudaDevice,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &Conv2dGeometry,
    ) -> Result<CudaSlice<f32>> {
        check_geometry(g)?;
        check_len("conv2d_bwd_input", "dy", dy, g.y_len())?;
        check_len("conv2d_bwd_input", "w", w, g.w_len())?;
        let mut dx = dev.zeros(g.x_len())?;
        launch_direct(dev, "conv2d_bwd_input_f32", dy, w, &mut dx, g, false)?;
        Ok(dx)
    }

    pub fn bwd_weight(
        dev: &CudaDevice,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        g: &Conv2dGeometry,
    ) -> Result<CudaSlice<f32>> {
        check_geometry(g)?;
        check_len("conv2d_bwd_weight", "dy", dy, g.y_len())?;
        check_len("conv2d_bwd_weight", "x", x, g.x_len())?;
        let mut dw = dev.zeros(g.w_len())?;
        launch_direct(dev, "conv2d_bwd_weight_f32", dy, x, &mut dw, g, true)?;
        Ok(dw)
    }
}
