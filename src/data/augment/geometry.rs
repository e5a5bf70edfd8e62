//! Geometric transforms of an image and its boxes (`xyxy`, pixels): bilinear resize, letterbox,
//! horizontal flip, affine warp (YOLOX `random_affine`), clipping and the min-side filter.

use image::RgbImage;
use rand::Rng;

/// YOLOX pads letterboxes, mosaics and warps with this grey.
pub const PAD_VALUE: u8 = 114;

/// Bilinear resize with pixel-centre alignment (OpenCV `INTER_LINEAR`, `align_corners=False`),
/// in 11-bit fixed point as OpenCV's 8-bit path does.
pub fn resize_bilinear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    const ONE: u32 = 1 << 11;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w.max(1) as usize, out_h.max(1) as usize);
    if (w, h) == (ow, oh) {
        return img.clone();
    }
    // Per output coordinate: the two source taps and the weight of the second, in 1/2048.
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, u32)> {
        let s = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let x = ((o as f32 + 0.5) * s - 0.5).max(0.0);
                let x0 = (x as usize).min(n_in - 1);
                let x1 = (x0 + 1).min(n_in - 1);
                (x0 * 3, x1 * 3, ((x - x0 as f32) * ONE as f32 + 0.5) as u32)
            })
            .collect()
    };
    let (xt, yt) = (taps(w, ow), taps(h, oh));
    let src = img.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    for (oy, &(y0, y1, fy)) in yt.iter().enumerate() {
        let (y0, y1) = (y0 / 3, y1 / 3);
        let (r0, r1) = (
            &src[y0 * w * 3..(y0 + 1) * w * 3],
            &src[y1 * w * 3..(y1 + 1) * w * 3],
        );
        let orow = &mut out[oy * ow * 3..(oy + 1) * ow * 3];
        for (o, &(x0, x1, fx)) in orow.chunks_exact_mut(3).zip(xt.iter()) {
            let (gx, gy) = (ONE - fx, ONE - fy);
            for c in 0..3 {
                let top = r0[x0 + c] as u32 * gx + r0[x1 + c] as u32 * fx;
                let bot = r1[x0 + c] as u32 * gx + r1[x1 + c] as u32 * fx;
                o[c] = ((top * gy + bot * fy + (1 << 21)) >> 22) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer size matches")
}

/// YOLOX `preproc`: scale by `r = min(H/h, W/w)` to `(int(w·r), int(h·r))`, paste at the top-left
/// of an `input_w × input_h` canvas filled with 114. Returns the canvas and `r`; boxes map by
/// multiplying with `r` ([`scale_boxes_xyxy`]).
pub fn letterbox(img: &RgbImage, input_w: u32, input_h: u32) -> (RgbImage, f32) {
    let r = (input_h as f32 / img.height() as f32).min(input_w as f32 / img.width() as f32);
    let (nw, nh) = (
        ((img.width() as f32 * r) as u32).max(1),
        ((img.height() as f32 * r) as u32).max(1),
    );
    let resized = resize_bilinear(img, nw.min(input_w), nh.min(input_h));
    let mut canvas = RgbImage::from_pixel(input_w, input_h, image::Rgb([PAD_VALUE; 3]));
    image::imageops::replace(&mut canvas, &resized, 0, 0);
    (canvas, r)
}

pub fn scale_boxes_xyxy(boxes_xyxy: &mut [[f32; 4]], r: f32) {
    for b in boxes_xyxy {
        for v in b.iter_mut() {
            *v *= r;
        }
    }
}

/// Mirror the image left-right; boxes `x' = W - x` (YOLOX `_mirror`).
pub fn hflip(img: &mut RgbImage, boxes_xyxy: &mut [[f32; 4]]) {
    image::imageops::flip_horizontal_in_place(img);
    let w = img.width() as f32;
    for b in boxes_xyxy {
        let (x0, x1) = (b[0], b[2]);
        b[0] = w - x1;
        b[2] = w - x0;
    }
}

/// Ranges of YOLOX's `random_affine` (degrees and shear in degrees, translate as a fraction of the
/// output size, scale as a factor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineParams {
    pub degrees: f32,
    pub translate: f32,
    pub scale: (f32, f32),
    pub shear: f32,
}

impl AffineParams {
    /// No rotation, translation, scaling or shear: the warp is the identity.
    pub fn identity() -> Self {
        AffineParams {
            degrees: 0.0,
            translate: 0.0,
            scale: (1.0, 1.0),
            shear: 0.0,
        }
    }
}

/// A 2×3 affine matrix mapping source pixels to output pixels.
pub type Affine = [[f32; 3]; 2];

fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// YOLOX `get_affine_matrix`: rotation and scale about the origin (`getRotationMatrix2D` with
/// centre (0, 0)), shear `tan(U(±shear))` mixed into the rows, translation `U(±t)·(W, H)`.
pub fn random_affine_matrix(
    rng: &mut impl Rng,
    p: &AffineParams,
    out_w: u32,
    out_h: u32,
) -> Affine {
    let angle = uniform(rng, -p.degrees, p.degrees).to_radians();
    let scale = uniform(rng, p.scale.0, p.scale.1);
    let (alpha, beta) = (scale * angle.cos(), scale * angle.sin());
    let r = [[alpha, beta, 0.0], [-beta, alpha, 0.0]];
    let shear_x = uniform(rng, -p.shear, p.shear).to_radians().tan();
    let shear_y = uniform(rng, -p.shear, p.shear).to_radians().tan();
    let mut m = [[0.0; 3]; 2];
    for k in 0..3 {
        m[0][k] = r[0][k] + shear_y * r[1][k];
        m[1][k] = r[1][k] + shear_x * r[0][k];
    }
    m[0][2] = uniform(rng, -p.translate, p.translate) * out_w as f32;
    m[1][2] = uniform(rng, -p.translate, p.translate) * out_h as f32;
    m
}

/// `cv2.warpAffine(img, m, (out_w, out_h), borderValue=114)`, bilinear: each output pixel reads
/// the source at `m⁻¹ · (x, y)`; taps outside the source read 114.
pub fn warp_affine(img: &RgbImage, m: &Affine, out_w: u32, out_h: u32) -> RgbImage {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let mut out = RgbImage::from_pixel(out_w, out_h, image::Rgb([PAD_VALUE; 3]));
    if det.abs() < 1e-12 {
        return out;
    }
    let inv = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let tap = |x: i64, y: i64, c: usize| -> f32 {
        if x >= 0 && y >= 0 && x < w && y < h {
            src[((y * w + x) * 3) as usize + c] as f32
        } else {
            PAD_VALUE as f32
        }
    };
    let dst = out.as_mut();
    for oy in 0..out_h as usize {
        for ox in 0..out_w as usize {
            let (dx, dy) = (ox as f32 - m[0][2], oy as f32 - m[1][2]);
            let sx = inv[0][0] * dx + inv[0][1] * dy;
            let sy = inv[1][0] * dx + inv[1][1] * dy;
            // floor() without the libm call (the baseline x86-64 target has no SSE4.1 round).
            let fx0 = (sx as i64 - i64::from(sx < (sx as i64) as f32)) as f32;
            let fy0 = (sy as i64 - i64::from(sy < (sy as i64) as f32)) as f32;
            let (x0, y0) = (fx0 as i64, fy0 as i64);
            if x0 < -1 || y0 < -1 || x0 >= w || y0 >= h {
                continue;
            }
            let (tx, ty) = (sx - fx0, sy - fy0);
            let base = (oy * out_w as usize + ox) * 3;
            if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
                // All four taps inside: no border checks.
                let i00 = ((y0 * w + x0) * 3) as usize;
                let i10 = i00 + (w * 3) as usize;
                for c in 0..3 {
                    let (a, b) = (src[i00 + c] as f32, src[i00 + 3 + c] as f32);
                    let (cc, d) = (src[i10 + c] as f32, src[i10 + 3 + c] as f32);
                    let top = a + (b - a) * tx;
                    let bot = cc + (d - cc) * tx;
                    dst[base + c] = (top + (bot - top) * ty + 0.5) as u8;
                }
                continue;
            }
            for c in 0..3 {
                let top = tap(x0, y0, c) + (tap(x0 + 1, y0, c) - tap(x0, y0, c)) * tx;
                let bot = tap(x0, y0 + 1, c) + (tap(x0 + 1, y0 + 1, c) - tap(x0, y0 + 1, c)) * tx;
                dst[base + c] = (top + (bot - top) * ty + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// YOLOX `apply_affine_to_bboxes`: transform the four corners, take the axis-aligned hull, clip
/// to `[0, W] × [0, H]`.
pub fn affine_boxes_xyxy(
    boxes_xyxy: &[[f32; 4]],
    m: &Affine,
    out_w: u32,
    out_h: u32,
) -> Vec<[f32; 4]> {
    boxes_xyxy
        .iter()
        .map(|b| {
            let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])];
            let mut hull = [
                f32::INFINITY,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
            ];
            for (x, y) in corners {
                let tx = m[0][0] * x + m[0][1] * y + m[0][2];
                let ty = m[1][0] * x + m[1][1] * y + m[1][2];
                hull = [
                    hull[0].min(tx),
                    hull[1].min(ty),
                    hull[2].max(tx),
                    hull[3].max(ty),
                ];
            }
            clip_box_xyxy(hull, out_w as f32, out_h as f32)
        })
        .collect()
}

#[inline]
pub fn clip_box_xyxy(b: [f32; 4], w: f32, h: f32) -> [f32; 4] {
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

/// Keep boxes whose smaller side exceeds `min_side` px (YOLOX TrainTransform: `min(w, h) > 1`).
pub fn filter_min_side(boxes_xyxy: &mut Vec<[f32; 4]>, classes: &mut Vec<u32>, min_side: f32) {
    let keep: Vec<bool> = boxes_xyxy
        .iter()
        .map(|b| (b[2] - b[0]).min(b[3] - b[1]) > min_side)
        .collect();
    let mut i = 0;
    boxes_xyxy.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mut j = 0;
    classes.retain(|_| {
        j += 1;
        keep[j - 1]
    });
}

#[inline]
pub fn xyxy_to_cxcywh(b: [f32; 4]) -> [f32; 4] {
    [
        (b[0] + b[2]) * 0.5,
        (b[1] + b[3]) * 0.5,
        b[2] - b[0],
        b[3] - b[1],
    ]
}
