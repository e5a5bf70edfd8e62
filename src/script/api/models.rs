//! Models in Rhai: `yolox("s", #{ classes: 1 })`, forward, save/load, parameter counts.

use std::sync::Arc;

use rhai::{Map, INT};

use super::Api;
use crate::models::{LoadOptions, YoloX, YoloXConfig};
use crate::script::convert::{lift, script_err, Opts, ScriptResult};
use crate::Tensor;

/// A model handle (cheap to clone; clones share weights).
#[derive(Clone)]
pub struct Model(pub Arc<YoloX>);

pub fn register(api: &mut Api) {
    api.engine.register_type_with_name::<Model>("Model");
    api.engine.register_fn("to_string", |m: &mut Model| {
        format!(
            "YOLOX(depth {}, width {}, classes {}, {} params)",
            m.0.config.depth,
            m.0.config.width,
            m.0.config.num_classes,
            m.0.num_params()
        )
    });
    func!(api, "yolox", &["variant: String", "opts: Map"], "Model",
        "A YOLOX detector: variant nano|tiny|s|m|l|x; opts: classes (80), seed (0), width/depth (override the variant).",
        |variant: &str, o: Map| -> ScriptResult<Model> {
            let opts = Opts::new("yolox", &o, &["classes", "seed", "width", "depth"])?;
            let classes = opts.usize("classes", 80)?;
            let mut cfg = lift(YoloXConfig::variant(variant, classes))?;
            cfg.seed = opts.usize("seed", 0)? as u64;
            cfg.width = opts.float("width", cfg.width)?;
            cfg.depth = opts.float("depth", cfg.depth)?;
            if !(cfg.width > 0.0 && cfg.depth > 0.0) {
                return Err(script_err("yolox: width and depth must be > 0"));
            }
            Ok(Model(Arc::new(lift(YoloX::new(cfg))?)))
        });
    func!(
        api,
        "forward",
        &["m: Model", "images: Tensor"],
        "Tensor",
        "Raw outputs [B, A, 5 + C] (reg 4, obj 1, cls C) for images [B, 3, H, W], BGR 0..255.",
        |m: &mut Model, x: Tensor| -> ScriptResult<Tensor> { lift(m.0.forward(&x)) }
    );
    func!(
        api,
        "set_training",
        &["m: Model", "on: bool"],
        "()",
        "Training mode (batch statistics) or eval mode (running statistics).",
        |m: &mut Model, on: bool| m.0.set_training(on)
    );
    func!(
        api,
        "num_params",
        &["m: Model"],
        "i64",
        "Number of trainable parameters.",
        |m: &mut Model| m.0.num_params() as INT
    );
    func!(
        api,
        "gflops",
        &["m: Model", "size: i64"],
        "f64",
        "GFLOPs at a square input size (YOLOX's accounting).",
        |m: &mut Model, s: INT| m.0.gflops(s.max(0) as usize, s.max(0) as usize)
    );
    func!(
        api,
        "save",
        &["m: Model", "path: String"],
        "()",
        "Save weights and buffers as safetensors (official names); refuses to overwrite.",
        |m: &mut Model, p: &str| -> ScriptResult<()> {
            if std::path::Path::new(p).exists() {
                return Err(script_err(format!("save: `{p}` already exists")));
            }
            lift(m.0.save(p.as_ref()))
        }
    );
    func!(
        api,
        "load",
        &["m: Model", "path: String"],
        "i64",
        "Strict load of model weights: safetensors (official names) or a PyTorch .pth (an official YOLOX release, a checkpoint's `model` entry or a bare state dict); a training state's EMA weights are taken, with a note. Returns the number of tensors loaded.",
        |m: &mut Model, p: &str| -> ScriptResult<INT> {
            let loaded = m.0.load(p.as_ref()).map_err(partial_load_hint)?;
            if loaded.source.is_training_state() {
                println!("load: {p} is a training state; loaded {}", loaded.source.describe());
            }
            Ok(loaded.tensors as INT)
        }
    );
    func!(
        api,
        "load",
        &["m: Model", "path: String", "opts: Map"],
        "Map",
        "Load weights with options: skip (prefixes left as they are, e.g. [\"head.cls_preds\"]), strict (default true; false loads every tensor whose name and shape match and reports the rest). Prints a short summary; returns #{ loaded, source, skipped, missing, misshaped, unexpected } (name lists).",
        |m: &mut Model, p: &str, o: Map| -> ScriptResult<Map> {
            let opts = Opts::new("load", &o, &["strict", "skip"])?;
            let options = LoadOptions {
                strict: opts.bool("strict", true)?,
                skip: string_list("load", "skip", o.get("skip"))?,
            };
            let loaded = m.0.load_with(p.as_ref(), &options).map_err(partial_load_hint)?;
            println!("load: {p}: {}", loaded.summary());
            let names = |v: &[String]| -> rhai::Array {
                v.iter().map(|s| rhai::Dynamic::from(s.clone())).collect()
            };
            let misshaped: Vec<String> = loaded.misshaped.iter().map(|(n, _, _)| n.clone()).collect();
            let mut out = Map::new();
            out.insert("loaded".into(), (loaded.tensors as INT).into());
            out.insert("source".into(), loaded.source.describe().into());
            out.insert("skipped".into(), names(&loaded.skipped).into());
            out.insert("missing".into(), names(&loaded.missing).into());
            out.insert("misshaped".into(), names(&misshaped).into());
            out.insert("unexpected".into(), names(&loaded.unexpected).into());
            Ok(out)
        }
    );
    func!(
        api,
        "parameters",
        &["m: Model"],
        "Array",
        "The trainable tensors.",
        |m: &mut Model| -> rhai::Array {
            m.0.store
                .parameters()
                .into_iter()
                .map(|e| rhai::Dynamic::from(e.tensor))
                .collect()
        }
    );
}

/// A string or an array of strings (an option such as `skip`); absent: empty.
fn string_list(op: &str, key: &str, v: Option<&rhai::Dynamic>) -> ScriptResult<Vec<String>> {
    let bad = |d: &rhai::Dynamic| {
        script_err(format!(
            "{op}: option `{key}` must be a string or an array of strings, got {d}"
        ))
    };
    match v {
        None => Ok(Vec::new()),
        Some(d) if d.is_string() => Ok(vec![d.clone().into_string().map_err(|_| bad(d))?]),
        Some(d) if d.is_array() => d
            .clone()
            .into_array()
            .map_err(|_| bad(d))?
            .into_iter()
            .map(|x| x.clone().into_string().map_err(|_| bad(&x)))
            .collect(),
        Some(d) => Err(bad(d)),
    }
}

/// A strict load's mismatch error, with how to load what matches.
fn partial_load_hint(e: crate::Error) -> Box<rhai::EvalAltResult> {
    let msg = e.to_string();
    if msg.contains("does not match the model") {
        script_err(format!(
            "{msg}; `load(m, path, #{{ strict: false, skip: [prefixes] }})` loads what matches"
        ))
    } else {
        script_err(msg)
    }
}
