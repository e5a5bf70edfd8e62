//! Tensor constructors. Random ones take a seed: the same seed gives the same values everywhere.

use rand::Rng;
use rand_distr::StandardNormal;

use super::{Shape, Tensor};
use crate::{Error, Result};

/// A vector for `shape`'s values, or an error naming `op`, the shape and the bytes when the
/// element count overflows or the memory cannot be had (instead of an abort): for shapes that
/// come from scripts and files.
pub(crate) fn try_values(op: &str, shape: &Shape, value: f32) -> Result<Vec<f32>> {
    let n = shape.numel_for(op)?;
    // More than the machine's memory would be granted by an overcommitting kernel and then
    // killed while being filled: refuse it here, with a message.
    if let Some(total) = physical_memory_bytes() {
        if (n as u128) * 4 > total as u128 {
            return Err(Error::op(
                op,
                format!(
                    "shape {shape} needs {:.1} GiB, more than this machine's {:.1} GiB of memory",
                    n as f64 * 4.0 / (1u64 << 30) as f64,
                    total as f64 / (1u64 << 30) as f64
                ),
            ));
        }
    }
    let mut values = Vec::new();
    values.try_reserve_exact(n).map_err(|_| {
        Error::op(
            op,
            format!(
                "cannot allocate {n} values ({:.1} GiB) for shape {shape}",
                n as f64 * 4.0 / (1u64 << 30) as f64
            ),
        )
    })?;
    values.resize(n, value);
    Ok(values)
}

/// Physical memory (Linux `MemTotal`, read once), None where it cannot be read.
pub(crate) fn physical_memory_bytes() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

impl Tensor {
    /// [`Tensor::full`] for a shape from user input: an error, not an abort, when the shape is
    /// too large for the machine.
    pub fn try_full(shape: impl Into<Shape>, value: f32) -> Result<Tensor> {
        Tensor::full_checked("full", shape, value)
    }
    /// [`Tensor::try_full`] whose errors name `op` (the script function that asked).
    pub(crate) fn full_checked(op: &str, shape: impl Into<Shape>, value: f32) -> Result<Tensor> {
        let shape = shape.into();
        let values = try_values(op, &shape, value)?;
        Tensor::from_vec(values, shape)
    }
    /// [`Tensor::randn`] for a shape from user input (see [`Tensor::try_full`]).
    pub fn try_randn(shape: impl Into<Shape>, seed: u64) -> Result<Tensor> {
        let shape = shape.into();
        let mut values = try_values("randn", &shape, 0.0)?;
        let mut rng = crate::rng::rng_for(seed, "tensor/randn");
        values
            .iter_mut()
            .for_each(|v| *v = rng.sample::<f32, _>(StandardNormal));
        Tensor::from_vec(values, shape)
    }
    /// [`Tensor::rand`] for a shape from user input (see [`Tensor::try_full`]).
    pub fn try_rand(shape: impl Into<Shape>, seed: u64) -> Result<Tensor> {
        let shape = shape.into();
        let mut values = try_values("rand", &shape, 0.0)?;
        let mut rng = crate::rng::rng_for(seed, "tensor/rand");
        values.iter_mut().for_each(|v| *v = rng.random::<f32>());
        Tensor::from_vec(values, shape)
    }
    pub fn full(shape: impl Into<Shape>, value: f32) -> Tensor {
        let shape = shape.into();
        let n = shape.numel();
        Tensor::from_vec(vec![value; n], shape).expect("length matches by construction")
    }
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 0.0)
    }
    pub fn ones(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 1.0)
    }
    /// A zero-dimensional (one-element, shape `[]`) tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(Vec::<usize>::new(), value)
    }
    /// `start, start + step, ...` below `end` (above it for a negative step), as NumPy.
    pub fn arange(start: f32, end: f32, step: f32) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::op(
                "arange",
                format!("bad range start={start} end={end} step={step}"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let mut values = try_values("arange", &Shape::from([n]), 0.0)?;
        values
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = start + i as f32 * step);
        Tensor::from_vec(values, [n])
    }
    /// Uniform values in `[0, 1)`.
    pub fn rand(shape: impl Into<Shape>, seed: u64) -> Tensor {
        let shape = shape.into();
        let mut rng = crate::rng::rng_for(seed, "tensor/rand");
        let values: Vec<f32> = (0..shape.numel()).map(|_| rng.random::<f32>()).collect();
        Tensor::from_vec(values, shape).expect("length matches by construction")
    }
    /// Standard normal values.
    pub fn randn(shape: impl Into<Shape>, seed: u64) -> Tensor {
        let shape = shape.into();
        let mut rng = crate::rng::rng_for(seed, "tensor/randn");
        let values: Vec<f32> = (0..shape.numel())
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        Tensor::from_vec(values, shape).expect("length matches by construction")
    }
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape().clone())
    }
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(self.shape().clone())
    }
}
