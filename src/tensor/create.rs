//! Tensor constructors. Random ones take a seed: the same seed gives the same values everywhere.

use rand::Rng;
use rand_distr::StandardNormal;

use super::{Shape, Tensor};
use crate::{Error, Result};

impl Tensor {
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
        let values: Vec<f32> = (0..n).map(|i| start + i as f32 * step).collect();
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
