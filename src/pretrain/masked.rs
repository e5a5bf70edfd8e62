//! SparK-style masked convolutional autoencoding (Tian et al., ICLR 2023, "Designing BERT for
//! CNNs"; docs/pretraining.md, "Masked autoencoding") on any folder of images.
//!
//! Per image: a random crop of `crop_scale` of its area resized to `image_size` and a horizontal
//! flip with `hflip_prob` (SparK's RandomResizedCrop and RandomHorizontalFlip), and a random
//! `mask_ratio` of its 32 px patches masked ([`sample_visible_patches`]). The backbone runs sparsely on the visible patches
//! ([`crate::models::sparse`]), the decoder ([`MaskedDecoder`]) fills the masked positions with
//! mask tokens and predicts pixels; the loss is the MSE on the masked patches, per-patch
//! normalised. The run loop (optimisers, schedule, loader, health, state, files) is the shared
//! one ([`super::ssl::run_ssl`]); the checkpoint holds the backbone and the decoder.

use std::sync::Arc;

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::{push_rgb_planes, FrameSet, ImageSource, InputNorm};
use super::masked_decoder::{masked_autoencoding_step, sample_visible_patches, MaskedDecoder};
use super::ssl::{run_ssl, BatchBuilder, MethodKeys, SslConfig, SslMethod, ViewAugment};
use super::state::config_json;
use super::PretrainReport;
use crate::data::augment::resize_bilinear;
use crate::models::{PatchMask, YoloX, MASK_PATCH_PX};
use crate::nn::ParamStore;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The keys of masked autoencoding besides the common ones (docs/pretraining.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskedKeys {
    /// Fraction of each image's 32 px patches that is masked (SparK: 0.6).
    pub mask_ratio: f64,
    /// Channels of the decoder at every stage (SparK: 768 at stride 32 for ResNet-50, halved
    /// per stage; scaled down here).
    pub decoder_width: usize,
    /// RandomResizedCrop's area fraction range, the crop resized to `image_size` (SparK:
    /// 0.67..1). `None`: the whole image, resized.
    pub crop_scale: Option<[f64; 2]>,
    /// RandomResizedCrop's aspect-ratio range (torchvision: 3/4..4/3).
    pub crop_ratio: [f64; 2],
    /// Probability of a horizontal flip (SparK: 0.5).
    pub hflip_prob: f64,
    /// Input convention (default the detector's: BGR 0..255).
    pub input_norm: InputNorm,
}

impl Default for MaskedKeys {
    fn default() -> Self {
        MaskedKeys {
            mask_ratio: 0.6,
            decoder_width: 128,
            crop_scale: Some([0.67, 1.0]),
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_prob: 0.5,
            input_norm: InputNorm::Bgr255,
        }
    }
}

impl MethodKeys for MaskedKeys {
    fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "`mask_ratio` must be in (0, 1), got {}",
                self.mask_ratio
            )));
        }
        super::check_positive("decoder_width", self.decoder_width)?;
        // `crop_ratio` is checked even when the whole image is used, so a bad value is never
        // silently ignored.
        self.crop_at(self.crop_scale.unwrap_or([1.0, 1.0]))
            .validate("pretrain_masked")?;
        if !(0.0..=1.0).contains(&self.hflip_prob) {
            return Err(Error::InvalidArgument(format!(
                "`hflip_prob` must be in [0, 1], got {}",
                self.hflip_prob
            )));
        }
        Ok(())
    }
}

impl MaskedKeys {
    /// The RandomResizedCrop of `crop_scale` and `crop_ratio` (the crop rectangle of the
    /// image-level methods' views), or `None` for the whole image.
    fn crop(&self) -> Option<ViewAugment> {
        self.crop_scale.map(|scale| self.crop_at(scale))
    }

    /// The crop transform at area fraction range `crop_scale` and this `crop_ratio`.
    fn crop_at(&self, crop_scale: [f64; 2]) -> ViewAugment {
        ViewAugment {
            crop_scale,
            crop_ratio: self.crop_ratio,
            ..ViewAugment::default()
        }
    }

    /// `source` as the method sees it: a random crop (or the whole image) resized to `w`×`h`.
    fn load_view(
        &self,
        source: &ImageSource,
        [w, h]: [u32; 2],
        rng: &mut impl Rng,
    ) -> Result<Arc<RgbImage>> {
        let Some(crop) = self.crop() else {
            return source.load_resized(w, h);
        };
        let img = source.load()?;
        let (x, y, cw, ch) = crop.crop_rect(img.width(), img.height(), rng);
        let region = image::imageops::crop_imm(img.as_ref(), x, y, cw, ch).to_image();
        Ok(Arc::new(resize_bilinear(&region, w, h)))
    }
}

/// `pretrain_masked`'s config: the common keys and [`MaskedKeys`] in one map.
pub type MaskedConfig = SslConfig<MaskedKeys>;

/// One step's input: images `[n, 3, H, W]` in the input convention and each one's visible
/// patches (row-major over the `H/32 × W/32` grid).
pub struct MaskedBatch {
    pub values: Vec<f32>,
    pub visible: Vec<Vec<bool>>,
}

struct MaskedMethod {
    decoder: MaskedDecoder,
    sources: Arc<Vec<ImageSource>>,
    image_size: [usize; 2],
    keys: MaskedKeys,
}

impl MaskedMethod {
    fn grid(&self) -> [usize; 2] {
        let [w, h] = self.image_size;
        [h / MASK_PATCH_PX, w / MASK_PATCH_PX]
    }
}

impl SslMethod for MaskedMethod {
    type Batch = MaskedBatch;

    fn name(&self) -> &'static str {
        "masked"
    }

    fn head_store(&self) -> &ParamStore {
        &self.decoder.store
    }

    fn items(&self) -> usize {
        self.sources.len()
    }

    fn health_images(&self) -> Arc<Vec<ImageSource>> {
        self.sources.clone()
    }

    fn input_norm(&self) -> InputNorm {
        self.keys.input_norm
    }

    fn batch_builder(&self, epoch_seed: u64) -> BatchBuilder<MaskedBatch> {
        let sources = self.sources.clone();
        let [w, h] = self.image_size;
        let [h32, w32] = self.grid();
        let keys = self.keys.clone();
        Arc::new(move |first: usize, items: &[usize]| {
            let mut values = Vec::with_capacity(items.len() * 3 * w * h);
            let mut visible = Vec::with_capacity(items.len());
            for (i, &item) in items.iter().enumerate() {
                let mut rng = rng_for(epoch_seed, &format!("masked/{}", first + i));
                let img = keys.load_view(&sources[item], [w as u32, h as u32], &mut rng)?;
                let flip = rng.random_bool(keys.hflip_prob);
                push_rgb_planes(&img, flip, &mut values);
                visible.push(sample_visible_patches(h32 * w32, keys.mask_ratio, &mut rng));
            }
            keys.input_norm.apply_to_rgb_planes(&mut values, w * h);
            Ok(MaskedBatch { values, visible })
        })
    }

    fn step(&mut self, model: &YoloX, batch: MaskedBatch, device: Device) -> Result<Tensor> {
        let [w, h] = self.image_size;
        let n = batch.visible.len();
        let images = Tensor::from_vec_on(batch.values, [n, 3, h, w], device)?;
        let mask = PatchMask::new(&batch.visible, self.grid(), device)?;
        masked_autoencoding_step(model, &self.decoder, &images, &mask)
    }
}

/// Pretrain `model`'s backbone by masked autoencoding on `images` (see the module docs).
pub fn pretrain_masked(
    model: &YoloX,
    images: &FrameSet,
    cfg: &MaskedConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let [w, h] = cfg.common.image_size;
    if (w / MASK_PATCH_PX) * (h / MASK_PATCH_PX) < 2 {
        return Err(Error::InvalidArgument(format!(
            "`image_size` {w}×{h} has one 32 px patch: masked autoencoding needs at least two \
             (one to see, one to reconstruct)"
        )));
    }
    let decoder = MaskedDecoder::new(
        model.config.width,
        cfg.method.decoder_width,
        cfg.common.seed,
    )?;
    let mut method = MaskedMethod {
        decoder,
        sources: Arc::new(images.frames.clone()),
        image_size: cfg.common.image_size,
        keys: cfg.method.clone(),
    };
    run_ssl(model, &mut method, &cfg.common, state_config(cfg)?)
}

/// The config a state compares on resume. With `crop_scale` null neither crop key changes what
/// is computed, so both are left out: a state written before the crop keys existed (the whole
/// image, always) resumes with `crop_scale` null, and one written with a crop does not.
fn state_config(cfg: &MaskedConfig) -> Result<serde_json::Value> {
    let mut json = config_json(cfg)?;
    if cfg.method.crop_scale.is_none() {
        if let Some(keys) = json.as_object_mut() {
            keys.remove("crop_scale");
            keys.remove("crop_ratio");
        }
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn views_are_crops_resized_or_the_whole_image() {
        // x in red, y in green: a crop's corner values say where it was cut.
        let img = RgbImage::from_fn(120, 80, |x, y| Rgb([x as u8, y as u8, 0]));
        let source = ImageSource::Memory(Arc::new(img.clone()));
        let whole = MaskedKeys {
            crop_scale: None,
            ..MaskedKeys::default()
        };
        let mut rng = rng_for(0, "t");
        let view = whole.load_view(&source, [120, 80], &mut rng).unwrap();
        assert_eq!(*view, img);
        let keys = MaskedKeys {
            crop_scale: Some([0.25, 0.25]),
            crop_ratio: [1.5, 1.5],
            ..MaskedKeys::default()
        };
        let mut corners = std::collections::HashSet::new();
        for _ in 0..20 {
            let view = keys.load_view(&source, [96, 64], &mut rng).unwrap();
            assert_eq!(view.dimensions(), (96, 64));
            // A quarter of the area at the image's 3:2 is 60 × 40 px, magnified 1.6 times.
            let [r0, g0, _] = view.get_pixel(0, 0).0;
            let [r1, g1, _] = view.get_pixel(95, 63).0;
            let (span_x, span_y) = (r1 as i32 - r0 as i32, g1 as i32 - g0 as i32);
            assert!((57..=61).contains(&span_x), "{span_x}");
            assert!((37..=41).contains(&span_y), "{span_y}");
            corners.insert((r0, g0));
        }
        assert!(corners.len() > 10, "crops are drawn at random places");
    }
}
