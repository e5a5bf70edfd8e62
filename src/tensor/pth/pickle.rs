//! The pickled values and the heap that holds their containers, with the limits that keep a
//! crafted file from exhausting memory.

use super::*;

/// A pickled value; containers and objects live in [`Heap::objects`], so a value is cheap to
/// copy, the memo shares containers as Python does, and dropping nested values never recurses.
#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A class or function: `module.name`.
    Global(String),
    Ref(usize),
}

#[derive(Debug)]
pub(super) enum Obj {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Entries in insertion order; a key set twice keeps both and the later wins on lookup.
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// An instance of a class this reader does not build (kept by name for messages).
    Instance(String),
    Storage(StorageRef),
    Tensor(TensorRef),
}

#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    pub(super) key: String,
    /// The storage class, `torch.FloatStorage`.
    pub(super) class: String,
    pub(super) dtype: std::result::Result<PthDtype, ()>,
    pub(super) numel: u64,
}

#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) offset: u64,
    pub(super) size: Vec<u64>,
    pub(super) stride: Vec<u64>,
}

/// Bounds that keep a hostile pickle from exhausting memory (a real state dict uses far less).
pub(super) const MAX_STACK: usize = 1 << 20;
pub(super) const MAX_OBJECTS: usize = 1 << 24;

#[derive(Default)]
pub(super) struct Heap {
    pub(super) objects: Vec<Obj>,
}

impl Heap {
    pub(super) fn alloc(&mut self, o: Obj) -> std::result::Result<Value, String> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} objects in the pickle"));
        }
        self.objects.push(o);
        Ok(Value::Ref(self.objects.len() - 1))
    }

    pub(super) fn get(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Ref(i) => self.objects.get(*i),
            _ => None,
        }
    }

    pub(super) fn sequence(&self, v: &Value) -> Option<&[Value]> {
        match self.get(v)? {
            Obj::List(x) | Obj::Tuple(x) => Some(x),
            _ => None,
        }
    }

    pub(super) fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.get(v)? {
            Obj::Dict(x) => Some(x),
            _ => None,
        }
    }

    pub(super) fn dict_get(&self, v: &Value, key: &str) -> Option<&Value> {
        self.dict(v)?
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// What a value is, for messages: "an int (3)", "an object of class `numpy.dtype`".
    pub(super) fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("a bool ({})", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("an int ({i})"),
            Value::BigInt(_) => "a large int".into(),
            Value::Float(f) => format!("a float ({f})"),
            Value::Str(s) => format!("a string ({s:?})"),
            Value::Bytes(b) => format!("bytes ({} long)", b.len()),
            Value::Global(g) => format!("the class or function `{g}`"),
            Value::Ref(_) => match self.get(v) {
                Some(Obj::List(x)) => format!("a list of {}", x.len()),
                Some(Obj::Tuple(x)) => format!("a tuple of {}", x.len()),
                Some(Obj::Dict(x)) => format!("a dict of {}", x.len()),
                Some(Obj::Set(x)) => format!("a set of {}", x.len()),
                Some(Obj::Instance(c)) => {
                    format!("an object of class `{c}`, which this reader does not build")
                }
                Some(Obj::Storage(_)) => "a bare storage".into(),
                Some(Obj::Tensor(_)) => "a tensor".into(),
                None => "a dangling reference".into(),
            },
        }
    }
}

pub(super) fn opcode_name(op: u8) -> String {
    let name = match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return format!("0x{op:02x} (not a pickle opcode)"),
    };
    format!("{name} (0x{op:02x})")
}
