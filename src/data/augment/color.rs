//! YOLOX `augment_hsv` in OpenCV's 8-bit HSV (H in 0..180, S and V in 0..256).

use image::RgbImage;
use rand::Rng;

/// OpenCV `COLOR_RGB2HSV` for one 8-bit pixel: H = hue/2 in 0..180, S and V in 0..=255.
#[inline]
pub fn rgb_to_hsv8(r: u8, g: u8, b: u8) -> (i32, i32, i32) {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    let s = if v == 0 { 0 } else { (diff * 255 + v / 2) / v };
    if diff == 0 {
        return (0, s, v);
    }
    let d = diff as f32;
    let mut h = if v == r {
        60.0 * (g - b) as f32 / d
    } else if v == g {
        120.0 + 60.0 * (b - r) as f32 / d
    } else {
        240.0 + 60.0 * (r - g) as f32 / d
    };
    if h < 0.0 {
        h += 360.0;
    }
    let h8 = (h * 0.5 + 0.5) as i32;
    (if h8 >= 180 { h8 - 180 } else { h8 }, s, v)
}

/// OpenCV `COLOR_HSV2RGB` for one 8-bit HSV triple.
#[inline]
pub fn hsv8_to_rgb(h: i32, s: i32, v: i32) -> [u8; 3] {
    let (s, v) = (s as f32 / 255.0, v as f32 / 255.0);
    if s == 0.0 {
        let g = (v * 255.0 + 0.5) as u8;
        return [g, g, g];
    }
    let hf = (h.rem_euclid(180) as f32 * 2.0 / 60.0).min(5.999_999);
    let sector = hf as i32;
    let f = hf - sector as f32;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    let to8 = |x: f32| (x * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
    [to8(r), to8(g), to8(b)]
}

/// Shift every pixel by integer HSV offsets: H wraps mod 180, S and V are clipped to 0..=255
/// (YOLOX `augment_hsv`). Zero offsets leave the image untouched.
pub fn hsv_shift(img: &mut RgbImage, dh: i32, ds: i32, dv: i32) {
    if dh == 0 && ds == 0 && dv == 0 {
        return;
    }
    for px in img.pixels_mut() {
        let (h, s, v) = rgb_to_hsv8(px[0], px[1], px[2]);
        let h = (h + dh).rem_euclid(180);
        let s = (s + ds).clamp(0, 255);
        let v = (v + dv).clamp(0, 255);
        px.0 = hsv8_to_rgb(h, s, v);
    }
}

/// YOLOX: `gains = U(-1, 1) * [hgain, sgain, vgain]`, each kept with probability 0.5
/// (`randint(0, 2)`), truncated to int, then [`hsv_shift`]. Returns the offsets used.
pub fn augment_hsv(img: &mut RgbImage, rng: &mut impl Rng, gains: [f32; 3]) -> [i32; 3] {
    let mut d = [0i32; 3];
    let draws: [f32; 3] = [
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0),
    ];
    for k in 0..3 {
        let keep = rng.random_bool(0.5);
        d[k] = if keep {
            (draws[k] * gains[k]) as i32
        } else {
            0
        };
    }
    hsv_shift(img, d[0], d[1], d[2]);
    d
}
