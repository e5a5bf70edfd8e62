//! The pickle machine: the opcodes of protocols 2 to 5 that pickling data emits, calling
//! nothing (see the module docs of `tensor::pth`).

use std::collections::HashMap;

use super::*;

pub(super) struct Machine<'a, 'h> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) stack: Vec<Value>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u32, Value>,
    pub(super) heap: &'h mut Heap,
}

impl Machine<'_, '_> {
    pub(super) fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(format!(
                "needs {n} more bytes at byte {}, but the pickle ends at byte {} (truncated)",
                self.pos,
                self.data.len()
            )),
        }
    }

    pub(super) fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> std::result::Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub(super) fn len_bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        let n = usize::try_from(n).map_err(|_| format!("a length of {n} bytes"))?;
        Ok(self.take(n)?.to_vec())
    }

    pub(super) fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a text line without its end (truncated)")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    pub(super) fn push(&mut self, v: Value) -> std::result::Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("a stack deeper than {MAX_STACK} values"));
        }
        self.stack.push(v);
        Ok(())
    }

    pub(super) fn pop(&mut self) -> std::result::Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pops an empty stack".into());
        }
        Ok(self.stack.pop().unwrap_or(Value::None))
    }

    pub(super) fn top(&self) -> std::result::Result<&Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("reads the top of an empty stack".into());
        }
        self.stack.last().ok_or_else(|| "an empty stack".into())
    }

    pub(super) fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    pub(super) fn alloc_push(&mut self, o: Obj) -> std::result::Result<(), String> {
        let v = self.heap.alloc(o)?;
        self.push(v)
    }

    /// The object a container opcode adds to (the stack's top): its index in the heap.
    pub(super) fn target(&self, what: &str) -> std::result::Result<usize, String> {
        match self.top()? {
            Value::Ref(i) => Ok(*i),
            other => Err(format!("{what} on {}", self.heap.describe(other))),
        }
    }

    pub(super) fn add_items(
        &mut self,
        items: Vec<Value>,
        what: &str,
    ) -> std::result::Result<(), String> {
        let i = self.target(what)?;
        match &mut self.heap.objects[i] {
            Obj::List(l) | Obj::Set(l) => l.extend(items),
            // A subclass of list or set this reader does not build: its content is not needed.
            Obj::Instance(_) => {}
            _ => {
                let d = self.heap.describe(&Value::Ref(i));
                return Err(format!("{what} on {d}"));
            }
        }
        Ok(())
    }

    pub(super) fn set_items(&mut self, items: Vec<Value>) -> std::result::Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!(
                "SETITEMS with an odd number of values ({})",
                items.len()
            ));
        }
        let i = self.target("SETITEM")?;
        match &mut self.heap.objects[i] {
            Obj::Dict(d) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            Obj::Instance(_) => {}
            _ => {
                let d = self.heap.describe(&Value::Ref(i));
                return Err(format!("SETITEM on {d}"));
            }
        }
        Ok(())
    }

    pub(super) fn run(&mut self) -> std::result::Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8().map_err(|_| {
                format!(
                    "ends at byte {} without its STOP opcode (truncated)",
                    self.data.len()
                )
            })?;
            self.step(op)
                .map_err(|e| format!("opcode {} at byte {at}: {e}", opcode_name(op)))?;
            if op == b'.' {
                return self.pop().map_err(|e| format!("STOP at byte {at}: {e}"));
            }
        }
    }

    pub(super) fn int_arg(&self, v: &Value, what: &str) -> std::result::Result<u64, String> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            other => Err(format!(
                "{what} is {}, not a non-negative int",
                self.heap.describe(other)
            )),
        }
    }

    pub(super) fn ints_arg(&self, v: &Value, what: &str) -> std::result::Result<Vec<u64>, String> {
        let items = self
            .heap
            .sequence(v)
            .ok_or_else(|| format!("{what} is {}, not a tuple", self.heap.describe(v)))?;
        items.iter().map(|x| self.int_arg(x, what)).collect()
    }

    /// `('storage', storage_class, key, location, numel[, view_metadata])`.
    pub(super) fn persistent_load(&mut self, pid: &Value) -> std::result::Result<Value, String> {
        let items = self.heap.sequence(pid).map(<[Value]>::to_vec);
        let storage = match items.as_deref() {
            Some([Value::Str(kind), class, key, _location, numel, rest @ ..])
                if kind == "storage" && rest.len() <= 1 =>
            {
                if rest.first().is_some_and(|v| !matches!(v, Value::None)) {
                    return Err(
                        "a storage view (PyTorch < 0.4): re-save the checkpoint with a current \
                         torch.save"
                            .into(),
                    );
                }
                let class = match class {
                    Value::Global(g) => g.clone(),
                    other => {
                        return Err(format!(
                            "a storage whose class is {}",
                            self.heap.describe(other)
                        ))
                    }
                };
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => {
                        return Err(format!(
                            "a storage whose key is {}",
                            self.heap.describe(other)
                        ))
                    }
                };
                StorageRef {
                    dtype: PthDtype::from_storage_class(&class).ok_or(()),
                    class,
                    key,
                    numel: self.int_arg(numel, "the storage's size")?,
                }
            }
            _ => {
                return Err(format!(
                    "persistent id {}: only `('storage', class, key, location, size)` is read",
                    self.heap.describe(pid)
                ))
            }
        };
        self.heap.alloc(Obj::Storage(storage))
    }

    pub(super) fn reduce(
        &mut self,
        callable: &Value,
        args: &Value,
    ) -> std::result::Result<Value, String> {
        let name = match callable {
            Value::Global(g) => g.clone(),
            other => return Err(format!("calls {}", self.heap.describe(other))),
        };
        let argv = self.heap.sequence(args).map(<[Value]>::to_vec);
        let bad_args = |heap: &Heap| {
            format!(
                "`{name}` with arguments {} it does not take",
                heap.describe(args)
            )
        };
        match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" | "__builtin__.dict" => {
                let mut pairs = Vec::new();
                if let Some(first) = argv.as_ref().and_then(|a| a.first()) {
                    for item in self.heap.sequence(first).unwrap_or(&[]) {
                        match self.heap.sequence(item) {
                            Some([k, v]) => pairs.push((k.clone(), v.clone())),
                            _ => return Err(bad_args(self.heap)),
                        }
                    }
                }
                self.heap.alloc(Obj::Dict(pairs))
            }
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let argv = argv.ok_or_else(|| bad_args(self.heap))?;
                if argv.len() < 4 {
                    return Err(bad_args(self.heap));
                }
                let storage = match self.heap.get(&argv[0]) {
                    Some(Obj::Storage(s)) => s.clone(),
                    _ => {
                        return Err(format!(
                            "`{name}` of {}, not a storage",
                            self.heap.describe(&argv[0])
                        ))
                    }
                };
                let t = TensorRef {
                    storage,
                    offset: self.int_arg(&argv[1], "the storage offset")?,
                    size: self.ints_arg(&argv[2], "the size")?,
                    stride: self.ints_arg(&argv[3], "the stride")?,
                };
                if t.size.len() != t.stride.len() {
                    return Err(format!(
                        "a tensor of size {:?} with strides {:?}",
                        t.size, t.stride
                    ));
                }
                self.heap.alloc(Obj::Tensor(t))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match argv.as_ref().and_then(|a| a.first()) {
                    Some(t) if matches!(self.heap.get(t), Some(Obj::Tensor(_))) => Ok(t.clone()),
                    _ => Err(bad_args(self.heap)),
                }
            }
            "_codecs.encode" => match argv.as_deref() {
                // Protocol 2's bytes: `_codecs.encode(text, 'latin1')`.
                Some([Value::Str(s), Value::Str(_)]) => {
                    Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()))
                }
                _ => Err(bad_args(self.heap)),
            },
            "builtins.set" | "__builtin__.set" | "builtins.frozenset" => {
                let items = argv
                    .as_ref()
                    .and_then(|a| a.first())
                    .and_then(|l| self.heap.sequence(l))
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default();
                self.heap.alloc(Obj::Set(items))
            }
            _ => self.heap.alloc(Obj::Instance(name)),
        }
    }
}

/// Run one pickle from `start`; returns its value and the position after its STOP.
pub(super) fn unpickle(
    data: &[u8],
    start: usize,
    heap: &mut Heap,
    what: &str,
) -> std::result::Result<(Value, usize), String> {
    let mut m = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap,
    };
    let v = m.run().map_err(|e| format!("{what}: {e}"))?;
    Ok((v, m.pos))
}
