//! Unlabelled videos: one scene per video rendered at consecutive times, with objects drifting,
//! waves moving, the camera panning slowly and bobbing a little (the study's self-supervised
//! pretraining uses frames from FloW's videos).

use rand::Rng;
use rayon::prelude::*;

use super::{bottle_count, encode_jpeg, Scene, SynthConfig};
use crate::rng::rng_for;
use crate::{Error, Result};

/// Write `cfg.videos` × `cfg.frames_per_video` frames under `unlabeled/video_NN/`; returns the
/// number of frames written.
pub fn write_videos(cfg: &SynthConfig) -> Result<usize> {
    if cfg.videos == 0 || cfg.frames_per_video == 0 {
        return Ok(0);
    }
    let unit = cfg.width as f32 / 1280.0;
    let mut total = 0;
    for v in 0..cfg.videos {
        let mut rng = rng_for(cfg.seed, &format!("synth/video/{v}"));
        let pan_speed: f32 = rng.random_range(0.0..0.8) * unit;
        let bob_amp: f32 = rng.random_range(0.0..3.0) * unit;
        let bob_freq: f32 = rng.random_range(0.02..0.08);
        let margin = (pan_speed * cfg.frames_per_video as f32).ceil() as usize + 2;
        // Videos are filmed looking along the water (FloW-Video): redraw scenes without a bank.
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let mut n = bottle_count(&mut rng);
        let mut scene = Scene::sample(&mut rng, w, h, n, margin);
        for _ in 0..16 {
            if scene.bank.is_some() {
                break;
            }
            n = bottle_count(&mut rng);
            scene = Scene::sample(&mut rng, w, h, n, margin);
        }
        let dir = cfg
            .out
            .join("unlabeled")
            .join(format!("video_{:02}", v + 1));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        (0..cfg.frames_per_video)
            .into_par_iter()
            .try_for_each(|t| {
                let tf = t as f32;
                let frame = scene.render(tf, pan_speed * tf, bob_amp * (bob_freq * tf).sin());
                let path = dir.join(format!("{:06}.jpg", t + 1));
                std::fs::write(&path, encode_jpeg(&frame.image)?).map_err(|e| Error::io(&path, e))
            })?;
        total += cfg.frames_per_video;
    }
    Ok(total)
}
