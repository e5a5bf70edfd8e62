//! Backbone pretraining in Rhai: `pretrain_center_loss(m, "crops/", #{ epochs: 10 })`,
//! `pretrain_patch_ssl(m, "frames/", #{ loss: "info_nce" })`, `linear_probe(m, "crops/", #{})`,
//! `m.load_backbone("ckpt.safetensors")`. Config maps use the config structs' field names; an
//! unknown key is an error naming it. Results are maps of per-epoch arrays.

use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext, INT};

use super::models::Model;
use super::Api;
use crate::pretrain::ssl::pretrain_simsiam;
use crate::pretrain::state::STATE_FILE;
use crate::pretrain::temporal::{pretrain_temporal, TimedFrames};
use crate::pretrain::{embedding_health, knn_probe, HealthReport, KnnReport};
use crate::pretrain::{
    linear_probe, load_backbone, patch_ssl::pretrain_patch_ssl_with_loss, pretrain_center_loss,
    pretrain_patch_ssl, CropSet, FrameSet, PretrainReport, ProbeReport,
};
use crate::script::api::notebook::{in_ablation_point, output_path};
use crate::script::convert::{lift, script_err, ScriptResult};
use crate::Tensor;

/// A config map → a config struct through JSON (so `deny_unknown_fields` and defaults apply).
fn config_from_map<T: serde::de::DeserializeOwned>(op: &str, map: Map) -> ScriptResult<T> {
    let mut map = map;
    // A relative `out` folder lands in the notebook's run folder, like every other output.
    if let Some(out) = map.get("out").map(|d| d.to_string()) {
        map.insert(
            "out".into(),
            Dynamic::from(output_path(&out).display().to_string()),
        );
    }
    // Without a `device` key, pretraining runs where the notebook's `--device` put it.
    if !map.contains_key("device") {
        let device = match super::notebook::run_device() {
            crate::tensor::Device::Cpu => "cpu",
            crate::tensor::Device::Cuda => "cuda",
        };
        map.insert("device".into(), Dynamic::from(device.to_string()));
    }
    let json = serde_json::to_value(Dynamic::from_map(map))
        .map_err(|e| script_err(format!("{op}: {e}")))?;
    serde_json::from_value(json).map_err(|e| script_err(format!("{op}: bad config: {e}")))
}

/// A pretraining config map: inside an `ablate` point, a run that an interrupted earlier
/// attempt left in `out` resumes (unless the map says `resume` itself).
fn resumable(mut map: Map) -> Map {
    if in_ablation_point() && !map.contains_key("resume") {
        let state = map
            .get("out")
            .map(|out| output_path(&out.to_string()).join(STATE_FILE));
        if state.is_some_and(|p| p.exists()) {
            map.insert("resume".into(), Dynamic::TRUE);
        }
    }
    map
}

fn opt_float(v: Option<f64>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from_float)
}

fn report_map(r: &PretrainReport) -> Map {
    let mut m = Map::new();
    let col = |f: &dyn Fn(&crate::pretrain::EpochStats) -> Dynamic| -> Array {
        r.epochs.iter().map(f).collect()
    };
    m.insert("loss".into(), col(&|e| Dynamic::from_float(e.loss)).into());
    m.insert("accuracy".into(), col(&|e| opt_float(e.accuracy)).into());
    m.insert("pos_cos".into(), col(&|e| opt_float(e.mean_pos_cos)).into());
    m.insert("neg_cos".into(), col(&|e| opt_float(e.mean_neg_cos)).into());
    m.insert(
        "seconds".into(),
        col(&|e| Dynamic::from_float(e.seconds)).into(),
    );
    m.insert(
        "images_seen".into(),
        col(&|e| Dynamic::from_int(e.images_seen as INT)).into(),
    );
    m.insert("best_accuracy".into(), opt_float(r.best_accuracy));
    m.insert(
        "best_epoch".into(),
        r.best_epoch
            .map_or(Dynamic::UNIT, |e| Dynamic::from_int(e as INT)),
    );
    m.insert(
        "checkpoint".into(),
        r.checkpoint
            .as_ref()
            .map_or(Dynamic::UNIT, |p| p.display().to_string().into()),
    );
    m.insert("samples_per_s".into(), Dynamic::from_float(r.samples_per_s));
    m.insert("steps".into(), Dynamic::from_int(r.steps as INT));
    m.insert(
        "health".into(),
        r.health
            .as_ref()
            .map_or(Dynamic::UNIT, |h| health_map(h).into()),
    );
    let warnings: Array = r.warnings.iter().map(|w| w.clone().into()).collect();
    m.insert("warnings".into(), warnings.into());
    m
}

fn health_map(h: &HealthReport) -> Map {
    let mut m = Map::new();
    for (k, v) in [
        ("std_mean", h.std_mean),
        ("std_min", h.std_min),
        ("std_ratio", h.std_ratio),
        ("effective_rank", h.effective_rank),
        ("alignment", h.alignment),
        ("uniformity", h.uniformity),
        ("seconds", h.seconds),
    ] {
        m.insert(k.into(), Dynamic::from_float(v));
    }
    m.insert("collapsed".into(), Dynamic::from_bool(h.collapsed));
    m.insert("dim".into(), Dynamic::from_int(h.dim as INT));
    m.insert("samples".into(), Dynamic::from_int(h.samples as INT));
    m
}

fn knn_map(r: &KnnReport) -> Map {
    let mut m = Map::new();
    m.insert("accuracy".into(), Dynamic::from_float(r.accuracy));
    m.insert("k".into(), Dynamic::from_int(r.k as INT));
    m.insert(
        "feature_dim".into(),
        Dynamic::from_int(r.feature_dim as INT),
    );
    m.insert("train_size".into(), Dynamic::from_int(r.train_size as INT));
    m.insert("val_size".into(), Dynamic::from_int(r.val_size as INT));
    m.insert("seconds".into(), Dynamic::from_float(r.seconds));
    m
}

fn probe_map(r: &ProbeReport) -> Map {
    let mut m = Map::new();
    m.insert("accuracy".into(), Dynamic::from_float(r.val_accuracy));
    m.insert(
        "train_accuracy".into(),
        Dynamic::from_float(r.train_accuracy),
    );
    m.insert(
        "feature_dim".into(),
        Dynamic::from_int(r.feature_dim as INT),
    );
    m.insert("seconds".into(), Dynamic::from_float(r.seconds));
    m.insert("crops_per_s".into(), Dynamic::from_float(r.crops_per_s));
    m
}

pub fn register(api: &mut Api) {
    func!(api, "pretrain_center_loss", &["m: Model", "crops_dir: String", "cfg: Map"], "Map",
        "Center-loss fg/bg pretraining of m's backbone on `ssod crop` output; cfg keys as CenterLossConfig (epochs, batch_size, lr, center_weight, input_norm, head, out, resume, ...); with out, the state is kept each epoch and resume: true continues it. Returns #{loss, accuracy, seconds, images_seen (per epoch), best_accuracy, best_epoch, checkpoint, samples_per_s, steps, health, warnings}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_center_loss", resumable(cfg))?;
            let crops = lift(CropSet::load(&output_path(dir)))?;
            Ok(report_map(&lift(pretrain_center_loss(&m.0, &crops, &cfg))?))
        });
    func!(api, "pretrain_patch_ssl", &["m: Model", "frames_dir: String", "cfg: Map"], "Map",
        "Patch-contrastive SSL of m's backbone on a folder of frames; cfg keys as PatchSslConfig (patch_size, loss, temperature, negative_sampler, bn_mode, augment_per, out, resume, ...); with out, the state is kept each epoch and resume: true continues it. Returns #{loss, pos_cos, neg_cos, seconds, images_seen (per epoch), checkpoint, samples_per_s, steps, health, warnings}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_patch_ssl", resumable(cfg))?;
            let frames = lift(FrameSet::load(&output_path(dir)))?;
            Ok(report_map(&lift(pretrain_patch_ssl(&m.0, &frames, &cfg))?))
        });
    func!(api, "pretrain_custom", &["m: Model", "frames_dir: String", "cfg: Map", "loss: Fn(za, zp, zn)"], "Map",
        "Patch SSL with a loss written in Rhai: loss(anchors [B,D], positives [Kp·B,D], negatives [Kn·B,D]) -> one-element Tensor (rows k-major). cfg as pretrain_patch_ssl. Returns the same map.",
        |ctx: NativeCallContext, m: Model, dir: &str, cfg: Map, f: FnPtr| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_custom", resumable(cfg))?;
            let frames = lift(FrameSet::load(&output_path(dir)))?;
            let mut loss_fn = |a: &Tensor, p: &Tensor, n: &Tensor| -> crate::Result<Tensor> {
                let out = f
                    .call_within_context::<Dynamic>(&ctx, (a.clone(), p.clone(), n.clone()))
                    .map_err(|e| crate::Error::Msg(format!("pretrain_custom: the loss function failed: {e}")))?;
                let type_name = out.type_name().to_string();
                out.try_cast::<Tensor>().ok_or_else(|| {
                    crate::Error::Msg(format!("pretrain_custom: the loss function returned {type_name}, expected a Tensor"))
                })
            };
            Ok(report_map(&lift(pretrain_patch_ssl_with_loss(&m.0, &frames, &cfg, Some(&mut loss_fn)))?))
        });
    func!(api, "pretrain_masked", &["m: Model", "images_dir: String", "cfg: Map"], "Map",
        "SparK-style masked autoencoding of m's backbone on a folder of images (docs/pretraining.md): 32 px patches masked (mask_ratio 0.6), sparse backbone, mask tokens + light decoder, MSE on masked patches. cfg: the common SSL keys (seed, epochs, batch_size, lr, weight_decay, schedule, image_size, max_steps_per_epoch, out, resume, device, precision, workers, health) and mask_ratio, decoder_width, crop_scale (RandomResizedCrop, SparK 0.67..1; () for the whole image), crop_ratio, hflip_prob, input_norm. Returns #{loss, checkpoint, samples_per_s, steps, health, ...}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_masked", resumable(cfg))?;
            let images = lift(FrameSet::load(&output_path(dir)))?;
            let r = lift(crate::pretrain::pretrain_masked(&m.0, &images, &cfg))?;
            let mut map = report_map(&r);
            let health = serde_json::to_value(&r.health).map_err(|e| script_err(format!("pretrain_masked: {e}")))?;
            let health: Dynamic = serde_json::from_value(health).map_err(|e| script_err(format!("pretrain_masked: {e}")))?;
            map.entry("health".into()).or_insert(health);
            Ok(map)
        });
    func!(api, "linear_probe", &["m: Model", "crops_dir: String", "cfg: Map"], "Map",
        "Frozen backbone (GAP of C5) + logistic regression on fg/bg crops; cfg keys as ProbeConfig. Returns #{accuracy, train_accuracy, feature_dim, seconds, crops_per_s}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("linear_probe", cfg)?;
            let crops = lift(CropSet::load(&output_path(dir)))?;
            Ok(probe_map(&lift(linear_probe(&m.0, &crops, &cfg))?))
        });
    func!(api, "pretrain_dense", &["m: Model", "images_dir: String", "cfg: Map"], "Map",
        "Dense contrast (DenseCL) of m's backbone, and with neck: true its PAFPN, on any image folder; cfg: the common SSL keys (seed, epochs, batch_size, lr, image_size, out, resume, device, health, ...) and DenseKeys (matching, temperature, global_weight, queries_per_image, dim, neck, crop_scale, ...). Returns #{loss, checkpoint, samples_per_s, steps, health}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_dense", resumable(cfg))?;
            let images = lift(FrameSet::load(&output_path(dir)))?;
            Ok(report_map(&lift(crate::pretrain::dense::pretrain_dense(&m.0, &images, &cfg))?))
        });
    func!(api, "load_backbone", &["m: Model", "path: String", "opts: Map"], "i64",
        "load_backbone with options: #{ neck: true } loads the PAFPN's neck too (every backbone.* tensor: a pretrain_dense checkpoint with neck: true, or a detector's weights), failing when the file holds no neck. Returns the number of tensors loaded.",
        |m: &mut Model, p: &str, opts: Map| -> ScriptResult<INT> {
            let mut neck = false;
            for (k, v) in opts {
                match (k.as_str(), v.as_bool()) {
                    ("neck", Ok(b)) => neck = b,
                    ("neck", Err(t)) => return Err(script_err(format!("load_backbone: `neck` must be a bool, got {t}"))),
                    (other, _) => return Err(script_err(format!("load_backbone: unknown option `{other}` (known: neck)"))),
                }
            }
            let r = lift(crate::pretrain::load_backbone_with(&m.0, p.as_ref(), neck))?;
            if neck {
                println!("load_backbone: {} tensors, {} of them the neck's, from {p}", r.loaded, r.neck_loaded);
            }
            Ok(r.loaded as INT)
        });
    func!(api, "pretrain_simsiam", &["m: Model", "images_dir: String", "cfg: Map"], "Map",
        "SimSiam (two views, predictor, stop-gradient) on a folder of frames or images; cfg: the common SSL keys (seed, epochs, batch_size, lr, weight_decay, schedule, image_size, max_steps_per_epoch, out, resume, device, precision, workers, health) and proj_dim, pred_hidden, views, input_norm. Returns the report map with the last epoch's health.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_simsiam", resumable(cfg))?;
            let images = lift(FrameSet::load(&output_path(dir)))?;
            Ok(report_map(&lift(pretrain_simsiam(&m.0, &images, &cfg))?))
        });
    func!(api, "pretrain_temporal", &["m: Model", "frames_dir: String", "cfg: Map"], "Map",
        "Temporal contrast on `ssod frames` / `ssod synth` frames (video = folder, time = frame number in the name): positives gap[0]..=gap[1] frames apart, negatives other videos or beyond far_gap; objective \"dense\" (default: dense contrast between the two frames' views, keys in the `dense` map: dim, temperature, global_weight, matching, queries_per_image, neck, bn_momentum) or \"global\" (InfoNCE of whole-view embeddings: temperature, proj_hidden, proj_dim); cfg: the common SSL keys and gap, far_gap, objective, dense, temperature, proj_hidden, proj_dim, views, input_norm. Returns the report map.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("pretrain_temporal", resumable(cfg))?;
            let frames = lift(TimedFrames::load(&output_path(dir)))?;
            Ok(report_map(&lift(pretrain_temporal(&m.0, &frames, &cfg))?))
        });
    func!(api, "knn_probe", &["m: Model", "crops_dir: String", "cfg: Map"], "Map",
        "Frozen backbone (GAP of C5) + cosine k-NN on fg/bg crops, linear_probe's split; cfg keys as KnnConfig (k, seed, input_size, val_fraction, ...). Returns #{accuracy, k, feature_dim, train_size, val_size, seconds}.",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("knn_probe", cfg)?;
            let crops = lift(CropSet::load(&output_path(dir)))?;
            Ok(knn_map(&lift(knn_probe(&m.0, &crops, &cfg))?))
        });
    func!(api, "embedding_health", &["m: Model", "images_dir: String", "cfg: Map"], "Map",
        "Health of the backbone's L2-normalised GAP(C5) embeddings on a folder of images: per-dimension std (std_mean, std_min, std_ratio = std·√d), effective_rank, alignment, uniformity, collapsed; cfg keys as HealthConfig (samples, image_size, seed, collapse_below, views, precise_bn: BN statistics recomputed on the sampled images and restored after, default true, ...).",
        |m: &mut Model, dir: &str, cfg: Map| -> ScriptResult<Map> {
            let cfg = config_from_map("embedding_health", cfg)?;
            let images = lift(FrameSet::load(&output_path(dir)))?;
            Ok(health_map(&lift(embedding_health(&m.0, &images, &cfg))?))
        });
    func!(api, "load_backbone", &["m: Model", "path: String"], "i64",
        "Load the backbone.backbone.* tensors (weights and BN statistics) of a pretraining checkpoint; fails naming any tensor whose shape differs. Returns the number loaded.",
        |m: &mut Model, p: &str| -> ScriptResult<INT> {
            Ok(lift(load_backbone(&m.0, p.as_ref()))?.loaded as INT)
        });
}
