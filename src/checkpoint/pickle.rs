//! A restricted unpickler for PyTorch state dicts (the `data.pkl` of a `torch.save` archive).
//!
//! Our own, not a crate: `serde-pickle` has no persistent ids (how torch refers to storages) and no
//! way to restrict globals to a fixed set, and candle's reader sits inside candle-core, far too
//! large a dependency for one file format. This VM knows only the protocol-2 opcodes `torch.save`
//! emits and only the globals a state dict needs ([`Global`]); any other global is refused by its
//! name, and nothing is ever called or imported — the "globals" are tags interpreted here.
//!
//! Bounded work and memory: every length is checked against the bytes left before anything is
//! allocated, containers are shared (a memo fetch copies nothing) and may not be changed once they
//! sit inside another object, so no cycles can form and nesting depth is known and capped.

use safetensors::Dtype;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of containers accepted (a state dict needs about 4).
const MAX_DEPTH: usize = 64;

/// The only globals the VM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildFromTypeV2,
    /// `torch.Tensor` / `torch.nn.parameter.Parameter`, only as `_rebuild_from_type_v2`'s type.
    TensorType,
    /// A torch storage class (`torch.LongStorage`), by its element type.
    Storage(Dtype),
}

/// torch's legacy storage classes with an element type safetensors can name. Only the float
/// ones can hold a T5 weight; the others are read so that a tensor using one is refused by its
/// name and dtype (or skipped when transformers would ignore it), not as an unknown global.
const STORAGES: [(&str, Dtype); 11] = [
    ("FloatStorage", Dtype::F32),
    ("HalfStorage", Dtype::F16),
    ("BFloat16Storage", Dtype::BF16),
    ("DoubleStorage", Dtype::F64),
    ("LongStorage", Dtype::I64),
    ("IntStorage", Dtype::I32),
    ("ShortStorage", Dtype::I16),
    ("CharStorage", Dtype::I8),
    ("ByteStorage", Dtype::U8),
    ("BoolStorage", Dtype::BOOL),
    ("ComplexFloatStorage", Dtype::C64),
];

/// The torch storage class of element type `dtype` (`LongStorage` for int64).
pub(crate) fn storage_class(dtype: Dtype) -> Option<&'static str> {
    STORAGES.iter().find(|(_, d)| *d == dtype).map(|(n, _)| *n)
}

/// torch's storage classes that have no safetensors element type (complex128, quantized).
const UNREADABLE_STORAGES: [(&str, &str); 6] = [
    ("ComplexDoubleStorage", "complex128"),
    ("QInt8Storage", "qint8"),
    ("QInt32Storage", "qint32"),
    ("QUInt8Storage", "quint8"),
    ("QUInt4x2Storage", "quint4x2"),
    ("QUInt2x4Storage", "quint2x4"),
];

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
            ("torch", "Tensor") | ("torch._tensor", "Tensor") => Global::TensorType,
            ("torch.nn.parameter", "Parameter") => Global::TensorType,
            ("torch", storage) => {
                let (_, dtype) = STORAGES.iter().find(|(n, _)| *n == storage)?;
                Global::Storage(*dtype)
            }
            _ => return None,
        })
    }
}

/// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub dtype: Dtype,
    pub key: String,
    /// Length in elements.
    pub numel: u64,
}

/// A tensor of the state dict: a view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    /// Offset into the storage, in elements.
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A list or dict; shared between the stack and the memo.
struct Container {
    items: RefCell<Vec<Value>>,
    /// Dict: `items` holds key, value, key, value, …
    is_dict: bool,
    /// Set once the container is inside another object (or an argument); then it may not change.
    frozen: Cell<bool>,
    depth: Cell<usize>,
}

#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Rc<(usize, Vec<Value>)>),
    Obj(Rc<Container>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::Obj(c) if c.is_dict => "dict",
            Value::Obj(_) => "list",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    fn depth(&self) -> usize {
        match self {
            Value::Tuple(t) => t.0,
            Value::Obj(c) => c.depth.get(),
            _ => 0,
        }
    }

    /// Mark as used inside another object; its depth is final from now on.
    fn freeze(&self) {
        if let Value::Obj(c) = self {
            c.frozen.set(true);
        }
    }
}

fn tuple(items: Vec<Value>) -> Result<Value, String> {
    let depth = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
    if depth > MAX_DEPTH {
        return Err(format!("objects nested deeper than {MAX_DEPTH}"));
    }
    items.iter().for_each(Value::freeze);
    Ok(Value::Tuple(Rc::new((depth, items))))
}

fn container(is_dict: bool) -> Value {
    Value::Obj(Rc::new(Container {
        items: RefCell::new(Vec::new()),
        is_dict,
        frozen: Cell::new(false),
        depth: Cell::new(1),
    }))
}

/// Add `new` (key/value pairs for a dict) to container `target`.
fn extend(target: &Value, new: Vec<Value>, dict: bool, op: &str) -> Result<(), String> {
    let Value::Obj(c) = target else {
        return Err(format!("{op} on a {}", target.kind()));
    };
    if c.is_dict != dict {
        return Err(format!("{op} on a {}", target.kind()));
    }
    new.iter().for_each(Value::freeze);
    if c.frozen.get() {
        return Err(format!(
            "{op} on a container already inside another object (not something a state dict needs)"
        ));
    }
    let depth = new.iter().map(Value::depth).max().unwrap_or(0) + 1;
    if depth > MAX_DEPTH {
        return Err(format!("objects nested deeper than {MAX_DEPTH}"));
    }
    c.depth.set(c.depth.get().max(depth));
    c.items.borrow_mut().extend(new);
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(format!(
                "truncated: {n} bytes needed at offset {}, {left} left",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length field, checked against the bytes left.
    fn len(&mut self, n: u64) -> Result<usize, String> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "declared length {n} at offset {} exceeds the {left} bytes left",
                self.pos
            ));
        }
        Ok(n as usize)
    }
    fn utf8(&mut self, n: usize) -> Result<Rc<str>, String> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(Rc::from)
            .map_err(|_| format!("string at offset {at} is not UTF-8"))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated GLOBAL argument at offset {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| format!("GLOBAL argument at offset {} is not UTF-8", self.pos))?;
        self.pos += end + 1;
        Ok(s)
    }
}

struct Vm {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Vm {
    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }
    fn top(&self) -> Result<&Value, String> {
        self.stack.last().ok_or_else(|| "stack underflow".into())
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no MARK for a mark-taking opcode")?;
        Ok(self.stack.split_off(m))
    }
    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }
    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }
    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} was never stored"))?;
        self.stack.push(v);
        Ok(())
    }
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!("{what}: expected an int, found a {}", other.kind())),
    }
}

fn usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let Value::Tuple(t) = v else {
        return Err(format!("{what}: expected a tuple, found a {}", v.kind()));
    };
    t.1.iter()
        .map(|x| {
            let i = int(x, what)?;
            usize::try_from(i).map_err(|_| format!("{what}: negative value {i}"))
        })
        .collect()
}

fn args_of(v: &Value, what: &str) -> Result<Rc<(usize, Vec<Value>)>, String> {
    match v {
        Value::Tuple(t) => Ok(t.clone()),
        other => Err(format!(
            "{what}: arguments must be a tuple, found a {}",
            other.kind()
        )),
    }
}

/// `REDUCE`: the only callables are the known globals, interpreted here.
fn call(g: Global, args: &[Value]) -> Result<Value, String> {
    match g {
        Global::OrderedDict => {
            if !args.is_empty() {
                return Err("collections.OrderedDict called with arguments".into());
            }
            Ok(container(true))
        }
        Global::RebuildTensorV2 => {
            let what = "torch._utils._rebuild_tensor_v2";
            if args.len() < 4 {
                return Err(format!("{what}: {} arguments, expected 6 or 7", args.len()));
            }
            let Value::Storage(s) = &args[0] else {
                return Err(format!(
                    "{what}: first argument must be a storage, found a {}",
                    args[0].kind()
                ));
            };
            let offset = int(&args[1], "storage offset")?;
            let offset =
                u64::try_from(offset).map_err(|_| format!("negative storage offset {offset}"))?;
            let shape = usize_tuple(&args[2], "size")?;
            let stride = usize_tuple(&args[3], "stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "size {shape:?} and stride {stride:?} have different lengths"
                ));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: (**s).clone(),
                offset,
                shape,
                stride,
            })))
        }
        Global::RebuildParameter => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("torch._utils._rebuild_parameter: first argument must be a tensor".into()),
        },
        Global::RebuildFromTypeV2 => {
            // (func, new_type, args, state)
            let what = "torch._tensor._rebuild_from_type_v2";
            let (Some(Value::Global(f)), Some(Value::Global(Global::TensorType)), Some(a)) =
                (args.first(), args.get(1), args.get(2))
            else {
                return Err(format!(
                    "{what}: expected (function, torch.Tensor or Parameter, args, state)"
                ));
            };
            if matches!(f, Global::RebuildFromTypeV2) {
                return Err(format!("{what}: nested in itself"));
            }
            let inner = args_of(a, what)?;
            call(*f, &inner.1)
        }
        Global::TensorType | Global::Storage(_) => {
            Err("a tensor or storage type is not callable in a state dict".into())
        }
    }
}

fn persistent_load(pid: &Value) -> Result<Value, String> {
    let bad = || {
        "persistent id: expected ('storage', <torch.*Storage>, key, location, numel) or, in the \
         legacy format, the same with a sixth element None"
    };
    let Value::Tuple(t) = pid else {
        return Err(bad().into());
    };
    let items = t.1.as_slice();
    let (base, view) = match items {
        [a, b, c, d, e] => ([a, b, c, d, e], None),
        [a, b, c, d, e, v] => ([a, b, c, d, e], Some(v)),
        _ => return Err(bad().into()),
    };
    match base {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, _, Value::Int(n)]
            if &**tag == "storage" =>
        {
            // The zip format names storages by str, the legacy format by str as well (its
            // root key); a legacy storage *view* (sixth element not None) is not read.
            let Value::Str(key) = key else {
                return Err(bad().into());
            };
            if let Some(v) = view {
                if !matches!(v, Value::None) {
                    return Err(format!(
                        "storage {key} is a view of another storage (legacy format); such \
                         views are not read, re-save the checkpoint with a current torch"
                    ));
                }
            }
            let numel = u64::try_from(*n).map_err(|_| format!("storage {key}: numel {n}"))?;
            Ok(Value::Storage(Rc::new(StorageRef {
                dtype: *dtype,
                key: key.to_string(),
                numel,
            })))
        }
        _ => Err(bad().into()),
    }
}

/// Run the pickle in `data` and return the state dict it builds: names and tensors, in order.
/// Errors are messages; the caller adds the file.
pub(crate) fn load_state_dict(data: &[u8]) -> Result<Vec<(String, TensorRef)>, String> {
    state_dict(run(data, 0)?.0)
}

/// The header of a legacy (pre-1.6) torch.save file: the magic number, protocol version 1001
/// and a little-endian sys_info. Returns the offset of the state dict's pickle.
pub(crate) fn legacy_header(data: &[u8]) -> Result<usize, String> {
    // PROTO 2, LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c, STOP.
    const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    if !data.starts_with(MAGIC) {
        return Err(
            "no torch.save magic number: neither a zip archive nor a legacy torch \
                    pickle"
                .into(),
        );
    }
    let (version, pos) = run(data, MAGIC.len())?;
    if !matches!(version, Value::Int(1001)) {
        return Err(format!(
            "legacy protocol version: expected 1001, found a {}",
            version.kind()
        ));
    }
    let (info, pos) = run(data, pos)?;
    let little = match &info {
        Value::Obj(c) if c.is_dict => c
            .items
            .borrow()
            .chunks_exact(2)
            .any(|kv| matches!((&kv[0], &kv[1]), (Value::Str(k), Value::Bool(true)) if &**k == "little_endian")),
        _ => false,
    };
    if !little {
        return Err(
            "sys_info does not say little_endian: True (big-endian files are not read)".into(),
        );
    }
    Ok(pos)
}

/// The legacy format's state dict pickle at `pos`: the tensors and the offset after it.
pub(crate) fn legacy_state_dict(
    data: &[u8],
    pos: usize,
) -> Result<(Vec<(String, TensorRef)>, usize), String> {
    let (v, end) = run(data, pos)?;
    Ok((state_dict(v)?, end))
}

/// The legacy format's list of storage keys at `pos`, and the offset after it.
pub(crate) fn legacy_keys(data: &[u8], pos: usize) -> Result<(Vec<String>, usize), String> {
    let (v, end) = run(data, pos)?;
    let Value::Obj(c) = &v else {
        return Err(format!(
            "storage keys: expected a list, found a {}",
            v.kind()
        ));
    };
    if c.is_dict {
        return Err("storage keys: expected a list, found a dict".into());
    }
    let keys = c
        .items
        .borrow()
        .iter()
        .map(|k| match k {
            Value::Str(s) => Ok(s.to_string()),
            other => Err(format!("storage keys: a {} among them", other.kind())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys, end))
}

/// Run one pickle starting at `start`; its value and the offset after its STOP.
fn run(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut r = Reader {
        data,
        pos: start.min(data.len()),
    };
    let mut vm = Vm {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let result = loop {
        let at = r.pos;
        let op = r.u8()?;
        if let Some(value) = literal(op, &mut r, at)? {
            vm.stack.push(value);
            continue;
        }
        if bookkeeping(op, &mut r, &mut vm)? {
            continue;
        }
        match op {
            b'}' => vm.stack.push(container(true)),
            b']' => vm.stack.push(container(false)),
            b')' => vm.stack.push(tuple(Vec::new())?),
            b't' => {
                let items = vm.pop_mark()?;
                vm.stack.push(tuple(items)?)
            }
            0x85..=0x87 => {
                let items = vm.pop_n((op - 0x84) as usize)?;
                vm.stack.push(tuple(items)?)
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                vm.stack.push(resolve(module, name)?)
            }
            0x93 => {
                let name = vm.pop()?;
                let module = vm.pop()?;
                let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                    return Err(format!("STACK_GLOBAL at offset {at} without two strings"));
                };
                vm.stack.push(resolve(m, n)?)
            }
            b'R' => {
                let args = vm.pop()?;
                let f = vm.pop()?;
                let Value::Global(g) = f else {
                    return Err(format!("REDUCE at offset {at} calls a {}", f.kind()));
                };
                let args = args_of(&args, "REDUCE")?;
                vm.stack.push(call(g, &args.1)?)
            }
            b'b' => {
                let state = vm.pop()?;
                let obj = vm.top()?;
                // An OrderedDict's state is its attributes (`_metadata` of a state dict): ignored.
                let ok = matches!(obj, Value::Obj(c) if c.is_dict)
                    && matches!(&state, Value::Obj(s) if s.is_dict)
                    || matches!(obj, Value::Tensor(_));
                if !ok {
                    return Err(format!(
                        "BUILD at offset {at} of a {} with a {} state",
                        obj.kind(),
                        state.kind()
                    ));
                }
            }
            b's' => {
                let kv = vm.pop_n(2)?;
                extend(vm.top()?, kv, true, "SETITEM")?
            }
            b'u' => {
                let kv = vm.pop_mark()?;
                if kv.len() % 2 != 0 {
                    return Err(format!("SETITEMS at offset {at} with an odd item count"));
                }
                extend(vm.top()?, kv, true, "SETITEMS")?
            }
            b'a' => {
                let v = vm.pop_n(1)?;
                extend(vm.top()?, v, false, "APPEND")?
            }
            b'e' => {
                let v = vm.pop_mark()?;
                extend(vm.top()?, v, false, "APPENDS")?
            }
            b'Q' => {
                let pid = vm.pop()?;
                vm.stack.push(persistent_load(&pid)?)
            }
            b'.' => break (vm.pop()?, r.pos),
            other => {
                return Err(format!(
                    "opcode 0x{other:02x} at offset {at} is not one a state dict uses"
                ))
            }
        }
    };
    Ok(result)
}

/// Opcodes that only move things between the stack, the marks and the memo (and the protocol
/// header); `false` when `op` is not one of them.
fn bookkeeping(op: u8, r: &mut Reader<'_>, vm: &mut Vm) -> Result<bool, String> {
    match op {
        0x80 => {
            let p = r.u8()?;
            if p > 5 {
                return Err(format!("pickle protocol {p} is not known"));
            }
        }
        0x95 => {
            r.u64()?; // FRAME: a length hint only
        }
        b'(' => vm.marks.push(vm.stack.len()),
        b'q' => {
            let k = r.u8()? as u32;
            vm.memo_put(k)?
        }
        b'r' => {
            let k = r.u32()?;
            vm.memo_put(k)?
        }
        0x94 => {
            let k = vm.memo.len() as u32;
            vm.memo_put(k)?
        }
        b'h' => {
            let k = r.u8()? as u32;
            vm.memo_get(k)?
        }
        b'j' => {
            let k = r.u32()?;
            vm.memo_get(k)?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The value a literal opcode (a string, an integer, a float, a constant) pushes, or `None` when
/// `op` is not a literal.
fn literal(op: u8, r: &mut Reader<'_>, at: usize) -> Result<Option<Value>, String> {
    let value = match op {
        b'X' => {
            let n = r.u32()?;
            let n = r.len(n as u64)?;
            Value::Str(r.utf8(n)?)
        }
        0x8c => {
            let n = r.u8()? as usize;
            Value::Str(r.utf8(n)?)
        }
        b'J' => {
            let v = r.u32()? as i32;
            Value::Int(v as i64)
        }
        b'K' => {
            let v = r.u8()?;
            Value::Int(v as i64)
        }
        b'M' => {
            let v = r.u16()?;
            Value::Int(v as i64)
        }
        0x8a => {
            let n = r.u8()? as usize;
            let b = r.take(n)?;
            if n > 8 {
                return Err(format!("LONG1 of {n} bytes at offset {at} exceeds 64 bits"));
            }
            let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut a = [fill; 8];
            a[..n].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(a))
        }
        b'G' => {
            r.take(8)?; // the value is never needed
            Value::Float
        }
        0x88 => Value::Bool(true),
        0x89 => Value::Bool(false),
        b'N' => Value::None,
        _ => return Ok(None),
    };
    Ok(Some(value))
}

fn state_dict(result: Value) -> Result<Vec<(String, TensorRef)>, String> {
    let Value::Obj(c) = &result else {
        return Err(format!(
            "the pickle holds a {}, not a state dict",
            result.kind()
        ));
    };
    if !c.is_dict {
        return Err("the pickle holds a list, not a state dict".into());
    }
    let items = c.items.borrow();
    let mut out = Vec::with_capacity(items.len() / 2);
    for kv in items.chunks_exact(2) {
        let Value::Str(name) = &kv[0] else {
            return Err(format!("a state dict key is a {}, not a str", kv[0].kind()));
        };
        let Value::Tensor(t) = &kv[1] else {
            return Err(format!(
                "`{name}` is a {}, not a tensor (only fp32/fp16/bf16 tensors are read)",
                kv[1].kind()
            ));
        };
        out.push((name.to_string(), (**t).clone()));
    }
    Ok(out)
}

fn resolve(module: &str, name: &str) -> Result<Value, String> {
    if let Some((_, dtype)) = UNREADABLE_STORAGES
        .iter()
        .find(|(n, _)| module == "torch" && *n == name)
    {
        return Err(format!(
            "the state dict holds {dtype} tensors (torch.{name}); a T5 state dict holds \
             float32/float16/bfloat16"
        ));
    }
    Global::resolve(module, name)
        .map(Value::Global)
        .ok_or_else(|| {
            format!(
                "refused global `{module}.{name}`: a state dict needs only collections.OrderedDict, \
                 torch._utils._rebuild_tensor_v2 / _rebuild_parameter and torch's storage \
                 classes (nothing was executed)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"w": tensor}` as torch.save writes it (protocol 2), by hand.
    fn state_dict_pickle(numel: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
        typed_state_dict_pickle("FloatStorage", numel, size, stride)
    }

    /// The same with the storage of class `torch.<class>`.
    fn typed_state_dict_pickle(class: &str, numel: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00w");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02(");
        p.extend(b"(X\x07\x00\x00\x00storageq\x03ctorch\n");
        p.extend(class.as_bytes());
        p.extend(b"\nq\x04X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
        p.push(numel);
        p.extend(b"tQK\x00(");
        for s in size {
            p.extend([b'K', *s]);
        }
        p.extend(b"t(");
        for s in stride {
            p.extend([b'K', *s]);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtRq\x05u.");
        p
    }

    #[test]
    fn reads_a_hand_made_state_dict() {
        let sd = load_state_dict(&state_dict_pickle(6, &[2, 3], &[3, 1])).unwrap();
        assert_eq!(sd.len(), 1);
        assert_eq!(sd[0].0, "w");
        let t = &sd[0].1;
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.stride, vec![3, 1]);
        assert_eq!(t.storage.key, "0");
        assert_eq!(t.storage.numel, 6);
        assert_eq!(t.storage.dtype, Dtype::F32);
    }

    #[test]
    fn every_legacy_storage_class_is_read_with_its_dtype() {
        for (class, dtype) in STORAGES {
            let sd = load_state_dict(&typed_state_dict_pickle(class, 6, &[2, 3], &[3, 1]))
                .unwrap_or_else(|e| panic!("{class}: {e}"));
            assert_eq!(sd[0].1.storage.dtype, dtype, "{class}");
            assert_eq!(storage_class(dtype), Some(class));
        }
        assert_eq!(storage_class(Dtype::I64), Some("LongStorage"));
        assert_eq!(storage_class(Dtype::F8_E4M3), None);
    }

    #[test]
    fn storages_without_a_dtype_are_refused_by_dtype() {
        for (class, dtype) in UNREADABLE_STORAGES {
            let e =
                load_state_dict(&typed_state_dict_pickle(class, 6, &[2, 3], &[3, 1])).unwrap_err();
            assert!(
                e.contains(&format!("{dtype} tensors (torch.{class})"))
                    && e.contains("float32/float16/bfloat16"),
                "{e}"
            );
        }
        // A class torch does not have is still an unknown global.
        let e = load_state_dict(&typed_state_dict_pickle(
            "NoSuchStorage",
            6,
            &[2, 3],
            &[3, 1],
        ))
        .unwrap_err();
        assert!(e.contains("refused global `torch.NoSuchStorage`"), "{e}");
    }

    #[test]
    fn refuses_other_globals_by_name() {
        let p = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueR.";
        let e = load_state_dict(p).unwrap_err();
        assert!(e.contains("posix.system"), "{e}");
    }

    #[test]
    fn huge_declared_length_is_an_error_not_an_allocation() {
        let p = b"\x80\x02X\xff\xff\xff\xffab";
        let e = load_state_dict(p).unwrap_err();
        assert!(e.contains("4294967295"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = state_dict_pickle(6, &[2, 3], &[3, 1]);
        for n in 0..full.len() {
            assert!(
                load_state_dict(&full[..n]).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
    }

    #[test]
    fn cycles_and_deep_nesting_are_refused() {
        // l = []; l.append(l)
        let e = load_state_dict(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(e.contains("already inside"), "{e}");
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 100));
        deep.extend(std::iter::repeat_n(b'a', 99));
        deep.push(b'.');
        let e = load_state_dict(&deep).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
    }
}
