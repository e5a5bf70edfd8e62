//! One scene: lighting, waves, horizon and bank, and the floating objects. A scene renders to a
//! frame at a time `t` and a camera pan, so a still image is a scene at t = 0 and a video is the
//! same scene at t = 0, 1, 2, ...

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::bank::{render_bank, Bank};
use super::bottle::{draw_bottle, BottleStyle};
use super::canvas::Canvas;
use super::distractors::Distractor;
use super::look::Look;
use super::shape::Placement;
use super::water::{render_water, Waves};

#[derive(Debug, Clone)]
pub enum FloaterKind {
    Bottle(BottleStyle),
    Distractor(Distractor),
}

/// A floating object in water-plane terms: its image column at t = 0, its distance below the
/// horizon in px (which sets its size: perspective makes size proportional to that distance),
/// heading on the water, and drift per frame.
#[derive(Debug, Clone)]
pub struct Floater {
    pub kind: FloaterKind,
    pub x: f32,
    pub dist: f32,
    /// Length / distance-below-horizon (how big the thing is).
    pub size: f32,
    pub heading: f32,
    pub vx: f32,
    pub vdist: f32,
    pub spin: f32,
}

pub struct Scene {
    pub width: usize,
    pub height: usize,
    /// Pixel scale relative to a 1280-wide frame.
    pub unit: f32,
    pub look: Look,
    pub waves: Waves,
    /// Horizon row (may be negative: the camera looks down and no bank is visible).
    pub horizon: f32,
    pub bank: Option<Bank>,
    pub objects: Vec<Floater>,
}

/// A rendered frame with the visible boxes of its bottles (`xyxy` pixel edges).
pub struct Frame {
    pub image: RgbImage,
    pub boxes_xyxy: Vec<[u32; 4]>,
}

/// Length in px of a floater of relative `size` at `dist` px below the horizon. Perspective makes
/// it proportional to the distance below the horizon (FloW: ~15 px at 30 px below it, ~75 px at
/// 150 px); when the horizon is above the frame, distances count from the top row (still far away).
/// The growth saturates near the camera so that large objects stay few, as in FloW.
fn apparent_length(size: f32, dist: f32, horizon: f32, unit: f32) -> f32 {
    let d = (dist - (-horizon).max(0.0)).max(1.0);
    size * d / (1.0 + d / (600.0 * unit))
}

impl Scene {
    /// Sample a scene with `n_bottles` bottles and a bank `pan_margin` px wider than the frame
    /// (room for a panning video camera).
    pub fn sample(
        rng: &mut ChaCha8Rng,
        width: usize,
        height: usize,
        n_bottles: usize,
        pan_margin: usize,
    ) -> Scene {
        let unit = width as f32 / 1280.0;
        let look = Look::sample(rng);
        let waves = Waves::sample(rng, width, unit);
        // FloW: the bank fills the top ~35-40% of most frames; some frames look down at the water.
        let horizon = if rng.random_bool(0.85) {
            height as f32 * rng.random_range(0.26..0.45)
        } else {
            -(height as f32) * rng.random_range(0.05..0.4)
        };
        let bank = (horizon >= 1.0).then(|| {
            render_bank(
                rng,
                width + pan_margin,
                horizon.ceil() as usize,
                unit,
                &look,
            )
        });
        let dist_min = (25.0 * unit).max(-horizon + 4.0 * unit);
        let dist_max = height as f32 - horizon;
        let mut objects: Vec<Floater> = Vec::new();
        let mut bottles = 0;
        let mut tries = 0;
        while bottles < n_bottles && tries < 50 * n_bottles.max(1) {
            tries += 1;
            // Far water covers fewer rows but more area: most bottles are far (small).
            let dist = dist_min + (dist_max - dist_min) * rng.random::<f32>().powf(3.8);
            let size = rng.random_range(0.4..0.65);
            let x = rng.random_range(0.0..width as f32);
            let len = apparent_length(size, dist, horizon, unit);
            let clash = objects.iter().any(|o| {
                matches!(o.kind, FloaterKind::Bottle(_))
                    && (o.x - x).abs()
                        < 0.6 * (apparent_length(o.size, o.dist, horizon, unit) + len)
                    && (o.dist - dist).abs()
                        < 0.4 * (apparent_length(o.size, o.dist, horizon, unit) + len)
            });
            if clash {
                continue;
            }
            objects.push(Floater {
                kind: FloaterKind::Bottle(BottleStyle::sample(rng)),
                x,
                dist,
                size,
                heading: rng.random_range(0.0..std::f32::consts::TAU),
                vx: rng.random_range(-0.6..0.6) * unit,
                vdist: rng.random_range(-0.15..0.15) * unit,
                spin: rng.random_range(-0.01..0.01),
            });
            bottles += 1;
        }
        let n_distractors = rng.random_range(0..12);
        for _ in 0..n_distractors {
            let d = Distractor::sample(rng);
            let dist = dist_min + (dist_max - dist_min) * rng.random::<f32>().powf(1.8);
            objects.push(Floater {
                size: rng.random_range(0.3..0.65) * d.relative_size(),
                kind: FloaterKind::Distractor(d),
                x: rng.random_range(0.0..width as f32),
                dist,
                heading: rng.random_range(0.0..std::f32::consts::TAU),
                vx: rng.random_range(-0.6..0.6) * unit,
                vdist: rng.random_range(-0.15..0.15) * unit,
                spin: rng.random_range(-0.02..0.02),
            });
        }
        Scene {
            width,
            height,
            unit,
            look,
            waves,
            horizon,
            bank,
            objects,
        }
    }

    /// Render the scene at frame `t` with the camera panned by `pan` px and the horizon moved by
    /// `horizon_shift` px (camera bob).
    pub fn render(&self, t: f32, pan: f32, horizon_shift: f32) -> Frame {
        let (w, h) = (self.width, self.height);
        let horizon = self.horizon + horizon_shift;
        let mut canvas = Canvas::new(w, h, self.look.sky_horizon);
        if let Some(bank) = &self.bank {
            let pan_col = pan.max(0.0) as usize;
            let rows = (horizon.ceil().max(0.0) as usize).min(h);
            let shift = (self.horizon.ceil() - horizon).max(0.0) as usize;
            for y in 0..rows {
                let src_y = (y + shift).min(bank.canvas.height - 1);
                for x in 0..w {
                    let src_x = (x + pan_col).min(bank.canvas.width - 1);
                    canvas.set(x, y, bank.canvas.get(src_x, src_y));
                }
            }
        }
        render_water(
            &mut canvas,
            self.bank.as_ref(),
            horizon,
            pan,
            &self.look,
            &self.waves,
            t,
        );

        // Far things first, so that near ones cover them.
        let mut order: Vec<(f32, usize)> = self
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.dist + o.vdist * t, i))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let water_extent = h as f32 - horizon;
        let mut boxes_xyxy = Vec::new();
        for (dist, i) in order {
            let o = &self.objects[i];
            if dist <= 2.0 {
                continue;
            }
            let cy = horizon + dist;
            let cx = o.x + o.vx * t - pan;
            let length = apparent_length(o.size, dist, self.horizon, self.unit);
            // A low camera sees the water plane foreshortened: more so far away.
            let fore = 0.12 + 0.45 * (dist / water_extent).clamp(0.0, 1.0);
            let heading = o.heading + o.spin * t;
            let (ax, ay) = (heading.cos(), heading.sin() * fore);
            let axis_len = (ax * ax + ay * ay).sqrt();
            let angle = ay.atan2(ax);
            match &o.kind {
                FloaterKind::Bottle(style) => {
                    // At least ~3 px thick: far bottles still read as bottles, not lines.
                    let radius = (0.5 * style.slenderness * length).max(1.6 * self.unit);
                    let p = Placement {
                        cx,
                        cy,
                        length: (length * axis_len).max(2.0 * radius),
                        radius,
                        angle,
                        mirror_about: None,
                    };
                    if let Some(b) = draw_bottle(&mut canvas, &p, style, self.look.water) {
                        if b[2] - b[0] >= 2 && b[3] - b[1] >= 2 {
                            boxes_xyxy.push(b);
                        }
                    }
                }
                FloaterKind::Distractor(d) => {
                    let p = Placement {
                        cx,
                        cy,
                        length: (length * axis_len).max(1.5),
                        radius: 1.0,
                        angle,
                        mirror_about: None,
                    };
                    d.draw(&mut canvas, &p);
                }
            }
        }
        Frame {
            image: canvas.to_rgb_image_graded(self.look.grade),
            boxes_xyxy,
        }
    }
}
