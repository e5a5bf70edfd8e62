//! Writing into a folder that several processes, possibly on several hosts, use at once (the
//! notebook cache on a cluster's shared file system; docs/cluster.md).
//!
//! Two rules make concurrent writers safe: every temporary name is unique across hosts (host
//! name, process id and a per-process counter, since two hosts can run processes with the same
//! id), and a file or folder becomes visible under its final name only through one `rename`,
//! which POSIX file systems (NFS and Lustre included) perform atomically. A reader therefore
//! sees either no entry or a complete one; two writers of the same entry (with the same
//! content, as the cache's writers are deterministic) leave one complete copy. Files are
//! written with [`crate::atomic_file::write_atomic`], whose temporary names follow the first
//! rule; this module publishes whole folders.

use std::path::Path;

use crate::atomic_file::temp_path_for;
use crate::{Error, Result};

/// Make the folder `tmp` (complete) visible as `dest`, replacing an existing `dest`: the old
/// folder is first renamed aside and removed, so `dest` is never a mix of the two. Readers may
/// briefly see no `dest` (they treat that as "not cached"). When another process publishes
/// `dest` at the same moment, one of the complete folders stays.
pub fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    for _ in 0..8 {
        match std::fs::rename(tmp, dest) {
            Ok(()) => return Ok(()),
            Err(_) if dest.exists() => {
                let aside = temp_path_for(dest);
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
