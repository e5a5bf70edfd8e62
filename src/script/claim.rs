//! Claim files: "this process is computing that ablation point", so two processes sharing a
//! cache (shards of a job array, a merge run started early, a requeued job) never compute the
//! same point at once in the same work folder.
//!
//! Rules (docs/cluster.md states them for users):
//! - A claim is the file `ablate/<key>.claim`, created with `create_new` (`O_EXCL`, atomic on
//!   local file systems and on NFSv3+ and Lustre); it holds the claimant's host, process id,
//!   start time and a random nonce as JSON. Only the process that created it computes the point.
//! - While it holds a claim, the process refreshes the file's modification time every
//!   [`ClaimRules::heartbeat`] (a background thread), and removes the file when the point is
//!   finished, fails or is interrupted.
//! - A claim is stale, and another process may take it over, when its modification time is
//!   older than [`ClaimRules::stale_after`] (its holder died or lost its node without removing
//!   it), or at once when it names this host and a process id that is no longer running. An
//!   unreadable claim (its holder may be writing it this instant) is stale only by the timeout.
//!   A claim naming this process is live exactly while this process holds it (a leftover of an
//!   earlier process with the same id is stale).
//! - Taking over: rename the stale file to a unique name, check that the renamed file is the
//!   one judged stale (if another process took it over in between, its fresh claim is put
//!   back), delete it and create a new claim. Clocks of a cluster's nodes agree to within
//!   seconds (NTP), far inside the timeout.
//!
//! The worst case the rules allow (two processes judging the same claim stale within the same
//! few microseconds) makes both compute the point; the result files are written atomically and
//! the points are deterministic, so the cache still holds one correct result.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic_file::{hostname, temp_path_for, unique_suffix};
use crate::{Error, Result};

/// Timing of claims.
#[derive(Clone, Copy, Debug)]
pub struct ClaimRules {
    /// A claim not refreshed for this long is stale.
    pub stale_after: Duration,
    /// How often a holder refreshes its claim (well below `stale_after`).
    pub heartbeat: Duration,
}

impl Default for ClaimRules {
    /// Refreshed every minute, stale after ten: a holder survives a few missed refreshes (a
    /// busy file server), and a dead holder's point is taken over within ten minutes.
    fn default() -> Self {
        ClaimRules {
            stale_after: Duration::from_secs(600),
            heartbeat: Duration::from_secs(60),
        }
    }
}

/// What a claim file says about its holder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimInfo {
    pub host: String,
    pub pid: u32,
    /// When the claim was made (seconds since 1970, the holder's clock).
    pub started_unix_s: u64,
    /// Tells this claim apart from a later one of the same process.
    pub nonce: String,
    /// What the holder runs (e.g. `shard 3/8`), for messages.
    #[serde(default)]
    pub label: String,
}

impl ClaimInfo {
    /// `host pid N (label)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} pid {}", self.host, self.pid);
        if !self.label.is_empty() {
            s.push_str(&format!(" ({})", self.label));
        }
        s
    }
}

/// A claim someone else holds.
#[derive(Clone, Debug)]
pub struct Holder {
    /// `None`: the file could not be parsed (its holder may be writing it).
    pub info: Option<ClaimInfo>,
    /// Time since its last refresh.
    pub idle: Duration,
}

impl Holder {
    pub fn describe(&self) -> String {
        let who = self
            .info
            .as_ref()
            .map_or("an unknown process".to_string(), ClaimInfo::describe);
        format!("{who}, refreshed {} s ago", self.idle.as_secs())
    }
}

/// The result of [`try_claim`].
pub enum ClaimOutcome {
    /// This process holds the claim until the value is dropped.
    Acquired(Claim),
    /// Another live process holds it.
    Held(Holder),
}

/// A held claim: refreshed in the background, removed on drop.
pub struct Claim {
    path: PathBuf,
    nonce: String,
    /// The stale claim this one replaced, if any.
    took_over: Option<Holder>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    lost: Arc<AtomicBool>,
    refresher: Option<JoinHandle<()>>,
}

impl Claim {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stale claim this one took over, if it did.
    pub fn took_over(&self) -> Option<&Holder> {
        self.took_over.as_ref()
    }

    /// Whether the file stopped being this claim (another process judged it stale).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        {
            let (stopped, wake) = &*self.stop;
            *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            wake.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if read_claim(&self.path).is_some_and(|c| c.nonce == self.nonce) {
            let _ = std::fs::remove_file(&self.path);
        }
        held_here().remove(&self.nonce);
    }
}

/// Nonces of the claims this process holds now.
fn held_here() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static HELD: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn read_claim(path: &Path) -> Option<ClaimInfo> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether process `pid` runs on this host (a process we may not signal still runs).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The staleness rule of the module documentation.
pub fn is_stale(holder: &Holder, rules: &ClaimRules) -> bool {
    if holder.idle >= rules.stale_after {
        return true;
    }
    match &holder.info {
        // A claim naming this very process but none it holds is a leftover of an earlier
        // process that had the same id.
        Some(c) if c.host == hostname() && c.pid == std::process::id() => {
            !held_here().contains(&c.nonce)
        }
        Some(c) if c.host == hostname() => !pid_alive(c.pid),
        _ => false,
    }
}

/// Claim `path` (see the module documentation); `label` says what this process runs.
pub fn try_claim(path: &Path, rules: &ClaimRules, label: &str) -> Result<ClaimOutcome> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut took_over = None;
    // Each pass either returns or saw the file vanish or a stale claim removed; a few passes
    // settle any interleaving with other processes.
    for _ in 0..8 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                let info = ClaimInfo {
                    host: hostname().to_string(),
                    pid: std::process::id(),
                    started_unix_s: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    nonce: unique_suffix(),
                    label: label.to_string(),
                };
                held_here().insert(info.nonce.clone());
                let text =
                    serde_json::to_string(&info).map_err(|e| Error::Msg(format!("claim: {e}")))?;
                if let Err(e) = file
                    .write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                {
                    held_here().remove(&info.nonce);
                    let _ = std::fs::remove_file(path);
                    return Err(Error::io(path, e));
                }
                return Ok(ClaimOutcome::Acquired(start_refresher(
                    path, info.nonce, took_over, rules,
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some((bytes, holder)) = inspect(path)? else {
                    continue; // released meanwhile
                };
                if !is_stale(&holder, rules) {
                    return Ok(ClaimOutcome::Held(holder));
                }
                if let Some(fresh) = remove_stale(path, &bytes)? {
                    return Ok(ClaimOutcome::Held(fresh));
                }
                took_over = Some(holder);
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Err(Error::Msg(format!(
        "{}: the claim kept changing hands; try again",
        path.display()
    )))
}

/// The claim's bytes and holder; `None` when the file is gone.
fn inspect(path: &Path) -> Result<Option<(Vec<u8>, Holder)>> {
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let modified = match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let idle = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    let info = serde_json::from_slice(&bytes).ok();
    Ok(Some((bytes, Holder { info, idle })))
}

/// Remove the stale claim whose content is `stale`. `Some(holder)`: the file had meanwhile
/// become another process's fresh claim, which is put back.
fn remove_stale(path: &Path, stale: &[u8]) -> Result<Option<Holder>> {
    let aside = temp_path_for(path);
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    }
    let moved = std::fs::read(&aside).unwrap_or_default();
    if moved == stale {
        let _ = std::fs::remove_file(&aside);
        return Ok(None);
    }
    // Put the fresh claim back without replacing a claim made since (a hard link fails if the
    // name exists); file systems without hard links get a plain rename.
    match std::fs::hard_link(&aside, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&aside);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&aside);
        }
        Err(_) => {
            let _ = std::fs::rename(&aside, path);
        }
    }
    Ok(Some(Holder {
        info: serde_json::from_slice(&moved).ok(),
        idle: Duration::ZERO,
    }))
}

/// Start the thread that refreshes the claim's modification time.
fn start_refresher(
    path: &Path,
    nonce: String,
    took_over: Option<Holder>,
    rules: &ClaimRules,
) -> Claim {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let lost = Arc::new(AtomicBool::new(false));
    let (p, n, s, l, every) = (
        path.to_path_buf(),
        nonce.clone(),
        stop.clone(),
        lost.clone(),
        rules.heartbeat,
    );
    let refresher = std::thread::spawn(move || {
        let (stopped, wake) = &*s;
        let mut guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked before each wait too: the stop may come before this thread first waits.
            if *guard {
                return;
            }
            let (g, _) = wake
                .wait_timeout(guard, every)
                .unwrap_or_else(|p| p.into_inner());
            guard = g;
            if *guard {
                return;
            }
            if read_claim(&p).is_none_or(|c| c.nonce != n) {
                l.store(true, Ordering::Relaxed);
                return;
            }
            // A failed refresh (a busy file server) is retried at the next beat; the timeout
            // allows several misses.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
    });
    Claim {
        path: path.to_path_buf(),
        nonce,
        took_over,
        stop,
        lost,
        refresher: Some(refresher),
    }
}
