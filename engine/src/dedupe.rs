//! Which event_ids were already processed, remembered for the attribution window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;
use pyo3::prelude::*;

use crate::util::{s, Hasher, Str};

/// Remembers each accepted event_id with its ts until stream time passes ts + horizon.
/// Whether an id is still remembered is decided from stream time at the moment of the
/// check, not from when clean-up last ran, so results never depend on batch boundaries.
///
/// Ids come nearly always in ts order: those are kept once, in a log in that order, and
/// found through a table of their 4-byte places in it, so that each id and its ts are
/// held once (a map of id to ts beside a queue of both would hold them twice). An id
/// below the newest ts of the log is kept aside, in a table and a heap, instead.
pub struct Memory {
    horizon_ms: i64,
    // (ts, event_id) in ts order; the entry at index i has the number `first + i`
    // (wrapping: fewer than 2^32 entries are ever held at once).
    log: VecDeque<(i64, Str)>,
    first: u32,
    // The number of each id's entry in `log`; an entry of an id remembered again since is
    // stale and found by no number.
    index: HashTable<u32>,
    // (event_id, ts) of the ids kept aside, by the same hash as `index`'s.
    late: HashTable<(Str, i64)>,
    // (ts, event_id) of `late`, due first on top; an entry no longer in `late` is stale.
    late_expiry: BinaryHeap<Reverse<(i64, Str)>>,
    hasher: Hasher,
}

impl Memory {
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            horizon_ms,
            log: VecDeque::new(),
            first: 0,
            index: HashTable::new(),
            late: HashTable::new(),
            late_expiry: BinaryHeap::new(),
            hasher: Hasher::default(),
        }
    }

    fn hash(&self, event_id: &str) -> u64 {
        self.hasher.hash_one(event_id)
    }

    fn log_entry(log: &VecDeque<(i64, Str)>, first: u32, number: u32) -> &(i64, Str) {
        &log[number.wrapping_sub(first) as usize]
    }

    pub fn is_duplicate(&self, event_id: &str, stream_time: Option<i64>) -> bool {
        match self.ts_of(event_id) {
            None => false,
            Some(ts) => stream_time.is_none_or(|now| now <= ts + self.horizon_ms),
        }
    }

    pub fn remember(&mut self, event_id: Str, ts: i64) {
        let hash = self.hash(&event_id);
        let (log, first) = (&self.log, self.first);
        let logged = |n: &u32| Self::log_entry(log, first, *n).1 == event_id;
        if let Ok(found) = self.index.find_entry(hash, logged) {
            found.remove();
        } else if let Ok(found) = self.late.find_entry(hash, |(id, _)| *id == event_id) {
            found.remove();
        }
        let hasher = &self.hasher;
        if self.log.back().is_some_and(|(last, _)| ts < *last) {
            self.late_expiry.push(Reverse((ts, event_id.clone())));
            self.late
                .insert_unique(hash, (event_id, ts), |(id, _)| hasher.hash_one(id.as_str()));
            return;
        }
        let number = self.first.wrapping_add(self.log.len() as u32);
        self.log.push_back((ts, event_id));
        let (log, first) = (&self.log, self.first);
        self.index.insert_unique(hash, number, |n| {
            hasher.hash_one(Self::log_entry(log, first, *n).1.as_str())
        });
    }

    /// Drop ids whose memory ran out, in (ts, event_id) order: every id whose
    /// ts + horizon < stream_time (an older entry of an id remembered again is stale).
    pub fn forget_expired(&mut self, stream_time: i64) -> Vec<Str> {
        let cutoff = stream_time.saturating_sub(self.horizon_ms);
        let mut gone = Vec::new();
        while self.log.front().is_some_and(|(ts, _)| *ts < cutoff) {
            let number = self.first;
            let (ts, event_id) = self.log.pop_front().expect("checked");
            self.first = self.first.wrapping_add(1);
            let hash = self.hash(&event_id);
            if let Ok(found) = self.index.find_entry(hash, |n| *n == number) {
                found.remove();
                gone.push((ts, event_id));
            }
        }
        while self
            .late_expiry
            .peek()
            .is_some_and(|Reverse((ts, _))| *ts < cutoff)
        {
            let Reverse((ts, event_id)) = self.late_expiry.pop().expect("checked");
            let hash = self.hash(&event_id);
            let held = |(id, at): &(Str, i64)| *at == ts && *id == event_id;
            if let Ok(found) = self.late.find_entry(hash, held) {
                found.remove();
                gone.push((ts, event_id));
            }
        }
        if gone.len() > 1 {
            gone.sort();
        }
        gone.into_iter().map(|(_, event_id)| event_id).collect()
    }

    /// Every id remembered with its ts: those of the log in ts order first.
    pub fn entries(&self) -> impl Iterator<Item = (&Str, i64)> {
        let live = self.log.iter().enumerate().filter(|(i, (_, event_id))| {
            let number = self.first.wrapping_add(*i as u32);
            self.index
                .find(self.hash(event_id), |n| *n == number)
                .is_some()
        });
        live.map(|(_, (ts, event_id))| (event_id, *ts))
            .chain(self.late.iter().map(|(event_id, ts)| (event_id, *ts)))
    }

    pub fn ts_of(&self, event_id: &str) -> Option<i64> {
        let hash = self.hash(event_id);
        let (log, first) = (&self.log, self.first);
        let logged = |n: &u32| Self::log_entry(log, first, *n).1.as_str() == event_id;
        match self.index.find(hash, logged) {
            Some(number) => Some(Self::log_entry(log, first, *number).0),
            None => self
                .late
                .find(hash, |(id, _)| id.as_str() == event_id)
                .map(|(_, ts)| *ts),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len() + self.late.len()
    }
}

/// dedupe.EventIdMemory: the same memory for the validating stage and the tests.
#[pyclass(name = "EventIdMemory", module = "stream_app._engine")]
pub struct PyEventIdMemory {
    pub memory: Memory,
}

#[pymethods]
impl PyEventIdMemory {
    #[new]
    fn new(horizon_ms: i64) -> Self {
        Self {
            memory: Memory::new(horizon_ms),
        }
    }
    fn __len__(&self) -> usize {
        self.memory.len()
    }
    fn __contains__(&self, event_id: &str) -> bool {
        self.memory.ts_of(event_id).is_some()
    }
    #[pyo3(signature = (event_id, stream_time))]
    fn is_duplicate(&self, event_id: &str, stream_time: Option<i64>) -> bool {
        self.memory.is_duplicate(event_id, stream_time)
    }
    fn remember(&mut self, event_id: &str, ts: i64) {
        self.memory.remember(s(event_id), ts)
    }
    fn forget_expired(&mut self, stream_time: i64) -> Vec<String> {
        self.memory
            .forget_expired(stream_time)
            .iter()
            .map(|id| id.to_string())
            .collect()
    }
    fn ts_of(&self, event_id: &str) -> Option<i64> {
        self.memory.ts_of(event_id)
    }
}
