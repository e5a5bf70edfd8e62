//! `ssod run` and the Rhai bindings: results, errors with positions, no panics on bad input.

use std::path::PathBuf;
use std::process::Command;

fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod_script_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn run(path: &PathBuf) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .arg("run")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn gradients_flow_through_a_script() {
    // loss = sum(x * x) with x = [1, 2, 3]: d/dx = 2x = [2, 4, 6].
    let p = script(
        "grad.rhai",
        "let x = tensor([1.0, 2.0, 3.0], [3]).requires_grad();\nlet l = (x * x).sum();\nl.backward();\nprint(x.grad().to_array());\nprint(l.item());\n",
    );
    let (ok, stdout, stderr) = run(&p);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("[2.0, 4.0, 6.0]"), "{stdout}");
    assert!(stdout.contains("14.0"), "{stdout}");
}

#[test]
fn ops_with_option_maps_and_model() {
    // conv 1x1 with weight 2 doubles the input: sum = 2 * (0+1+...+7) = 56.
    let p = script(
        "conv.rhai",
        r#"
let x = tensor([[[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]]]);
let w = full([1, 2, 1, 1], 2.0);
let y = conv2d(x, w, #{ stride: 1, padding: 0, groups: 1 });
print(`conv=${y.sum().item()}`);
let m = yolox("nano", #{ classes: 1, width: 0.125 });
let out = m.forward(zeros([1, 3, 64, 64]));
print(`out=${out.shape}`);
"#,
    );
    let (ok, stdout, stderr) = run(&p);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("conv=56.0"), "{stdout}");
    // 8x8 + 4x4 + 2x2 = 84 anchors, 5 + 1 channels.
    assert!(stdout.contains("out=[1, 84, 6]"), "{stdout}");
}

#[test]
fn errors_name_position_op_and_shapes() {
    let p = script(
        "shape.rhai",
        "let a = zeros([2, 3]);\nlet b = zeros([4, 5]);\nlet c = a + b;\n",
    );
    let (ok, _, stderr) = run(&p);
    assert!(!ok);
    assert!(stderr.contains("shape.rhai:3:"), "{stderr}");
    assert!(
        stderr.contains("add") && stderr.contains("[2, 3]") && stderr.contains("[4, 5]"),
        "{stderr}"
    );

    let p = script(
        "opt.rhai",
        "let x = zeros([1, 1, 4, 4]);\nlet y = max_pool2d(x, #{ kernal: 3 });\n",
    );
    let (ok, _, stderr) = run(&p);
    assert!(!ok);
    assert!(
        stderr.contains("opt.rhai:2:") && stderr.contains("unknown option `kernal`"),
        "{stderr}"
    );

    let p = script(
        "conv.rhai",
        "let y = conv2d(zeros([1, 3, 8, 8]), zeros([4, 2, 3, 3]), #{});\n",
    );
    let (ok, _, stderr) = run(&p);
    assert!(!ok);
    assert!(
        stderr.contains("conv2d") && stderr.contains("[1, 3, 8, 8]"),
        "{stderr}"
    );
}

#[test]
fn hostile_scripts_error_without_panicking() {
    for (name, body) in [
        ("syntax.rhai", "let x = zeros([2, 3]\n"),
        ("neg.rhai", "let x = zeros([-1, 3]);\n"),
        ("ragged.rhai", "let x = tensor([[1.0, 2.0], [3.0]]);\n"),
        (
            "idx.rhai",
            "let x = index_select(zeros([3, 2]), 0, tensor([5.0], [1]));\n",
        ),
        ("item.rhai", "let x = zeros([3]).item();\n"),
        (
            "bwd.rhai",
            "let x = zeros([3]).requires_grad(); (x * 2.0).backward();\n",
        ),
        ("recursion.rhai", "fn f(n) { f(n + 1) } f(0);\n"),
        (
            "file.rhai",
            "let x = load_npy(\"/nonexistent/file.npy\");\n",
        ),
        ("reshape.rhai", "let x = zeros([2, 3]).reshape([-1, -1]);\n"),
        (
            "pool.rhai",
            "let x = max_pool2d(zeros([1, 1, 2, 2]), #{ kernel: 0 });\n",
        ),
        ("slice.rhai", "let x = zeros([4]).slice(0, 3, 1, 1);\n"),
        // Shapes whose element count wraps, or that need more memory than the machine has:
        // errors, not an abort.
        ("wrap.rhai", "let x = zeros([4294967296, 4294967296]);\n"),
        ("huge.rhai", "let x = ones([2147483648, 2147483648]);\n"),
        (
            "huge_randn.rhai",
            "let x = randn([1048576, 1048576, 1024], 1);\n",
        ),
        ("huge_arange.rhai", "let x = arange(0.0, 1.0e30, 1.0);\n"),
    ] {
        let p = script(name, body);
        let (ok, _, stderr) = run(&p);
        assert!(!ok, "{name} should fail");
        assert!(
            stderr.contains("error:")
                && !stderr.contains("internal error")
                && !stderr.contains("panicked"),
            "{name}: {stderr}"
        );
        if name.starts_with("huge") || name == "wrap.rhai" {
            assert!(
                stderr.contains("can address") || stderr.contains("memory"),
                "{name}: the error should say the shape is too large: {stderr}"
            );
        }
    }
}

#[test]
fn doc_lists_registered_functions() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(["doc", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for f in [
        "conv2d",
        "batch_norm",
        "bce_with_logits",
        "yolox",
        "cosine_similarity",
        "load_npy",
    ] {
        assert!(names.contains(&f), "{f} missing from ssod doc");
    }
    assert!(docs
        .as_array()
        .unwrap()
        .iter()
        .all(|d| !d["description"].as_str().unwrap().is_empty()));
}
