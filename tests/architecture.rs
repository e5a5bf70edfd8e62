//! The code's shape, checked: the backend imports nothing above it, no source file passes 600
//! lines and no logic function 120, except the files and functions listed below with their
//! current size, which may shrink but not grow (each is to be split; registration and parity
//! tables are exempt as tables); every op file has the forward/backward pair layout of
//! DEVELOPERS.md ("How an op is laid out").

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

/// Files over the limit, with their line count: none may grow, no other may join (none today).
const OVERSIZED_FILES: &[(&str, usize)] = &[];

/// Logic functions over the limit today, with their line count (file, function): none may
/// grow, no other may join (none today).
const LONG_FUNCTIONS: &[(&str, &str, usize)] = &[];

/// Tables, not logic: the Rhai registrations, the kernel symbol table and the parity cases.
fn is_table(file: &str, function: &str) -> bool {
    (file.starts_with("src/script/api/") && function == "register")
        || (file == "src/backend/cuda/modules.rs" && function == "symbols")
        || file.starts_with("src/selftest/cases/")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(relative path, text)` of every `.rs` file under `src/`, sorted.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

/// One function with a body: its name, its indentation and its lines (from its `fn` line to
/// the closing brace at the same indentation, rustfmt's layout).
struct FnSpan<'a> {
    name: String,
    indent: &'a str,
    lines: &'a [&'a str],
}

fn function_spans<'a>(lines: &'a [&'a str]) -> Vec<FnSpan<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let rest = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "unsafe ",
            "async ",
        ]
        .iter()
        .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let Some(after_fn) = rest.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = after_fn
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at `{` (a body) or `;` (a declaration).
        let mut j = i;
        while j < lines.len()
            && !lines[j].trim_end().ends_with('{')
            && !lines[j].trim_end().ends_with(';')
        {
            j += 1;
        }
        if j >= lines.len() || lines[j].trim_end().ends_with(';') {
            i = j + 1;
            continue;
        }
        let close = format!("{indent}}}");
        let mut k = j + 1;
        while k < lines.len() && lines[k].trim_end() != close {
            k += 1;
        }
        let end = (k + 1).min(lines.len());
        out.push(FnSpan {
            name,
            indent,
            lines: &lines[i..end],
        });
        i = k + 1;
    }
    out
}

/// `(name, lines)` of every function with a body.
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    function_spans(&lines)
        .into_iter()
        .map(|f| (f.name, f.lines.len()))
        .collect()
}

#[test]
fn the_backend_imports_nothing_above_it() {
    // Below the backend: only its own modules and the crate's root utilities.
    let allowed = [
        "backend",
        "digest",
        "error",
        "Result",
        "Error",
        "atomic_file",
    ];
    let mut found = Vec::new();
    for (file, text) in sources()
        .iter()
        .filter(|(f, _)| f.starts_with("src/backend/"))
    {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + 7..];
                // `crate::{a, b::c}` names several modules.
                let modules: Vec<String> = match rest.strip_prefix('{') {
                    Some(inner) => inner
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or("").to_string())
                        .filter(|m| !m.is_empty())
                        .collect(),
                    None => vec![rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect()],
                };
                for module in modules {
                    if !allowed.contains(&module.as_str()) {
                        found.push(format!("{file}:{}: crate::{module}", n + 1));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/backend reaches above itself:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_file_passes_600_lines_and_the_listed_ones_do_not_grow() {
    let mut problems = Vec::new();
    for (file, text) in sources() {
        let lines = text.lines().count();
        let listed = OVERSIZED_FILES.iter().find(|(f, _)| *f == file);
        match listed {
            Some((_, limit)) if lines > *limit => problems.push(format!(
                "{file}: {lines} lines, grew past its listed {limit}"
            )),
            None if lines > MAX_FILE_LINES => problems.push(format!(
                "{file}: {lines} lines (limit {MAX_FILE_LINES}): split it"
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_logic_function_passes_120_lines_and_the_listed_ones_do_not_grow() {
    let mut problems = Vec::new();
    for (file, text) in sources() {
        for (name, lines) in functions(&text) {
            if lines <= MAX_FN_LINES || is_table(&file, &name) {
                continue;
            }
            match LONG_FUNCTIONS
                .iter()
                .find(|(f, n, _)| *f == file && *n == name)
            {
                Some((_, _, limit)) if lines <= *limit => {}
                Some((_, _, limit)) => problems.push(format!(
                    "{file}: fn {name} is {lines} lines, grew past its listed {limit}"
                )),
                None => problems.push(format!(
                    "{file}: fn {name} is {lines} lines (limit {MAX_FN_LINES}): split it"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The counter itself: a function's lines run from its `fn` line to its closing brace.
#[test]
fn the_function_counter_counts_what_rustfmt_writes() {
    let text =
        "fn a() {\n    1;\n}\n\npub(crate) fn b(\n    x: u8,\n) -> u8 {\n    x\n}\nfn c();\n";
    assert_eq!(
        functions(text),
        vec![("a".to_string(), 3), ("b".to_string(), 5)]
    );
}

/// Every op file (all of `src/ops/` but its `mod.rs`) has the pair layout: `fwd` and `bwd`
/// (`<op>_fwd` and `<op>_bwd` in a file of several ops) hold the op's one device dispatch, device
/// code sits only in them and in their arms (`cpu_*`, `cuda_*`), the arms record nothing (the
/// public op records its backward once), and no parallel kernel loop runs there (those are in
/// backend::cpu).
fn is_op_file(file: &str) -> bool {
    file.starts_with("src/ops/") && file != "src/ops/mod.rs"
}

/// What reads or branches on a device: only the dispatch and its arms may hold these.
const DEVICE_TOKENS: &[&str] = &[
    "Device::Cuda",
    "Device::Cpu",
    "with_cuda",
    "cuda_owned",
    "cuda_read",
    "cuda_write",
    "Storage::",
    "is_cuda(",
];

/// `fwd`, `bwd`, or `<op>_fwd` / `<op>_bwd` in a file of several ops.
fn is_dispatch(name: &str) -> bool {
    !is_arm(name)
        && (name.ends_with("fwd") || name.ends_with("bwd"))
        && (name.len() == 3 || name.ends_with("_fwd") || name.ends_with("_bwd"))
}

fn is_arm(name: &str) -> bool {
    name.starts_with("cpu_") || name.starts_with("cuda_")
}

/// The pair layout's breaches in one op file's text (empty when it has the layout).
fn pair_layout_problems(file: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    // Top-level functions, tests aside.
    let test_start = lines
        .iter()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let spans: Vec<FnSpan> = function_spans(&lines[..test_start])
        .into_iter()
        .filter(|f| f.indent.is_empty())
        .collect();
    let mut problems = Vec::new();
    // Each forward dispatch (`fwd`, or `<op>_fwd` in a file of several ops) has its backward.
    let stems = |suffix: &str| -> Vec<String> {
        let mut v: Vec<String> = spans
            .iter()
            .filter(|f| is_dispatch(&f.name) && f.name.ends_with(suffix))
            .map(|f| f.name.trim_end_matches(suffix).to_string())
            .collect();
        v.sort();
        v
    };
    let (fwds, bwds) = (stems("fwd"), stems("bwd"));
    if fwds.is_empty() {
        problems.push(format!("{file}: no `fn fwd` dispatch"));
    }
    if fwds != bwds {
        problems.push(format!(
            "{file}: forward dispatches {fwds:?} and backward dispatches {bwds:?} do not pair"
        ));
    }
    for f in &spans {
        let code: Vec<&str> = f
            .lines
            .iter()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        let records = code
            .iter()
            .map(|l| l.matches("record(").count())
            .sum::<usize>();
        if records > 1 {
            problems.push(format!("{file}: fn {} records {records} backwards", f.name));
        }
        if records > 0 && (is_dispatch(&f.name) || is_arm(&f.name)) {
            problems.push(format!(
                "{file}: fn {} records a backward in a device arm",
                f.name
            ));
        }
        if is_dispatch(&f.name) || is_arm(&f.name) {
            continue;
        }
        for token in DEVICE_TOKENS {
            if code.iter().any(|l| l.contains(token)) {
                problems.push(format!(
                    "{file}: fn {} holds device code (`{token}`) outside fwd/bwd and their arms",
                    f.name
                ));
            }
        }
    }
    for (n, line) in lines[..test_start].iter().enumerate() {
        if line.contains("rayon") || line.contains(".par_") {
            problems.push(format!(
                "{file}:{}: a parallel kernel loop (move it to backend::cpu)",
                n + 1
            ));
        }
    }
    problems
}

#[test]
fn ops_dispatch_once_and_record_once() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, text) in sources().iter().filter(|(f, _)| is_op_file(f)) {
        problems.extend(pair_layout_problems(file, text));
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} op files found under src/ops");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check catches the shape the pair layout replaced: a public op that branches on the
/// device itself and records its backward once per device.
#[test]
fn the_pair_check_rejects_a_per_device_op() {
    let old = "pub fn op(x: &Tensor) -> Result<Tensor> {\n    \
               if x.device() == Device::Cuda {\n        return op_cuda(x);\n    }\n    \
               let out = x.with_values(|v| v.par_iter().sum::<f32>())?;\n    \
               record(\"op\", out, &[x], |g| Ok(vec![Some(g.clone())]))\n}\n\n\
               fn op_cuda(x: &Tensor) -> Result<Tensor> {\n    \
               let y = x.with_cuda(|dev, xs| launch(dev, xs))?;\n    \
               record(\"op\", y, &[x], |g| Ok(vec![Some(g.clone())]))\n}\n";
    let problems = pair_layout_problems("old.rs", old);
    for expected in [
        "no `fn fwd` dispatch",
        "fn op holds device code (`Device::Cuda`)",
        "fn op_cuda holds device code (`with_cuda`)",
        "a parallel kernel loop",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing `{expected}` in {problems:#?}"
        );
    }
    let paired = "pub fn op(x: &Tensor) -> Result<Tensor> {\n    \
                  let out = fwd(x)?;\n    \
                  record(\"op\", out, &[x], move |g| bwd(g))\n}\n\n\
                  fn fwd(x: &Tensor) -> Result<Tensor> {\n    match x.device() {\n        \
                  Device::Cpu => cpu_fwd(x),\n        Device::Cuda => cuda_fwd(x),\n    }\n}\n\n\
                  fn bwd(g: &Tensor) -> Result<Vec<Option<Tensor>>> {\n    \
                  Ok(vec![Some(g.clone())])\n}\n\n\
                  fn cuda_fwd(x: &Tensor) -> Result<Tensor> {\n    \
                  x.with_cuda(|dev, xs| launch(dev, xs))\n}\n";
    assert_eq!(pair_layout_problems("new.rs", paired), Vec::<String>::new());
}
