//! The validating stage's batch: a fetched batch's values accepted in one call (parse.rs
//! decides what is valid beyond doubt), each accepted event kept compiled with the
//! events-by-customer partition of its customer, and encoded as the internal topic's item
//! (forwarding.py's format) once its stamp is known. What parse.rs leaves goes to
//! events.py's rules, which decide every rejection; an event they accept becomes an
//! `Accepted` too (`accepted_of`).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::dedupe::PyEventIdMemory;
use crate::merge::{PyEventTimeMerge, ReleasedSource};

use crate::events::{event_from_py, event_to_py, Event, OFFER_TAG, PURCHASE_TAG};
use crate::parse::{offer, purchase};

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, aiokafka's and kafka-python's too).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the default partitioner gives a key among `partitions`.
fn partition_of(key: &[u8], partitions: i64) -> PyResult<i64> {
    if partitions <= 0 {
        return Err(PyValueError::new_err("partitions must be positive"));
    }
    Ok(i64::from(murmur2(key) & 0x7fff_ffff) % partitions)
}

/// An accepted event, compiled, with its customer's events-by-customer partition.
#[pyclass(frozen, name = "Accepted", module = "stream_app._engine")]
pub struct PyAccepted {
    pub event: Event,
    partition: i64,
}

impl PyAccepted {
    fn new(event: Event, partitions: i64) -> PyResult<Self> {
        let partition = partition_of(customer_id(&event).as_bytes(), partitions)?;
        Ok(Self { event, partition })
    }
}

fn customer_id(event: &Event) -> &str {
    match event {
        Event::Offer(o) => &o.customer_id,
        Event::Purchase(p) => &p.customer_id,
    }
}

#[pymethods]
impl PyAccepted {
    #[getter]
    fn event_id(&self) -> &str {
        self.event.event_id()
    }

    #[getter]
    fn ts(&self) -> i64 {
        self.event.ts()
    }

    /// The record key on the events-by-customer topic: the customer id.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, customer_id(&self.event).as_bytes())
    }

    /// The events-by-customer partition of its customer (murmur2 of the key).
    #[getter]
    fn partition(&self) -> i64 {
        self.partition
    }

    /// The events.Offer or events.Purchase.
    fn event<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        event_to_py(py, &self.event)
    }

    /// The internal topic's item of this event from that source offset, with the stamp
    /// before it (forwarding.encode_forwarded's format).
    fn item<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        partition: i64,
        offset: i64,
        stamp: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(
            py,
            &self.encode_item(topic, partition, offset, stamp)?,
        ))
    }
}

impl PyAccepted {
    /// `item`, as bytes.
    fn encode_item(
        &self,
        topic: &str,
        partition: i64,
        offset: i64,
        stamp: Option<i64>,
    ) -> PyResult<Vec<u8>> {
        // fastjson.py's mark of an integer beyond 64 bits, which its reader keeps exact.
        let mut encoded = match &self.event {
            Event::Purchase(p) if i64::try_from(p.amount_micros).is_err() => b" ".to_vec(),
            _ => Vec::with_capacity(256),
        };
        let written = match &self.event {
            Event::Offer(o) => serde_json::to_writer(
                &mut encoded,
                &(
                    topic,
                    partition,
                    offset,
                    stamp,
                    (
                        OFFER_TAG,
                        &*o.event_id,
                        &*o.offer_id,
                        &*o.customer_id,
                        &*o.channel,
                        &*o.segment,
                        o.ts,
                        o.campaign_id.as_deref(),
                        o.campaign_type.as_deref(),
                        o.product_line.as_deref(),
                        o.loyalty_member,
                        o.offered_price.get(),
                    ),
                ),
            ),
            Event::Purchase(p) => serde_json::to_writer(
                &mut encoded,
                &(
                    topic,
                    partition,
                    offset,
                    stamp,
                    (
                        PURCHASE_TAG,
                        &*p.event_id,
                        &*p.order_id,
                        &*p.customer_id,
                        p.ts,
                        p.amount_micros,
                        p.offer_id.as_deref(),
                        p.is_upsell,
                        p.product_line.as_deref(),
                        p.loyalty_member,
                    ),
                ),
            ),
        };
        written.map_err(|error| PyValueError::new_err(format!("an item not encoded: {error}")))?;
        Ok(encoded)
    }
}

/// Per value of a fetched batch (offers or purchases): its `Accepted` if valid beyond
/// doubt, else None (events.py's rules decide). `partitions`: of the events-by-customer
/// topic.
#[pyfunction]
#[pyo3(signature = (values, offers, latest_ts, partitions))]
pub fn accept_batch<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    offers: bool,
    latest_ts: Option<i64>,
    partitions: i64,
) -> PyResult<Bound<'py, PyList>> {
    let mut accepted: Vec<Option<PyAccepted>> = Vec::with_capacity(values.len());
    for value in values.iter() {
        let Ok(raw) = value.cast::<PyBytes>() else {
            accepted.push(None); // no value: the rules reject it
            continue;
        };
        let raw = raw.as_bytes();
        let event = if offers {
            offer(raw, latest_ts).map(|o| Event::Offer(Arc::new(o)))
        } else {
            purchase(raw, latest_ts).map(|p| Event::Purchase(Arc::new(p)))
        };
        accepted.push(match event {
            None => None,
            Some(event) => Some(PyAccepted::new(event, partitions)?),
        });
    }
    PyList::new(py, accepted)
}

/// The `Accepted` of an events.Offer or events.Purchase (one events.py's rules accepted).
#[pyfunction]
pub fn accepted_of(event: &Bound<'_, PyAny>, partitions: i64) -> PyResult<PyAccepted> {
    PyAccepted::new(event_from_py(event)?, partitions)
}

/// The partition the default partitioner gives a key among `partitions` (murmur2).
#[pyfunction]
pub fn key_partition(key: &[u8], partitions: i64) -> PyResult<i64> {
    partition_of(key, partitions)
}

/// The validating stage's pass over the records `merge` releases (its `release` with
/// `behind`, `now` and `quiet`; validate.py), in order: each `Accepted` of source
/// `(topic, partition)` at `offset` is encoded as the internal topic's item with the stream
/// time before it (`stamp`), then handed over in process (appended to `handed[partition]`)
/// when `handing` maps its source to its customer's partition, else made
/// `output(topic_events, key, item)`; an event not seen before (`forwarded_ids`) moves the
/// stamp to its ts. Any other payload is a rejection `(record, invalid)`:
/// `reject(topic, partition, record, invalid)` gives its outputs. Returns the outputs in
/// order and the stamp after the last event.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    merge, behind, now, quiet, stamp, forwarded_ids, handing, topic_events, output, handed, reject
))]
pub fn forward_released<'py>(
    py: Python<'py>,
    merge: &Bound<'py, PyEventTimeMerge>,
    behind: &Bound<'py, PyAny>,
    now: f64,
    quiet: &Bound<'py, PyAny>,
    mut stamp: Option<i64>,
    forwarded_ids: &Bound<'py, PyEventIdMemory>,
    handing: &Bound<'py, PyDict>,
    topic_events: &Bound<'py, PyString>,
    output: &Bound<'py, PyAny>,
    handed: &Bound<'py, PyDict>,
    reject: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyList>, Option<i64>)> {
    let released = merge
        .borrow_mut()
        .release_records(py, behind, now, Some(quiet))?;
    let outputs = PyList::empty(py);
    let mut memory = forwarded_ids.borrow_mut();
    for (source, offset, payload) in released.records {
        let ReleasedSource {
            source,
            topic,
            partition,
        } = &released.sources[source];
        let partition = *partition;
        let Ok(accepted) = payload.cast::<PyAccepted>() else {
            let (record, invalid): (Bound<'py, PyAny>, Bound<'py, PyAny>) = payload.extract()?;
            for made in reject
                .call1((topic, partition, record, invalid))?
                .try_iter()?
            {
                outputs.append(made?)?;
            }
            continue;
        };
        let event = accepted.get();
        let handed_to = if handing.is_empty() {
            None
        } else {
            match handing.get_item(source)? {
                Some(to) if to.extract::<i64>()? == event.partition => Some(event.partition),
                _ => None,
            }
        };
        match handed_to {
            None => {
                let item = event.encode_item(topic.to_str()?, partition, offset, stamp)?;
                let key = PyBytes::new(py, customer_id(&event.event).as_bytes());
                outputs.append(output.call1((topic_events, key, PyBytes::new(py, &item)))?)?;
            }
            Some(to) => {
                let items = match handed.get_item(to)? {
                    Some(items) => items.cast_into::<PyList>()?,
                    None => {
                        let items = PyList::empty(py);
                        handed.set_item(to, &items)?;
                        items
                    }
                };
                items.append((topic, partition, offset, stamp, &payload))?;
            }
        }
        let ts = event.event.ts();
        if memory.memory.is_duplicate(event.event.event_id(), stamp) {
            continue;
        }
        memory.memory.remember(event.event.event_id().clone(), ts);
        if stamp.is_none_or(|now| ts > now) {
            stamp = Some(ts);
        }
    }
    Ok((outputs, stamp))
}
