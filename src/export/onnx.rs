//! YOLOX as an ONNX graph (opset 13, standard operators only) for other runtimes.
//!
//! The graph is the detector in eval mode at one fixed input size:
//!
//! - input `images` `[1, 3, H, W]` f32: BGR, 0..255, not normalised, letterboxed to `H × W`
//!   (what [`crate::detect::images_to_bgr_tensor`] builds; YOLOX `ValTransform(legacy=False)`);
//! - every BaseConv is one `Conv` whose weights and bias have the BatchNorm folded in (running
//!   statistics, YOLOX's eps 1e-3; `w·γ/√(var+eps)`, `β − mean·γ/√(var+eps)`, computed in f64 and
//!   rounded once to f32), followed by SiLU as `Sigmoid` and `Mul`;
//! - Focus is four strided `Slice`s and a `Concat` (top-left, bottom-left, top-right,
//!   bottom-right), SPP three stride-1 `MaxPool`s, the FPN's upsampling `Resize` (nearest,
//!   asymmetric, floor: exact 2×), the head's levels `Concat` → `Reshape` → `Concat` →
//!   `Transpose`;
//! - output `output` `[1, A, 5 + C]`, anchors level by level (strides 8, 16, 32), row-major in a
//!   level ([`crate::models::YoloX::anchor_grid`]), either
//!   - [`OnnxOutput::Raw`]: the head's raw outputs `(tx, ty, tw, th, obj logit, C class logits)`,
//!     as [`crate::models::YoloX::forward`] returns them, or
//!   - [`OnnxOutput::Decoded`]: as YOLOX's `decode_in_inference` (and
//!     [`crate::detect::decode_batch_f32`]) gives them: `cx = (tx + gx)·s`, `cy = (ty + gy)·s`,
//!     `w = exp(tw)·s`, `h = exp(th)·s` in input pixels, then `σ(obj)`, `σ(class)`.
//!
//! Score thresholding and NMS are not in the graph. The graph's and the model's `doc_string` say
//! which output it is, and `metadata_props` carry `output` (`raw` / `decoded`), `num_classes`,
//! `input_size` (`HxW`), `strides`, `input_format`, `depth`, `width`, `depthwise`.
//!
//! Weights are initializers named after the official YOLOX tensors (`….conv.weight`,
//! `….conv.bias` for a BaseConv at `…`, the folded BN's names gone); intermediate values are named
//! `<module>/<op>`.

use std::path::Path;

use prost::Message;

use super::onnx_graph::{value_info, GraphBuilder};
use super::onnx_proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::models::YoloX;
use crate::{Error, Result};

/// The ONNX operator set the graph imports.
pub const OPSET: i64 = 13;
/// The IR version of opset 13 (ONNX 1.8).
pub const IR_VERSION: i64 = 7;
/// The graph's input.
pub const INPUT_NAME: &str = "images";
/// The graph's output.
pub const OUTPUT_NAME: &str = "output";

/// What the graph's `output` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxOutput {
    /// The head's raw outputs `(tx, ty, tw, th, obj logit, class logits)`.
    Raw,
    /// Boxes `(cx, cy, w, h)` in input pixels and sigmoid obj and class probabilities, as
    /// YOLOX's `decode_in_inference`.
    Decoded,
}

impl OnnxOutput {
    /// The `output` metadata value.
    pub fn tag(self) -> &'static str {
        match self {
            OnnxOutput::Raw => "raw",
            OnnxOutput::Decoded => "decoded",
        }
    }

    /// What the output's `5 + C` values per anchor are, for doc strings and messages.
    pub fn describe(self) -> &'static str {
        match self {
            OnnxOutput::Raw => {
                "raw head outputs (tx, ty, tw, th, obj logit, C class logits), not decoded: \
                 cx = (tx + gx)*s, cy = (ty + gy)*s, w = exp(tw)*s, h = exp(th)*s with (gx, gy) \
                 the anchor's cell and s its stride, then sigmoid on obj and classes"
            }
            OnnxOutput::Decoded => {
                "decoded as YOLOX's decode_in_inference: (cx, cy, w, h) in input pixels \
                 (cx = (tx + gx)*s, cy = (ty + gy)*s, w = exp(tw)*s, h = exp(th)*s), \
                 sigmoid(obj), C x sigmoid(class); score = obj * class, no NMS in the graph"
            }
        }
    }
}

/// The export's settings: the fixed input size and the output form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Input height in pixels, a positive multiple of 32.
    pub height: usize,
    /// Input width in pixels, a positive multiple of 32.
    pub width: usize,
    pub output: OnnxOutput,
}

/// The eval-mode graph of `model` (its current weights and BN running statistics, whatever its
/// training flag) at `opts`' input size.
pub fn yolox_to_onnx(model: &YoloX, opts: &OnnxOptions) -> Result<ModelProto> {
    let (h, w) = (opts.height, opts.width);
    if h == 0 || w == 0 || !h.is_multiple_of(32) || !w.is_multiple_of(32) {
        return Err(Error::InvalidArgument(format!(
            "onnx export: the input size must be positive multiples of 32, got {h}x{w} (HxW)"
        )));
    }
    let c = model.config.num_classes;
    let anchors = YoloX::anchor_grid(h, w).len();
    let mut g = GraphBuilder::default();
    let feats = g.pafpn(INPUT_NAME, &model.backbone, "backbone", h, w)?;
    let raw_name = if opts.output == OnnxOutput::Raw {
        OUTPUT_NAME
    } else {
        "head/raw"
    };
    let raw = g.head(&feats, &model.head.levels, c, h, w, raw_name)?;
    if opts.output == OnnxOutput::Decoded {
        g.decode(&raw, c, h, w, OUTPUT_NAME)?;
    }

    let cfg = &model.config;
    let arch = format!(
        "YOLOX (depth {}, width {}{}), {c} classes",
        cfg.depth,
        cfg.width,
        if cfg.depthwise { ", depthwise" } else { "" }
    );
    let doc = format!(
        "{arch}, eval mode, BatchNorm folded into the convolutions. Input `{INPUT_NAME}` \
         [1, 3, {h}, {w}]: BGR, float 0..255, not normalised, letterboxed. Output \
         `{OUTPUT_NAME}` [1, {anchors}, {}]: one row per anchor, strides 8, 16, 32 level by \
         level, row-major in a level; {}.",
        5 + c,
        opts.output.describe()
    );
    let meta = [
        ("output", opts.output.tag().to_string()),
        ("num_classes", c.to_string()),
        ("input_size", format!("{h}x{w}")),
        ("strides", "8,16,32".to_string()),
        ("input_format", "BGR 0..255 NCHW".to_string()),
        ("depth", cfg.depth.to_string()),
        ("width", cfg.width.to_string()),
        ("depthwise", cfg.depthwise.to_string()),
    ];
    let graph = GraphProto {
        node: g.nodes,
        name: "yolox".into(),
        initializer: g.initializers,
        doc_string: doc.clone(),
        input: vec![value_info(INPUT_NAME, &[1, 3, h, w])],
        output: vec![value_info(OUTPUT_NAME, &[1, anchors, 5 + c])],
        value_info: Vec::new(),
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "ssod".into(),
        producer_version: crate::VERSION.into(),
        domain: String::new(),
        model_version: 1,
        doc_string: doc,
        graph: Some(graph),
        metadata_props: meta
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.into(),
                value,
            })
            .collect(),
    })
}

/// The protobuf bytes of `model` (what a `.onnx` file holds).
pub fn encode_onnx(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Write `model` to `path`; an existing file is an error unless `overwrite`. The bytes go to a
/// temporary file beside `path` first and are renamed into place, so a failed write leaves no
/// half-written model. Returns the number of bytes written.
pub fn write_onnx(model: &ModelProto, path: &Path, overwrite: bool) -> Result<usize> {
    if !overwrite && path.exists() {
        return Err(Error::InvalidArgument(format!(
            "{}: exists; refusing to overwrite it",
            path.display()
        )));
    }
    if path.file_name().is_none() {
        return Err(Error::InvalidArgument(format!(
            "{}: not a file name",
            path.display()
        )));
    }
    let bytes = encode_onnx(model);
    crate::atomic_file::write_atomic(path, &bytes)?;
    Ok(bytes.len())
}
