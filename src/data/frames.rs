//! Unlabeled frames for self-supervised pretraining (docs/the-study.md, read_video.py): read
//! every frame of a video (or every image of a folder, sorted by
//! name, as one sequence) and keep a seeded random ~5 % of them (the study: `random.seed(0)`, keep
//! when `random.random() >= 0.95`), or every N-th frame, optionally resized.
//!
//! Videos are decoded by an `ffmpeg` subprocess that writes PPM frames (`-f image2pipe -c:v ppm`)
//! to a pipe: each frame carries its own size in its header, so no probe is needed.
//!
//! Output: `OUT/frame_NNNNNN.png`, NNNNNN = the 0-based index of the frame in the input sequence
//! (the study numbered kept frames; the source index says where a frame came from).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image::RgbImage;
use rand::Rng;

use crate::data::image_io::{read_rgb, write_rgb};
use crate::rng::rng_for;
use crate::{Error, Result};

/// Which frames to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameSelection {
    /// Keep each frame with this probability, one seeded draw per frame in order
    /// (read_video.py: keep when `random.random() >= 1 - p`, p = 0.05).
    KeepProb(f64),
    /// Keep frames 0, N, 2N, ...
    Every(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FramesOptions {
    pub selection: FrameSelection,
    pub seed: u64,
    /// Resize kept frames to width x height (bilinear); None keeps the native size (the study).
    pub resize: Option<(u32, u32)>,
    /// The ffmpeg executable ("ffmpeg" = found on PATH).
    pub ffmpeg: PathBuf,
}

impl Default for FramesOptions {
    fn default() -> Self {
        FramesOptions {
            selection: FrameSelection::KeepProb(0.05),
            seed: 0, // read_video.py: random.seed(0)
            resize: None,
            ffmpeg: PathBuf::from("ffmpeg"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FramesReport {
    pub frames_read: usize,
    /// Source indices of the kept frames, in order.
    pub kept: Vec<usize>,
}

/// Image extensions read from a folder input.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Decides frame by frame; the same seed gives the same choices for the same frame count.
pub struct FrameSelector {
    selection: FrameSelection,
    rng: rand_chacha::ChaCha8Rng,
}

impl FrameSelector {
    pub fn new(selection: FrameSelection, seed: u64) -> Result<Self> {
        match selection {
            FrameSelection::KeepProb(p) if !(0.0..=1.0).contains(&p) => {
                return Err(Error::InvalidArgument(format!(
                    "--keep-prob {p} is not in [0, 1]"
                )))
            }
            FrameSelection::Every(0) => {
                return Err(Error::InvalidArgument("--every must be at least 1".into()))
            }
            _ => {}
        }
        Ok(FrameSelector {
            selection,
            rng: rng_for(seed, "frames/keep"),
        })
    }

    /// Whether to keep frame `index` (call once per frame, in order).
    pub fn keep(&mut self, index: usize) -> bool {
        match self.selection {
            FrameSelection::KeepProb(p) => {
                let u: f64 = self.rng.random();
                u >= 1.0 - p
            }
            FrameSelection::Every(n) => index.is_multiple_of(n),
        }
    }
}

/// Extract frames from `input` (a video file, or a folder of images read in name order) into
/// `out_dir` (created if needed; the caller decides whether it may be written into).
pub fn extract_frames(input: &Path, out_dir: &Path, opts: &FramesOptions) -> Result<FramesReport> {
    let mut selector = FrameSelector::new(opts.selection, opts.seed)?;
    if let Some((w, h)) = opts.resize {
        if w == 0 || h == 0 {
            return Err(Error::InvalidArgument(format!(
                "--resize {w}x{h}: sides must be positive"
            )));
        }
    }
    if !input.exists() {
        return Err(Error::InvalidArgument(format!(
            "{}: no such file or folder",
            input.display()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut report = FramesReport::default();
    let mut sink = |index: usize, frame: RgbImage| -> Result<()> {
        report.frames_read += 1;
        if selector.keep(index) {
            let frame = match opts.resize {
                Some((w, h)) if (w, h) != frame.dimensions() => {
                    image::imageops::resize(&frame, w, h, image::imageops::FilterType::Triangle)
                }
                _ => frame,
            };
            write_rgb(&out_dir.join(format!("frame_{index:06}.png")), &frame)?;
            report.kept.push(index);
        }
        Ok(())
    };
    if input.is_dir() {
        let files = list_images(input)?;
        if files.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: no images (.png, .jpg, .jpeg) in this folder",
                input.display()
            )));
        }
        for (index, file) in files.iter().enumerate() {
            sink(index, read_rgb(file)?)?;
        }
    } else if input.is_file() {
        decode_video(input, &opts.ffmpeg, &mut sink)?;
    } else {
        return Err(Error::InvalidArgument(format!(
            "{}: no such file or folder",
            input.display()
        )));
    }
    Ok(report)
}

/// Image files directly in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Folders directly in `dir`, sorted by path (one video's frames each, as `ssod synth` and
/// `ssod frames` write them).
pub fn list_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    Ok(folders)
}

/// Decode every frame of `video` with ffmpeg and hand each to `sink(index, frame)` in order.
pub fn decode_video(
    video: &Path,
    ffmpeg: &Path,
    sink: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
) -> Result<()> {
    let mut child = Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(video)
        .args([
            "-map",
            "0:v:0",
            "-f",
            "image2pipe",
            "-c:v",
            "ppm",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Msg(format!(
                    "`{}` not found: ffmpeg is needed to read videos such as {} \
                     (install it, e.g. `apt-get install ffmpeg`, or pass a folder of images)",
                    ffmpeg.display(),
                    video.display()
                ))
            } else {
                Error::Msg(format!("cannot start `{}`: {e}", ffmpeg.display()))
            }
        })?;
    // Drain stderr on its own thread so a chatty ffmpeg never blocks on a full pipe.
    let stderr = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Msg("ffmpeg: no stdout pipe".into()))?;
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut index = 0usize;
    let mut result = Ok(());
    loop {
        match read_ppm(&mut reader) {
            Ok(Some(frame)) => {
                if let Err(e) = sink(index, frame) {
                    result = Err(e);
                    break;
                }
                index += 1;
            }
            Ok(None) => break,
            Err(msg) => {
                result = Err(Error::format(
                    video.display(),
                    format!("frame {index}: {msg}"),
                ));
                break;
            }
        }
    }
    if result.is_err() {
        let _ = child.kill();
    }
    drop(reader);
    let status = child
        .wait()
        .map_err(|e| Error::Msg(format!("ffmpeg: {e}")))?;
    let stderr_text = stderr_thread.join().unwrap_or_default();
    result?;
    if !status.success() {
        return Err(Error::format(
            video.display(),
            format!("ffmpeg failed ({status}): {}", stderr_text.trim()),
        ));
    }
    if index == 0 {
        return Err(Error::format(
            video.display(),
            "ffmpeg decoded no video frames",
        ));
    }
    Ok(())
}

/// One binary PPM (`P6 W H 255` + W*H*3 bytes) from the stream; None at a clean end of stream.
fn read_ppm<R: BufRead>(r: &mut R) -> std::result::Result<Option<RgbImage>, String> {
    if r.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Ok(None);
    }
    let magic = ppm_token(r)?;
    if magic != "P6" {
        return Err(format!(
            "unexpected frame header `{magic}` from ffmpeg (expected P6)"
        ));
    }
    let mut num = |what: &str| -> std::result::Result<u32, String> {
        let t = ppm_token(r)?;
        t.parse().map_err(|_| format!("bad PPM {what} `{t}`"))
    };
    let (w, h, maxval) = (num("width")?, num("height")?, num("maxval")?);
    if maxval != 255 {
        return Err(format!("PPM maxval {maxval}, expected 255"));
    }
    let mut data = vec![0u8; w as usize * h as usize * 3];
    r.read_exact(&mut data)
        .map_err(|e| format!("truncated frame: {e}"))?;
    RgbImage::from_raw(w, h, data)
        .map(Some)
        .ok_or_else(|| "frame buffer size mismatch".to_string())
}

/// The next whitespace-delimited header token (skipping `#` comments); consumes exactly one
/// whitespace byte after it, as the PPM format requires before the pixel data.
fn ppm_token<R: BufRead>(r: &mut R) -> std::result::Result<String, String> {
    let mut tok = String::new();
    let mut byte = [0u8; 1];
    loop {
        r.read_exact(&mut byte)
            .map_err(|e| format!("truncated PPM header: {e}"))?;
        let c = byte[0];
        if c == b'#' && tok.is_empty() {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
            continue;
        }
        if c.is_ascii_whitespace() {
            if tok.is_empty() {
                continue;
            }
            return Ok(tok);
        }
        tok.push(c as char);
        if tok.len() > 16 {
            return Err("PPM header token too long".into());
        }
    }
}
