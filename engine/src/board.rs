//! The rates board (domain/board.py's `RatesBoard`): the window vectors of every partition
//! summed into published records.
//!
//! Each customer partition sends its current (absolute) vectors of the keys that changed,
//! with its stream time. The board keeps the latest vector per partition, so a partition
//! that sends the same vectors again after a restart changes nothing. Stream time is the
//! largest of the partitions' stream times; closing and finality go by the smallest (the
//! low watermark), known once every partition has reported.
//!
//! Its store entries are the ones the Python board wrote, key for key and value for value,
//! so a changelog written by either restores in the other.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use indexmap::{Equivalent, IndexMap};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde::de::{Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::cohorts::vector_to_py;
use crate::packed::{
    entries_to_dict, entries_to_list, pack_i128, pack_int, pack_list_header, pack_opt_bool,
    pack_text, pack_texts, PackedEntries,
};
use crate::records::{self, BandScale, Bands};
use crate::util::{int_of, json_key, window_start, Part};
use crate::window_rules::WindowRules;

// stream_app/domain/store_keys.py: META_KEY and WINDOW_PREFIX.
const META_KEY: &str = "m";
const WINDOW_PREFIX: &str = "w|";
// A stream time at or below this one is never recorded (board.py's own floor).
const NO_STREAM_TIME: i64 = -(1 << 62);

/// (view name, window label, window start): sorted as Python sorts these tuples.
type Slot = (String, String, i64);
type Key = (Box<str>, Box<str>);

/// A key borrowed from a message, to look a held key up without copying its texts. Its
/// hash is the tuple's: each text in turn.
#[derive(Hash, PartialEq, Eq)]
struct KeyRef<'a>(&'a str, &'a str);

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == *key.0 && *self.1 == *key.1
    }
}

/// One key of one window: each partition's latest vector, in the order they first came.
#[derive(Default)]
struct Cell {
    parts: Vec<(i64, Vec<i128>)>,
    changed: bool,
}

impl Cell {
    fn summed(&self) -> PyResult<Vec<i128>> {
        let mut parts = self.parts.iter();
        let mut total = match parts.next() {
            Some((_, vector)) => vector.clone(),
            None => return Ok(Vec::new()),
        };
        for (partition, vector) in parts {
            if vector.len() != total.len() {
                return Err(PyValueError::new_err(format!(
                    "partition {partition} sent a vector of {} figures, the others {}",
                    vector.len(),
                    total.len()
                )));
            }
            for (sum, n) in total.iter_mut().zip(vector) {
                *sum += n;
            }
        }
        Ok(total)
    }
}

#[derive(Default)]
struct Window {
    cells: IndexMap<Key, Cell>,
    announced: bool,
}

/// A row of a partials message: `[view, label, start, first, second, vector...]`.
struct Row<'a> {
    view: Cow<'a, str>,
    label: Cow<'a, str>,
    start: i64,
    first: Cow<'a, str>,
    second: Cow<'a, str>,
    vector: Vec<i128>,
}

/// A JSON string, borrowed from the message unless it holds escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A count or amount: an integer of up to 128 bits (read from its text, which serde_json
/// would otherwise turn into a float beyond 64 bits), or a float rounded.
fn figure(raw: &RawValue) -> Option<i128> {
    let text = raw.get();
    text.parse::<i128>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f.round() as i128))
}

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row [view, label, start, key..., vector...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let short = || A::Error::custom("a row needs a view, label, start and key");
                let view = seq.next_element::<Text>()?.ok_or_else(short)?.0;
                let label = seq.next_element::<Text>()?.ok_or_else(short)?.0;
                let start = seq.next_element::<i64>()?.ok_or_else(short)?;
                let first = seq.next_element::<Text>()?.ok_or_else(short)?.0;
                let second = seq.next_element::<Text>()?.ok_or_else(short)?.0;
                let mut vector = Vec::with_capacity(seq.size_hint().unwrap_or(6));
                while let Some(raw) = seq.next_element::<&RawValue>()? {
                    vector.push(
                        figure(raw)
                            .ok_or_else(|| A::Error::custom("a vector holds numbers only"))?,
                    );
                }
                Ok(Row {
                    view,
                    label,
                    start,
                    first,
                    second,
                    vector,
                })
            }
        }
        deserializer.deserialize_seq(RowVisitor)
    }
}

pub struct RatesBoard {
    rules: WindowRules,
    partitions: usize,
    next_offset: i64,
    // Each partition's stream time, in the order the partitions first reported.
    stream_times: Vec<(i64, i64)>,
    windows: BTreeMap<Slot, Window>,
    changed_windows: BTreeSet<Slot>,
}

/// A record due: (view name, label, start, end, key, summed vector, final).
type Due = (String, String, i64, i64, Key, Vec<i128>, bool);

impl RatesBoard {
    fn stream_time(&self) -> Option<i64> {
        self.stream_times.iter().map(|(_, time)| *time).max()
    }

    fn low_watermark(&self) -> Option<i64> {
        if self.stream_times.len() < self.partitions {
            return None;
        }
        self.stream_times.iter().map(|(_, time)| *time).min()
    }

    fn apply_encoded(&mut self, raw: &[u8], offset: i64) -> Result<(), serde_json::Error> {
        if offset < self.next_offset {
            return Ok(());
        }
        let (partition, stream_time, rows): (i64, Option<i64>, Vec<Row>) =
            serde_json::from_slice(raw)?;
        self.next_offset = offset + 1;
        // The message's stream time is its partition's after these partials: they belong
        // to windows that were open before it, so finality is judged without it (or a
        // partition's last counts for a window would be dropped by its own message).
        let low_watermark = self.low_watermark();
        if let Some(time) = stream_time {
            match self.stream_times.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, held)) if time > *held => *held = time,
                Some(_) => {}
                None if time > NO_STREAM_TIME => self.stream_times.push((partition, time)),
                None => {}
            }
        }
        // A message's rows come window by window: each run of one window is applied with
        // one look-up; a window final before the message keeps none of its partials.
        let mut rest = rows.as_slice();
        while let Some(head) = rest.first() {
            let run = rest
                .iter()
                .position(|r| r.start != head.start || r.label != head.label || r.view != head.view)
                .unwrap_or(rest.len());
            let (rows, after) = rest.split_at(run);
            rest = after;
            if self.rules.is_final(&head.label, head.start, low_watermark) {
                continue;
            }
            let slot: Slot = (head.view.to_string(), head.label.to_string(), head.start);
            let window = self.windows.entry(slot.clone()).or_default();
            let mut changed = false;
            for row in rows {
                let cell = match window.cells.get_index_of(&KeyRef(&row.first, &row.second)) {
                    Some(index) => &mut window.cells[index],
                    None => window
                        .cells
                        .entry((row.first.as_ref().into(), row.second.as_ref().into()))
                        .or_default(),
                };
                match cell.parts.iter_mut().find(|(p, _)| *p == partition) {
                    // Sent again after a restart: nothing changed, nothing to publish.
                    Some((_, held)) if *held == row.vector => continue,
                    Some((_, held)) => held.clone_from(&row.vector),
                    None => cell.parts.push((partition, row.vector.clone())),
                }
                cell.changed = true;
                changed = true;
            }
            if changed {
                self.changed_windows.insert(slot);
            }
        }
        Ok(())
    }

    fn take_records(&mut self) -> PyResult<Vec<Due>> {
        let low_watermark = self.low_watermark();
        let mut records = Vec::new();
        let mut finished = Vec::new();
        for (slot, window) in self.windows.iter_mut() {
            let (view, label, start) = slot;
            let Some(size) = self.rules.size_of(label) else {
                // A size no longer configured: forgotten unpublished, as final.
                finished.push(slot.clone());
                continue;
            };
            let end = start + size;
            if !self.rules.is_closed(end, low_watermark) {
                continue;
            }
            let is_final = self.rules.is_final(label, *start, low_watermark);
            let all = is_final || !window.announced;
            let mut due: Vec<(&Key, &Cell)> = window
                .cells
                .iter()
                .filter(|(_, cell)| all || cell.changed)
                .collect();
            if due.is_empty() {
                continue;
            }
            due.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, cell) in due {
                records.push((
                    view.clone(),
                    label.clone(),
                    *start,
                    end,
                    key.clone(),
                    cell.summed()?,
                    is_final,
                ));
            }
            window.announced = true;
            for cell in window.cells.values_mut() {
                cell.changed = false;
            }
            self.changed_windows.insert(slot.clone());
            if is_final {
                finished.push(slot.clone());
            }
        }
        for slot in finished {
            self.windows.remove(&slot);
            self.changed_windows.insert(slot);
        }
        Ok(records)
    }

    /// The store entries changed since the last call, encoded as packed.rs encodes the
    /// values board.py wrote: a window's `[announced, [[first, second, partition, vector],
    /// ...], [[first, second], ...]]` (None once forgotten) and the meta entry
    /// `[next_offset, [[partition, stream time], ...]]`.
    fn take_change_entries(&mut self) -> PackedEntries {
        let mut entries = PackedEntries::new();
        for slot in std::mem::take(&mut self.changed_windows) {
            let key = json_key(
                WINDOW_PREFIX,
                &[Part::Text(&slot.0), Part::Text(&slot.1), Part::Int(slot.2)],
            );
            let Some(window) = self.windows.get(&slot) else {
                entries.push((key, None));
                continue;
            };
            let mut value = Vec::with_capacity(64 + window.cells.len() * 64);
            pack_list_header(&mut value, 3);
            pack_opt_bool(&mut value, Some(window.announced));
            let rows: usize = window.cells.values().map(|cell| cell.parts.len()).sum();
            pack_list_header(&mut value, rows);
            for (key, cell) in &window.cells {
                for (partition, vector) in &cell.parts {
                    pack_list_header(&mut value, 4);
                    pack_text(&mut value, &key.0);
                    pack_text(&mut value, &key.1);
                    pack_int(&mut value, *partition);
                    pack_list_header(&mut value, vector.len());
                    for n in vector {
                        pack_i128(&mut value, *n);
                    }
                }
            }
            let changed = window.cells.values().filter(|cell| cell.changed).count();
            pack_list_header(&mut value, changed);
            for (key, _) in window.cells.iter().filter(|(_, cell)| cell.changed) {
                pack_texts(&mut value, &[&key.0, &key.1]);
            }
            entries.push((key, Some(value)));
        }
        let mut meta = Vec::with_capacity(16 + self.stream_times.len() * 12);
        pack_list_header(&mut meta, 2);
        pack_int(&mut meta, self.next_offset);
        pack_list_header(&mut meta, self.stream_times.len());
        for (partition, time) in &self.stream_times {
            pack_list_header(&mut meta, 2);
            pack_int(&mut meta, *partition);
            pack_int(&mut meta, *time);
        }
        entries.push((META_KEY.to_owned(), Some(meta)));
        entries
    }

    fn summed_window(
        &self,
        view: &str,
        label: &str,
        start: i64,
    ) -> PyResult<Vec<(&Key, Vec<i128>)>> {
        match self
            .windows
            .get(&(view.to_owned(), label.to_owned(), start))
        {
            None => Ok(Vec::new()),
            Some(window) => window
                .cells
                .iter()
                .map(|(key, cell)| Ok((key, cell.summed()?)))
                .collect(),
        }
    }
}

fn summed_to_py<'py>(
    py: Python<'py>,
    cells: Vec<(&Key, Vec<i128>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, vector) in cells {
        dict.set_item((key.0.as_ref(), key.1.as_ref()), vector_to_py(py, &vector)?)?;
    }
    Ok(dict)
}

/// A record due as the tuple `take_records` gives: (view name, label, start, end, first,
/// second, vector, final).
fn due_to_py<'py>(py: Python<'py>, due: Due) -> PyResult<Bound<'py, PyTuple>> {
    let (view, label, start, end, key, vector, is_final) = due;
    (
        view,
        label,
        start,
        end,
        key.0.as_ref(),
        key.1.as_ref(),
        vector_to_py(py, &vector)?,
        is_final,
    )
        .into_pyobject(py)
}

/// board.py's `RatesBoard` state and rules; the Python class wraps it.
#[pyclass(name = "RatesBoard", module = "stream_app._engine")]
pub struct PyRatesBoard {
    board: RatesBoard,
}

#[pymethods]
impl PyRatesBoard {
    #[new]
    fn new(
        sizes: Vec<(String, i64)>,
        grace_ms: i64,
        attribution_ms: i64,
        partitions: usize,
    ) -> Self {
        Self {
            board: RatesBoard {
                rules: WindowRules::new(&sizes, attribution_ms, grace_ms),
                partitions,
                next_offset: 0,
                stream_times: Vec::new(),
                windows: BTreeMap::new(),
                changed_windows: BTreeSet::new(),
            },
        }
    }

    #[getter]
    fn next_offset(&self) -> i64 {
        self.board.next_offset
    }

    #[getter]
    fn stream_time(&self) -> Option<i64> {
        self.board.stream_time()
    }

    #[getter]
    fn low_watermark(&self) -> Option<i64> {
        self.board.low_watermark()
    }

    fn apply_encoded(&mut self, raw: &[u8], offset: i64) -> PyResult<()> {
        self.board.apply_encoded(raw, offset).map_err(|error| {
            PyValueError::new_err(format!("partials message at offset {offset}: {error}"))
        })
    }

    fn current<'py>(
        &self,
        py: Python<'py>,
        view: &str,
        label: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let Some(stream_time) = self.board.stream_time() else {
            return Ok(PyDict::new(py));
        };
        let size = self
            .board
            .rules
            .size_of(label)
            .ok_or_else(|| PyValueError::new_err(format!("no window size {label}")))?;
        let start = window_start(stream_time, size);
        summed_to_py(py, self.board.summed_window(view, label, start)?)
    }

    fn window<'py>(
        &self,
        py: Python<'py>,
        view: &str,
        label: &str,
        start: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        summed_to_py(py, self.board.summed_window(view, label, start)?)
    }

    fn retained(&self, view: &str, label: &str) -> Vec<i64> {
        // Slots sort by view, label, then start: the starts come oldest first.
        self.board
            .windows
            .keys()
            .filter(|(v, l, _)| v == view && l == label)
            .map(|(_, _, start)| *start)
            .collect()
    }

    fn take_records<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for due in self.board.take_records()? {
            list.append(due_to_py(py, due)?)?;
        }
        Ok(list)
    }

    /// `take_records` as the rates and KPI topics' records: (view name, topic key, JSON
    /// value) each, built by records.rs; a record it leaves to Python comes as
    /// `take_records` gives it. `campaign` and `loyalty` are the band scales (names, lower
    /// bounds); `emitted_at_ms` the records' emitted_at.
    fn take_published<'py>(
        &mut self,
        py: Python<'py>,
        campaign: (Vec<String>, Vec<f64>),
        loyalty: (Vec<String>, Vec<f64>),
        emitted_at_ms: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let scale = |(names, bounds): (Vec<String>, Vec<f64>)| {
            if names.len() == bounds.len() + 1 {
                Ok(BandScale { names, bounds })
            } else {
                Err(PyValueError::new_err(
                    "a band scale needs one name more than bounds",
                ))
            }
        };
        let bands = Bands {
            campaign: scale(campaign)?,
            loyalty: scale(loyalty)?,
        };
        let mut emitted_at = Vec::with_capacity(24);
        records::push_rfc3339(&mut emitted_at, emitted_at_ms);
        let list = PyList::empty(py);
        for due in self.board.take_records()? {
            let (view, label, start, end, key, vector, is_final) = &due;
            let record = records::Due {
                view,
                label,
                start: *start,
                end: *end,
                key: (&key.0, &key.1),
                vector,
                is_final: *is_final,
            };
            match records::encode(&record, &bands, &emitted_at) {
                Some((topic_key, value)) => list.append((
                    view.as_str(),
                    PyBytes::new(py, &topic_key),
                    PyBytes::new(py, &value),
                ))?,
                None => list.append(due_to_py(py, due)?)?,
            }
        }
        Ok(list)
    }

    /// The store entries changed since the last call (`RatesBoard::take_change_entries`),
    /// decoded.
    fn take_changes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        entries_to_dict(py, &self.board.take_change_entries())
    }

    /// The changes as store records: (key, encoded value, or None to delete it).
    fn take_packed_changes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries_to_list(py, self.board.take_change_entries())
    }

    /// The board as its store entries hold it (other keys, the drop detector's, are left).
    fn restore(&mut self, entries: &Bound<'_, PyDict>) -> PyResult<()> {
        let board = &mut self.board;
        if let Some(meta) = entries.get_item(META_KEY)? {
            if !meta.is_none() {
                board.next_offset = meta.get_item(0)?.extract()?;
                board.stream_times.clear();
                for pair in meta.get_item(1)?.try_iter()? {
                    let pair = pair?;
                    let partition: i64 = int_of(&pair.get_item(0)?)? as i64;
                    let time: i64 = pair.get_item(1)?.extract()?;
                    match board.stream_times.iter_mut().find(|(p, _)| *p == partition) {
                        Some((_, held)) => *held = time,
                        None => board.stream_times.push((partition, time)),
                    }
                }
            }
        }
        for (entry, value) in entries.iter() {
            let entry: String = entry.extract()?;
            let Some(slot_text) = entry.strip_prefix(WINDOW_PREFIX) else {
                continue;
            };
            if value.is_none() {
                continue;
            }
            let slot: Slot = serde_json::from_str(slot_text)
                .map_err(|error| PyValueError::new_err(format!("board entry {entry}: {error}")))?;
            let mut window = Window {
                announced: value.get_item(0)?.extract()?,
                ..Window::default()
            };
            for row in value.get_item(1)?.try_iter()? {
                let row = row?;
                let key: Key = (
                    row.get_item(0)?.extract::<String>()?.into(),
                    row.get_item(1)?.extract::<String>()?.into(),
                );
                let partition: i64 = row.get_item(2)?.extract()?;
                let vector = row
                    .get_item(3)?
                    .try_iter()?
                    .map(|n| int_of(&n?))
                    .collect::<PyResult<Vec<i128>>>()?;
                let cell = window.cells.entry(key).or_default();
                match cell.parts.iter_mut().find(|(p, _)| *p == partition) {
                    Some((_, held)) => *held = vector,
                    None => cell.parts.push((partition, vector)),
                }
            }
            for key in value.get_item(2)?.try_iter()? {
                let key = key?;
                let first: String = key.get_item(0)?.extract()?;
                let second: String = key.get_item(1)?.extract()?;
                if let Some(cell) = window.cells.get_mut(&KeyRef(&first, &second)) {
                    cell.changed = true;
                }
            }
            board.windows.insert(slot, window);
        }
        Ok(())
    }
}
