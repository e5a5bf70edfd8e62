//! Matrix products through sgemm: `matmul` (2-D or batched) and `linear` (x·Wᵀ + b).

use rayon::prelude::*;

use crate::autograd::record;
use crate::backend::cpu::gemm::{sgemm, MatRef};
use crate::backend::cuda::gemm::{self as cuda_gemm, GemmShape};
use crate::tensor::{compute_device, Device, Tensor};
use crate::{Error, Result};

/// One operand of a batched product: values, batch stride (0 = shared by every batch item) and
/// the row/column strides of each matrix.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    fn row_major(data: &'a [f32], batch_stride: usize, cols: usize) -> Self {
        Operand {
            data,
            batch_stride,
            row_stride: cols,
            col_stride: 1,
        }
    }
    fn transposed(data: &'a [f32], batch_stride: usize, cols: usize) -> Self {
        Operand {
            data,
            batch_stride,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn item(&self, i: usize) -> MatRef<'a> {
        MatRef {
            data: &self.data[i * self.batch_stride..],
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// `c[i] = a[i] · b[i]` for `batch` items, c row-major `[batch, m, n]`.
fn batched_gemm(batch: usize, m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Vec<f32> {
    let mut c = vec![0f32; batch * m * n];
    if batch == 1 {
        sgemm(
            m,
            n,
            k,
            a.item(0),
            b.item(0),
            &mut c,
            n,
            false,
            rayon::current_num_threads(),
        );
    } else if m * n > 0 {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, ci)| sgemm(m, n, k, a.item(i), b.item(i), ci, n, false, 1));
    }
    c
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
    let batch: usize = batch_dims.iter().product();
    let mut dims = batch_dims.to_vec();
    dims.extend([m, n]);
    if compute_device(&[a, b]) == Device::Cuda {
        return matmul_cuda(a, b, (batch, m, n, k), b_batched, dims);
    }
    let (av, bv) = (a.to_vec(), b.to_vec());
    let b_bs = if b_batched { k * n } else { 0 };
    let c = batched_gemm(
        batch,
        m,
        n,
        k,
        Operand::row_major(&av, m * k, k),
        Operand::row_major(&bv, b_bs, n),
    );
    let out = Tensor::from_vec(c, dims)?;
    let (a_shape, b_shape) = (a.shape().clone(), b.shape().clone());
    record("matmul", out, &[a, b], move |g| {
        let gv = g.to_vec();
        // ga[i] = g[i] · b[i]ᵀ
        let ga = batched_gemm(
            batch,
            m,
            k,
            n,
            Operand::row_major(&gv, m * n, n),
            Operand::transposed(&bv, b_bs, n),
        );
        // gb[i] = a[i]ᵀ · g[i]; with a shared b, sum over the batch: one product over batch·m rows.
        let gb = if b_batched {
            batched_gemm(
                batch,
                k,
                n,
                m,
                Operand::transposed(&av, m * k, k),
                Operand::row_major(&gv, m * n, n),
            )
        } else {
            batched_gemm(
                1,
                k,
                n,
                batch * m,
                Operand::transposed(&av, 0, k),
                Operand::row_major(&gv, 0, n),
            )
        };
        Ok(vec![
            Some(Tensor::from_vec(ga, a_shape.clone())?),
            Some(Tensor::from_vec(gb, b_shape.clone())?),
        ])
    })
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
    let rows = x.numel() / in_f.max(1);
    if compute_device(&[x, w]) == Device::Cuda || b.is_some_and(Tensor::is_cuda) {
        let y = linear_cuda(x, w, (rows, out_f, in_f))?;
        return match b {
            Some(b) => super::add(&y, b),
            None => Ok(y),
        };
    }
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let mut y = batched_gemm(
        1,
        rows,
        out_f,
        in_f,
        Operand::row_major(&xv, 0, in_f),
        Operand::transposed(&wv, 0, in_f),
    );
    if let Some(b) = b {
        b.with_values(|bv| {
            y.chunks_mut(out_f)
                .for_each(|row| row.iter_mut().zip(bv).for_each(|(v, bb)| *v += bb))
        })?;
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = out_f;
    let out = Tensor::from_vec(y, dims)?;
    let (x_shape, w_shape) = (x.shape().clone(), w.shape().clone());
    let mut inputs = vec![x, w];
    if let Some(b) = b {
        inputs.push(b);
    }
    let has_bias = b.is_some();
    record("linear", out, &inputs, move |g| {
        let gv = g.to_vec();
        let gx = batched_gemm(
            1,
            rows,
            in_f,
            out_f,
            Operand::row_major(&gv, 0, out_f),
            Operand::row_major(&wv, 0, in_f),
        );
        let gw = batched_gemm(
            1,
            out_f,
            in_f,
            rows,
            Operand::transposed(&gv, 0, out_f),
            Operand::row_major(&xv, 0, in_f),
        );
        let mut grads = vec![
            Some(Tensor::from_vec(gx, x_shape.clone())?),
            Some(Tensor::from_vec(gw, w_shape.clone())?),
        ];
        if has_bias {
            let mut gb = vec![0f64; out_f];
            gv.chunks(out_f).for_each(|row| {
                row.iter()
                    .zip(gb.iter_mut())
                    .for_each(|(g, acc)| *acc += *g as f64)
            });
            grads.push(Some(Tensor::from_vec(
                gb.into_iter().map(|v| v as f32).collect(),
                [out_f],
            )?));
        }
        Ok(grads)
    })
}

/// The CUDA arm of `matmul` (cuBLAS strided-batched sgemm, `backend::cuda::gemm::matmul`):
/// `a [batch·m, k]`, `b [k, n]` shared or `[batch, k, n]`; gradients as on the CPU.
fn matmul_cuda(
    a: &Tensor,
    b: &Tensor,
    (batch, m, n, k): (usize, usize, usize, usize),
    b_batched: bool,
    dims: Vec<usize>,
) -> Result<Tensor> {
    let (a_dev, b_dev) = (a.cuda_owned()?, b.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let shape = move |m, n, k, trans_a, trans_b, a_batched, b_batched| GemmShape {
        batch,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batched,
        b_batched,
    };
    let c = cuda_gemm::matmul(
        &dev,
        &a_dev,
        &b_dev,
        &shape(m, n, k, false, false, true, b_batched),
    )?;
    let out = Tensor::from_cuda(c, dims)?;
    let (a_shape, b_shape) = (a.shape().clone(), b.shape().clone());
    record("matmul", out, &[a, b], move |g| {
        let (ga, gb) = g.with_cuda(|dev, gs| {
            // ga[i] = g[i] · b[i]ᵀ
            let ga = cuda_gemm::matmul(
                dev,
                gs,
                &b_dev,
                &shape(m, k, n, false, true, true, b_batched),
            )?;
            // gb[i] = a[i]ᵀ · g[i]; with a shared b, one product over all batch·m rows.
            let gb = if b_batched {
                cuda_gemm::matmul(dev, &a_dev, gs, &shape(k, n, m, true, false, true, true))?
            } else {
                let all_rows = GemmShape {
                    batch: 1,
                    m: k,
                    n,
                    k: batch * m,
                    trans_a: true,
                    trans_b: false,
                    a_batched: false,
                    b_batched: false,
                };
                cuda_gemm::matmul(dev, &a_dev, gs, &all_rows)?
            };
            Ok((ga, gb))
        })?;
        Ok(vec![
            Some(Tensor::from_cuda(ga, a_shape.clone())?),
            Some(Tensor::from_cuda(gb, b_shape.clone())?),
        ])
    })
}

/// The CUDA arm of `linear` without its bias (added by the caller with a broadcast `add`):
/// `y [rows, out] = x [rows, in] · wᵀ` on cuBLAS.
fn linear_cuda(
    x: &Tensor,
    w: &Tensor,
    (rows, out_f, in_f): (usize, usize, usize),
) -> Result<Tensor> {
    let (x_dev, w_dev) = (x.cuda_owned()?, w.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let product = |m, n, k, trans_a, trans_b| GemmShape {
        batch: 1,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batched: false,
        b_batched: false,
    };
    let y = cuda_gemm::matmul(
        &dev,
        &x_dev,
        &w_dev,
        &product(rows, out_f, in_f, false, true),
    )?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = out_f;
    let out = Tensor::from_cuda(y, dims)?;
    let (x_shape, w_shape) = (x.shape().clone(), w.shape().clone());
    record("linear", out, &[x, w], move |g| {
        let (gx, gw) = g.with_cuda(|dev, gs| {
            // gx = g · w, gw = gᵀ · x
            let gx = cuda_gemm::matmul(dev, gs, &w_dev, &product(rows, in_f, out_f, false, false))?;
            let gw = cuda_gemm::matmul(dev, gs, &x_dev, &product(out_f, in_f, rows, true, false))?;
            Ok((gx, gw))
        })?;
        Ok(vec![
            Some(Tensor::from_cuda(gx, x_shape.clone())?),
            Some(Tensor::from_cuda(gw, w_shape.clone())?),
        ])
    })
}
