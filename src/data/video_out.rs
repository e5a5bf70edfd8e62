//! Writing a video: RGB frames piped to ffmpeg as raw video and encoded as MPEG-4 Part 2 in an
//! `.mp4` (a codec every ffmpeg build has), at the source's frame rate (`video_fps`, ffprobe).
//! The counterpart of [`crate::data::frames::decode_video`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use image::RgbImage;

use crate::{Error, Result};

/// The frame rate of a video's first stream (ffprobe's `r_frame_rate`, e.g. `30000/1001`), or
/// None when ffprobe is missing or says nothing usable.
pub fn video_fps(video: &Path, ffprobe: &Path) -> Option<f64> {
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(video)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    let fps = match text.split_once('/') {
        Some((n, d)) => n.parse::<f64>().ok()? / d.parse::<f64>().ok()?,
        None => text.parse::<f64>().ok()?,
    };
    (fps.is_finite() && fps > 0.0).then_some(fps)
}

/// An ffmpeg process encoding the frames written to it; every frame must have the first one's
/// size. [`VideoWriter::finish`] closes the stream and reports ffmpeg's failure, if any.
pub struct VideoWriter {
    path: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    size: (u32, u32),
    frames: usize,
}

impl VideoWriter {
    /// Start encoding `width`×`height` frames at `fps` into `path` (an existing file is
    /// replaced: the caller decides about overwriting).
    pub fn create(path: &Path, width: u32, height: u32, fps: f64, ffmpeg: &Path) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!(
                "{}: frames of {width}x{height}",
                path.display()
            )));
        }
        let mut child = Command::new(ffmpeg)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
            .arg(format!("{width}x{height}"))
            .arg("-r")
            .arg(format!("{fps}"))
            .args(["-i", "-"])
            // yuv420p needs even sides; pad the odd row or column.
            .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
            .args(["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Msg(format!(
                    "cannot start `{}` to write {}: {e} (ffmpeg is needed to write videos)",
                    ffmpeg.display(),
                    path.display()
                ))
            })?;
        let stdin = child.stdin.take();
        Ok(VideoWriter {
            path: path.to_path_buf(),
            child,
            stdin,
            size: (width, height),
            frames: 0,
        })
    }

    /// Append one frame.
    pub fn write(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != self.size {
            return Err(Error::InvalidArgument(format!(
                "{}: frame {} is {}x{}, the video is {}x{}",
                self.path.display(),
                self.frames,
                frame.width(),
                frame.height(),
                self.size.0,
                self.size.1
            )));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Msg(format!("{}: already finished", self.path.display())))?;
        if let Err(e) = stdin.write_all(frame.as_raw()) {
            // ffmpeg stopped reading: its own message says why.
            self.stdin = None;
            let why = self.stderr_text();
            return Err(Error::Msg(format!(
                "{}: ffmpeg stopped at frame {}: {e} {why}",
                self.path.display(),
                self.frames
            )));
        }
        self.frames += 1;
        Ok(())
    }

    fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut text);
        }
        text.trim().to_string()
    }

    /// Close the stream and wait for ffmpeg; returns the number of frames written.
    pub fn finish(mut self) -> Result<usize> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Msg(format!("ffmpeg: {e}")))?;
        if !status.success() {
            let why = self.stderr_text();
            return Err(Error::Msg(format!(
                "{}: ffmpeg failed ({status}): {why}",
                self.path.display()
            )));
        }
        Ok(self.frames)
    }
}
