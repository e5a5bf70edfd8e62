//! The direct kernels (one thread per output element; bwd_weight one block per weight): the GPU
//! reference for the im2col + cuBLAS path, and the path for shapes cuBLAS does not like.

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
