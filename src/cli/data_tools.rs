//! Data-tool commands: `voc2coco`, `crop`, `frames`, `stats` (with the lint, `data::lint`).
//!
//! Output rule shared by all of them: an existing output file, or an existing non-empty output
//! folder, is refused unless `--force` is given (then files of the same name are replaced).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};

use ssod::data::convert::{voc_files_to_coco, write_study_json, ConvertOptions};
use ssod::data::crops::{write_crops, CropOptions};
use ssod::data::frames::{extract_frames, FrameSelection, FramesOptions};
use ssod::data::lint::{lint, source_from_coco, source_from_voc_files, DatasetLint};
use ssod::data::stats::summarize;
use ssod::data::voc::{collect_labels, list_xml_files, read_labels};
use ssod::data::CocoDataset;

#[derive(Subcommand)]
pub enum DataToolsCommand {
    /// Convert VOC XML annotations to one COCO json, with the study's coco-tools rules
    ///
    /// Image ids follow the list order (--ann-list) or the sorted file names (--ann-dir);
    /// categories follow labels.txt from 1; bbox = [int(xmin)-1, int(ymin)-1, int(xmax)-(int(xmin)-1),
    /// int(ymax)-(int(ymin)-1)]. Every bad file/object is listed and nothing is written unless
    /// --skip-invalid. An existing --out is refused unless --force.
    #[command(name = "voc2coco")]
    Voc2coco(Voc2cocoArgs),
    /// Cut foreground/background crops for center-loss pretraining from a COCO json + images
    ///
    /// Per image: one background crop (IoU < 0.005 with every GT, up to 11 tries) and one positive crop
    /// centred on a random GT, both square of side int(224*U(0.8,1.2)). Writes OUT/pos/*.png,
    /// OUT/neg/*.png and OUT/crops.csv. A non-empty OUT is refused unless --force.
    #[command(name = "crop")]
    Crop(CropArgs),
    /// Keep a seeded random subset (or every N-th) of the frames of a video or image folder
    ///
    /// A video file is decoded with ffmpeg (must be installed); a folder is read as a sequence of
    /// images in file-name order. Kept frames are written as OUT/frame_NNNNNN.png, NNNNNN = the frame's
    /// index in the input. A non-empty OUT is refused unless --force.
    #[command(name = "frames")]
    Frames(FramesArgs),
    /// Print images, objects, the size histograms of a VOC or COCO set, and lint it
    ///
    /// PATH is a COCO json, a FloW root (training/ and test/ splits, summarised each), a classic VOC
    /// root (its Annotations/ folder) or a folder of VOC xml files. Labels come from --labels, else
    /// PATH/labels.txt, else the names found in the files.
    ///
    /// The lint (over all of PATH): object sizes sqrt(w·h) in the buckets <8, 8-16, 16-32,
    /// 32-96, >=96 px (lower bound inclusive), overall and per class, in original pixels or at the
    /// training size of --at-size (letterbox scale min(N/W, N/H) per image); and the problems:
    /// degenerate boxes (w or h <= 0 after the study's conversion, or empty in the XML), boxes
    /// outside the image, exact duplicate boxes in one image, images without objects, classes
    /// without objects, labels not in the class list, images without a size, unreadable files.
    #[command(name = "stats")]
    Stats(StatsArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["ann_list", "ann_dir"])))]
pub struct Voc2cocoArgs {
    /// Text file with one xml path per line (relative paths are relative to the working folder)
    #[arg(long, value_name = "FILE")]
    ann_list: Option<PathBuf>,
    /// Folder of *.xml files, converted in file-name order
    #[arg(long, value_name = "DIR")]
    ann_dir: Option<PathBuf>,
    /// labels.txt: the category names (whitespace-separated, as coco-tools reads it), ids from 1
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Output COCO json
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Skip malformed files, unknown labels and empty boxes (and say how many) instead of failing
    #[arg(long)]
    skip_invalid: bool,
    /// Replace an existing --out file
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct CropArgs {
    /// COCO json (e.g. from voc2coco or ssod synth)
    #[arg(long, value_name = "FILE")]
    coco: PathBuf,
    /// Folder of the images (default: the json's folder)
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Output folder
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of all draws (the study used random.seed(100))
    #[arg(long, default_value_t = 100)]
    seed: u64,
    /// Also reject background crops that overlap any part of a GT box
    #[arg(long)]
    strict_background: bool,
    /// Write into a non-empty OUT (files of the same name are replaced)
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("selection").args(["keep_prob", "every"])))]
pub struct FramesArgs {
    /// Video file or folder of images
    #[arg(long, value_name = "VIDEO_OR_DIR")]
    input: PathBuf,
    /// Output folder
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Keep each frame with this probability (seeded; the study kept 5 %) [default: 0.05]
    #[arg(long, value_name = "P")]
    keep_prob: Option<f64>,
    /// Keep every N-th frame (0, N, 2N, ...) instead
    #[arg(long, value_name = "N")]
    every: Option<usize>,
    /// Seed of the keep draws
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Resize kept frames to WxH, e.g. 1280x720 (default: native size)
    #[arg(long, value_name = "WxH")]
    resize: Option<String>,
    /// The ffmpeg program to decode videos with
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: PathBuf,
    /// Write into a non-empty OUT (files of the same name are replaced)
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Dataset folder or COCO json file
    #[arg(value_name = "DIR|FILE.json")]
    path: PathBuf,
    /// labels.txt for VOC sets
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Object sizes as at this training size (letterbox scale min(N/W, N/H) per image) instead
    /// of original pixels
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    at_size: Option<u32>,
    /// Print only the lint, as one json object: images, objects, at_size, size_buckets
    /// ([{bucket, objects, share}]), per_class, problems ([{kind, file, detail}])
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when the lint finds any problem (after printing)
    #[arg(long)]
    strict: bool,
}

impl DataToolsCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            DataToolsCommand::Voc2coco(a) => a.run(),
            DataToolsCommand::Crop(a) => a.run(),
            DataToolsCommand::Frames(a) => a.run(),
            DataToolsCommand::Stats(a) => a.run(),
        }
    }
}

/// Refuse an existing non-empty output folder unless `force`.
fn check_out_dir(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() {
        if !out.is_dir() {
            bail!("{}: exists and is not a folder", out.display());
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("{}: cannot list", out.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "{}: output folder exists and is not empty (use --force to write into it)",
                out.display()
            );
        }
    }
    Ok(())
}

impl Voc2cocoArgs {
    fn run(self) -> anyhow::Result<()> {
        if self.out.exists() && !self.force {
            bail!("{}: exists (use --force to replace it)", self.out.display());
        }
        let labels = read_labels(&self.labels)?;
        let files = if let Some(list) = &self.ann_list {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("{}: cannot read", list.display()))?;
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect()
        } else if let Some(dir) = &self.ann_dir {
            list_xml_files(dir)?
        } else {
            bail!("give --ann-list FILE or --ann-dir DIR");
        };
        if files.is_empty() {
            bail!("no xml files to convert");
        }
        let opts = ConvertOptions {
            skip_invalid: self.skip_invalid,
        };
        let (ds, report) = voc_files_to_coco(&files, &labels, &opts)?;
        for p in &report.skipped {
            eprintln!("skipped: {p}");
        }
        write_study_json(&ds, &self.out)?;
        println!("{}: {report}", self.out.display());
        Ok(())
    }
}

impl CropArgs {
    fn run(self) -> anyhow::Result<()> {
        check_out_dir(&self.out, self.force)?;
        let mut ds = CocoDataset::read(&self.coco)?;
        if let Some(dir) = self.images {
            ds.image_dir = dir;
        }
        let opts = CropOptions {
            seed: self.seed,
            strict_background: self.strict_background,
            ..CropOptions::default()
        };
        let report = write_crops(&ds, &self.out, &opts)?;
        println!("{}: {report}", self.out.display());
        Ok(())
    }
}

/// `1280x720` -> (1280, 720).
fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("--resize `{s}`: expected WIDTHxHEIGHT with positive sides, e.g. 1280x720"),
    }
}

impl FramesArgs {
    fn run(self) -> anyhow::Result<()> {
        check_out_dir(&self.out, self.force)?;
        let selection = match (self.keep_prob, self.every) {
            (_, Some(n)) => FrameSelection::Every(n),
            (Some(p), None) => FrameSelection::KeepProb(p),
            (None, None) => FrameSelection::KeepProb(0.05),
        };
        let opts = FramesOptions {
            selection,
            seed: self.seed,
            resize: self.resize.as_deref().map(parse_size).transpose()?,
            ffmpeg: self.ffmpeg,
        };
        let report = extract_frames(&self.input, &self.out, &opts)?;
        println!(
            "{}: kept {} of {} frames",
            self.out.display(),
            report.kept.len(),
            report.frames_read
        );
        Ok(())
    }
}

impl StatsArgs {
    fn run(self) -> anyhow::Result<()> {
        let path = &self.path;
        let lint = if path.is_file() {
            let ds = CocoDataset::read_keeping_bad_boxes(path)?;
            if !self.json {
                println!("{}\n{}", path.display(), summarize(&ds));
            }
            lint(
                &source_from_coco(&ds, &path.display().to_string()),
                self.at_size,
            )
        } else if path.is_dir() {
            self.voc_stats(path)?
        } else {
            bail!("{}: no such file or folder", path.display());
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&lint)?);
        } else {
            println!("\n{lint}");
        }
        if self.strict && lint.has_problems() {
            bail!(
                "{}: {} problem(s) found (--strict)",
                path.display(),
                lint.problems.len()
            );
        }
        Ok(())
    }

    /// The summary of each part of a VOC folder (unless --json) and the lint of all of them.
    fn voc_stats(&self, path: &Path) -> anyhow::Result<DatasetLint> {
        let parts = voc_parts(path)?;
        let all_files: Vec<PathBuf> = parts.iter().flat_map(|(_, f)| f.clone()).collect();
        let (labels, class_file) = match &self.labels {
            Some(l) => (read_labels(l)?, l.display().to_string()),
            None if path.join("labels.txt").is_file() => {
                let l = path.join("labels.txt");
                (read_labels(&l)?, l.display().to_string())
            }
            None => (collect_labels(&all_files), path.display().to_string()),
        };
        if !self.json {
            let opts = ConvertOptions { skip_invalid: true };
            for (i, (name, files)) in parts.iter().enumerate() {
                let (ds, report) = if files.is_empty() {
                    (CocoDataset::default(), Default::default())
                } else {
                    voc_files_to_coco(files, &labels, &opts)?
                };
                if i > 0 {
                    println!();
                }
                println!("{name}\n{}", summarize(&ds));
                if !report.skipped.is_empty() {
                    println!(
                        "skipped {} malformed file(s) and {} invalid object(s)",
                        report.skipped_files, report.skipped_objects
                    );
                }
            }
        }
        Ok(lint(
            &source_from_voc_files(&all_files, &labels, &class_file),
            self.at_size,
        ))
    }
}

/// (name, xml files) for each part of a VOC folder: a FloW root's training/ and test/ splits,
/// else a classic VOC Annotations/ folder, else the folder itself.
fn voc_parts(path: &Path) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let mut parts: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for split in ["training", "test"] {
        let dir = path.join(split).join("annotations");
        if dir.is_dir() {
            parts.push((
                format!("{}", path.join(split).display()),
                list_xml_files(&dir)?,
            ));
        }
    }
    if parts.is_empty() {
        let classic = path.join("Annotations");
        let dir = if classic.is_dir() {
            classic
        } else {
            path.to_path_buf()
        };
        let files = list_xml_files(&dir)?;
        if files.is_empty() {
            bail!(
                "{}: no VOC annotations found (expected FloW training/ and test/ folders, \
                 a classic VOC Annotations/ folder, or *.xml files)",
                path.display()
            );
        }
        parts.push((format!("{}", dir.display()), files));
    }
    Ok(parts)
}
