//! The corruption harness of `tests/fuzz_inputs.rs`: a [`Target`] is a parser reached through a
//! file (a sample of its format, a seeded mutator and the call), [`run_campaign`] feeds it
//! mutants and counts the failures: a panic, a call that takes longer than [`HANG`], or an
//! error that does not name the file. Calls run on a worker thread under `catch_unwind`, so a
//! panic or a hang is recorded with its input instead of ending the test.
//!
//! Counts scale with `SSOD_FUZZ_SCALE` (a factor, default 1), the seed is `SSOD_FUZZ_SEED`
//! (default 1). Failing inputs are kept under `$CARGO_TARGET_TMPDIR/fuzz-failures/<format>/`
//! for `tests/fuzz_regressions/<format>/`. The process runs under an address-space limit
//! (`SSOD_FUZZ_MEMORY_GIB`, default 6) so that an input which makes a parser allocate from a
//! claimed size fails loudly instead of passing on an overcommitting kernel.
#![allow(dead_code)]

pub mod cli;
pub mod mutate;
pub mod targets;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use crate::common::Rng;
pub use mutate::Mutator;

/// A call that takes longer than this is a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// The parser under test: `Ok` when it accepted the file, `Err(message)` when it refused it.
pub type Parse = Arc<dyn Fn(&Path) -> Result<(), String> + Send + Sync>;

/// A mutant generator (the default is `Mutator::mutate`; zip members need their CRC fixed).
pub type Mutant = Arc<dyn Fn(&mut Rng, &[u8]) -> Vec<u8> + Send + Sync>;

/// One input format and how to reach its parser.
pub struct Target {
    /// Folder name under `tests/fuzz_regressions/`.
    pub format: &'static str,
    /// The file name every mutant is written under (its extension picks the reader).
    pub file_name: &'static str,
    /// Real samples; mutant `i` starts from sample `i % len`.
    pub samples: Vec<Vec<u8>>,
    pub mutant: Mutant,
    /// Inputs tried in CI (times `SSOD_FUZZ_SCALE`).
    pub iterations: usize,
    pub parse: Parse,
    /// Whether a refusal says where: by default it must name the file.
    pub names_place: fn(&str, &Path) -> bool,
}

impl Target {
    pub fn new(
        format: &'static str,
        file_name: &'static str,
        samples: Vec<Vec<u8>>,
        mutator: Mutator,
        iterations: usize,
        parse: Parse,
    ) -> Self {
        Target {
            format,
            file_name,
            samples,
            mutant: Arc::new(move |rng, s| mutator.mutate(rng, s)),
            iterations,
            parse,
            names_place: names_file,
        }
    }
}

/// The default place check: the message names the file.
pub fn names_file(msg: &str, path: &Path) -> bool {
    msg.contains(&path.display().to_string())
}

/// What one campaign found.
pub struct Report {
    pub format: &'static str,
    pub tried: usize,
    pub accepted: usize,
    pub slowest: Duration,
    /// Wall time of the whole campaign.
    pub elapsed: Duration,
    pub failures: Vec<String>,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "fuzz {:<19} {:>6} inputs, {:>5} accepted, {:>3} failures, slowest {:>5} ms, {:>5.1} s",
            self.format,
            self.tried,
            self.accepted,
            self.failures.len(),
            self.slowest.as_millis(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// `SSOD_FUZZ_SCALE` (default 1).
pub fn scale() -> f64 {
    std::env::var("SSOD_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// `SSOD_FUZZ_SEED` (default 1).
pub fn seed() -> u64 {
    std::env::var("SSOD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// A fresh work folder for one test.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

thread_local! {
    /// Set on the worker threads: their panics are recorded here instead of printed.
    static CAPTURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install the panic hook and the memory limit (once per process).
pub fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        *slot = info.to_string();
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                default(info);
            }
        }));
        let gib: u64 = std::env::var("SSOD_FUZZ_MEMORY_GIB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(6);
        let bytes = gib << 30;
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct; it only lowers this process's soft limit.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_AS, {gib} GiB) failed");
    });
}

enum Outcome {
    Accepted,
    Refused(String),
    Panicked(String),
}

/// A thread that runs the parser on each path it is sent.
struct Worker {
    jobs: mpsc::Sender<PathBuf>,
    results: mpsc::Receiver<Outcome>,
}

impl Worker {
    fn start(parse: Parse) -> Worker {
        let (jobs, job_rx) = mpsc::channel::<PathBuf>();
        let (result_tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            CAPTURE.with(|c| *c.borrow_mut() = Some(String::new()));
            for path in job_rx {
                let parse = parse.clone();
                let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    parse(&path)
                })) {
                    Ok(Ok(())) => Outcome::Accepted,
                    Ok(Err(msg)) => Outcome::Refused(msg),
                    Err(_) => Outcome::Panicked(
                        CAPTURE.with(|c| c.borrow_mut().replace(String::new()).unwrap_or_default()),
                    ),
                };
                if result_tx.send(outcome).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, results }
    }
}

/// Run `target`'s parser on `inputs` (written one after the other to `dir/<file_name>`).
/// Stops at the first hang (the stuck worker is left behind).
pub fn check_inputs(
    target: &Target,
    dir: &Path,
    inputs: impl Iterator<Item = (String, Vec<u8>)>,
) -> Report {
    setup();
    let path = dir.join(target.file_name);
    let failure_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(target.format);
    let worker = Worker::start(target.parse.clone());
    let mut report = Report {
        format: target.format,
        tried: 0,
        accepted: 0,
        slowest: Duration::ZERO,
        elapsed: Duration::ZERO,
        failures: Vec::new(),
    };
    // SSOD_FUZZ_LOG=1: every refusal message, one a line, for reviewing what errors say.
    let mut refusal_log = std::env::var_os("SSOD_FUZZ_LOG").map(|_| {
        std::fs::create_dir_all(&failure_dir).unwrap();
        std::fs::File::create(failure_dir.join("refusals.txt")).unwrap()
    });
    let started = Instant::now();
    for (label, bytes) in inputs {
        std::fs::write(&path, &bytes).unwrap();
        report.tried += 1;
        let start = Instant::now();
        worker.jobs.send(path.clone()).unwrap();
        let outcome = worker.results.recv_timeout(HANG);
        report.slowest = report.slowest.max(start.elapsed());
        let problem = match outcome {
            Err(_) => Some(format!("no answer within {} s (hang)", HANG.as_secs())),
            Ok(Outcome::Accepted) => {
                report.accepted += 1;
                None
            }
            Ok(Outcome::Panicked(msg)) => Some(format!("panic: {msg}")),
            Ok(Outcome::Refused(msg)) if !(target.names_place)(&msg, &path) => {
                Some(format!("error does not say which file/field: {msg}"))
            }
            Ok(Outcome::Refused(msg)) => {
                if let Some(log) = refusal_log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(log, "{}", msg.replace('\n', " | "));
                }
                None
            }
        };
        if let Some(problem) = problem {
            std::fs::create_dir_all(&failure_dir).unwrap();
            let kept = failure_dir.join(format!("{label}-{}", target.file_name));
            std::fs::write(&kept, &bytes).unwrap();
            report.failures.push(format!(
                "{} input {label} (kept as {}): {problem}",
                target.format,
                kept.display()
            ));
            let log = failure_dir.join("failures.txt");
            let mut text = std::fs::read_to_string(&log).unwrap_or_default();
            text.push_str(report.failures.last().unwrap());
            text.push('\n');
            std::fs::write(&log, text).unwrap();
            if problem.ends_with("(hang)") {
                break;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Mutants of the target's samples, `iterations × scale()` of them, seeded.
pub fn run_campaign(target: &Target, dir: &Path) -> Report {
    let n = ((target.iterations as f64) * scale()).ceil() as usize;
    let _ = std::fs::remove_dir_all(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("fuzz-failures")
            .join(target.format),
    );
    let seed = seed();
    let mut rng = Rng::new(seed ^ fnv(target.format));
    let mutant = target.mutant.clone();
    let samples = &target.samples;
    let inputs = (0..n).map(move |i| {
        let sample = &samples[i % samples.len()];
        (format!("s{seed}-{i}"), mutant(&mut rng, sample))
    });
    check_inputs(target, dir, inputs)
}

/// The kept regression inputs of a format (`tests/fuzz_regressions/<format>/*`).
pub fn regression_inputs(format: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(format);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Print each report's line and fail with every failure.
pub fn finish(reports: &[Report]) {
    for r in reports.iter().filter(|r| r.tried > 0) {
        println!("{}", r.line());
    }
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// FNV-1a of a name: a per-format seed offset.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
