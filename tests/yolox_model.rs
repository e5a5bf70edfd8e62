//! YOLOX structure: exact parameter counts, official names, output shape, GFLOPs, strict load.

use ssod::models::{YoloX, YoloXConfig};
use ssod::Tensor;

fn model(variant: &str, classes: usize) -> YoloX {
    YoloX::new(YoloXConfig::variant(variant, classes).unwrap()).unwrap()
}

#[test]
fn parameter_counts_match_the_official_models() {
    // docs/yolox.md §1.7 (80 classes): the numbers PyTorch's sum(p.numel()) gives.
    for (variant, expected) in [("nano", 912_159), ("tiny", 5_055_855), ("s", 8_968_255)] {
        let m = model(variant, 80);
        assert_eq!(m.num_params(), expected, "yolox-{variant}");
    }
}

#[test]
fn backbone_pafpn_head_split_matches_yolox_s() {
    // docs/yolox.md §1.7: s = 4,212,672 backbone / 2,834,688 pafpn / 1,920,895 head.
    let m = model("s", 80);
    let mut parts = [0usize; 3];
    for e in m.store.parameters() {
        let i = if e.name.starts_with("backbone.backbone.") {
            0
        } else if e.name.starts_with("backbone.") {
            1
        } else {
            2
        };
        parts[i] += e.tensor.numel();
    }
    assert_eq!(parts, [4_212_672, 2_834_688, 1_920_895]);
}

#[test]
fn names_are_the_official_state_dict_names() {
    let m = model("s", 80);
    let names: Vec<String> = m.tensor_names().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "backbone.backbone.stem.conv.conv.weight",
        "backbone.backbone.stem.conv.bn.running_var",
        "backbone.backbone.dark2.1.m.0.conv2.conv.weight",
        "backbone.backbone.dark5.1.conv2.bn.bias",
        "backbone.backbone.dark5.2.conv3.conv.weight",
        "backbone.lateral_conv0.conv.weight",
        "backbone.C3_p4.conv1.bn.weight",
        "backbone.bu_conv1.conv.weight",
        "head.stems.2.conv.weight",
        "head.cls_convs.0.1.bn.running_mean",
        "head.reg_convs.1.0.conv.weight",
        "head.cls_preds.0.bias",
        "head.obj_preds.2.weight",
        "head.reg_preds.1.bias",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    // nano's depthwise convs are DWConv (dconv + pconv).
    let nano = model("nano", 80);
    let names: Vec<String> = nano.tensor_names().into_iter().map(|(n, _)| n).collect();
    assert!(names
        .iter()
        .any(|n| n == "backbone.backbone.dark2.0.dconv.conv.weight"));
    assert!(names
        .iter()
        .any(|n| n == "head.cls_convs.0.0.pconv.bn.weight"));
}

#[test]
fn gflops_match_yolox_accounting() {
    // docs/yolox.md §1.7: 2 × (conv MACs + 2 × BN elements) = 1.079 (nano @416), 6.449 (tiny @416),
    // 26.80 (s @640).
    assert!((model("nano", 80).gflops(416, 416) - 1.079).abs() < 0.002);
    assert!((model("tiny", 80).gflops(416, 416) - 6.449).abs() < 0.002);
    assert!((model("s", 80).gflops(640, 640) - 26.80).abs() < 0.01);
}

#[test]
fn forward_gives_raw_outputs_per_anchor_and_prior_biases() {
    let mut cfg = YoloXConfig::custom(0.33, 0.125, false, 3);
    cfg.seed = 7;
    let m = YoloX::new(cfg).unwrap();
    let x = Tensor::rand([2, 3, 64, 96], 1);
    let x = ssod::ops::mul_scalar(&x, 255.0).unwrap();
    let y = m.forward(&x).unwrap();
    // A = 8·12 + 4·6 + 2·3 = 126 anchors, 5 + 3 channels.
    assert_eq!(y.dims(), &[2, 126, 8]);
    assert_eq!(YoloX::anchor_grid(64, 96).len(), 126);
    assert_eq!(YoloX::anchor_grid(640, 640).len(), 8400);
    assert_eq!(YoloX::anchor_grid(416, 416).len(), 3549);
    let bias = m.store.get("head.cls_preds.1.bias").unwrap().to_vec();
    assert!(bias.iter().all(|&b| (b + 4.59512).abs() < 1e-5));
    // Odd sizes are refused with the op's name.
    let err = m
        .forward(&Tensor::zeros([1, 3, 60, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("yolox.forward"), "{err}");
}

#[test]
fn save_load_round_trip_and_strict_errors() {
    let dir = std::env::temp_dir().join(format!("ssod_yolox_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let mut cfg = YoloXConfig::custom(0.33, 0.125, false, 2);
    cfg.seed = 1;
    let a = YoloX::new(cfg.clone()).unwrap();
    a.save(&path).unwrap();
    cfg.seed = 2;
    let b = YoloX::new(cfg).unwrap();
    let w = "backbone.backbone.stem.conv.conv.weight";
    assert_ne!(
        a.store.get(w).unwrap().to_vec(),
        b.store.get(w).unwrap().to_vec()
    );
    b.load(&path).unwrap();
    assert_eq!(
        a.store.get(w).unwrap().to_vec(),
        b.store.get(w).unwrap().to_vec()
    );
    // Another class count: the head's cls_preds shapes differ and are named.
    let c = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 5)).unwrap();
    let err = c.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("head.cls_preds.0.weight") && err.contains("shape"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
