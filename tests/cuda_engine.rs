//! The engine's device rules: device names, moves between devices, and (on a machine with a
//! GPU) ops on CUDA tensors against the same ops on the CPU. Without a GPU the CUDA half checks
//! that the errors say why; `ssod selftest --device cuda` runs the full parity table.

use ssod::backend::cuda::CudaAvailability;
use ssod::ops::{self, BatchNormParams, Conv2dParams};
use ssod::tensor::{Device, Tensor};

#[test]
fn device_names_resolve_or_say_why() {
    assert_eq!(Device::resolve("cpu").unwrap(), (Device::Cpu, None));
    let err = Device::resolve("tpu").unwrap_err().to_string();
    assert!(
        err.contains("tpu") && err.contains("cpu, cuda or auto"),
        "{err}"
    );
    match CudaAvailability::probe() {
        Ok(_) => {
            assert_eq!(Device::resolve("cuda").unwrap().0, Device::Cuda);
            assert_eq!(Device::resolve("auto").unwrap().0, Device::Cuda);
        }
        Err(reason) => {
            let err = Device::resolve("cuda").unwrap_err().to_string();
            assert!(
                err.contains("no usable GPU") && err.contains(&reason),
                "{err}"
            );
            let (d, note) = Device::resolve("auto").unwrap();
            assert_eq!(d, Device::Cpu);
            assert!(note.unwrap().contains(&reason));
        }
    }
}

#[test]
fn cpu_moves_are_identities_and_cuda_moves_fail_cleanly_without_a_gpu() {
    let t = Tensor::randn([2, 3], 1);
    let same = t.to_device(Device::Cpu).unwrap();
    assert!(same.same_as(&t));
    t.move_storage_to(Device::Cpu).unwrap();
    if CudaAvailability::probe().is_err() {
        let err = t.to_device(Device::Cuda).unwrap_err().to_string();
        assert!(err.contains("no usable GPU"), "{err}");
        assert_eq!(t.device(), Device::Cpu);
    }
}

/// conv → BN+SiLU → slice → cat → sum, forward and every gradient, on both devices.
#[test]
fn a_small_graph_on_cuda_matches_the_cpu() {
    if CudaAvailability::probe().is_err() {
        eprintln!("no GPU: the CUDA half of this test runs on GPU machines (ssod selftest)");
        return;
    }
    let run = |device: Device| {
        let x = Tensor::randn([2, 3, 9, 7], 1)
            .to_device(device)
            .unwrap()
            .with_requires_grad(true);
        let w = Tensor::randn([4, 3, 3, 3], 2)
            .to_device(device)
            .unwrap()
            .with_requires_grad(true);
        let gamma = Tensor::ones([4])
            .to_device(device)
            .unwrap()
            .with_requires_grad(true);
        let beta = Tensor::zeros([4])
            .to_device(device)
            .unwrap()
            .with_requires_grad(true);
        let (rm, rv) = (Tensor::zeros([4]), Tensor::ones([4]));
        rm.move_storage_to(device).unwrap();
        rv.move_storage_to(device).unwrap();
        let p = Conv2dParams {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let y = ops::conv2d(&x, &w, None, p).unwrap();
        let y = ops::batch_norm_silu2d(&y, &gamma, &beta, &rm, &rv, BatchNormParams::default())
            .unwrap();
        assert_eq!(y.device(), device);
        let s = ops::slice_step(&y, 3, 1, 7, 2).unwrap();
        let c = ops::cat(&[s.clone(), s], 1).unwrap();
        let loss = ops::mul(&c, &c).unwrap().sum_all().unwrap();
        loss.backward().unwrap();
        let mut out = vec![loss.item().unwrap()];
        for t in [&x, &w, &gamma, &beta] {
            let g = t.grad().unwrap();
            assert_eq!(g.device(), device);
            out.extend(g.to_vec());
        }
        out.extend(rm.to_vec());
        out
    };
    let (cpu, gpu) = (run(Device::Cpu), run(Device::Cuda));
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!(
            (c - g).abs() <= 1e-4 * scale.max(1.0),
            "value {i}: cpu {c} gpu {g}"
        );
    }
}
