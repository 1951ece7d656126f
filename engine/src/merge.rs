//! Input partitions merged in event-time order across fetches (domain/merge.py tells why
//! and how): the validating stage's records wait here, compiled, so that neither adding a
//! fetched batch nor releasing what may leave costs Python code per record.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};

use indexmap::IndexMap;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::accept::PyAccepted;

type Source = (String, i64); // (topic, partition)

const LOWEST: i64 = i64::MIN;

struct Waiting {
    // (key, offset, payload)
    items: VecDeque<(i64, i64, Py<PyAny>)>,
    key: i64,
    // The key of its last record that left: where `key` starts again after a rewind.
    left_key: i64,
    next_offset: Option<i64>,
    // After a rewind: the offset its next record must have (see `admit`), and whether a
    // seek back to it was asked for already.
    resume_at: Option<i64>,
    sought: bool,
}

impl Waiting {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            key: LOWEST,
            left_key: LOWEST,
            next_offset: None,
            resume_at: None,
            sought: false,
        }
    }

    /// Whether a record at `offset` is new (not read again after a seek back).
    fn takes(&self, offset: i64) -> bool {
        self.next_offset.is_none_or(|next| offset >= next)
    }

    fn push(&mut self, offset: i64, ts: Option<i64>, payload: Py<PyAny>) {
        if let Some(ts) = ts {
            if ts > self.key {
                self.key = ts;
            }
        }
        self.items.push_back((self.key, offset, payload));
        self.next_offset = Some(offset + 1);
    }
}

/// A source partition that released records, as Python sees it.
pub struct ReleasedSource<'py> {
    pub source: Bound<'py, PyTuple>,
    pub topic: Bound<'py, PyString>,
    pub partition: i64,
}

/// The records a release let leave, in order: (position of its source in `sources`,
/// offset, payload).
pub struct Released<'py> {
    pub sources: Vec<ReleasedSource<'py>>,
    pub records: Vec<(usize, i64, Bound<'py, PyAny>)>,
}

/// domain/merge.py's EventTimeMerge; payloads are any Python objects.
#[pyclass(name = "EventTimeMerge", module = "stream_app._engine")]
pub struct PyEventTimeMerge {
    #[pyo3(get)]
    max_buffered: usize,
    #[pyo3(get)]
    max_wait_s: f64,
    sources: IndexMap<Source, Waiting>,
    waiting: usize,
    unknown_since: IndexMap<Source, f64>,
    // Partitions whose lag stayed unknown for max_wait_s (still waited for), and those of
    // them not reported yet; records that left only because too many waited, since the
    // last report (take_order_breaks).
    unknown_reported: HashSet<Source>,
    newly_unknown: Vec<Source>,
    forced: usize,
}

impl PyEventTimeMerge {
    fn waiting_of(&mut self, source: &Source) -> &mut Waiting {
        if !self.sources.contains_key(source) {
            self.sources.insert(source.clone(), Waiting::new());
        }
        self.sources.get_mut(source).expect("inserted above")
    }

    /// End the wait for `source`'s lag (known now, or to be asked again from scratch): a
    /// later unknown lag is a new wait, timed and reported anew.
    fn lag_known(&mut self, source: &Source) {
        self.unknown_since.shift_remove(source);
        self.unknown_reported.remove(source);
    }

    /// `release`'s records, without a Python tuple each (see `Released`).
    pub fn release_records<'py>(
        &mut self,
        py: Python<'py>,
        behind: &Bound<'py, PyAny>,
        now: f64,
        quiet: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Released<'py>> {
        let empty = PyTuple::empty(py).into_any();
        let bound = self.bound(behind, now, quiet.unwrap_or(&empty))?;
        // (key, source index) of each source's first record; ties go by the source, as
        // (topic, partition) compares.
        let mut heads: BinaryHeap<Reverse<(i64, &String, i64, usize)>> = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(index, ((topic, partition), waiting))| {
                waiting
                    .items
                    .front()
                    .map(|first| Reverse((first.0, topic, *partition, index)))
            })
            .collect();
        let mut order: Vec<usize> = Vec::new();
        // Beyond max_buffered, the oldest leave anyway, down to half of it: order degrades
        // gracefully rather than memory growing.
        let keep = if self.waiting > self.max_buffered {
            self.max_buffered / 2
        } else {
            self.waiting
        };
        let mut forced = 0;
        let mut counts: Vec<usize> = vec![0; self.sources.len()];
        while let Some(Reverse((key, topic, partition, index))) = heads.pop() {
            if i128::from(key) > bound {
                if self.waiting - order.len() <= keep {
                    break;
                }
                forced += 1;
            }
            order.push(index);
            counts[index] += 1;
            let items = &self.sources[index].items;
            if let Some(next) = items.get(counts[index]) {
                heads.push(Reverse((next.0, topic, partition, index)));
            }
        }
        drop(heads);
        self.forced += forced;
        // Each source that released records, once; its records refer to it by position.
        let mut positions: Vec<Option<usize>> = vec![None; self.sources.len()];
        let mut released = Released {
            sources: Vec::new(),
            records: Vec::with_capacity(order.len()),
        };
        for index in order {
            let (source, waiting) = self
                .sources
                .get_index_mut(index)
                .expect("an index of a source");
            let (key, offset, payload) = waiting.items.pop_front().expect("counted above");
            waiting.left_key = key;
            let position = match positions[index] {
                Some(position) => position,
                None => {
                    released.sources.push(ReleasedSource {
                        source: source_tuple(py, source)?,
                        topic: PyString::new(py, &source.0),
                        partition: source.1,
                    });
                    positions[index] = Some(released.sources.len() - 1);
                    released.sources.len() - 1
                }
            };
            released
                .records
                .push((position, offset, payload.into_bound(py)));
        }
        self.waiting -= released.records.len();
        Ok(released)
    }

    /// The largest key that may leave: i128, as "no bound" is beyond every key.
    fn bound(
        &mut self,
        behind: &Bound<'_, PyAny>,
        now: f64,
        quiet: &Bound<'_, PyAny>,
    ) -> PyResult<i128> {
        let mut bound = i128::from(i64::MAX) + 1;
        let items = behind.call_method0(pyo3::intern!(behind.py(), "items"))?;
        for entry in items.try_iter()? {
            let entry = entry?;
            let (source_obj, is_behind): (Bound<'_, PyAny>, Option<bool>) = entry.extract()?;
            let source: Source = source_obj.extract()?;
            match is_behind {
                None => {
                    // Not known is behind: until a fetch of it answers, it may hold
                    // records hours older than the others' (merge.py).
                    let first_unknown = *self.unknown_since.entry(source.clone()).or_insert(now);
                    if now - first_unknown >= self.max_wait_s
                        && !self.unknown_reported.contains(&source)
                    {
                        self.unknown_reported.insert(source.clone());
                        self.newly_unknown.push(source.clone());
                    }
                }
                Some(_) => self.lag_known(&source),
            }
            let waiting = self.sources.get(&source);
            if is_behind == Some(false) {
                // Caught up as of its last answer; records written since that answer are
                // unknown until the next one, which `quiet` tells.
                if let Some(waiting) = waiting {
                    if waiting.next_offset.is_some() && !quiet.contains(&source_obj)? {
                        bound = bound.min(i128::from(waiting.key));
                    }
                }
                continue;
            }
            match waiting.and_then(|waiting| waiting.items.back()) {
                // It may still deliver anything. No time limit: its records are in Kafka
                // and on their way (a partition that lags is always fetched).
                None => return Ok(i128::from(LOWEST)),
                // Its records so far are waiting here; the next one is at least this late.
                Some(last) => bound = bound.min(i128::from(last.0)),
            }
        }
        Ok(bound)
    }
}

fn source_tuple<'py>(py: Python<'py>, source: &Source) -> PyResult<Bound<'py, PyTuple>> {
    (source.0.as_str(), source.1).into_pyobject(py)
}

#[pymethods]
impl PyEventTimeMerge {
    #[new]
    fn new(max_buffered: usize, max_wait_s: f64) -> Self {
        Self {
            max_buffered,
            max_wait_s,
            sources: IndexMap::new(),
            waiting: 0,
            unknown_since: IndexMap::new(),
            unknown_reported: HashSet::new(),
            newly_unknown: Vec::new(),
            forced: 0,
        }
    }

    fn __len__(&self) -> usize {
        self.waiting
    }

    /// One record read from `source`; `ts` None for a record without an event time.
    #[pyo3(signature = (source, offset, ts, payload))]
    fn add(&mut self, source: Source, offset: i64, ts: Option<i64>, payload: Py<PyAny>) {
        let waiting = self.waiting_of(&source);
        if !waiting.takes(offset) {
            return; // read again after a seek back: it waits here or has left already
        }
        waiting.push(offset, ts, payload);
        self.waiting += 1;
    }

    /// A validated batch of `source`: per record, its outcome; an `Accepted` waits with
    /// its ts, anything else (a rejection) as `(record, outcome)` without one.
    fn add_validated(
        &mut self,
        source: Source,
        records: &Bound<'_, PyAny>,
        outcomes: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        let py = records.py();
        let offset_name = pyo3::intern!(py, "offset");
        let waiting = self.waiting_of(&source);
        let mut added = 0;
        let mut outcomes_left = outcomes.iter();
        for record in records.try_iter()? {
            let record = record?;
            let Some(outcome) = outcomes_left.next() else {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "fewer outcomes than records",
                ));
            };
            let offset: i64 = record.getattr(offset_name)?.extract()?;
            if !waiting.takes(offset) {
                continue;
            }
            if let Ok(accepted) = outcome.cast::<PyAccepted>() {
                let ts = accepted.get().event.ts();
                waiting.push(offset, Some(ts), outcome.unbind());
            } else {
                let payload = PyTuple::new(py, [record, outcome])?;
                waiting.push(offset, None, payload.into_any().unbind());
            }
            added += 1;
        }
        if outcomes_left.next().is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "more outcomes than records",
            ));
        }
        self.waiting += added;
        Ok(())
    }

    /// The records that may leave, in event-time order, as (source, offset, payload).
    ///
    /// `behind` says, for each partition read, whether Kafka holds records of it not read
    /// yet (None: not known yet; taken as behind). `quiet` names caught-up partitions that
    /// a fetch found empty after their last record: they hold nothing back; any other
    /// caught-up partition that delivered holds the others at its last key.
    #[pyo3(signature = (behind, now, quiet = None))]
    fn release<'py>(
        &mut self,
        py: Python<'py>,
        behind: &Bound<'py, PyAny>,
        now: f64,
        quiet: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let released = self.release_records(py, behind, now, quiet)?;
        let list = PyList::empty(py);
        for (source, offset, payload) in released.records {
            list.append((&released.sources[source].source, offset, payload))?;
        }
        Ok(list)
    }

    /// What held or broke the order since the last call: the partitions whose lag stayed
    /// unknown for `max_wait_s` (each once per such wait; the others' records still wait
    /// for them), and how many records left only because more than `max_buffered` waited
    /// (records of the partitions not waited for can then come later than `stream time -
    /// grace`: counted late).
    fn take_order_breaks(&mut self) -> (Vec<Source>, usize) {
        let unknown = std::mem::take(&mut self.newly_unknown);
        let forced = std::mem::take(&mut self.forced);
        (unknown, forced)
    }

    fn sources(&self) -> Vec<Source> {
        self.sources.keys().cloned().collect()
    }

    /// Per partition, the offset to resume from: the first record still waiting, or the
    /// one after the last record read. Committing these loses nothing.
    fn positions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let positions = PyDict::new(py);
        for (source, waiting) in &self.sources {
            let position = match waiting.items.front() {
                Some(first) => Some(first.1),
                None => waiting.next_offset,
            };
            if let Some(position) = position {
                positions.set_item(source_tuple(py, source)?, position)?;
            }
        }
        Ok(positions)
    }

    /// Check a fetched batch of `source`, offsets `first_offset`..`last_offset`, before its
    /// records are added: the offset to read `source` again from when the batch would skip
    /// records after a `rewind`; None when it may be added (merge.py tells why; once only:
    /// offsets may legitimately jump, so the batch that follows the seek back is taken).
    fn admit(&mut self, source: Source, first_offset: i64, last_offset: i64) -> Option<i64> {
        let waiting = self.sources.get_mut(&source)?;
        let resume_at = waiting.resume_at?;
        if first_offset > resume_at && !waiting.sought {
            waiting.sought = true;
            return Some(resume_at);
        }
        if last_offset >= resume_at {
            waiting.resume_at = None;
            waiting.sought = false;
        }
        None
    }

    /// A rebalance began, and `source` may stay here: its waiting records are dropped
    /// (they were not committed; whoever owns it next reads them again), and its next
    /// record must be the first of them (see `admit`).
    fn rewind(&mut self, source: Source) {
        self.lag_known(&source);
        let Some(waiting) = self.sources.get_mut(&source) else {
            return;
        };
        if let Some(first) = waiting.items.front() {
            waiting.next_offset = Some(first.1);
            self.waiting -= waiting.items.len();
            waiting.items.clear();
            // The records read again are keyed by their own event time, not by that of
            // the dropped records after them.
            waiting.key = waiting.left_key;
        }
        waiting.resume_at = waiting.next_offset;
        waiting.sought = false;
    }

    /// `source` is owned elsewhere now: its new owner reads from the committed offset.
    fn forget(&mut self, source: Source) {
        self.lag_known(&source);
        if let Some(waiting) = self.sources.shift_remove(&source) {
            self.waiting -= waiting.items.len();
        }
    }
}
