//! The training recipe's building blocks against hand-derived values (docs/yolox.md §5):
//! TrainConfig defaults and variants, the yoloxwarmcos / cos / constant schedules, SGD
//! (Nesterov and plain) and Adam/AdamW with PyTorch's update rules and YOLOX's weight-decay
//! groups, and the model EMA.

mod common;

use ssod::nn::{ParamStore, TensorKind};
use ssod::tensor::Tensor;
use ssod::train::{
    yolox_warm_cos_lr, Adam, LrSchedule, ModelEma, Optimizer, OptimizerKind, SchedulerKind, Sgd,
    SimOtaMode, TrainConfig,
};

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (tol {tol})"
    );
}

fn close_vec(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        close(g as f64, w, tol, &format!("{what}[{i}]"));
    }
}

// ---------------------------------------------------------------------------------------------
// TrainConfig

#[test]
fn config_defaults_are_yolox_base() {
    let c = TrainConfig::default();
    assert_eq!(c.max_epoch, 300);
    assert_eq!(c.warmup_epochs, 5);
    assert_eq!(c.warmup_lr, 0.0);
    assert_eq!(c.no_aug_epochs, 15);
    assert_eq!(c.min_lr_ratio, 0.05);
    assert_eq!(c.basic_lr_per_img, 0.01 / 64.0);
    assert_eq!(c.scheduler, SchedulerKind::YoloxWarmCos);
    assert_eq!(c.optimizer, OptimizerKind::Sgd);
    assert_eq!((c.momentum, c.nesterov, c.weight_decay), (0.9, true, 5e-4));
    assert!(c.ema);
    assert_eq!((c.ema_decay, c.ema_tau), (0.9998, 2000.0));
    assert_eq!(c.eval_interval, 10);
    assert_eq!(c.input_size, (640, 640));
    assert_eq!(c.multiscale_range, 5);
    assert_eq!(c.random_size, None);
    assert_eq!((c.mosaic_prob, c.mixup_prob, c.hsv_prob), (1.0, 1.0, 1.0));
    assert_eq!(c.flip_prob, 0.5);
    assert_eq!((c.degrees, c.translate, c.shear), (10.0, 0.1, 2.0));
    assert_eq!(c.mosaic_scale, (0.1, 2.0));
    assert_eq!(c.mixup_scale, (0.5, 1.5));
    assert!(c.enable_mixup);
    assert_eq!(c.center_radius, 2.5);
    c.validate().unwrap();
    // lr = 0.01/64 · batch: 0.01 at 64, 0.00125 at 8.
    close(c.lr(), 0.01, 1e-15, "lr at batch 64");
    let b8 = TrainConfig {
        batch_size: 8,
        ..TrainConfig::default()
    };
    close(b8.lr(), 0.00125, 1e-15, "lr at batch 8");
    // s: 640/32 = 20 ± 5 → 32·15..32·25 = 480..800 (docs/yolox.md §5, "Multiscale").
    assert_eq!(c.multiscale_units(), (15, 25));
    assert_eq!(c.multiscale_size(15), (480, 480));
    // trainer.py before_epoch: epoch + 1 == 300 − 15 → 0-based epoch 284.
    assert_eq!(c.no_aug_start_epoch(), 284);
}

#[test]
fn config_variants() {
    let nano = TrainConfig::for_variant("nano").unwrap();
    assert_eq!(nano.random_size, Some((10, 20)));
    assert_eq!(nano.multiscale_units(), (10, 20));
    assert_eq!(nano.mosaic_scale, (0.5, 1.5));
    assert_eq!(nano.mosaic_prob, 0.5);
    assert!(!nano.enable_mixup);
    assert_eq!(nano.input_size, (416, 416));
    let tiny = TrainConfig::for_variant("yolox-tiny").unwrap();
    assert_eq!(tiny.random_size, Some((10, 20)));
    assert_eq!(tiny.mosaic_scale, (0.5, 1.5));
    assert_eq!(tiny.mosaic_prob, 1.0);
    assert!(!tiny.enable_mixup);
    let s = TrainConfig::for_variant("S").unwrap();
    assert!(s.enable_mixup);
    assert_eq!(s.mosaic_scale, (0.1, 2.0));
    assert_eq!(s, TrainConfig::default());
    let err = TrainConfig::for_variant("huge").unwrap_err().to_string();
    assert!(err.contains("huge"), "{err}");
}

#[test]
fn config_from_json_names_bad_keys() {
    let c = TrainConfig::from_json_value(&serde_json::json!({
        "batch_size": 8, "optimizer": "adamw", "random_size": [10, 20], "box_loss": "ciou"
    }))
    .unwrap();
    assert_eq!(c.batch_size, 8);
    assert_eq!(c.optimizer, OptimizerKind::AdamW);
    assert_eq!(c.random_size, Some((10, 20)));
    assert_eq!(c.max_epoch, 300, "untouched keys keep defaults");

    let unknown = TrainConfig::from_json_value(&serde_json::json!({"max_epochs": 10}))
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("`max_epochs`"), "{unknown}");
    let bad_type = TrainConfig::from_json_value(&serde_json::json!({"momentum": "high"}))
        .unwrap_err()
        .to_string();
    assert!(bad_type.contains("`momentum`"), "{bad_type}");
    let bad_variant = TrainConfig::from_json_value(&serde_json::json!({"optimizer": "lamb"}))
        .unwrap_err()
        .to_string();
    assert!(bad_variant.contains("`optimizer`"), "{bad_variant}");
    let bad_range = TrainConfig::from_json_value(&serde_json::json!({"mosaic_prob": 1.5}))
        .unwrap_err()
        .to_string();
    assert!(bad_range.contains("`mosaic_prob`"), "{bad_range}");
    let bad_size = TrainConfig::from_json_value(&serde_json::json!({"input_size": [100, 100]}))
        .unwrap_err()
        .to_string();
    assert!(bad_size.contains("`input_size`"), "{bad_size}");
    // The SimOTA mode takes the names its error message offers (and the older capitalised one).
    for (name, mode) in [
        ("release", SimOtaMode::Release),
        ("Release", SimOtaMode::Release),
        ("2023", SimOtaMode::Centre2023),
    ] {
        let c = TrainConfig::from_json_value(&serde_json::json!({ "simota_mode": name }))
            .unwrap_or_else(|e| panic!("simota_mode {name}: {e}"));
        assert_eq!(c.simota_mode, mode, "{name}");
        assert_eq!(SimOtaMode::parse("release").unwrap(), SimOtaMode::Release);
    }
    let not_object = TrainConfig::from_json_value(&serde_json::json!([1, 2])).unwrap_err();
    assert!(not_object.to_string().contains("object"), "{not_object}");

    let map = [("ema".to_string(), serde_json::json!(false))];
    let c = TrainConfig::from_map(map.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
    assert!(!c.ema);

    // Overrides on top of a variant, and a JSON round trip.
    let nano = TrainConfig::for_variant("nano")
        .unwrap()
        .with_overrides(&serde_json::json!({"max_epoch": 50}))
        .unwrap();
    assert_eq!((nano.max_epoch, nano.mosaic_prob), (50, 0.5));
    assert_eq!(TrainConfig::from_json_str(&nano.to_json()).unwrap(), nano);
}

// ---------------------------------------------------------------------------------------------
// Schedules

#[test]
fn yoloxwarmcos_boundaries() {
    // batch 64 → base 0.01, min 0.0005. 10 iters/epoch × 300 epochs: T = 3000, W = 50, N = 150.
    let cfg = TrainConfig::default();
    let s = LrSchedule::from_config(&cfg, 10).unwrap();
    // it = 0: (0.01 − 0)·(0/50)² + 0 = 0 (the first step runs at warmup_lr).
    assert_eq!(s.lr_at(0), 0.0);
    // it = 25: 0.01·(25/50)² = 0.0025 (quadratic, not linear 0.005).
    close(s.lr_at(25), 0.0025, 1e-15, "warm-up half way");
    // it = W = 50: still the warm-up branch (it <= W): 0.01·1² = 0.01.
    close(s.lr_at(50), 0.01, 1e-15, "end of warm-up");
    // it = 51: cosine with (it − W)/(T − W − N) = 1/2800: just below base.
    let after = s.lr_at(51);
    assert!(after < 0.01 && after > 0.01 - 1e-8, "{after}");
    // a quarter of the cosine, it = 50 + 700: 0.0005 + 0.5·0.0095·(1 + cos(π/4))
    //   = 0.0005 + 0.00475·1.7071068 = 0.0086087572.
    close(
        s.lr_at(750),
        0.008_608_757_210_636_1,
        1e-12,
        "quarter cosine",
    );
    // mid cosine, it = 50 + 1400: cos(π/2) = 0 → 0.0005 + 0.00475 = 0.00525.
    close(s.lr_at(1450), 0.00525, 1e-12, "mid cosine");
    // it = T − N − 1 = 2849: 0.0005 + 0.00475·(1 + cos(π·2799/2800)) = 0.00050000299.
    close(
        s.lr_at(2849),
        0.000_500_002_989_835,
        1e-12,
        "last cosine step",
    );
    // it >= T − N: flat at 0.05·base.
    for it in [2850, 2999, 3000, 10_000] {
        close(s.lr_at(it), 0.0005, 1e-15, &format!("no-aug it {it}"));
    }
    // warmup_lr ≠ 0: (base − wl)·(it/W)² + wl at it = 25: 0.009·0.25 + 0.001 = 0.00325.
    close(
        yolox_warm_cos_lr(0.01, 0.05, 3000, 50, 0.001, 150, 25),
        0.00325,
        1e-15,
        "warm-up from warmup_lr",
    );
    // No warm-up: the cosine starts at the base lr.
    close(
        yolox_warm_cos_lr(0.01, 0.05, 3000, 0, 0.0, 150, 0),
        0.01,
        1e-15,
        "W = 0",
    );
    assert!(LrSchedule::from_config(&cfg, 0).is_err());
}

#[test]
fn cos_and_constant_schedules() {
    let cos = LrSchedule::Cos {
        base_lr: 0.1,
        total_iters: 100,
    };
    close(cos.lr_at(0), 0.1, 1e-15, "cos 0");
    // 0.1·0.5·(1 + cos(π/4)) = 0.085355339
    close(cos.lr_at(25), 0.085_355_339_059_327_38, 1e-12, "cos 25");
    close(cos.lr_at(50), 0.05, 1e-12, "cos 50");
    close(cos.lr_at(100), 0.0, 1e-15, "cos end");
    close(cos.lr_at(500), 0.0, 1e-15, "cos after end");
    let constant = LrSchedule::from_config(
        &TrainConfig {
            scheduler: SchedulerKind::Constant,
            batch_size: 32,
            ..TrainConfig::default()
        },
        7,
    )
    .unwrap();
    for it in [0, 1, 999] {
        close(constant.lr_at(it), 0.005, 1e-15, "constant");
    }
}

// ---------------------------------------------------------------------------------------------
// Optimisers

/// A store with a decayed weight `w = [1, -2]`, a no-decay bias `b = [0.5]` and a buffer
/// `rm = [3]`.
fn tiny_store() -> ParamStore {
    let store = ParamStore::new(0);
    let b = store.builder();
    b.register("w", vec![2], vec![1.0, -2.0], TensorKind::Weight)
        .unwrap();
    b.register("b", vec![1], vec![0.5], TensorKind::NoDecay)
        .unwrap();
    b.register("rm", vec![1], vec![3.0], TensorKind::Buffer)
        .unwrap();
    store
}

/// Gradients g_w = [0.5, 0.25], g_b = [1] via backward of `sum(w·[0.5, 0.25]) + sum(b·[1])`.
fn set_constant_grads(store: &ParamStore) {
    let w = store.get("w").unwrap();
    let b = store.get("b").unwrap();
    let cw = Tensor::from_vec(vec![0.5, 0.25], vec![2]).unwrap();
    let cb = Tensor::from_vec(vec![1.0], vec![1]).unwrap();
    let loss = w
        .mul(&cw)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&b.mul(&cb).unwrap().sum_all().unwrap())
        .unwrap();
    loss.backward().unwrap();
}

fn run_steps(store: &ParamStore, opt: &mut dyn Optimizer, lr: f32, steps: usize) -> Vec<[f32; 3]> {
    let mut out = Vec::new();
    for _ in 0..steps {
        opt.zero_grad();
        set_constant_grads(store);
        opt.step(lr).unwrap();
        let w = store.get("w").unwrap().to_vec();
        let b = store.get("b").unwrap().to_vec();
        out.push([w[0], w[1], b[0]]);
        assert_eq!(
            store.get("rm").unwrap().to_vec(),
            vec![3.0],
            "buffers are not trained"
        );
    }
    out
}

#[test]
fn sgd_nesterov_matches_pytorch_by_hand() {
    // lr 0.1, μ 0.9, wd 0.1 (decay on w only).
    // w0 (p=1, g=0.5):
    //  1: d = 0.5+0.1·1 = 0.6;        buf = 0.6;                 p = 1 − 0.1·(0.6+0.54) = 0.886
    //  2: d = 0.5+0.0886 = 0.5886;    buf = 0.54+0.5886 = 1.1286; p = 0.886 − 0.1·(0.5886+1.01574) = 0.725566
    //  3: d = 0.5725566;              buf = 1.01574+0.5725566 = 1.5882966;
    //     p = 0.725566 − 0.1·(0.5725566+1.42946694) = 0.525363646
    // w1 (p=−2, g=0.25):
    //  1: d = 0.05;        buf = 0.05;        p = −2 − 0.1·(0.05+0.045) = −2.0095
    //  2: d = 0.04905;     buf = 0.09405;     p = −2.0095 − 0.1·(0.04905+0.084645) = −2.0228695
    //  3: d = 0.04771305;  buf = 0.13235805;  p = −2.0228695 − 0.1·0.166835295 = −2.0395530295
    // b (p=0.5, g=1, NO decay):
    //  1: buf = 1;    p = 0.5 − 0.1·1.9 = 0.31
    //  2: buf = 1.9;  p = 0.31 − 0.1·2.71 = 0.039
    //  3: buf = 2.71; p = 0.039 − 0.1·3.439 = −0.3049
    // (with decay on b, step 1 would give d = 1.05 and p = 0.3005.)
    let store = tiny_store();
    let mut sgd = Sgd::new(&store, 0.9, true, 0.1);
    let got = run_steps(&store, &mut sgd, 0.1, 3);
    let want = [
        [0.886, -2.0095, 0.31],
        [0.725566, -2.0228695, 0.039],
        [0.525363646, -2.0395530295, -0.3049],
    ];
    for (s, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        close_vec(g, w, 2e-6, &format!("nesterov step {}", s + 1));
    }
    let state = sgd.state().unwrap();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["w.momentum_buffer", "b.momentum_buffer"]);
    close_vec(
        &state[0].1.to_vec(),
        &[1.5882966, 0.13235805],
        2e-6,
        "buf w",
    );
    close_vec(&state[1].1.to_vec(), &[2.71], 2e-6, "buf b");
    assert_eq!(sgd.kind(), OptimizerKind::Sgd);
}

#[test]
fn sgd_plain_momentum_differs_from_nesterov() {
    // Plain: p -= lr·buf.
    // w0: 1: buf 0.6 → p = 0.94; 2: d = 0.5+0.094 = 0.594, buf = 0.54+0.594 = 1.134 → p = 0.8266;
    //     3: d = 0.58266, buf = 1.0206+0.58266 = 1.60326 → p = 0.666274
    // b:  1: p = 0.4; 2: buf 1.9 → 0.21; 3: buf 2.71 → −0.061
    let store = tiny_store();
    let mut sgd = Sgd::new(&store, 0.9, false, 0.1);
    let got = run_steps(&store, &mut sgd, 0.1, 3);
    close(got[0][0] as f64, 0.94, 2e-6, "plain w0 step 1");
    close(got[1][0] as f64, 0.8266, 2e-6, "plain w0 step 2");
    close(got[2][0] as f64, 0.666274, 2e-6, "plain w0 step 3");
    close_vec(
        &[got[0][2], got[1][2], got[2][2]],
        &[0.4, 0.21, -0.061],
        2e-6,
        "plain b",
    );
}

#[test]
fn sgd_skips_params_without_grad_and_restores_state() {
    let store = tiny_store();
    let mut sgd = Sgd::new(&store, 0.9, true, 0.1);
    // No backward: nothing has a gradient, nothing moves, no state appears.
    sgd.step(0.1).unwrap();
    assert_eq!(store.get("w").unwrap().to_vec(), vec![1.0, -2.0]);
    assert!(sgd.state().unwrap().is_empty());

    // Two steps, save state; a second store/optimiser restored from it continues identically.
    run_steps(&store, &mut sgd, 0.1, 2);
    let saved = sgd.state().unwrap();
    let other = tiny_store();
    for name in ["w", "b"] {
        other
            .get(name)
            .unwrap()
            .copy_values_from(&store.get(name).unwrap().to_vec())
            .unwrap();
    }
    let mut resumed = Sgd::new(&other, 0.9, true, 0.1);
    resumed.load_state(&saved).unwrap();
    let a = run_steps(&store, &mut sgd, 0.1, 1);
    let b = run_steps(&other, &mut resumed, 0.1, 1);
    assert_eq!(a, b, "restored momentum continues bit for bit");
    close(b[0][0] as f64, 0.525363646, 2e-6, "step 3 after restore");

    // Bad state names the tensor.
    let bad_shape = vec![(
        "w.momentum_buffer".to_string(),
        Tensor::from_vec(vec![1.0; 3], vec![3]).unwrap(),
    )];
    let e = resumed.load_state(&bad_shape).unwrap_err().to_string();
    assert!(e.contains("w.momentum_buffer"), "{e}");
    let unknown = vec![(
        "nope.momentum_buffer".to_string(),
        Tensor::from_vec(vec![1.0], vec![1]).unwrap(),
    )];
    let e = resumed.load_state(&unknown).unwrap_err().to_string();
    assert!(e.contains("nope.momentum_buffer"), "{e}");
    // A failed load leaves the state as it was.
    assert_eq!(resumed.state().unwrap().len(), 2);
}

#[test]
fn adam_and_adamw_match_pytorch_by_hand() {
    // lr 0.1, β (0.9, 0.999), eps 1e-8, wd 0.1 on w only. w0: p = 1, g = 0.5.
    // Adam (L2): step 1: g' = 0.5 + 0.1·1 = 0.6; m = 0.06; v = 0.00036;
    //   m̂ = 0.06/0.1 = 0.6, sqrt(v̂) = sqrt(0.00036/0.001) = 0.6 → p = 1 − 0.1·0.6/0.6 = 0.9
    // step 2: g' = 0.5 + 0.09 = 0.59; m = 0.06 + 0.1·(0.59 − 0.06) = 0.113;
    //   v = 0.999·0.00036 + 0.001·0.3481 = 0.00070774;
    //   p = 0.9 − (0.1/0.19)·0.113/(sqrt(0.00070774)/sqrt(0.001999) + 1e-8) = 0.80004734
    // step 3: g' = 0.580004734; m = 0.15970047; v = 0.00104343775 → p = 0.70017457
    // b (no decay, g = 1): every step moves by lr exactly (m̂/sqrt(v̂) = 1): 0.4, 0.3, 0.2.
    let store = tiny_store();
    let mut adam = Adam::new(&store, 0.9, 0.999, 1e-8, 0.1);
    let got = run_steps(&store, &mut adam, 0.1, 3);
    close_vec(
        &[got[0][0], got[1][0], got[2][0]],
        &[0.9, 0.800_047_340_5, 0.700_174_574_8],
        3e-6,
        "adam w0",
    );
    close_vec(
        &[got[0][2], got[1][2], got[2][2]],
        &[0.4, 0.3, 0.2],
        3e-6,
        "adam b",
    );
    assert_eq!(adam.kind(), OptimizerKind::Adam);
    let state = adam.state().unwrap();
    let step = state.iter().find(|(n, _)| n == "w.step").unwrap();
    assert_eq!(step.1.to_vec(), vec![3.0]);
    let m = state.iter().find(|(n, _)| n == "w.exp_avg").unwrap();
    close(m.1.to_vec()[0] as f64, 0.159_700_473_4, 2e-6, "exp_avg w0");

    // AdamW: decay first, p·(1 − lr·wd), with the raw gradient in the moments.
    // step 1: p = 0.99; m = 0.05, v = 0.00025 → m̂/sqrt(v̂) = 0.5/0.5 = 1 → p = 0.89
    // step 2: p = 0.89·0.99 = 0.8811; m = 0.095, v = 0.00049975;
    //   p = 0.8811 − (0.1/0.19)·0.095/(sqrt(0.00049975)/sqrt(0.001999)) = 0.7811
    // step 3: 0.67328901
    let store = tiny_store();
    let mut adamw = Adam::new_adamw(&store, 0.9, 0.999, 1e-8, 0.1);
    let got = run_steps(&store, &mut adamw, 0.1, 3);
    close_vec(
        &[got[0][0], got[1][0], got[2][0]],
        &[0.89, 0.7811, 0.673_289_006],
        3e-6,
        "adamw w0",
    );
    close_vec(
        &[got[0][2], got[1][2], got[2][2]],
        &[0.4, 0.3, 0.2],
        3e-6,
        "adamw b",
    );
    assert_eq!(adamw.kind(), OptimizerKind::AdamW);

    // State round trip, and incomplete state is refused with the parameter's name.
    let saved = adamw.state().unwrap();
    let mut again = Adam::new_adamw(&store, 0.9, 0.999, 1e-8, 0.1);
    again.load_state(&saved).unwrap();
    let restored = again.state().unwrap();
    assert_eq!(saved.len(), restored.len());
    for ((n1, t1), (n2, t2)) in saved.iter().zip(restored.iter()) {
        assert_eq!(n1, n2);
        assert_eq!(t1.to_vec(), t2.to_vec(), "{n1}");
    }
    let partial: Vec<_> = saved
        .iter()
        .filter(|(n, _)| n != "b.step")
        .cloned()
        .collect();
    let e = again.load_state(&partial).unwrap_err().to_string();
    assert!(e.contains("`b`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// EMA

fn ema_pair(model_values: (&[f32], f32), ema_values: (&[f32], f32)) -> (ParamStore, ParamStore) {
    let make = |(w, rm): (&[f32], f32)| {
        let s = ParamStore::new(0);
        let b = s.builder();
        b.register("w", vec![w.len()], w.to_vec(), TensorKind::Weight)
            .unwrap();
        b.register("rm", vec![1], vec![rm], TensorKind::Buffer)
            .unwrap();
        s
    };
    (make(model_values), make(ema_values))
}

#[test]
fn ema_matches_yolox_model_ema_by_hand() {
    // YOLOX default: d(2000) = 0.9998·(1 − e⁻¹) = 0.6319941347.
    let (model, ema_store) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    let probe = ModelEma::new(&model, ema_store, 0.9998, 2000.0).unwrap();
    close(
        probe.decay_at(2000),
        0.631_994_134_716_792,
        1e-15,
        "d(2000)",
    );
    close(probe.decay_at(0), 0.0, 0.0, "d(0)");
    // The EMA starts as a copy of the model and does not require gradients.
    assert_eq!(probe.store().get("w").unwrap().to_vec(), vec![1.0, 2.0]);
    assert!(!probe.store().get("w").unwrap().requires_grad());
    assert!(!probe.store().is_training());

    // decay 0.5, tau 1 for visible numbers. Model moves to w = [3, 6], rm = 8.
    let (model, ema_store) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    let mut ema = ModelEma::new(&model, ema_store, 0.5, 1.0).unwrap();
    model
        .get("w")
        .unwrap()
        .copy_values_from(&[3.0, 6.0])
        .unwrap();
    model.get("rm").unwrap().copy_values_from(&[8.0]).unwrap();
    // update 1 (counter incremented BEFORE use): d = 0.5·(1 − e⁻¹) = 0.31606028
    //   w0 = 0.31606028·1 + 0.68393972·3 = 2.36787944; w1 = 2·w0 = 4.73575888
    //   rm = 0.31606028·4 + 0.68393972·8 = 6.73575888   (buffers are averaged too)
    ema.update(&model).unwrap();
    assert_eq!(ema.updates(), 1);
    close_vec(
        &ema.store().get("w").unwrap().to_vec(),
        &[2.367_879_441, 4.735_758_882],
        1e-6,
        "ema w after 1",
    );
    close_vec(
        &ema.store().get("rm").unwrap().to_vec(),
        &[6.735_758_882],
        1e-6,
        "ema rm 1",
    );
    // update 2: d = 0.5·(1 − e⁻²) = 0.43233236
    //   w0 = 0.43233236·2.36787944 + 0.56766764·3 = 2.72671383; rm = 7.45342766
    ema.update(&model).unwrap();
    close(
        ema.store().get("w").unwrap().to_vec()[0] as f64,
        2.726_713_828,
        1e-6,
        "ema w0 after 2",
    );
    close_vec(
        &ema.store().get("rm").unwrap().to_vec(),
        &[7.453_427_656],
        1e-6,
        "ema rm 2",
    );
    // Resume: updates = 1 means the next update uses d(2) (same numbers as above from the
    // after-1 state).
    let (model2, ema_store2) = ema_pair((&[3.0, 6.0], 8.0), (&[0.0, 0.0], 0.0));
    let mut resumed = ModelEma::new(&model2, ema_store2, 0.5, 1.0).unwrap();
    resumed
        .store()
        .get("w")
        .unwrap()
        .copy_values_from(&[2.367_879_4, 4.735_759])
        .unwrap();
    resumed.set_updates(1);
    resumed.update(&model2).unwrap();
    close(
        resumed.store().get("w").unwrap().to_vec()[0] as f64,
        2.726_713_828,
        1e-6,
        "resumed ema w0",
    );
}

#[test]
fn ema_refuses_mismatched_stores() {
    let (model, _) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    // Different shape of `w`.
    let (_, wrong_shape) = ema_pair((&[1.0], 4.0), (&[0.0, 0.0, 0.0], 0.0));
    let e = ModelEma::new(&model, wrong_shape, 0.9998, 2000.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`w`"), "{e}");
    // A model with an extra tensor the EMA lacks.
    let extra = ParamStore::new(0);
    let b = extra.builder();
    b.register("w", vec![2], vec![0.0; 2], TensorKind::Weight)
        .unwrap();
    b.register("rm", vec![1], vec![0.0], TensorKind::Buffer)
        .unwrap();
    b.register("head.bias", vec![1], vec![0.0], TensorKind::NoDecay)
        .unwrap();
    let (_, ema_store) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    let e = ModelEma::new(&extra, ema_store, 0.9998, 2000.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("head.bias"), "{e}");
    // The model's own store as the EMA.
    assert!(ModelEma::new(&model, model.clone(), 0.9998, 2000.0).is_err());
    // Bad decay.
    let (m, s) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    assert!(ModelEma::new(&m, s, 1.5, 2000.0).is_err());
}

/// On a GPU machine, Adam and AdamW step CUDA parameters with the fused `adam_f32` kernel and
/// device moments: the same parameters and state as the host loop (the hand-checked one above),
/// and a checkpointed state resumes on the device. Without a GPU only the host half runs.
#[test]
fn adam_on_cuda_matches_the_host() {
    use ssod::tensor::Device;
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    for decoupled in [false, true] {
        let make = |store: &ParamStore| {
            if decoupled {
                Adam::new_adamw(store, 0.9, 0.999, 1e-8, 0.1)
            } else {
                Adam::new(store, 0.9, 0.999, 1e-8, 0.1)
            }
        };
        let host_store = tiny_store();
        let mut host = make(&host_store);
        let host_steps = run_steps(&host_store, &mut host, 0.1, 3);
        let host_state = host.state().unwrap();
        assert_eq!(host_state.len(), 6, "w and b: exp_avg, exp_avg_sq, step");
        if common::gpu_or_skip().is_none() {
            return;
        }
        let dev_store = tiny_store();
        dev_store.to_device(Device::Cuda).unwrap();
        let mut dev = make(&dev_store);
        let dev_steps = run_steps(&dev_store, &mut dev, 0.1, 3);
        for (h, d) in host_steps.iter().zip(&dev_steps) {
            close_vec(d, &wide(h), 3e-6, "adam on cuda");
        }
        let dev_state = dev.state().unwrap();
        for ((n1, t1), (n2, t2)) in host_state.iter().zip(&dev_state) {
            assert_eq!(n1, n2);
            close_vec(&t2.to_vec(), &wide(&t1.to_vec()), 3e-6, n1);
        }
        // Resume from the host state on the device: one more step matches the host's.
        let mut resumed = make(&dev_store);
        resumed.load_state(&host_state).unwrap();
        let next_dev = run_steps(&dev_store, &mut resumed, 0.1, 1);
        let next_host = run_steps(&host_store, &mut host, 0.1, 1);
        close_vec(&next_dev[0], &wide(&next_host[0]), 3e-6, "resumed on cuda");
    }
}

/// On a GPU machine, SGD-Nesterov steps every CUDA parameter in one multi-tensor launch
/// (`sgd_nesterov_multi_f32`, per-tensor weight decay) and the EMA follows the model in one
/// launch (`ema_multi_f32`): the same parameters, momentum state and EMA as the host loops, and a
/// checkpointed SGD state resumes on the device. Without a GPU only the host half runs.
#[test]
fn sgd_and_ema_on_cuda_match_the_host() {
    use ssod::tensor::Device;
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let host_store = tiny_store();
    let mut host = Sgd::new(&host_store, 0.9, true, 0.1);
    let host_steps = run_steps(&host_store, &mut host, 0.1, 3);
    let host_state = host.state().unwrap();
    assert_eq!(host_state.len(), 2, "w and b: momentum_buffer");
    let (model, ema_store) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    let mut host_ema = ModelEma::new(&model, ema_store, 0.9998, 2000.0).unwrap();
    for _ in 0..3 {
        host_ema.update(&model).unwrap();
    }
    let host_ema_values: Vec<Vec<f32>> = ["w", "rm"]
        .iter()
        .map(|n| host_ema.store().get(n).unwrap().to_vec())
        .collect();
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dev_store = tiny_store();
    dev_store.to_device(Device::Cuda).unwrap();
    let mut dev = Sgd::new(&dev_store, 0.9, true, 0.1);
    let dev_steps = run_steps(&dev_store, &mut dev, 0.1, 3);
    for (h, d) in host_steps.iter().zip(&dev_steps) {
        close_vec(d, &wide(h), 3e-6, "sgd on cuda");
    }
    for ((n1, t1), (n2, t2)) in host_state.iter().zip(&dev.state().unwrap()) {
        assert_eq!(n1, n2);
        close_vec(&t2.to_vec(), &wide(&t1.to_vec()), 3e-6, n1);
    }
    let mut resumed = Sgd::new(&dev_store, 0.9, true, 0.1);
    resumed.load_state(&host_state).unwrap();
    let next_dev = run_steps(&dev_store, &mut resumed, 0.1, 1);
    let next_host = run_steps(&host_store, &mut host, 0.1, 1);
    close_vec(
        &next_dev[0],
        &wide(&next_host[0]),
        3e-6,
        "sgd resumed on cuda",
    );

    let (model, ema_store) = ema_pair((&[1.0, 2.0], 4.0), (&[0.0, 0.0], 0.0));
    model.to_device(Device::Cuda).unwrap();
    ema_store.to_device(Device::Cuda).unwrap();
    let mut dev_ema = ModelEma::new(&model, ema_store, 0.9998, 2000.0).unwrap();
    for _ in 0..3 {
        dev_ema.update(&model).unwrap();
    }
    for (n, want) in ["w", "rm"].iter().zip(&host_ema_values) {
        let got = dev_ema.store().get(n).unwrap().to_vec();
        close_vec(&got, &wide(want), 3e-6, &format!("ema {n} on cuda"));
    }
}

/// `DetectorTrainer::step_uploaded` (each batch uploaded while the previous step's backward
/// runs, as the training loop and `bench train` go) computes what `step` does, step by step,
/// on the CPU and, on a machine with a GPU, on CUDA.
#[test]
fn steps_on_batches_uploaded_ahead_match_plain_steps() {
    use ssod::data::loader::Batch;
    use ssod::models::{YoloX, YoloXConfig};
    use ssod::tensor::Device;
    use ssod::train::trainer::DetectorTrainer;
    use std::sync::Arc;
    let batch = |seed: u64| {
        let (n, side, max_labels) = (2, 64, 2);
        let images: Vec<f32> = Tensor::rand([n * 3 * side * side], seed)
            .to_vec()
            .iter()
            .map(|v| v * 255.0)
            .collect();
        let s = seed as f32;
        let labels = vec![
            0.0,
            20.0 + s,
            24.0,
            16.0,
            12.0, // image 0: two boxes
            1.0,
            40.0,
            40.0 - s,
            10.0,
            18.0, //
            1.0,
            32.0,
            30.0,
            20.0 + s,
            20.0, // image 1: one box, one padding row
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        Batch {
            images,
            batch: n,
            height: side,
            width: side,
            labels,
            max_labels,
            num_labels: vec![2, 1],
            image_ids: vec![2 * seed, 2 * seed + 1],
        }
    };
    let batches: Vec<Batch> = (1..=3).map(batch).collect();
    let mut devices = vec![Device::Cpu];
    if common::gpu_or_skip().is_some() {
        devices.push(Device::Cuda);
    }
    for device in devices {
        let trainer = || {
            let model = Arc::new(YoloX::new(YoloXConfig::variant("nano", 2).unwrap()).unwrap());
            let cfg = TrainConfig {
                input_size: (64, 64),
                multiscale_range: 0,
                batch_size: 2,
                ..TrainConfig::default()
            };
            let mut t = DetectorTrainer::new(model, cfg, 10).unwrap();
            t.to_device(device).unwrap();
            t
        };
        let mut plain = trainer();
        let want: Vec<f32> = batches
            .iter()
            .map(|b| plain.step(b).unwrap().loss)
            .collect();
        let mut ahead = trainer();
        let mut uploaded = Some(ahead.upload(&batches[0]).unwrap());
        let mut got = Vec::new();
        for i in 0..batches.len() {
            let (stats, next) = ahead
                .step_uploaded(uploaded.take().unwrap(), batches.get(i + 1))
                .unwrap();
            assert_eq!(stats.images, 2);
            assert_eq!(next.is_some(), i + 1 < batches.len());
            got.push(stats.loss);
            uploaded = next;
        }
        assert_eq!(got, want, "{device:?}");
        // The batches differ, so the check can tell them apart.
        assert!(want[0] != want[1] && want[1] != want[2], "{want:?}");
    }
}
