//! The code's shape, checked: the backend imports nothing above it, no source file passes 600
//! lines and no logic function 120, except the files and functions listed below with their
//! current size, which may shrink but not grow (each is to be split; registration and parity
//! tables are exempt as tables).

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

/// `(name, lines)` of every function with a body: from its `fn` line to the closing brace at
/// the same indentation (rustfmt's layout).
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
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
        out.push((name, k + 1 - i));
        i = k + 1;
    }
    out
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
