//! Batched square crops on the CPU (slices in, `Vec` out): `images [N, C, H, W]` and corners
//! `(image, x, y)` of side `size` → `patches [P, C, size, size]`. `ops::crop` validates the
//! boxes, dispatches and records; the CUDA twin is `backend::cuda::crop`.

use rayon::prelude::*;

/// One patch's `(image, x, y)`: its image in the batch and its top-left corner (pixels).
pub type Corner = (usize, usize, usize);

/// The patches, gathered per patch in parallel (every corner lies inside its image: checked by
/// the op).
pub fn fwd(images: &[f32], [_, c, h, w]: [usize; 4], corners: &[Corner], size: usize) -> Vec<f32> {
    let patch_len = c * size * size;
    let mut out = vec![0f32; corners.len() * patch_len];
    out.par_chunks_mut(patch_len.max(1))
        .zip(corners.par_iter())
        .for_each(|(dst, &(image, x, y))| {
            for ch in 0..c {
                for r in 0..size {
                    let src = ((image * c + ch) * h + y + r) * w + x;
                    let d = (ch * size + r) * size;
                    dst[d..d + size].copy_from_slice(&images[src..src + size]);
                }
            }
        });
    out
}

/// The images' gradient: each patch's gradient scatter-added into its window, per image
/// (patches of one image may overlap), images in parallel.
pub fn bwd(g: &[f32], [n, c, h, w]: [usize; 4], corners: &[Corner], size: usize) -> Vec<f32> {
    let mut gx = vec![0f32; n * c * h * w];
    let image_len = c * h * w;
    gx.par_chunks_mut(image_len.max(1))
        .enumerate()
        .for_each(|(img, gimg)| {
            for (p, &(_, x, y)) in corners.iter().enumerate().filter(|(_, b)| b.0 == img) {
                for ch in 0..c {
                    for r in 0..size {
                        let dst = (ch * h + y + r) * w + x;
                        let src = ((p * c + ch) * size + r) * size;
                        for t in 0..size {
                            gimg[dst + t] += g[src + t];
                        }
                    }
                }
            }
        });
    gx
}
