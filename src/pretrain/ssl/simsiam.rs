//! SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): two augmented
//! views of an image, an encoder `f` = backbone + projector, a predictor `h`, and the symmetric
//! negative cosine with a stop-gradient on the target branch:
//! `L = ½ D(p₁, sg(z₂)) + ½ D(p₂, sg(z₁))`, `D(p, z) = −cos(p, z)`, no negatives.
//!
//! Heads (the paper's Sec. 3 and Appendix A, scaled to CSPDarknet's C5 width `d = 1024·width`
//! where the paper's ResNet-50 has 2048):
//! - projector: 3 × Linear(·, d) with BN, ReLU after the first two, BN without affine
//!   (`affine=False` in the reference code: γ = 1, β = 0 fixed) and no ReLU on the output;
//! - predictor: Linear(d, d/4) → BN → ReLU → Linear(d/4, d) (the paper's 2048 → 512 → 2048
//!   bottleneck).
//!
//! Views: `views.rs` (RandomResizedCrop 0.2–1, flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
//! grayscale p 0.2; the paper's blur is left out). Each view is its own forward pass (BN
//! statistics per view, as the reference `forward(x1, x2)`). Optimiser: the paper uses SGD
//! (lr 0.05·batch/256, momentum 0.9, wd 1e-4, cosine, 100 epochs, batch 512); the run loop here
//! uses Adam, so the defaults are Adam's usual lr 1e-3 with the paper's wd 1e-4 and cosine
//! schedule. Collapse shows in the health columns (the paper's Fig. 2: std of the normalised
//! output → 0), which is what the stop-gradient prevents.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{MethodKeys, SslCommon, SslConfig};
use super::mlp::{backbone_gap, Bn, LayerSpec, Mlp};
use super::runner::{run_ssl, BatchBuilder, SslMethod};
use super::views::ViewAugment;
use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::ops;
use crate::pretrain::data::{FrameSet, ImageSource, InputNorm};
use crate::pretrain::heads::c5_channels;
use crate::pretrain::state::config_json;
use crate::pretrain::PretrainReport;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// SimSiam's own keys (the common ones are in [`SslCommon`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSiamKeys {
    /// Projector width and output size; None: C5's channels (the paper: 2048 = ResNet-50's).
    pub proj_dim: Option<usize>,
    /// Predictor bottleneck; None: `proj_dim / 4` (the paper: 512).
    pub pred_hidden: Option<usize>,
    pub views: ViewAugment,
    pub input_norm: InputNorm,
}

impl Default for SimSiamKeys {
    fn default() -> Self {
        SimSiamKeys {
            proj_dim: None,
            pred_hidden: None,
            views: ViewAugment::default(),
            input_norm: InputNorm::Bgr255,
        }
    }
}

impl MethodKeys for SimSiamKeys {
    fn common_defaults() -> SslCommon {
        SslCommon {
            lr: 1e-3,
            weight_decay: 1e-4,
            ..SslCommon::default()
        }
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("proj_dim", self.proj_dim),
            ("pred_hidden", self.pred_hidden),
        ] {
            if v == Some(0) {
                return Err(Error::InvalidArgument(format!("`{key}` must be >= 1")));
            }
        }
        self.views.validate("views")
    }
}

/// `pretrain_simsiam`'s config: the common keys and [`SimSiamKeys`] in one map.
pub type SimSiamConfig = SslConfig<SimSiamKeys>;

/// Two views of each image: `[2B, 3, h, w]`, every first view, then every second view.
pub struct TwoViews {
    pub values: Vec<f32>,
    pub images: usize,
    pub size: [usize; 2],
}

/// The builder of [`TwoViews`] batches over `sources` (draws keyed `"<tag>/<position>"`).
pub fn two_view_builder(
    sources: Arc<Vec<ImageSource>>,
    views: ViewAugment,
    size: [usize; 2],
    norm: InputNorm,
    (epoch_seed, tag): (u64, &'static str),
) -> BatchBuilder<TwoViews> {
    Arc::new(move |first: usize, items: &[usize]| {
        let [w, h] = size;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (k, &item) in items.iter().enumerate() {
            let img = sources[item].load()?;
            let mut rng = rng_for(epoch_seed, &format!("{tag}/{}", first + k));
            views.push_view_pair((&img, &img), size, &mut rng, (&mut a, &mut b));
        }
        a.extend_from_slice(&b);
        norm.apply_to_rgb_planes(&mut a, w * h);
        Ok(TwoViews {
            values: a,
            images: items.len(),
            size,
        })
    })
}

/// The projector and predictor (see the module docs).
pub struct SimSiamHead {
    pub store: ParamStore,
    projector: Mlp,
    predictor: Mlp,
}

impl SimSiamHead {
    pub fn new(c5: usize, keys: &SimSiamKeys, seed: u64) -> Result<SimSiamHead> {
        let d = keys.proj_dim.unwrap_or(c5);
        let hidden = keys.pred_hidden.unwrap_or((d / 4).max(1));
        let store = ParamStore::new(seed);
        let b = store.builder().sub("pretrain_head");
        let layer = LayerSpec::new;
        let projector = Mlp::new(
            &b.sub("projector"),
            &[
                layer(c5, d, Bn::Affine, true),
                layer(d, d, Bn::Affine, true),
                layer(d, d, Bn::Fixed, false),
            ],
        )?;
        let predictor = Mlp::new(
            &b.sub("predictor"),
            &[
                layer(d, hidden, Bn::Affine, true),
                layer(hidden, d, Bn::Off, false),
            ],
        )?;
        Ok(SimSiamHead {
            store,
            projector,
            predictor,
        })
    }

    /// `(z, p)` of one view `x [B, 3, h, w]`.
    pub fn forward(&self, model: &YoloX, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let training = self.store.is_training();
        let z = self.projector.forward(&backbone_gap(model, x)?, training)?;
        let p = self.predictor.forward(&z, training)?;
        Ok((z, p))
    }
}

/// `−mean cos(p, sg(z))`.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    ops::neg(&ops::mean_all(&ops::cosine_similarity(p, &z.detach(), 1)?)?)
}

/// One SimSiam step's forward and backward on two views `x [2B, 3, h, w]` (first views, then
/// second views): the loss.
pub fn simsiam_step(model: &YoloX, head: &SimSiamHead, x: &Tensor) -> Result<Tensor> {
    let b = x.dims()[0] / 2;
    let (z1, p1) = head.forward(model, &ops::narrow(x, 0, 0, b)?)?;
    let (z2, p2) = head.forward(model, &ops::narrow(x, 0, b, b)?)?;
    let loss = ops::mul_scalar(
        &ops::add(&negative_cosine(&p1, &z2)?, &negative_cosine(&p2, &z1)?)?,
        0.5,
    )?;
    loss.backward()?;
    Ok(loss)
}

struct SimSiam<'a> {
    cfg: &'a SimSiamConfig,
    head: SimSiamHead,
    images: Arc<Vec<ImageSource>>,
}

impl SslMethod for SimSiam<'_> {
    type Batch = TwoViews;

    fn name(&self) -> &'static str {
        "simsiam"
    }

    fn head_store(&self) -> &ParamStore {
        &self.head.store
    }

    fn items(&self) -> usize {
        self.images.len()
    }

    fn images_per_item(&self) -> usize {
        2
    }

    fn health_images(&self) -> Arc<Vec<ImageSource>> {
        self.images.clone()
    }

    fn input_norm(&self) -> InputNorm {
        self.cfg.method.input_norm
    }

    fn batch_builder(&self, epoch_seed: u64) -> BatchBuilder<TwoViews> {
        two_view_builder(
            self.images.clone(),
            self.cfg.method.views,
            self.cfg.common.image_size,
            self.cfg.method.input_norm,
            (epoch_seed, "simsiam"),
        )
    }

    fn step(&mut self, model: &YoloX, batch: TwoViews, device: Device) -> Result<Tensor> {
        let [w, h] = batch.size;
        let x = Tensor::from_vec_on(batch.values, [2 * batch.images, 3, h, w], device)?;
        simsiam_step(model, &self.head, &x)
    }
}

/// SimSiam-pretrain `model`'s backbone on `images` (see the module docs); writes
/// `simsiam_last.safetensors` (backbone + projector/predictor) into `out`.
pub fn pretrain_simsiam(
    model: &YoloX,
    images: &FrameSet,
    cfg: &SimSiamConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let head = SimSiamHead::new(
        c5_channels(model.config.width),
        &cfg.method,
        cfg.common.seed,
    )?;
    let mut method = SimSiam {
        cfg,
        head,
        images: Arc::new(images.frames.clone()),
    };
    run_ssl(model, &mut method, &cfg.common, config_json(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::TensorKind;

    /// The reference projector ends in `BatchNorm1d(dim, affine=False)`: its γ and β are fixed
    /// buffers here, while the other BN layers learn theirs.
    #[test]
    fn only_the_projector_output_bn_is_fixed() {
        let head = SimSiamHead::new(16, &SimSiamKeys::default(), 0).unwrap();
        let kinds: Vec<(String, TensorKind, bool)> = head
            .store
            .entries()
            .into_iter()
            .filter(|e| e.name.ends_with("bn.weight") || e.name.ends_with("bn.bias"))
            .map(|e| (e.name, e.kind, e.tensor.requires_grad()))
            .collect();
        assert_eq!(kinds.len(), 2 * 4, "{kinds:?}");
        for (name, kind, trained) in kinds {
            let fixed = name.starts_with("pretrain_head.projector.2.");
            assert_eq!(trained, !fixed, "{name}");
            assert_eq!(kind == TensorKind::Buffer, fixed, "{name}");
        }
    }
}
