//! Parity cases: BCE, box losses, SimOTA, cosine similarity.

use super::*;

// ---- losses ----

pub(super) fn bce_case(name: &'static str, weighted: bool) -> Case {
    let n = 1001usize;
    Case {
        name,
        kernels: &["bce_with_logits_fwd_f32", "bce_with_logits_bwd_f32"],
        shape: format!("[{n}]"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut x = uniform(rng, n, -8.0, 8.0);
            // Extreme logits (±300): the stable form must not overflow on either side.
            for (i, v) in x.iter_mut().enumerate().take(20) {
                *v = if i % 2 == 0 {
                    300.0 - i as f32
                } else {
                    -300.0 + i as f32
                };
            }
            vec![
                x,
                uniform(rng, n, 0.0, 1.0),
                uniform(rng, n, 0.1, 2.0),
                uniform(rng, n, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                let mut ts = vec![tensor(&inp[0], &[n])?, tensor(&inp[1], &[n])?];
                if weighted {
                    ts.push(tensor(&inp[2], &[n])?);
                }
                with_grads(&ts, &inp[3], |t| {
                    ops::bce_with_logits(&t[0], &t[1], t.get(2))
                })
            })?;
            let mut v = vec![("y", y), ("dx", g[0].clone()), ("dt", g[1].clone())];
            if weighted {
                v.push(("dw", g[2].clone()));
            }
            Ok(out(v, ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, t, w, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
                dev.upload(&inp[3])?,
            );
            let wo = weighted.then_some(&w);
            let ((y, (dx, dt, dw)), ms) = timed(dev, || {
                Ok((
                    loss::bce_with_logits_fwd(dev, &x, &t, wo)?,
                    loss::bce_with_logits_bwd(dev, &g, &x, &t, wo)?,
                ))
            })?;
            let mut v = vec![
                ("y", dev.download(&y)?),
                ("dx", dev.download(&dx)?),
                ("dt", dev.download(&dt)?),
            ];
            if let Some(dw) = dw {
                v.push(("dw", dev.download(&dw)?));
            }
            Ok(out(v, ms))
        }),
    }
}

/// Random xyxy target boxes and predictions around them: some close (IoU > 0.5, CIoU's α gate
/// open), some far (no overlap).
fn box_pairs(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut p, mut t) = (Vec::with_capacity(4 * n), Vec::with_capacity(4 * n));
    for i in 0..n {
        let (x1, y1) = (
            rng.random_range(0.0..200.0f32),
            rng.random_range(0.0..200.0f32),
        );
        let (w, h) = (
            rng.random_range(4.0..60.0f32),
            rng.random_range(4.0..60.0f32),
        );
        t.extend_from_slice(&[x1, y1, x1 + w, y1 + h]);
        let spread = if i % 3 == 0 { 0.6 } else { 0.15 };
        let j = |rng: &mut ChaCha8Rng, s: f32| rng.random_range(-spread..spread) * s;
        let (px1, py1) = (x1 + j(rng, w), y1 + j(rng, h));
        let (pw, ph) = (
            w * rng.random_range(0.6..1.5f32),
            h * rng.random_range(0.6..1.5f32),
        );
        p.extend_from_slice(&[px1, py1, px1 + pw, py1 + ph]);
    }
    (p, t)
}

pub(super) fn box_case(name: &'static str, kind: BoxLossKind, k: loss::BoxLossKernel) -> Case {
    let n = 257usize;
    Case {
        name,
        kernels: &["box_loss_fwd_bwd_f32"],
        shape: format!("[{n}, 4] xyxy"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let (p, t) = box_pairs(rng, n);
            vec![p, t, uniform(rng, n, -1.0, 1.0)]
        }),
        cpu: Box::new(move |inp| {
            let ((l, g), ms) = timed_cpu(|| {
                let target = Tensor::from_vec(inp[1].clone(), [n, 4])?;
                with_grads(&[tensor(&inp[0], &[n, 4])?], &inp[2], |t| {
                    box_loss(&t[0], &target, kind)
                })
            })?;
            Ok(out(vec![("loss", l), ("dpred", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (p, t, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((l, d), ms) = timed(dev, || loss::box_loss_fwd_bwd(dev, &p, &t, &g, k))?;
            Ok(out(
                vec![("loss", dev.download(&l)?), ("dpred", dev.download(&d)?)],
                ms,
            ))
        }),
    }
}

// ---- SimOTA ----

/// Anchors of a 160×96 input at strides 8, 16, 32 (315 anchors), 3 classes, 5 GTs; predictions
/// are boxes near the GTs for a third of the anchors.
fn simota_inputs(rng: &mut ChaCha8Rng) -> Inputs {
    let (iw, ih) = (160usize, 96usize);
    let mut grids = Vec::new();
    let mut strides = Vec::new();
    for s in [8usize, 16, 32] {
        for gy in 0..ih / s {
            for gx in 0..iw / s {
                grids.extend_from_slice(&[gx as f32, gy as f32]);
                strides.push(s as f32);
            }
        }
    }
    let a = strides.len();
    let g = 5usize;
    let c = 3usize;
    let mut gt = Vec::new();
    let mut gt_cls = Vec::new();
    for i in 0..g {
        let (w, h) = (
            rng.random_range(10.0..50.0f32),
            rng.random_range(10.0..40.0f32),
        );
        let (cx, cy) = (
            rng.random_range(w / 2.0..iw as f32 - w / 2.0),
            rng.random_range(h / 2.0..ih as f32 - h / 2.0),
        );
        gt.extend_from_slice(&[cx, cy, w, h]);
        gt_cls.push((i % c) as f32);
    }
    let mut pred = Vec::new();
    for i in 0..a {
        let (ax, ay) = (
            (grids[2 * i] + 0.5) * strides[i],
            (grids[2 * i + 1] + 0.5) * strides[i],
        );
        if i % 3 == 0 {
            let k = rng.random_range(0..g);
            let b = &gt[4 * k..4 * k + 4];
            pred.extend_from_slice(&[
                b[0] + rng.random_range(-4.0..4.0f32),
                b[1] + rng.random_range(-4.0..4.0f32),
                b[2] * rng.random_range(0.7..1.3f32),
                b[3] * rng.random_range(0.7..1.3f32),
            ]);
        } else {
            pred.extend_from_slice(&[
                ax,
                ay,
                rng.random_range(4.0..40.0f32),
                rng.random_range(4.0..40.0f32),
            ]);
        }
    }
    vec![
        pred,
        uniform(rng, a * c, -4.0, 4.0),
        uniform(rng, a, -4.0, 4.0),
        grids,
        strides,
        gt,
        gt_cls,
        vec![c as f32],
    ]
}

fn boxes4(v: &[f32]) -> Vec<[f32; 4]> {
    v.chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect()
}

/// The cost matrix `[G, A]` as src/detect/simota.rs computes it (+inf off the candidates).
fn simota_cost_cpu(inp: &Inputs, cfg: &SimOtaConfig) -> Vec<f32> {
    let (pred, cls, obj, grids, strides) = (boxes4(&inp[0]), &inp[1], &inp[2], &inp[3], &inp[4]);
    let gt = boxes4(&inp[5]);
    let c = inp[7][0] as usize;
    let a = strides.len();
    let sig = crate::ops::sigmoid_scalar;
    let logc = |v: f32| v.ln().max(-100.0);
    let penalty = if cfg.mode == SimOtaMode::Release {
        100_000.0f32
    } else {
        1_000_000.0
    };
    let mut cost = vec![f32::INFINITY; gt.len() * a];
    for ai in 0..a {
        let s = strides[ai];
        let (xc, yc) = ((grids[2 * ai] + 0.5) * s, (grids[2 * ai + 1] + 0.5) * s);
        let r = cfg.center_radius * s;
        // YOLOX's form, edges rounded first (not |xc − cx| < r, which differs one ulp from an edge)
        let in_ctr = |b: &[f32; 4]| -> bool {
            (xc - (b[0] - r))
                .min((b[0] + r) - xc)
                .min(yc - (b[1] - r))
                .min((b[1] + r) - yc)
                > 0.0
        };
        let prior = |b: &[f32; 4]| -> (bool, bool) {
            match cfg.mode {
                SimOtaMode::Release => {
                    let ib = (xc - (b[0] - b[2] / 2.0))
                        .min((b[0] + b[2] / 2.0) - xc)
                        .min(yc - (b[1] - b[3] / 2.0))
                        .min((b[1] + b[3] / 2.0) - yc)
                        > 0.0;
                    (ib || in_ctr(b), ib && in_ctr(b))
                }
                SimOtaMode::Centre2023 => (in_ctr(b), in_ctr(b)),
            }
        };
        if !gt.iter().any(|b| prior(b).0) {
            continue;
        }
        let o = sig(obj[ai]);
        let p: Vec<f32> = (0..c).map(|k| (sig(cls[ai * c + k]) * o).sqrt()).collect();
        let neg: f32 = p.iter().map(|&pk| -logc(1.0 - pk)).sum();
        for (gi, b) in gt.iter().enumerate() {
            let k = inp[6][gi] as usize;
            let cls_cost = neg + logc(1.0 - p[k]) - logc(p[k]);
            let v = iou_cxcywh(b, &pred[ai]);
            let np = if prior(b).1 { 0.0 } else { penalty };
            cost[gi * a + ai] = cls_cost + 3.0 * -(v + 1e-8).ln() + np;
        }
    }
    cost
}

/// The cost matrix as three outputs, so that each is judged at its own scale: the costs without
/// the prior's penalty (~1..30), the penalised ones (~1e5..1e6), and the candidate pattern
/// (1 where finite). Entries outside each part are 0 on both sides.
fn split_cost(cost: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let part = |keep: &dyn Fn(f32) -> bool| -> Vec<f32> {
        cost.iter()
            .map(|&c| if keep(c) { c } else { 0.0 })
            .collect()
    };
    (
        part(&|c| c.is_finite() && c < 5e4),
        part(&|c| c.is_finite() && c >= 5e4),
        cost.iter().map(|c| c.is_finite() as u8 as f32).collect(),
    )
}

pub(super) fn simota_case(name: &'static str, cfg: SimOtaConfig) -> Case {
    let prior = match cfg.mode {
        SimOtaMode::Release => simota::SimOtaPrior::Release,
        SimOtaMode::Centre2023 => simota::SimOtaPrior::Centre2023,
    };
    Case {
        name,
        kernels: &[
            "simota_cost_f32",
            "simota_dynamic_k_f32",
            "simota_resolve_f32",
        ],
        shape: "A 315 (160x96, s8/16/32), G 5, C 3".into(),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(simota_inputs),
        cpu: Box::new(move |inp| {
            let ((cost, asg, a), ms) = timed_cpu(|| {
                let pred = boxes4(&inp[0]);
                let grids: Vec<(f32, f32)> = inp[3].chunks_exact(2).map(|g| (g[0], g[1])).collect();
                let gt = boxes4(&inp[5]);
                let gt_classes: Vec<usize> = inp[6].iter().map(|&k| k as usize).collect();
                let si = SimOtaInput {
                    pred_boxes_cxcywh: &pred,
                    cls_logits: &inp[1],
                    obj_logits: &inp[2],
                    grids: &grids,
                    strides: &inp[4],
                    gt_boxes_cxcywh: &gt,
                    gt_classes: &gt_classes,
                    num_classes: inp[7][0] as usize,
                };
                Ok((
                    simota_cost_cpu(inp, &cfg),
                    simota_assign(&si, &cfg)?,
                    pred.len(),
                ))
            })?;
            // matched GT per anchor (−1 background) and its IoU, in the GPU's layout.
            let mut matched = vec![-1f32; a];
            let mut piou = vec![0f32; a];
            for (j, ai) in asg.fg_indices().into_iter().enumerate() {
                matched[ai] = asg.matched_gt[j] as f32;
                piou[ai] = asg.pred_ious[j];
            }
            let (plain, pen, cand) = split_cost(&cost);
            Ok(out(
                vec![
                    ("cost", plain),
                    ("cost_pen", pen),
                    ("cand", cand),
                    ("matched", matched),
                    ("pred_iou", piou),
                ],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let a = inp[4].len();
            let up = |i: usize| dev.upload(&inp[i]);
            let (pred, cls, obj, grids, strides) = (up(0)?, up(1)?, up(2)?, up(3)?, up(4)?);
            let gt = boxes4(&inp[5]);
            let gt_classes: Vec<usize> = inp[6].iter().map(|&k| k as usize).collect();
            let di = simota::SimOtaDeviceInput {
                pred_boxes: &pred,
                cls_logits: &cls,
                obj_logits: &obj,
                grids: &grids,
                strides: &strides,
                num_anchors: a,
                num_classes: inp[7][0] as usize,
            };
            let ((m, asg), ms) = timed(dev, || {
                let m = simota::cost(dev, &di, &gt, &gt_classes, prior, cfg.center_radius)?;
                let asg = simota::assign_from_cost(dev, &m)?;
                Ok((m, asg))
            })?;
            let matched: Vec<f32> = dev
                .download(&asg.matched)?
                .into_iter()
                .map(|m| m as f32)
                .collect();
            let (plain, pen, cand) = split_cost(&dev.download(&m.cost)?);
            Ok(out(
                vec![
                    ("cost", plain),
                    ("cost_pen", pen),
                    ("cand", cand),
                    ("matched", matched),
                    ("pred_iou", dev.download(&asg.pred_iou)?),
                ],
                ms,
            ))
        }),
    }
}

// ---- similarity ----

pub(super) fn cosine_case() -> Case {
    let dims = [3usize, 16, 5];
    let (outer, len, inner) = (3usize, 16usize, 5usize);
    let n = outer * len * inner;
    Case {
        name: "cosine_similarity fwd+bwd",
        kernels: &["cosine_similarity_fwd_f32", "cosine_similarity_bwd_f32"],
        shape: format!("{dims:?} axis 1"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut a = uniform(rng, n, -1.0, 1.0);
            // One all-zero vector: its norm is clamped at eps (the clamped gradient rule).
            for i in 0..len {
                a[i * inner] = 0.0;
            }
            let mut g = uniform(rng, outer * inner, -1.0, 1.0);
            // Its gradient is b/(eps·|b|) ~ 1e8·g: a tiny g keeps it at the scale of the others,
            // so the error floor (1% of the largest value) stays meaningful for every element.
            g[0] = 1e-8;
            vec![a, uniform(rng, n, -1.0, 1.0), g]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(
                    &[tensor(&inp[0], &dims)?, tensor(&inp[1], &dims)?],
                    &inp[2],
                    |t| ops::cosine_similarity(&t[0], &t[1], 1),
                )
            })?;
            Ok(out(
                vec![("y", y), ("da", g[0].clone()), ("db", g[1].clone())],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let (a, b, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((y, (da, db)), ms) = timed(dev, || {
                Ok((
                    similarity::cosine_similarity_fwd(dev, &a, &b, outer, len, inner)?,
                    similarity::cosine_similarity_bwd(dev, &g, &a, &b, outer, len, inner)?,
                ))
            })?;
            Ok(out(
                vec![
                    ("y", dev.download(&y)?),
                    ("da", dev.download(&da)?),
                    ("db", dev.download(&db)?),
                ],
                ms,
            ))
        }),
    }
}
