//! The compact binary encoding of stored state (stream_app/state_store.py has the why).
//!
//! A value is a tree of None, booleans, integers of any size, floats, text, bytes, lists
//! and dicts, as JSON's plus bytes. Each item starts with a tag byte from 0xC0: no JSON text
//! starts with such a byte (it is not ASCII), so a reader tells the two encodings apart by
//! the first byte. Integers are zigzag varints (any size beyond 64 bits as decimal text),
//! lengths varints; tuples are written as lists, as JSON writes them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

const NONE: u8 = 0xC0;
const FALSE: u8 = 0xC1;
const TRUE: u8 = 0xC2;
const INT: u8 = 0xC3;
const BIG_INT: u8 = 0xC4;
const FLOAT: u8 = 0xC5;
const TEXT: u8 = 0xC6;
const LIST: u8 = 0xC7;
const DICT: u8 = 0xC8;
const BYTES: u8 = 0xC9;
// Text with lone surrogates (valid JSON, not UTF-8), as Python's "surrogatepass" writes it.
const RAW_TEXT: u8 = 0xCA;

/// Whether `raw` is in this encoding (else it is JSON text).
pub fn is_packed(raw: &[u8]) -> bool {
    raw.first().is_some_and(|b| (NONE..=RAW_TEXT).contains(b))
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn sized(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn pack_int(out: &mut Vec<u8>, n: i64) {
    out.push(INT);
    varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

pub fn pack_text(out: &mut Vec<u8>, text: &str) {
    sized(out, TEXT, text.as_bytes());
}

pub fn pack_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    sized(out, BYTES, bytes);
}

pub fn pack_none(out: &mut Vec<u8>) {
    out.push(NONE);
}

pub fn pack_list_header(out: &mut Vec<u8>, len: usize) {
    out.push(LIST);
    varint(out, len as u64);
}

pub fn pack_texts<T: AsRef<str>>(out: &mut Vec<u8>, texts: &[T]) {
    pack_list_header(out, texts.len());
    for text in texts {
        pack_text(out, text.as_ref());
    }
}

pub fn pack_dict_header(out: &mut Vec<u8>, len: usize) {
    out.push(DICT);
    varint(out, len as u64);
}

/// An integer of up to 128 bits (amounts reach 1e21 micro-units).
pub fn pack_i128(out: &mut Vec<u8>, n: i128) {
    match i64::try_from(n) {
        Ok(small) => pack_int(out, small),
        Err(_) => sized(out, BIG_INT, n.to_string().as_bytes()),
    }
}

pub fn pack_opt_int(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => pack_none(out),
        Some(n) => pack_int(out, n),
    }
}

pub fn pack_opt_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => pack_none(out),
        Some(text) => pack_text(out, text),
    }
}

pub fn pack_opt_bool(out: &mut Vec<u8>, b: Option<bool>) {
    out.push(match b {
        None => NONE,
        Some(false) => FALSE,
        Some(true) => TRUE,
    });
}

pub fn pack_opt_float(out: &mut Vec<u8>, f: Option<f64>) {
    match f {
        None => pack_none(out),
        Some(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Store entries as the compiled state writes them: (key, encoded value, or None to
/// delete the key), in order (a later entry of the same key wins).
pub type PackedEntries = Vec<(String, Option<Vec<u8>>)>;

/// The entries as a dict of decoded values (None deletes), as the Python API gives them.
pub fn entries_to_dict<'py>(
    py: Python<'py>,
    entries: &PackedEntries,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in entries {
        match value {
            None => dict.set_item(key, py.None())?,
            Some(raw) => dict.set_item(key, unpack(py, raw)?)?,
        }
    }
    Ok(dict)
}

/// The entries as a list of (key, bytes or None), for PartitionStore.
pub fn entries_to_list<'py>(
    py: Python<'py>,
    entries: PackedEntries,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (key, value) in entries {
        match value {
            None => list.append((key, py.None()))?,
            Some(raw) => list.append((key, PyBytes::new(py, &raw)))?,
        }
    }
    Ok(list)
}

/// Append the encoding of a Python value.
pub fn pack_into(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if value.is_none() {
        out.push(NONE);
    } else if let Ok(b) = value.cast::<PyBool>() {
        out.push(if b.is_true() { TRUE } else { FALSE });
    } else if let Ok(i) = value.cast::<PyInt>() {
        match i.extract::<i64>() {
            Ok(n) => pack_int(out, n),
            Err(_) => sized(out, BIG_INT, i.str()?.to_str()?.as_bytes()),
        }
    } else if let Ok(text) = value.cast::<PyString>() {
        match text.to_str() {
            Ok(t) => pack_text(out, t),
            Err(_) => {
                let raw = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
                sized(out, RAW_TEXT, raw.cast::<PyBytes>()?.as_bytes());
            }
        }
    } else if let Ok(list) = value.cast::<PyList>() {
        pack_list_header(out, list.len());
        for item in list.iter() {
            pack_into(out, &item)?;
        }
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        pack_list_header(out, tuple.len());
        for item in tuple.iter() {
            pack_into(out, &item)?;
        }
    } else if let Ok(dict) = value.cast::<PyDict>() {
        out.push(DICT);
        varint(out, dict.len() as u64);
        for (key, item) in dict.iter() {
            pack_into(out, &key)?;
            pack_into(out, &item)?;
        }
    } else if let Ok(f) = value.cast::<PyFloat>() {
        out.push(FLOAT);
        out.extend_from_slice(&f.value().to_le_bytes());
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        pack_bytes(out, bytes.as_bytes());
    } else {
        return Err(PyValueError::new_err(format!(
            "cannot store a {}",
            value.get_type().name()?
        )));
    }
    Ok(())
}

/// A reader of one encoded value.
pub struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

fn truncated() -> PyErr {
    PyValueError::new_err("stored value ends early")
}

impl<'a> Reader<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Self { raw, at: 0 }
    }

    pub fn done(&self) -> bool {
        self.at == self.raw.len()
    }

    fn byte(&mut self) -> PyResult<u8> {
        let b = *self.raw.get(self.at).ok_or_else(truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> PyResult<u64> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift > 63 {
                return Err(PyValueError::new_err("stored varint is too long"));
            }
            n |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(n);
            }
            shift += 7;
        }
    }

    fn slice(&mut self) -> PyResult<&'a [u8]> {
        let len = self.varint()? as usize;
        let end = self.at.checked_add(len).filter(|e| *e <= self.raw.len());
        let end = end.ok_or_else(truncated)?;
        let piece = &self.raw[self.at..end];
        self.at = end;
        Ok(piece)
    }

    fn expect(&mut self, tag: u8, what: &str) -> PyResult<()> {
        if self.byte()? != tag {
            return Err(PyValueError::new_err(format!(
                "stored value: {what} expected"
            )));
        }
        Ok(())
    }

    pub fn int(&mut self) -> PyResult<i64> {
        self.expect(INT, "an integer")?;
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// An integer of up to 128 bits.
    pub fn i128(&mut self) -> PyResult<i128> {
        if self.raw.get(self.at) == Some(&BIG_INT) {
            self.at += 1;
            let digits = std::str::from_utf8(self.slice()?).ok();
            return digits
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| PyValueError::new_err("stored integer is beyond 128 bits"));
        }
        Ok(i128::from(self.int()?))
    }

    pub fn text(&mut self) -> PyResult<&'a str> {
        self.opt_text()?
            .ok_or_else(|| PyValueError::new_err("stored value: text expected"))
    }

    pub fn opt_bool(&mut self) -> PyResult<Option<bool>> {
        match self.byte()? {
            NONE => Ok(None),
            FALSE => Ok(Some(false)),
            TRUE => Ok(Some(true)),
            _ => Err(PyValueError::new_err("stored value: a boolean expected")),
        }
    }

    pub fn opt_float(&mut self) -> PyResult<Option<f64>> {
        match self.byte()? {
            NONE => Ok(None),
            FLOAT => {
                let end = self.at + 8;
                let bytes = self.raw.get(self.at..end).ok_or_else(truncated)?;
                self.at = end;
                Ok(Some(f64::from_le_bytes(
                    bytes.try_into().expect("eight bytes"),
                )))
            }
            INT => {
                self.at -= 1;
                Ok(Some(self.int()? as f64))
            }
            _ => Err(PyValueError::new_err("stored value: a number expected")),
        }
    }

    pub fn list_len(&mut self) -> PyResult<usize> {
        self.expect(LIST, "a list")?;
        Ok(self.varint()? as usize)
    }

    /// Text, or None for a packed None.
    pub fn opt_text(&mut self) -> PyResult<Option<&'a str>> {
        match self.raw.get(self.at) {
            Some(&NONE) => {
                self.at += 1;
                Ok(None)
            }
            _ => {
                self.expect(TEXT, "text")?;
                let piece = self.slice()?;
                std::str::from_utf8(piece)
                    .map(Some)
                    .map_err(|_| PyValueError::new_err("stored text is not UTF-8"))
            }
        }
    }

    /// Bytes, or None for a packed None.
    pub fn opt_bytes(&mut self) -> PyResult<Option<&'a [u8]>> {
        match self.raw.get(self.at) {
            Some(&NONE) => {
                self.at += 1;
                Ok(None)
            }
            _ => {
                self.expect(BYTES, "bytes")?;
                self.slice().map(Some)
            }
        }
    }

    /// The next value as a Python object.
    pub fn value<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tag = self.byte()?;
        Ok(match tag {
            NONE => py.None().into_bound(py),
            FALSE => PyBool::new(py, false).to_owned().into_any(),
            TRUE => PyBool::new(py, true).to_owned().into_any(),
            INT => {
                self.at -= 1;
                self.int()?.into_pyobject(py)?.into_any()
            }
            BIG_INT => {
                let digits = std::str::from_utf8(self.slice()?)
                    .map_err(|_| PyValueError::new_err("stored integer is not decimal"))?;
                py.get_type::<PyInt>().call1((digits,))?
            }
            FLOAT => {
                let end = self.at + 8;
                let bytes = self.raw.get(self.at..end).ok_or_else(truncated)?;
                self.at = end;
                let f = f64::from_le_bytes(bytes.try_into().expect("eight bytes"));
                PyFloat::new(py, f).into_any()
            }
            TEXT => {
                let piece = self.slice()?;
                let text = std::str::from_utf8(piece)
                    .map_err(|_| PyValueError::new_err("stored text is not UTF-8"))?;
                PyString::new(py, text).into_any()
            }
            RAW_TEXT => {
                let piece = PyBytes::new(py, self.slice()?);
                piece.call_method1("decode", ("utf-8", "surrogatepass"))?
            }
            BYTES => PyBytes::new(py, self.slice()?).into_any(),
            LIST => {
                let len = self.varint()? as usize;
                let list = PyList::empty(py);
                for _ in 0..len {
                    list.append(self.value(py)?)?;
                }
                list.into_any()
            }
            DICT => {
                let len = self.varint()? as usize;
                let dict = PyDict::new(py);
                for _ in 0..len {
                    let key = self.value(py)?;
                    dict.set_item(key, self.value(py)?)?;
                }
                dict.into_any()
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "stored value: unknown tag 0x{other:02x}"
                )))
            }
        })
    }
}

/// A stored entry's value: decoded (an older format's JSON, or a test's store) or encoded.
pub enum Stored<'a, 'py> {
    Py(Bound<'py, PyAny>),
    Packed(&'a [u8]),
}

/// The encoding of a value.
#[pyfunction]
pub fn pack<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(64);
    pack_into(&mut out, value)?;
    Ok(PyBytes::new(value.py(), &out))
}

/// The value `pack` encoded.
#[pyfunction]
pub fn unpack<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut reader = Reader::new(raw);
    let value = reader.value(py)?;
    if !reader.done() {
        return Err(PyValueError::new_err(
            "stored value has bytes after its end",
        ));
    }
    Ok(value)
}

/// (key, encoded value, or None where the value is None) of each store entry: the records
/// a batch's changes become (`skip_none`: a snapshot, where a missing key is one deleted).
#[pyfunction]
#[pyo3(signature = (entries, skip_none=false))]
pub fn pack_entries<'py>(
    entries: &Bound<'py, PyDict>,
    skip_none: bool,
) -> PyResult<Bound<'py, PyList>> {
    let py = entries.py();
    let packed = PyList::empty(py);
    let mut out = Vec::with_capacity(256);
    for (key, value) in entries.iter() {
        if value.is_none() {
            if !skip_none {
                packed.append((key, py.None()))?;
            }
            continue;
        }
        out.clear();
        pack_into(&mut out, &value)?;
        packed.append((key, PyBytes::new(py, &out)))?;
    }
    Ok(packed)
}

/// Where store entries go, one at a time, as they are encoded: a whole state's, or a
/// batch's changes (a None value deletes the key).
pub trait EntrySink {
    fn put_entry(&mut self, key: &str, value: Option<&[u8]>);

    fn put(&mut self, key: &str, value: &[u8]) {
        self.put_entry(key, Some(value));
    }
}

/// Entries let go of as they come.
pub struct Discard;

impl EntrySink for Discard {
    fn put_entry(&mut self, _key: &str, _value: Option<&[u8]>) {}
}

impl EntrySink for PackedEntries {
    fn put_entry(&mut self, key: &str, value: Option<&[u8]>) {
        self.push((key.to_owned(), value.map(<[u8]>::to_vec)));
    }
}

/// The records of one write, built as its entries come: [sequence, chunk count, [key,
/// value, key, value, ...]] each, the entries split so that no chunk's entries pass
/// `chunk_bytes` by more than one entry. Only the encoded chunks are held, never a list of
/// the entries.
pub struct ChunkWriter {
    chunk_bytes: usize,
    // (entries, body) of each chunk.
    bodies: Vec<(usize, Vec<u8>)>,
}

impl ChunkWriter {
    pub fn new(chunk_bytes: usize) -> Self {
        Self {
            chunk_bytes,
            bodies: Vec::new(),
        }
    }

    /// The chunks, as bytes; each body is let go once copied. A write of no entries is one
    /// chunk without entries, unless `skip_empty` (then no chunk at all).
    pub fn finish(
        mut self,
        py: Python<'_>,
        sequence: i64,
        skip_empty: bool,
    ) -> PyResult<Vec<Bound<'_, PyBytes>>> {
        if self.bodies.is_empty() && !skip_empty {
            self.bodies.push((0, Vec::new()));
        }
        let count = self.bodies.len() as i64;
        self.bodies
            .into_iter()
            .map(|(entries, body)| {
                let mut header = Vec::with_capacity(24);
                pack_list_header(&mut header, 3);
                pack_int(&mut header, sequence);
                pack_int(&mut header, count);
                pack_list_header(&mut header, entries * 2);
                PyBytes::new_with(py, header.len() + body.len(), |out| {
                    out[..header.len()].copy_from_slice(&header);
                    out[header.len()..].copy_from_slice(&body);
                    Ok(())
                })
            })
            .collect()
    }
}

impl EntrySink for ChunkWriter {
    fn put_entry(&mut self, key: &str, value: Option<&[u8]>) {
        let needed = key.len() + value.map_or(0, <[u8]>::len) + 20;
        if self
            .bodies
            .last()
            .is_none_or(|(_, body)| body.len() > self.chunk_bytes)
        {
            // Room for a whole chunk at once: a chunk's body is not copied as it grows.
            let room = self.chunk_bytes.saturating_add(needed).min(1 << 26);
            self.bodies.push((0, Vec::with_capacity(room)));
        }
        let (count, body) = self.bodies.last_mut().expect("one body");
        *count += 1;
        pack_text(body, key);
        match value {
            None => pack_none(body),
            Some(raw) => pack_bytes(body, raw),
        }
    }
}

/// The records of one write (`ChunkWriter`) of a list of (key, encoded value or None).
#[pyfunction]
pub fn pack_chunks<'py>(
    py: Python<'py>,
    sequence: i64,
    entries: &Bound<'py, PyList>,
    chunk_bytes: usize,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut writer = ChunkWriter::new(chunk_bytes);
    for entry in entries.iter() {
        let (key, value): (Bound<'py, PyString>, Option<Bound<'py, PyBytes>>) = entry.extract()?;
        writer.put_entry(key.to_str()?, value.as_ref().map(|raw| raw.as_bytes()));
    }
    writer.finish(py, sequence, false)
}

/// (sequence, chunk count) of a chunk `pack_chunks` wrote.
#[pyfunction]
pub fn chunk_header(raw: &[u8]) -> PyResult<(i64, i64)> {
    let mut reader = Reader::new(raw);
    if reader.list_len()? != 3 {
        return Err(PyValueError::new_err("not a state chunk"));
    }
    Ok((reader.int()?, reader.int()?))
}

/// (key, encoded value or None) of each entry of a chunk `pack_chunks` wrote, in order.
pub fn chunk_entries(raw: &[u8]) -> PyResult<Vec<(&str, Option<&[u8]>)>> {
    let mut reader = Reader::new(raw);
    if reader.list_len()? != 3 {
        return Err(PyValueError::new_err("not a state chunk"));
    }
    reader.int()?;
    reader.int()?;
    let n = reader.list_len()? / 2;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push((reader.text()?, reader.opt_bytes()?));
    }
    if !reader.done() {
        return Err(PyValueError::new_err(
            "a state chunk has bytes after its end",
        ));
    }
    Ok(entries)
}

/// Apply chunks' entries to `entries`, in order: a value is set (encoded), None deletes.
#[pyfunction]
pub fn merge_chunks(entries: &Bound<'_, PyDict>, chunks: &Bound<'_, PyList>) -> PyResult<()> {
    let py = entries.py();
    for chunk in chunks.iter() {
        let chunk = chunk.cast::<PyBytes>()?;
        for (key, value) in chunk_entries(chunk.as_bytes())? {
            match value {
                None => {
                    if entries.contains(key)? {
                        entries.del_item(key)?;
                    }
                }
                Some(raw) => entries.set_item(key, PyBytes::new(py, raw))?,
            }
        }
    }
    Ok(())
}

/// Decode, in place, every value of `entries` that is encoded (bytes in this encoding).
#[pyfunction]
pub fn unpack_values(entries: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = entries.py();
    for (key, value) in entries.iter() {
        if let Ok(raw) = value.cast::<PyBytes>() {
            if is_packed(raw.as_bytes()) {
                entries.set_item(key, unpack(py, raw.as_bytes())?)?;
            }
        }
    }
    Ok(())
}
