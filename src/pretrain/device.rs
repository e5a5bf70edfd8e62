//! Where a pretraining run computes: the `device` and `precision` config keys, the stores moved
//! there for the run (and back afterwards), and the per-step statistics kept where the step ran.
//!
//! On CUDA a step queues its work and goes on: the inputs come up through pinned staging
//! (`Tensor::from_vec_on`), every op of the step has a CUDA arm, and the step's loss and
//! cosines are summed on the device and read at most once a second (for the progress line) and
//! at the end of the epoch, so no step waits for the GPU to finish.

use std::time::{Duration, Instant};

use crate::nn::ParamStore;
use crate::ops;
use crate::tensor::{Device, Tensor};
use crate::train::config::Precision;
use crate::{Error, Result};

/// The device keys every pretraining config has (`device`, `precision`, `workers`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    /// `cpu`, `cuda` (an error at once without a usable GPU) or `auto`.
    pub device: String,
    /// Matrix products on the GPU: `f32`, `tf32` or `bf16` (as the detector recipe's key).
    pub precision: Precision,
    /// Threads that decode, resize and augment batches ahead of the step.
    pub workers: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
        }
    }
}

impl DeviceConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.device.as_str(), "cpu" | "cuda" | "auto") {
            return Err(Error::InvalidArgument(format!(
                "`device` must be \"cpu\", \"cuda\" or \"auto\", got {:?}",
                self.device
            )));
        }
        super::check_positive("workers", self.workers)
    }
}

/// The stores of a run on its device; [`DeviceScope::leave`] (or a drop, on errors) moves them
/// back where they were.
pub(crate) struct DeviceScope {
    pub device: Device,
    moved: Vec<(ParamStore, Device)>,
}

impl DeviceScope {
    /// Resolve `cfg.device`, set the GPU up for `cfg.precision`, and move `stores` there.
    pub fn enter(cfg: &DeviceConfig, stores: &[&ParamStore]) -> Result<DeviceScope> {
        let (device, note) = Device::resolve(&cfg.device)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        if device == Device::Cuda {
            cfg.precision.configure_cuda(None)?;
        }
        let mut scope = DeviceScope {
            device,
            moved: Vec::new(),
        };
        for store in stores {
            let from = store
                .entries()
                .first()
                .map_or(Device::Cpu, |e| e.tensor.device());
            store.to_device(device)?;
            scope.moved.push(((*store).clone(), from));
        }
        Ok(scope)
    }

    /// Move the stores back to where they were.
    pub fn leave(mut self) -> Result<()> {
        for (store, from) in self.moved.drain(..) {
            store.to_device(from)?;
        }
        Ok(())
    }
}

impl Drop for DeviceScope {
    fn drop(&mut self) {
        for (store, from) in self.moved.drain(..) {
            if let Err(e) = store.to_device(from) {
                eprintln!("pretraining: could not move the model back to the {from:?}: {e}");
            }
        }
    }
}

/// Sums of per-step scalars (one-element tensors) for the epoch's means. On the CPU each value is
/// read at once into an f64 sum; on CUDA the values are summed on the device (see the module
/// docs).
pub(crate) struct EpochMeans {
    device: Device,
    host: Vec<f64>,
    on_device: Vec<Option<Tensor>>,
    steps: usize,
    last_read: Instant,
}

/// How often a CUDA run reads its running loss for the progress line.
const PROGRESS_READ_EVERY: Duration = Duration::from_secs(1);

impl EpochMeans {
    pub fn new(count: usize, device: Device) -> EpochMeans {
        EpochMeans {
            device,
            host: vec![0.0; count],
            on_device: vec![None; count],
            steps: 0,
            last_read: Instant::now(),
        }
    }

    /// Add one step's values (in the order of `new`'s count).
    pub fn push(&mut self, values: &[&Tensor]) -> Result<()> {
        for (k, v) in values.iter().enumerate() {
            match self.device {
                Device::Cpu => self.host[k] += v.item()? as f64,
                Device::Cuda => {
                    let v = v.detach();
                    self.on_device[k] = Some(match self.on_device[k].take() {
                        Some(sum) => crate::autograd::no_grad(|| ops::add(&sum, &v))?,
                        None => v,
                    });
                }
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// The means so far (reads the device sums).
    pub fn means(&mut self) -> Result<Vec<f64>> {
        let steps = self.steps.max(1) as f64;
        let mut out = Vec::with_capacity(self.host.len());
        for (k, h) in self.host.iter().enumerate() {
            let device_sum = match &self.on_device[k] {
                Some(t) => t.item()? as f64,
                None => 0.0,
            };
            out.push((h + device_sum) / steps);
        }
        self.last_read = Instant::now();
        Ok(out)
    }

    /// The mean of the first value for the progress line: every step on the CPU, at most once
    /// a second on CUDA (None in between: the line keeps the last one).
    pub fn progress_value(&mut self) -> Result<Option<f64>> {
        if self.device == Device::Cuda && self.last_read.elapsed() < PROGRESS_READ_EVERY {
            return Ok(None);
        }
        Ok(self.means()?.first().copied())
    }
}
