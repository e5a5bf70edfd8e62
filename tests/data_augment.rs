//! Augmentation keeps boxes on the objects: flip twice is the identity, letterbox maps boxes
//! exactly, an identity affine is the identity, random affines and mosaics keep every object pixel
//! inside a box, HSV follows OpenCV, and the YOLOX fallback when every box vanishes.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ssod::data::augment::*;

const OBJECT: Rgb<u8> = Rgb([250, 240, 230]);
const BACKGROUND: Rgb<u8> = Rgb([20, 30, 40]);

/// A dark image with bright filled rectangles at `boxes_xyxy` (integer pixel edges).
fn scene(w: u32, h: u32, boxes_xyxy: &[[f32; 4]]) -> Sample {
    let mut image = RgbImage::from_pixel(w, h, BACKGROUND);
    for b in boxes_xyxy {
        for y in b[1] as u32..b[3] as u32 {
            for x in b[0] as u32..b[2] as u32 {
                image.put_pixel(x, y, OBJECT);
            }
        }
    }
    Sample {
        image,
        boxes_xyxy: boxes_xyxy.to_vec(),
        classes: vec![0; boxes_xyxy.len()],
    }
}

fn is_object(p: &Rgb<u8>) -> bool {
    p[0] > 200 && p[1] > 190
}

/// Every clearly-object pixel lies inside some box (grown by `tol` px).
fn object_pixels_inside_boxes(img: &RgbImage, boxes_xyxy: &[[f32; 4]], tol: f32) -> (usize, usize) {
    let (mut inside, mut outside) = (0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if is_object(p) {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            if boxes_xyxy.iter().any(|b| {
                px >= b[0] - tol && px <= b[2] + tol && py >= b[1] - tol && py <= b[3] + tol
            }) {
                inside += 1;
            } else {
                outside += 1;
            }
        }
    }
    (inside, outside)
}

#[test]
fn flip_twice_is_identity_and_flip_moves_boxes_with_pixels() {
    let s = scene(97, 61, &[[10.0, 5.0, 30.0, 20.0], [60.0, 40.0, 97.0, 61.0]]);
    let (mut img, mut boxes) = (s.image.clone(), s.boxes_xyxy.clone());
    hflip(&mut img, &mut boxes);
    assert_eq!(boxes[0], [67.0, 5.0, 87.0, 20.0]);
    assert_eq!(object_pixels_inside_boxes(&img, &boxes, 0.0).1, 0);
    assert_ne!(img, s.image);
    hflip(&mut img, &mut boxes);
    assert_eq!(img, s.image);
    assert_eq!(boxes, s.boxes_xyxy);
}

#[test]
fn letterbox_maps_boxes_exactly_top_left_with_pad_114() {
    let s = scene(200, 100, &[[20.0, 10.0, 60.0, 50.0]]);
    let (img, r) = letterbox(&s.image, 160, 160);
    assert_eq!(r, 0.8);
    assert_eq!((img.width(), img.height()), (160, 160));
    let mut boxes = s.boxes_xyxy.clone();
    scale_boxes_xyxy(&mut boxes, r);
    assert_eq!(boxes[0], [16.0, 8.0, 48.0, 40.0]);
    // Inside the mapped box: the object; below the 160×80 picture: padding 114.
    assert!(is_object(img.get_pixel(17, 9)) && is_object(img.get_pixel(47, 39)));
    assert!(!is_object(img.get_pixel(14, 9)) && !is_object(img.get_pixel(17, 41)));
    assert_eq!(img.get_pixel(100, 81), &Rgb([114, 114, 114]));
    assert_eq!(img.get_pixel(159, 159), &Rgb([114, 114, 114]));
}

#[test]
fn affine_with_identity_parameters_is_identity() {
    let s = scene(64, 48, &[[5.0, 6.0, 20.0, 30.0]]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let m = random_affine_matrix(&mut rng, &AffineParams::identity(), 64, 48);
    assert_eq!(m, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
    assert_eq!(warp_affine(&s.image, &m, 64, 48), s.image);
    assert_eq!(affine_boxes_xyxy(&s.boxes_xyxy, &m, 64, 48), s.boxes_xyxy);
}

#[test]
fn random_affine_boxes_follow_the_pixels() {
    let s = scene(
        160,
        120,
        &[
            [20.0, 20.0, 60.0, 45.0],
            [90.0, 60.0, 140.0, 100.0],
            [70.0, 10.0, 80.0, 30.0],
        ],
    );
    let params = AffineParams {
        degrees: 10.0,
        translate: 0.1,
        scale: (0.5, 1.5),
        shear: 2.0,
    };
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = random_affine_matrix(&mut rng, &params, 160, 120);
        let img = warp_affine(&s.image, &m, 160, 120);
        let boxes = affine_boxes_xyxy(&s.boxes_xyxy, &m, 160, 120);
        let (inside, outside) = object_pixels_inside_boxes(&img, &boxes, 1.0);
        assert!(inside > 0, "seed {seed}: no object pixel left");
        assert_eq!(
            outside, 0,
            "seed {seed}: {outside} object pixels outside every box"
        );
        for b in &boxes {
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 160.0 && b[3] <= 120.0,
                "{b:?} not clipped"
            );
        }
    }
}

#[test]
fn mosaic_boxes_lie_inside_the_canvas_and_cover_the_objects() {
    let pieces = [
        scene(200, 150, &[[10.0, 10.0, 50.0, 40.0]]),
        scene(120, 160, &[[30.0, 50.0, 90.0, 80.0]]),
        scene(160, 160, &[[100.0, 100.0, 150.0, 140.0]]),
        scene(
            180,
            100,
            &[[0.0, 0.0, 40.0, 30.0], [150.0, 70.0, 180.0, 100.0]],
        ),
    ];
    let mut cfg = AugmentConfig::yolox_s(128, 96);
    cfg.affine = AffineParams {
        degrees: 5.0,
        translate: 0.1,
        scale: (0.5, 1.5),
        shear: 2.0,
    };
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = mosaic(&pieces, &cfg, &mut rng);
        assert_eq!((m.image.width(), m.image.height()), (128, 96));
        assert_eq!(m.boxes_xyxy.len(), 5);
        for b in &m.boxes_xyxy {
            assert!(
                b[0] >= 0.0
                    && b[1] >= 0.0
                    && b[2] <= 128.0
                    && b[3] <= 96.0
                    && b[0] <= b[2]
                    && b[1] <= b[3],
                "{b:?}"
            );
        }
        let (_, outside) = object_pixels_inside_boxes(&m.image, &m.boxes_xyxy, 1.5);
        assert_eq!(
            outside, 0,
            "seed {seed}: object pixels outside every mosaic box"
        );
    }
}

#[test]
fn mixup_appends_the_partner_boxes_clipped_to_the_image() {
    let cfg = AugmentConfig::yolox_s(128, 96);
    let origin = scene(128, 96, &[[10.0, 10.0, 30.0, 30.0]]);
    let other = scene(
        256,
        192,
        &[[100.0, 100.0, 200.0, 150.0], [0.0, 0.0, 20.0, 20.0]],
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mixed = mixup(origin.clone(), &other, &cfg, &mut rng);
    assert_eq!(mixed.boxes_xyxy.len(), 3);
    assert_eq!(mixed.boxes_xyxy[0], origin.boxes_xyxy[0]);
    for b in &mixed.boxes_xyxy {
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 128.0 && b[3] <= 96.0,
            "{b:?}"
        );
    }
    // 50/50 blend: the origin's object is no longer pure.
    assert_ne!(mixed.image.get_pixel(20, 20), &OBJECT);
}

#[test]
fn hsv_follows_opencv_8bit() {
    assert_eq!(rgb_to_hsv8(255, 0, 0), (0, 255, 255));
    assert_eq!(rgb_to_hsv8(0, 255, 0), (60, 255, 255));
    assert_eq!(rgb_to_hsv8(0, 0, 255), (120, 255, 255));
    assert_eq!(rgb_to_hsv8(128, 128, 128), (0, 0, 128));
    assert_eq!(hsv8_to_rgb(60, 255, 255), [0, 255, 0]);
    let mut img = RgbImage::from_pixel(2, 2, Rgb([255, 0, 0]));
    hsv_shift(&mut img, 60, 0, 0);
    assert_eq!(img.get_pixel(0, 0), &Rgb([0, 255, 0]));
    hsv_shift(&mut img, 0, 0, -55);
    assert_eq!(img.get_pixel(1, 1), &Rgb([0, 200, 0]));
    // H wraps modulo 180.
    let mut img = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
    hsv_shift(&mut img, -60, 0, 0);
    assert_eq!(img.get_pixel(0, 0), &Rgb([0, 0, 255]));
    // Round trip stays within 8-bit rounding.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..500 {
        let c: [u8; 3] = [rng.random(), rng.random(), rng.random()];
        let (h, s, v) = rgb_to_hsv8(c[0], c[1], c[2]);
        let back = hsv8_to_rgb(h, s, v);
        for k in 0..3 {
            assert!(
                (back[k] as i32 - c[k] as i32).abs() <= 4,
                "{c:?} -> {back:?}"
            );
        }
    }
}

#[test]
fn all_boxes_vanishing_falls_back_to_the_original() {
    // 1280-wide image letterboxed to 64: a 2-px box becomes 0.1 px and is filtered out.
    let s = scene(1280, 720, &[[100.0, 100.0, 102.0, 102.0]]);
    let mut cfg = AugmentConfig::none(64, 64);
    cfg.flip_prob = 1.0;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let a = train_transform(s, &cfg, &mut rng);
    assert!(a.fell_back);
    assert_eq!(a.boxes_cxcywh.len(), 1);
    // The un-flipped original box, scaled by 64/1280: centre (5.05, 5.05), size 0.1.
    let b = a.boxes_cxcywh[0];
    assert!(
        (b[0] - 5.05).abs() < 1e-4 && (b[1] - 5.05).abs() < 1e-4 && (b[2] - 0.1).abs() < 1e-5,
        "{b:?}"
    );
}

#[test]
fn train_transform_outputs_cxcywh_in_input_pixels_and_is_seeded() {
    let s = scene(320, 180, &[[32.0, 18.0, 96.0, 54.0], [0.0, 0.0, 1.0, 1.0]]);
    let cfg = AugmentConfig::none(160, 160);
    let a = train_transform(s.clone(), &cfg, &mut ChaCha8Rng::seed_from_u64(0));
    // The 1×1 box is 0.5 px after the ×0.5 letterbox: filtered; the other is kept.
    assert!(!a.fell_back);
    assert_eq!(a.boxes_cxcywh, vec![[32.0, 18.0, 32.0, 18.0]]);
    let full = AugmentConfig::yolox_s(160, 160);
    let x = train_transform(s.clone(), &full, &mut ChaCha8Rng::seed_from_u64(9));
    let y = train_transform(s, &full, &mut ChaCha8Rng::seed_from_u64(9));
    assert_eq!(x, y);
}
