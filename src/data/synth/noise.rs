//! Cheap deterministic noise: integer hashing, value noise and fractal sums. Every texture in the
//! generator is built from these, so a frame depends only on its seed (never on thread count).

/// A hash of a lattice point to [0, 1).
#[inline]
pub fn hash2(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0x00ff_ffff) as f32 / 16_777_216.0
}

#[inline]
fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Value noise in [0, 1) with a lattice spacing of 1.
#[inline]
pub fn value2(x: f32, y: f32, seed: u32) -> f32 {
    let xf = x.floor();
    let yf = y.floor();
    let (xi, yi) = (xf as i32, yf as i32);
    let (tx, ty) = (smooth(x - xf), smooth(y - yf));
    let a = hash2(xi, yi, seed);
    let b = hash2(xi + 1, yi, seed);
    let c = hash2(xi, yi + 1, seed);
    let d = hash2(xi + 1, yi + 1, seed);
    let top = a + (b - a) * tx;
    let bottom = c + (d - c) * tx;
    top + (bottom - top) * ty
}

/// One-dimensional value noise in [0, 1).
#[inline]
pub fn value1(x: f32, seed: u32) -> f32 {
    value2(x, 0.5, seed)
}

/// Fractal sum of `octaves` value-noise layers (each twice the frequency, half the amplitude),
/// normalised to [0, 1).
pub fn fbm2(x: f32, y: f32, seed: u32, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value2(x * f, y * f, seed.wrapping_add(o * 7919));
        norm += amp;
        amp *= 0.5;
        f *= 2.03;
    }
    sum / norm
}
