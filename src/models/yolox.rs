//! YOLOX (CSPDarknet → PAFPN → decoupled head), as the official PyTorch code builds it
//! (docs/yolox.md §1): same blocks, concat orders and `state_dict` names.

use std::path::Path;

use super::weights::{read_model_tensors, summarize_problems, LoadOptions, LoadedWeights};
use crate::nn::{
    BaseConv, Builder, Conv, Conv2d, CspLayer, Focus, ParamStore, SppBottleneck, TensorKind,
};
use crate::ops;
use crate::tensor::safetensors_io::{write_safetensors, SaveDtype};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Depth/width multipliers and options of a variant.
#[derive(Clone, Debug, PartialEq)]
pub struct YoloXConfig {
    pub depth: f64,
    pub width: f64,
    pub depthwise: bool,
    pub num_classes: usize,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl YoloXConfig {
    /// nano, tiny, s, m, l, x (exps/default/*.py).
    pub fn variant(name: &str, num_classes: usize) -> Result<Self> {
        let name = name.trim().to_ascii_lowercase();
        let name = name
            .strip_prefix("yolox-")
            .or_else(|| name.strip_prefix("yolox_"))
            .unwrap_or(&name)
            .to_string();
        let (depth, width, depthwise) = match name.as_str() {
            "nano" => (0.33, 0.25, true),
            "tiny" => (0.33, 0.375, false),
            "s" => (0.33, 0.50, false),
            "m" => (0.67, 0.75, false),
            "l" => (1.0, 1.0, false),
            "x" => (1.33, 1.25, false),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown YOLOX variant `{other}` (nano, tiny, s, m, l, x)"
                )))
            }
        };
        if num_classes == 0 {
            return Err(Error::InvalidArgument("num_classes must be >= 1".into()));
        }
        Ok(YoloXConfig {
            depth,
            width,
            depthwise,
            num_classes,
            seed: 0,
        })
    }

    /// A custom width (e.g. 0.125 for tests) with YOLOX-S depth.
    pub fn custom(depth: f64, width: f64, depthwise: bool, num_classes: usize) -> Self {
        YoloXConfig {
            depth,
            width,
            depthwise,
            num_classes,
            seed: 0,
        }
    }
}

/// CSPDarknet: stem (Focus) and dark2..dark5; returns (C3, C4, C5).
pub struct CspDarknet {
    pub stem: Focus,
    pub dark2: (Conv, CspLayer),
    pub dark3: (Conv, CspLayer),
    pub dark4: (Conv, CspLayer),
    pub dark5: (Conv, SppBottleneck, CspLayer),
}

impl CspDarknet {
    pub fn new(b: &Builder, depth: f64, width: f64, depthwise: bool) -> Result<Self> {
        let base = (64.0 * width) as usize;
        let base_depth = ((depth * 3.0).round() as usize).max(1);
        let dw = depthwise;
        Ok(CspDarknet {
            stem: Focus::new(&b.sub("stem"), 3, base, 3)?,
            dark2: (
                Conv::new(&b.sub("dark2.0"), base, base * 2, 3, 2, dw)?,
                CspLayer::new(&b.sub("dark2.1"), base * 2, base * 2, base_depth, true, dw)?,
            ),
            dark3: (
                Conv::new(&b.sub("dark3.0"), base * 2, base * 4, 3, 2, dw)?,
                CspLayer::new(
                    &b.sub("dark3.1"),
                    base * 4,
                    base * 4,
                    base_depth * 3,
                    true,
                    dw,
                )?,
            ),
            dark4: (
                Conv::new(&b.sub("dark4.0"), base * 4, base * 8, 3, 2, dw)?,
                CspLayer::new(
                    &b.sub("dark4.1"),
                    base * 8,
                    base * 8,
                    base_depth * 3,
                    true,
                    dw,
                )?,
            ),
            dark5: (
                Conv::new(&b.sub("dark5.0"), base * 8, base * 16, 3, 2, dw)?,
                SppBottleneck::new(&b.sub("dark5.1"), base * 16, base * 16)?,
                CspLayer::new(
                    &b.sub("dark5.2"),
                    base * 16,
                    base * 16,
                    base_depth,
                    false,
                    dw,
                )?,
            ),
        })
    }

    /// `x [B,3,H,W]` → (C3 `[B,4b,H/8,W/8]`, C4 `[B,8b,H/16,W/16]`, C5 `[B,16b,H/32,W/32]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.stem.forward(x)?; // [B, b, H/2, W/2]
        let x = self.dark2.1.forward(&self.dark2.0.forward(&x)?)?; // [B, 2b, H/4, W/4]
        let c3 = self.dark3.1.forward(&self.dark3.0.forward(&x)?)?; // [B, 4b, H/8, W/8]
        let c4 = self.dark4.1.forward(&self.dark4.0.forward(&c3)?)?; // [B, 8b, H/16, W/16]
        let c5 = self
            .dark5
            .2
            .forward(&self.dark5.1.forward(&self.dark5.0.forward(&c4)?)?)?; // [B, 16b, H/32, W/32]
        Ok((c3, c4, c5))
    }

    fn cost(&self, h: usize, w: usize) -> usize {
        let (stem, h, w) = self.stem.conv.cost(h / 2, w / 2);
        let mut total = stem;
        let (mut h, mut w) = (h, w);
        for (down, csp) in [&self.dark2, &self.dark3, &self.dark4] {
            let (c, h2, w2) = down.cost(h, w);
            total += c + csp.cost(h2, w2);
            (h, w) = (h2, w2);
        }
        let (c, h2, w2) = self.dark5.0.cost(h, w);
        total + c + self.dark5.1.cost(h2, w2) + self.dark5.2.cost(h2, w2)
    }
}

/// YOLOPAFPN (its backbone is registered as `backbone.backbone`).
pub struct Pafpn {
    pub backbone: CspDarknet,
    pub lateral_conv0: BaseConv,
    pub c3_p4: CspLayer,
    pub reduce_conv1: BaseConv,
    pub c3_p3: CspLayer,
    pub bu_conv2: Conv,
    pub c3_n3: CspLayer,
    pub bu_conv1: Conv,
    pub c3_n4: CspLayer,
}

impl Pafpn {
    pub fn new(b: &Builder, depth: f64, width: f64, depthwise: bool) -> Result<Self> {
        let (c3, c4, c5) = (
            (256.0 * width) as usize,
            (512.0 * width) as usize,
            (1024.0 * width) as usize,
        );
        let n = (3.0 * depth).round() as usize;
        let dw = depthwise;
        Ok(Pafpn {
            backbone: CspDarknet::new(&b.sub("backbone"), depth, width, dw)?,
            lateral_conv0: BaseConv::new(&b.sub("lateral_conv0"), c5, c4, 1, 1, 1)?,
            c3_p4: CspLayer::new(&b.sub("C3_p4"), 2 * c4, c4, n, false, dw)?,
            reduce_conv1: BaseConv::new(&b.sub("reduce_conv1"), c4, c3, 1, 1, 1)?,
            c3_p3: CspLayer::new(&b.sub("C3_p3"), 2 * c3, c3, n, false, dw)?,
            bu_conv2: Conv::new(&b.sub("bu_conv2"), c3, c3, 3, 2, dw)?,
            c3_n3: CspLayer::new(&b.sub("C3_n3"), 2 * c3, c4, n, false, dw)?,
            bu_conv1: Conv::new(&b.sub("bu_conv1"), c4, c4, 3, 2, dw)?,
            c3_n4: CspLayer::new(&b.sub("C3_n4"), 2 * c4, c5, n, false, dw)?,
        })
    }

    /// → (P3 stride 8, P4 stride 16, P5 stride 32) with channels (c3, c4, c5).
    pub fn forward(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let (x2, x1, x0) = self.backbone.forward(x)?;
        self.forward_neck(&x2, &x1, &x0)
    }

    /// The neck alone: the backbone's (C3, C4, C5) → (P3, P4, P5), as [`Pafpn::forward`].
    pub fn forward_neck(&self, c3: &Tensor, c4: &Tensor, c5: &Tensor) -> Result<[Tensor; 3]> {
        let (x2, x1, x0) = (c3.clone(), c4.clone(), c5.clone());
        let fpn_out0 = self.lateral_conv0.forward(&x0)?; // [B, c4, H/32]
        let f_out0 = self
            .c3_p4
            .forward(&ops::cat(&[ops::upsample_nearest2x(&fpn_out0)?, x1], 1)?)?; // [B, c4, H/16]
        let fpn_out1 = self.reduce_conv1.forward(&f_out0)?; // [B, c3, H/16]
        let pan_out2 = self
            .c3_p3
            .forward(&ops::cat(&[ops::upsample_nearest2x(&fpn_out1)?, x2], 1)?)?; // [B, c3, H/8]
        let pan_out1 = self.c3_n3.forward(&ops::cat(
            &[self.bu_conv2.forward(&pan_out2)?, fpn_out1],
            1,
        )?)?; // [B, c4, H/16]
        let pan_out0 = self.c3_n4.forward(&ops::cat(
            &[self.bu_conv1.forward(&pan_out1)?, fpn_out0],
            1,
        )?)?; // [B, c5, H/32]
        Ok([pan_out2, pan_out1, pan_out0])
    }

    fn cost(&self, h: usize, w: usize) -> usize {
        let (h8, w8, h16, w16, h32, w32) = (h / 8, w / 8, h / 16, w / 16, h / 32, w / 32);
        self.backbone.cost(h, w)
            + self.lateral_conv0.cost(h32, w32).0
            + self.c3_p4.cost(h16, w16)
            + self.reduce_conv1.cost(h16, w16).0
            + self.c3_p3.cost(h8, w8)
            + self.bu_conv2.cost(h8, w8).0
            + self.c3_n3.cost(h16, w16)
            + self.bu_conv1.cost(h16, w16).0
            + self.c3_n4.cost(h32, w32)
    }
}

/// One level of the decoupled head.
pub struct HeadLevel {
    pub stem: BaseConv,
    pub cls_convs: [Conv; 2],
    pub reg_convs: [Conv; 2],
    pub cls_pred: Conv2d,
    pub reg_pred: Conv2d,
    pub obj_pred: Conv2d,
}

/// YOLOXHead: per level, nothing shared; output channels `[reg 4, obj 1, cls C]`.
pub struct YoloXHead {
    pub levels: Vec<HeadLevel>,
    pub strides: [usize; 3],
    pub num_classes: usize,
}

/// docs/yolox.md §1.6: cls/obj biases start at −log((1 − 0.01)/0.01).
pub const PRIOR_BIAS: f32 = -4.595_12;

impl YoloXHead {
    pub fn new(b: &Builder, num_classes: usize, width: f64, depthwise: bool) -> Result<Self> {
        let hidden = (256.0 * width) as usize;
        let in_channels = [
            (256.0 * width) as usize,
            (512.0 * width) as usize,
            (1024.0 * width) as usize,
        ];
        let mut levels = Vec::new();
        for (i, &cin) in in_channels.iter().enumerate() {
            let conv = |name: &str, j: usize| {
                Conv::new(&b.sub(name).sub(i).sub(j), hidden, hidden, 3, 1, depthwise)
            };
            let pred = |name: &str, cout: usize| {
                Conv2d::new(&b.sub(name).sub(i), hidden, cout, 1, 1, 0, 1, true)
            };
            let level = HeadLevel {
                stem: BaseConv::new(&b.sub("stems").sub(i), cin, hidden, 1, 1, 1)?,
                cls_convs: [conv("cls_convs", 0)?, conv("cls_convs", 1)?],
                reg_convs: [conv("reg_convs", 0)?, conv("reg_convs", 1)?],
                cls_pred: pred("cls_preds", num_classes)?,
                reg_pred: pred("reg_preds", 4)?,
                obj_pred: pred("obj_preds", 1)?,
            };
            for p in [&level.cls_pred, &level.obj_pred] {
                if let Some(bias) = &p.bias {
                    bias.update_values(|v| v.iter_mut().for_each(|x| *x = PRIOR_BIAS))?;
                }
            }
            levels.push(level);
        }
        // Registration order of the official module: stems, cls_convs, reg_convs, preds per list;
        // names are what matter for checkpoints, so per-level construction is fine.
        Ok(YoloXHead {
            levels,
            strides: [8, 16, 32],
            num_classes,
        })
    }

    /// Features (P3, P4, P5) → raw outputs `[B, A, 5 + C]`, anchors level by level, row-major.
    pub fn forward(&self, feats: &[Tensor; 3]) -> Result<Tensor> {
        let mut per_level = Vec::with_capacity(3);
        for (lvl, x) in self.levels.iter().zip(feats) {
            let x = lvl.stem.forward(x)?; // [B, hidden, h, w]
            let cls_feat = lvl.cls_convs[1].forward(&lvl.cls_convs[0].forward(&x)?)?;
            let reg_feat = lvl.reg_convs[1].forward(&lvl.reg_convs[0].forward(&x)?)?;
            let cls = lvl.cls_pred.forward(&cls_feat)?; // [B, C, h, w]
            let reg = lvl.reg_pred.forward(&reg_feat)?; // [B, 4, h, w]
            let obj = lvl.obj_pred.forward(&reg_feat)?; // [B, 1, h, w] (from the reg branch)
            let out = ops::cat(&[reg, obj, cls], 1)?; // [B, 5 + C, h, w]
            per_level.push(ops::flatten(&out, 2, 3)?); // [B, 5 + C, h·w]
        }
        let all = ops::cat(&per_level, 2)?; // [B, 5 + C, A]
        ops::contiguous(&ops::permute(&all, &[0, 2, 1])?) // [B, A, 5 + C]
    }

    fn cost(&self, h: usize, w: usize) -> usize {
        let mut total = 0;
        for (lvl, s) in self.levels.iter().zip(self.strides) {
            let (hs, ws) = (h / s, w / s);
            total += lvl.stem.cost(hs, ws).0;
            for c in lvl.cls_convs.iter().chain(lvl.reg_convs.iter()) {
                total += c.cost(hs, ws).0;
            }
            for p in [&lvl.cls_pred, &lvl.reg_pred, &lvl.obj_pred] {
                total += p.macs(hs, ws).0;
            }
        }
        total
    }
}

/// The detector.
pub struct YoloX {
    pub config: YoloXConfig,
    pub store: ParamStore,
    pub backbone: Pafpn,
    pub head: YoloXHead,
}

impl YoloX {
    pub fn new(config: YoloXConfig) -> Result<Self> {
        let store = ParamStore::new(config.seed);
        let root = store.builder();
        let backbone = Pafpn::new(
            &root.sub("backbone"),
            config.depth,
            config.width,
            config.depthwise,
        )?;
        let head = YoloXHead::new(
            &root.sub("head"),
            config.num_classes,
            config.width,
            config.depthwise,
        )?;
        Ok(YoloX {
            config,
            store,
            backbone,
            head,
        })
    }

    /// `images [B, 3, H, W]` (BGR 0..255, H and W multiples of 32) → raw `[B, A, 5 + C]`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        if images.rank() != 4
            || images.dims()[1] != 3
            || !images.dims()[2].is_multiple_of(32)
            || !images.dims()[3].is_multiple_of(32)
        {
            return Err(Error::shape(
                "yolox.forward",
                "images [B, 3, H, W] with H and W multiples of 32",
                images.shape(),
            ));
        }
        let feats = self.backbone.forward(images)?;
        self.head.forward(&feats)
    }

    pub fn set_training(&self, on: bool) {
        self.store.set_training(on)
    }

    pub fn num_params(&self) -> usize {
        self.store.num_params()
    }

    /// Stop (or resume) training the CSPDarknet (`backbone.backbone.*`): its parameters stop
    /// collecting gradients, so optimisers skip them. BN statistics still update in training
    /// mode. Returns the number of tensors switched.
    pub fn freeze_backbone(&self, frozen: bool) -> usize {
        let mut n = 0;
        for e in self.store.parameters() {
            if e.name.starts_with("backbone.backbone.") {
                let _ = e.tensor.clone().with_requires_grad(!frozen);
                n += 1;
            }
        }
        n
    }

    /// YOLOX's FLOP count (get_model_info): 2 × (conv MACs + 2 × BN elements), in GFLOPs.
    pub fn gflops(&self, h: usize, w: usize) -> f64 {
        2.0 * (self.backbone.cost(h, w) + self.head.cost(h, w)) as f64 / 1e9
    }

    /// Anchor grid of an input size: `(gx, gy, stride)` per anchor, levels P3, P4, P5,
    /// row-major inside a level (docs/yolox.md §2).
    pub fn anchor_grid(h: usize, w: usize) -> Vec<(f32, f32, f32)> {
        let mut out = Vec::new();
        for s in [8usize, 16, 32] {
            for gy in 0..h / s {
                for gx in 0..w / s {
                    out.push((gx as f32, gy as f32, s as f32));
                }
            }
        }
        out
    }

    /// Save every parameter and buffer (f32 safetensors, official names).
    pub fn save(&self, path: &Path) -> Result<()> {
        let entries = self.store.entries();
        write_safetensors(
            path,
            entries.iter().map(|e| (e.name.as_str(), &e.tensor)),
            SaveDtype::F32,
            None,
        )
    }

    /// Strict load: every tensor must be present with its shape and nothing unexpected may be
    /// in the file (`num_batches_tracked` is accepted and ignored). Errors count the missing,
    /// unexpected and mis-shaped tensors and name the first few of each. The same as
    /// [`YoloX::load_with`] with [`LoadOptions::default`].
    ///
    /// Files: safetensors with the official names (what [`YoloX::save`] writes), or a PyTorch
    /// checkpoint as `torch.save` writes it (`.pth`: the official YOLOX releases, a trainer's
    /// `{"model": state_dict, "start_epoch": .., "optimizer": ..}` or a bare state dict; see
    /// [`crate::tensor::pth`]), told apart by content.
    ///
    /// A training-state checkpoint (`last.ckpt.safetensors`: `model.*`, `ema.*`, `optim.*`) is
    /// accepted too: its `ema.*` weights are taken (the ones training evaluated), or `model.*`
    /// when the run had no EMA; [`LoadedWeights::source`] says which.
    pub fn load(&self, path: &Path) -> Result<LoadedWeights> {
        self.load_with(path, &LoadOptions::default())
    }

    /// Load with options: `skip` leaves every tensor under its prefixes as it is (and ignores
    /// the file's tensors there); `strict: false` loads what matches by name and shape and
    /// reports the rest instead of refusing the file, as fine-tuning a COCO-pretrained YOLOX on
    /// another number of classes needs (`skip: ["head.cls_preds"]`). A non-strict load that
    /// matches nothing is still an error. Nothing is copied unless the load succeeds.
    pub fn load_with(&self, path: &Path, options: &LoadOptions) -> Result<LoadedWeights> {
        let (source, tensors) = read_model_tensors(path)?;
        let entries = self.store.entries();
        let m = crate::nn::match_checkpoint(&entries, &tensors, &options.skip);
        let problems = || {
            let mut p: Vec<String> = m.missing.iter().map(|n| format!("missing `{n}`")).collect();
            p.extend(m.misshaped.iter().map(|(n, file, model)| {
                format!("`{n}` has shape {file:?} in the file, the model needs {model:?}")
            }));
            let unexpected: Vec<String> = m
                .unexpected
                .iter()
                .map(|n| format!("unexpected `{n}`"))
                .collect();
            summarize_problems(&p, &unexpected)
        };
        let mismatched =
            !m.missing.is_empty() || !m.misshaped.is_empty() || !m.unexpected.is_empty();
        if (options.strict && mismatched) || m.matched.is_empty() {
            let backbone_only = !tensors.keys().any(|k| k.starts_with("head."))
                && tensors.keys().any(|k| k.starts_with("backbone.backbone."));
            let hint = if backbone_only {
                "; it holds a backbone only, as pretraining writes: load it with `load_backbone`"
            } else {
                ""
            };
            let what = if m.matched.is_empty() && !options.strict {
                "nothing in it matches"
            } else {
                "does not match"
            };
            return Err(Error::format(
                path.display(),
                format!(
                    "{} {what} the model (depth {}, width {}, {} classes{}): {}{hint}",
                    source.describe(),
                    self.config.depth,
                    self.config.width,
                    self.config.num_classes,
                    if self.config.depthwise {
                        ", depthwise"
                    } else {
                        ""
                    },
                    if mismatched {
                        problems()
                    } else {
                        format!("every tensor is skipped ({})", options.skip.join(", "))
                    },
                ),
            ));
        }
        for &i in &m.matched {
            let e = &entries[i];
            e.tensor.copy_values_from(&tensors[&e.name].to_vec())?;
        }
        Ok(LoadedWeights {
            tensors: m.matched.len(),
            source,
            skipped: m.skipped,
            missing: m.missing,
            misshaped: m.misshaped,
            unexpected: m.unexpected,
        })
    }

    /// The names and kinds of every tensor, for `ssod info` and tests.
    pub fn tensor_names(&self) -> Vec<(String, TensorKind)> {
        self.store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect()
    }
}
