//! The projection heads of dense contrast (DenseCL, Wang et al. CVPR 2021): per feature level a
//! dense head `1×1 conv → ReLU → 1×1 conv` (with biases, as DenseCL's), and one global head
//! `GAP(C5) → Linear → ReLU → Linear` (MoCo v2's). Hidden width = the level's channels (DenseCL:
//! 2048 → 2048 → 128 on ResNet-50's C5). Their tensors are named `pretrain_head.*`, which
//! backbone transfer never reads.

use crate::nn::{Builder, ParamStore, TensorKind};
use crate::ops::{self, Conv2dParams};
use crate::tensor::Tensor;
use crate::Result;

/// Channels of C3, C4, C5 (and of the PAFPN's P3, P4, P5) for a YOLOX width.
pub fn level_channels(width: f64) -> [usize; 3] {
    [
        (256.0 * width) as usize,
        (512.0 * width) as usize,
        (1024.0 * width) as usize,
    ]
}

struct Conv1x1 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1x1 {
    fn new(b: &Builder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Conv1x1 {
            weight: b.uniform_fan_in("weight", [cout, cin, 1, 1], cin, TensorKind::Weight)?,
            bias: b.uniform_fan_in("bias", [cout], cin, TensorKind::NoDecay)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = Conv2dParams {
            stride: 1,
            padding: 0,
            groups: 1,
        };
        ops::conv2d(x, &self.weight, Some(&self.bias), p)
    }
}

struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

/// The heads of one dense run, in a store of their own (one optimiser, saved with the run).
pub struct DenseHeads {
    pub store: ParamStore,
    /// One `(conv, conv)` per level: C3, C4, C5, then P3, P4, P5 when the neck trains.
    dense: Vec<(Conv1x1, Conv1x1)>,
    global: Mlp,
    pub dim: usize,
}

/// Names of the levels in order (`c3`, `c4`, `c5`, then `p3`, `p4`, `p5` with the neck).
pub fn level_names(neck: bool) -> Vec<&'static str> {
    let mut names = vec!["c3", "c4", "c5"];
    if neck {
        names.extend(["p3", "p4", "p5"]);
    }
    names
}

impl DenseHeads {
    /// Heads for a backbone of `width`, embeddings of `dim`, on the neck's levels too when
    /// `neck`.
    pub fn new(width: f64, dim: usize, neck: bool, seed: u64) -> Result<Self> {
        let store = ParamStore::new(seed);
        let root = store.builder().sub("pretrain_head");
        let channels = level_channels(width);
        let mut dense = Vec::new();
        for (k, name) in level_names(neck).into_iter().enumerate() {
            let c = channels[k % 3];
            let b = root.sub("dense").sub(name);
            dense.push((
                Conv1x1::new(&b.sub("0"), c, c)?,
                Conv1x1::new(&b.sub("2"), c, dim)?,
            ));
        }
        let c5 = channels[2];
        let g = root.sub("global");
        let global = Mlp {
            w1: g
                .sub("0")
                .uniform_fan_in("weight", [c5, c5], c5, TensorKind::Weight)?,
            b1: g
                .sub("0")
                .uniform_fan_in("bias", [c5], c5, TensorKind::NoDecay)?,
            w2: g
                .sub("2")
                .uniform_fan_in("weight", [dim, c5], c5, TensorKind::Weight)?,
            b2: g
                .sub("2")
                .uniform_fan_in("bias", [dim], c5, TensorKind::NoDecay)?,
        };
        Ok(DenseHeads {
            store,
            dense,
            global,
            dim,
        })
    }

    pub fn levels(&self) -> usize {
        self.dense.len()
    }

    /// Level `k`'s feature map `[B, C, h, w]` → dense embeddings `[B·h·w, dim]` (rows: image,
    /// then row-major cells), not normalised.
    pub fn dense_rows(&self, k: usize, x: &Tensor) -> Result<Tensor> {
        let (c1, c2) = &self.dense[k];
        let y = c2.forward(&ops::relu(&c1.forward(x)?)?)?; // [B, dim, h, w]
        feature_rows(&y)
    }

    /// `c5 [B, C5, h, w]` → global embeddings `[B, dim]`, not normalised.
    pub fn global_rows(&self, c5: &Tensor) -> Result<Tensor> {
        let g = ops::flatten(&ops::global_avg_pool2d(c5)?, 1, 3)?;
        let h = ops::relu(&ops::linear(&g, &self.global.w1, Some(&self.global.b1))?)?;
        ops::linear(&h, &self.global.w2, Some(&self.global.b2))
    }

    /// The heads' tensors under the names checkpoints and states use.
    pub fn entries(&self) -> Vec<(String, Tensor)> {
        self.store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.tensor))
            .collect()
    }
}

/// `[B, C, h, w]` → `[B·h·w, C]` (image-major, then row-major cells).
pub fn feature_rows(x: &Tensor) -> Result<Tensor> {
    let d = x.dims();
    let (b, c, h, w) = (d[0], d[1], d[2], d[3]);
    let t = ops::contiguous(&ops::permute(x, &[0, 2, 3, 1])?)?;
    ops::reshape(&t, [b * h * w, c])
}

/// Rows of `x [N, D]` scaled to unit length (`x / sqrt(‖x‖² + 1e-12)`).
pub fn l2_normalize_rows(x: &Tensor) -> Result<Tensor> {
    let sq = ops::sum(&ops::mul(x, x)?, &[1], true)?; // [N, 1]
    let norm = ops::sqrt(&ops::add_scalar(&sq, 1e-12)?)?;
    ops::div(x, &norm)
}
