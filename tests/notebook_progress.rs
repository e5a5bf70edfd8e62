//! The progress helper: its status line (counts, percentage, ETA, loss, throughput).

use ssod::script::progress::Progress;

#[test]
fn status_line_has_counts_eta_loss_and_throughput() {
    let mut p = Progress::new(10, "train").with_interval(std::time::Duration::from_secs(3600));
    assert!(p.status().starts_with("train 0/10 (0%)"), "{}", p.status());
    assert!(p.status().contains("ETA ?"), "{}", p.status());
    p.tick(5, Some(0.25), Some(12.5));
    let s = p.status();
    assert!(s.starts_with("train 5/10 (50%)"), "{s}");
    assert!(s.contains("ETA 0m00s"), "{s}");
    assert!(s.contains("loss 0.2500") && s.contains("12.5/s"), "{s}");
    // A tick without loss keeps the last one; counts never pass the total in the percentage.
    p.tick(20, None, None);
    let s = p.status();
    assert!(
        s.starts_with("train 25/10 (100%)") && s.contains("loss 0.2500"),
        "{s}"
    );
    p.finish();
    assert!(!p.interrupted());

    let mut u = Progress::new(0, "eval");
    u.tick(3, None, None);
    assert!(u.status().starts_with("eval 3 elapsed"), "{}", u.status());
}
