//! Notebooks: cell splitting and titles, one scope across cells (variables and functions),
//! params, errors with file positions, the run folder and report.md, --device, the REPL.

mod notebook_support;

use notebook_support::*;
use ssod::script::notebook::split_cells;

#[test]
fn cells_split_at_markers_with_titles_and_file_lines() {
    let src = "let a = 1;\n// %% Load data\nlet b = 2;\n\n//%% not a marker\n  // %%   Train  \nlet c = 3;\n// %%\nlet d = 4;\n";
    let cells = split_cells(src);
    let titles: Vec<&str> = cells.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["Cell 1", "Load data", "Train", "Cell 4"]);
    assert_eq!(cells[0].source, "let a = 1;\n");
    assert_eq!(cells[1].source, "let b = 2;\n\n//%% not a marker\n");
    // first_line: the line after the marker, 1-based in the file.
    let lines: Vec<usize> = cells.iter().map(|c| c.first_line).collect();
    assert_eq!(lines, [1, 3, 7, 9]);

    // Blank text before the first marker is not a cell.
    let cells = split_cells("\n\n// %% Only\nprint(1);\n");
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].title, "Only");
    assert_eq!(cells[0].first_line, 4);
    assert!(split_cells("").is_empty());
}

#[test]
fn one_scope_for_variables_and_functions_across_cells() {
    let dir = temp_dir("scope");
    let out = run_script(
        &dir,
        "// %% Define\nfn triple(x) { x * 3 }\nlet base = 5;\nconst K = 2;\nlet f = |x| x + K;\n// %% Use\nprint(`v=${triple(base) + K}`);\nprint(`c=${f.call(1)}`);\nbase += 1;\n// %% Again\nprint(`base=${base}`);\n",
        &[],
    );
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("v=17"), "{}", out.stdout);
    assert!(out.stdout.contains("c=3"), "{}", out.stdout);
    assert!(out.stdout.contains("base=6"), "{}", out.stdout);
    assert_eq!(computed(&out), ["Define", "Use", "Again"]);
    // Each cell's output comes under its own title, with its time.
    let use_at = out.stdout.find("] Use").unwrap();
    let again_at = out.stdout.find("] Again").unwrap();
    let v_at = out.stdout.find("v=17").unwrap();
    assert!(use_at < v_at && v_at < again_at, "{}", out.stdout);
    assert!(out.stdout.contains(" s)"), "{}", out.stdout);
}

#[test]
fn errors_point_at_file_lines_and_keep_earlier_cells() {
    let dir = temp_dir("errors");
    // Runtime error in cell 3, line 7 of the file, column 9.
    let body = "// %% One\nlet a = zeros([2, 3]);\nprint(\"one done\");\n// %% Two\nlet b = zeros([4, 5]);\n// %% Three\nlet c = a + b;\nprint(\"unreachable\");\n// %% Four\nprint(\"four\");\n";
    let out = run_script(&dir, body, &[]);
    assert!(!out.ok);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("script.rhai:7:"), "{}", out.stderr);
    assert!(out.stderr.contains("let c = a + b;"), "{}", out.stderr);
    assert!(
        out.stderr.contains("[2, 3]") && out.stderr.contains("[4, 5]"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("unreachable") && !out.stdout.contains("four"));
    let report = std::fs::read_to_string(run_dir(&dir, &out).join("report.md")).unwrap();
    assert!(report.contains("**failed**"), "{report}");
    assert!(report.contains("not run"), "{report}");

    // The earlier cells were cached: fixing cell 3 restores cells 1 and 2.
    let fixed = body.replace("let c = a + b;", "let c = a;");
    let out = run_script(&dir, &fixed, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(restored(&out), ["One", "Two"]);
    assert_eq!(computed(&out), ["Three", "Four"]);

    // A syntax error: position in the file, not in the cell.
    let out = run_script(
        &dir,
        "// %% A\nlet x = 1;\n// %% B\nlet y = 2;\nlet z = (y + ;\n",
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("script.rhai:5:"), "{}", out.stderr);
    assert!(out.stderr.contains("let z = (y + ;"), "{}", out.stderr);

    // An error inside a function defined in an earlier cell.
    let out = run_script(
        &dir,
        "// %% F\nfn bad(x) {\n  x.no_such_method()\n}\n// %% Call\nbad(1);\n",
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("script.rhai:"), "{}", out.stderr);
    assert!(out.stderr.contains("no_such_method"), "{}", out.stderr);
}

#[test]
fn unknown_config_keys_are_errors_naming_the_key() {
    let dir = temp_dir("opts");
    let out = run_script(
        &dir,
        "// %% Model\nlet m = yolox(\"nano\", #{ clases: 1 });\n",
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("clases"), "{}", out.stderr);
    assert!(out.stderr.contains("script.rhai:2:"), "{}", out.stderr);
}

#[test]
fn params_convert_to_the_default_type() {
    let dir = temp_dir("params");
    let body = "let lr = param(\"lr\", 0.01);\nlet n = param(\"epochs\", 3);\nlet on = param(\"flip\", false);\nlet name = param(\"name\", \"base\");\nprint(`lr=${lr} ${type_of(lr)} n=${n} ${type_of(n)} on=${on} name=${name}`);\n";
    let out = run_script(&dir, body, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("lr=0.01 f64 n=3 i64 on=false name=base"),
        "{}",
        out.stdout
    );

    let out = run_script(
        &dir,
        body,
        &[
            "--set", "lr=0.5", "--set", "epochs=7", "--set", "flip=yes", "--set", "name=x=y",
            "--set", "typo=1",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("lr=0.5 f64 n=7 i64 on=true name=x=y"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("--set typo"),
        "unused key not warned: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("--set lr "), "{}", out.stderr);
    let report = std::fs::read_to_string(run_dir(&dir, &out).join("report.md")).unwrap();
    assert!(report.contains("| lr | 0.5 | --set |"), "{report}");
    assert!(report.contains("| typo | 1 | --set (unused) |"), "{report}");

    // An unparsable value names the key.
    let out = run_script(&dir, body, &["--set", "epochs=many"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("param `epochs`") && out.stderr.contains("many"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("script.rhai:2:"), "{}", out.stderr);

    // A malformed --set is refused before anything runs.
    let out = run_script(&dir, body, &["--set", "novalue"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("key=value"), "{}", out.stderr);
}

#[test]
fn run_folder_report_tables_images_and_csv() {
    let dir = temp_dir("report");
    // An image to show: write one with the eval plots (a PNG through ssod itself is not needed:
    // any file works for the copy, but use a real PNG header).
    std::fs::write(dir.join("pic.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let body = "// %% Tables\nlet rows = [#{ run: \"a\", ap: 0.5 }, #{ run: \"b\", ap: 0.25 }];\ntable(rows);\nlet p = write_csv(\"results/ap.csv\", rows);\nprint(`dir=${run_dir()}`);\n// %% Pictures\nshow(\"pic.png\");\nprint(\"done\");\n";
    let out = run_script(&dir, body, &[]);
    assert!(out.ok, "{}", out.stderr);
    let rd = run_dir(&dir, &out);
    assert!(
        rd.starts_with(dir.join("runs").join("script")),
        "{}",
        rd.display()
    );
    let csv = std::fs::read_to_string(rd.join("results/ap.csv")).unwrap();
    assert_eq!(csv, "ap,run\n0.5,a\n0.25,b\n");
    assert!(rd.join("pic.png").is_file());
    let report = std::fs::read_to_string(rd.join("report.md")).unwrap();
    assert!(report.contains("## 1. Tables"), "{report}");
    assert!(report.contains("## 2. Pictures"), "{report}");
    assert!(
        report.contains("| ap | run |\n|---|---|\n| 0.5 | a |"),
        "{report}"
    );
    assert!(report.contains("![pic.png](pic.png)"), "{report}");
    assert!(report.contains("table(rows);"), "source missing: {report}");
    assert!(report.contains("done"), "{report}");
    assert!(report.contains("ran in"), "{report}");

    // A second run gets a new folder; a restored run copies the cells' files into it.
    let out2 = run_script(&dir, body, &[]);
    assert!(out2.ok, "{}", out2.stderr);
    let rd2 = run_dir(&dir, &out2);
    assert_ne!(rd, rd2);
    assert_eq!(restored(&out2), ["Tables", "Pictures"]);
    assert_eq!(
        std::fs::read_to_string(rd2.join("results/ap.csv")).unwrap(),
        csv
    );
    assert!(rd2.join("pic.png").is_file());
    let report2 = std::fs::read_to_string(rd2.join("report.md")).unwrap();
    assert!(report2.contains("restored from cache"), "{report2}");
    assert!(report2.contains("![pic.png](pic.png)"), "{report2}");

    // write_csv never overwrites.
    let out = run_script(
        &dir,
        "write_csv(\"a.csv\", [#{x: 1}]);\nwrite_csv(\"a.csv\", [#{x: 1}]);\n",
        &["--fresh"],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);

    // --out: used when new or empty, refused when not empty.
    let out = run_script(&dir, "print(run_dir());\n", &["--out", "myrun"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(dir.join("myrun/report.md").is_file());
    let out = run_script(&dir, "print(run_dir());\n", &["--out", "myrun"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
}

#[test]
fn a_missing_script_is_one_line_naming_the_file() {
    let dir = temp_dir("missing");
    let out = ssod(&dir, &["run", "no_such_notebook.rhai"]);
    assert!(!out.ok);
    let line = out.stderr.trim();
    assert!(line.starts_with("error: no_such_notebook.rhai: "), "{line}");
    // The OS's reason once (a chained error printer must not repeat it).
    assert_eq!(line.matches("os error").count(), 1, "{line}");
}

#[test]
fn device_options() {
    let dir = temp_dir("device");
    let gpu = ssod::backend::cuda::CudaAvailability::probe();
    let out = run_script(&dir, "print(1);\n", &["--device", "cuda"]);
    match &gpu {
        Ok(_) => assert!(out.ok, "{}", out.stderr),
        Err(reason) => {
            assert!(!out.ok);
            assert!(out.stderr.contains("no usable GPU"), "{}", out.stderr);
            assert!(out.stderr.contains(reason.as_str()), "{}", out.stderr);
        }
    }
    let out = run_script(&dir, "print(1);\n", &["--device", "auto"]);
    assert!(out.ok, "{}", out.stderr);
    if gpu.is_err() {
        assert!(out.stdout.contains("using the CPU"), "{}", out.stdout);
    }
    let out = run_script(&dir, "print(1);\n", &["--device", "tpu"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("tpu"), "{}", out.stderr);
}

#[test]
fn repl_runs_cells_in_one_scope_and_survives_errors() {
    use std::io::Write;
    let dir = temp_dir("repl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(&dir)
        .arg("repl")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fn sq(x) {\n  x * x\n}\nlet a = 4;\n\nlet b = zeros([2]) + zeros([3]);\n;;\nprint(`sq=${sq(a)}`);\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("sq=16"), "{stdout}");
    assert!(stderr.contains("<repl>:5:"), "{stderr}");
    let runs = dir.join("runs/repl");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("In [3]") && report.contains("sq=16"),
        "{report}"
    );
}

#[test]
fn ctrl_c_stops_the_running_cell_and_the_report_is_written() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("sigint");
    std::fs::write(
        dir.join("script.rhai"),
        "// %% Quick\nlet a = 1;\nprint(\"quick done\");\n// %% Forever\nlet i = 0;\nloop { i += 1; }\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(&dir)
        .args(["run", "script.rhai"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("ssod ended before the second cell: {seen}");
        }
        seen.push_str(&line);
        if line.contains("] Forever") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let line = seen
        .lines()
        .find_map(|l| l.strip_prefix("run folder: "))
        .unwrap();
    let report = std::fs::read_to_string(dir.join(line).join("report.md")).unwrap();
    assert!(report.contains("**interrupted**"), "{report}");
    assert!(report.contains("quick done"), "{report}");
    // The finished cell was cached.
    std::fs::write(
        dir.join("script.rhai"),
        "// %% Quick\nlet a = 1;\nprint(\"quick done\");\n// %% Forever\nprint(`a=${a}`);\n",
    )
    .unwrap();
    let out = ssod(&dir, &["run", "script.rhai"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(restored(&out), ["Quick"]);
    assert!(out.stdout.contains("a=1"), "{}", out.stdout);
}
