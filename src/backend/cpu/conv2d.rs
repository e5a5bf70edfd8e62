//! conv2d on the CPU: `x [N,C,H,W], w [K,C/g,kh,kw] -> y [N,K,Ho,Wo]`, f32, symmetric stride and
//! zero padding, groups (depthwise when groups = C = K). No bias in the kernels: `ops::conv2d`
//! adds it with [`bias_add`] and takes its gradient with [`bias_grad`].
//!
//! Three paths, chosen by [`conv_path`] from the shapes alone:
//! - [`ConvPath::Depthwise`] (groups = C = K): direct loops, `depthwise.rs`;
//! - [`ConvPath::Pointwise`] (1×1, stride 1, no padding): gemms on the input planes, no im2col;
//! - [`ConvPath::Im2col`] (everything else, grouped included): im2col + gemm per item and group.
//!
//! `reference` holds the plain loops the fast paths are tested against (tests/cpu_conv2d.rs).
//! Results do not depend on the rayon thread count; see `gemm_path.rs` for the threading scheme.

mod depthwise;
mod gemm_path;
mod im2col;
mod pointwise_weight_grad;

use crate::backend::conv_geometry::Conv2dGeometry;

use super::uninit;
use std::mem::MaybeUninit;

/// Which fast kernel handles a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// groups = C = K: direct loops over planes.
    Depthwise,
    /// 1×1, stride 1, padding 0: the input planes are the gemm operand.
    Pointwise,
    /// im2col + gemm (per group when grouped).
    Im2col,
}

/// The path [`fwd`], [`bwd_input`] and [`bwd_weight`] take for `g`.
pub fn conv_path(g: &Conv2dGeometry) -> ConvPath {
    if g.groups > 1 && g.groups == g.in_channels && g.groups == g.out_channels {
        ConvPath::Depthwise
    } else if is_pointwise(g) {
        ConvPath::Pointwise
    } else {
        ConvPath::Im2col
    }
}

fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0
}

/// Forward: `y = conv(x, w)`.
pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    // SAFETY: `fwd_uninit` writes every element.
    unsafe { fresh_output(g.y_len(), |y| fwd_uninit(x, w, g, y)) }
}

/// Gradient with respect to the input: `dx = conv_transpose(dy, w)`.
pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    // SAFETY: `bwd_input_uninit` writes every element.
    unsafe { fresh_output(g.x_len(), |dx| bwd_input_uninit(dy, w, g, dx)) }
}

/// Gradient with respect to the weight, summed over the batch.
pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    let mut dw = vec![0f32; g.w_len()];
    bwd_weight_into(dy, x, g, &mut dw);
    dw
}

/// Outputs at least this large (bytes) ask the kernel for transparent huge pages.
const HUGE_OUTPUT_BYTES: usize = 8 << 20;

/// An output buffer of `len` floats filled by `write`, never zeroed: the conv kernels overwrite
/// every element, and zeroing first cost a memset of the whole output (the 26-52 MB outputs of
/// YOLOX-S's dark2 1×1 conv: a fifth of its forward, BENCHMARKS.md
/// "Outputs written without zeroing").
///
/// Large buffers may come from a fresh `mmap` (glibc serves requests over its mmap threshold,
/// at most 32 MiB, that way, unless [`super::tune_allocator`] ran), and the first write to each
/// 4 KiB page then costs a page fault: on the benchmark VM, writing a fresh 52 MB buffer took
/// ~37 ms against ~2.5 ms for a recycled one, more than the conv's own arithmetic on YOLOX-S's
/// large maps. `MADV_HUGEPAGE` on the buffer's 2 MiB-aligned interior, before the first write,
/// makes those faults 2 MiB each (measured: 52 MB in ~10 ms), which is what the system's THP
/// setting "madvise" expects. Only the aligned interior is advised, so memory use does not grow.
///
/// # Safety
/// `write` must write every element.
unsafe fn fresh_output(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let fill = |buf: &mut [MaybeUninit<f32>]| {
        if std::mem::size_of_val(buf) >= HUGE_OUTPUT_BYTES {
            advise_huge_pages(buf);
        }
        write(buf)
    };
    // SAFETY: the caller's contract.
    unsafe { uninit::filled_vec(len, fill).0 }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &[MaybeUninit<f32>]) {
    const HUGE: usize = 2 << 20;
    let begin = v.as_ptr() as usize;
    let (start, end) = (
        begin.next_multiple_of(HUGE),
        (begin + std::mem::size_of_val(v)) / HUGE * HUGE,
    );
    if end > start {
        // SAFETY: [start, end) lies inside `v`'s allocation; MADV_HUGEPAGE only changes how the
        // kernel backs those pages (contents are preserved), and a failure is harmless (ignored).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &[MaybeUninit<f32>]) {}

// The `_into` forms overwrite a caller's buffer (any contents). Large fresh outputs cost page
// faults (a 100 MB `dx` is 25k of them, a sizeable share of a conv's time on the benchmark
// shapes), so an engine that recycles activation buffers should call these.

/// [`fwd`] into `y` (`g.y_len()` elements, overwritten).
pub fn fwd_into(x: &[f32], w: &[f32], g: &Conv2dGeometry, y: &mut [f32]) {
    // SAFETY: the kernels write only floats.
    fwd_uninit(x, w, g, unsafe { uninit::as_uninit(y) });
}

/// [`fwd`] into `y`, every element of which is written.
fn fwd_uninit(x: &[f32], w: &[f32], g: &Conv2dGeometry, y: &mut [MaybeUninit<f32>]) {
    debug_assert_eq!(x.len(), g.x_len(), "conv2d fwd: x length");
    debug_assert_eq!(w.len(), g.w_len(), "conv2d fwd: w length");
    debug_assert_eq!(y.len(), g.y_len(), "conv2d fwd: y length");
    match conv_path(g) {
        ConvPath::Depthwise => depthwise::fwd(x, w, g, y),
        ConvPath::Pointwise | ConvPath::Im2col => gemm_path::fwd(x, w, g, y),
    }
}

/// [`bwd_input`] into `dx` (`g.x_len()` elements, overwritten).
pub fn bwd_input_into(dy: &[f32], w: &[f32], g: &Conv2dGeometry, dx: &mut [f32]) {
    // SAFETY: the kernels write only floats.
    bwd_input_uninit(dy, w, g, unsafe { uninit::as_uninit(dx) });
}

/// [`bwd_input`] into `dx`, every element of which is written.
fn bwd_input_uninit(dy: &[f32], w: &[f32], g: &Conv2dGeometry, dx: &mut [MaybeUninit<f32>]) {
    debug_assert_eq!(dy.len(), g.y_len(), "conv2d bwd_input: dy length");
    debug_assert_eq!(w.len(), g.w_len(), "conv2d bwd_input: w length");
    debug_assert_eq!(dx.len(), g.x_len(), "conv2d bwd_input: dx length");
    match conv_path(g) {
        ConvPath::Depthwise => depthwise::bwd_input(dy, w, g, dx),
        ConvPath::Pointwise | ConvPath::Im2col => gemm_path::bwd_input(dy, w, g, dx),
    }
}

/// [`bwd_weight`] into `dw` (`g.w_len()` elements, overwritten).
pub fn bwd_weight_into(dy: &[f32], x: &[f32], g: &Conv2dGeometry, dw: &mut [f32]) {
    debug_assert_eq!(dy.len(), g.y_len(), "conv2d bwd_weight: dy length");
    debug_assert_eq!(x.len(), g.x_len(), "conv2d bwd_weight: x length");
    debug_assert_eq!(dw.len(), g.w_len(), "conv2d bwd_weight: dw length");
    match conv_path(g) {
        ConvPath::Depthwise => depthwise::bwd_weight(dy, x, g, dw),
        ConvPath::Pointwise | ConvPath::Im2col => gemm_path::bwd_weight(dy, x, g, dw),
    }
}

/// `y[n, c, ..] += bias[c]` over an NCHW tensor with `plane = H·W` (the op's bias after the conv).
pub fn bias_add(y: &mut [f32], bias: &[f32], plane: usize) {
    use rayon::prelude::*;
    let channels = bias.len();
    debug_assert!(
        channels == 0 || plane == 0 || y.len().is_multiple_of(channels * plane),
        "conv2d bias_add: y is not [N, channels, plane]"
    );
    if plane == 0 || channels == 0 {
        return;
    }
    y.par_chunks_mut(plane).enumerate().for_each(|(i, row)| {
        let b = bias[i % channels];
        row.iter_mut().for_each(|v| *v += b);
    });
}

/// The bias gradient `db[c] = Σ dy[n, c, ..]` over an NCHW gradient with `plane = Ho·Wo`: per
/// plane in f64, planes added in image order.
pub fn bias_grad(dy: &[f32], channels: usize, plane: usize) -> Vec<f32> {
    let mut db = vec![0f64; channels];
    for (i, chunk) in dy.chunks(plane.max(1)).enumerate() {
        db[i % channels] += chunk.iter().map(|&v| v as f64).sum::<f64>();
    }
    db.into_iter().map(|v| v as f32).collect()
}

/// Plain loops: the definition the fast paths are tested against.
pub mod reference {
    use super::Conv2dGeometry;

    fn for_each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
        // f(x_index, w_index, y_index) for every multiply-accumulate of the convolution.
        let (ho, wo) = (g.out_h(), g.out_w());
        let cin_g = g.in_channels / g.groups;
        let cout_g = g.out_channels / g.groups;
        for n in 0..g.batch {
            for k in 0..g.out_channels {
                let grp = k / cout_g;
                for oy in 0..ho {
                    for ox in 0..wo {
                        let y_i = ((n * g.out_channels + k) * ho + oy) * wo + ox;
                        for c in 0..cin_g {
                            let ci = grp * cin_g + c;
                            for ky in 0..g.kernel_h {
                                let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                if iy < 0 || iy >= g.in_h as isize {
                                    continue;
                                }
                                for kx in 0..g.kernel_w {
                                    let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                    if ix < 0 || ix >= g.in_w as isize {
                                        continue;
                                    }
                                    let x_i = ((n * g.in_channels + ci) * g.in_h + iy as usize)
                                        * g.in_w
                                        + ix as usize;
                                    let w_i = ((k * cin_g + c) * g.kernel_h + ky) * g.kernel_w + kx;
                                    f(x_i, w_i, y_i);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut y = vec![0f32; g.y_len()];
        for_each_tap(g, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
        y
    }

    pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut dx = vec![0f32; g.x_len()];
        for_each_tap(g, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
        dx
    }

    pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut dw = vec![0f32; g.w_len()];
        for_each_tap(g, |xi, wi, yi| dw[wi] += dy[yi] * x[xi]);
        dw
    }
}
