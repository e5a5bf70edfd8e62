//! `pretrain_dense`: dense contrast as a method of the shared self-supervised run loop
//! ([`crate::pretrain::ssl::run_ssl`]: device, optimisers, schedule, loader, health, state,
//! `epochs.csv`, `loss.png`, checkpoint).

use std::sync::Arc;

use super::heads::DenseHeads;
use super::step::dense_step;
use super::views::{build_view_pairs, ViewPairs, ViewSampling};
use super::DenseConfig;
use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::pretrain::data::{FrameSet, ImageSource, InputNorm};
use crate::pretrain::ssl::{run_ssl, store_entries, BatchBuilder, SslMethod};
use crate::pretrain::state::config_json;
use crate::pretrain::transfer::is_neck_tensor;
use crate::pretrain::PretrainReport;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// Dense contrast's part of the run loop: its heads, its images and its keys.
struct DenseMethod {
    heads: DenseHeads,
    images: Arc<Vec<ImageSource>>,
    cfg: DenseConfig,
}

impl SslMethod for DenseMethod {
    type Batch = ViewPairs;

    fn name(&self) -> &'static str {
        "dense"
    }

    fn head_store(&self) -> &ParamStore {
        &self.heads.store
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

    fn batch_builder(&self, epoch_seed: u64) -> BatchBuilder<ViewPairs> {
        let images = self.images.clone();
        let sampling = ViewSampling {
            view_size: self.cfg.common.image_size,
            augment: self.cfg.method.view_augment(),
            norm: self.cfg.method.input_norm,
            epoch_seed,
        };
        Arc::new(move |first: usize, items: &[usize]| {
            build_view_pairs(&images, first, items, &sampling)
        })
    }

    fn step(&mut self, model: &YoloX, batch: ViewPairs, device: Device) -> Result<Tensor> {
        let [w, h] = self.cfg.common.image_size;
        let b = batch.images();
        let x = Tensor::from_vec_on(batch.values, [2 * b, 3, h, w], device)?;
        let out = dense_step(
            model,
            &self.heads,
            &x,
            &batch.boxes,
            batch.seed,
            &self.cfg.method.contrast(),
            None,
        )?;
        Ok(out.loss)
    }

    fn checkpoint_extra(&self, model: &YoloX) -> Vec<(String, Tensor)> {
        checkpoint_extra(&self.heads, self.cfg.method.neck, model)
    }
}

/// What a dense-contrast checkpoint holds besides the backbone: the heads, and with `neck` the
/// PAFPN's neck under the detector's names, so `load_backbone_with(.., neck: true)` finds it.
pub fn checkpoint_extra(heads: &DenseHeads, neck: bool, model: &YoloX) -> Vec<(String, Tensor)> {
    let mut extra = store_entries(&heads.store);
    if neck {
        extra.extend(
            model
                .store
                .entries()
                .into_iter()
                .filter(|e| is_neck_tensor(&e.name))
                .map(|e| (e.name, e.tensor)),
        );
    }
    extra
}

/// Pretrain `model`'s backbone (and with `neck: true` its PAFPN) by dense contrast on `images`
/// (any image folder; see the module docs of [`super`]). Writes `dense_last.safetensors` and
/// the run files into `out` when set.
pub fn pretrain_dense(
    model: &YoloX,
    images: &FrameSet,
    cfg: &DenseConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    if cfg.common.batch_size < 2 {
        return Err(Error::InvalidArgument(format!(
            "`batch_size` must be >= 2 for dense contrast (the other images are the \
             negatives), got {}",
            cfg.common.batch_size
        )));
    }
    let mut method = DenseMethod {
        heads: DenseHeads::new(
            model.config.width,
            cfg.method.dim,
            cfg.method.neck,
            cfg.common.seed,
        )?,
        images: Arc::new(images.frames.clone()),
        cfg: cfg.clone(),
    };
    // Restored on every exit, errors included.
    let _momentum = model.store.bn_momentum_scope(cfg.method.bn_momentum);
    run_ssl(model, &mut method, &cfg.common, config_json(cfg)?)
}
