//! The loader: batches independent of the worker count and of the RAM cache, YOLOX batch layout,
//! multiscale sizes, and unreadable images (corrupt, truncated, missing): an error naming the
//! file by default, skipped and counted with `skip_bad_images`.

use std::path::{Path, PathBuf};

use ssod::data::augment::AugmentConfig;
use ssod::data::loader::{Batch, Loader, LoaderConfig};
use ssod::data::synth::{generate, SynthConfig};
use ssod::data::CocoDataset;

/// A tiny generated set (10 train images, 320×180) with `image_dir` pointing at its images.
fn tiny_dataset(name: &str) -> (PathBuf, CocoDataset) {
    let out = std::env::temp_dir().join(format!("ssod-test-loader-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = SynthConfig {
        out: out.clone(),
        train: 10,
        test: 0,
        width: 320,
        height: 180,
        videos: 0,
        frames_per_video: 0,
        seed: 5,
    };
    generate(&cfg).unwrap();
    let mut ds = CocoDataset::read(&out.join("train.json")).unwrap();
    ds.image_dir = out.join("training/images");
    (out, ds)
}

fn config(workers: usize, cache: bool) -> LoaderConfig {
    let mut cfg = LoaderConfig::new(3, AugmentConfig::yolox_s(128, 96));
    cfg.workers = workers;
    cfg.cache = cache;
    cfg.seed = 42;
    cfg.prefetch = 2;
    cfg
}

fn epoch_batches(loader: &Loader, epoch: usize) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn batches_do_not_depend_on_workers_or_cache() {
    let (out, ds) = tiny_dataset("workers");
    let one = epoch_batches(&Loader::new(&ds, config(1, false)).unwrap(), 0);
    let three = epoch_batches(&Loader::new(&ds, config(3, false)).unwrap(), 0);
    let cached = Loader::new(&ds, config(3, true)).unwrap();
    let three_cached = epoch_batches(&cached, 0);
    assert_eq!(one.len(), 4, "10 images in batches of 3");
    assert_eq!(one, three);
    assert_eq!(one, three_cached);
    // A second epoch from the warm cache is the same as without one, and differs from epoch 0.
    let epoch1 = epoch_batches(&cached, 1);
    assert_eq!(
        epoch1,
        epoch_batches(&Loader::new(&ds, config(2, false)).unwrap(), 1)
    );
    assert_ne!(epoch1, one);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn batch_layout_is_bgr_nchw_with_zero_padded_cxcywh_labels() {
    let (out, ds) = tiny_dataset("layout");
    let mut cfg = config(2, false);
    cfg.augment = AugmentConfig::none(160, 160);
    cfg.shuffle = false;
    let loader = Loader::new(&ds, cfg).unwrap();
    let batches = epoch_batches(&loader, 0);
    let b = &batches[0];
    assert_eq!(
        (b.batch, b.height, b.width, b.max_labels),
        (3, 160, 160, 120)
    );
    assert_eq!(b.images.len(), 3 * 3 * 160 * 160);
    assert_eq!(b.labels.len(), 3 * 120 * 5);
    assert_eq!(b.image_ids, vec![1, 2, 3]);
    // Letterbox 320×180 -> 160×90 at the top-left; rows below are the 114 padding.
    let plane = 160 * 160;
    assert_eq!(b.images[100 * 160 + 5], 114.0);
    assert_eq!(b.images[2 * plane + 150 * 160 + 150], 114.0);
    // Channel 0 is blue: compare with the decoded image.
    let img = ssod::data::image_io::read_rgb(&ds.image_dir.join("000001.jpg")).unwrap();
    let small = ssod::data::augment::resize_bilinear(&img, 160, 90);
    let p = small.get_pixel(40, 30);
    assert_eq!(b.images[30 * 160 + 40], p[2] as f32);
    assert_eq!(b.images[2 * plane + 30 * 160 + 40], p[0] as f32);
    // Labels: the json's boxes halved, as cxcywh; slots past num_labels are zero.
    let anns: Vec<_> = ds.annotations.iter().filter(|a| a.image_id == 1).collect();
    assert_eq!(b.num_labels[0], anns.len());
    for (j, a) in anns.iter().enumerate() {
        let [x, y, w, h] = a.bbox_xywh.map(|v| v as f32 * 0.5);
        let l = &b.labels[j * 5..j * 5 + 5];
        assert_eq!(l, &[0.0, x + w / 2.0, y + h / 2.0, w, h]);
    }
    assert!(b.labels[anns.len() * 5..120 * 5].iter().all(|&v| v == 0.0));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn multiscale_sizes_are_multiples_of_32_and_shared_by_groups() {
    let (out, ds) = tiny_dataset("multiscale");
    let mut cfg = LoaderConfig::new(1, AugmentConfig::yolox_tiny(128, 128));
    cfg.multiscale = Some((2, 6));
    cfg.multiscale_every = 2;
    let loader = Loader::new(&ds, cfg).unwrap();
    let batches = epoch_batches(&loader, 0);
    assert_eq!(batches.len(), 10);
    let mut sizes = std::collections::BTreeSet::new();
    for (i, b) in batches.iter().enumerate() {
        assert!(
            b.height % 32 == 0 && (64..=192).contains(&b.height) && b.width == b.height,
            "{}x{}",
            b.width,
            b.height
        );
        if i % 2 == 1 {
            assert_eq!(
                b.height,
                batches[i - 1].height,
                "batches of one group share a size"
            );
        }
        for j in 0..b.num_labels[0] {
            let l = &b.labels[j * 5..j * 5 + 5];
            assert!(
                l[1] >= 0.0 && l[1] <= b.width as f32 && l[2] >= 0.0 && l[2] <= b.height as f32,
                "{l:?}"
            );
        }
        sizes.insert(b.height);
    }
    assert!(sizes.len() > 1, "multiscale never changed the size");
    std::fs::remove_dir_all(out).unwrap();
}

/// Breaks three images: 4 is not a jpeg, 7 is missing, 9 is a jpeg cut to half its bytes.
fn corrupt(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let bad = dir.join("000004.jpg");
    std::fs::write(&bad, b"this is not a jpeg").unwrap();
    let missing = dir.join("000007.jpg");
    std::fs::remove_file(&missing).unwrap();
    let truncated = dir.join("000009.jpg");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    (bad, missing, truncated)
}

/// By default the first unreadable image in the epoch's order is an `Err` naming it, in that
/// batch's place; the batches before it arrive intact.
#[test]
fn an_unreadable_image_is_an_error_naming_the_file() {
    let (out, ds) = tiny_dataset("unreadable");
    let (bad, missing, truncated) = corrupt(&ds.image_dir);
    for (workers, cache) in [(1, false), (3, true)] {
        let mut cfg = config(workers, cache);
        cfg.augment = AugmentConfig::yolox_s(128, 96).no_mosaic();
        cfg.shuffle = false;
        let loader = Loader::new(&ds, cfg).unwrap();
        let got: Vec<_> = loader.epoch(0).collect();
        // Batches of 3 in file order: [1 2 3] [4 5 6] [7 8 9] [10].
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().image_ids, vec![1, 2, 3]);
        let messages: Vec<String> = got[1..3]
            .iter()
            .map(|b| b.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            messages[0].starts_with(&bad.display().to_string()),
            "{}",
            messages[0]
        );
        assert!(messages[0].contains("skip_bad_images"), "{}", messages[0]);
        // Batch 2 holds both the missing and the truncated file: the first one is named.
        assert!(
            messages[1].starts_with(&missing.display().to_string()),
            "{}",
            messages[1]
        );
        assert_eq!(got[3].as_ref().unwrap().image_ids, vec![10]);
        // The truncated jpeg alone is an error too (a decoder that filled the missing half
        // with grey would pass it as an image).
        let mut one = ds.clone();
        one.images.retain(|im| im.id == 9);
        let loader = Loader::new(&one, config(workers, cache)).unwrap();
        let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
        assert!(err.starts_with(&truncated.display().to_string()), "{err}");
        // And the preview path (one batch on the calling thread) says the same.
        assert!(loader.build_batch(0, 0).is_err());
    }
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn corrupt_and_missing_images_are_skipped_and_counted() {
    let (out, ds) = tiny_dataset("corrupt");
    let (bad, missing, truncated) = corrupt(&ds.image_dir);
    for (workers, cache) in [(1, false), (3, true)] {
        let mut cfg = config(workers, cache);
        cfg.skip_bad_images = true;
        // Without mosaic every image is used exactly once, so exactly three samples are lost.
        cfg.augment = AugmentConfig::yolox_s(128, 96).no_mosaic();
        let loader = Loader::new(&ds, cfg).unwrap();
        let mut epoch = loader.epoch(0);
        let batches: Vec<Batch> = epoch.by_ref().map(|b| b.unwrap()).collect();
        let summary = epoch.summary();
        assert_eq!(batches.iter().map(|b| b.batch).sum::<usize>(), 7);
        assert_eq!(summary.images, 7);
        assert_eq!(summary.skipped_samples, 3, "{summary}");
        assert_eq!(
            summary.bad_files,
            vec![bad.clone(), missing.clone(), truncated.clone()]
        );
        let ids: Vec<u64> = batches.iter().flat_map(|b| b.image_ids.clone()).collect();
        assert!(!ids.contains(&4) && !ids.contains(&7) && !ids.contains(&9));
        assert!(summary.to_string().contains("3 skipped"));
    }
    // With mosaic the corrupt files may also be drawn as partners: still no panic, still counted.
    let mut cfg = config(2, false);
    cfg.skip_bad_images = true;
    let loader = Loader::new(&ds, cfg).unwrap();
    let mut epoch = loader.epoch(0);
    let n: usize = epoch.by_ref().map(|b| b.unwrap().batch).sum();
    let summary = epoch.summary();
    assert_eq!(n + summary.skipped_samples, 10);
    assert!(summary.skipped_samples >= 3);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn dropping_an_epoch_early_stops_the_workers() {
    let (out, ds) = tiny_dataset("early");
    let loader = Loader::new(&ds, config(3, false)).unwrap();
    let mut epoch = loader.epoch(0);
    assert!(epoch.next().unwrap().is_ok());
    drop(epoch); // must not hang
    std::fs::remove_dir_all(out).unwrap();
}
