//! Floating bottles: body, shoulder, neck and cap; clear/white/green/brown/blue plastic, an
//! optional label band, cylinder shading with a specular line, a submerged lower part seen through
//! the water and a faint reflection. The annotation box is the visible coverage (above water and
//! just below the surface).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::canvas::{mix, scale, Canvas, Rgb};
use super::shape::{rasterize, Placement};

#[derive(Debug, Clone)]
pub struct BottleStyle {
    pub body: Rgb,
    /// How much of the body colour covers what lies behind (clear plastic shows the water).
    pub opacity: f32,
    /// Label band along the axis (u range) and its colour.
    pub label: Option<(f32, f32, Rgb)>,
    pub cap: Rgb,
    /// Across-axis level (v) below which the bottle is under water.
    pub waterline: f32,
    /// Diameter / length.
    pub slenderness: f32,
}

impl BottleStyle {
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let (body, opacity) = match rng.random_range(0..100) {
            0..=44 => ([0.86, 0.90, 0.92], rng.random_range(0.45..0.65)), // clear
            45..=64 => ([0.93, 0.93, 0.91], rng.random_range(0.85..0.95)), // white
            65..=76 => ([0.30, 0.62, 0.38], rng.random_range(0.6..0.8)),  // green
            77..=86 => ([0.50, 0.28, 0.12], rng.random_range(0.7..0.85)), // brown
            _ => ([0.45, 0.65, 0.90], rng.random_range(0.55..0.75)),      // blue
        };
        let labels: [Rgb; 6] = [
            [0.72, 0.20, 0.18],
            [0.15, 0.30, 0.65],
            [0.85, 0.75, 0.25],
            [0.20, 0.50, 0.28],
            [0.88, 0.88, 0.86],
            [0.85, 0.45, 0.18],
        ];
        let label = if rng.random_bool(0.6) {
            let start = rng.random_range(0.15..0.4);
            Some((
                start,
                start + rng.random_range(0.15..0.3),
                labels[rng.random_range(0..labels.len())],
            ))
        } else {
            None
        };
        let caps: [Rgb; 5] = [
            [0.95, 0.95, 0.95],
            [0.15, 0.30, 0.75],
            [0.80, 0.15, 0.12],
            [0.20, 0.60, 0.25],
            [0.95, 0.70, 0.10],
        ];
        BottleStyle {
            body,
            opacity,
            label,
            cap: caps[rng.random_range(0..caps.len())],
            waterline: rng.random_range(0.0..0.7),
            slenderness: rng.random_range(0.26..0.38),
        }
    }
}

/// Radius along the axis (units of the body radius): body, shoulder, neck, cap.
fn bottle_profile(u: f32) -> f32 {
    if u < 0.04 {
        0.8 + 5.0 * u
    } else if u < 0.62 {
        1.0
    } else if u < 0.76 {
        let t = (u - 0.62) / 0.14;
        1.0 - 0.62 * t * t * (3.0 - 2.0 * t)
    } else if u < 0.9 {
        0.38
    } else {
        0.46
    }
}

/// Draw the bottle (reflection first) and return its visible box as `xyxy` pixel edges
/// (x0, y0 inclusive, x1, y1 exclusive), or None if nothing visible is in the frame.
pub fn draw_bottle(
    canvas: &mut Canvas,
    p: &Placement,
    style: &BottleStyle,
    water: Rgb,
) -> Option<[u32; 4]> {
    // Faint reflection, mirrored about the waterline below the axis.
    let mirror_row = p.cy + p.radius * (0.3 + 0.5 * style.waterline.max(0.0));
    let refl = Placement {
        mirror_about: Some(mirror_row),
        ..*p
    };
    let refl_colour = mix(scale(style.body, 0.6), water, 0.5);
    rasterize(canvas, &refl, bottle_profile, |c, hit| {
        if hit.v < style.waterline {
            c.blend(hit.x, hit.y, refl_colour, hit.alpha * 0.18);
        }
    });

    let mut bbox = [u32::MAX, u32::MAX, 0, 0];
    rasterize(canvas, p, bottle_profile, |c, hit| {
        let behind = c.get(hit.x, hit.y);
        let (base, opacity) = if hit.u > 0.9 {
            (style.cap, 1.0)
        } else {
            match style.label {
                Some((a, b, col)) if hit.u > a && hit.u < b => (col, 0.97),
                _ => (style.body, style.opacity),
            }
        };
        // Cylinder shading lit from above, with a specular line on the upper side.
        let across = hit.v.clamp(-1.0, 1.0);
        let shade = 0.72 + 0.3 * (1.0 - across * across).sqrt() - 0.12 * across;
        let spec = 0.55 * (-((across + 0.45) / 0.2).powi(2)).exp();
        let mut col = mix(behind, scale(base, shade), opacity);
        col = mix(col, [1.0, 1.0, 1.0], spec * (0.5 + 0.5 * (1.0 - opacity)));
        if hit.v > style.waterline {
            // Seen through the water: mostly the water, a tinted ghost of the plastic.
            col = mix(col, mix(behind, water, 0.3), 0.65);
        }
        // The box covers what is above water and the clearly visible ghost just below the
        // surface (FloW's boxes enclose the whole visible bottle).
        if hit.v <= style.waterline + 0.35 && hit.alpha >= 0.5 {
            bbox[0] = bbox[0].min(hit.x as u32);
            bbox[1] = bbox[1].min(hit.y as u32);
            bbox[2] = bbox[2].max(hit.x as u32 + 1);
            bbox[3] = bbox[3].max(hit.y as u32 + 1);
        }
        c.blend(hit.x, hit.y, col, hit.alpha);
    });
    (bbox[0] < bbox[2] && bbox[1] < bbox[3]).then_some(bbox)
}
