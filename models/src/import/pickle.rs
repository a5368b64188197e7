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

pub use super::value::{Dtype, Object, StorageRef, TensorRef, Value};

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
            if op == b'.' {
                return self.pop();
            }
            let handled = self.stack_op(op)?
                || self.number(op)?
                || self.text(op)?
                || self.container(op)?
                || self.object(op)?
                || self.memo_op(op)?;
            if !handled {
                return self.err(format!("unsupported opcode 0x{op:02x} ({:?})", op as char));
            }
        }
    }

    /// Framing, marks and plain stack manipulation.
    fn stack_op(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            0x80 => {
                self.u8()?; // PROTO
            }
            0x95 => {
                self.le::<8>()?; // FRAME: a size hint only
            }
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
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// None, booleans, integers and floats.
    fn number(&mut self, op: u8) -> Result<bool, PickleError> {
        let v = match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i32::from_le_bytes(self.le()?).into()),
            b'K' => Value::Int(self.u8()?.into()),
            b'M' => Value::Int(u16::from_le_bytes(self.le()?).into()),
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as usize
                } else {
                    self.len_u32()?
                };
                let b = self.take(n)?.to_vec();
                self.int_from_le(&b)?
            }
            b'I' | b'L' => {
                let line = self.line()?;
                match line.trim_end_matches('L') {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    t => match t.parse::<i64>() {
                        Ok(i) => Value::Int(i),
                        Err(_) => return self.err(format!("bad integer literal {line:?}")),
                    },
                }
            }
            b'F' => {
                let line = self.line()?;
                match line.parse::<f64>() {
                    Ok(f) => Value::Float(f),
                    Err(_) => return self.err(format!("bad float literal {line:?}")),
                }
            }
            b'G' => Value::Float(f64::from_be_bytes(self.le()?)),
            _ => return Ok(false),
        };
        self.push(v)?;
        Ok(true)
    }

    /// Strings and bytes.
    fn text(&mut self, op: u8) -> Result<bool, PickleError> {
        let v = match op {
            b'X' => {
                let n = self.len_u32()?;
                self.string(n)?
            }
            0x8c => {
                let n = self.u8()? as usize;
                self.string(n)?
            }
            0x8d => {
                let n = self.len_u64()?;
                self.string(n)?
            }
            b'T' | b'U' => {
                // Python 2 `str`: bytes, read as Latin-1 text.
                let n = if op == b'T' {
                    self.len_u32()?
                } else {
                    self.u8()? as usize
                };
                Value::Str(self.take(n)?.iter().map(|&b| b as char).collect())
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.len_u32()?,
                    b'C' => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                Value::Bytes(Rc::new(self.take(n)?.to_vec()))
            }
            _ => return Ok(false),
        };
        self.push(v)?;
        Ok(true)
    }

    /// Tuples, lists, sets and dicts.
    fn container(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
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
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Class references, construction, state and persistent ids.
    fn object(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(Rc::new((module, name))))?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                    return self.err("STACK_GLOBAL needs two strings");
                };
                self.push(Value::Global(Rc::new((m.clone(), n.clone()))))?
            }
            b'R' | 0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop()?; // NEWOBJ_EX keyword arguments
                }
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(callable, args)?;
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
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Memo stores and loads.
    fn memo_op(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
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
            _ => return Ok(false),
        }
        Ok(true)
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
#[path = "pickle_tests.rs"]
mod tests;
