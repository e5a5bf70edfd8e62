//! Claim files of ablation points: a live claim is respected, a stale one (timed out, or of a
//! dead process on this host, or a leftover) is taken over, a held claim is refreshed and
//! removed when dropped, and of several claimants at once exactly one gets it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use ssod::atomic_file::hostname;
use ssod::script::claim::{try_claim, ClaimOutcome, ClaimRules};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod_claim_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A claim file as another process writes it, last refreshed `age` ago.
fn write_claim(path: &Path, host: &str, pid: u32, age: Duration) {
    let text = format!(
        r#"{{"host":"{host}","pid":{pid},"started_unix_s":0,"nonce":"n-{pid}","label":"shard 1/2"}}"#
    );
    std::fs::write(path, text).unwrap();
    set_age(path, age);
}

fn set_age(path: &Path, age: Duration) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn rules() -> ClaimRules {
    ClaimRules {
        stale_after: Duration::from_secs(600),
        heartbeat: Duration::from_secs(60),
    }
}

#[test]
fn a_live_claim_is_respected_and_a_stale_one_taken_over() {
    let dir = temp_dir("live_stale");
    let path = dir.join("point.claim");

    // Another host, refreshed a minute ago: live, whatever its pid.
    write_claim(&path, "another-host", 1, Duration::from_secs(60));
    let before = std::fs::read_to_string(&path).unwrap();
    match try_claim(&path, &rules(), "test").unwrap() {
        ClaimOutcome::Held(h) => {
            let info = h.info.expect("the claim is readable");
            assert_eq!((info.host.as_str(), info.pid), ("another-host", 1));
            assert!(h.idle >= Duration::from_secs(59), "{:?}", h.idle);
        }
        ClaimOutcome::Acquired(_) => panic!("a live claim was taken over"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // Not refreshed for longer than the timeout: taken over.
    set_age(&path, Duration::from_secs(601));
    match try_claim(&path, &rules(), "test").unwrap() {
        ClaimOutcome::Acquired(c) => {
            let old = c.took_over().expect("took over a stale claim");
            assert_eq!(old.info.as_ref().unwrap().host, "another-host");
            let now: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(now["pid"], std::process::id());
            assert_eq!(now["host"], hostname());
        }
        ClaimOutcome::Held(h) => panic!("a stale claim was respected: {}", h.describe()),
    }
    assert!(!path.exists(), "a dropped claim removes its file");

    // This host: live while its process runs, stale at once when it is gone.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    write_claim(&path, hostname(), child.id(), Duration::ZERO);
    assert!(matches!(
        try_claim(&path, &rules(), "test").unwrap(),
        ClaimOutcome::Held(_)
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    match try_claim(&path, &rules(), "test").unwrap() {
        ClaimOutcome::Acquired(c) => {
            assert_eq!(
                c.took_over().unwrap().info.as_ref().unwrap().pid,
                child.id()
            )
        }
        ClaimOutcome::Held(h) => panic!("a dead process's claim was respected: {}", h.describe()),
    }

    // An unreadable claim (its holder may be writing it) is live until the timeout.
    std::fs::write(&path, "").unwrap();
    match try_claim(&path, &rules(), "test").unwrap() {
        ClaimOutcome::Held(h) => assert!(h.info.is_none()),
        ClaimOutcome::Acquired(_) => panic!("a fresh unreadable claim was taken over"),
    }
    set_age(&path, Duration::from_secs(700));
    assert!(matches!(
        try_claim(&path, &rules(), "test").unwrap(),
        ClaimOutcome::Acquired(_)
    ));

    // A claim naming this process that it does not hold is a leftover of an earlier process
    // with the same id; one it holds is live.
    write_claim(&path, hostname(), std::process::id(), Duration::ZERO);
    let held = match try_claim(&path, &rules(), "test").unwrap() {
        ClaimOutcome::Acquired(c) => c,
        ClaimOutcome::Held(h) => panic!("a leftover claim was respected: {}", h.describe()),
    };
    assert!(matches!(
        try_claim(&path, &rules(), "test").unwrap(),
        ClaimOutcome::Held(_)
    ));
    drop(held);
    assert!(matches!(
        try_claim(&path, &rules(), "test").unwrap(),
        ClaimOutcome::Acquired(_)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_held_claim_is_refreshed_and_a_lost_one_left_alone() {
    let dir = temp_dir("refresh");
    let path = dir.join("point.claim");
    let fast = ClaimRules {
        stale_after: Duration::from_secs(600),
        heartbeat: Duration::from_millis(50),
    };
    let ClaimOutcome::Acquired(claim) = try_claim(&path, &fast, "test").unwrap() else {
        panic!("no claim on a fresh path");
    };
    set_age(&path, Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(400));
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(&path).unwrap().modified().unwrap())
        .unwrap_or(Duration::ZERO);
    assert!(age < Duration::from_secs(5), "not refreshed: {age:?} old");
    assert!(!claim.lost());

    // Another process took the file over (as if this one had hung past the timeout).
    write_claim(&path, "another-host", 7, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(400));
    assert!(claim.lost());
    drop(claim);
    let left = std::fs::read_to_string(&path).expect("the other claim stays");
    assert!(left.contains("another-host"), "{left}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn of_several_claimants_at_once_exactly_one_gets_the_claim() {
    let dir = temp_dir("race");
    let path = Arc::new(dir.join("point.claim"));
    let n = 8;
    let start = Arc::new(Barrier::new(n));
    let done = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (path, start, done) = (path.clone(), start.clone(), done.clone());
            std::thread::spawn(move || {
                start.wait();
                let outcome = try_claim(&path, &rules(), "test").unwrap();
                let got = matches!(outcome, ClaimOutcome::Acquired(_));
                // Hold it until every thread has tried.
                done.wait();
                drop(outcome);
                got
            })
        })
        .collect();
    let winners = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&g| g)
        .count();
    assert_eq!(winners, 1);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
