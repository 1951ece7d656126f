//! Shared pieces: shared strings, Python's own JSON text for keys, integers of any size.

use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};

/// A string held by many (customer ids, labels): cloned by reference. One thin pointer
/// (8 bytes, where `Arc<str>` takes 16) to the same allocation `Arc<str>` makes: an offer
/// holds eight of them.
pub type Str = arcstr::ArcStr;

pub fn s(text: &str) -> Str {
    Str::from(text)
}

/// A JSON string exactly as Python's `json.dumps` writes it (ensure_ascii): keys written
/// before must still match.
pub fn json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
        }
    }
    out.push('"');
}

/// An integer's decimal digits, as `write!` makes them without its formatting machinery
/// (which took a tenth of the compiled apply's time).
pub fn push_int<I: itoa::Integer>(out: &mut Vec<u8>, n: I) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// One part of a JSON list key: a string or an integer.
pub enum Part<'a> {
    Text(&'a str),
    Int(i64),
}

/// `prefix` + the compact JSON list of `parts`, as `fastjson.dumps_key` writes it.
pub fn json_key(prefix: &str, parts: &[Part<'_>]) -> String {
    let mut out = String::with_capacity(prefix.len() + 48);
    json_key_into(&mut out, prefix, parts);
    out
}

/// `json_key` into `out`, in place of what it held.
pub fn json_key_into(out: &mut String, prefix: &str, parts: &[Part<'_>]) {
    out.clear();
    out.push_str(prefix);
    out.push('[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match part {
            Part::Text(text) => json_str(out, text),
            Part::Int(n) => out.push_str(itoa::Buffer::new().format(*n)),
        }
    }
    out.push(']');
}

/// A Python int of any size that fits 128 bits (amounts reach 1e21 micro-units); a float
/// (what orjson reads back for an integer beyond 64 bits) is rounded.
pub fn int_of(value: &Bound<'_, PyAny>) -> PyResult<i128> {
    if let Ok(n) = value.extract::<i64>() {
        return Ok(n as i128);
    }
    if value.is_instance_of::<PyInt>() {
        return value.extract::<i128>();
    }
    if let Ok(float) = value.cast::<PyFloat>() {
        return Ok(float.value().round() as i128);
    }
    value.extract::<i128>()
}

pub fn int_to_py<'py>(py: Python<'py>, n: i128) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(small) = i64::try_from(n) {
        Ok(small.into_pyobject(py)?.into_any())
    } else {
        Ok(n.into_pyobject(py)?.into_any())
    }
}

/// Python's floor modulo: the start of the window of `size` that holds `ts`.
pub fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// The items of a list or tuple (stored rows come back as lists).
pub fn items<'py>(value: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    value.try_iter()?.collect()
}

/// Hash maps keyed by producers' values: a fast hash, seeded per process (keys chosen to
/// collide cannot be prepared in advance); nothing depends on their iteration order.
pub type Hasher = ahash::RandomState;
pub type Map<K, V> = std::collections::HashMap<K, V, Hasher>;
pub type OrderedMap<K, V> = indexmap::IndexMap<K, V, Hasher>;
pub type OrderedSet<K> = indexmap::IndexSet<K, Hasher>;

/// One shared copy of each value that repeats across events (customer ids, dimension
/// values), as Python's `intern` gave: a few hundred bytes less per open offer. Values no
/// longer held by anything else are let go now and then.
#[derive(Default)]
pub struct Interner {
    values: std::collections::HashSet<Str, Hasher>,
    pruned_at: usize,
}

impl Interner {
    pub fn get(&mut self, value: &Str) -> Str {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        self.values.insert(value.clone());
        value.clone()
    }

    pub fn get_opt(&mut self, value: &Option<Str>) -> Option<Str> {
        value.as_ref().map(|v| self.get(v))
    }

    /// Let go of the values only this interner holds, once it doubled since the last time.
    pub fn prune(&mut self) {
        if self.values.len() > 2 * self.pruned_at + 1024 {
            self.values
                .retain(|value| Str::strong_count(value).is_some_and(|n| n > 1));
            self.pruned_at = self.values.len();
        }
    }
}
