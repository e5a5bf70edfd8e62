//! `auto` conv algorithm (src/backend/cuda/conv2d/algorithm.rs) on a GPU: its results match the
//! CPU, it measures each pass of a conv once per precision, leaves grouped convs alone, and
//! refuses nothing on a GPU where the selftest passes. Its own test binary: the algorithm is a
//! process-wide device setting, and the counts below must not see other tests' convs.
//! Without a GPU the test says so and returns (the choice logic has unit tests in the library).

mod common;

use ssod::backend::cuda::{self, ConvAlgorithm, MatrixPrecision};
use ssod::ops::{self, Conv2dParams};
use ssod::selftest::compare_norm;
use ssod::tensor::{Device, Tensor};

/// The conv's output and both gradients (of `Σ y·y`), on `device`.
fn conv_and_grads(device: Device, groups: usize) -> Vec<f32> {
    let leaf = |dims: [usize; 4], seed: u64| {
        Tensor::randn(dims, seed)
            .to_device(device)
            .unwrap()
            .with_requires_grad(true)
    };
    let x = leaf([3, 8, 19, 17], 1);
    let w = leaf([12, 8 / groups, 3, 3], 2);
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        groups,
    };
    let y = ops::conv2d(&x, &w, None, p).unwrap();
    ops::mul(&y, &y)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut out = y.to_device(Device::Cpu).unwrap().to_vec();
    for t in [&x, &w] {
        out.extend(t.grad().unwrap().to_device(Device::Cpu).unwrap().to_vec());
    }
    out
}

#[test]
fn auto_measures_each_pass_once_and_matches_the_cpu() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dev = cuda::device().unwrap();
    let before = dev.conv_algorithm();
    dev.set_conv_algorithm(ConvAlgorithm::Auto);
    dev.conv_choices().clear();
    let cpu = conv_and_grads(Device::Cpu, 1);
    let total = |dev: &cuda::CudaDevice| {
        let s = dev.conv_choices().summary();
        assert_eq!(s.refused, 0, "auto refused the implicit kernels: {s}");
        s.im2col + s.implicit
    };
    for (precision, bound) in [(MatrixPrecision::F32, 1e-5), (MatrixPrecision::Bf16, 1e-2)] {
        dev.set_matrix_precision(precision).unwrap();
        let before_run = total(&dev);
        for _ in 0..2 {
            let gpu = conv_and_grads(Device::Cuda, 1);
            let diff = compare_norm(&cpu, &gpu, bound);
            assert_eq!(diff.first_bad, None, "{precision:?}: {diff:?}");
            // Forward, input gradient, weight gradient: measured at the first run only.
            assert_eq!(total(&dev), before_run + 3, "{precision:?}");
        }
        // A grouped conv keeps its kernels: nothing to measure.
        conv_and_grads(Device::Cuda, 2);
        assert_eq!(total(&dev), before_run + 3, "{precision:?}, groups 2");
    }
    dev.set_matrix_precision(MatrixPrecision::F32).unwrap();
    dev.set_conv_algorithm(before);
}
