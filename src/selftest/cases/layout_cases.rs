//! Parity cases: strided copies (views made contiguous) and the scalar-arithmetic kernels.

use super::*;
use crate::backend::cuda::layout::{self, StridedSide};

/// A permuted, narrowed, stepped view of a `[3, 8, 9, 5]` tensor made contiguous.
pub(super) fn strided_copy_case() -> Case {
    let dims = [3usize, 8, 9, 5];
    let n: usize = dims.iter().product();
    // The view: x.permute([0, 2, 3, 1]).narrow(1, 2, 5).slice_step(3, 1, 8, 2) → [3, 5, 5, 4].
    let view = |t: &Tensor| -> Result<Tensor> {
        let p = ops::permute(t, &[0, 2, 3, 1])?;
        let q = ops::narrow(&p, 1, 2, 5)?;
        ops::slice_step(&q, 3, 1, 8, 2)
    };
    Case {
        name: "strided copy (permute+narrow+step)",
        kernels: &["strided_copy_f32"],
        shape: format!("{} -> [3, 5, 5, 4] view", dims_str(&dims)),
        tol: 0.0,
        measure: Measure::PerElement,
        make: Box::new(move |rng| vec![uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let (y, ms) = timed_cpu(|| {
                let v = view(&Tensor::from_vec(inp[0].clone(), dims.to_vec())?)?;
                Ok(v.to_vec())
            })?;
            Ok(out(vec![("y", y)], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let base = Tensor::from_vec(inp[0].clone(), dims.to_vec())?;
            let v = view(&base)?;
            let l = v.layout().clone();
            let x = dev.upload(&inp[0])?;
            let (y, ms) = timed(dev, || {
                layout::contiguous(dev, l.shape.dims(), &x, &l.strides, l.offset)
            })?;
            // Also write back through a strided destination: scatter y into a zeroed base at the
            // view's place, and compare with the CPU's version of the same.
            let mut scattered = dev.zeros(n)?;
            let contiguous = l.shape.contiguous_strides();
            layout::strided_copy(
                dev,
                l.shape.dims(),
                &y,
                StridedSide {
                    strides: &contiguous,
                    offset: 0,
                },
                &mut scattered,
                StridedSide {
                    strides: &l.strides,
                    offset: l.offset,
                },
            )?;
            let mut expect = vec![0f32; n];
            for i in crate::tensor::StridedIter::with(l.shape.dims(), &l.strides, l.offset) {
                expect[i] = inp[0][i];
            }
            let back = dev.download(&scattered)?;
            if back != expect {
                return Err(crate::Error::Cuda(
                    "strided_copy_f32 into a strided destination differs from the CPU".into(),
                ));
            }
            Ok(out(vec![("y", dev.download(&y)?)], ms))
        }),
    }
}

/// `y = a·x + b` and `fill`, against the scalar ops on the CPU.
pub(super) fn scale_shift_case() -> Case {
    let n = 1001usize;
    Case {
        name: "scale_shift + fill",
        kernels: &["scale_shift_f32", "fill_f32"],
        shape: format!("[{n}]"),
        tol: 1e-6,
        measure: Measure::PerElement,
        make: Box::new(move |rng| vec![uniform(rng, n, -3.0, 3.0)]),
        cpu: Box::new(move |inp| {
            let (v, ms) = timed_cpu(|| {
                let x = Tensor::from_vec(inp[0].clone(), [n])?;
                let y = ops::add_scalar(&ops::mul_scalar(&x, -1.75)?, 0.5)?;
                Ok((y.to_vec(), Tensor::full([n], 2.25).to_vec()))
            })?;
            Ok(out(vec![("y", v.0), ("fill", v.1)], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let x = dev.upload(&inp[0])?;
            let ((y, f), ms) = timed(dev, || {
                Ok((
                    ew::scale_shift(dev, &x, -1.75, 0.5)?,
                    ew::fill(dev, n, 2.25)?,
                ))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("fill", dev.download(&f)?)],
                ms,
            ))
        }),
    }
}
