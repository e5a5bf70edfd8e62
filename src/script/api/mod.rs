//! Registered Rhai functions, one file per domain. Every function is registered through
//! [`Api::describe`] with its parameter list and a one-line description, which `ssod doc` prints.

use std::sync::{Arc, Mutex};

use rhai::{Engine, FuncRegistration};
use serde::Serialize;

/// One registered function, for `ssod doc`.
#[derive(Clone, Debug, Serialize)]
pub struct FnDoc {
    pub name: String,
    pub signature: String,
    pub description: String,
}

/// Registration with documentation.
pub struct Api<'e> {
    pub engine: &'e mut Engine,
    pub docs: Vec<FnDoc>,
}

impl Api<'_> {
    /// Record a function's documentation and return its Rhai registration (params + comment).
    pub fn describe(
        &mut self,
        name: &str,
        params: &[&str],
        ret: &str,
        doc: &str,
    ) -> FuncRegistration {
        let mut info: Vec<&str> = params.to_vec();
        info.push(ret);
        self.docs.push(FnDoc {
            name: name.to_string(),
            signature: format!("{name}({}) -> {ret}", params.join(", ")),
            description: doc.to_string(),
        });
        FuncRegistration::new(name)
            .with_params_info(info)
            .with_comments([format!("/// {doc}")])
    }
}

/// Register a documented function: `func!(api, "name", &["x: Tensor"], "Tensor", "What it does.", |x: Tensor| ...)`.
/// (A macro because Rhai's `Variant` bound cannot be named outside the crate.)
macro_rules! func {
    ($api:expr, $name:expr, $params:expr, $ret:expr, $doc:expr, $f:expr $(,)?) => {{
        let reg = $api.describe($name, $params, $ret, $doc);
        reg.register_into_engine($api.engine, $f);
    }};
}

mod data;
mod detect;
mod models;
pub mod notebook;
mod ops;
mod pretrain;
mod tensor;
mod train;

/// An engine with the whole ssod API, and the documentation of every function it registered.
pub fn new_engine() -> (Engine, Vec<FnDoc>) {
    new_engine_with(&notebook::RunContext::detached())
}

/// [`new_engine`] whose notebook functions (`param`, `show`, ...) and `print` use `ctx`.
pub fn new_engine_with(ctx: &Arc<notebook::RunContext>) -> (Engine, Vec<FnDoc>) {
    let mut engine = Engine::new();
    notebook::hook_output(&mut engine, ctx);
    // Scripts are user input: bound recursion so a runaway script errors instead of overflowing
    // the stack.
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    let mut api = Api {
        engine: &mut engine,
        docs: Vec::new(),
    };
    tensor::register(&mut api);
    ops::register(&mut api);
    models::register(&mut api);
    detect::register(&mut api);
    data::register(&mut api);
    train::register(&mut api);
    pretrain::register(&mut api);
    notebook::register(&mut api, ctx);
    let mut docs = api.docs;
    docs.sort_by(|a, b| a.name.cmp(&b.name).then(a.signature.cmp(&b.signature)));
    (engine, docs)
}

/// Captures `print` output of a script (notebook cells print into their report).
pub type PrintSink = Arc<Mutex<Vec<String>>>;
