//! Unlabelled floating things, so that "anything floating" is not the answer: leaves, twigs and
//! patches of foam.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::canvas::{mix, Canvas, Rgb};
use super::noise::hash2;
use super::shape::{rasterize, Placement};

#[derive(Debug, Clone)]
pub enum Distractor {
    Leaf { colour: Rgb },
    Twig { colour: Rgb },
    Foam { blobs: u32, seed: u32 },
}

impl Distractor {
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        match rng.random_range(0..10) {
            0..=4 => {
                let leaves: [Rgb; 4] = [
                    [0.55, 0.42, 0.15],
                    [0.70, 0.60, 0.20],
                    [0.35, 0.40, 0.15],
                    [0.40, 0.25, 0.12],
                ];
                Distractor::Leaf {
                    colour: leaves[rng.random_range(0..leaves.len())],
                }
            }
            5..=6 => Distractor::Twig {
                colour: [0.25, 0.18, 0.12],
            },
            _ => Distractor::Foam {
                blobs: rng.random_range(3..12),
                seed: rng.random(),
            },
        }
    }

    /// Length relative to a bottle at the same depth.
    pub fn relative_size(&self) -> f32 {
        match self {
            Distractor::Leaf { .. } => 0.35,
            Distractor::Twig { .. } => 0.9,
            Distractor::Foam { .. } => 0.6,
        }
    }

    pub fn draw(&self, canvas: &mut Canvas, p: &Placement) {
        match *self {
            Distractor::Leaf { colour } => {
                let p = Placement {
                    radius: p.length * 0.22,
                    ..*p
                };
                rasterize(
                    canvas,
                    &p,
                    |u| (1.0 - (2.0 * u - 1.0).powi(2)).max(0.0).sqrt(),
                    |c, hit| {
                        let vein = if hit.v.abs() < 0.12 { 0.8 } else { 1.0 };
                        let col = [colour[0] * vein, colour[1] * vein, colour[2] * vein];
                        c.blend(hit.x, hit.y, col, hit.alpha * 0.92);
                    },
                );
            }
            Distractor::Twig { colour } => {
                let p = Placement {
                    radius: (p.length * 0.035).max(0.6),
                    ..*p
                };
                rasterize(
                    canvas,
                    &p,
                    |_| 1.0,
                    |c, hit| c.blend(hit.x, hit.y, colour, hit.alpha * 0.9),
                );
            }
            Distractor::Foam { blobs, seed } => {
                for i in 0..blobs {
                    let ox = (hash2(i as i32, 0, seed) - 0.5) * p.length;
                    let oy = (hash2(i as i32, 1, seed) - 0.5) * p.length * 0.3;
                    let r = (0.5 + hash2(i as i32, 2, seed)) * p.length * 0.04 + 0.5;
                    let blob = Placement {
                        cx: p.cx + ox,
                        cy: p.cy + oy,
                        length: r * 2.0,
                        radius: r * 0.7,
                        angle: 0.0,
                        mirror_about: None,
                    };
                    let white: Rgb = [0.92, 0.92, 0.88];
                    rasterize(
                        canvas,
                        &blob,
                        |u| (1.0 - (2.0 * u - 1.0).powi(2)).max(0.0).sqrt(),
                        |c, hit| {
                            let behind = c.get(hit.x, hit.y);
                            c.blend(hit.x, hit.y, mix(behind, white, 0.6), hit.alpha * 0.5);
                        },
                    );
                }
            }
        }
    }
}
