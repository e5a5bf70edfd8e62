//! `ssod export`: a YOLOX checkpoint as a file for other runtimes (ONNX).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use ssod::export::{write_onnx, yolox_to_onnx, OnnxOptions, OnnxOutput};
use ssod::models::{WeightsSource, YoloX, YoloXConfig};
use ssod::tensor::safetensors_io::read_safetensors;

#[derive(Subcommand)]
pub enum ExportCommand {
    /// Export a YOLOX checkpoint as an ONNX graph (opset 13, standard ops, BN folded into the
    /// convs, eval mode, fixed input size). Input `images` [1, 3, H, W]: BGR 0..255, not
    /// normalised, letterboxed. Output `output` [1, A, 5 + C], anchors of strides 8, 16, 32 level
    /// by level: the raw head outputs (tx, ty, tw, th, obj logit, class logits), or with
    /// --decode (cx, cy, w, h) in input pixels and sigmoid obj and class probabilities, as
    /// YOLOX's decode_in_inference. No NMS in the graph; the graph's doc_string says which
    /// output it has.
    Export(ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// ONNX, opset 13
    Onnx,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Checkpoint (safetensors, official YOLOX tensor names, or a training state: its EMA
    /// weights), loaded strictly
    #[arg(long)]
    weights: PathBuf,
    /// Model: yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l, yolox-x
    #[arg(long, default_value = "yolox-s")]
    model: String,
    /// Number of classes the checkpoint was trained with
    #[arg(long, default_value_t = 80)]
    classes: usize,
    /// Override the variant's width multiplier (e.g. 0.125 for a tiny test model)
    #[arg(long)]
    width: Option<f64>,
    /// Override the variant's depth multiplier
    #[arg(long)]
    depth: Option<f64>,
    /// Output format
    #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
    format: ExportFormat,
    /// The file to write (refused when it exists, unless --force)
    #[arg(long)]
    out: PathBuf,
    /// Fixed input size in pixels, H (square) or HxW, multiples of 32 (default: the variant's
    /// test size, 416 for nano and tiny, 640 otherwise)
    #[arg(long, value_name = "H[xW]", value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Output decoded boxes (cx, cy, w, h in input pixels) and sigmoid obj/class probabilities,
    /// as YOLOX's decode_in_inference (default: the raw head outputs)
    #[arg(long)]
    decode: bool,
    /// Overwrite an existing --out
    #[arg(long)]
    force: bool,
}

impl ExportCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            ExportCommand::Export(a) => a.run(),
        }
    }
}

/// `H` or `HxW` (also `X`), each a positive multiple of 32.
fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected H or HxW in pixels, positive multiples of 32, got `{s}`");
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let nums = parts
        .iter()
        .map(|p| p.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<Vec<usize>, String>>()?;
    let (h, w) = match nums[..] {
        [h] => (h, h),
        [h, w] => (h, w),
        _ => return Err(bad()),
    };
    if h == 0 || w == 0 || !h.is_multiple_of(32) || !w.is_multiple_of(32) {
        return Err(bad());
    }
    Ok((h, w))
}

impl ExportArgs {
    fn config(&self) -> anyhow::Result<YoloXConfig> {
        if self.classes == 0 {
            bail!("--classes must be at least 1");
        }
        let mut config = YoloXConfig::variant(&self.model, self.classes)
            .with_context(|| format!("--model {}", self.model))?;
        for (name, v, slot) in [
            ("--width", self.width, &mut config.width),
            ("--depth", self.depth, &mut config.depth),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v <= 4.0) {
                    bail!("{name} must be in (0, 4], got {v}");
                }
                *slot = v;
            }
        }
        if (64.0 * config.width) as usize == 0 {
            bail!("--width {} gives no channels", config.width);
        }
        Ok(config)
    }

    /// The class count the checkpoint's head holds (`head.cls_preds.0.bias`, also in a
    /// training state's `ema.` / `model.` section), if it can be read.
    fn checkpoint_classes(&self) -> Option<usize> {
        let file = read_safetensors(&self.weights).ok()?;
        ["", "ema.", "model."].iter().find_map(|p| {
            file.tensors
                .get(&format!("{p}head.cls_preds.0.bias"))
                .map(|t| t.numel())
        })
    }

    fn load_model(&self) -> anyhow::Result<YoloX> {
        let model = YoloX::new(self.config()?)?;
        match model.load(&self.weights) {
            Ok(loaded) => {
                if loaded.source != WeightsSource::Model {
                    eprintln!(
                        "--weights {}: using {}",
                        self.weights.display(),
                        loaded.source.describe()
                    );
                }
                Ok(model)
            }
            Err(e) => {
                if let Some(n) = self.checkpoint_classes().filter(|&n| n != self.classes) {
                    bail!(
                        "--classes {} does not match --weights {}: the checkpoint's head has {n} \
                         classes (head.cls_preds.0.bias); pass --classes {n}",
                        self.classes,
                        self.weights.display()
                    );
                }
                Err(e).with_context(|| {
                    format!(
                        "--weights {} for --model {} with --classes {}",
                        self.weights.display(),
                        self.model,
                        self.classes
                    )
                })
            }
        }
    }

    /// --size, or the variant's test size (exps/default/*.py: nano and tiny test at 416, the
    /// others at 640), as `ssod detect` uses.
    fn input_size(&self) -> (usize, usize) {
        self.size.unwrap_or_else(|| {
            let m = self.model.to_ascii_lowercase();
            let s = if m.ends_with("nano") || m.ends_with("tiny") {
                416
            } else {
                640
            };
            (s, s)
        })
    }

    fn run(self) -> anyhow::Result<()> {
        let ExportFormat::Onnx = self.format;
        if self.out.exists() && !self.force {
            bail!(
                "--out {}: exists (use --force to overwrite it)",
                self.out.display()
            );
        }
        if self.out.is_dir() {
            bail!("--out {}: is a folder, not a file", self.out.display());
        }
        let (height, width) = self.input_size();
        let model = self.load_model()?;
        let output = if self.decode {
            OnnxOutput::Decoded
        } else {
            OnnxOutput::Raw
        };
        let opts = OnnxOptions {
            height,
            width,
            output,
        };
        let onnx = yolox_to_onnx(&model, &opts)?;
        let bytes = write_onnx(&onnx, &self.out, self.force)
            .with_context(|| format!("--out {}", self.out.display()))?;
        let anchors = YoloX::anchor_grid(height, width).len();
        println!(
            "{}: ONNX opset {}, {} with {} classes, {} bytes",
            self.out.display(),
            ssod::export::onnx::OPSET,
            self.model,
            self.classes,
            bytes
        );
        println!("  input  images [1, 3, {height}, {width}] BGR 0..255");
        println!(
            "  output output [1, {anchors}, {}] {}",
            5 + self.classes,
            output.tag()
        );
        Ok(())
    }
}
