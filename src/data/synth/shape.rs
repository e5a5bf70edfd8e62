//! Anti-aliased elongated shapes: an axis from u = 0 to u = 1 with a radius profile r(u), rotated
//! in the image. Bottles, leaves and twigs are all such shapes; the caller colours each covered
//! pixel from its local coordinates.

use super::canvas::Canvas;

/// An elongated shape placed in the image.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Centre, px.
    pub cx: f32,
    pub cy: f32,
    /// Axis length and maximum half-width, px.
    pub length: f32,
    pub radius: f32,
    /// Axis angle in the image, radians.
    pub angle: f32,
    /// Mirror the frame vertically about this row (reflections), or not.
    pub mirror_about: Option<f32>,
}

/// A covered pixel: coverage 0..1, position along the axis u (0..1) and across it v (-1..1, v > 0
/// is the lower side in the image).
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub x: usize,
    pub y: usize,
    pub alpha: f32,
    pub u: f32,
    pub v: f32,
}

/// Visit every pixel the shape covers (with anti-aliased coverage). `profile(u)` is the radius in
/// units of `radius`.
pub fn rasterize(
    canvas: &mut Canvas,
    p: &Placement,
    profile: impl Fn(f32) -> f32,
    mut paint: impl FnMut(&mut Canvas, Hit),
) {
    let (dx, dy) = (p.angle.cos(), p.angle.sin());
    // Normal pointing down in the image, so v > 0 is the lower (submerged) side.
    let (nx, ny) = if dx >= 0.0 { (-dy, dx) } else { (dy, -dx) };
    let half_l = p.length * 0.5;
    let ext_x = (half_l * dx.abs() + p.radius * nx.abs()) + 1.5;
    let ext_y = (half_l * dy.abs() + p.radius * ny.abs()) + 1.5;
    let (cy, y_sign) = match p.mirror_about {
        Some(m) => (2.0 * m - p.cy, -1.0),
        None => (p.cy, 1.0),
    };
    let x0 = (p.cx - ext_x).floor().max(0.0) as usize;
    let x1 = ((p.cx + ext_x).ceil() as i64).clamp(0, canvas.width as i64) as usize;
    let y0 = (cy - ext_y).floor().max(0.0) as usize;
    let y1 = ((cy + ext_y).ceil() as i64).clamp(0, canvas.height as i64) as usize;
    if p.cx + ext_x < 0.0 || cy + ext_y < 0.0 {
        return;
    }
    for y in y0..y1 {
        // In mirrored mode the pixel row maps back to the object's own frame.
        let ry = (y as f32 + 0.5 - cy) * y_sign;
        for x in x0..x1 {
            let rx = x as f32 + 0.5 - p.cx;
            let along = rx * dx + ry * dy;
            let across = rx * nx + ry * ny;
            let u = along / p.length + 0.5;
            let r = profile(u.clamp(0.0, 1.0)) * p.radius;
            let d_side = across.abs() - r;
            let d_end = (-u).max(u - 1.0) * p.length;
            let d = d_side.max(d_end);
            let alpha = (0.5 - d).clamp(0.0, 1.0);
            if alpha > 0.0 {
                paint(
                    canvas,
                    Hit {
                        x,
                        y,
                        alpha,
                        u,
                        v: across / p.radius.max(1e-3),
                    },
                );
            }
        }
    }
}
