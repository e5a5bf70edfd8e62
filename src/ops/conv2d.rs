//! 2-D convolution (cross-correlation, as PyTorch): `x [N,C,H,W], w [K,C/g,kh,kw], b [K]?`.
//! Kernels: `backend::cpu::conv2d` and `backend::cuda::conv2d` (`kernels/conv2d*.cu`); this file
//! validates, dispatches (`fwd`, `bwd`) and records.

use crate::autograd::record;
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::backend::cpu::conv2d as cpu_conv2d;
use crate::backend::cuda::{
    bf16 as cuda_bf16, conv2d as cuda_conv2d, elementwise as cuda_ew, reduce as cuda_reduce,
};
use crate::tensor::{compute_device, Device, Tensor};
use crate::{Error, Result};

/// Stride, zero padding and groups (symmetric in H and W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
}

fn geometry(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Conv2dGeometry> {
    let bad = |msg: String| Error::op("conv2d", msg);
    if x.rank() != 4 || w.rank() != 4 {
        return Err(Error::shape(
            "conv2d",
            "x [N,C,H,W] and w [K,C/groups,kh,kw]",
            (x.shape(), w.shape()),
        ));
    }
    if p.stride == 0 || p.groups == 0 {
        return Err(bad(format!("stride and groups must be >= 1, got {p:?}")));
    }
    let (n, c, h, wd) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    let (k, cg, kh, kw) = (w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]);
    if c % p.groups != 0 || k % p.groups != 0 || cg * p.groups != c {
        return Err(Error::ShapeMismatch {
            op: "conv2d".into(),
            expected: format!(
                "w [K, {}/{} = {}, kh, kw] with K divisible by groups",
                c,
                p.groups,
                c / p.groups.max(1)
            ),
            got: format!("w {} for x {} (groups {})", w.shape(), x.shape(), p.groups),
        });
    }
    if kh == 0 || kw == 0 {
        return Err(bad(format!(
            "kernel {kh}x{kw} has a side of 0 (w {})",
            w.shape()
        )));
    }
    let padded = |side: usize| side.checked_add(p.padding.saturating_mul(2));
    let (Some(padded_h), Some(padded_w)) = (padded(h), padded(wd)) else {
        return Err(bad(format!("padding {} is too large", p.padding)));
    };
    if padded_h < kh || padded_w < kw {
        return Err(bad(format!(
            "kernel {kh}x{kw} is larger than the padded input {}x{} (x {}, padding {})",
            padded_h,
            padded_w,
            x.shape(),
            p.padding
        )));
    }
    // The output and the im2col columns of one image are allocated at once: a padding or a
    // kernel from a script must give an error here, not a capacity-overflow panic or an abort.
    let out_hw =
        ((padded_h - kh) / p.stride + 1) as u128 * ((padded_w - kw) / p.stride + 1) as u128;
    let output = out_hw.saturating_mul((n * k) as u128);
    let columns = out_hw
        .saturating_mul((cg * kh) as u128)
        .saturating_mul(kw as u128);
    let limit = crate::tensor::create::physical_memory_bytes().unwrap_or(u64::MAX) as u128 / 4;
    if output.max(columns) > limit {
        return Err(bad(format!(
            "x {} with kernel {kh}x{kw}, padding {} and stride {} needs {} output or column \
             values, more than this machine's memory",
            x.shape(),
            p.padding,
            p.stride,
            output.max(columns)
        )));
    }
    Ok(Conv2dGeometry {
        batch: n,
        in_channels: c,
        in_h: h,
        in_w: wd,
        out_channels: k,
        kernel_h: kh,
        kernel_w: kw,
        stride: p.stride,
        padding: p.padding,
        groups: p.groups,
    })
}

/// One conv2d call seen by [`trace_geometries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracedConv {
    pub geometry: Conv2dGeometry,
    /// The input required a gradient (false for a conv on the images: its backward skips dx).
    pub input_grad: bool,
}

thread_local! {
    /// This thread's conv2d calls while [`trace_geometries`] runs.
    static TRACE: std::cell::RefCell<Option<Vec<TracedConv>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every conv2d it called on this thread, in call order
/// (`ssod bench conv` takes a model's conv layers from one traced forward).
pub fn trace_geometries<R>(f: impl FnOnce() -> R) -> (R, Vec<TracedConv>) {
    let outer = TRACE.with(|t| t.replace(Some(Vec::new())));
    let result = f();
    let traced = TRACE.with(|t| t.replace(outer)).unwrap_or_default();
    (result, traced)
}

/// Which gradients a conv2d backward computes (the inputs that need one, and the bias if any).
#[derive(Clone, Copy)]
struct Needs {
    dx: bool,
    dw: bool,
    bias: bool,
}

/// `y = conv(x, w) + b`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: Conv2dParams) -> Result<Tensor> {
    let g = geometry(x, w, &params)?;
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(TracedConv {
                geometry: g,
                input_grad: x.requires_grad(),
            });
        }
    });
    if let Some(b) = b {
        if b.dims() != [g.out_channels] {
            return Err(Error::shape("conv2d (bias)", [g.out_channels], b.shape()));
        }
    }
    let device = compute_device(&[x, w]);
    let out = fwd(device, x, w, b, &g)?;
    let (xs, ws) = (x.detach(), w.detach());
    let mut inputs = vec![x, w];
    if let Some(b) = b {
        inputs.push(b);
    }
    let needs = Needs {
        dx: x.requires_grad(),
        dw: w.requires_grad(),
        bias: b.is_some(),
    };
    record("conv2d", out, &inputs, move |dy| {
        bwd(device, [&xs, &ws], dy, &g, needs)
    })
}

/// The forward on `device` (the device of x and w).
fn fwd(
    device: Device,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &Conv2dGeometry,
) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_fwd(x, w, b, g),
        Device::Cuda => cuda_fwd(x, w, b, g),
    }
}

/// `[dx, dw, db]` (db only with a bias) on the device the forward ran on.
fn bwd(
    device: Device,
    xw: [&Tensor; 2],
    dy: &Tensor,
    g: &Conv2dGeometry,
    needs: Needs,
) -> Result<Vec<Option<Tensor>>> {
    match device {
        Device::Cpu => cpu_bwd(xw, dy, g, needs),
        Device::Cuda => cuda_bwd(xw, dy, g, needs),
    }
}

fn cpu_fwd(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeometry) -> Result<Tensor> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let mut y = x.with_values(|xv| w.with_values(|wv| cpu_conv2d::fwd(xv, wv, g)))??;
    if let Some(b) = b {
        b.with_values(|bv| cpu_conv2d::bias_add(&mut y, bv, ho * wo))?;
    }
    Tensor::from_vec(y, [g.batch, g.out_channels, ho, wo])
}

fn cpu_bwd(
    [xs, ws]: [&Tensor; 2],
    dy: &Tensor,
    g: &Conv2dGeometry,
    needs: Needs,
) -> Result<Vec<Option<Tensor>>> {
    dy.with_values(|dyv| {
        let dx = if needs.dx {
            let v = ws.with_values(|wv| cpu_conv2d::bwd_input(dyv, wv, g))?;
            Some(Tensor::from_vec(v, xs.shape().clone())?)
        } else {
            None
        };
        let dw = if needs.dw {
            let v = xs.with_values(|xv| cpu_conv2d::bwd_weight(dyv, xv, g))?;
            Some(Tensor::from_vec(v, ws.shape().clone())?)
        } else {
            None
        };
        let mut grads = vec![dx, dw];
        if needs.bias {
            let db = cpu_conv2d::bias_grad(dyv, g.out_channels, g.out_h() * g.out_w());
            grads.push(Some(Tensor::from_vec(db, [g.out_channels])?));
        }
        Ok(grads)
    })?
}

/// The CUDA forward through `backend::cuda::conv2d`; the bias is a broadcast add.
fn cuda_fwd(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeometry) -> Result<Tensor> {
    let y_dims = [g.batch, g.out_channels, g.out_h(), g.out_w()];
    // x may be a bf16 activation: the conv reads it as stored (backend::cuda::bf16). In bf16
    // storage mode a conv without bias (YOLOX's BaseConv, whose BN keeps y for its backward)
    // writes y as bf16; a biased one (the heads' predictions) keeps f32 for the bias and loss.
    let y = x.with_cuda_values(|dev, xs| {
        w.with_cuda(|_, ws| {
            let out_bf16 = b.is_none() && cuda_bf16::stores_bf16(dev);
            cuda_conv2d::fwd(dev, xs, ws, g, out_bf16)
        })
    })?;
    match b {
        None => Tensor::from_cuda_buffer(y, y_dims),
        Some(b) => b.with_cuda(|dev, bs| {
            let y = y.into_f32(dev)?;
            let (y, _) = cuda_ew::binary_bcast(
                dev,
                cuda_ew::Binary::Add,
                &y,
                &y_dims,
                bs,
                &[1, g.out_channels, 1, 1],
            )?;
            Tensor::from_cuda(y, y_dims)
        }),
    }
}

/// The CUDA backward; the bias gradient is a per-channel sum.
fn cuda_bwd(
    [xs, ws]: [&Tensor; 2],
    dy: &Tensor,
    g: &Conv2dGeometry,
    needs: Needs,
) -> Result<Vec<Option<Tensor>>> {
    dy.with_cuda(|dev, dys| {
        let dx = if needs.dx {
            let v = ws.with_cuda(|_, wv| cuda_conv2d::bwd_input(dev, dys, wv, g))?;
            Some(Tensor::from_cuda(v, xs.shape().clone())?)
        } else {
            None
        };
        let dw = if needs.dw {
            let v = xs.with_cuda_values(|_, xv| cuda_conv2d::bwd_weight(dev, dys, xv, g))?;
            Some(Tensor::from_cuda(v, ws.shape().clone())?)
        } else {
            None
        };
        let mut grads = vec![dx, dw];
        if needs.bias {
            let db = cuda_reduce::sum_keepdim(
                dev,
                dys,
                &[g.batch, g.out_channels, g.out_h() * g.out_w()],
                &[1, g.out_channels, 1],
            )?;
            grads.push(Some(Tensor::from_cuda(db, [g.out_channels])?));
        }
        Ok(grads)
    })
}
