//! Pretraining heads on the backbone's C5 (kept out of the detector: their tensors are named
//! `pretrain_head.*` and `load_backbone` never reads them).
//!
//! - `study` (docs/the-study.md): 3 × [Conv3×3 (pad 1, no bias) → BN → ReLU] with channels
//!   C5→128→128→32 for YOLOX-S (scaled with width: 256·w, 256·w, 64·w), AvgPool2d(2), flatten
//!   (288 = 32·3·3 at 224 px), then Linear(·, 2) for the classifier. Its flatten size depends on
//!   the input size (`input_size / 64` cells per side, at least 1, so input >= 64).
//! - `gap`: the same convs, then global average pooling (any crop size).
//! - `mlp` (SSL only): GAP(C5) → Linear → ReLU → Linear, a SimCLR-style projection.
//!
//! BN here is PyTorch's `nn.BatchNorm2d` default (eps 1e-5, momentum 0.1), as the study's head.

use serde::{Deserialize, Serialize};

use crate::nn::{Builder, ParamStore, TensorKind};
use crate::ops::{self, BatchNormParams, Conv2dParams, Pool2dParams};
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    #[default]
    Study,
    Gap,
    Mlp,
}

struct ConvBnRelu {
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl ConvBnRelu {
    fn new(b: &Builder, cin: usize, cout: usize) -> Result<Self> {
        let fan_in = cin * 9;
        let conv = b.sub("conv");
        let bn = b.sub("bn");
        Ok(ConvBnRelu {
            weight: conv.uniform_fan_in("weight", [cout, cin, 3, 3], fan_in, TensorKind::Weight)?,
            gamma: bn.register("weight", [cout], vec![1.0; cout], TensorKind::NoDecay)?,
            beta: bn.register("bias", [cout], vec![0.0; cout], TensorKind::NoDecay)?,
            running_mean: bn.register(
                "running_mean",
                [cout],
                vec![0.0; cout],
                TensorKind::Buffer,
            )?,
            running_var: bn.register("running_var", [cout], vec![1.0; cout], TensorKind::Buffer)?,
        })
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let p = Conv2dParams {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let y = ops::conv2d(x, &self.weight, None, p)?;
        let bn = BatchNormParams {
            training,
            momentum: 0.1,
            eps: 1e-5,
        };
        let y = ops::batch_norm2d(
            &y,
            &self.gamma,
            &self.beta,
            &self.running_mean,
            &self.running_var,
            bn,
        )?;
        ops::relu(&y)
    }
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(b: &Builder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Linear {
            weight: b.uniform_fan_in("weight", [cout, cin], cin, TensorKind::Weight)?,
            bias: b.uniform_fan_in("bias", [cout], cin, TensorKind::NoDecay)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, Some(&self.bias))
    }
}

/// A head on C5 with its own parameter store (so its train/eval mode and optimiser are its own).
pub struct PretrainHead {
    pub store: ParamStore,
    pub kind: HeadKind,
    convs: Vec<ConvBnRelu>,
    projection: Vec<Linear>,
    classifier: Option<Linear>,
    /// Size of the embedding the head returns.
    pub embedding_dim: usize,
}

/// C5 channels of a YOLOX width (`1024 · width`).
pub fn c5_channels(width: f64) -> usize {
    (1024.0 * width) as usize
}

impl PretrainHead {
    /// `width`: the backbone's width multiplier; `input_size`: square input side (multiple of
    /// 32); `classes`: Some(2) adds the linear classifier.
    pub fn new(
        kind: HeadKind,
        width: f64,
        input_size: usize,
        mlp_dims: (usize, usize),
        classes: Option<usize>,
        seed: u64,
    ) -> Result<Self> {
        let store = ParamStore::new(seed);
        let b = store.builder().sub("pretrain_head");
        let c5 = c5_channels(width);
        let hidden = ((256.0 * width) as usize).max(1);
        let out = ((64.0 * width) as usize).max(1);
        let mut convs = Vec::new();
        let mut projection = Vec::new();
        let embedding_dim = match kind {
            HeadKind::Study | HeadKind::Gap => {
                for (i, (cin, cout)) in [(c5, hidden), (hidden, hidden), (hidden, out)]
                    .into_iter()
                    .enumerate()
                {
                    convs.push(ConvBnRelu::new(&b.sub("convs").sub(i), cin, cout)?);
                }
                if kind == HeadKind::Study {
                    let cells = input_size / 64;
                    if cells == 0 {
                        return Err(Error::InvalidArgument(format!(
                            "head \"study\" needs input_size >= 64 (C5 is input/32, then a 2x2 \
                             average pool), got {input_size}; use head \"gap\""
                        )));
                    }
                    out * cells * cells
                } else {
                    out
                }
            }
            HeadKind::Mlp => {
                let (hidden, dim) = mlp_dims;
                projection.push(Linear::new(&b.sub("projection.0"), c5, hidden)?);
                projection.push(Linear::new(&b.sub("projection.2"), hidden, dim)?);
                dim
            }
        };
        let classifier = match classes {
            Some(k) => Some(Linear::new(&b.sub("linear"), embedding_dim, k)?),
            None => None,
        };
        Ok(PretrainHead {
            store,
            kind,
            convs,
            projection,
            classifier,
            embedding_dim,
        })
    }

    /// `c5 [B, C5, h, w]` → embedding `[B, D]`.
    pub fn embed(&self, c5: &Tensor) -> Result<Tensor> {
        let training = self.store.is_training();
        let mut x = c5.clone();
        for c in &self.convs {
            x = c.forward(&x, training)?;
        }
        match self.kind {
            HeadKind::Study => {
                let p = Pool2dParams {
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                };
                let pooled = ops::avg_pool2d(&x, p)?; // [B, out, h/2, w/2]
                ops::flatten(&pooled, 1, 3) // [B, out·(h/2)·(w/2)]
            }
            HeadKind::Gap => ops::flatten(&ops::global_avg_pool2d(&x)?, 1, 3),
            HeadKind::Mlp => {
                let g = ops::flatten(&ops::global_avg_pool2d(&x)?, 1, 3)?; // [B, C5]
                let h = ops::relu(&self.projection[0].forward(&g)?)?;
                self.projection[1].forward(&h)
            }
        }
    }

    /// Embedding → logits `[B, classes]` (errors when built without a classifier).
    pub fn classify(&self, embedding: &Tensor) -> Result<Tensor> {
        match &self.classifier {
            Some(l) => l.forward(embedding),
            None => Err(Error::Msg(
                "pretrain head built without a classifier".into(),
            )),
        }
    }
}
