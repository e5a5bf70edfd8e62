//! The run folder of a notebook: `runs/<script-stem>/<YYYYmmdd-HHMMSS>/` or `--out DIR`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `YYYYmmdd-HHMMSS` (UTC) of now.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A new, empty run folder: `base/<stamp>`, or `base/<stamp>-2`, ... if taken.
pub fn new_run_dir(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    let stamp = timestamp();
    for n in 1.. {
        let p = if n == 1 {
            base.join(&stamp)
        } else {
            base.join(format!("{stamp}-{n}"))
        };
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// `--out DIR`: created if missing; an existing non-empty folder is refused (runs never write
/// over earlier outputs).
pub fn prepare_out_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        if entries.next().is_some() {
            return Err(Error::InvalidArgument(format!(
                "--out {}: the folder is not empty; runs never overwrite outputs (choose a new folder or leave --out out for runs/<script>/<stamp>/)",
                dir.display()
            )));
        }
    } else {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(dir.to_path_buf())
}
