//! Matrix products through sgemm: `matmul` (2-D or batched) and `linear` (x·Wᵀ + b).
//! Kernels: `backend::cpu::matmul` (the `gemm` crate) and `backend::cuda::gemm` (cuBLAS); this
//! file validates, dispatches (`*_fwd`, `*_bwd`) and records. On CUDA, linear's bias is a
//! separate broadcast `add` (recorded by it); on the CPU the kernel adds it.

use crate::autograd::record;
use crate::backend::cpu::matmul::{self as cpu_matmul, LinearShape, MatmulShape};
use crate::backend::cuda::gemm::{self as cuda_gemm, GemmShape};
use crate::backend::cuda::CudaSlice;
use crate::tensor::{compute_device, Device, Shape, Tensor};
use crate::{Error, Result};

/// The operands a product's backward reads, where the forward left them.
enum Saved {
    Cpu(Vec<f32>, Vec<f32>),
    Cuda(CudaSlice<f32>, CudaSlice<f32>),
}

/// `a [.., m, k] · b [k, n] | [.., k, n]` (b's batch dims equal to a's, or b 2-D).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 || (b.rank() != 2 && b.rank() != a.rank()) {
        return Err(Error::shape(
            "matmul",
            "a [.., m, k] and b [k, n] or [.., k, n]",
            (a.shape(), b.shape()),
        ));
    }
    let (m, k) = (a.dims()[a.rank() - 2], a.dims()[a.rank() - 1]);
    let (kb, n) = (b.dims()[b.rank() - 2], b.dims()[b.rank() - 1]);
    let batch_dims = &a.dims()[..a.rank() - 2];
    let b_batched = b.rank() > 2;
    if kb != k || (b_batched && &b.dims()[..b.rank() - 2] != batch_dims) {
        return Err(Error::ShapeMismatch {
            op: "matmul".into(),
            expected: format!(
                "b of shape [{k}, n] or {batch_dims:?} + [{k}, n] for a of shape {}",
                a.shape()
            ),
            got: format!("{}", b.shape()),
        });
    }
    let s = MatmulShape {
        batch: batch_dims.iter().product(),
        m,
        n,
        k,
        b_batched,
    };
    let mut dims = batch_dims.to_vec();
    dims.extend([m, n]);
    let (out, saved) = matmul_fwd(compute_device(&[a, b]), a, b, s, dims)?;
    let shapes = [a.shape().clone(), b.shape().clone()];
    record("matmul", out, &[a, b], move |g| {
        let (ga, gb) = matmul_bwd(&saved, g, s, &shapes)?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

fn matmul_fwd(
    device: Device,
    a: &Tensor,
    b: &Tensor,
    s: MatmulShape,
    dims: Vec<usize>,
) -> Result<(Tensor, Saved)> {
    match device {
        Device::Cpu => {
            let (av, bv) = (a.to_vec(), b.to_vec());
            let c = cpu_matmul::matmul_fwd(&av, &bv, s);
            Ok((Tensor::from_vec(c, dims)?, Saved::Cpu(av, bv)))
        }
        Device::Cuda => cuda_matmul_fwd(a, b, s, dims),
    }
}

fn matmul_bwd(
    saved: &Saved,
    g: &Tensor,
    s: MatmulShape,
    [a_shape, b_shape]: &[Shape; 2],
) -> Result<(Tensor, Tensor)> {
    match saved {
        Saved::Cpu(av, bv) => {
            let (ga, gb) = cpu_matmul::matmul_bwd(&g.to_vec(), av, bv, s);
            Ok((
                Tensor::from_vec(ga, a_shape.clone())?,
                Tensor::from_vec(gb, b_shape.clone())?,
            ))
        }
        Saved::Cuda(a_dev, b_dev) => {
            let (ga, gb) = g.with_cuda(|dev, gs| cuda_matmul_bwd(dev, gs, [a_dev, b_dev], s))?;
            Ok((
                Tensor::from_cuda(ga, a_shape.clone())?,
                Tensor::from_cuda(gb, b_shape.clone())?,
            ))
        }
    }
}

/// `x [.., in] · wᵀ + b` with `w [out, in]`, `b [out]` (PyTorch's `nn.Linear`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() < 1 || w.rank() != 2 || x.dims()[x.rank() - 1] != w.dims()[1] {
        return Err(Error::shape(
            "linear",
            "x [.., in], w [out, in]",
            (x.shape(), w.shape()),
        ));
    }
    let (out_f, in_f) = (w.dims()[0], w.dims()[1]);
    if let Some(b) = b {
        if b.dims() != [out_f] {
            return Err(Error::shape("linear", [out_f], b.shape()));
        }
    }
    let s = LinearShape {
        rows: x.numel() / in_f.max(1),
        out_features: out_f,
        in_features: in_f,
    };
    let mut all = vec![x, w];
    all.extend(b);
    let (out, saved, bias_in_kernel) = linear_fwd(compute_device(&all), x, w, b, s)?;
    let mut inputs = vec![x, w];
    if bias_in_kernel {
        inputs.extend(b);
    }
    let shapes = [x.shape().clone(), w.shape().clone()];
    let y = record("linear", out, &inputs, move |g| {
        linear_bwd(&saved, g, s, &shapes, bias_in_kernel)
    })?;
    match b {
        Some(b) if !bias_in_kernel => super::add(&y, b),
        _ => Ok(y),
    }
}

/// The product, what its backward reads, and whether the bias was added in it.
fn linear_fwd(
    device: Device,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    s: LinearShape,
) -> Result<(Tensor, Saved, bool)> {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = s.out_features;
    match device {
        Device::Cpu => {
            let (xv, wv) = (x.to_vec(), w.to_vec());
            let bv = b.map(Tensor::to_vec);
            let y = cpu_matmul::linear_fwd(&xv, &wv, bv.as_deref(), s);
            Ok((Tensor::from_vec(y, dims)?, Saved::Cpu(xv, wv), b.is_some()))
        }
        Device::Cuda => {
            let (out, saved) = cuda_linear_fwd(x, w, s, dims)?;
            Ok((out, saved, false))
        }
    }
}

/// `[gx, gw]`, and `gb` when the forward added the bias.
fn linear_bwd(
    saved: &Saved,
    g: &Tensor,
    s: LinearShape,
    [x_shape, w_shape]: &[Shape; 2],
    has_bias: bool,
) -> Result<Vec<Option<Tensor>>> {
    match saved {
        Saved::Cpu(xv, wv) => {
            let (gx, gw, gb) = cpu_matmul::linear_bwd(&g.to_vec(), xv, wv, s, has_bias);
            let mut grads = vec![
                Some(Tensor::from_vec(gx, x_shape.clone())?),
                Some(Tensor::from_vec(gw, w_shape.clone())?),
            ];
            if let Some(gb) = gb {
                grads.push(Some(Tensor::from_vec(gb, [s.out_features])?));
            }
            Ok(grads)
        }
        Saved::Cuda(x_dev, w_dev) => {
            let (gx, gw) = g.with_cuda(|dev, gs| cuda_linear_bwd(dev, gs, [x_dev, w_dev], s))?;
            Ok(vec![
                Some(Tensor::from_cuda(gx, x_shape.clone())?),
                Some(Tensor::from_cuda(gw, w_shape.clone())?),
            ])
        }
    }
}

/// The batched product's cuBLAS shape (`a` batched; `b` as the call says).
fn gemm_shape(
    s: MatmulShape,
    (m, n, k): (usize, usize, usize),
    trans: (bool, bool),
    b_batched: bool,
) -> GemmShape {
    GemmShape {
        batch: s.batch,
        m,
        n,
        k,
        trans_a: trans.0,
        trans_b: trans.1,
        a_batched: true,
        b_batched,
    }
}

/// One unbatched product's cuBLAS shape.
fn single_gemm(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmShape {
    GemmShape {
        batch: 1,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batched: false,
        b_batched: false,
    }
}

/// cuBLAS strided-batched sgemm (`backend::cuda::gemm::matmul`): `a [batch·m, k]`, `b [k, n]`
/// shared or `[batch, k, n]`.
fn cuda_matmul_fwd(
    a: &Tensor,
    b: &Tensor,
    s: MatmulShape,
    dims: Vec<usize>,
) -> Result<(Tensor, Saved)> {
    let (a_dev, b_dev) = (a.cuda_owned()?, b.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let shape = gemm_shape(s, (s.m, s.n, s.k), (false, false), s.b_batched);
    let c = cuda_gemm::matmul(&dev, &a_dev, &b_dev, &shape)?;
    Ok((Tensor::from_cuda(c, dims)?, Saved::Cuda(a_dev, b_dev)))
}

/// `ga[i] = g[i] · b[i]ᵀ`; `gb[i] = a[i]ᵀ · g[i]`, with a shared b one product over all batch·m
/// rows.
fn cuda_matmul_bwd(
    dev: &crate::backend::cuda::CudaDevice,
    gs: &CudaSlice<f32>,
    [a_dev, b_dev]: [&CudaSlice<f32>; 2],
    s: MatmulShape,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let MatmulShape {
        batch,
        m,
        n,
        k,
        b_batched,
    } = s;
    let ga_shape = gemm_shape(s, (m, k, n), (false, true), b_batched);
    let ga = cuda_gemm::matmul(dev, gs, b_dev, &ga_shape)?;
    let gb = if b_batched {
        let gb_shape = gemm_shape(s, (k, n, m), (true, false), true);
        cuda_gemm::matmul(dev, a_dev, gs, &gb_shape)?
    } else {
        cuda_gemm::matmul(dev, a_dev, gs, &single_gemm(k, n, batch * m, true, false))?
    };
    Ok((ga, gb))
}

/// `y [rows, out] = x [rows, in] · wᵀ` on cuBLAS (no bias: the caller adds it).
fn cuda_linear_fwd(
    x: &Tensor,
    w: &Tensor,
    s: LinearShape,
    dims: Vec<usize>,
) -> Result<(Tensor, Saved)> {
    let (x_dev, w_dev) = (x.cuda_owned()?, w.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let (rows, out_f, in_f) = (s.rows, s.out_features, s.in_features);
    let y = cuda_gemm::matmul(
        &dev,
        &x_dev,
        &w_dev,
        &single_gemm(rows, out_f, in_f, false, true),
    )?;
    Ok((Tensor::from_cuda(y, dims)?, Saved::Cuda(x_dev, w_dev)))
}

/// `gx = g · w`, `gw = gᵀ · x`.
fn cuda_linear_bwd(
    dev: &crate::backend::cuda::CudaDevice,
    gs: &CudaSlice<f32>,
    [x_dev, w_dev]: [&CudaSlice<f32>; 2],
    s: LinearShape,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let (rows, out_f, in_f) = (s.rows, s.out_features, s.in_features);
    let gx = cuda_gemm::matmul(
        dev,
        gs,
        w_dev,
        &single_gemm(rows, in_f, out_f, false, false),
    )?;
    let gw = cuda_gemm::matmul(dev, gs, x_dev, &single_gemm(out_f, in_f, rows, true, false))?;
    Ok((gx, gw))
}
