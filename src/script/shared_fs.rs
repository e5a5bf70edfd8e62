//! Writing into a folder that several processes, possibly on several hosts, use at once (the
//! notebook cache on a cluster's shared file system; docs/cluster.md).
//!
//! Two rules make concurrent writers safe: every temporary name is unique across hosts (host
//! name, process id and a per-process counter, since two hosts can run processes with the same
//! id), and a file or folder becomes visible under its final name only through one `rename`,
//! which POSIX file systems (NFS and Lustre included) perform atomically. A reader therefore
//! sees either no entry or a complete one; two writers of the same entry (with the same
//! content, as the cache's writers are deterministic) leave one complete copy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{Error, Result};

/// This machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).to_string();
        if rc == 0 && !name.is_empty() {
            name
        } else {
            "localhost".to_string()
        }
    })
}

/// A name part no other process (on any host) and no other call in this process produces:
/// `<host>-<pid>-<counter>`, with characters outside `[A-Za-z0-9.-]` replaced by `_`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}-{n}", std::process::id())
}

/// A temporary sibling of `path` (same folder, so the final rename stays on one file system),
/// hidden by a leading dot.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", unique_suffix()))
}

/// Write `bytes` to `path` through a uniquely named temporary file and one rename (the folder
/// is created if missing). Concurrent writers of the same path each publish a complete file.
pub fn write_shared(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_sibling(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Make the folder `tmp` (complete) visible as `dest`, replacing an existing `dest`: the old
/// folder is first renamed aside and removed, so `dest` is never a mix of the two. Readers may
/// briefly see no `dest` (they treat that as "not cached"). When another process publishes
/// `dest` at the same moment, one of the complete folders stays.
pub fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    for _ in 0..8 {
        match std::fs::rename(tmp, dest) {
            Ok(()) => return Ok(()),
            Err(_) if dest.exists() => {
                let aside = temp_sibling(dest);
                // Another process may move or replace `dest` between these calls: a failed
                // rename here just means the next attempt sees a different state.
                if std::fs::rename(dest, &aside).is_ok() {
                    let _ = std::fs::remove_dir_all(&aside);
                }
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                return Err(Error::io(dest, e));
            }
        }
    }
    let _ = std::fs::remove_dir_all(tmp);
    Err(Error::Msg(format!(
        "{}: other processes kept replacing this folder; not written",
        dest.display()
    )))
}
