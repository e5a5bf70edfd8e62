//! Cache codecs of the built-in script types: `Tensor` (safetensors) and `Model` (its config
//! fields plus its weights file). They live under `api` because `Model` is private to it.

use std::sync::Arc;

use rhai::Dynamic;
use serde_json::{json, Value};

use crate::models::{YoloX, YoloXConfig};
use crate::script::api::models::Model;
use crate::script::cache::{CacheCodec, ObjectStore};
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::{Error, Result, Tensor};

/// Hand the built-in codecs to `add` (the cache registry calls this once).
pub fn register_builtin_codecs(add: &mut dyn FnMut(Arc<dyn CacheCodec>)) {
    add(Arc::new(TensorCodec));
    add(Arc::new(ModelCodec));
}

fn field<'a>(data: &'a Value, key: &str, codec: &str) -> Result<&'a Value> {
    data.get(key)
        .ok_or_else(|| Error::Msg(format!("cache: {codec} entry lacks `{key}`")))
}

fn str_field(data: &Value, key: &str, codec: &str) -> Result<String> {
    field(data, key, codec)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Msg(format!("cache: {codec} entry `{key}` is not a string")))
}

struct TensorCodec;

impl CacheCodec for TensorCodec {
    fn name(&self) -> &str {
        "Tensor"
    }
    fn handles(&self, v: &Dynamic) -> bool {
        v.is::<Tensor>()
    }
    fn save(&self, v: &Dynamic, objects: &ObjectStore) -> Result<Value> {
        let t = v
            .read_lock::<Tensor>()
            .ok_or_else(|| Error::Msg("cache: not a Tensor".into()))?
            .clone();
        let file = objects.put_with("safetensors", |p| {
            write_safetensors(p, [("t", &t)], SaveDtype::F32, None)
        })?;
        Ok(json!({ "file": file, "requires_grad": t.requires_grad() }))
    }
    fn load(&self, data: &Value, objects: &ObjectStore) -> Result<Dynamic> {
        let path = objects.path(&str_field(data, "file", "Tensor")?)?;
        let mut f = read_safetensors(&path)?;
        let t = f
            .tensors
            .remove("t")
            .ok_or_else(|| Error::format(path.display(), "no tensor `t`"))?;
        let rg = data
            .get("requires_grad")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Dynamic::from(t.with_requires_grad(rg)))
    }
}

struct ModelCodec;

impl CacheCodec for ModelCodec {
    fn name(&self) -> &str {
        "Model"
    }
    fn handles(&self, v: &Dynamic) -> bool {
        v.is::<Model>()
    }
    fn save(&self, v: &Dynamic, objects: &ObjectStore) -> Result<Value> {
        let m = v
            .read_lock::<Model>()
            .ok_or_else(|| Error::Msg("cache: not a Model".into()))?
            .clone();
        let weights = objects.put_with("safetensors", |p| m.0.save(p))?;
        let c = &m.0.config;
        Ok(json!({
            "kind": "yolox",
            "depth": c.depth.to_bits(),
            "width": c.width.to_bits(),
            "depthwise": c.depthwise,
            "num_classes": c.num_classes,
            "seed": c.seed,
            "training": m.0.store.is_training(),
            "weights": weights,
        }))
    }
    fn load(&self, data: &Value, objects: &ObjectStore) -> Result<Dynamic> {
        let bits = |k: &str| -> Result<f64> {
            field(data, k, "Model")?
                .as_u64()
                .map(f64::from_bits)
                .ok_or_else(|| Error::Msg(format!("cache: Model entry `{k}` is not a number")))
        };
        let uint = |k: &str| -> Result<u64> {
            field(data, k, "Model")?
                .as_u64()
                .ok_or_else(|| Error::Msg(format!("cache: Model entry `{k}` is not a number")))
        };
        let config = YoloXConfig {
            depth: bits("depth")?,
            width: bits("width")?,
            depthwise: field(data, "depthwise", "Model")?
                .as_bool()
                .unwrap_or(false),
            num_classes: uint("num_classes")? as usize,
            seed: uint("seed")?,
        };
        let model = YoloX::new(config)?;
        model.load(&objects.path(&str_field(data, "weights", "Model")?)?)?;
        model.set_training(
            data.get("training")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        );
        Ok(Dynamic::from(Model(Arc::new(model))))
    }
}
