//! Per-image lighting: the sky, water colour, reflection strength, sun and final colour grade.
//! FloW was filmed from a boat on rivers and lakes in daylight; the presets cover the conditions
//! its frames show (overcast, sunny, low sun with glare, dusk).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::canvas::{mix, Rgb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lighting {
    Overcast,
    Sunny,
    Glare,
    Dusk,
}

#[derive(Debug, Clone)]
pub struct Look {
    pub lighting: Lighting,
    pub sky_top: Rgb,
    pub sky_horizon: Rgb,
    pub cloud: Rgb,
    pub cloud_cover: f32,
    /// Colour of the water body itself (seen where reflection is weak, near the camera).
    pub water: Rgb,
    /// Share of reflected light at the horizon and at the bottom of the frame.
    pub fresnel_far: f32,
    pub fresnel_near: f32,
    /// Sun column as a fraction of the width, and the strength of its glitter.
    pub sun_x: f32,
    pub sun_strength: f32,
    /// Multiplicative grade applied to the whole frame (white balance of the light).
    pub grade: Rgb,
    /// Far haze blended into the bank.
    pub haze: f32,
}

fn jitter(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    [
        (c[0] + rng.random_range(-amount..=amount)).clamp(0.0, 1.0),
        (c[1] + rng.random_range(-amount..=amount)).clamp(0.0, 1.0),
        (c[2] + rng.random_range(-amount..=amount)).clamp(0.0, 1.0),
    ]
}

impl Look {
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let r: f32 = rng.random();
        let lighting = if r < 0.4 {
            Lighting::Overcast
        } else if r < 0.7 {
            Lighting::Sunny
        } else if r < 0.87 {
            Lighting::Glare
        } else {
            Lighting::Dusk
        };
        // Olive-green / grey-green / brownish river water, as in FloW.
        let waters: [Rgb; 4] = [
            [0.29, 0.30, 0.20],
            [0.25, 0.29, 0.25],
            [0.32, 0.30, 0.22],
            [0.22, 0.27, 0.27],
        ];
        let pick = waters[rng.random_range(0..waters.len())];
        let water = jitter(rng, pick, 0.04);
        let (sky_top, sky_horizon, cloud, cloud_cover, grade, sun_strength, haze) = match lighting {
            Lighting::Overcast => (
                [0.78, 0.80, 0.83],
                [0.88, 0.89, 0.90],
                [0.93, 0.93, 0.94],
                rng.random_range(0.5..0.9),
                [1.0, 1.0, 1.0],
                rng.random_range(0.0..0.15),
                rng.random_range(0.15..0.35),
            ),
            Lighting::Sunny => (
                [0.55, 0.66, 0.84],
                [0.84, 0.88, 0.93],
                [0.97, 0.97, 0.98],
                rng.random_range(0.1..0.6),
                [1.02, 1.0, 0.97],
                rng.random_range(0.2..0.5),
                rng.random_range(0.05..0.2),
            ),
            Lighting::Glare => (
                [0.62, 0.72, 0.86],
                [0.95, 0.95, 0.93],
                [0.99, 0.98, 0.96],
                rng.random_range(0.1..0.5),
                [1.05, 1.02, 0.96],
                rng.random_range(0.6..1.0),
                rng.random_range(0.2..0.4),
            ),
            Lighting::Dusk => (
                [0.36, 0.38, 0.55],
                [0.95, 0.66, 0.45],
                [0.90, 0.62, 0.50],
                rng.random_range(0.2..0.7),
                [0.92, 0.78, 0.68],
                rng.random_range(0.3..0.7),
                rng.random_range(0.15..0.35),
            ),
        };
        let sky_top = jitter(rng, sky_top, 0.04);
        let sky_horizon = jitter(rng, sky_horizon, 0.03);
        let water = if lighting == Lighting::Dusk {
            mix(water, [0.12, 0.10, 0.10], 0.35)
        } else {
            water
        };
        Look {
            lighting,
            sky_top,
            sky_horizon,
            cloud,
            cloud_cover,
            water,
            fresnel_far: rng.random_range(0.80..0.92),
            fresnel_near: rng.random_range(0.3..0.55),
            sun_x: rng.random_range(0.15..0.85),
            sun_strength,
            grade: jitter(rng, grade, 0.02),
            haze,
        }
    }

    /// Sky colour at `t` = 0 (top) .. 1 (horizon).
    #[inline]
    pub fn sky(&self, t: f32) -> Rgb {
        mix(self.sky_top, self.sky_horizon, t.clamp(0.0, 1.0).powf(0.7))
    }
}
