//! The tape: gradient accumulation, detach, no_grad, freed graphs, non-scalar roots, anomaly
//! mode, memory across training steps, and two tiny models that must learn (XOR MLP, bars CNN).
//!
//! A counting global allocator measures live heap bytes; every test here takes `SERIAL` so the
//! count is not disturbed by another test of this binary running at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ssod::autograd::{no_grad, set_anomaly_mode};
use ssod::ops::{self, BatchNormParams, Conv2dParams};
use ssod::{Error, Tensor};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape.to_vec()).unwrap()
}

fn leaf(v: &[f32], shape: &[usize]) -> Tensor {
    t(v, shape).with_requires_grad(true)
}

/// x used twice: y = Σ (x·x + 3x), dy/dx = 2x + 3. Dyadic values make every sum exact in f32.
#[test]
fn shared_input_accumulates_exactly() {
    let _s = serial();
    let xv = [0.5, -1.25, 2.0, 0.0];
    let x = leaf(&xv, &[4]);
    let y = ops::add(
        &ops::mul(&x, &x).unwrap(),
        &ops::mul_scalar(&x, 3.0).unwrap(),
    )
    .unwrap();
    y.sum_all().unwrap().backward().unwrap();
    let want: Vec<f32> = xv.iter().map(|v| 2.0 * v + 3.0).collect();
    assert_eq!(x.grad().unwrap().to_vec(), want);
    // The same tensor as both operands of one op, through a view: Σ x·xᵀ over a [2,2] matrix.
    let m = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    ops::mul(&m, &ops::transpose(&m, 0, 1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    // d/dm[i][j] Σ_ab m[a][b]·m[b][a] = 2·m[j][i]: [[2, 6], [4, 8]].
    assert_eq!(m.grad().unwrap().to_vec(), vec![2.0, 6.0, 4.0, 8.0]);
}

/// `.grad` adds up over two backward passes on fresh graphs; `zero_grad` clears it.
#[test]
fn grad_accumulates_across_passes_and_zero_grad() {
    let _s = serial();
    let x = leaf(&[1.0, -2.0, 3.0], &[3]);
    for _ in 0..2 {
        ops::mul_scalar(&x, 2.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    }
    // Two passes of d(2x)/dx = 2.
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0; 3]);
    x.zero_grad();
    assert!(x.grad().is_none(), "zero_grad left a gradient");
    ops::mul(&x, &x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, -4.0, 6.0]);
}

/// The grad handles of two leaves that got the same upstream gradient must not alias: changing
/// one through `update_values` must not change the other.
#[test]
fn leaf_grads_are_independent() {
    let _s = serial();
    let a = leaf(&[1.0, 2.0], &[2]);
    let b = leaf(&[3.0, 4.0], &[2]);
    ops::add(&a, &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
    assert_eq!(ga.to_vec(), vec![1.0, 1.0]);
    // If this fails the gradient is non-contiguous or shared; either way a clipper that edits
    // grads in place would be wrong.
    ga.update_values(|v| v.iter_mut().for_each(|g| *g = 0.0))
        .unwrap();
    assert_eq!(
        gb.to_vec(),
        vec![1.0, 1.0],
        "b's gradient changed when a's was edited: they share storage"
    );
}

/// A leaf's gradient is contiguous (as its values are), so optimisers and clippers can edit it in
/// place with `update_values`.
#[test]
fn leaf_grad_is_contiguous() {
    let _s = serial();
    let x = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    // Σ w ⊙ xᵀ with w = [[1,2],[3,4],[5,6]]: d/dx[i][j] = w[j][i] → [[1,3,5],[2,4,6]].
    let w = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    ops::mul(&ops::permute(&x, &[1, 0]).unwrap(), &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.to_vec(), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    assert!(g.is_contiguous(), "grad of x has layout {:?}", g.layout());
    g.update_values(|v| v.iter_mut().for_each(|a| *a *= 0.5))
        .expect("in-place edit of a gradient");
}

#[test]
fn detach_stops_gradient() {
    let _s = serial();
    let x = leaf(&[1.5, -2.0], &[2]);
    let d = x.detach();
    assert!(!d.requires_grad(), "detached tensor requires grad");
    assert_eq!(d.to_vec(), x.to_vec());
    // y = Σ detach(x)·x: only the second factor carries a gradient, dy/dx = x (not 2x).
    ops::mul(&d, &x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.5, -2.0]);
    assert!(d.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let _s = serial();
    let x = leaf(&[1.0, 2.0], &[2]);
    let y = no_grad(|| ops::exp(&x).unwrap().sum_all().unwrap());
    assert!(!y.requires_grad(), "result under no_grad requires grad");
    assert!(
        y.is_leaf() && y.op_name().is_none(),
        "a node was recorded under no_grad"
    );
    assert!(
        y.backward().is_err(),
        "backward through a no_grad result should be an error"
    );
    assert!(x.grad().is_none());
    // Recording is back on afterwards.
    let z = ops::exp(&x).unwrap();
    assert!(z.requires_grad() && z.op_name() == Some("exp"));
    // The guard form restores the mode on drop.
    {
        let _g = ssod::autograd::no_grad_guard();
        assert!(!ssod::autograd::is_grad_enabled());
    }
    assert!(ssod::autograd::is_grad_enabled());
}

/// A second backward through a freed graph is an error naming the op.
#[test]
fn second_backward_is_an_error_naming_the_op() {
    let _s = serial();
    let x = leaf(&[0.1, 0.2], &[2]);
    let y = ops::exp(&x).unwrap();
    let loss = ops::sum_all(&y).unwrap();
    loss.backward().unwrap();
    let e = loss.backward().unwrap_err();
    assert!(
        matches!(e, Error::Autograd(_)) && e.to_string().contains("`sum`"),
        "second backward on the root: {e}"
    );
    // A fresh root over the freed intermediate y: the error names `exp`.
    let e = ops::sum_all(&y).unwrap().backward().unwrap_err();
    assert!(
        e.to_string().contains("`exp`"),
        "backward through a freed exp: {e}"
    );
}

#[test]
fn backward_on_non_scalar_is_an_error() {
    let _s = serial();
    let x = leaf(&[1.0, 2.0, 3.0], &[3]);
    let e = ops::exp(&x).unwrap().backward().unwrap_err();
    assert!(
        matches!(e, Error::Autograd(_)) && e.to_string().contains("[3]"),
        "{e}"
    );
}

/// Anomaly mode names the first op that produced a NaN (forward) or an Inf (backward).
#[test]
fn anomaly_mode_names_the_first_bad_op() {
    let _s = serial();
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            set_anomaly_mode(false);
        }
    }
    let _reset = Reset;
    set_anomaly_mode(true);
    let x = leaf(&[1.0, 2.0], &[2]);
    // −x is fine; log(−x) is NaN: the error names `log`.
    let nx = ops::neg(&x).unwrap();
    let e = ops::log(&nx).unwrap_err();
    match &e {
        Error::Anomaly { op, what, .. } => assert!(op == "log" && what == "NaN", "{e}"),
        other => panic!("expected an anomaly error, got {other}"),
    }
    // Backward: sqrt(0) is fine forward (0) but its gradient 0.5/0 is Inf.
    let z = leaf(&[0.0, 4.0], &[2]);
    let e = ops::sqrt(&z)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err();
    assert!(
        e.to_string().contains("sqrt") && e.to_string().contains("backward"),
        "{e}"
    );
    set_anomaly_mode(false);
    // Off: the NaN goes through silently.
    assert!(ops::log(&nx).unwrap().to_vec().iter().all(|v| v.is_nan()));
}

/// A tiny conv model, its parameters and one SGD step.
struct TinyCnn {
    w1: Tensor,
    gamma: Tensor,
    beta: Tensor,
    rm: Tensor,
    rv: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl TinyCnn {
    fn new(channels: usize, seed: u64) -> Self {
        let w1 = ops::mul_scalar(&Tensor::randn([channels, 1, 3, 3], seed), 0.5).unwrap();
        let w2 = ops::mul_scalar(&Tensor::randn([2, channels], seed + 1), 0.5).unwrap();
        TinyCnn {
            w1: w1.with_requires_grad(true),
            gamma: Tensor::ones([channels]).with_requires_grad(true),
            beta: Tensor::zeros([channels]).with_requires_grad(true),
            rm: Tensor::zeros([channels]),
            rv: Tensor::ones([channels]),
            w2: w2.with_requires_grad(true),
            b2: Tensor::zeros([2]).with_requires_grad(true),
        }
    }
    fn params(&self) -> [&Tensor; 5] {
        [&self.w1, &self.gamma, &self.beta, &self.w2, &self.b2]
    }
    /// `[N, 1, H, W] -> [N, 2]` logits.
    fn forward(&self, x: &Tensor, training: bool) -> Tensor {
        let h = ops::conv2d(
            x,
            &self.w1,
            None,
            Conv2dParams {
                stride: 1,
                padding: 1,
                groups: 1,
            },
        )
        .unwrap();
        let bn = BatchNormParams {
            training,
            momentum: 0.1,
            eps: 1e-3,
        };
        let h = ops::silu(
            &ops::batch_norm2d(&h, &self.gamma, &self.beta, &self.rm, &self.rv, bn).unwrap(),
        )
        .unwrap();
        let n = x.dims()[0];
        let pooled =
            ops::reshape(&ops::global_avg_pool2d(&h).unwrap(), [n, self.w1.dims()[0]]).unwrap();
        ops::linear(&pooled, &self.w2, Some(&self.b2)).unwrap()
    }
    fn step(&self, x: &Tensor, labels: &Tensor, lr: f32) -> f32 {
        let loss =
            ops::mean_all(&ops::cross_entropy(&self.forward(x, true), labels).unwrap()).unwrap();
        loss.backward().unwrap();
        sgd(&self.params(), lr);
        loss.item().unwrap()
    }
}

fn sgd(params: &[&Tensor], lr: f32) {
    for p in params {
        let g = p.grad().expect("parameter got a gradient").to_vec();
        p.update_values(|v| v.iter_mut().zip(&g).for_each(|(w, g)| *w -= lr * g))
            .unwrap();
        p.zero_grad();
    }
}

/// Bars on 8×8: class 0 a vertical bar, class 1 a horizontal bar, at varying positions, with
/// faint deterministic noise.
fn bars(n: usize) -> (Tensor, Tensor) {
    let mut v = vec![0f32; n * 64];
    let mut labels = vec![];
    for i in 0..n {
        let (class, pos) = (i % 2, (i / 2) % 8);
        for r in 0..8 {
            for c in 0..8 {
                let on = if class == 0 { c == pos } else { r == pos };
                let noise = (((i * 64 + r * 8 + c) * 2654435761) % 1000) as f32 / 1000.0 * 0.2;
                v[i * 64 + r * 8 + c] = if on { 1.0 } else { 0.0 } + noise;
            }
        }
        labels.push(class as f32);
    }
    (t(&v, &[n, 1, 8, 8]), t(&labels, &[n]))
}

/// 50 training steps of a tiny CNN: live heap bytes after step 50 are what they were after step
/// 10 (graphs are freed by backward, nothing accumulates). The control keeps 20 forward graphs
/// alive and must see the count grow, so the measurement itself can fail.
#[test]
fn memory_does_not_grow_over_training_steps() {
    let _s = serial();
    let model = TinyCnn::new(8, 7);
    let (x, labels) = bars(16);
    let mut at10 = 0;
    for step in 1..=50 {
        model.step(&x, &labels, 0.05);
        if step == 10 {
            at10 = LIVE_BYTES.load(Ordering::Relaxed);
        }
    }
    let at50 = LIVE_BYTES.load(Ordering::Relaxed);
    println!("live heap bytes: after step 10 {at10}, after step 50 {at50}");
    // One forward graph holds ≥ 16·8·64·4 B = 32 KiB per saved activation; a leak of 40 graphs
    // would be megabytes.
    assert!(
        at50 - at10 < 64 * 1024,
        "live heap grew by {} bytes over 40 training steps",
        at50 - at10
    );

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let kept: Vec<Tensor> = (0..20)
        .map(|_| {
            ops::mean_all(&ops::cross_entropy(&model.forward(&x, true), &labels).unwrap()).unwrap()
        })
        .collect();
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    assert!(
        held > 20 * 32 * 1024,
        "control: 20 live graphs only hold {held} bytes; the counter does not see them"
    );
    drop(kept);
    for p in model.params() {
        p.zero_grad();
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed) - before;
    assert!(
        after < 16 * 1024,
        "dropping 20 unused graphs left {after} bytes"
    );
}

/// A graph touching most ops, as a scalar.
fn many_ops_loss(x: &Tensor, w: &Tensor) -> Tensor {
    let h = ops::conv2d(
        x,
        w,
        None,
        Conv2dParams {
            stride: 2,
            padding: 1,
            groups: 1,
        },
    )
    .unwrap(); // [2,4,4,4]
    let h = ops::upsample_nearest2x(
        &ops::max_pool2d(
            &h,
            ops::Pool2dParams {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        )
        .unwrap(),
    )
    .unwrap();
    let h = ops::avg_pool2d(
        &ops::tanh(&h).unwrap(),
        ops::Pool2dParams {
            kernel: 3,
            stride: 1,
            padding: 1,
        },
    )
    .unwrap();
    let p = ops::permute(&h, &[0, 2, 3, 1]).unwrap(); // [2,4,4,4]
    let s = ops::slice_step(&p, 1, 0, 4, 2).unwrap();
    let flat = ops::reshape(&s, [16, 4]).unwrap();
    let parts = ops::split(&flat, &[1, 3], 1).unwrap();
    let c = ops::cat(&[parts[1].clone(), parts[0].clone()], 1).unwrap();
    let m = ops::matmul(&c, &ops::transpose(&c, 0, 1).unwrap()).unwrap(); // [16,16]
    let sm = ops::log_softmax(&ops::softmax(&m, 0).unwrap(), -1).unwrap();
    let idx = Tensor::from_vec(vec![0.0, 3.0, 3.0], [3]).unwrap();
    let g = ops::index_select(&sm, 1, &idx).unwrap();
    let gi = Tensor::from_vec(vec![1.0; 48], [16, 3]).unwrap();
    let g = ops::gather(&g, 1, &gi).unwrap();
    // (weighted: the unweighted form leaks, see bce_without_weight_graph_is_freed_when_dropped)
    let half = Tensor::full([16, 3], 0.5);
    let bce = ops::bce_with_logits(&g, &ops::sigmoid(&g).unwrap().detach(), Some(&half)).unwrap();
    let l1 = ops::smooth_l1_loss(&c, &ops::exp(&c).unwrap(), 1.0).unwrap();
    let cs = ops::cosine_similarity(&c, &ops::narrow(&c, 0, 0, 1).unwrap(), -1).unwrap();
    let mx = ops::max_axis(
        &ops::maximum(&l1, &ops::silu(&l1).unwrap()).unwrap(),
        1,
        false,
    )
    .unwrap();
    let total = ops::add(&ops::sum_all(&bce).unwrap(), &ops::mean_all(&mx).unwrap()).unwrap();
    ops::sub(&total, &ops::sum(&cs, &[0], false).unwrap()).unwrap()
}

/// Graphs of (almost) every op are freed both by backward and by being dropped unused: no node
/// keeps itself alive through a saved tensor.
#[test]
fn graphs_of_all_ops_are_freed() {
    let _s = serial();
    let x = Tensor::randn([2, 3, 8, 8], 21).with_requires_grad(true);
    let w = Tensor::randn([4, 3, 3, 3], 22).with_requires_grad(true);
    // Warm up (thread pools, lazily allocated buffers).
    many_ops_loss(&x, &w).backward().unwrap();
    x.zero_grad();
    w.zero_grad();
    let start = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..20 {
        many_ops_loss(&x, &w).backward().unwrap();
        x.zero_grad();
        w.zero_grad();
    }
    let after_backward = LIVE_BYTES.load(Ordering::Relaxed) - start;
    for _ in 0..20 {
        drop(many_ops_loss(&x, &w));
    }
    let after_drop = LIVE_BYTES.load(Ordering::Relaxed) - start;
    println!("many ops: live bytes +{after_backward} after 20 backward passes, +{after_drop} after 20 dropped graphs");
    assert!(
        after_backward < 16 * 1024,
        "20 backward passes left {after_backward} bytes"
    );
    assert!(
        after_drop < 16 * 1024,
        "20 dropped graphs left {after_drop} bytes"
    );
}

/// bce_with_logits without weights returns `raw` itself as its output and its backward closure
/// captures `raw`: output → node → closure → output is an `Arc` cycle, so a graph that is dropped
/// without backward (a validation loss computed with grad on) is never freed, with everything
/// upstream of it.
#[test]
fn bce_without_weight_graph_is_freed_when_dropped() {
    let _s = serial();
    let x = Tensor::randn([16, 4], 31).with_requires_grad(true);
    let y = Tensor::rand([16, 4], 32);
    let loss = || ops::bce_with_logits(&ops::tanh(&x).unwrap(), &y, None).unwrap();
    drop(loss());
    let start = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..20 {
        drop(loss());
    }
    let grown = LIVE_BYTES.load(Ordering::Relaxed) - start;
    assert!(
        grown < 1024,
        "20 dropped bce_with_logits graphs left {grown} bytes"
    );
}

/// 2-8-1 MLP (tanh) with hand-written SGD learns XOR to 100%.
#[test]
fn mlp_learns_xor() {
    let _s = serial();
    let x = t(&[0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2]);
    let y = t(&[0., 1., 1., 0.], &[4, 1]);
    let w1 = Tensor::randn([8, 2], 11).with_requires_grad(true);
    let b1 = Tensor::zeros([8]).with_requires_grad(true);
    let w2 = ops::mul_scalar(&Tensor::randn([1, 8], 12), 0.5)
        .unwrap()
        .with_requires_grad(true);
    let b2 = Tensor::zeros([1]).with_requires_grad(true);
    let forward = || {
        ops::linear(
            &ops::tanh(&ops::linear(&x, &w1, Some(&b1)).unwrap()).unwrap(),
            &w2,
            Some(&b2),
        )
        .unwrap()
    };
    let mut loss = f32::NAN;
    for _ in 0..2000 {
        let l = ops::mean_all(&ops::bce_with_logits(&forward(), &y, None).unwrap()).unwrap();
        l.backward().unwrap();
        sgd(&[&w1, &b1, &w2, &b2], 0.5);
        loss = l.item().unwrap();
    }
    let logits = no_grad(forward).to_vec();
    let pred: Vec<f32> = logits.iter().map(|&l| (l > 0.0) as u8 as f32).collect();
    println!("xor: final loss {loss}, logits {logits:?}");
    assert_eq!(
        pred,
        vec![0., 1., 1., 0.],
        "XOR not learned: loss {loss}, logits {logits:?}"
    );
    assert!(loss < 0.05, "XOR loss still {loss}");
}

/// conv2d + batch_norm2d + silu + global_avg_pool2d + linear, cross_entropy: vertical vs
/// horizontal bars to 100% train accuracy, judged in eval mode (running statistics).
#[test]
fn cnn_learns_bars() {
    let _s = serial();
    let model = TinyCnn::new(4, 3);
    let (x, labels) = bars(16);
    let mut loss = f32::NAN;
    for _ in 0..300 {
        loss = model.step(&x, &labels, 0.2);
    }
    let logits = no_grad(|| model.forward(&x, false)).to_vec();
    let want = labels.to_vec();
    let correct = logits
        .chunks(2)
        .zip(&want)
        .filter(|(l, &c)| ((l[1] > l[0]) as u8 as f32) == c)
        .count();
    println!("bars: final loss {loss}, eval accuracy {correct}/16");
    assert_eq!(
        correct, 16,
        "bars: eval accuracy {correct}/16, train loss {loss}"
    );
}
