//! The values the pickle interpreter rebuilds: Python data, tensor and storage references, inert objects.

use std::cell::RefCell;
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
