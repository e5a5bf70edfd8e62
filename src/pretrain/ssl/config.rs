//! The config keys every self-supervised method shares ([`SslCommon`]) and a method's full config
//! ([`SslConfig`]): the common keys and the method's own keys side by side in one flat map, so the
//! same map (`seed`, `epochs`, `lr`, ...) can be handed to every method.
//!
//! serde's `flatten` does not combine with `deny_unknown_fields`, so [`SslConfig`] deserialises
//! by hand: the keys named in [`COMMON_KEYS`] go to [`SslCommon`], every other key to the
//! method's struct, whose `deny_unknown_fields` then names a key that neither knows.

use std::path::PathBuf;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::pretrain::device::DeviceConfig;
use crate::pretrain::health::HealthConfig;
use crate::pretrain::{check_positive, PretrainSchedule};
use crate::train::config::Precision;
use crate::{Error, Result};

/// The keys of [`SslCommon`] (a key in this list goes to the common part).
pub const COMMON_KEYS: &[&str] = &[
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "schedule",
    "image_size",
    "max_steps_per_epoch",
    "out",
    "resume",
    "device",
    "precision",
    "workers",
    "health",
];

/// The keys every self-supervised method has (docs/pretraining.md, "Common keys").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SslCommon {
    pub seed: u64,
    pub epochs: usize,
    /// Images (or anchor frames) per step.
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: PretrainSchedule,
    /// `[width, height]` the network input has (views and frames are resized to it).
    pub image_size: [usize; 2],
    pub max_steps_per_epoch: Option<usize>,
    /// Folder for `<method>_last.safetensors`, `pretrain_state.safetensors`, `epochs.csv` and
    /// `loss.png`; None writes nothing.
    pub out: Option<PathBuf>,
    /// Continue the run whose state is in `out` (`epochs` may be raised).
    pub resume: bool,
    /// `cpu`, `cuda` or `auto` (the Rhai functions default to the notebook's `--device`).
    pub device: String,
    /// Matrix products on the GPU: `f32`, `tf32` or `bf16`.
    pub precision: Precision,
    /// Threads that decode and augment batches ahead of the step.
    pub workers: usize,
    /// [`crate::pretrain::health::embedding_health`] after every epoch: a map of
    /// [`HealthConfig`] keys, `true` (the defaults) or `false` (skip).
    #[serde(deserialize_with = "health_setting", serialize_with = "health_json")]
    pub health: Option<HealthConfig>,
}

impl Default for SslCommon {
    fn default() -> Self {
        SslCommon {
            seed: 0,
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 1e-4,
            schedule: PretrainSchedule::Cos,
            image_size: [224, 224],
            max_steps_per_epoch: None,
            out: None,
            resume: false,
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
            health: Some(HealthConfig::default()),
        }
    }
}

/// `health`: `false` → None, `true` → the defaults, a map → its keys (unknown ones named).
pub(crate) fn health_setting<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<HealthConfig>, D::Error> {
    use serde::de::Error as _;
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(true) => Ok(Some(HealthConfig::default())),
        serde_json::Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("`health`: {e}"))),
        other => Err(D::Error::custom(format!(
            "`health` must be a map of health keys, true or false, got {other}"
        ))),
    }
}

/// `health` as JSON: the map, or `false`.
pub(crate) fn health_json<S: serde::Serializer>(
    h: &Option<HealthConfig>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match h {
        Some(cfg) => cfg.serialize(s),
        None => s.serialize_bool(false),
    }
}

impl SslCommon {
    /// The `device`, `precision` and `workers` keys.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            device: self.device.clone(),
            precision: self.precision,
            workers: self.workers,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.device_config().validate()?;
        check_positive("epochs", self.epochs)?;
        check_positive("batch_size", self.batch_size)?;
        if let Some(0) = self.max_steps_per_epoch {
            return Err(Error::InvalidArgument(
                "`max_steps_per_epoch` must be >= 1 (or unset)".into(),
            ));
        }
        let [w, h] = self.image_size;
        if w == 0 || h == 0 || !w.is_multiple_of(32) || !h.is_multiple_of(32) {
            return Err(Error::InvalidArgument(format!(
                "`image_size` must be [width, height], multiples of 32 (the backbone's stride), \
                 got [{w}, {h}]"
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "`lr` must be > 0, got {}",
                self.lr
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "`weight_decay` must be >= 0, got {}",
                self.weight_decay
            )));
        }
        if let Some(h) = &self.health {
            h.validate()?;
        }
        Ok(())
    }
}

/// A method's own keys: a serde struct with `deny_unknown_fields` and `default` whose keys
/// do not repeat a common key.
pub trait MethodKeys: Serialize + DeserializeOwned + Default {
    /// The common keys' defaults for this method (e.g. the paper's lr and batch size).
    fn common_defaults() -> SslCommon {
        SslCommon::default()
    }

    /// Check the method's own keys (errors name the key).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// A method's config: the common keys and the method's keys `M` in one flat map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SslConfig<M> {
    #[serde(flatten)]
    pub common: SslCommon,
    #[serde(flatten)]
    pub method: M,
}

impl<M: MethodKeys> Default for SslConfig<M> {
    fn default() -> Self {
        SslConfig {
            common: M::common_defaults(),
            method: M::default(),
        }
    }
}

impl<M: MethodKeys> SslConfig<M> {
    /// Both parts checked.
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        self.method.validate()
    }
}

impl<'de, M: MethodKeys> Deserialize<'de> for SslConfig<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let (given, own): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
            .into_iter()
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        // The method's defaults for the common keys, overlaid with the keys given.
        let mut common = serde_json::to_value(M::common_defaults()).map_err(D::Error::custom)?;
        if let Some(obj) = common.as_object_mut() {
            obj.extend(given);
        }
        let common: SslCommon = serde_json::from_value(common).map_err(D::Error::custom)?;
        let method: M = serde_json::from_value(own.into()).map_err(|e| {
            // The method's error lists its own keys only; the common ones are valid too.
            D::Error::custom(format!("{e} (or a common key: {})", COMMON_KEYS.join(", ")))
        })?;
        Ok(SslConfig { common, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Own {
        width: usize,
    }

    impl MethodKeys for Own {
        fn common_defaults() -> SslCommon {
            SslCommon {
                lr: 0.05,
                ..SslCommon::default()
            }
        }
    }

    #[test]
    fn keys_split_between_the_common_part_and_the_method() {
        let cfg: SslConfig<Own> =
            serde_json::from_str(r#"{"epochs": 3, "width": 7, "health": false}"#).unwrap();
        assert_eq!(cfg.common.epochs, 3);
        assert_eq!(cfg.method.width, 7);
        assert_eq!(cfg.common.health, None);
        // The method's default lr, not the common one.
        assert_eq!(cfg.common.lr, 0.05);
        let cfg: SslConfig<Own> = serde_json::from_str(r#"{"health": {"samples": 9}}"#).unwrap();
        assert_eq!(cfg.common.health.unwrap().samples, 9);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = serde_json::from_str::<SslConfig<Own>>(r#"{"widht": 7}"#).unwrap_err();
        assert!(err.to_string().contains("widht"), "{err}");
        let err =
            serde_json::from_str::<SslConfig<Own>>(r#"{"health": {"sample": 9}}"#).unwrap_err();
        assert!(err.to_string().contains("sample"), "{err}");
    }

    #[test]
    fn the_config_round_trips_through_json() {
        let cfg = SslConfig::<Own> {
            common: SslCommon {
                health: None,
                epochs: 4,
                ..SslCommon::default()
            },
            method: Own { width: 2 },
        };
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["health"], serde_json::Value::Bool(false));
        let back: SslConfig<Own> = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
    }
}
