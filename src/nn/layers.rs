//! YOLOX's building blocks (network_blocks.py), with the official names.

use super::store::{Builder, TensorKind};
use crate::ops::{self, BatchNormParams, Conv2dParams, Pool2dParams};
use crate::tensor::Tensor;
use crate::Result;

/// `nn.Conv2d` with a square kernel.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let fan_in = cin / groups * k * k;
        let weight = b.uniform_fan_in(
            "weight",
            [cout, cin / groups, k, k],
            fan_in,
            TensorKind::Weight,
        )?;
        let bias = if bias {
            Some(b.uniform_fan_in("bias", [cout], fan_in, TensorKind::NoDecay)?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            params: Conv2dParams {
                stride,
                padding,
                groups,
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.params)
    }

    /// Multiply-accumulates for an input of `h × w`, and the output size.
    pub fn macs(&self, h: usize, w: usize) -> (usize, usize, usize) {
        let d = self.weight.dims();
        let p = self.params;
        let ho = (h + 2 * p.padding - d[2]) / p.stride + 1;
        let wo = (w + 2 * p.padding - d[3]) / p.stride + 1;
        (d[0] * d[1] * d[2] * d[3] * ho * wo, ho, wo)
    }
}

/// `nn.BatchNorm2d` with YOLOX's eps 1e-3 and momentum 0.03; the mode comes from the store.
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    builder: Builder,
}

impl BatchNorm2d {
    pub fn new(b: &Builder, c: usize) -> Result<Self> {
        Ok(BatchNorm2d {
            weight: b.register("weight", [c], vec![1.0; c], TensorKind::NoDecay)?,
            bias: b.register("bias", [c], vec![0.0; c], TensorKind::NoDecay)?,
            running_mean: b.register("running_mean", [c], vec![0.0; c], TensorKind::Buffer)?,
            running_var: b.register("running_var", [c], vec![1.0; c], TensorKind::Buffer)?,
            builder: b.clone(),
        })
    }

    fn params(&self) -> BatchNormParams {
        let store = self.builder.store();
        let mut p = BatchNormParams { training: store.is_training(), ..BatchNormParams::default() };
        // Precise-BN recalibration overrides the momentum of every layer.
        if let Some(m) = store.bn_momentum() {
            p.momentum = m;
        }
        p
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::batch_norm2d(x, &self.weight, &self.bias, &self.running_mean, &self.running_var, self.params())
    }

    /// `silu(bn(x))` as one fused op (YOLOX BaseConv).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        ops::batch_norm_silu2d(x, &self.weight, &self.bias, &self.running_mean, &self.running_var, self.params())
    }
}

/// BaseConv: Conv2d(pad (k−1)/2, no bias) → BN → SiLU.
pub struct BaseConv {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl BaseConv {
    pub fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(BaseConv {
            conv: Conv2d::new(
                &b.sub("conv"),
                cin,
                cout,
                k,
                stride,
                (k - 1) / 2,
                groups,
                false,
            )?,
            bn: BatchNorm2d::new(&b.sub("bn"), cout)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward_silu(&self.conv.forward(x)?)
    }

    /// (conv MACs + 2 × BN elements, output h, output w): YOLOX's FLOP accounting.
    pub fn cost(&self, h: usize, w: usize) -> (usize, usize, usize) {
        let (macs, ho, wo) = self.conv.macs(h, w);
        let cout = self.conv.weight.dims()[0];
        (macs + 2 * cout * ho * wo, ho, wo)
    }
}

/// DWConv: depthwise BaseConv(k, groups = cin) → pointwise BaseConv(1×1).
pub struct DwConv {
    pub dconv: BaseConv,
    pub pconv: BaseConv,
}

impl DwConv {
    pub fn new(b: &Builder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        Ok(DwConv {
            dconv: BaseConv::new(&b.sub("dconv"), cin, cin, k, stride, cin)?,
            pconv: BaseConv::new(&b.sub("pconv"), cin, cout, 1, 1, 1)?,
        })
    }
}

/// YOLOX's `Conv = DWConv if depthwise else BaseConv`.
pub enum Conv {
    Base(BaseConv),
    Dw(DwConv),
}

impl Conv {
    pub fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
    ) -> Result<Self> {
        Ok(if depthwise {
            Conv::Dw(DwConv::new(b, cin, cout, k, stride)?)
        } else {
            Conv::Base(BaseConv::new(b, cin, cout, k, stride, 1)?)
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv::Base(c) => c.forward(x),
            Conv::Dw(c) => c.pconv.forward(&c.dconv.forward(x)?),
        }
    }

    pub fn cost(&self, h: usize, w: usize) -> (usize, usize, usize) {
        match self {
            Conv::Base(c) => c.cost(h, w),
            Conv::Dw(c) => {
                let (a, h1, w1) = c.dconv.cost(h, w);
                let (b, h2, w2) = c.pconv.cost(h1, w1);
                (a + b, h2, w2)
            }
        }
    }
}

/// Bottleneck: 1×1 BaseConv → 3×3 Conv, plus the input when `shortcut` and cin == cout.
pub struct Bottleneck {
    pub conv1: BaseConv,
    pub conv2: Conv,
    pub use_add: bool,
}

impl Bottleneck {
    pub fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        shortcut: bool,
        expansion: f64,
        depthwise: bool,
    ) -> Result<Self> {
        let hidden = (cout as f64 * expansion) as usize;
        Ok(Bottleneck {
            conv1: BaseConv::new(&b.sub("conv1"), cin, hidden, 1, 1, 1)?,
            conv2: Conv::new(&b.sub("conv2"), hidden, cout, 3, 1, depthwise)?,
            use_add: shortcut && cin == cout,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv2.forward(&self.conv1.forward(x)?)?;
        if self.use_add {
            ops::add(&y, x)
        } else {
            Ok(y)
        }
    }

    pub fn cost(&self, h: usize, w: usize) -> usize {
        let (a, h1, w1) = self.conv1.cost(h, w);
        a + self.conv2.cost(h1, w1).0
    }
}

/// CSPLayer (YOLOv5's C3): conv3(cat[m(conv1(x)), conv2(x)]) — main path first.
pub struct CspLayer {
    pub conv1: BaseConv,
    pub conv2: BaseConv,
    pub conv3: BaseConv,
    pub m: Vec<Bottleneck>,
}

impl CspLayer {
    pub fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        n: usize,
        shortcut: bool,
        depthwise: bool,
    ) -> Result<Self> {
        let hidden = (cout as f64 * 0.5) as usize;
        let m = (0..n)
            .map(|i| Bottleneck::new(&b.sub("m").sub(i), hidden, hidden, shortcut, 1.0, depthwise))
            .collect::<Result<_>>()?;
        Ok(CspLayer {
            conv1: BaseConv::new(&b.sub("conv1"), cin, hidden, 1, 1, 1)?,
            conv2: BaseConv::new(&b.sub("conv2"), cin, hidden, 1, 1, 1)?,
            conv3: BaseConv::new(&b.sub("conv3"), 2 * hidden, cout, 1, 1, 1)?,
            m,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut main = self.conv1.forward(x)?;
        for block in &self.m {
            main = block.forward(&main)?;
        }
        let bypass = self.conv2.forward(x)?;
        self.conv3.forward(&ops::cat(&[main, bypass], 1)?)
    }

    pub fn cost(&self, h: usize, w: usize) -> usize {
        self.conv1.cost(h, w).0
            + self.conv2.cost(h, w).0
            + self.conv3.cost(h, w).0
            + self.m.iter().map(|b| b.cost(h, w)).sum::<usize>()
    }
}

/// SPPBottleneck: conv1 → parallel max-pools (5, 9, 13; stride 1) → cat[x, p5, p9, p13] → conv2.
pub struct SppBottleneck {
    pub conv1: BaseConv,
    pub conv2: BaseConv,
    pub kernels: Vec<usize>,
}

impl SppBottleneck {
    pub fn new(b: &Builder, cin: usize, cout: usize) -> Result<Self> {
        let hidden = cin / 2;
        let kernels = vec![5, 9, 13];
        Ok(SppBottleneck {
            conv1: BaseConv::new(&b.sub("conv1"), cin, hidden, 1, 1, 1)?,
            conv2: BaseConv::new(&b.sub("conv2"), hidden * (kernels.len() + 1), cout, 1, 1, 1)?,
            kernels,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(x)?;
        let mut parts = vec![x.clone()];
        for &k in &self.kernels {
            parts.push(ops::max_pool2d(
                &x,
                Pool2dParams {
                    kernel: k,
                    stride: 1,
                    padding: k / 2,
                },
            )?);
        }
        self.conv2.forward(&ops::cat(&parts, 1)?)
    }

    pub fn cost(&self, h: usize, w: usize) -> usize {
        self.conv1.cost(h, w).0 + self.conv2.cost(h, w).0
    }
}

/// Focus: space-to-depth `[TL, BL, TR, BR]` (rows are dim −2) → BaseConv(12 → c, 3×3).
pub struct Focus {
    pub conv: BaseConv,
}

impl Focus {
    pub fn new(b: &Builder, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Ok(Focus {
            conv: BaseConv::new(&b.sub("conv"), cin * 4, cout, k, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.dim(-2)?, x.dim(-1)?);
        let pick = |row0: usize, col0: usize| -> Result<Tensor> {
            ops::slice_step(&ops::slice_step(x, -2, row0, h, 2)?, -1, col0, w, 2)
        };
        // YOLOX: patch_top_left, patch_bot_left, patch_top_right, patch_bot_right.
        let parts = [pick(0, 0)?, pick(1, 0)?, pick(0, 1)?, pick(1, 1)?];
        self.conv.forward(&ops::cat(&parts, 1)?)
    }
}
