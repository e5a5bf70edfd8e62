//! Whole-file writes that a killed process, a full disk or a power cut never leave half done
//! (docs/faults.md): the bytes go to a temporary file in the same folder, which is flushed to
//! the disk (`fsync`) and renamed over the destination; the folder is then flushed so the
//! rename itself survives a power cut. A reader sees the old file or the new one, never a mix.
//!
//! Temporary names are `.<file name>.<host>-<pid>-<n>.tmp`: hidden, ending in `.tmp` (so no glob
//! for `*.safetensors`, `*.json` or `*.csv` takes one for a real file), and unique per host,
//! process and write (`n` counts the process's writes), so two processes or two threads writing
//! the same destination never share a temporary file, even on a file system that several hosts
//! share (the notebook cache on a cluster, docs/cluster.md). On an error the temporary file is
//! removed and the destination is untouched; only a killed process can leave one behind, and it
//! is safe to delete ([`is_temp_file`] recognises them).

use std::ffi::OsString;
use std::io::Write;
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
/// `<host>-<pid>-<n>`, with characters outside `[A-Za-z0-9-]` in the host name replaced by `_`
/// (no dot, so the part splits off a file name unambiguously).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}-{n}", std::process::id())
}

/// A fresh temporary path next to `path`, for a file or a folder (see the module docs for the
/// name; same folder, so the final rename stays on one file system).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or(path.as_os_str()));
    name.push(format!(".{}.tmp", unique_suffix()));
    path.with_file_name(name)
}

/// Whether `file_name` is a temporary name a killed writer may have left: one of
/// [`temp_path_for`] (`.<name>.<host>-<pid>-<n>.tmp`, or `.<name>.<pid>.<n>.tmp` as older
/// versions wrote), one of the notebook cache's objects in the making
/// (`.tmp-<host>-<pid>-<n>.<ext>`, `script::cache`), or an older shared-folder write
/// (`.<name>.tmp-<host>-<pid>-<n>`).
pub fn is_temp_file(file_name: &str) -> bool {
    if file_name.starts_with('.') && (file_name.starts_with(".tmp-") || file_name.contains(".tmp-"))
    {
        return true;
    }
    let Some(inner) = file_name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // `<base>.<host>-<pid>-<n>`
    if let Some((base, suffix)) = inner.rsplit_once('.') {
        let mut parts = suffix.rsplitn(3, '-');
        if let (Some(n), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) {
            if !base.is_empty() && !host.is_empty() && digits(n) && digits(pid) {
                return true;
            }
        }
    }
    // `<base>.<pid>.<n>`
    let mut parts = inner.rsplitn(3, '.');
    let (count, pid, base) = (parts.next(), parts.next(), parts.next());
    count.is_some_and(digits) && pid.is_some_and(digits) && base.is_some_and(|b| !b.is_empty())
}

/// Write `bytes` to `path` atomically and durably (module docs). Creates the parent folder.
/// Errors name `path` and the OS's reason (e.g. "No space left on device", "Permission
/// denied"); nothing is left at `path` or at the temporary name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill` (e.g. a serialiser streaming into the
/// file); `fill` gets the open temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path_for(path);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        fill(&mut file)?;
        // The data must be on the disk before the rename is, or a power cut can leave an
        // empty file under the new name.
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // The rename is durable once the folder's entry is (a failure here leaves a complete file,
    // so it is not an error of the write).
    sync_dir(parent.unwrap_or(Path::new(".")));
    Ok(())
}

/// Flush a folder's entries (a rename or a new file in it) to the disk; best effort (some file
/// systems cannot open or flush a folder).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ssod-atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temp_names_are_unique_hidden_and_recognised() {
        let a = temp_path_for(Path::new("run/last.ckpt.safetensors"));
        let b = temp_path_for(Path::new("run/last.ckpt.safetensors"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("run")));
        let name = a.file_name().unwrap().to_str().unwrap();
        let pid = std::process::id();
        assert!(name.starts_with(".last.ckpt.safetensors."), "{name}");
        assert!(name.contains(&format!("-{pid}-")), "{name}");
        assert!(
            name.ends_with(".tmp") && !name.ends_with(".safetensors"),
            "{name}"
        );
        assert!(is_temp_file(name));
        assert!(is_temp_file(".one.csv.tmp-vm-77-3"));
        assert!(is_temp_file(".one.csv.77.3.tmp"));
        assert!(is_temp_file(".one.csv.node-7_x-77-3.tmp"));
        assert!(is_temp_file(".tmp-vm-77-4.safetensors"));
        for real in [
            "last.safetensors",
            ".hidden",
            ".x.tmp",
            ".x.12.tmp",
            "x.1.2.tmp",
            ".x.1.a.tmp",
            "x.tmp-1",
            ".x.vm-a-3.tmp",
            ".x.-77-3.tmp",
        ] {
            assert!(!is_temp_file(real), "{real}");
        }
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("sub").join("a.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(&dir.join("sub")), vec!["a.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A write that fails half way (here the content fails after some bytes went out) keeps
    /// the old file, removes the temporary one, and names the destination.
    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = scratch("failed");
        let path = dir.join("state.safetensors");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |f| {
            f.write_all(b"half of the new")?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("No space left on device"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(&dir), vec!["state.safetensors"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The OS's full-disk error as a real device gives it: /dev/full refuses every write with
    /// ENOSPC, and the message the user sees says so.
    #[test]
    fn a_full_device_gives_no_space_left() {
        let Ok(mut full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIPPED a_full_device_gives_no_space_left: no /dev/full on this system");
            return;
        };
        let e = full.write_all(&[0u8; 4096]).and_then(|()| full.sync_all());
        let e = e.expect_err("/dev/full accepted a write");
        let msg = Error::io("/run/x.safetensors", e).to_string();
        assert!(
            msg.starts_with("/run/x.safetensors: No space left on device"),
            "{msg}"
        );
    }
}
