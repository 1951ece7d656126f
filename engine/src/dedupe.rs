//! Which event_ids were already processed, remembered for the attribution window.

use pyo3::prelude::*;

use crate::expiry::ExpiryQueue;
use crate::util::{s, Map, Str};

/// Remembers each accepted event_id with its ts until stream time passes ts + horizon.
/// Whether an id is still remembered is decided from stream time at the moment of the
/// check, not from when clean-up last ran, so results never depend on batch boundaries.
pub struct Memory {
    horizon_ms: i64,
    seen: Map<Str, i64>,
    expiry: ExpiryQueue<Str>,
}

impl Memory {
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            horizon_ms,
            seen: Map::default(),
            expiry: ExpiryQueue::default(),
        }
    }

    pub fn is_duplicate(&self, event_id: &str, stream_time: Option<i64>) -> bool {
        match self.seen.get(event_id) {
            None => false,
            Some(ts) => stream_time.is_none_or(|now| now <= ts + self.horizon_ms),
        }
    }

    pub fn remember(&mut self, event_id: Str, ts: i64) {
        self.seen.insert(event_id.clone(), ts);
        self.expiry.push(ts, event_id);
    }

    /// Drop ids whose memory ran out, in (ts, event_id) order: every id whose
    /// ts + horizon < stream_time (an older entry of an id remembered again is stale).
    pub fn forget_expired(&mut self, stream_time: i64) -> Vec<Str> {
        let mut gone = Vec::new();
        for (ts, event_id) in self
            .expiry
            .take_due(stream_time.saturating_sub(self.horizon_ms))
        {
            if self.seen.get(&event_id) == Some(&ts) {
                self.seen.remove(&event_id);
                gone.push(event_id);
            }
        }
        gone
    }

    pub fn ids(&self) -> impl Iterator<Item = &Str> {
        self.seen.keys()
    }

    pub fn ts_of(&self, event_id: &str) -> Option<i64> {
        self.seen.get(event_id).copied()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
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
        self.memory.seen.contains_key(event_id)
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
