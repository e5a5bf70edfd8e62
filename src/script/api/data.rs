//! Data in Rhai: the generated FloW-like set, COCO and VOC readers, crops and frames.
//! Datasets are the `Dataset` type (a shared, read-only COCO dataset with its image folder).

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Dynamic, Map, INT};

use super::Api;
use crate::data::convert::ConvertOptions;
use crate::data::crops::{write_crops, CropOptions};
use crate::data::dataset::CocoDataset;
use crate::data::frames::{extract_frames, FrameSelection, FramesOptions};
use crate::data::lint::{lint, source_from_coco};
use crate::data::stats::summarize;
use crate::data::synth::{generate, SynthConfig};
use crate::data::voc::{read_flow_split, read_labels};
use crate::script::api::notebook::output_path;
use crate::script::cache::{register_codec, CacheCodec, ObjectStore};
use crate::script::convert::{lift, script_err, Opts, ScriptResult};

/// A dataset handle (cheap to clone).
#[derive(Clone)]
pub struct Dataset(pub Arc<CocoDataset>);

/// Notebook cache: a dataset is its COCO json plus the image folder it points at (the images
/// themselves are not copied; they stay where they are).
struct DatasetCodec;

impl CacheCodec for DatasetCodec {
    fn name(&self) -> &str {
        "Dataset"
    }
    fn handles(&self, v: &Dynamic) -> bool {
        v.is::<Dataset>()
    }
    fn save(&self, v: &Dynamic, _objects: &ObjectStore) -> crate::Result<serde_json::Value> {
        let d = v
            .clone()
            .try_cast::<Dataset>()
            .ok_or_else(|| crate::Error::Msg("Dataset codec: not a Dataset".into()))?;
        let json = serde_json::to_value(&*d.0)
            .map_err(|e| crate::Error::Msg(format!("Dataset codec: {e}")))?;
        Ok(serde_json::json!({ "coco": json, "image_dir": d.0.image_dir.display().to_string() }))
    }
    fn load(&self, data: &serde_json::Value, _objects: &ObjectStore) -> crate::Result<Dynamic> {
        let mut ds: CocoDataset = serde_json::from_value(data["coco"].clone())
            .map_err(|e| crate::Error::Msg(format!("Dataset codec: {e}")))?;
        ds.image_dir = data["image_dir"].as_str().unwrap_or_default().into();
        // The images are not in the cache: if they are gone (an earlier run folder deleted),
        // refuse, so the notebook recomputes the cell instead of training on nothing.
        if let Some(first) = ds.images.first() {
            let path = ds.image_path(first);
            if !path.exists() {
                return Err(crate::Error::Msg(format!(
                    "Dataset codec: image {} no longer exists",
                    path.display()
                )));
            }
        }
        Ok(Dynamic::from(Dataset(Arc::new(ds))))
    }
}

fn size_opt(op: &str, s: &str) -> ScriptResult<(u32, u32)> {
    let parts: Vec<&str> = s.split('x').collect();
    match parts.as_slice() {
        [w, h] => match (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
            _ => Err(script_err(format!("{op}: size `{s}` is not WIDTHxHEIGHT"))),
        },
        _ => Err(script_err(format!("{op}: size `{s}` is not WIDTHxHEIGHT"))),
    }
}

fn synth(o: Map) -> ScriptResult<Map> {
    let opts = Opts::new(
        "synth",
        &o,
        &[
            "out",
            "train",
            "test",
            "size",
            "videos",
            "frames_per_video",
            "seed",
        ],
    )?;
    let out: PathBuf = output_path(
        &o.get("out")
            .map(|d| d.to_string())
            .ok_or_else(|| script_err("synth: `out` (a folder) is required"))?,
    );
    let (width, height) = size_opt(
        "synth",
        &o.get("size")
            .map(|d| d.to_string())
            .unwrap_or_else(|| "1280x720".into()),
    )?;
    let cfg = SynthConfig {
        out,
        train: opts.usize("train", 1200)?,
        test: opts.usize("test", 800)?,
        width,
        height,
        videos: opts.usize("videos", 4)?,
        frames_per_video: opts.usize("frames_per_video", 250)?,
        seed: opts.usize("seed", 1)? as u64,
    };
    let summary = lift(generate(&cfg))?;
    let mut m = Map::new();
    m.insert(
        "train".into(),
        Dynamic::from(Dataset(Arc::new(summary.train))),
    );
    m.insert(
        "test".into(),
        Dynamic::from(Dataset(Arc::new(summary.test))),
    );
    m.insert(
        "frames".into(),
        Dynamic::from(cfg.out.join("unlabeled").display().to_string()),
    );
    m.insert(
        "video_frames".into(),
        Dynamic::from(summary.video_frames as INT),
    );
    m.insert("root".into(), Dynamic::from(cfg.out.display().to_string()));
    Ok(m)
}

pub fn register(api: &mut Api) {
    api.engine.register_type_with_name::<Dataset>("Dataset");
    register_codec(Arc::new(DatasetCodec));
    register_loader(api);
    api.engine.register_fn("to_string", |d: &mut Dataset| {
        format!(
            "Dataset({} images, {} objects)",
            d.0.images.len(),
            d.0.annotations.len()
        )
    });
    api.engine
        .register_get("num_images", |d: &mut Dataset| d.0.images.len() as INT);
    api.engine.register_get("num_objects", |d: &mut Dataset| {
        d.0.annotations.len() as INT
    });

    func!(api, "synth", &["opts: Map"], "Map",
        "Generate a FloW-like set; opts: out (folder, required), train (1200), test (800), size (\"1280x720\"), videos (4), frames_per_video (250), seed (1). Returns #{train, test, frames, root}.",
        synth);
    func!(
        api,
        "coco",
        &["path: String"],
        "Dataset",
        "Read a COCO json; images are looked up next to it.",
        |p: &str| -> ScriptResult<Dataset> {
            Ok(Dataset(Arc::new(lift(CocoDataset::read(p.as_ref()))?)))
        }
    );
    func!(
        api,
        "coco",
        &["path: String", "images: String"],
        "Dataset",
        "Read a COCO json whose images are in `images`.",
        |p: &str, images: &str| -> ScriptResult<Dataset> {
            let mut ds = lift(CocoDataset::read(p.as_ref()))?;
            ds.image_dir = images.into();
            Ok(Dataset(Arc::new(ds)))
        }
    );
    func!(api, "voc", &["root: String", "split: String"], "Dataset",
        "Read one split (\"training\" | \"test\") of a FloW-layout VOC set; classes from ROOT/labels.txt.",
        |root: &str, split: &str| -> ScriptResult<Dataset> {
            let root = std::path::Path::new(root);
            let labels = lift(read_labels(&root.join("labels.txt")))?;
            let (ds, _) = lift(read_flow_split(root, split, &labels, &ConvertOptions::default()))?;
            Ok(Dataset(Arc::new(ds)))
        });
    func!(
        api,
        "summary",
        &["d: Dataset"],
        "String",
        "Images, objects, objects per image, the COCO size histogram and the size buckets of sqrt(w·h) (<8, 8-16, 16-32, 32-96, >=96 px).",
        |d: &mut Dataset| summarize(&d.0).to_string()
    );
    func!(
        api,
        "lint",
        &["d: Dataset"],
        "Map",
        "The tiny-object lint in original pixels: #{images, objects, at_size, size_buckets: [#{bucket, objects, share}] (<8, 8-16, 16-32, 32-96, >=96 px of sqrt(w·h)), per_class: [#{class, objects, size_buckets}], problems: [#{kind, file, detail}]}, as `ssod stats --json`.",
        |d: &mut Dataset| -> ScriptResult<Map> { lint_map(d, None) }
    );
    func!(
        api,
        "lint",
        &["d: Dataset", "opts: Map"],
        "Map",
        "The tiny-object lint; opts: at_size (sizes at this training size, letterbox scale min(N/W, N/H) per image; default: original pixels).",
        |d: &mut Dataset, o: Map| -> ScriptResult<Map> {
            let opts = Opts::new("lint", &o, &["at_size"])?;
            let at_size = match o.get("at_size") {
                None => None,
                Some(_) => match u32::try_from(opts.int("at_size", 0)?) {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(script_err("lint: at_size must be a positive integer")),
                },
            };
            lint_map(d, at_size)
        }
    );
    func!(
        api,
        "subset",
        &["d: Dataset", "n: i64"],
        "Dataset",
        "The first n images and their annotations.",
        |d: &mut Dataset, n: INT| -> ScriptResult<Dataset> {
            let n = usize::try_from(n)
                .map_err(|_| script_err(format!("subset: n must be >= 0, got {n}")))?;
            let mut ds = (*d.0).clone();
            ds.images.truncate(n);
            let keep: std::collections::HashSet<u64> = ds.images.iter().map(|i| i.id).collect();
            ds.annotations.retain(|a| keep.contains(&a.image_id));
            Ok(Dataset(Arc::new(ds)))
        }
    );
    func!(api, "crops", &["d: Dataset", "out: String", "opts: Map"], "Map",
        "Foreground/background crops for center-loss pretraining (docs/the-study.md); opts: seed (100), base_size (224), strict_background (false). Writes pos/, neg/, crops.csv.",
        |d: &mut Dataset, out: &str, o: Map| -> ScriptResult<Map> {
            let opts = Opts::new("crops", &o, &["seed", "base_size", "strict_background"])?;
            let def = CropOptions::default();
            let co = CropOptions {
                seed: opts.usize("seed", def.seed as usize)? as u64,
                base_size: opts.usize("base_size", def.base_size as usize)? as u32,
                strict_background: opts.bool("strict_background", def.strict_background)?,
                ..def
            };
            let out = output_path(out);
            let r = lift(write_crops(&d.0, &out, &co))?;
            let mut m = Map::new();
            m.insert("dir".into(), Dynamic::from(out.display().to_string()));
            m.insert("positives".into(), Dynamic::from(r.positives as INT));
            m.insert("negatives".into(), Dynamic::from(r.negatives as INT));
            Ok(m)
        });
    func!(api, "frames", &["input: String", "out: String", "opts: Map"], "Map",
        "Unlabeled frames from a video (through ffmpeg) or an image folder (docs/the-study.md); opts: keep_prob (0.05) or every (N), seed (0), resize (\"1280x720\").",
        |input: &str, out: &str, o: Map| -> ScriptResult<Map> {
            let opts = Opts::new("frames", &o, &["keep_prob", "every", "seed", "resize"])?;
            let selection = match o.get("every") {
                Some(_) => FrameSelection::Every(opts.usize("every", 1)?.max(1)),
                None => FrameSelection::KeepProb(opts.float("keep_prob", 0.05)?),
            };
            let resize = match o.get("resize") {
                Some(r) => Some(size_opt("frames", &r.to_string())?),
                None => None,
            };
            let fo = FramesOptions { selection, seed: opts.usize("seed", 0)? as u64, resize, ..FramesOptions::default() };
            let out = output_path(out);
            let r = lift(extract_frames(input.as_ref(), &out, &fo))?;
            let mut m = Map::new();
            m.insert("dir".into(), Dynamic::from(out.display().to_string()));
            m.insert("frames_read".into(), Dynamic::from(r.frames_read as INT));
            m.insert("kept".into(), Dynamic::from(r.kept.len() as INT));
            Ok(m)
        });
}

/// [`lint`] of a dataset as a Rhai map (the shape of `ssod stats --json`).
fn lint_map(d: &Dataset, at_size: Option<u32>) -> ScriptResult<Map> {
    // Class problems name the folder the dataset was read from.
    let class_file = match d.0.image_dir.display().to_string() {
        dir if dir.is_empty() => "dataset".to_string(),
        dir => dir,
    };
    let report = lint(&source_from_coco(&d.0, &class_file), at_size);
    rhai::serde::to_dynamic(&report)?
        .try_cast::<Map>()
        .ok_or_else(|| script_err("lint: the report is not a map"))
}

/// A training loader in Rhai (the YOLOX augmentation pipeline over a dataset).
#[derive(Clone)]
pub struct ScriptLoader(pub Arc<crate::data::loader::Loader>);

pub fn register_loader(api: &mut Api) {
    use crate::train::trainer::loader_config;
    api.engine.register_type_with_name::<ScriptLoader>("Loader");
    func!(api, "loader", &["d: Dataset", "cfg: Map"], "Loader",
        "A seeded YOLOX training loader over a dataset; cfg: any TrainConfig key (batch_size, input_size, mosaic_prob, ...), workers (2), cache (false).",
        |d: Dataset, cfg: Map| -> ScriptResult<ScriptLoader> {
            let config = super::train::recipe_from_map("loader", &cfg, &["workers", "cache"])?;
            let workers = cfg.get("workers").and_then(|w| w.as_int().ok()).unwrap_or(2).max(1) as usize;
            let cache = cfg.get("cache").and_then(|c| c.as_bool().ok()).unwrap_or(false);
            let l = lift(crate::data::loader::Loader::new(&d.0, loader_config(&config, false, workers, cache)))?;
            Ok(ScriptLoader(Arc::new(l)))
        });
    api.engine
        .register_get("batches_per_epoch", |l: &mut ScriptLoader| {
            l.0.batches_per_epoch() as INT
        });
    func!(api, "batch", &["l: Loader", "epoch: i64", "index: i64"], "Map",
        "Batch `index` of `epoch` (the same whatever the worker count): #{images [B,3,H,W] BGR 0..255, labels [B,L,5] (class, cx, cy, w, h), num_labels, image_ids}.",
        |l: &mut ScriptLoader, epoch: INT, index: INT| -> ScriptResult<Map> {
            let (e, i) = (usize::try_from(epoch).map_err(|_| script_err("batch: epoch must be >= 0"))?, usize::try_from(index).map_err(|_| script_err("batch: index must be >= 0"))?);
            if i >= l.0.batches_per_epoch() {
                return Err(script_err(format!("batch: index {i} is past the {} batches of an epoch", l.0.batches_per_epoch())));
            }
            let (b, _) = lift(l.0.build_batch(e, i))?;
            let mut m = Map::new();
            m.insert("images".into(), Dynamic::from(lift(crate::Tensor::from_vec(b.images.clone(), [b.batch, 3, b.height, b.width]))?));
            m.insert("labels".into(), Dynamic::from(lift(crate::Tensor::from_vec(b.labels.clone(), [b.batch, b.max_labels, 5]))?));
            m.insert("num_labels".into(), Dynamic::from_array(b.num_labels.iter().map(|&n| Dynamic::from(n as INT)).collect()));
            m.insert("image_ids".into(), Dynamic::from_array(b.image_ids.iter().map(|&n| Dynamic::from(n as INT)).collect()));
            Ok(m)
        });
}
