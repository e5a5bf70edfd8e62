//! Frames with their place in time: the video each comes from and its frame number there, as
//! `ssod frames` and `ssod synth` record them in the layout they write:
//! - `ssod frames` writes `OUT/frame_NNNNNN.png`, NNNNNN = the frame's 0-based index in its
//!   video, one video per output folder;
//! - `ssod synth` writes `unlabeled/video_NN/NNNNNN.jpg`, one subfolder per video.
//!
//! So the video is the folder holding a frame and the time is the number at the end of its file
//! name. A folder of frames (one video) or a folder of such folders (one video each) loads.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use crate::data::frames::{list_images, list_subfolders};
use crate::pretrain::data::ImageSource;
use crate::{Error, Result};

/// One frame: its image, its video (an index into [`TimedFrames::videos`]) and frame number.
#[derive(Clone)]
pub struct TimedFrame {
    pub image: ImageSource,
    pub video: usize,
    pub time: i64,
}

/// Frames of one or more videos.
#[derive(Clone, Default)]
pub struct TimedFrames {
    pub frames: Vec<TimedFrame>,
    /// Video names (the folders).
    pub videos: Vec<String>,
}

/// The frame number of `path`: the last run of digits in its file stem.
pub fn frame_number(path: &Path) -> Option<i64> {
    let stem = path.file_stem()?.to_str()?;
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

impl TimedFrames {
    /// Load `dir` (see the module docs). A frame whose name carries no frame number is an error
    /// naming it: the temporal method needs the index `ssod frames` writes into the names.
    pub fn load(dir: &Path) -> Result<TimedFrames> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{}: no such folder of frames",
                dir.display()
            )));
        }
        let mut folders = vec![dir.to_path_buf()];
        if list_images(dir)?.is_empty() {
            folders = list_subfolders(dir)?;
        }
        let mut out = TimedFrames::default();
        for folder in folders {
            let files = list_images(&folder)?;
            if files.is_empty() {
                continue;
            }
            let video = out.videos.len();
            out.videos.push(folder.display().to_string());
            for file in files {
                let Some(time) = frame_number(&file) else {
                    return Err(Error::format(
                        file.display(),
                        "no frame index in the file name: the temporal method needs the \
                         frame_NNNNNN.png names `ssod frames` writes (NNNNNN = the frame's \
                         index in its video, one folder per video)",
                    ));
                };
                out.frames.push(TimedFrame {
                    image: ImageSource::File(file),
                    video,
                    time,
                });
            }
        }
        if out.frames.is_empty() {
            return Err(Error::format(dir.display(), "no frames (.png/.jpg) found"));
        }
        Ok(out)
    }

    /// Frames in memory: `(image, video, time)`.
    pub fn from_images(frames: Vec<(RgbImage, usize, i64)>) -> TimedFrames {
        let videos = frames.iter().map(|f| f.1).max().map_or(0, |m| m + 1);
        TimedFrames {
            frames: frames
                .into_iter()
                .map(|(img, video, time)| TimedFrame {
                    image: ImageSource::Memory(Arc::new(img)),
                    video,
                    time,
                })
                .collect(),
            videos: (0..videos).map(|v| format!("video {v}")).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_numbers_come_from_the_end_of_the_name() {
        assert_eq!(frame_number(Path::new("a/frame_000123.png")), Some(123));
        assert_eq!(frame_number(Path::new("video_02/000007.jpg")), Some(7));
        assert_eq!(frame_number(Path::new("cam2_shot_15_x.png")), Some(15));
        assert_eq!(frame_number(Path::new("still.png")), None);
    }
}
