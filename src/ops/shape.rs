//! Shape ops. Reshape (of a contiguous tensor), permute, narrow, strided slices and broadcasts are
//! views that share storage; cat copies. Backward rules work in the input's logical index space.
//! The copies with a device dispatch (`slice_bwd`, `cat_fwd`) use `backend::cpu::shape` and
//! `backend::cuda::layout` (`kernels/layout.cu`); the other backwards are device ops.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cpu::shape as cpu_shape;
use crate::backend::cpu::uninit::filled_vec;
use crate::backend::cuda::bf16::{self as cuda_bf16, CudaBuffer, CudaValues};
use crate::backend::cuda::layout::{self as cuda_layout, StridedSide};
use crate::tensor::{compute_device, Device, Layout, Shape, Tensor};
use crate::{Error, Result};

/// Same values, new shape (a view when `x` is contiguous, a copy otherwise). For `-1` style
/// shapes resolve them first with [`infer_shape`].
pub fn reshape(x: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    if shape.numel() != x.numel() {
        return Err(Error::ShapeMismatch {
            op: "reshape".into(),
            expected: format!("a shape with {} elements (from {})", x.numel(), x.shape()),
            got: format!("{shape}"),
        });
    }
    let base = if x.is_contiguous() {
        x.clone()
    } else {
        contiguous(x)?
    };
    let layout = Layout {
        strides: shape.contiguous_strides(),
        shape,
        offset: base.layout().offset,
    };
    let out = base.view_with_layout(layout);
    let in_shape = x.shape().clone();
    record("reshape", out, &[x], move |g| {
        Ok(vec![Some(reshape(g, in_shape.clone())?)])
    })
}

/// Resolve a shape with at most one `-1` against `numel` elements.
pub fn infer_shape(op: &str, dims: &[i64], numel: usize) -> Result<Shape> {
    let mut known = 1usize;
    let mut infer_at = None;
    for (i, &d) in dims.iter().enumerate() {
        if d == -1 {
            if infer_at.replace(i).is_some() {
                return Err(Error::op(
                    op,
                    format!("only one -1 allowed in shape {dims:?}"),
                ));
            }
        } else if d < 0 {
            return Err(Error::op(
                op,
                format!("negative dimension in shape {dims:?}"),
            ));
        } else {
            known *= d as usize;
        }
    }
    let mut out: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer_at {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(Error::op(
                op,
                format!("cannot infer -1 in shape {dims:?} for {numel} elements"),
            ));
        }
        out[i] = numel / known;
    }
    Ok(Shape(out))
}

/// Copy into row-major order (no copy when already contiguous).
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    if x.is_contiguous() {
        return Ok(x.clone());
    }
    let out = x.copy_to(x.device())?;
    record("contiguous", out, &[x], |g| Ok(vec![Some(g.clone())]))
}

/// Reorder axes: output axis `i` is input axis `axes[i]`.
pub fn permute(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let rank = x.rank();
    let mut seen = vec![false; rank];
    if axes.len() != rank
        || axes
            .iter()
            .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
    {
        return Err(Error::op(
            "permute",
            format!(
                "axes {axes:?} are not a permutation of 0..{rank} (shape {})",
                x.shape()
            ),
        ));
    }
    let l = x.layout();
    let layout = Layout {
        shape: Shape(axes.iter().map(|&a| l.shape.dims()[a]).collect()),
        strides: axes.iter().map(|&a| l.strides[a]).collect(),
        offset: l.offset,
    };
    let out = x.view_with_layout(layout);
    let mut inverse = vec![0; rank];
    for (i, &a) in axes.iter().enumerate() {
        inverse[a] = i;
    }
    record("permute", out, &[x], move |g| {
        Ok(vec![Some(permute(g, &inverse)?)])
    })
}

/// Swap two axes.
pub fn transpose(x: &Tensor, a: isize, b: isize) -> Result<Tensor> {
    let a = x.shape().axis("transpose", a)?;
    let b = x.shape().axis("transpose", b)?;
    let mut axes: Vec<usize> = (0..x.rank()).collect();
    axes.swap(a, b);
    permute(x, &axes)
}

/// Elements `start, start+step, ...` below `end` along `axis` (Python's `x[..., start:end:step]`).
pub fn slice_step(
    x: &Tensor,
    axis: isize,
    start: usize,
    end: usize,
    step: usize,
) -> Result<Tensor> {
    let a = x.shape().axis("slice", axis)?;
    let dim = x.dims()[a];
    let end = end.min(dim);
    if step == 0 || start > end {
        return Err(Error::op(
            "slice",
            format!(
                "bad slice {start}:{end}:{step} on axis {a} of shape {}",
                x.shape()
            ),
        ));
    }
    let len = (end - start).div_ceil(step);
    let out = slice_fwd(x, a, (start, len, step));
    let mut dims = x.dims().to_vec();
    dims[a] = len;
    // Scatter g into zeros at the logical positions the slice read.
    let in_shape = x.shape().clone();
    let in_strides = in_shape.contiguous_strides();
    let mut view_strides = in_strides.clone();
    view_strides[a] *= step;
    let view = SliceView {
        dims,
        strides: view_strides,
        offset: start * in_strides[a],
    };
    record("slice", out, &[x], move |g| {
        Ok(vec![Some(slice_bwd(g, &view, &in_shape)?)])
    })
}

/// Where a slice's elements sit in its (contiguous) input: the backward's scatter pattern.
struct SliceView {
    dims: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// The view of `len` elements from `start` every `step` along axis `a`.
fn slice_fwd(x: &Tensor, a: usize, (start, len, step): (usize, usize, usize)) -> Tensor {
    let l = x.layout();
    let mut dims = l.shape.dims().to_vec();
    dims[a] = len;
    let mut strides = l.strides.clone();
    strides[a] *= step;
    let offset = l.offset + if len > 0 { start * l.strides[a] } else { 0 };
    x.view_with_layout(Layout {
        shape: Shape(dims),
        strides,
        offset,
    })
}

fn slice_bwd(g: &Tensor, view: &SliceView, in_shape: &Shape) -> Result<Tensor> {
    match g.device() {
        Device::Cpu => {
            let gx = g.with_values(|gv| {
                cpu_shape::scatter_strided(
                    gv,
                    &view.dims,
                    &view.strides,
                    view.offset,
                    in_shape.numel(),
                )
            })?;
            Tensor::from_vec(gx, in_shape.clone())
        }
        Device::Cuda => cuda_slice_bwd(g, view, in_shape),
    }
}

fn cuda_slice_bwd(g: &Tensor, view: &SliceView, in_shape: &Shape) -> Result<Tensor> {
    let gx = g.with_cuda(|dev, gs| {
        let mut gx = dev.zeros(in_shape.numel())?;
        cuda_layout::strided_copy(
            dev,
            &view.dims,
            gs,
            StridedSide {
                strides: &Shape(view.dims.clone()).contiguous_strides(),
                offset: 0,
            },
            &mut gx,
            StridedSide {
                strides: &view.strides,
                offset: view.offset,
            },
        )?;
        Ok(gx)
    })?;
    Tensor::from_cuda(gx, in_shape.clone())
}

/// `len` elements from `start` along `axis` (a view).
pub fn narrow(x: &Tensor, axis: isize, start: usize, len: usize) -> Result<Tensor> {
    let a = x.shape().axis("narrow", axis)?;
    if start + len > x.dims()[a] {
        return Err(Error::op(
            "narrow",
            format!(
                "range {start}..{} exceeds axis {a} of shape {}",
                start + len,
                x.shape()
            ),
        ));
    }
    slice_step(x, a as isize, start, start + len, 1)
}

/// Insert an axis of size 1 at `axis` (0..=rank).
pub fn unsqueeze(x: &Tensor, axis: usize) -> Result<Tensor> {
    if axis > x.rank() {
        return Err(Error::op(
            "unsqueeze",
            format!("axis {axis} out of range for shape {}", x.shape()),
        ));
    }
    let mut dims = x.dims().to_vec();
    dims.insert(axis, 1);
    reshape(x, dims)
}

/// Remove an axis of size 1.
pub fn squeeze(x: &Tensor, axis: isize) -> Result<Tensor> {
    let a = x.shape().axis("squeeze", axis)?;
    if x.dims()[a] != 1 {
        return Err(Error::op(
            "squeeze",
            format!("axis {a} of shape {} is not 1", x.shape()),
        ));
    }
    let mut dims = x.dims().to_vec();
    dims.remove(a);
    reshape(x, dims)
}

/// Merge axes `start..=end` into one.
pub fn flatten(x: &Tensor, start: usize, end: usize) -> Result<Tensor> {
    if start > end || end >= x.rank().max(1) {
        return Err(Error::op(
            "flatten",
            format!("bad axes {start}..={end} for shape {}", x.shape()),
        ));
    }
    if x.rank() == 0 {
        return reshape(x, [1]);
    }
    let d = x.dims();
    let mut dims = d[..start].to_vec();
    dims.push(d[start..=end].iter().product());
    dims.extend_from_slice(&d[end + 1..]);
    reshape(x, dims)
}

/// View `x` with the NumPy-broadcast shape `shape` (stride 0 along broadcast axes).
pub fn broadcast_to(x: &Tensor, shape: &Shape) -> Result<Tensor> {
    let target = Shape::broadcast("broadcast_to", x.shape(), shape)?;
    if &target != shape {
        return Err(Error::shape("broadcast_to", shape, x.shape()));
    }
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let l = x.layout();
    let strides = l.shape.broadcast_strides(&l.strides, shape);
    let out = x.view_with_layout(Layout {
        shape: shape.clone(),
        strides,
        offset: l.offset,
    });
    let in_shape = x.shape().clone();
    record("broadcast_to", out, &[x], move |g| {
        Ok(vec![Some(super::sum_to_shape(g, &in_shape)?)])
    })
}

/// Concatenate along `axis`; every other dimension must agree.
pub fn cat(xs: &[Tensor], axis: isize) -> Result<Tensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::op("cat", "needs at least one tensor"))?;
    let a = first.shape().axis("cat", axis)?;
    for x in xs {
        let same = x.rank() == first.rank()
            && x.dims()
                .iter()
                .zip(first.dims())
                .enumerate()
                .all(|(i, (p, q))| i == a || p == q);
        if !same {
            return Err(Error::ShapeMismatch {
                op: "cat".into(),
                expected: format!("shapes like {} except along axis {a}", first.shape()),
                got: format!("{}", x.shape()),
            });
        }
    }
    let lens: Vec<usize> = xs.iter().map(|x| x.dims()[a]).collect();
    let total: usize = lens.iter().sum();
    let mut dims = first.dims().to_vec();
    dims[a] = total;
    let inputs: Vec<&Tensor> = xs.iter().collect();
    let out = cat_fwd(compute_device(&inputs), xs, a, &dims, &lens)?;
    record("cat", out, &inputs, move |g| cat_bwd(g, a, &lens))
}

fn cat_fwd(
    device: Device,
    xs: &[Tensor],
    axis: usize,
    dims: &[usize],
    lens: &[usize],
) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_cat_fwd(xs, axis, dims, lens),
        Device::Cuda => cuda_cat_fwd(xs, axis, dims),
    }
}

/// Each output row (one index of the axes before `axis`) is the inputs' rows side by side,
/// copied row by row in parallel into a buffer that is not zeroed first (the pieces tile every
/// row).
fn cpu_cat_fwd(xs: &[Tensor], axis: usize, dims: &[usize], lens: &[usize]) -> Result<Tensor> {
    let (outer, total, inner) = split_at_axis(dims, axis);
    let row = total * inner;
    let out = if outer * row == 0 {
        Vec::new()
    } else {
        // A failed read (only a CUDA tensor's can fail; this arm runs on CPU tensors) is kept
        // and returned after the fill.
        let mut failed = None;
        let write = |out: &mut [std::mem::MaybeUninit<f32>]| {
            let mut at = 0;
            for (x, &len) in xs.iter().zip(lens) {
                if len * inner > 0 {
                    let piece = (at * inner, len * inner);
                    let read = x.with_values(|v| cpu_shape::cat_piece(out, v, row, piece));
                    if let Err(e) = read {
                        // Keep the buffer initialised for the SAFETY claim below.
                        out.iter_mut().for_each(|d| {
                            d.write(0.0);
                        });
                        failed.get_or_insert(e);
                    }
                }
                at += len;
            }
        };
        // SAFETY: the pieces' lengths along `axis` sum to `total`, so every row is written in
        // full.
        let out = unsafe { filled_vec(outer * row, write).0 };
        if let Some(e) = failed {
            return Err(e);
        }
        out
    };
    Tensor::from_vec(out, dims.to_vec())
}

/// Each input's gradient: its piece of `g` along `axis` (device ops).
fn cat_bwd(g: &Tensor, axis: usize, lens: &[usize]) -> Result<Vec<Option<Tensor>>> {
    let mut grads = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &len in lens {
        grads.push(Some(contiguous(&narrow(g, axis as isize, at, len)?)?));
        at += len;
    }
    Ok(grads)
}

/// The CUDA arm of `cat`: each piece copied into its slab of a fresh buffer.
fn cuda_cat_fwd(xs: &[Tensor], axis: usize, dims: &[usize]) -> Result<Tensor> {
    let dev = crate::backend::cuda::device()?;
    let out_strides = Shape(dims.to_vec()).contiguous_strides();
    let len = dims.iter().product();
    // bf16 activations (bf16 storage mode) are joined as bf16 when every piece is one.
    let mut out = if xs.iter().all(|x| x.is_bf16()) {
        CudaBuffer::Bf16(dev.alloc_u16(len)?)
    } else {
        CudaBuffer::F32(dev.alloc(len)?)
    };
    let mut at = 0;
    for x in xs {
        let src_side = StridedSide {
            strides: &x.shape().contiguous_strides(),
            offset: 0,
        };
        let dst_side = StridedSide {
            strides: &out_strides,
            offset: at * out_strides[axis],
        };
        x.with_cuda_values(|dev, v| match (v, &mut out) {
            (CudaValues::Bf16(bits), CudaBuffer::Bf16(o)) => {
                cuda_layout::strided_copy(dev, x.dims(), bits, src_side, o, dst_side)
            }
            (CudaValues::F32(xs), CudaBuffer::F32(o)) => {
                cuda_layout::strided_copy(dev, x.dims(), xs, src_side, o, dst_side)
            }
            // Mixed pieces (f32 output): bf16 widened. (with_cuda_values gives bf16 bits for
            // every bf16 piece, so the last arm is only there to be total; its rounding would
            // be exact for values that came from bf16.)
            (CudaValues::Bf16(bits), CudaBuffer::F32(o)) => {
                let wide = cuda_bf16::to_f32(dev, bits, bits.len())?;
                cuda_layout::strided_copy(dev, x.dims(), &wide, src_side, o, dst_side)
            }
            (CudaValues::F32(xs), CudaBuffer::Bf16(o)) => {
                let bits = cuda_bf16::to_bf16(dev, xs, xs.len())?;
                cuda_layout::strided_copy(dev, x.dims(), &bits, src_side, o, dst_side)
            }
        })?;
        at += x.dims()[axis];
    }
    Tensor::from_cuda_buffer(out, dims.to_vec())
}

/// Split along `axis` into pieces of the given sizes (views).
pub fn split(x: &Tensor, sizes: &[usize], axis: isize) -> Result<Vec<Tensor>> {
    let a = x.shape().axis("split", axis)?;
    if sizes.iter().sum::<usize>() != x.dims()[a] {
        return Err(Error::op(
            "split",
            format!(
                "sizes {sizes:?} do not add up to axis {a} of shape {}",
                x.shape()
            ),
        ));
    }
    let mut at = 0;
    sizes
        .iter()
        .map(|&len| {
            let piece = narrow(x, a as isize, at, len);
            at += len;
            piece
        })
        .collect()
}
