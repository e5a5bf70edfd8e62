//! A float RGB canvas (linear 0..1 values) the generator paints on before the final 8-bit encode.

use image::RgbImage;

pub type Rgb = [f32; 3];

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, fill: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: vec![fill; width * height],
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        self.pixels[y * self.width + x] = c;
    }

    /// Alpha-blend `c` over the pixel at (x, y).
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        let p = &mut self.pixels[y * self.width + x];
        for k in 0..3 {
            p[k] += (c[k] - p[k]) * alpha;
        }
    }

    /// Bilinear sample with clamped borders.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> Rgb {
        let x = x.clamp(0.0, (self.width - 1) as f32);
        let y = y.clamp(0.0, (self.height - 1) as f32);
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (x - x0 as f32, y - y0 as f32);
        let a = self.get(x0, y0);
        let b = self.get(x1, y0);
        let c = self.get(x0, y1);
        let d = self.get(x1, y1);
        let mut out = [0.0; 3];
        for k in 0..3 {
            let top = a[k] + (b[k] - a[k]) * tx;
            let bottom = c[k] + (d[k] - c[k]) * tx;
            out[k] = top + (bottom - top) * ty;
        }
        out
    }

    /// Half-resolution copy (2×2 box average), used as the blurred source of water reflections.
    pub fn half(&self) -> Canvas {
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        let mut out = Canvas::new(w, h, [0.0; 3]);
        for y in 0..h {
            let (ya, yb) = (
                (2 * y).min(self.height - 1),
                (2 * y + 1).min(self.height - 1),
            );
            for x in 0..w {
                let (xa, xb) = ((2 * x).min(self.width - 1), (2 * x + 1).min(self.width - 1));
                let (p, q, r, s) = (
                    self.get(xa, ya),
                    self.get(xb, ya),
                    self.get(xa, yb),
                    self.get(xb, yb),
                );
                out.set(
                    x,
                    y,
                    [
                        0.25 * (p[0] + q[0] + r[0] + s[0]),
                        0.25 * (p[1] + q[1] + r[1] + s[1]),
                        0.25 * (p[2] + q[2] + r[2] + s[2]),
                    ],
                );
            }
        }
        out
    }

    /// Convert to 8-bit RGB after multiplying each channel by `grade` (the light's colour).
    pub fn to_rgb_image_graded(&self, grade: Rgb) -> RgbImage {
        let mut raw = Vec::with_capacity(self.width * self.height * 3);
        for p in &self.pixels {
            for k in 0..3 {
                raw.push(((p[k] * grade[k]).clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
            }
        }
        RgbImage::from_raw(self.width as u32, self.height as u32, raw).expect("buffer size matches")
    }
}

#[inline]
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

#[inline]
pub fn scale(a: Rgb, s: f32) -> Rgb {
    [a[0] * s, a[1] * s, a[2] * s]
}
