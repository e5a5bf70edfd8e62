//! SparK-style masked autoencoding: the patch mask's geometry by hand, the sparse forward (masked
//! pixels never reach visible outputs; with nothing masked it is the dense forward), the
//! per-patch-normalised masked MSE by hand, and gradients reaching every trained tensor.

use ssod::models::{PatchMask, SparseBn, YoloX, YoloXConfig};
use ssod::pretrain::masked_decoder::{
    masked_reconstruction_loss, normalised_patch_targets, patchify, sample_visible_patches,
    visible_count, MaskedDecoder,
};
use ssod::rng::rng_for;
use ssod::tensor::Device;
use ssod::Tensor;

fn tiny_model(width: f64, depthwise: bool) -> YoloX {
    YoloX::new(YoloXConfig::custom(0.33, width, depthwise, 1)).unwrap()
}

fn random_image(b: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    use rand::Rng;
    let mut rng = rng_for(seed, "image");
    (0..b * 3 * h * w)
        .map(|_| rng.random_range(0.0..255.0))
        .collect()
}

/// Two images of a 2 × 3 patch grid (64 × 96 px).
fn two_masks() -> Vec<Vec<bool>> {
    vec![
        vec![true, false, true, false, false, true],
        vec![false, true, true, true, false, false],
    ]
}

#[test]
fn mask_levels_and_counts_by_hand() {
    let visible = two_masks();
    let mask = PatchMask::new(&visible, [2, 3], Device::Cpu).unwrap();
    for k in 0..6 {
        let s = 1usize << k;
        let m = mask.level(k).unwrap();
        assert_eq!(m.dims(), [2, 1, 64 / s, 96 / s], "level {k}");
        let v = m.to_vec();
        for b in 0..2 {
            for y in 0..64 / s {
                for x in 0..96 / s {
                    // Pixel (y·s, x·s) lies in patch (y·s / 32, x·s / 32).
                    let patch = (y * s / 32) * 3 + x * s / 32;
                    let want = if visible[b][patch] { 1.0 } else { 0.0 };
                    let got = v[(b * (64 / s) + y) * (96 / s) + x];
                    assert_eq!(got, want, "level {k} image {b} at ({y}, {x})");
                }
            }
        }
    }
    assert!(mask.level(6).is_none());
    // round(L · (1 − ratio)), at least one visible and one masked.
    assert_eq!(visible_count(12, 0.6), 5); // 4.8
    assert_eq!(visible_count(10, 0.75), 3); // 2.5 rounds away from zero
    assert_eq!(visible_count(10, 0.0), 9);
    assert_eq!(visible_count(10, 0.999), 1);
    let mut sets = std::collections::HashSet::new();
    for seed in 0..20 {
        let v = sample_visible_patches(40, 0.6, &mut rng_for(seed, "mask"));
        assert_eq!(v.len(), 40);
        assert_eq!(v.iter().filter(|&&x| x).count(), 16);
        sets.insert(v);
    }
    assert!(sets.len() > 15, "masks differ from seed to seed");
    // Bad masks are errors, not panics.
    assert!(PatchMask::new(&[vec![false; 6]], [2, 3], Device::Cpu).is_err());
    assert!(PatchMask::new(&[vec![true; 5]], [2, 3], Device::Cpu).is_err());
    assert!(PatchMask::new(&[], [2, 3], Device::Cpu).is_err());
}

fn masked_features(model: &YoloX, image: Vec<f32>, mask: &PatchMask) -> Vec<Vec<f32>> {
    let x = Tensor::from_vec(image, [2, 3, 64, 96]).unwrap();
    let bn = SparseBn::of_store(&model.store);
    let (c3, c4, c5) = model
        .backbone
        .backbone
        .forward_masked(&x, mask, bn)
        .unwrap();
    vec![c3.to_vec(), c4.to_vec(), c5.to_vec()]
}

#[test]
fn masked_pixels_never_reach_visible_outputs() {
    let visible = two_masks();
    let mask = PatchMask::new(&visible, [2, 3], Device::Cpu).unwrap();
    let pixel_mask = mask.level(0).unwrap().to_vec(); // [2, 1, 64, 96]
    for depthwise in [false, true] {
        let model = tiny_model(0.125, depthwise);
        model.set_training(true);
        let image = random_image(2, 64, 96, 1);
        let base = masked_features(&model, image.clone(), &mask);
        // Every masked pixel replaced by other values: the features are bit-identical.
        let mut perturbed = image.clone();
        let other = random_image(2, 64, 96, 2);
        for (i, v) in perturbed.iter_mut().enumerate() {
            let (b, p) = (i / (3 * 64 * 96), i % (64 * 96));
            if pixel_mask[b * 64 * 96 + p] == 0.0 {
                *v = other[i] * 3.0 - 100.0;
            }
        }
        assert_ne!(perturbed, image);
        let after = masked_features(&model, perturbed, &mask);
        assert_eq!(base, after, "depthwise {depthwise}");
        // Masked positions are zero at every stage.
        for (feat, k) in base.iter().zip([3usize, 4, 5]) {
            let m = mask.level(k).unwrap().to_vec();
            let plane = m.len() / 2;
            let c = feat.len() / m.len();
            for (i, &v) in feat.iter().enumerate() {
                let (b, p) = (i / (c * plane), i % plane);
                if m[b * plane + p] == 0.0 {
                    assert_eq!(v, 0.0, "stage C{k} leaks at {i}");
                }
            }
        }
        // A visible pixel does change them (the check above can fail).
        let first_visible = pixel_mask.iter().position(|&m| m == 1.0).unwrap();
        let mut moved = image.clone();
        moved[first_visible] += 50.0;
        assert_ne!(base, masked_features(&model, moved, &mask));
    }
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn with_nothing_masked_it_is_the_dense_forward() {
    let mask = PatchMask::new(&[vec![true; 6], vec![true; 6]], [2, 3], Device::Cpu).unwrap();
    let image = random_image(2, 64, 96, 3);
    let sparse = tiny_model(0.125, false);
    let dense = tiny_model(0.125, false);
    for m in [&sparse, &dense] {
        m.set_training(true);
    }
    let got = masked_features(&sparse, image.clone(), &mask);
    let x = Tensor::from_vec(image, [2, 3, 64, 96]).unwrap();
    let (c3, c4, c5) = dense.backbone.backbone.forward(&x).unwrap();
    for (g, w) in got.iter().zip([c3.to_vec(), c4.to_vec(), c5.to_vec()]) {
        let d = rel_diff(g, &w);
        assert!(d < 1e-4, "relative difference {d}");
    }
    // The running statistics move as the BN kernel moves them (momentum, unbiased variance).
    let mut checked = 0;
    for (a, b) in sparse.store.entries().iter().zip(dense.store.entries()) {
        assert_eq!(a.name, b.name);
        if a.name.starts_with("backbone.backbone.") && a.name.contains("running_") {
            let d = rel_diff(&a.tensor.to_vec(), &b.tensor.to_vec());
            assert!(d < 1e-4, "{}: relative difference {d}", a.name);
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} running statistics compared");
    // Evaluation mode: the running statistics, masked afterwards.
    for m in [&sparse, &dense] {
        m.set_training(false);
    }
    let got = masked_features(&sparse, random_image(2, 64, 96, 4), &mask);
    let x = Tensor::from_vec(random_image(2, 64, 96, 4), [2, 3, 64, 96]).unwrap();
    let (_, _, c5) = dense.backbone.backbone.forward(&x).unwrap();
    assert!(rel_diff(&got[2], &c5.to_vec()) < 1e-4);
}

#[test]
fn patch_targets_and_loss_by_hand() {
    // x[0, c, y, x] = c·10000 + y·100 + x on a 1 × 2 patch grid.
    let (h, w) = (32usize, 64usize);
    let values: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            (c * 10000 + y * 100 + x) as f32
        })
        .collect();
    let images = Tensor::from_vec(values.clone(), [1, 3, h, w]).unwrap();
    let rows = patchify(&images).unwrap();
    assert_eq!(rows.dims(), [1, 2, 3072]);
    let r = rows.to_vec();
    for (p, j) in [(0usize, 0usize), (1, 1)] {
        for k in [0usize, 1, 33, 1024, 3071] {
            let (c, yy, xx) = (k / 1024, (k / 32) % 32, k % 32);
            let want = (c * 10000 + yy * 100 + 32 * j + xx) as f32;
            assert_eq!(r[p * 3072 + k], want, "patch {p} element {k}");
        }
    }
    // Normalised per patch: mean 0, unbiased variance 1 (up to the 1e-6).
    let t = normalised_patch_targets(&images).unwrap().to_vec();
    for p in 0..2 {
        let row = &t[p * 3072..(p + 1) * 3072];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 3072.0;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 3071.0;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
    // Patch 1 masked: a zero prediction costs mean(t²) = 3071/3072 there; patch 0 (visible)
    // does not count, whatever is predicted on it.
    let mask = PatchMask::new(&[vec![true, false]], [1, 2], Device::Cpu).unwrap();
    let mut pred = vec![0.0f32; 3 * h * w];
    for (i, v) in pred.iter_mut().enumerate() {
        if i % w < 32 {
            *v = 7.0;
        }
    }
    let pred = Tensor::from_vec(pred, [1, 3, h, w]).unwrap();
    let loss = masked_reconstruction_loss(&pred, &images, &mask)
        .unwrap()
        .item()
        .unwrap();
    assert!((loss as f64 - 3071.0 / 3072.0).abs() < 1e-4, "{loss}");
    // The exact target on the masked patch costs nothing.
    let shape_err = masked_reconstruction_loss(
        &Tensor::from_vec(vec![0.0; 3 * 32 * 32], [1, 3, 32, 32]).unwrap(),
        &images,
        &mask,
    );
    assert!(shape_err.is_err());
}

#[test]
fn one_step_reaches_backbone_tokens_and_decoder() {
    let model = tiny_model(0.125, false);
    model.set_training(true);
    let decoder = MaskedDecoder::new(0.125, 16, 0).unwrap();
    decoder.store.set_training(true);
    let mask = PatchMask::new(&two_masks(), [2, 3], Device::Cpu).unwrap();
    let images = Tensor::from_vec(random_image(2, 64, 96, 5), [2, 3, 64, 96]).unwrap();
    let bn = SparseBn::of_store(&model.store);
    let (c3, c4, c5) = model
        .backbone
        .backbone
        .forward_masked(&images, &mask, bn)
        .unwrap();
    let pred = decoder.forward([&c3, &c4, &c5], &mask).unwrap();
    assert_eq!(pred.dims(), [2, 3, 64, 96]);
    let loss = masked_reconstruction_loss(&pred, &images, &mask).unwrap();
    assert!(loss.item().unwrap().is_finite());
    loss.backward().unwrap();
    let nonzero = |t: &Tensor| {
        t.grad()
            .is_some_and(|g| g.to_vec().iter().any(|&v| v != 0.0))
    };
    for e in decoder.store.parameters() {
        assert!(nonzero(&e.tensor), "{} has no gradient", e.name);
    }
    let stem = model
        .store
        .get("backbone.backbone.stem.conv.conv.weight")
        .unwrap();
    assert!(nonzero(&stem));
}
