//! Resumable checkpoints: a tiny YOLOX trained N steps straight through must end bit for bit
//! where a run trained k steps, checkpointed, rebuilt from scratch (different init seed, fresh
//! optimiser and EMA), resumed and trained N − k steps ends: weights, BN buffers, EMA and
//! optimiser state. Plus the loader's errors.

use std::path::{Path, PathBuf};

use ssod::models::{YoloX, YoloXConfig};
use ssod::nn::{ParamStore, TensorKind};
use ssod::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use ssod::tensor::Tensor;
use ssod::train::checkpoint::read_checkpoint_meta;
use ssod::train::{
    build_optimizer, load_checkpoint, save_checkpoint, LrSchedule, ModelEma, Optimizer,
    OptimizerKind, TrainConfig, TrainProgress,
};

const ITERS_PER_EPOCH: u64 = 2;
const BATCH: usize = 2;
const SIZE: usize = 64;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod_train_ckpt_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small recipe: 3 epochs × 2 iterations, 1 warm-up epoch, 1 no-aug epoch; EMA tau 2 so
/// the EMA moves visibly in a few steps.
fn recipe(optimizer: OptimizerKind) -> TrainConfig {
    TrainConfig {
        max_epoch: 3,
        warmup_epochs: 1,
        no_aug_epochs: 1,
        batch_size: BATCH,
        basic_lr_per_img: 0.05,
        ema_tau: 2.0,
        optimizer,
        ..TrainConfig::default()
    }
}

struct Run {
    model: YoloX,
    ema: ModelEma,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
}

fn new_run(config: &TrainConfig, init_seed: u64) -> Run {
    let mut model_cfg = YoloXConfig::custom(0.33, 0.125, false, 1);
    model_cfg.seed = init_seed;
    let model = YoloX::new(model_cfg.clone()).unwrap();
    let ema_model = YoloX::new(model_cfg).unwrap();
    let ema = ModelEma::new(
        &model.store,
        ema_model.store,
        config.ema_decay,
        config.ema_tau,
    )
    .unwrap();
    let optimizer = build_optimizer(config, &model.store);
    let schedule = LrSchedule::from_config(config, ITERS_PER_EPOCH).unwrap();
    Run {
        model,
        ema,
        optimizer,
        schedule,
    }
}

/// Optimiser step `it` (0-based) on fixed random data: loss = mean(out²), lr = schedule(it).
fn train_step(run: &mut Run, it: u64) {
    let images = Tensor::rand(vec![BATCH, 3, SIZE, SIZE], 1000 + it);
    let out = run.model.forward(&images).unwrap();
    let loss = out.mul(&out).unwrap().mean_all().unwrap();
    run.optimizer.zero_grad();
    loss.backward().unwrap();
    run.optimizer.step(run.schedule.lr_at(it) as f32).unwrap();
    run.ema.update(&run.model.store).unwrap();
}

fn values(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .entries()
        .into_iter()
        .map(|e| {
            (
                e.name,
                e.tensor.to_vec().iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn optim_values(opt: &dyn Optimizer) -> Vec<(String, Vec<u32>)> {
    opt.state()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn assert_bitwise(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: number of tensors");
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb, "{what}: names");
        assert!(va == vb, "{what}: `{na}` differs");
    }
}

fn resume_matches_straight_run(optimizer: OptimizerKind, total: u64, k: u64) {
    let config = recipe(optimizer);
    let dir = tmp_dir(optimizer.name());
    let path = dir.join("ckpt.safetensors");

    let mut straight = new_run(&config, 0);
    for it in 0..total {
        train_step(&mut straight, it);
    }

    let mut first = new_run(&config, 0);
    for it in 0..k {
        train_step(&mut first, it);
    }
    let progress = TrainProgress {
        epoch: (k / ITERS_PER_EPOCH) as usize,
        iteration: k,
        best: None,
    };
    save_checkpoint(
        &path,
        &first.model.store,
        Some(&first.ema),
        first.optimizer.as_ref(),
        progress,
        &config,
    )
    .unwrap();
    drop(first);

    // Rebuilt with ANOTHER init seed: only the checkpoint can make it match.
    let mut resumed = new_run(&config, 77);
    assert_ne!(
        values(&resumed.model.store),
        values(&straight.model.store),
        "the fresh model must start elsewhere"
    );
    let meta = load_checkpoint(
        &path,
        &resumed.model.store,
        Some(&mut resumed.ema),
        resumed.optimizer.as_mut(),
    )
    .unwrap();
    assert_eq!(meta.progress, progress);
    assert_eq!(meta.ema_updates, Some(k));
    assert_eq!(meta.optimizer, optimizer);
    assert_eq!(meta.config, config);
    assert_eq!(meta.ssod_version, ssod::VERSION);
    assert_eq!(resumed.ema.updates(), k);
    for it in meta.progress.iteration..total {
        train_step(&mut resumed, it);
    }

    assert_bitwise(
        &values(&resumed.model.store),
        &values(&straight.model.store),
        "model",
    );
    assert_bitwise(
        &values(resumed.ema.store()),
        &values(straight.ema.store()),
        "ema",
    );
    assert_bitwise(
        &optim_values(resumed.optimizer.as_ref()),
        &optim_values(straight.optimizer.as_ref()),
        "optimizer state",
    );
    assert!(!straight.optimizer.state().unwrap().is_empty());
    assert_eq!(resumed.ema.updates(), straight.ema.updates());
    // The EMA really differs from the model (it averaged), and BN buffers moved.
    assert_ne!(values(straight.ema.store()), values(&straight.model.store));
    let rv = straight
        .model
        .store
        .entries()
        .into_iter()
        .find(|e| e.kind == TensorKind::Buffer && e.name.ends_with("running_var"))
        .unwrap();
    assert!(
        rv.tensor.to_vec().iter().any(|&v| v != 1.0),
        "BN running_var updated"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sgd_resume_is_bitwise_identical() {
    // 5 steps crossing the end of warm-up (it 2) and into the cosine; checkpoint after 2.
    resume_matches_straight_run(OptimizerKind::Sgd, 5, 2);
}

#[test]
fn adamw_resume_is_bitwise_identical() {
    resume_matches_straight_run(OptimizerKind::AdamW, 4, 3);
}

/// A hand-made store with a conv weight, a bias and a buffer.
fn small_store(conv_out: usize) -> ParamStore {
    let s = ParamStore::new(0);
    let b = s.builder();
    b.register(
        "conv.weight",
        vec![conv_out, 1, 1, 1],
        vec![0.5; conv_out],
        TensorKind::Weight,
    )
    .unwrap();
    b.register(
        "conv.bias",
        vec![conv_out],
        vec![0.1; conv_out],
        TensorKind::NoDecay,
    )
    .unwrap();
    b.register(
        "bn.running_mean",
        vec![conv_out],
        vec![0.0; conv_out],
        TensorKind::Buffer,
    )
    .unwrap();
    s
}

fn write_small_checkpoint(path: &Path) -> ParamStore {
    let store = small_store(2);
    let config = TrainConfig::default();
    let optimizer = build_optimizer(&config, &store);
    save_checkpoint(
        path,
        &store,
        None,
        optimizer.as_ref(),
        TrainProgress {
            epoch: 4,
            iteration: 40,
            best: None,
        },
        &config,
    )
    .unwrap();
    store
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let dir = tmp_dir("errors");
    let path = dir.join("small.safetensors");
    let store = write_small_checkpoint(&path);
    let meta = read_checkpoint_meta(&path).unwrap();
    assert_eq!(
        meta.progress,
        TrainProgress {
            epoch: 4,
            iteration: 40,
            best: None,
        }
    );
    assert_eq!(meta.ema_updates, None);
    let file = read_safetensors(&path).unwrap();
    assert!(file.tensors.contains_key("model.conv.weight"));
    assert!(file.tensors.contains_key("model.bn.running_mean"));

    // Mis-shaped: a model with 3 output channels; nothing may change on error.
    let wider = small_store(3);
    let mut opt = build_optimizer(&TrainConfig::default(), &wider);
    let e = load_checkpoint(&path, &wider, None, opt.as_mut())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.conv.weight") && e.contains("shape"),
        "{e}"
    );
    assert_eq!(wider.get("conv.weight").unwrap().to_vec(), vec![0.5; 3]);

    // Missing: a model with an extra tensor.
    let extra = small_store(2);
    extra
        .builder()
        .register("head.w", vec![1], vec![0.0], TensorKind::Weight)
        .unwrap();
    let mut opt = build_optimizer(&TrainConfig::default(), &extra);
    let e = load_checkpoint(&path, &extra, None, opt.as_mut())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing `model.head.w`"), "{e}");

    // EMA asked for but not in the file.
    let target = small_store(2);
    let mut ema = ModelEma::new(&store, small_store(2), 0.9998, 2000.0).unwrap();
    let mut opt = build_optimizer(&TrainConfig::default(), &target);
    let e = load_checkpoint(&path, &target, Some(&mut ema), opt.as_mut())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing `ema.conv.weight`"), "{e}");

    // Optimiser of another kind.
    let adam_cfg = TrainConfig {
        optimizer: OptimizerKind::Adam,
        ..TrainConfig::default()
    };
    let mut adam = build_optimizer(&adam_cfg, &target);
    let e = load_checkpoint(&path, &target, None, adam.as_mut())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sgd") && e.contains("adam"), "{e}");

    // A plain weights file is not a training checkpoint.
    let plain = dir.join("plain.safetensors");
    let entries = store.entries();
    write_safetensors(
        &plain,
        entries.iter().map(|e| (e.name.as_str(), &e.tensor)),
        SaveDtype::F32,
        None,
    )
    .unwrap();
    let mut opt = build_optimizer(&TrainConfig::default(), &target);
    let e = load_checkpoint(&plain, &target, None, opt.as_mut())
        .unwrap_err()
        .to_string();
    assert!(e.contains("format"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
