//! The engine's device rules: device names, moves between devices, and (on a machine with a
//! GPU) ops on CUDA tensors against the same ops on the CPU. Without a GPU the CUDA half checks
//! that the errors say why; `ssod selftest --device cuda` runs the full parity table.

mod common;

use ssod::backend::cuda::CudaAvailability;
use ssod::detect::loss::{box_loss, BoxLossKind};
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
    if common::gpu_or_skip().is_none() {
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
    assert_matches_cpu(&cpu, &gpu);
}

/// CUDA arms checked together against the CPU: the four box losses
/// (fused kernel), softmax, log_softmax, cosine similarity, gather (host and device indices),
/// matmul (shared and batched right operand), linear with a bias and crop_patches, forward and gradients against the CPU. Each op's
/// output must stay on the device (an arm that silently fell back to the host would not).
#[test]
fn wired_arms_on_cuda_match_the_cpu() {
    let run = |device: Device| {
        let leaf = |dims: &[usize], seed: u64| {
            Tensor::randn(dims.to_vec(), seed)
                .to_device(device)
                .unwrap()
                .with_requires_grad(true)
        };
        let (a, b) = (leaf(&[3, 5, 4], 11), leaf(&[4, 6], 12));
        let (bb, w) = (leaf(&[3, 4, 6], 13), leaf(&[7, 4], 14));
        let bias = leaf(&[7], 15);
        let (p, q) = (leaf(&[2, 8, 5], 16), leaf(&[2, 8, 5], 17));
        // Overlapping windows in image 1 (their gradients add up), one in image 0.
        let img = leaf(&[2, 3, 7, 6], 18);
        let patch_boxes = [(1, 0, 0), (1, 2, 1), (0, 3, 4), (1, 1, 1)]
            .map(|(image, x, y)| ops::PatchBox { image, x, y });
        let idx_values: Vec<f32> = (0..2 * 3 * 5).map(|i| ((i * 7) % 8) as f32).collect();
        let idx_host = Tensor::from_vec(idx_values, [2, 3, 5]).unwrap();
        let idx_dev = idx_host.to_device(device).unwrap();
        let on_device = |t: Tensor| {
            assert_eq!(t.device(), device, "{:?} left the device", t.op_name());
            t
        };
        // Boxes [6, 4] xyxy: overlapping, disjoint and nested pairs (x2 > x1, y2 > y1).
        let pred_values: Vec<f32> = (0..6)
            .flat_map(|i| {
                let (x, y) = (3.0 * i as f32, 1.5 * i as f32);
                [x, y, x + 4.0 + i as f32, y + 3.0]
            })
            .collect();
        let target_values: Vec<f32> = (0..6)
            .flat_map(|i| {
                let (x, y) = (3.0 * i as f32 + (i % 3) as f32 * 2.5, 1.5 * i as f32 - 1.0);
                [x, y, x + 3.0, y + 5.0 - (i % 2) as f32]
            })
            .collect();
        let pred = Tensor::from_vec(pred_values, [6, 4])
            .unwrap()
            .to_device(device)
            .unwrap()
            .with_requires_grad(true);
        let target = Tensor::from_vec(target_values, [6, 4])
            .unwrap()
            .to_device(device)
            .unwrap();
        let mut terms: Vec<Tensor> = [
            BoxLossKind::Iou,
            BoxLossKind::Giou,
            BoxLossKind::Ciou,
            BoxLossKind::CiouTorchvision,
        ]
        .into_iter()
        .map(|kind| on_device(box_loss(&pred, &target, kind).unwrap()))
        .collect();
        terms.extend([
            on_device(ops::softmax(&a, 1).unwrap()),
            on_device(ops::log_softmax(&a, -1).unwrap()),
            on_device(ops::cosine_similarity(&p, &q, 1).unwrap()),
            on_device(ops::gather(&p, 1, &idx_host).unwrap()),
            on_device(ops::gather(&q, 1, &idx_dev).unwrap()),
            on_device(ops::matmul(&a, &b).unwrap()),
            on_device(ops::matmul(&a, &bb).unwrap()),
            on_device(ops::linear(&a, &w, Some(&bias)).unwrap()),
            on_device(ops::crop_patches(&img, &patch_boxes, 3).unwrap()),
        ]);
        let mut out = Vec::new();
        let mut loss: Option<Tensor> = None;
        for (k, t) in terms.iter().enumerate() {
            out.extend(t.to_vec());
            // Weight each term differently so no gradient is a plain sum of ones.
            let weights = Tensor::randn(t.dims().to_vec(), 100 + k as u64)
                .to_device(device)
                .unwrap();
            let term = ops::mul(t, &weights).unwrap().sum_all().unwrap();
            loss = Some(match loss {
                Some(l) => ops::add(&l, &term).unwrap(),
                None => term,
            });
        }
        loss.unwrap().backward().unwrap();
        for t in [&a, &b, &bb, &w, &bias, &p, &q, &pred, &img] {
            out.extend(t.grad().unwrap().to_vec());
        }
        out
    };
    // The CPU half runs everywhere, so the test itself is exercised on machines without a GPU.
    let cpu = run(Device::Cpu);
    if common::gpu_or_skip().is_none() {
        return;
    }
    assert_matches_cpu(&cpu, &run(Device::Cuda));
}

/// Every GPU value within 1e-4 of the CPU's, relative to the largest CPU magnitude (at least 1).
fn assert_matches_cpu(cpu: &[f32], gpu: &[f32]) {
    assert_eq!(cpu.len(), gpu.len());
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        assert!(
            (c - g).abs() <= 1e-4 * scale.max(1.0),
            "value {i}: cpu {c} gpu {g}"
        );
    }
}

/// Inference post-processing of outputs on the GPU (decode kernel, and the GPU's NMS for the
/// thousands of candidates an evaluation threshold leaves) keeps the same detections as the host
/// path, class-aware and class-agnostic.
#[test]
fn postprocess_of_cuda_outputs_matches_the_host() {
    use ssod::detect::{postprocess_raw, PostprocessConfig};
    let grid = ssod::models::YoloX::anchor_grid(320, 320); // 2,100 anchors
    let (batch, classes) = (2, 3);
    let row = 5 + classes;
    // Offsets in [0, 1), log sizes in [-1, 2) (heavily overlapping boxes), obj and class logits
    // near 0: every anchor passes conf 0.001, so NMS sees 2,100 candidates per image.
    let u = Tensor::rand([batch * grid.len() * row], 5).to_vec();
    let raw: Vec<f32> = u
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % row {
            0 | 1 => v,
            2 | 3 => 3.0 * v - 1.0,
            _ => 2.0 * v - 1.0,
        })
        .collect();
    let raw = Tensor::from_vec(raw, [batch, grid.len(), row]).unwrap();
    for class_agnostic in [false, true] {
        let cfg = PostprocessConfig {
            conf_thre: 0.001,
            class_agnostic,
            ..PostprocessConfig::default()
        };
        let host = postprocess_raw(&raw, &grid, &cfg).unwrap();
        assert!(host.iter().all(|d| d.len() > 10 && d.len() < grid.len()));
        if common::gpu_or_skip().is_none() {
            return;
        }
        let on_gpu = raw.to_device(Device::Cuda).unwrap();
        let gpu = postprocess_raw(&on_gpu, &grid, &cfg).unwrap();
        for (img, (h, g)) in host.iter().zip(&gpu).enumerate() {
            assert_eq!(h.len(), g.len(), "image {img}, agnostic {class_agnostic}");
            for (a, b) in h.iter().zip(g) {
                assert_eq!(a.class, b.class);
                assert!((a.score - b.score).abs() <= 1e-6, "{a:?} vs {b:?}");
                for k in 0..4 {
                    let tol = 1e-5 * a.box_xyxy[k].abs().max(1.0);
                    assert!(
                        (a.box_xyxy[k] - b.box_xyxy[k]).abs() <= tol,
                        "{a:?} vs {b:?}"
                    );
                }
            }
        }
    }
}

/// In bf16 mode a batch goes up as bf16 bits (half the transfer), and the first conv's input
/// after YOLOX's Focus is then bit for bit what it was from f32 images: the conv rounds its input
/// to bf16 either way. Checked on both sides of the staging threshold (2^21 values).
#[test]
fn bf16_batches_upload_as_the_images_rounded_to_bf16() {
    use ssod::backend::cuda::{self, bf16::bf16_bits, MatrixPrecision};
    use ssod::data::loader::Batch;
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dev = cuda::device().unwrap();
    for (batch, side) in [(2, 24), (3, 512)] {
        let n = batch * 3 * side * side;
        let images: Vec<f32> = Tensor::rand([n], 5)
            .to_vec()
            .iter()
            .map(|v| v * 255.0)
            .collect();
        let b = Batch {
            images: images.clone(),
            batch,
            height: side,
            width: side,
            labels: vec![0.0; batch * 5],
            max_labels: 1,
            num_labels: vec![0; batch],
            image_ids: (0..batch as u64).collect(),
        };
        dev.set_matrix_precision(MatrixPrecision::Bf16).unwrap();
        let (t, _) = ssod::train::device_batch::batch_tensors(&b, Device::Cuda).unwrap();
        dev.set_matrix_precision(MatrixPrecision::F32).unwrap();
        assert!(t.is_bf16(), "{n} values: not bf16 storage");
        let got = t.to_device(Device::Cpu).unwrap().to_vec();
        let want: Vec<f32> = images
            .iter()
            .map(|&v| f32::from_bits((bf16_bits(v) as u32) << 16))
            .collect();
        assert_eq!(got, want, "{n} values");
        let (t, _) = ssod::train::device_batch::batch_tensors(&b, Device::Cuda).unwrap();
        assert!(!t.is_bf16());
        assert_eq!(t.to_device(Device::Cpu).unwrap().to_vec(), images);
    }
}
