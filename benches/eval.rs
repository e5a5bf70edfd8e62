//! COCO evaluation time: 5,000 images × 100 detections (500,000 detections), bbox, caps
//! 100/300/1000, as `ssod::eval::evaluate` runs it in memory (validation, hotcoco matching and
//! accumulation, the 12 stats). Two label sets: one class (FloW-like) and 80 classes (COCO-like).
//!
//! Run: `cargo bench --bench eval` (prints the median of 3 runs per case).

use std::path::PathBuf;
use std::time::Instant;

use rand::Rng;
use ssod::data::dataset::{Annotation, Category, CocoDataset, Detection, ImageInfo};
use ssod::eval::{evaluate, MaxDets};

fn case(n_images: u64, dets_per_image: usize, n_classes: u64) -> (CocoDataset, Vec<Detection>) {
    let mut rng = ssod::rng::rng_for(0, "bench-eval");
    let mut annotations = Vec::new();
    let mut detections = Vec::new();
    for image_id in 1..=n_images {
        let mut boxes = Vec::new();
        for _ in 0..rng.random_range(1..12) {
            let (w, h) = (rng.random_range(6.0..200.0), rng.random_range(6.0..200.0));
            let bbox_xywh = [
                rng.random_range(0.0..1000.0),
                rng.random_range(0.0..500.0),
                w,
                h,
            ];
            let category_id = rng.random_range(1..=n_classes);
            annotations.push(Annotation {
                id: annotations.len() as u64 + 1,
                image_id,
                category_id,
                bbox_xywh,
                area: w * h,
                iscrowd: 0,
            });
            boxes.push((bbox_xywh, category_id));
        }
        for _ in 0..dets_per_image {
            let ([x, y, w, h], c) = boxes[rng.random_range(0..boxes.len())];
            let jitter = rng.random_range(-0.3..0.3);
            detections.push(Detection {
                image_id,
                category_id: if rng.random_bool(0.8) {
                    c
                } else {
                    rng.random_range(1..=n_classes)
                },
                bbox_xywh: [x + jitter * w, y - jitter * h, w * (1.0 + jitter), h],
                score: rng.random_range(0.0..1.0),
            });
        }
    }
    let gt = CocoDataset {
        images: (1..=n_images)
            .map(|id| ImageInfo {
                id,
                file_name: format!("{id}.jpg"),
                width: 1280,
                height: 720,
            })
            .collect(),
        annotations,
        categories: (1..=n_classes)
            .map(|id| Category {
                id,
                name: format!("class{id}"),
                supercategory: None,
            })
            .collect(),
        image_dir: PathBuf::new(),
    };
    (gt, detections)
}

fn main() {
    let threads = rayon::current_num_threads();
    for n_classes in [1, 80] {
        let (gt, detections) = case(5_000, 100, n_classes);
        let mut times = Vec::new();
        let mut ap = 0.0;
        for _ in 0..3 {
            let start = Instant::now();
            let metrics = evaluate(&gt, &detections, MaxDets::STUDY).expect("evaluate");
            times.push(start.elapsed().as_secs_f64());
            ap = metrics.ap();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "eval 5000 images x 100 detections, {n_classes:>2} class(es), {} gt, {threads} threads: median {:.3} s (min {:.3}, max {:.3}), AP {ap:.4}",
            gt.annotations.len(),
            times[1],
            times[0],
            times[2]
        );
    }
}
