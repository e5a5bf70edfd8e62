//! `ssod` command lines, mutated and run as processes: every run must end with status 0, 1 or
//! 2 (clap's usage error) within [`CLI_HANG`], say `error` on stderr when it fails, and leave no
//! output file and no temporary file behind when it fails.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssod::data::voc::{VocAnnotation, VocObject};
use ssod::eval::coco::{evaluate, MaxDets};

use super::mutate::below;
use super::targets::coco_gt;
use crate::common::Rng;

pub const CLI_HANG: Duration = Duration::from_secs(20);

/// Cheap commands over small inputs, each writing into `out/` (cleared before every run).
pub fn base_commands() -> Vec<Vec<String>> {
    let v = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        v(&[
            "eval",
            "--gt",
            "gt.json",
            "--dt",
            "dt.json",
            "--max-dets",
            "1,10,100",
            "--json",
            "out/eval.json",
            "--csv",
            "out/eval.csv",
        ]),
        v(&[
            "voc2coco",
            "--ann-dir",
            "ann",
            "--labels",
            "labels.txt",
            "--out",
            "out/conv.json",
        ]),
        v(&["stats", "gt.json", "--at-size", "640", "--json"]),
        v(&["info", "yolox-nano"]),
        v(&[
            "metrics-table",
            "--run",
            "A=m1.json,m2.json",
            "--out",
            "out/table.md",
        ]),
    ]
}

const VALUES: &[&str] = &[
    "",
    "-1",
    "0",
    "1e308",
    "18446744073709551616",
    "NaN",
    "-",
    "--",
    "=",
    "A=",
    "=x",
    "a=b,c",
    "1,1,1",
    "0,0,0",
    "100,300",
    "1,10,100,1000",
    "missing.json",
    "out",
    ".",
    "gt.json",
    "dt.json",
    "labels.txt",
    "ann",
    "m1.json",
    "out/new.json",
    "yolox-x",
    "yolox-",
    "B=m1.json",
];

const FLAGS: &[&str] = &[
    "--json",
    "--force",
    "--max-dets",
    "--at-size",
    "--strict",
    "--per-class",
    "--pr-plot",
    "--csv",
    "--out",
    "--gt",
    "--dt",
    "--run",
    "--metrics",
    "--labels",
    "--ann-dir",
];

/// The inputs every command line reads, (re)written before each run so that a mutated
/// `--force --out gt.json` cannot change the next run's input.
pub fn write_inputs(dir: &Path) {
    let gt = coco_gt();
    std::fs::write(dir.join("gt.json"), serde_json::to_string(&gt).unwrap()).unwrap();
    let dets: Vec<ssod::data::Detection> = gt
        .annotations
        .iter()
        .map(|a| ssod::data::Detection {
            image_id: a.image_id,
            category_id: a.category_id,
            bbox_xywh: a.bbox_xywh,
            score: 0.5 + a.id as f64 / 10.0,
        })
        .collect();
    std::fs::write(dir.join("dt.json"), serde_json::to_string(&dets).unwrap()).unwrap();
    let stats = evaluate(&gt, &dets, MaxDets::COCO).unwrap().to_json(false);
    for m in ["m1.json", "m2.json"] {
        std::fs::write(dir.join(m), stats.to_string()).unwrap();
    }
    std::fs::create_dir_all(dir.join("ann")).unwrap();
    let ann = VocAnnotation {
        filename: "a.jpg".into(),
        width: 64,
        height: 48,
        objects: vec![VocObject {
            name: "bottle".into(),
            xmin: 2.0,
            ymin: 3.0,
            xmax: 20.0,
            ymax: 30.0,
            difficult: false,
        }],
    };
    std::fs::write(dir.join("ann/a.xml"), ann.to_xml_string()).unwrap();
    std::fs::write(dir.join("labels.txt"), "bottle\n").unwrap();
    let _ = std::fs::remove_dir_all(dir.join("out"));
    std::fs::create_dir_all(dir.join("out")).unwrap();
}

/// One mutant command line (the command name itself is kept: others train or read stdin).
pub fn mutate_args(rng: &mut Rng, base: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = base.iter().map(OsString::from).collect();
    for _ in 0..1 + below(rng, 3) {
        let n = args.len();
        let i = 1 + below(rng, n.max(2) - 1).min(n.saturating_sub(1));
        match below(rng, 7) {
            0 if i < n => args[i] = VALUES[below(rng, VALUES.len())].into(),
            1 if i < n && n > 1 => {
                args.remove(i);
            }
            2 if i < n => {
                let a = args[i].clone();
                args.insert(i, a);
            }
            3 => args.insert(i.min(n), FLAGS[below(rng, FLAGS.len())].into()),
            4 if n > 2 => {
                let j = 1 + below(rng, n - 1);
                args.swap(i.min(n - 1), j);
            }
            5 if i < n => {
                let mut bytes = args[i].clone().into_vec();
                if !bytes.is_empty() {
                    let k = below(rng, bytes.len());
                    bytes[k] ^= 1 << below(rng, 8);
                    bytes.retain(|&b| b != 0);
                }
                args[i] = OsString::from_vec(bytes);
            }
            _ => args.push("x".repeat(1 + below(rng, 5000)).into()),
        }
    }
    args
}

/// Run `ssod args...` in `dir`: whether it succeeded, or the rule it broke.
pub fn check_run(dir: &Path, args: &[OsString]) -> Result<bool, String> {
    write_inputs(dir);
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CLI_HANG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no exit within {} s (hang)", CLI_HANG.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut s);
        s
    };
    let tmp = leftover_temporaries(dir);
    if !tmp.is_empty() {
        return Err(format!("temporary files left: {tmp:?}"));
    }
    match status.code() {
        Some(0) => Ok(true),
        Some(1 | 2) => {
            if !stderr.contains("error") {
                return Err(format!("failed without saying why: {stderr}"));
            }
            let outputs: Vec<String> = std::fs::read_dir(dir.join("out"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            if outputs.is_empty() {
                Ok(false)
            } else {
                Err(format!("failed but left outputs {outputs:?}: {stderr}"))
            }
        }
        Some(code) => Err(format!("exit status {code}: {stderr}")),
        None => Err(format!("killed by a signal ({status}): {stderr}")),
    }
}

fn leftover_temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}
