//! Water: a perspective-mapped wave field that distorts the mirrored bank, the water body's own
//! colour, and sun glitter.
//!
//! Each water row `y` below the horizon sees the water plane at depth `Z = focal / (y - horizon)`
//! (camera heights) and lateral position `X = (x - cx) / (y - horizon)`. Waves live in (X, Z), so
//! they shrink and crowd toward the horizon on their own; a wave octave fades where one pixel
//! covers more than its wavelength (it would only alias). The surface slope tilts the reflected ray:
//! the mirrored bank row moves by slope × a pixel displacement, which gives the stretched, broken
//! reflections and bright streaks (reflected sky) of real water.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bank::Bank;
use super::canvas::{mix, scale, Canvas};
use super::look::Look;
use super::noise::hash2;

const TEX: usize = 256;
const TEX_MASK: i32 = (TEX - 1) as i32;
const N_TEXTURES: usize = 4;

/// A tileable field of height-gradients (d/du, d/dv), unit RMS.
pub struct WaveTexture {
    grad: Vec<[f32; 2]>,
}

impl WaveTexture {
    fn new(rng: &mut ChaCha8Rng, k_min: f32, k_max: f32, waves: usize) -> Self {
        let mut comps = Vec::new();
        for _ in 0..waves {
            // Wind-driven ripples: crests mostly parallel to the horizon (k mostly along v).
            let angle: f32 = rng.random_range(-0.9f32..0.9) + std::f32::consts::FRAC_PI_2;
            let k: f32 = rng.random_range(k_min..k_max);
            let (ku, kv) = ((k * angle.cos()).round(), (k * angle.sin()).round());
            let kv = if ku == 0.0 && kv == 0.0 { 1.0 } else { kv };
            let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
            let amp = 1.0 / (ku * ku + kv * kv).sqrt();
            comps.push((ku, kv, phase, amp));
        }
        let mut grad = vec![[0.0f32; 2]; TEX * TEX];
        let w = std::f32::consts::TAU / TEX as f32;
        let mut energy = 0.0f64;
        for v in 0..TEX {
            for u in 0..TEX {
                let (mut gu, mut gv) = (0.0f32, 0.0f32);
                for &(ku, kv, phase, amp) in &comps {
                    let c = (w * (ku * u as f32 + kv * v as f32) + phase).cos() * amp;
                    gu += c * ku;
                    gv += c * kv;
                }
                grad[v * TEX + u] = [gu, gv];
                energy += (gu * gu + gv * gv) as f64;
            }
        }
        let norm = (energy / (TEX * TEX) as f64).sqrt().max(1e-6) as f32;
        for g in &mut grad {
            g[0] /= norm;
            g[1] /= norm;
        }
        WaveTexture { grad }
    }

    /// Bilinear sample with wrap-around.
    #[inline]
    pub fn sample(&self, u: f32, v: f32) -> [f32; 2] {
        // floor() without the libm call (coordinates stay far inside i32).
        let (ui, vi) = (u as i32, v as i32);
        let ui = ui - (u < ui as f32) as i32;
        let vi = vi - (v < vi as f32) as i32;
        let (tu, tv) = (u - ui as f32, v - vi as f32);
        let (u0, v0) = (ui & TEX_MASK, vi & TEX_MASK);
        let (u1, v1) = ((u0 + 1) & TEX_MASK, (v0 + 1) & TEX_MASK);
        let (u0, v0, u1, v1) = (u0 as usize, v0 as usize, u1 as usize, v1 as usize);
        let a = self.grad[v0 * TEX + u0];
        let b = self.grad[v0 * TEX + u1];
        let c = self.grad[v1 * TEX + u0];
        let d = self.grad[v1 * TEX + u1];
        let mut out = [0.0; 2];
        for k in 0..2 {
            let top = a[k] + (b[k] - a[k]) * tu;
            let bottom = c[k] + (d[k] - c[k]) * tu;
            out[k] = top + (bottom - top) * tv;
        }
        out
    }
}

/// The fixed wave textures, built once per process from a constant seed (so they never depend on
/// the run seed or the thread that first asks).
pub fn wave_textures() -> &'static [WaveTexture] {
    static TEXTURES: OnceLock<Vec<WaveTexture>> = OnceLock::new();
    TEXTURES.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_f10e);
        (0..N_TEXTURES)
            .map(|i| {
                if i % 2 == 0 {
                    WaveTexture::new(&mut rng, 3.0, 10.0, 9)
                } else {
                    WaveTexture::new(&mut rng, 8.0, 30.0, 12)
                }
            })
            .collect()
    })
}

/// Per-scene wave parameters; `time` shifts the textures for video frames.
#[derive(Debug, Clone)]
pub struct Waves {
    /// Texture indices of the swell and ripple octaves.
    pub tex: [usize; 2],
    /// Tile size of each octave in camera heights.
    pub tile: [f32; 2],
    pub amp: [f32; 2],
    pub offset: [[f32; 2]; 2],
    /// Drift per frame (texels) of each octave.
    pub drift: [[f32; 2]; 2],
    pub rot: f32,
    /// Vertical stretch of the mirrored bank (ripples elongate reflections).
    pub stretch: f32,
    /// Reflection displacement per unit slope, px (vertical, horizontal).
    pub disp: [f32; 2],
    /// Focal length in px.
    pub focal: f32,
}

impl Waves {
    pub fn sample(rng: &mut ChaCha8Rng, width: usize, unit: f32) -> Self {
        let calm: f32 = rng.random_range(0.3..1.0);
        Waves {
            tex: [
                2 * rng.random_range(0..N_TEXTURES / 2),
                2 * rng.random_range(0..N_TEXTURES / 2) + 1,
            ],
            tile: [rng.random_range(2.0..5.0), rng.random_range(0.6..1.6)],
            amp: [rng.random_range(0.5..1.0), rng.random_range(0.5..1.0)],
            offset: [
                [rng.random_range(0.0..256.0), rng.random_range(0.0..256.0)],
                [rng.random_range(0.0..256.0), rng.random_range(0.0..256.0)],
            ],
            drift: [
                [rng.random_range(-0.3..0.3), rng.random_range(-1.0..-0.2)],
                [rng.random_range(-0.6..0.6), rng.random_range(-2.0..-0.5)],
            ],
            rot: rng.random_range(-0.3..0.3),
            stretch: rng.random_range(1.0..1.35),
            disp: [
                calm * rng.random_range(12.0..36.0) * unit,
                calm * rng.random_range(4.0..12.0) * unit,
            ],
            focal: width as f32 * rng.random_range(0.8..1.1),
        }
    }
}

/// Paint the water rows (below `horizon`, which may lie above the frame) of `canvas`.
/// `bank` is the band above the horizon (None when the frame shows no bank); `pan` is the
/// horizontal offset of the frame inside the bank; `time` is the frame index for videos.
pub fn render_water(
    canvas: &mut Canvas,
    bank: Option<&Bank>,
    horizon: f32,
    pan: f32,
    look: &Look,
    waves: &Waves,
    time: f32,
) {
    let (w, h) = (canvas.width, canvas.height);
    let textures = wave_textures();
    let (ta, tb) = (&textures[waves.tex[0]], &textures[waves.tex[1]]);
    let (cr, sr) = (waves.rot.cos(), waves.rot.sin());
    let cx = w as f32 * 0.5;
    let water_extent = h as f32 - horizon;
    let sun_col = look.sun_x * w as f32;
    let sparkle_seed = (waves.offset[0][0] * 1000.0) as u32;
    let y_start = horizon.ceil().max(0.0) as usize;
    let offs = [
        [
            waves.offset[0][0] + waves.drift[0][0] * time,
            waves.offset[0][1] + waves.drift[0][1] * time,
        ],
        [
            waves.offset[1][0] + waves.drift[1][0] * time,
            waves.offset[1][1] + waves.drift[1][1] * time,
        ],
    ];
    let water_mean = (look.water[0] + look.water[1] + look.water[2]) / 3.0;
    // Murky river water tints and darkens what it mirrors (FloW's reflections are olive).
    let refl_tint = [
        0.85 * (0.3 + 0.7 * look.water[0] / water_mean),
        0.85 * (0.3 + 0.7 * look.water[1] / water_mean),
        0.85 * (0.3 + 0.7 * look.water[2] / water_mean),
    ];
    // Sun glitter column weight per image column.
    let column: Vec<f32> = (0..w)
        .map(|x| {
            let dx = (x as f32 - sun_col) / (0.18 * w as f32);
            (-dx * dx).exp()
        })
        .collect();
    let mut slopes = vec![[0.0f32; 2]; w / 2 + 2];
    for y in y_start..h {
        let dist = (y as f32 + 0.5 - horizon).max(0.5);
        let depth = (dist / water_extent).clamp(0.0, 1.0);
        let z = waves.focal / dist;
        // World size of one pixel: an octave fades once a pixel spans about its wavelength.
        let footprint = waves.focal / (dist * dist);
        let fade_a = waves.amp[0] / (1.0 + (footprint * 3.5 / waves.tile[0]).powi(2));
        let fade_b = waves.amp[1] / (1.0 + (footprint * 3.5 / waves.tile[1]).powi(2));
        let fresnel =
            look.fresnel_near + (look.fresnel_far - look.fresnel_near) * (1.0 - depth).powi(2);
        let base_ref_y = horizon - dist * waves.stretch;
        let glint_row = look.sun_strength * (1.0 - depth).sqrt();
        let (sa, sb) = (TEX as f32 / waves.tile[0], TEX as f32 / waves.tile[1]);
        let row = y * w;
        // The wave slope is sampled on every second column and interpolated between: it halves
        // the texture work and is invisible (one ripple spans many pixels wherever it is not faded).
        for (i, g) in slopes.iter_mut().enumerate() {
            let xw = ((2 * i) as f32 - cx) / dist;
            let (ru, rv) = (cr * xw - sr * z, sr * xw + cr * z);
            let ga = ta.sample(ru * sa + offs[0][0], rv * sa + offs[0][1]);
            let gb = tb.sample(ru * sb + offs[1][0], rv * sb + offs[1][1]);
            let gu = ga[0] * fade_a + gb[0] * fade_b;
            let gv = ga[1] * fade_a + gb[1] * fade_b;
            // Back to (X, Z) slope.
            *g = [cr * gu + sr * gv, -sr * gu + cr * gv];
        }
        for x in 0..w {
            let (gx, gz) = if x % 2 == 0 {
                let g = slopes[x / 2];
                (g[0], g[1])
            } else {
                let (a, b) = (slopes[x / 2], slopes[x / 2 + 1]);
                (0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1]))
            };
            let ref_y = base_ref_y - gz * waves.disp[0];
            let ref_x = x as f32 + pan + gx * waves.disp[1];
            let refl = match bank {
                Some(b) => b.half.sample(ref_x * 0.5, ref_y * 0.5),
                None => look.sky(1.0 + (ref_y - horizon) / (h as f32 * 1.5)),
            };
            let refl = [
                refl[0] * refl_tint[0],
                refl[1] * refl_tint[1],
                refl[2] * refl_tint[2],
            ];
            let body = scale(look.water, 1.0 + 0.06 * gz);
            let mut c = mix(body, refl, fresnel);
            if glint_row > 0.0 {
                let column = column[x] * glint_row;
                let spec = (-gz - 1.3).max(0.0) * column;
                if spec > 0.0 {
                    c = mix(c, [1.0, 0.98, 0.92], (spec * 1.5).min(0.9));
                }
                if column > 0.05
                    && gz < -0.8
                    && hash2(x as i32, y as i32, sparkle_seed) > 1.0 - 0.01 * column
                {
                    c = [1.0, 1.0, 0.97];
                }
            }
            canvas.pixels[row + x] = c;
        }
    }
}
