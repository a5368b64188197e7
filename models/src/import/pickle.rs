//! A data-only interpreter for the pickle stream inside a PyTorch `torch.save` file.
//!
//! It rebuilds dicts, lists, tuples, numbers, strings and tensor *references* (storage key, dtype, offset, size,
//! stride) and never imports or runs anything: a class it does not know (an `argparse.Namespace`, a numpy scalar, a
//! whole `nn.Module`) becomes an inert [`Value::Object`] holding its constructor arguments and state. Opcodes of
//! protocols 0–5 that `torch.save` and ordinary Python objects produce are supported; anything else is an error
//! naming the opcode and its byte offset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Element type of a tensor storage, from the storage class name (`torch.FloatStorage`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `FloatStorage`.
    F32,
    /// `DoubleStorage`.
    F64,
    /// `HalfStorage`.
    F16,
    /// `BFloat16Storage`.
    BF16,
    /// `LongStorage`.
    I64,
    /// `IntStorage`.
    I32,
    /// `ShortStorage`.
    I16,
    /// `CharStorage`.
    I8,
    /// `ByteStorage`.
    U8,
    /// `BoolStorage`.
    Bool,
}

impl Dtype {
    /// The dtype of a `torch.<Name>Storage` class.
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

/// A storage named by a persistent id: the record `data/<key>` of the archive holds `numel` elements.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Record name under `data/`.
    pub key: String,
    /// Element type.
    pub dtype: Dtype,
    /// Elements, as the persistent id states it.
    pub numel: u64,
}

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage.
    pub storage: Rc<StorageRef>,
    /// Offset in elements.
    pub offset: i64,
    /// Shape.
    pub size: Vec<i64>,
    /// Strides in elements.
    pub stride: Vec<i64>,
}

/// An instance of a class the reader does not interpret.
#[derive(Debug, Clone)]
pub struct Object {
    /// `(module, name)` of the class or callable.
    pub class: (String, String),
    /// Constructor arguments.
    pub args: Value,
    /// State set by BUILD (usually the instance `__dict__`).
    pub state: Option<Value>,
    /// Items added with SETITEM(S) (dict subclasses).
    pub items: Vec<(Value, Value)>,
}

/// A rebuilt Python value.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (within i64).
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` / `bytearray`.
    Bytes(Rc<Vec<u8>>),
    /// `tuple`.
    Tuple(Rc<Vec<Value>>),
    /// `list` (also `set` / `frozenset`).
    List(Rc<RefCell<Vec<Value>>>),
    /// `dict` / `OrderedDict`, in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function reference (`module`, `name`).
    Global(Rc<(String, String)>),
    /// An uninterpreted instance.
    Object(Rc<RefCell<Object>>),
    /// A storage (persistent id).
    Storage(Rc<StorageRef>),
    /// A tensor reference.
    Tensor(Rc<TensorRef>),
}

/// Values nest as deep as a stream makes them (a list in a list in …, a million levels in a few megabytes); dropping
/// such a chain recursively would overflow the stack, so children of containers this value owns alone are moved
/// to a work list and dropped one level at a time.
impl Drop for Value {
    fn drop(&mut self) {
        let mut work = Vec::new();
        self.take_children(&mut work);
        while let Some(mut v) = work.pop() {
            v.take_children(&mut work);
        }
    }
}

impl Value {
    /// Move the children of a container out of it when this is its only owner.
    fn take_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(t) => {
                if let Some(items) = Rc::get_mut(t) {
                    out.append(items);
                }
            }
            Value::List(l) if Rc::strong_count(l) == 1 => out.append(&mut l.borrow_mut()),
            Value::Dict(d) if Rc::strong_count(d) == 1 => {
                for (k, v) in d.borrow_mut().drain(..) {
                    out.push(k);
                    out.push(v);
                }
            }
            Value::Object(o) if Rc::strong_count(o) == 1 => {
                let mut o = o.borrow_mut();
                out.push(std::mem::replace(&mut o.args, Value::None));
                if let Some(s) = o.state.take() {
                    out.push(s);
                }
                for (k, v) in o.items.drain(..) {
                    out.push(k);
                    out.push(v);
                }
            }
            _ => {}
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short description of the value's type for messages.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Object(o) => {
                let o = o.borrow();
                format!("{}.{} object", o.class.0, o.class.1)
            }
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }
}

/// A malformed or unsupported pickle stream: what went wrong at which byte.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pickle byte {pos}: {msg}")]
pub struct PickleError {
    /// Byte offset of the opcode.
    pub pos: usize,
    /// What went wrong.
    pub msg: String,
}

/// Most values the stack may hold and memo entries a stream may define; far above any real checkpoint.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 24;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Interpret a pickle stream and return the value it stores.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    m.run()
}

fn shared<T>(v: T) -> Rc<RefCell<T>> {
    Rc::new(RefCell::new(v))
}

impl Machine<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            pos: self.op_pos,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        match self.pos.checked_add(n).filter(|&e| e <= self.data.len()) {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.err(format!(
                "truncated: needs {n} more bytes, {} left",
                self.data.len() - self.pos
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn len_u32(&mut self) -> Result<usize, PickleError> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.le()?);
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err(format!("length {n} does not fit in memory")),
        }
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("truncated: unterminated text argument");
        };
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<Value, PickleError> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.to_string())),
            Err(e) => self.err(format!("string is not UTF-8: {e}")),
        }
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("more than {MAX_STACK} values on the stack"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().unwrap_or(Value::None))
    }

    fn top(&self) -> Result<&Value, PickleError> {
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.marks.pop() else {
            return self.err("no MARK to pop to");
        };
        if m > self.stack.len() {
            return self.err("MARK above the stack top");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, id: u32) -> Result<(), PickleError> {
        if self.memo.len() >= MAX_MEMO {
            return self.err(format!("more than {MAX_MEMO} memo entries"));
        }
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), PickleError> {
        match self.memo.get(&id) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo entry {id} was never stored")),
        }
    }

    fn int_from_le(&self, bytes: &[u8]) -> Result<Value, PickleError> {
        if bytes.is_empty() {
            return Ok(Value::Int(0));
        }
        if bytes.len() > 8 {
            return self.err(format!("integer of {} bytes exceeds 64 bits", bytes.len()));
        }
        let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        let mut b = [fill; 8];
        b[..bytes.len()].copy_from_slice(bytes);
        Ok(Value::Int(i64::from_le_bytes(b)))
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a size hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    let v = self.int_from_le(&b)?;
                    self.push(v)?
                }
                0x8b => {
                    let n = self.len_u32()?;
                    let b = self.take(n)?.to_vec();
                    let v = self.int_from_le(&b)?;
                    self.push(v)?
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let t = line.trim_end_matches('L');
                    let v = match t {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => match t.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.err(format!("bad integer literal {line:?}")),
                        },
                    };
                    self.push(v)?
                }
                b'F' => {
                    let line = self.line()?;
                    match line.parse::<f64>() {
                        Ok(f) => self.push(Value::Float(f))?,
                        Err(_) => return self.err(format!("bad float literal {line:?}")),
                    }
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                b'T' | b'U' => {
                    // Python 2 `str`: bytes, read as Latin-1 text.
                    let n = if op == b'T' {
                        self.len_u32()?
                    } else {
                        self.u8()? as usize
                    };
                    let s: String = self.take(n)?.iter().map(|&b| b as char).collect();
                    self.push(Value::Str(s))?
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.len_u32()?,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(Rc::new(b)))?
                }
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)))?
                }
                b']' | 0x8f => self.push(Value::List(shared(Vec::new())))?,
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(shared(items)))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend(vec![v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend(items)?
                }
                b'}' => self.push(Value::Dict(shared(Vec::new())))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Value::Dict(shared(pairs)))?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(Rc::new((module, name))))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.push(Value::Global(Rc::new((m.clone(), n.clone()))))?
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.push(v)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.push(v)?
                }
                b'b' => {
                    let state = self.pop()?;
                    self.build(state)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?
                }
                b'q' => {
                    let id = self.u8()?;
                    self.memo_put(id.into())?
                }
                b'r' => {
                    let id = u32::from_le_bytes(self.le()?);
                    self.memo_put(id)?
                }
                0x94 => {
                    let id = self.memo.len() as u32;
                    self.memo_put(id)?
                }
                b'p' | b'g' => {
                    let line = self.line()?;
                    let Ok(id) = line.parse::<u32>() else {
                        return self.err(format!("bad memo index {line:?}"));
                    };
                    if op == b'p' {
                        self.memo_put(id)?
                    } else {
                        self.memo_get(id)?
                    }
                }
                b'h' => {
                    let id = self.u8()?;
                    self.memo_get(id.into())?
                }
                b'j' => {
                    let id = u32::from_le_bytes(self.le()?);
                    self.memo_get(id)?
                }
                other => {
                    return self.err(format!(
                        "unsupported opcode 0x{other:02x} ({:?})",
                        other as char
                    ))
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if items.len() % 2 != 0 {
            return self.err("odd number of items for a dict");
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn extend(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::List(l) => l.borrow_mut().extend(items),
            Value::Object(o) => o
                .borrow_mut()
                .items
                .extend(items.into_iter().map(|v| (Value::None, v))),
            other => return self.err(format!("APPEND to a {}", other.kind())),
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), PickleError> {
        match self.top()? {
            Value::Dict(d) => d.borrow_mut().extend(pairs),
            Value::Object(o) => o.borrow_mut().items.extend(pairs),
            other => return self.err(format!("SETITEM on a {}", other.kind())),
        }
        Ok(())
    }

    fn build(&mut self, state: Value) -> Result<(), PickleError> {
        match self.top()? {
            Value::Object(o) => o.borrow_mut().state = Some(state),
            // An OrderedDict's attributes (`_metadata` of a state dict) and tensor metadata are not needed.
            Value::Dict(_) | Value::Tensor(_) => {}
            other => return self.err(format!("BUILD on a {}", other.kind())),
        }
        Ok(())
    }

    fn persistent(&self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = &pid else {
            return self.err(format!("persistent id is a {}, not a tuple", pid.kind()));
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(cls), Value::Str(key), _location, Value::Int(numel), ..]
                if tag == "storage" =>
            {
                let Some(dtype) = Dtype::from_storage_class(&cls.1) else {
                    return self.err(format!("unsupported storage type {}.{}", cls.0, cls.1));
                };
                let Ok(numel) = u64::try_from(*numel) else {
                    return self.err(format!("storage {key:?} has a negative size {numel}"));
                };
                Ok(Value::Storage(Rc::new(StorageRef {
                    key: key.clone(),
                    dtype,
                    numel,
                })))
            }
            _ => self.err(format!(
                "unsupported persistent id {:?}",
                t.iter().map(Value::kind).collect::<Vec<_>>()
            )),
        }
    }

    fn ints(&self, v: &Value, what: &str) -> Result<Vec<i64>, PickleError> {
        let Value::Tuple(t) = v else {
            return self.err(format!("tensor {what} is a {}, not a tuple", v.kind()));
        };
        t.iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                other => self.err(format!("tensor {what} holds a {}", other.kind())),
            })
            .collect()
    }

    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value, PickleError> {
        let [Value::Storage(storage), Value::Int(offset), size, stride, ..] = args else {
            return self.err("_rebuild_tensor expects (storage, offset, size, stride, …)");
        };
        let size = self.ints(size, "size")?;
        let stride = self.ints(stride, "stride")?;
        if size.len() != stride.len() {
            return self.err(format!(
                "tensor size {size:?} and stride {stride:?} differ in length"
            ));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset: *offset,
            size,
            stride,
        })))
    }

    fn reduce(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = &callable else {
            return Ok(Value::Object(shared(Object {
                class: ("?".into(), callable.kind()),
                args,
                state: None,
                items: Vec::new(),
            })));
        };
        let argv: &[Value] = match &args {
            Value::Tuple(t) => t,
            _ => &[],
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => self.rebuild_tensor(argv),
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match argv.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    _ => self.err("_rebuild_parameter expects a tensor first"),
                }
            }
            ("torch._tensor", "_rebuild_from_type_v2") => match argv {
                [func, _new_type, inner, ..] => self.reduce(func.clone(), inner.clone()),
                _ => self.err("_rebuild_from_type_v2 expects (func, type, args, state)"),
            },
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict")
                if argv.is_empty() =>
            {
                Ok(Value::Dict(shared(Vec::new())))
            }
            (m, n) => Ok(Value::Object(shared(Object {
                class: (m.to_string(), n.to_string()),
                args,
                state: None,
                items: Vec::new(),
            }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict_items(v: &Value) -> Vec<(Value, Value)> {
        match v {
            Value::Dict(d) => d.borrow().clone(),
            other => panic!("not a dict: {}", other.kind()),
        }
    }

    #[test]
    fn protocol2_dict_with_memo_and_numbers() {
        // pickle.dumps({'a': [1, -2, 3.5, None, True], 'b': 'a'}, protocol=2), hand-assembled.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'q', 1, b']', b'q', 2,
        ];
        p.extend([b'(', b'K', 1, b'J', 0xfe, 0xff, 0xff, 0xff, b'G']);
        p.extend(3.5f64.to_be_bytes());
        p.extend([
            b'N', 0x88, b'e', b'X', 1, 0, 0, 0, b'b', b'h', 1, b'u', b'.',
        ]);
        let v = parse(&p).unwrap();
        let items = dict_items(&v);
        assert_eq!(items[0].0.as_str(), Some("a"));
        let Value::List(l) = &items[0].1 else {
            panic!()
        };
        let l = l.borrow();
        assert!(
            matches!(l[..], [Value::Int(1), Value::Int(-2), Value::Float(f), Value::None, Value::Bool(true)] if f == 3.5)
        );
        assert_eq!(
            items[1].1.as_str(),
            Some("a"),
            "BINGET returns the memoised key"
        );
    }

    #[test]
    fn memo_shares_mutable_containers() {
        // d = {}; x = [d, d]; then d gets an item after being memoised: both references see it.
        let p = [
            0x80, 2, b']', b'(', b'}', b'q', 0, b'h', 0, b'e', b'h', 0, b'X', 1, 0, 0, 0, b'k',
            b'K', 7, b's', b'0', b'.',
        ];
        let v = parse(&p).unwrap();
        let Value::List(ref l) = v else { panic!() };
        for d in l.borrow().iter() {
            assert_eq!(dict_items(d).len(), 1);
        }
    }

    #[test]
    fn unknown_classes_become_inert_objects() {
        // argparse.Namespace via NEWOBJ + BUILD, as torch.save writes `args`.
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"argparse\nNamespace\n");
        p.extend([b')', 0x81, b'}', b'X', 2, 0, 0, 0, b'l', b'r', b'G']);
        p.extend(0.001f64.to_be_bytes());
        p.extend([b's', b'b', b'.']);
        let v = parse(&p).unwrap();
        let Value::Object(ref o) = v else { panic!() };
        let o = o.borrow();
        assert_eq!(o.class, ("argparse".into(), "Namespace".into()));
        assert_eq!(dict_items(o.state.as_ref().unwrap()).len(), 1);
    }

    #[test]
    fn very_deep_nesting_parses_and_drops_without_recursion() {
        // 300 000 lists, each appended into the one below it: a chain as deep as the stack allows values.
        let n = 300_000;
        let mut p = vec![b']'; n];
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let v = parse(&p).unwrap();
        assert_eq!(v.kind(), "list");
        drop(v); // must not overflow the (2 MiB) test thread stack
                 // a 200 000-deep tuple chain too
        let mut p = vec![b'N'];
        p.extend(std::iter::repeat_n(0x85, 200_000));
        p.push(b'.');
        assert_eq!(parse(&p).unwrap().kind(), "tuple");
    }

    #[test]
    fn long_integers_are_sign_extended_and_bounded() {
        assert!(matches!(
            parse(&[0x8a, 2, 0x00, 0xff, b'.']).unwrap(),
            Value::Int(-256)
        ));
        assert!(matches!(parse(&[0x8a, 0, b'.']).unwrap(), Value::Int(0)));
        let e = parse(&[0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, b'.']).unwrap_err();
        assert!(e.msg.contains("64 bits"), "{e}");
    }

    #[test]
    fn malformed_streams_are_errors_with_offsets() {
        let e = parse(&[0x80, 2, b'X', 10, 0, 0, 0, b'a']).unwrap_err();
        assert_eq!(e.pos, 2);
        assert!(e.msg.contains("truncated"), "{e}");
        assert!(parse(b".").unwrap_err().msg.contains("underflow"));
        assert!(parse(&[b'h', 3, b'.'])
            .unwrap_err()
            .msg
            .contains("memo entry 3"));
        assert!(parse(b"NNa.").unwrap_err().msg.contains("APPEND to a None"));
        let e = parse(&[0x80, 2, 0xff]).unwrap_err();
        assert!(e.msg.contains("0xff") && e.pos == 2, "{e}");
        assert!(parse(b"N").unwrap_err().msg.contains("truncated"));
        assert!(parse(b"(Nu.").unwrap_err().msg.contains("odd"));
        // a MARK hides what is below it from POP
        assert!(parse(b"N(0.").unwrap_err().msg.contains("underflow"));
    }

    #[test]
    fn storages_and_tensor_references() {
        // _rebuild_tensor_v2((storage pid), 2, (2, 3), (3, 1), False, OrderedDict())
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"torch._utils\n_rebuild_tensor_v2\n");
        p.extend([b'(', b'(', b'X', 7, 0, 0, 0]);
        p.extend(b"storage");
        p.push(b'c');
        p.extend(b"torch\nHalfStorage\n");
        p.extend([b'X', 1, 0, 0, 0, b'0', b'X', 3, 0, 0, 0]);
        p.extend(b"cpu");
        p.extend([
            b'K', 9, b't', b'Q', b'K', 2, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86, 0x89,
        ]);
        p.push(b'c');
        p.extend(b"collections\nOrderedDict\n");
        p.extend([b')', b'R', b't', b'R', b'.']);
        let v = parse(&p).unwrap();
        let Value::Tensor(ref t) = v else { panic!() };
        assert_eq!(t.storage.dtype, Dtype::F16);
        assert_eq!((t.storage.key.as_str(), t.storage.numel), ("0", 9));
        assert_eq!(
            (t.offset, t.size.clone(), t.stride.clone()),
            (2, vec![2, 3], vec![3, 1])
        );
    }
}
