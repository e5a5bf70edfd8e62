//! The selftest's own machinery: the error measure must be able to fail, the CPU side of every
//! parity case must run, and on a machine with a GPU the whole table must pass (without one the
//! GPU test prints its one-line reason and returns).

mod common;

use ssod::backend::conv_geometry::Conv2dGeometry;
use ssod::backend::cuda::{conv2d, elementwise};
use ssod::selftest::{compare, failure_detail, run_cpu, run_cuda};

#[test]
fn compare_passes_equal_values_and_flags_the_first_bad_index() {
    let c = [1.0f32, -2.0, 3.0, 0.0];
    assert_eq!(compare(&c, &c, 1e-4).first_bad, None);
    let mut g = c;
    g[2] = 3.001; // rel 3.3e-4
    let d = compare(&c, &g, 1e-4);
    assert_eq!(d.first_bad, Some(2));
    assert!((d.max_rel - 0.001 / 3.0).abs() < 1e-6, "{d:?}");
    // Small values are judged against 1% of the largest magnitude: |0 - 1e-6| / 0.03 passes.
    g = c;
    g[3] = 1e-6;
    assert_eq!(compare(&c, &g, 1e-4).first_bad, None);
}

#[test]
fn failure_detail_counts_and_lists_the_bad_elements() {
    // Every other element wrong (what a fragment-layout bug gives), one within rounding.
    let c: Vec<f32> = (1..=20).map(|i| i as f32).collect();
    let mut g = c.clone();
    for i in (1..20).step_by(2) {
        g[i] += 1.0;
    }
    g[0] += 1e-6;
    let d = failure_detail(&c, &g, 1e-4);
    assert!(
        d.starts_with("10 of 20 elements over 1e-4 per element: [1] 2.0000e0 vs 3.0000e0, [3]"),
        "{d}"
    );
    assert_eq!(d.matches('[').count(), 6, "{d}");
    assert!(failure_detail(&c, &c, 1e-4).starts_with("0 of 20 elements"));
    assert_eq!(
        failure_detail(&c, &g[..3], 1e-4),
        "20 CPU values, 3 GPU values"
    );
}

#[test]
fn compare_treats_nan_and_length_mismatch_as_failures() {
    assert_eq!(
        compare(&[1.0, 2.0], &[1.0, f32::NAN], 1e-4).first_bad,
        Some(1)
    );
    assert_eq!(compare(&[f32::NAN], &[f32::NAN], 1e-4).first_bad, None);
    assert_eq!(
        compare(&[f32::INFINITY], &[f32::INFINITY], 1e-4).first_bad,
        None
    );
    assert!(compare(&[1.0, 2.0], &[1.0], 1e-4).first_bad.is_some());
}

#[test]
fn every_cpu_reference_of_the_parity_table_runs() {
    let rows = run_cpu(7, |_| {});
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {:?}", r.case, r.error))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(rows.len() >= 40);
}

#[test]
fn launcher_preconditions_are_checked_without_a_gpu() {
    let ok = Conv2dGeometry {
        batch: 1,
        in_channels: 4,
        in_h: 5,
        in_w: 5,
        out_channels: 6,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
        groups: 2,
    };
    assert!(conv2d::check_geometry(&ok).is_ok());
    for bad in [
        Conv2dGeometry { stride: 0, ..ok },
        Conv2dGeometry { groups: 3, ..ok },
        Conv2dGeometry { groups: 0, ..ok },
        Conv2dGeometry {
            kernel_h: 9,
            padding: 0,
            ..ok
        },
        Conv2dGeometry { batch: 0, ..ok },
    ] {
        assert!(conv2d::check_geometry(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        elementwise::broadcast_dims("add", &[2, 3, 1], &[4]).unwrap(),
        vec![2, 3, 4]
    );
    assert!(elementwise::broadcast_dims("add", &[2, 3], &[4]).is_err());
}

#[test]
fn parity_table_passes_on_the_gpu() {
    let Some(dev) = common::gpu_or_skip() else {
        return;
    };
    let rows = run_cuda(&dev, 11, |l| println!("{l}"));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} / {}", r.case, r.output))
        .collect();
    assert!(
        failed.is_empty(),
        "parity failures on {}: {failed:?}",
        dev.name()
    );
}

/// The SimOTA case's inputs must exercise the interesting paths: some candidates, not all, some
/// foreground, GTs that share anchors.
#[test]
fn simota_parity_inputs_are_not_trivial() {
    for name in ["simota release r2.5", "simota 2023 r1.5"] {
        let cases = ssod::selftest::cases();
        let case = cases.iter().find(|c| c.name == name).expect("case");
        let mut rng = ssod::rng::rng_for(0, name);
        let inputs = (case.make)(&mut rng);
        let out = (case.cpu)(&inputs).expect("cpu side");
        let get = |n: &str| &out.values.iter().find(|(k, _)| *k == n).expect(n).1;
        let cand: f32 = get("cand").iter().sum::<f32>() / 5.0; // the pattern repeats per GT
        let fg = get("matched").iter().filter(|&&m| m >= 0.0).count();
        let anchors = get("matched").len();
        assert!(
            cand > 5.0 && (cand as usize) < anchors,
            "{name}: {cand} candidates of {anchors}"
        );
        assert!(fg >= 5, "{name}: only {fg} foreground anchors");
        assert!(
            get("cost").iter().any(|&c| c > 0.0),
            "{name}: no unpenalised cost"
        );
        println!("{name}: {cand} candidates, {fg} foreground of {anchors}");
    }
}
