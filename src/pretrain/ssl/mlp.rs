//! Projection and prediction MLPs of the self-supervised methods: Linear layers with optional
//! BatchNorm1d and ReLU, in a store of their own (named `pretrain_head.<name>.<i>.*`, which
//! `load_backbone` never reads). BatchNorm1d is BN over `[B, D, 1, 1]` with PyTorch's defaults
//! (momentum 0.1, eps 1e-5), as the SimSiam and SimCLR reference heads.

use crate::nn::{Builder, TensorKind};
use crate::ops::{self, BatchNormParams};
use crate::tensor::Tensor;
use crate::Result;

/// The BatchNorm1d after a layer's Linear, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bn {
    /// No BN: the Linear keeps its bias.
    Off,
    /// Learned scale γ and shift β (PyTorch's default).
    Affine,
    /// γ = 1 and β = 0, not trained (PyTorch's `affine=False`, SimSiam's projector output):
    /// stored as buffers so that they follow the store's device.
    Fixed,
}

/// One layer: `Linear(in, out)` (with a bias unless BN follows), then BN, then ReLU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSpec {
    pub inputs: usize,
    pub outputs: usize,
    pub bn: Bn,
    pub relu: bool,
}

impl LayerSpec {
    pub const fn new(inputs: usize, outputs: usize, bn: Bn, relu: bool) -> LayerSpec {
        LayerSpec {
            inputs,
            outputs,
            bn,
            relu,
        }
    }
}

struct Layer {
    spec: LayerSpec,
    weight: Tensor,
    bias: Option<Tensor>,
    /// (gamma, beta, running mean, running var)
    bn: Option<[Tensor; 4]>,
}

/// A stack of [`LayerSpec`] layers.
pub struct Mlp {
    layers: Vec<Layer>,
}

impl Mlp {
    pub fn new(b: &Builder, specs: &[LayerSpec]) -> Result<Mlp> {
        let mut layers = Vec::with_capacity(specs.len());
        for (i, &spec) in specs.iter().enumerate() {
            let b = b.sub(i);
            let (cin, cout) = (spec.inputs, spec.outputs);
            let weight = b.uniform_fan_in("weight", [cout, cin], cin, TensorKind::Weight)?;
            let bias = if spec.bn == Bn::Off {
                Some(b.uniform_fan_in("bias", [cout], cin, TensorKind::NoDecay)?)
            } else {
                None
            };
            let bn = if spec.bn == Bn::Off {
                None
            } else {
                let affine = if spec.bn == Bn::Affine {
                    TensorKind::NoDecay
                } else {
                    TensorKind::Buffer
                };
                let n = b.sub("bn");
                Some([
                    n.register("weight", [cout], vec![1.0; cout], affine)?,
                    n.register("bias", [cout], vec![0.0; cout], affine)?,
                    n.register("running_mean", [cout], vec![0.0; cout], TensorKind::Buffer)?,
                    n.register("running_var", [cout], vec![1.0; cout], TensorKind::Buffer)?,
                ])
            };
            layers.push(Layer {
                spec,
                weight,
                bias,
                bn,
            });
        }
        Ok(Mlp { layers })
    }

    /// `x [B, in]` → `[B, out]`; BN uses batch statistics when `training`.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            x = ops::linear(&x, &l.weight, l.bias.as_ref())?;
            if let Some([g, b, m, v]) = &l.bn {
                let rows = x.dims()[0];
                let x4 = ops::reshape(&x, [rows, l.spec.outputs, 1, 1])?;
                let p = BatchNormParams {
                    training,
                    momentum: 0.1,
                    eps: 1e-5,
                };
                let y = ops::batch_norm2d(&x4, g, b, m, v, p)?;
                x = ops::reshape(&y, [rows, l.spec.outputs])?;
            }
            if l.spec.relu {
                x = ops::relu(&x)?;
            }
        }
        Ok(x)
    }
}

/// GAP(C5) of the backbone on `x [B, 3, h, w]` as `[B, C5]`.
pub fn backbone_gap(model: &crate::models::YoloX, x: &Tensor) -> Result<Tensor> {
    let (_, _, c5) = model.backbone.backbone.forward(x)?;
    ops::flatten(&ops::global_avg_pool2d(&c5)?, 1, 3)
}
