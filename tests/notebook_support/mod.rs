//! Shared helpers of the notebook tests (a folder, so cargo does not build it as a test target).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod_nb_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Out {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `ssod <args>` run in `cwd`.
pub fn ssod(cwd: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Write `script.rhai` into `dir` and run it with extra args.
pub fn run_script(dir: &Path, body: &str, args: &[&str]) -> Out {
    std::fs::write(dir.join("script.rhai"), body).unwrap();
    let mut a = vec!["run", "script.rhai"];
    a.extend_from_slice(args);
    ssod(dir, &a)
}

/// The run folder a run printed (`run folder: ...`).
pub fn run_dir(dir: &Path, out: &Out) -> PathBuf {
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("run folder: "))
        .unwrap_or_else(|| panic!("no run folder in:\n{}", out.stdout));
    dir.join(line)
}

/// Titles of the cells the run restored from the cache, in order.
pub fn restored(out: &Out) -> Vec<String> {
    headers(out)
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(t, _)| t)
        .collect()
}

/// Titles of the cells the run computed.
pub fn computed(out: &Out) -> Vec<String> {
    headers(out)
        .into_iter()
        .filter(|(_, r)| !*r)
        .map(|(t, _)| t)
        .collect()
}

/// (title, restored?) of every cell header `── [i/n] Title ...`.
fn headers(out: &Out) -> Vec<(String, bool)> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("── ["))
        .map(|l| {
            let rest = &l[l.find("] ").unwrap() + 2..];
            let restored = rest.contains("(restored from cache");
            let title = rest.split(" (restored").next().unwrap().trim().to_string();
            (title, restored)
        })
        .collect()
}

/// Write `script.rhai` into `dir` and start `ssod run script.rhai --fresh` there, its output
/// piped: for tests that signal or kill the run ([`finish`] collects it).
pub fn spawn_script(dir: &Path, body: &str) -> std::process::Child {
    std::fs::write(dir.join("script.rhai"), body).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(dir)
        .args(["run", "script.rhai", "--fresh"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a spawned run and collect its output.
pub fn finish(child: std::process::Child) -> Out {
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Every tensor of a safetensors file as the bits of its f32 values, by name.
pub fn tensor_bits(path: &Path) -> std::collections::BTreeMap<String, Vec<u32>> {
    ssod::tensor::safetensors_io::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.to_vec().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// Start `ssod <args>` in `cwd` with its output piped ([`finish`] collects it): for tests that
/// run several processes at once.
pub fn spawn_ssod(cwd: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(cwd)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A CSV the run wrote (panics naming the file when it cannot be read).
pub fn table(path: &Path) -> ssod::csv_table::CsvTable {
    ssod::csv_table::read_csv(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `column` of `record` (panics naming the column when the table lacks it).
pub fn field<'a>(t: &ssod::csv_table::CsvTable, record: &'a [String], column: &str) -> &'a str {
    let i = t
        .column(column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", t.header));
    &record[i]
}

/// `column` of `record` as a number.
pub fn number(t: &ssod::csv_table::CsvTable, record: &[String], column: &str) -> f64 {
    let v = field(t, record, column);
    v.parse()
        .unwrap_or_else(|_| panic!("{column}: `{v}` is not a number"))
}

/// Mean and sample standard deviation (n − 1), written out for the checks.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}
