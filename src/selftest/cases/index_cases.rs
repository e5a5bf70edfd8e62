//! Parity cases: index_select, gather (f32 indices checked on the device), batched patch crops.

use super::*;
use crate::backend::cuda::{crop, index};

/// Whole-number f32 indices in `0..bound`.
fn indices(rng: &mut ChaCha8Rng, n: usize, bound: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(0..bound) as f32).collect()
}

/// `index_select` along `axis` of `dims` with `k` indices (repeats likely: the scatter-add
/// backward must sum them).
pub(super) fn index_select_case(
    name: &'static str,
    dims: [usize; 3],
    axis: usize,
    k: usize,
) -> Case {
    let (outer, len, inner) = (
        dims[..axis].iter().product::<usize>(),
        dims[axis],
        dims[axis + 1..].iter().product::<usize>(),
    );
    let (n, ny) = (outer * len * inner, outer * k * inner);
    Case {
        name,
        kernels: &[
            "index_check_f32",
            "index_select_fwd_f32",
            "index_select_bwd_f32",
        ],
        shape: format!("{dims:?} axis {axis}, {k} indices"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut idx = indices(rng, k, len);
            idx[k - 1] = idx[0]; // at least one repeat
            vec![uniform(rng, n, -1.0, 1.0), idx, uniform(rng, ny, -1.0, 1.0)]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                let idx = Tensor::from_vec(inp[1].clone(), [k])?;
                with_grads(&[tensor(&inp[0], &dims)?], &inp[2], |t| {
                    ops::index_select(&t[0], axis as isize, &idx)
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, i, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((y, dx), ms) = timed(dev, || {
                let idx = index::DeviceIndices::from_f32(dev, "index_select", &i, len)?;
                Ok((
                    index::index_select_fwd(dev, &x, outer, len, inner, &idx)?,
                    index::index_select_bwd(dev, &g, outer, len, inner, &idx)?,
                ))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

/// `gather` along the middle axis of `[3, 11, 5]` with an index `[3, 6, 5]`.
pub(super) fn gather_case() -> Case {
    let dims = [3usize, 11, 5];
    let (outer, len, inner, k) = (3usize, 11usize, 5usize, 6usize);
    let (n, ny) = (outer * len * inner, outer * k * inner);
    Case {
        name: "gather axis 1",
        kernels: &["index_check_f32", "gather_fwd_f32", "gather_bwd_f32"],
        shape: format!("{dims:?} axis 1, index [{outer}, {k}, {inner}]"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            vec![
                uniform(rng, n, -1.0, 1.0),
                indices(rng, ny, len),
                uniform(rng, ny, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                let idx = Tensor::from_vec(inp[1].clone(), [outer, k, inner])?;
                with_grads(&[tensor(&inp[0], &dims)?], &inp[2], |t| {
                    ops::gather(&t[0], 1, &idx)
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, i, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((y, dx), ms) = timed(dev, || {
                let idx = index::DeviceIndices::from_f32(dev, "gather", &i, len)?;
                Ok((
                    index::gather_fwd(dev, &x, outer, len, inner, k, &idx)?,
                    index::gather_bwd(dev, &g, outer, len, inner, k, &idx)?,
                ))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

/// Nine 7×7 patches out of `[3, 4, 23, 19]` images: three per image, overlapping each other
/// (the backward must sum overlaps), one touching the bottom-right corner.
pub(super) fn crop_case() -> Case {
    let dims = [3usize, 4, 23, 19];
    let (size, p) = (7usize, 9usize);
    let n = dims.iter().product::<usize>();
    let np = p * dims[1] * size * size;
    Case {
        name: "crop_patches fwd+bwd",
        kernels: &["crop_patches_fwd_f32", "crop_patches_bwd_f32"],
        shape: format!("{dims:?}, {p} boxes of side {size}"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut boxes = Vec::new();
            for b in 0..p {
                let image = b % dims[0];
                let (x, y) = if b == p - 1 {
                    (dims[3] - size, dims[2] - size)
                } else {
                    (
                        rng.random_range(0..=(dims[3] - size) / 2),
                        rng.random_range(0..=(dims[2] - size) / 2),
                    )
                };
                boxes.extend_from_slice(&[image as f32, x as f32, y as f32]);
            }
            vec![
                uniform(rng, n, -1.0, 1.0),
                boxes,
                uniform(rng, np, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                let boxes: Vec<ops::PatchBox> = inp[1]
                    .chunks_exact(3)
                    .map(|b| ops::PatchBox {
                        image: b[0] as usize,
                        x: b[1] as usize,
                        y: b[2] as usize,
                    })
                    .collect();
                with_grads(&[tensor(&inp[0], &dims)?], &inp[2], |t| {
                    ops::crop_patches(&t[0], &boxes, size)
                })
            })?;
            Ok(out(vec![("patches", y), ("dimages", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let corners: Vec<(usize, usize, usize)> = inp[1]
                .chunks_exact(3)
                .map(|b| (b[0] as usize, b[1] as usize, b[2] as usize))
                .collect();
            let (x, g) = (dev.upload(&inp[0])?, dev.upload(&inp[2])?);
            let ((y, dx), ms) = timed(dev, || {
                let boxes = crop::CropBoxes::new(dev, dims, &corners, size)?;
                Ok((
                    crop::crop_patches_fwd(dev, &x, &boxes)?,
                    crop::crop_patches_bwd(dev, &g, &boxes)?,
                ))
            })?;
            Ok(out(
                vec![
                    ("patches", dev.download(&y)?),
                    ("dimages", dev.download(&dx)?),
                ],
                ms,
            ))
        }),
    }
}
