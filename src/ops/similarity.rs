//! Cosine similarity along an axis (PyTorch's `F.cosine_similarity`, eps 1e-8):
//! `a·b / (max(‖a‖, eps) · max(‖b‖, eps))`. Inputs broadcast against each other.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cuda::similarity as cuda_similarity;
use crate::tensor::{compute_device, Device, Shape, Tensor};
use crate::Result;

const EPS: f64 = 1e-8;

pub fn cosine_similarity(a: &Tensor, b: &Tensor, axis: isize) -> Result<Tensor> {
    let shape = Shape::broadcast("cosine_similarity", a.shape(), b.shape())?;
    let ax = shape.axis("cosine_similarity", axis)?;
    let ab = super::broadcast_to(a, &shape)?;
    let bb = super::broadcast_to(b, &shape)?;
    let (outer, len, inner) = split_at_axis(shape.dims(), ax);
    let mut out_dims = shape.dims().to_vec();
    out_dims.remove(ax);
    if compute_device(&[a, b]) == Device::Cuda {
        return cosine_similarity_cuda(&ab, &bb, out_dims, (outer, len, inner));
    }
    let (av, bv) = (ab.to_vec(), bb.to_vec());
    // Per output position: (dot, ‖a‖ clamped, ‖b‖ clamped).
    let mut stats = vec![(0f64, 0f64, 0f64); outer * inner];
    for o in 0..outer {
        for j in 0..inner {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for i in 0..len {
                let p = (o * len + i) * inner + j;
                let (x, y) = (av[p] as f64, bv[p] as f64);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            stats[o * inner + j] = (dot, na.sqrt().max(EPS), nb.sqrt().max(EPS));
        }
    }
    let values: Vec<f32> = stats
        .iter()
        .map(|&(d, na, nb)| (d / (na * nb)) as f32)
        .collect();
    let out = Tensor::from_vec(values, out_dims)?;
    record("cosine_similarity", out, &[&ab, &bb], move |g| {
        // d cos/da = b/(|a||b|) − cos·a/|a|²  (the |a|²-term vanishes where |a| is clamped)
        let gv = g.to_vec();
        let mut ga = vec![0f32; av.len()];
        let mut gb = vec![0f32; bv.len()];
        for o in 0..outer {
            for j in 0..inner {
                let (dot, na, nb) = stats[o * inner + j];
                let cos = dot / (na * nb);
                let gg = gv[o * inner + j] as f64;
                let a_clamped = na <= EPS;
                let b_clamped = nb <= EPS;
                for i in 0..len {
                    let p = (o * len + i) * inner + j;
                    let (x, y) = (av[p] as f64, bv[p] as f64);
                    let da = y / (na * nb) - if a_clamped { 0.0 } else { cos * x / (na * na) };
                    let db = x / (na * nb) - if b_clamped { 0.0 } else { cos * y / (nb * nb) };
                    ga[p] = (gg * da) as f32;
                    gb[p] = (gg * db) as f32;
                }
            }
        }
        Ok(vec![
            Some(Tensor::from_vec(ga, shape.clone())?),
            Some(Tensor::from_vec(gb, shape.clone())?),
        ])
    })
}

/// The CUDA arm: the fused forward and backward kernels of `kernels/similarity.cu` on the
/// broadcast inputs (norms recomputed in the backward, as the CPU path keeps them).
fn cosine_similarity_cuda(
    ab: &Tensor,
    bb: &Tensor,
    out_dims: Vec<usize>,
    (outer, len, inner): (usize, usize, usize),
) -> Result<Tensor> {
    let shape = ab.shape().clone();
    let (a, b) = (ab.cuda_owned()?, bb.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let y = cuda_similarity::cosine_similarity_fwd(&dev, &a, &b, outer, len, inner)?;
    let out = Tensor::from_cuda(y, out_dims)?;
    record("cosine_similarity", out, &[ab, bb], move |g| {
        let (da, db) = g.with_cuda(|dev, gs| {
            cuda_similarity::cosine_similarity_bwd(dev, gs, &a, &b, outer, len, inner)
        })?;
        Ok(vec![
            Some(Tensor::from_cuda(da, shape.clone())?),
            Some(Tensor::from_cuda(db, shape.clone())?),
        ])
    })
}
