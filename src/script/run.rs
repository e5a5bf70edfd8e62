//! Running a script file and reporting its errors with position and source line.

use std::path::Path;

use rhai::{EvalAltResult, Position, Scope};

use crate::{Error, Result};

/// The outcome of a script run.
pub struct ScriptRun {
    /// The value of the script's last expression, printed by `ssod run` when not `()`.
    pub value: rhai::Dynamic,
}

/// `file:line:col: message`, then the source line and a caret under the column.
pub fn format_script_error(file: &str, source: &str, err: &EvalAltResult) -> String {
    // Inner-most position that is known: errors raised inside functions point at the call.
    let mut pos = err.position();
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, e, p) = inner {
        if !p.is_none() {
            pos = *p;
        }
        if !e.position().is_none() {
            pos = e.position();
        }
        inner = e;
    }
    let msg = match err {
        EvalAltResult::ErrorInFunctionCall(..) => format!("{}", inner)
            .trim_end_matches(&format!(" {}", inner.position()))
            .to_string(),
        _ => err.to_string(),
    };
    let msg = strip_position(&msg);
    if pos == Position::NONE {
        return format!("{file}: {msg}");
    }
    let (line, col) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
    let src_line = source.lines().nth(line.saturating_sub(1)).unwrap_or("");
    format!(
        "{file}:{line}:{col}: {msg}\n  {src_line}\n  {}^",
        " ".repeat(col.saturating_sub(1))
    )
}

/// Rhai appends " (line L, position P)" to messages; the formatted header already says it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" (line ") {
        Some(i) if msg.ends_with(')') => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Evaluate a script file with the full API.
pub fn run_script_file(path: &Path) -> Result<ScriptRun> {
    let source = crate::data::dataset::read_text_file(path)?;
    let (engine, _) = crate::script::new_engine();
    let file = path.display().to_string();
    let ast = engine
        .compile(&source)
        .map_err(|e| Error::Msg(format_script_error(&file, &source, &EvalAltResult::from(e))))?;
    let mut scope = Scope::new();
    let value = engine
        .eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &ast)
        .map_err(|e| Error::Msg(format_script_error(&file, &source, &e)))?;
    Ok(ScriptRun { value })
}
