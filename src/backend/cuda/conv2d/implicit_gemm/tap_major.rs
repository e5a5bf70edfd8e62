//! The tap-major implicit-GEMM forms (`*_tap_*` in conv2d_mma.cuh): the weights packed in
//! (tap, channel) order by their own kernels, then products reducing over runs of up to 32
//! channels at one tap; for every conv whose summed-over channel count is a multiple of 32.

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::*;

/// The tap-major forms (`*_tap_*`, conv2d_mma.cuh) reduce over (tap, channel), a run of up to 32
/// consecutive channels at one tap: they need the summed-over channel count (C in the forward,
/// K in the input gradient) to be a multiple of this. Every conv of YOLOX-s but the stem's.
pub(super) const TAP_MAJOR_CHANNELS: usize = 32;

/// The tap-major kernels of one arithmetic: the weight packings (into bf16 bits for the bf16
/// arithmetic, f32 for the others), the forward by input storage and output format where the
/// arithmetic has that form, and the input gradient.
pub(super) struct TapKernels {
    pack_fwd: &'static str,
    pub(super) pack_bwd_input: &'static str,
    fwd_bf16_to_bf16: Option<Pick>,
    fwd_bf16_to_f32: Option<Pick>,
    fwd_f32_to_f32: Option<Pick>,
    pub(super) bwd_input: Pick,
}

pub(super) fn tap_kernels(p: MatrixPrecision) -> TapKernels {
    let tf32 = |fwd64, fwd128, dx64, dx128| TapKernels {
        pack_fwd: "conv2d_tf32_pack_fwd",
        pack_bwd_input: "conv2d_tf32_pack_bwd_input",
        fwd_bf16_to_bf16: None,
        fwd_bf16_to_f32: None,
        fwd_f32_to_f32: Some(Pick::both(fwd64, fwd128)),
        bwd_input: Pick::both(dx64, dx128),
    };
    match p {
        MatrixPrecision::Bf16 => TapKernels {
            pack_fwd: "conv2d_mma_pack_fwd",
            pack_bwd_input: "conv2d_mma_pack_bwd_input",
            fwd_bf16_to_bf16: Some(Pick::both(
                "conv2d_mma_tap_fwd_bf16_to_bf16",
                "conv2d_mma_m128_tap_fwd_bf16_to_bf16",
            )),
            fwd_bf16_to_f32: Some(Pick::short("conv2d_mma_tap_fwd_bf16_to_f32")),
            fwd_f32_to_f32: None,
            bwd_input: Pick::both(
                "conv2d_mma_tap_bwd_input_f32",
                "conv2d_mma_m128_tap_bwd_input_f32",
            ),
        },
        MatrixPrecision::Tf32 => tf32(
            "conv2d_tf32_tap_fwd_f32",
            "conv2d_tf32_m128_tap_fwd_f32",
            "conv2d_tf32_tap_bwd_input_f32",
            "conv2d_tf32_m128_tap_bwd_input_f32",
        ),
        MatrixPrecision::F32 => tf32(
            "conv2d_tf32x3_tap_fwd_f32",
            "conv2d_tf32x3_m128_tap_fwd_f32",
            "conv2d_tf32x3_tap_bwd_input_f32",
            "conv2d_tf32x3_m128_tap_bwd_input_f32",
        ),
    }
}

/// `wp` filled by the packing kernel `sym` (`wp.len()` = rows · taps · inner channels), the
/// geometry `mg` naming the stride phase for the input gradient's packing.
pub(super) fn packed_weights<T: DeviceRepr>(
    dev: &CudaDevice,
    (file, sym): (KernelFile, &'static str),
    w: &CudaSlice<f32>,
    mut wp: CudaSlice<T>,
    mg: &MmaConvGeom,
) -> Result<CudaSlice<T>> {
    // The caller sized `wp` to the rows · taps · inner elements of its packing; grid-stride.
    let len = wp.len();
    let (_, w_len, _) = mg.lens();
    Kernel::new(dev, file, sym)
        .reads("w [K, C, kh, kw]", w, w_len)
        .writes("packed weights", &mut wp, len)
        .value(mg)
        .launch(grid_1d(len))?;
    Ok(wp)
}

/// The forward by a tap-major kernel, where the arithmetic has one for this input storage and
/// output format (None: the channel-major forms run).
pub(super) fn fwd_taps(
    dev: &CudaDevice,
    (file, t): (KernelFile, &TapKernels),
    (x, bf16_out): (CudaValues, bool),
    w: &CudaSlice<f32>,
    g: &Conv2dGeometry,
    mg: &MmaConvGeom,
) -> Result<Option<CudaBuffer>> {
    let (n, w_len) = (g.y_len(), g.w_len());
    let run = |pick: Option<Pick>| pick.map(|p| ((file, t.pack_fwd), (file, p), g, mg));
    Ok(match (x, bf16_out) {
        (CudaValues::Bf16(x), true) => match run(t.fwd_bf16_to_bf16) {
            Some(r) => Some(CudaBuffer::Bf16(fwd_packed(
                dev,
                r,
                x,
                w,
                dev.alloc_u16(w_len)?,
                dev.alloc_u16(n)?,
            )?)),
            None => None,
        },
        (CudaValues::Bf16(x), false) => match run(t.fwd_bf16_to_f32) {
            Some(r) => Some(CudaBuffer::F32(fwd_packed(
                dev,
                r,
                x,
                w,
                dev.alloc_u16(w_len)?,
                dev.alloc(n)?,
            )?)),
            None => None,
        },
        (CudaValues::F32(x), false) => match run(t.fwd_f32_to_f32) {
            Some(r) => Some(CudaBuffer::F32(fwd_packed(
                dev,
                r,
                x,
                w,
                dev.alloc(w_len)?,
                dev.alloc(n)?,
            )?)),
            None => None,
        },
        (CudaValues::F32(_), true) => None,
    })
}

/// The weights packed into `wp` by `pack`, then the tap-major forward `run` into `y`.
#[allow(clippy::type_complexity)]
pub(super) fn fwd_packed<X: DeviceRepr, W: DeviceRepr, Y: DeviceRepr>(
    dev: &CudaDevice,
    (pack, run, g, mg): (
        (KernelFile, &'static str),
        (KernelFile, Pick),
        &Conv2dGeometry,
        &MmaConvGeom,
    ),
    x: &CudaSlice<X>,
    w: &CudaSlice<f32>,
    wp: CudaSlice<W>,
    y: CudaSlice<Y>,
) -> Result<CudaSlice<Y>> {
    let wp = packed_weights(dev, pack, w, wp, mg)?;
    let shape = (g.out_channels, g.batch * g.out_h() * g.out_w(), 1);
    fwd_into(dev, run, shape, x, &wp, y, mg)
}
