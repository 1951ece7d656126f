//! A bound on the label values of each dimension (labels.py has the why): each partition
//! admits at most `limit` values per dimension; any other value counts under `__other__`,
//! and an admitted value leaves once unused for the attribution window of stream time.

use pyo3::prelude::*;
use pyo3::types::PyFrozenSet;
use std::sync::Arc;

use crate::events::{event_from_py, event_to_py, Event, Offer, Purchase};
use crate::util::{s, OrderedMap, OrderedSet, Str};

pub const OTHER: &str = "__other__";
pub const ALL: &str = "__all__";
pub const MAX_LABEL_CHARS: usize = 200;
pub const REFRESH_DIVISOR: i64 = 8;
pub const DIMENSIONS: [&str; 4] = ["channel", "segment", "campaign_type", "product_line"];
pub const CHANNEL: usize = 0;
pub const SEGMENT: usize = 1;
pub const CAMPAIGN_TYPE: usize = 2;
pub const PRODUCT_LINE: usize = 3;

pub struct LabelCap {
    pub limit: usize,
    pub expire_ms: i64,
    refresh_ms: i64,
    // Per dimension: value -> recorded last use, oldest first.
    admitted: [OrderedMap<Str, i64>; 4],
    next_expiry: Option<i64>,
    changed: OrderedSet<(usize, Str)>,
    clock: Option<i64>,
    other: Str,
}

impl LabelCap {
    pub fn new(limit: usize, expire_ms: i64) -> Self {
        Self {
            limit,
            expire_ms,
            refresh_ms: expire_ms.div_euclid(REFRESH_DIVISOR),
            admitted: Default::default(),
            next_expiry: None,
            changed: OrderedSet::default(),
            clock: None,
            other: s(OTHER),
        }
    }

    pub fn dimension_index(name: &str) -> Option<usize> {
        DIMENSIONS.iter().position(|d| *d == name)
    }

    pub fn admitted(&self, dimension: usize) -> impl Iterator<Item = &Str> {
        self.admitted[dimension].keys()
    }

    /// The label `value` counts under at stream time `now` (never decreasing): itself if
    /// admitted (or room is left), else None, meaning OTHER.
    pub fn label(&mut self, dimension: usize, value: &Str, now: i64) -> bool {
        if matches!(self.next_expiry, Some(next) if now > next) {
            self.expire(now);
        }
        if let Some(&last_use) = self.admitted[dimension].get(value) {
            if now - last_use >= self.refresh_ms && now != last_use {
                self.admitted[dimension].shift_remove(value);
                self.record(dimension, value.clone(), now);
            }
            return true;
        }
        if self.admitted[dimension].len() >= self.limit
            || value.chars().count() > MAX_LABEL_CHARS
            || value.as_str() == ALL
            || value.as_str() == OTHER
        {
            return false;
        }
        self.record(dimension, value.clone(), now);
        true
    }

    fn record(&mut self, dimension: usize, value: Str, now: i64) {
        self.admitted[dimension].insert(value.clone(), now);
        self.changed.insert((dimension, value));
        if self.next_expiry.is_none() {
            self.next_expiry = Some(now + self.expire_ms + self.refresh_ms);
        }
    }

    pub fn forget_unused(&mut self, stream_time: Option<i64>) {
        if let (Some(now), Some(next)) = (stream_time, self.next_expiry) {
            if now > next {
                self.expire(now);
            }
        }
    }

    fn expire(&mut self, now: i64) {
        let mut oldest_kept: Option<i64> = None;
        for dimension in 0..DIMENSIONS.len() {
            while let Some((value, &last_use)) = self.admitted[dimension].first() {
                if now <= last_use + self.expire_ms + self.refresh_ms {
                    oldest_kept = Some(oldest_kept.map_or(last_use, |o| o.min(last_use)));
                    break;
                }
                let value = value.clone();
                self.admitted[dimension].shift_remove_index(0);
                self.changed.insert((dimension, value));
            }
        }
        self.next_expiry = oldest_kept.map(|o| o + self.expire_ms + self.refresh_ms);
    }

    fn capped(
        &mut self,
        dimension: usize,
        value: &Option<Str>,
        now: i64,
        overflowed: &mut Vec<usize>,
    ) -> Option<Str> {
        let value = value.as_ref()?;
        if self.label(dimension, value, now) {
            Some(value.clone())
        } else {
            overflowed.push(dimension);
            Some(self.other.clone())
        }
    }

    /// The event with its dimension values capped, and the dimensions that overflowed;
    /// `stream_time` is the stream time before the event.
    pub fn cap(&mut self, event: Event, stream_time: Option<i64>) -> (Event, Vec<usize>) {
        let mut overflowed = Vec::new();
        let mut now = event.ts();
        for moment in [stream_time, self.clock].into_iter().flatten() {
            if moment > now {
                now = moment;
            }
        }
        self.clock = Some(now);
        match event {
            Event::Offer(offer) => {
                let channel =
                    self.capped(CHANNEL, &Some(offer.channel.clone()), now, &mut overflowed);
                let segment =
                    self.capped(SEGMENT, &Some(offer.segment.clone()), now, &mut overflowed);
                let campaign_type =
                    self.capped(CAMPAIGN_TYPE, &offer.campaign_type, now, &mut overflowed);
                let product_line =
                    self.capped(PRODUCT_LINE, &offer.product_line, now, &mut overflowed);
                if overflowed.is_empty() {
                    return (Event::Offer(offer), overflowed);
                }
                let capped = Offer {
                    channel: channel.expect("present"),
                    segment: segment.expect("present"),
                    campaign_type,
                    product_line,
                    ..(*offer).clone()
                };
                (Event::Offer(Arc::new(capped)), overflowed)
            }
            Event::Purchase(purchase) => {
                let product_line =
                    self.capped(PRODUCT_LINE, &purchase.product_line, now, &mut overflowed);
                if overflowed.is_empty() {
                    return (Event::Purchase(purchase), overflowed);
                }
                let capped = Purchase {
                    product_line,
                    ..(*purchase).clone()
                };
                (Event::Purchase(Arc::new(capped)), overflowed)
            }
        }
    }

    /// (dimension, value, recorded last use or None once it left) of the values admitted,
    /// used or gone since the last call.
    pub fn take_changes(&mut self) -> Vec<(usize, Str, Option<i64>)> {
        let changes = self
            .changed
            .iter()
            .map(|(d, v)| (*d, v.clone(), self.admitted[*d].get(v).copied()))
            .collect();
        self.changed.clear();
        changes
    }

    /// (dimension, value, recorded last use) of every admitted value.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &Str, i64)> {
        self.admitted
            .iter()
            .enumerate()
            .flat_map(|(d, admitted)| admitted.iter().map(move |(v, at)| (d, v, *at)))
    }

    /// Values and their recorded last use as `take_changes` gave them, in any order.
    pub fn restore(&mut self, mut entries: Vec<(String, Str, i64)>) {
        entries.sort_by_key(|entry| entry.2);
        for (dimension, value, last_use) in entries {
            let Some(d) = Self::dimension_index(&dimension) else {
                continue;
            };
            self.admitted[d].insert(value, last_use);
            self.clock = Some(self.clock.map_or(last_use, |c| c.max(last_use)));
            let expiry = last_use + self.expire_ms + self.refresh_ms;
            if self.next_expiry.is_none_or(|next| expiry < next) {
                self.next_expiry = Some(expiry);
            }
        }
    }
}

fn dimension_of(name: &str) -> PyResult<usize> {
    LabelCap::dimension_index(name)
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
}

/// labels.LabelCap, for the tests that drive the cap alone.
#[pyclass(name = "LabelCap", module = "stream_app._engine")]
pub struct PyLabelCap {
    cap: LabelCap,
}

#[pymethods]
impl PyLabelCap {
    #[new]
    fn new(limit: usize, expire_ms: i64) -> Self {
        Self {
            cap: LabelCap::new(limit, expire_ms),
        }
    }
    #[getter]
    fn limit(&self) -> usize {
        self.cap.limit
    }
    #[getter]
    fn expire_ms(&self) -> i64 {
        self.cap.expire_ms
    }
    fn admitted<'py>(&self, py: Python<'py>, dimension: &str) -> PyResult<Bound<'py, PyFrozenSet>> {
        let d = dimension_of(dimension)?;
        PyFrozenSet::new(py, self.cap.admitted(d).map(|v| v.as_str()))
    }
    fn label(&mut self, dimension: &str, value: &str, now: i64) -> PyResult<Option<String>> {
        let d = dimension_of(dimension)?;
        Ok(self.cap.label(d, &s(value), now).then(|| value.to_owned()))
    }
    #[pyo3(signature = (stream_time))]
    fn forget_unused(&mut self, stream_time: Option<i64>) {
        self.cap.forget_unused(stream_time)
    }
    #[pyo3(signature = (event, stream_time))]
    fn cap<'py>(
        &mut self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        stream_time: Option<i64>,
    ) -> PyResult<(Bound<'py, PyAny>, Vec<&'static str>)> {
        let (capped, overflowed) = self.cap.cap(event_from_py(event)?, stream_time);
        let dimensions = overflowed.iter().map(|d| DIMENSIONS[*d]).collect();
        if overflowed.is_empty() {
            return Ok((event.clone(), dimensions));
        }
        Ok((event_to_py(py, &capped)?, dimensions))
    }
    fn take_changes(&mut self) -> Vec<(&'static str, String, Option<i64>)> {
        self.cap
            .take_changes()
            .into_iter()
            .map(|(d, v, last_use)| (DIMENSIONS[d], v.to_string(), last_use))
            .collect()
    }
    fn restore(&mut self, entries: Vec<(String, String, i64)>) {
        self.cap
            .restore(entries.into_iter().map(|(d, v, t)| (d, s(&v), t)).collect())
    }
}
