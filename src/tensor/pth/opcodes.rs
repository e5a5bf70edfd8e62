//! One opcode of the pickle machine ([`Machine::step`]), by family: each family's opcodes
//! go to one method, so the step reads as the list of what a pickle can hold.

use super::machine::Machine;
use super::*;

/// The error for an opcode this reader does not take.
fn unsupported() -> String {
    "not read here: torch.save writes pickle protocol 2, and this reader takes the binary \
     opcodes of protocols 2 to 5 that pickled data uses"
        .into()
}

impl Machine<'_, '_> {
    pub(super) fn step(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            0x80 | 0x95 | b'.' => self.protocol(op),
            b'(' | b'}' | b']' | b')' | 0x8f | b'd' | b'l' | b't' | 0x91 | 0x85..=0x87 => {
                self.build_container(op)
            }
            b'J' | b'K' | b'M' | 0x8a | 0x8b | b'G' | b'N' | 0x88 | 0x89 => self.push_scalar(op),
            b'X' | 0x8c | 0x8d | b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => self.push_text(op),
            b'q' | b'r' | 0x94 | b'h' | b'j' => self.memo_op(op),
            b'a' | b'e' | 0x90 | b's' | b'u' => self.fill_container(op),
            b'c' | 0x93 | b'R' | 0x81 | 0x92 | b'b' | b'Q' => self.object_op(op),
            b'0' | b'1' | b'2' => self.stack_op(op),
            _ => Err(unsupported()),
        }
    }

    /// The framing opcodes: PROTO, FRAME, STOP.
    fn protocol(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(format!("pickle protocol {p} (at most 5 is read)"));
                }
            }
            0x95 => {
                self.u64()?;
            }
            b'.' => {}
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// MARK and the opcodes that push a new dict, list, tuple or set.
    fn build_container(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.alloc_push(Obj::Dict(Vec::new()))?,
            b']' => self.alloc_push(Obj::List(Vec::new()))?,
            b')' => self.alloc_push(Obj::Tuple(Vec::new()))?,
            0x8f => self.alloc_push(Obj::Set(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Dict(Vec::new()))?;
                self.set_items(items)?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::List(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Tuple(items))?;
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Set(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.alloc_push(Obj::Tuple(items))?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Ints, floats, None and the booleans.
    fn push_scalar(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v as i64))?;
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))?;
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as u64
                } else {
                    self.u32()? as u64
                };
                let bytes = self.len_bytes(n)?;
                let v = if bytes.len() <= 8 {
                    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        0xFF
                    } else {
                        0
                    };
                    let mut a = [fill; 8];
                    a[..bytes.len()].copy_from_slice(&bytes);
                    Value::Int(i64::from_le_bytes(a))
                } else {
                    Value::BigInt(bytes)
                };
                self.push(v)?;
            }
            b'G' => {
                let b = self.take(8)?;
                let v = f64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                self.push(Value::Float(v))?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Strings (Python 3 and 2) and bytes.
    fn push_text(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32()? as u64,
                    0x8c => self.u8()? as u64,
                    _ => self.u64()?,
                };
                let bytes = self.len_bytes(n)?;
                let s = String::from_utf8(bytes).map_err(|_| "a string that is not UTF-8")?;
                self.push(Value::Str(s))?;
            }
            b'T' | b'U' => {
                // Python 2 `str`: bytes, read as Latin-1 text.
                let n = if op == b'T' {
                    self.u32()? as u64
                } else {
                    self.u8()? as u64
                };
                let bytes = self.len_bytes(n)?;
                self.push(Value::Str(bytes.iter().map(|&c| c as char).collect()))?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32()? as u64,
                    b'C' => self.u8()? as u64,
                    _ => self.u64()?,
                };
                let bytes = self.len_bytes(n)?;
                self.push(Value::Bytes(bytes))?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Storing to and fetching from the memo.
    fn memo_op(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'q' | b'r' | 0x94 => {
                let id = match op {
                    b'q' => self.u8()? as u32,
                    b'r' => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let v = self.top()?.clone();
                self.memo.insert(id, v);
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                let v = self
                    .memo
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("memo entry {id} was never stored"))?;
                self.push(v)?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Adding items to the list, set or dict under them on the stack.
    fn fill_container(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'a' => {
                let v = self.pop()?;
                self.add_items(vec![v], "APPEND")?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.add_items(items, "APPENDS")?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                self.add_items(items, "ADDITEMS")?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Globals, calls, instances, their state and persistent ids (storages).
    fn object_op(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(format!("{module}.{name}")))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        self.push(Value::Global(format!("{m}.{n}")))?
                    }
                    _ => return Err("module and name are not strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(&callable, &args)?;
                self.push(v)?;
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop()?; // kwargs
                }
                let args = self.pop()?;
                let class = self.pop()?;
                let v = match &class {
                    Value::Global(g) if g == "collections.OrderedDict" => {
                        self.heap.alloc(Obj::Dict(Vec::new()))?
                    }
                    Value::Global(g) => self.heap.alloc(Obj::Instance(g.clone()))?,
                    other => {
                        return Err(format!(
                            "creates an instance of {} with {}",
                            self.heap.describe(other),
                            self.heap.describe(&args)
                        ))
                    }
                };
                self.push(v)?;
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                match self.heap.get(&target) {
                    // Attributes of a dict (a state dict's `_metadata`), a tensor or an opaque
                    // object: not needed.
                    Some(Obj::Dict(_) | Obj::Tensor(_) | Obj::Instance(_)) => {}
                    _ => {
                        return Err(format!(
                            "sets the state of {} to {}",
                            self.heap.describe(&target),
                            self.heap.describe(&state)
                        ))
                    }
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent_load(&pid)?;
                self.push(v)?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// POP, POP_MARK and DUP.
    fn stack_op(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            b'0' => {
                if self.stack.len() > self.marks.last().copied().unwrap_or(0) {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)?;
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }
}
