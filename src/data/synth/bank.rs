//! The bank band above the horizon: sky with clouds, buildings with window grids, a tree line and
//! the shore strip. FloW frames show exactly this band over the top ~35-40% of the frame; the
//! water mirrors it (see `water.rs`).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::canvas::{mix, scale, Canvas, Rgb};
use super::look::Look;
use super::noise::{fbm2, hash2, value1, value2};

/// The rendered band: `canvas` rows 0..height end at the horizon; `half` is its blurred
/// half-resolution copy that reflections sample.
pub struct Bank {
    pub canvas: Canvas,
    pub half: Canvas,
}

struct Building {
    x0: i32,
    x1: i32,
    top: i32,
    colour: Rgb,
    window: Rgb,
    cell_w: i32,
    cell_h: i32,
    win_w: i32,
    win_h: i32,
}

/// Render a band `width` × `height` (height = horizon row; at least 1). `unit` is the pixel scale
/// (1.0 at 1280 px wide) so that windows and crowns keep their size across output sizes.
pub fn render_bank(
    rng: &mut ChaCha8Rng,
    width: usize,
    height: usize,
    unit: f32,
    look: &Look,
) -> Bank {
    let height = height.max(1);
    let mut canvas = Canvas::new(width, height, look.sky_horizon);
    // The random draws keep their order: sky, buildings, trees, shore strip.
    paint_sky(&mut canvas, rng, (width, height), unit, look);
    let buildings = draw_buildings(rng, (width, height), unit);
    paint_buildings(&mut canvas, &buildings, (width, height), look);
    paint_tree_line(&mut canvas, rng, (width, height), unit, look);
    paint_shore_strip(&mut canvas, rng, (width, height), unit);
    let half = canvas.half();
    Bank { canvas, half }
}

/// Sky with clouds: fractal noise on a coarse grid (step 4), bilinear in between, to keep it
/// cheap.
fn paint_sky(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    (width, height): (usize, usize),
    unit: f32,
    look: &Look,
) {
    let noise_seed: u32 = rng.random();
    let h = height as f32;
    let step = 4usize;
    let (gw, gh) = (width / step + 2, height / step + 2);
    let cloud_scale = 1.0 / (140.0 * unit);
    let mut cloud_grid = vec![0.0f32; gw * gh];
    for gy in 0..gh {
        for gx in 0..gw {
            let (x, y) = ((gx * step) as f32, (gy * step) as f32);
            let n = fbm2(x * cloud_scale, y * cloud_scale * 2.2, noise_seed, 3);
            cloud_grid[gy * gw + gx] = ((n - (1.0 - look.cloud_cover)) * 2.5).clamp(0.0, 1.0);
        }
    }
    for y in 0..height {
        let sky = look.sky(y as f32 / h);
        let gyf = y as f32 / step as f32;
        let (gy0, ty) = (gyf as usize, gyf.fract());
        for x in 0..width {
            let gxf = x as f32 / step as f32;
            let (gx0, tx) = (gxf as usize, gxf.fract());
            let a = cloud_grid[gy0 * gw + gx0];
            let b = cloud_grid[gy0 * gw + gx0 + 1];
            let c = cloud_grid[(gy0 + 1) * gw + gx0];
            let d = cloud_grid[(gy0 + 1) * gw + gx0 + 1];
            let cloud = (a + (b - a) * tx) * (1.0 - ty) + (c + (d - c) * tx) * ty;
            // Clouds are brighter on top, greyer underneath.
            let shade = 0.85 + 0.15 * (1.0 - cloud);
            canvas.set(x, y, mix(sky, scale(look.cloud, shade), cloud * 0.9));
        }
    }
}

/// Buildings, each a rectangle with a grid of windows and floor bands, in drawing order.
fn draw_buildings(
    rng: &mut ChaCha8Rng,
    (width, height): (usize, usize),
    unit: f32,
) -> Vec<Building> {
    let h = height as f32;
    let n_buildings = match rng.random_range(0..10) {
        0..=2 => 0,
        3..=5 => rng.random_range(1..4),
        _ => rng.random_range(3..9),
    };
    let facades: [Rgb; 7] = [
        [0.80, 0.74, 0.62],
        [0.70, 0.66, 0.60],
        [0.86, 0.85, 0.82],
        [0.55, 0.50, 0.48],
        [0.62, 0.36, 0.30],
        [0.45, 0.47, 0.50],
        [0.78, 0.70, 0.55],
    ];
    let mut buildings = Vec::new();
    for _ in 0..n_buildings {
        let bw = rng.random_range(40.0..260.0) * unit;
        let x0 = rng.random_range(-bw * 0.5..width as f32) as i32;
        let top = (h * rng.random_range(0.0..0.75)) as i32;
        let colour = facades[rng.random_range(0..facades.len())];
        let colour = [
            colour[0] + rng.random_range(-0.05..0.05),
            colour[1] + rng.random_range(-0.05..0.05),
            colour[2] + rng.random_range(-0.05..0.05),
        ];
        let cell_w = (rng.random_range(7.0..16.0) * unit).max(2.0) as i32;
        let cell_h = (rng.random_range(8.0..14.0) * unit).max(2.0) as i32;
        buildings.push(Building {
            x0,
            x1: x0 + bw as i32,
            top,
            colour,
            window: mix(
                scale(colour, 0.45),
                [0.25, 0.30, 0.38],
                rng.random_range(0.2..0.8),
            ),
            cell_w,
            cell_h,
            win_w: (cell_w as f32 * rng.random_range(0.35..0.7)).max(1.0) as i32,
            win_h: (cell_h as f32 * rng.random_range(0.3..0.6)).max(1.0) as i32,
        });
    }
    // Taller buildings are farther away in FloW's cities: draw them first.
    buildings.sort_by_key(|b| b.top);
    buildings
}

/// The buildings, far ones first (hazier).
fn paint_buildings(
    canvas: &mut Canvas,
    buildings: &[Building],
    (width, height): (usize, usize),
    look: &Look,
) {
    let h = height as f32;
    for (bi, b) in buildings.iter().enumerate() {
        let haze = look.haze * (1.0 - b.top as f32 / h).clamp(0.0, 1.0);
        for y in b.top.max(0)..height as i32 {
            let ry = y - b.top;
            let in_row = ry % b.cell_h < b.win_h && ry > 2;
            for x in b.x0.max(0)..b.x1.min(width as i32) {
                let rx = x - b.x0;
                let is_window = in_row && rx % b.cell_w < b.win_w && rx > 1 && b.x1 - x > 2;
                let mut c = if is_window { b.window } else { b.colour };
                // Light from the left: a faint horizontal gradient and per-window variation.
                let lit = 0.92 + 0.1 * (rx as f32 / (b.x1 - b.x0).max(1) as f32);
                let var = if is_window {
                    0.85 + 0.3 * hash2(rx / b.cell_w, ry / b.cell_h, bi as u32)
                } else {
                    1.0
                };
                c = scale(c, lit * var);
                canvas.set(x as usize, y as usize, mix(c, look.sky_horizon, haze));
            }
        }
    }
}

/// Tree line: crowns along the shore, their height following 1-D noise. Each column keeps the
/// highest crown top over it; everything below is foliage with leafy value-noise shading.
fn paint_tree_line(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    (width, height): (usize, usize),
    unit: f32,
    look: &Look,
) {
    let h = height as f32;
    let tree_amount: f32 = rng.random_range(0.0..1.0);
    if tree_amount > 0.08 {
        let base = h * rng.random_range(0.08..0.35);
        let greens: [Rgb; 4] = [
            [0.20, 0.30, 0.14],
            [0.26, 0.36, 0.18],
            [0.16, 0.24, 0.13],
            [0.30, 0.38, 0.20],
        ];
        let tree_seed: u32 = rng.random();
        let mut top = vec![f32::INFINITY; width];
        let mut colour = vec![greens[0]; width];
        let mut x = -20.0 * unit;
        while x < width as f32 + 20.0 * unit {
            let r = rng.random_range(10.0..32.0) * unit;
            let lift = value1(x / (180.0 * unit), tree_seed) * base * 1.2
                + rng.random_range(0.0..0.4) * base;
            let green = greens[rng.random_range(0..greens.len())];
            if value1(x / (300.0 * unit), tree_seed ^ 0x55) < tree_amount + 0.45 {
                let cy = h - lift.max(r * 0.6);
                let x0 = ((x - r) as i32).max(0);
                let x1 = ((x + r) as i32 + 1).min(width as i32);
                for col in x0..x1 {
                    let dx = col as f32 - x;
                    let edge =
                        r * (0.85 + 0.3 * value1(col as f32 / (3.0 * unit), tree_seed ^ 0xa5));
                    if dx.abs() < edge {
                        let t = cy - (edge * edge - dx * dx).sqrt();
                        if t < top[col as usize] {
                            top[col as usize] = t;
                            colour[col as usize] = green;
                        }
                    }
                }
            }
            x += r * rng.random_range(0.6..1.2);
        }
        for (col, (&t, &green)) in top.iter().zip(colour.iter()).enumerate() {
            if !t.is_finite() {
                continue;
            }
            for y in (t.max(0.0) as usize)..height {
                let (fx, fy) = (col as f32, y as f32);
                let leaf = value2(fx / (4.0 * unit), fy / (4.0 * unit), tree_seed);
                let fine = value2(fx / (1.6 * unit), fy / (1.6 * unit), tree_seed ^ 0x9e37);
                let depth = ((fy - t) / (40.0 * unit)).clamp(0.0, 1.0);
                let light = 0.75 + 0.5 * leaf * fine - 0.3 * depth;
                canvas.set(
                    col,
                    y,
                    mix(scale(green, light), look.sky_horizon, look.haze * 0.3),
                );
            }
        }
    }
}

/// Shore strip: a few rows of dark vegetation / embankment at the horizon.
fn paint_shore_strip(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    (width, height): (usize, usize),
    unit: f32,
) {
    let strip = (rng.random_range(2.0..9.0) * unit).max(1.0) as usize;
    let strip_colour: Rgb = if rng.random_bool(0.5) {
        [0.22, 0.26, 0.16]
    } else {
        [0.38, 0.37, 0.33]
    };
    let strip_seed: u32 = rng.random();
    for y in height.saturating_sub(strip)..height {
        for x in 0..width {
            let v =
                0.8 + 0.4 * value2(x as f32 / (3.0 * unit), y as f32 / (2.0 * unit), strip_seed);
            canvas.set(x, y, scale(strip_colour, v));
        }
    }
}
