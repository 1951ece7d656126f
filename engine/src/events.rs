//! The two events as the core holds them, their rows (codec.py's format, on the internal
//! topic and in stored state) and the internal topic's items (forwarding.py's format).

use std::fmt;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyType};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};

use crate::packed::{
    pack_i128, pack_int, pack_list_header, pack_opt_bool, pack_opt_float, pack_opt_text, pack_text,
    Reader,
};
use crate::util::{int_of, int_to_py, s, Str};

#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub event_id: Str,
    pub offer_id: Str,
    pub customer_id: Str,
    pub channel: Str,
    pub segment: Str,
    pub ts: i64,
    pub campaign_id: Option<Str>,
    pub campaign_type: Option<Str>,
    pub product_line: Option<Str>,
    pub loyalty_member: Option<bool>,
    pub offered_price: Price,
}

/// An offer's optional price in 12 bytes, aligned to 4 (an `Option<f64>` takes 16): an
/// open offer's allocation is a size class smaller for it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, packed(4))]
pub struct Price {
    value: f64,
    present: bool,
}

impl Price {
    pub fn get(self) -> Option<f64> {
        let (value, present) = (self.value, self.present);
        present.then_some(value)
    }
}

impl From<Option<f64>> for Price {
    fn from(price: Option<f64>) -> Self {
        Self {
            value: price.unwrap_or(0.0),
            present: price.is_some(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Purchase {
    pub event_id: Str,
    pub order_id: Str,
    pub customer_id: Str,
    pub ts: i64,
    pub amount_micros: i128,
    pub offer_id: Option<Str>,
    pub is_upsell: bool,
    pub product_line: Option<Str>,
    pub loyalty_member: Option<bool>,
}

#[derive(Clone, Debug)]
pub enum Event {
    Offer(Arc<Offer>),
    Purchase(Arc<Purchase>),
}

impl Event {
    pub fn event_id(&self) -> &Str {
        match self {
            Event::Offer(o) => &o.event_id,
            Event::Purchase(p) => &p.event_id,
        }
    }
    pub fn ts(&self) -> i64 {
        match self {
            Event::Offer(o) => o.ts,
            Event::Purchase(p) => p.ts,
        }
    }
}

pub const OFFER_TAG: &str = "o";
pub const PURCHASE_TAG: &str = "p";

// -- rows as Python objects (stored state) -------------------------------------------------

fn opt_str<'py>(py: Python<'py>, value: &Option<Str>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        None => py.None().into_bound(py),
        Some(text) => text.as_str().into_pyobject(py)?.into_any(),
    })
}

fn opt_bool<'py>(py: Python<'py>, value: Option<bool>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        None => py.None().into_bound(py),
        Some(b) => b.into_pyobject(py)?.to_owned().into_any(),
    })
}

pub fn offer_row<'py>(py: Python<'py>, o: &Offer) -> PyResult<Bound<'py, PyList>> {
    let items: [Bound<'py, PyAny>; 12] = [
        OFFER_TAG.into_pyobject(py)?.into_any(),
        o.event_id.as_str().into_pyobject(py)?.into_any(),
        o.offer_id.as_str().into_pyobject(py)?.into_any(),
        o.customer_id.as_str().into_pyobject(py)?.into_any(),
        o.channel.as_str().into_pyobject(py)?.into_any(),
        o.segment.as_str().into_pyobject(py)?.into_any(),
        o.ts.into_pyobject(py)?.into_any(),
        opt_str(py, &o.campaign_id)?,
        opt_str(py, &o.campaign_type)?,
        opt_str(py, &o.product_line)?,
        opt_bool(py, o.loyalty_member)?,
        match o.offered_price.get() {
            None => py.None().into_bound(py),
            Some(price) => price.into_pyobject(py)?.into_any(),
        },
    ];
    PyList::new(py, items)
}

/// `offer_row`, encoded (packed.rs).
pub fn pack_offer_row(out: &mut Vec<u8>, o: &Offer) {
    pack_list_header(out, 12);
    pack_text(out, OFFER_TAG);
    pack_text(out, &o.event_id);
    pack_text(out, &o.offer_id);
    pack_text(out, &o.customer_id);
    pack_text(out, &o.channel);
    pack_text(out, &o.segment);
    pack_int(out, o.ts);
    pack_opt_text(out, o.campaign_id.as_deref());
    pack_opt_text(out, o.campaign_type.as_deref());
    pack_opt_text(out, o.product_line.as_deref());
    pack_opt_bool(out, o.loyalty_member);
    pack_opt_float(out, o.offered_price.get());
}

/// An offer `pack_offer_row` wrote.
pub fn offer_from_packed(reader: &mut Reader<'_>) -> PyResult<Offer> {
    if reader.list_len()? != 12 || reader.text()? != OFFER_TAG {
        return Err(PyValueError::new_err("stored row is not an offer"));
    }
    Ok(Offer {
        event_id: s(reader.text()?),
        offer_id: s(reader.text()?),
        customer_id: s(reader.text()?),
        channel: s(reader.text()?),
        segment: s(reader.text()?),
        ts: reader.int()?,
        campaign_id: reader.opt_text()?.map(s),
        campaign_type: reader.opt_text()?.map(s),
        product_line: reader.opt_text()?.map(s),
        loyalty_member: reader.opt_bool()?,
        offered_price: reader.opt_float()?.into(),
    })
}

/// `purchase_row`, encoded (packed.rs).
pub fn pack_purchase_row(out: &mut Vec<u8>, p: &Purchase) {
    pack_list_header(out, 10);
    pack_text(out, PURCHASE_TAG);
    pack_text(out, &p.event_id);
    pack_text(out, &p.order_id);
    pack_text(out, &p.customer_id);
    pack_int(out, p.ts);
    pack_i128(out, p.amount_micros);
    pack_opt_text(out, p.offer_id.as_deref());
    pack_opt_bool(out, Some(p.is_upsell));
    pack_opt_text(out, p.product_line.as_deref());
    pack_opt_bool(out, p.loyalty_member);
}

pub fn purchase_row<'py>(py: Python<'py>, p: &Purchase) -> PyResult<Bound<'py, PyList>> {
    let items: [Bound<'py, PyAny>; 10] = [
        PURCHASE_TAG.into_pyobject(py)?.into_any(),
        p.event_id.as_str().into_pyobject(py)?.into_any(),
        p.order_id.as_str().into_pyobject(py)?.into_any(),
        p.customer_id.as_str().into_pyobject(py)?.into_any(),
        p.ts.into_pyobject(py)?.into_any(),
        int_to_py(py, p.amount_micros)?,
        opt_str(py, &p.offer_id)?,
        p.is_upsell.into_pyobject(py)?.to_owned().into_any(),
        opt_str(py, &p.product_line)?,
        opt_bool(py, p.loyalty_member)?,
    ];
    PyList::new(py, items)
}

fn text_at(row: &Bound<'_, PyList>, i: usize) -> PyResult<Str> {
    Ok(s(&row.get_item(i)?.extract::<String>()?))
}

fn opt_text_at(row: &Bound<'_, PyList>, i: usize) -> PyResult<Option<Str>> {
    if i >= row.len() {
        return Ok(None);
    }
    let item = row.get_item(i)?;
    if item.is_none() {
        Ok(None)
    } else {
        Ok(Some(s(&item.extract::<String>()?)))
    }
}

fn opt_at<'py, T: for<'a> FromPyObject<'a, 'py>>(
    row: &Bound<'py, PyList>,
    i: usize,
) -> PyResult<Option<T>> {
    if i >= row.len() {
        return Ok(None);
    }
    let item = row.get_item(i)?;
    if item.is_none() {
        Ok(None)
    } else {
        item.extract::<T>().map(Some).map_err(Into::into)
    }
}

/// A row written by `offer_row`/`purchase_row` (or codec.event_to_row), as stored.
pub fn event_from_row(row: &Bound<'_, PyAny>) -> PyResult<Event> {
    let row = row.cast::<PyList>()?;
    let tag: String = row.get_item(0)?.extract()?;
    if tag == OFFER_TAG {
        Ok(Event::Offer(Arc::new(Offer {
            event_id: text_at(row, 1)?,
            offer_id: text_at(row, 2)?,
            customer_id: text_at(row, 3)?,
            channel: text_at(row, 4)?,
            segment: text_at(row, 5)?,
            ts: row.get_item(6)?.extract()?,
            campaign_id: opt_text_at(row, 7)?,
            campaign_type: opt_text_at(row, 8)?,
            product_line: opt_text_at(row, 9)?,
            loyalty_member: opt_at::<bool>(row, 10)?,
            offered_price: opt_at::<f64>(row, 11)?.into(),
        })))
    } else {
        Ok(Event::Purchase(Arc::new(Purchase {
            event_id: text_at(row, 1)?,
            order_id: text_at(row, 2)?,
            customer_id: text_at(row, 3)?,
            ts: row.get_item(4)?.extract()?,
            amount_micros: int_of(&row.get_item(5)?)?,
            offer_id: opt_text_at(row, 6)?,
            is_upsell: opt_at::<bool>(row, 7)?.unwrap_or(false),
            product_line: opt_text_at(row, 8)?,
            loyalty_member: opt_at::<bool>(row, 9)?,
        })))
    }
}

// -- Python's Offer and Purchase (events.py) ---------------------------------------------

static OFFER_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PURCHASE_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn attr_text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Str> {
    Ok(s(&obj.getattr(name)?.extract::<String>()?))
}

fn attr_opt_text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Str>> {
    let value = obj.getattr(name)?;
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(s(&value.extract::<String>()?)))
    }
}

/// An events.Offer or events.Purchase.
pub fn event_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Event> {
    let py = obj.py();
    let offer_class = OFFER_CLASS.import(py, "stream_app.domain.events", "Offer")?;
    if obj.is_instance(offer_class)? {
        Ok(Event::Offer(Arc::new(Offer {
            event_id: attr_text(obj, "event_id")?,
            offer_id: attr_text(obj, "offer_id")?,
            customer_id: attr_text(obj, "customer_id")?,
            channel: attr_text(obj, "channel")?,
            segment: attr_text(obj, "segment")?,
            ts: obj.getattr("ts")?.extract()?,
            campaign_id: attr_opt_text(obj, "campaign_id")?,
            campaign_type: attr_opt_text(obj, "campaign_type")?,
            product_line: attr_opt_text(obj, "product_line")?,
            loyalty_member: obj.getattr("loyalty_member")?.extract()?,
            offered_price: obj
                .getattr("offered_price")?
                .extract::<Option<f64>>()?
                .into(),
        })))
    } else {
        Ok(Event::Purchase(Arc::new(Purchase {
            event_id: attr_text(obj, "event_id")?,
            order_id: attr_text(obj, "order_id")?,
            customer_id: attr_text(obj, "customer_id")?,
            ts: obj.getattr("ts")?.extract()?,
            amount_micros: int_of(&obj.getattr("amount_micros")?)?,
            offer_id: attr_opt_text(obj, "offer_id")?,
            is_upsell: obj.getattr("is_upsell")?.extract()?,
            product_line: attr_opt_text(obj, "product_line")?,
            loyalty_member: obj.getattr("loyalty_member")?.extract()?,
        })))
    }
}

/// The events.Offer or events.Purchase of an event.
pub fn event_to_py<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyAny>> {
    match event {
        Event::Offer(o) => {
            let class = OFFER_CLASS.import(py, "stream_app.domain.events", "Offer")?;
            let row = offer_row(py, o)?;
            class.call1(row.get_slice(1, 12).to_tuple())
        }
        Event::Purchase(p) => {
            let class = PURCHASE_CLASS.import(py, "stream_app.domain.events", "Purchase")?;
            let row = purchase_row(py, p)?;
            class.call1(row.get_slice(1, 10).to_tuple())
        }
    }
}

// -- the internal topic's items ------------------------------------------------------------

/// `[source_topic, source_partition, source_offset, stamp, payload]`: payload is an event
/// row, a reject's reason, or null for a tick.
#[derive(Debug)]
pub struct Item {
    pub source_topic: Str,
    pub source_partition: i64,
    pub source_offset: i64,
    pub stamp: Option<i64>,
    pub payload: Payload,
}

#[derive(Debug)]
pub enum Payload {
    Event(Event),
    Reject(String),
    Tick,
}

pub fn decode_item(raw: &[u8]) -> PyResult<Item> {
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let item = deserializer
        .deserialize_seq(ItemVisitor)
        .and_then(|item| deserializer.end().map(|_| item))
        .map_err(|error| {
            PyValueError::new_err(format!("an internal topic record is not an item: {error}"))
        })?;
    Ok(item)
}

fn missing<E: de::Error>(what: &str) -> E {
    E::custom(format!("{what} is missing"))
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an internal topic item")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        let source_topic = next_text(&mut seq, "topic")?;
        let source_partition: i64 = seq.next_element()?.ok_or_else(|| missing("partition"))?;
        let source_offset: i64 = seq.next_element()?.ok_or_else(|| missing("offset"))?;
        let stamp: Option<i64> = seq.next_element()?.ok_or_else(|| missing("stamp"))?;
        let payload = seq
            .next_element_seed(PayloadSeed)?
            .ok_or_else(|| missing("payload"))?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item {
            source_topic,
            source_partition,
            source_offset,
            stamp,
            payload,
        })
    }
}

struct PayloadSeed;

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload, D::Error> {
        d.deserialize_any(PayloadVisitor)
    }
}

struct PayloadVisitor;

fn next<'de, A: SeqAccess<'de>, T: serde::Deserialize<'de>>(
    seq: &mut A,
    what: &str,
) -> Result<T, A::Error> {
    seq.next_element()?.ok_or_else(|| missing(what))
}

/// A JSON string read straight into a shared string (one allocation, none in between).
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Str, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
        Ok(s(v))
    }
}

/// A JSON string or null.
struct OptTextSeed;

impl<'de> DeserializeSeed<'de> for OptTextSeed {
    type Value = Option<Str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Str>, D::Error> {
        d.deserialize_option(OptTextVisitor)
    }
}

struct OptTextVisitor;

impl<'de> Visitor<'de> for OptTextVisitor {
    type Value = Option<Str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Str>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Str>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Str>, D::Error> {
        d.deserialize_str(TextVisitor).map(Some)
    }
}

fn next_text<'de, A: SeqAccess<'de>>(seq: &mut A, what: &str) -> Result<Str, A::Error> {
    seq.next_element_seed(TextSeed)?
        .ok_or_else(|| missing(what))
}

fn next_opt_text<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Str>, A::Error> {
    Ok(seq.next_element_seed(OptTextSeed)?.flatten())
}

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event row, a reason or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Payload, E> {
        Ok(Payload::Tick)
    }
    fn visit_none<E: de::Error>(self) -> Result<Payload, E> {
        Ok(Payload::Tick)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Payload, E> {
        Ok(Payload::Reject(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Payload, E> {
        Ok(Payload::Reject(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let tag = next_text(&mut seq, "tag")?;
        let event = if tag.as_str() == OFFER_TAG {
            Event::Offer(Arc::new(Offer {
                event_id: next_text(&mut seq, "event_id")?,
                offer_id: next_text(&mut seq, "offer_id")?,
                customer_id: next_text(&mut seq, "customer_id")?,
                channel: next_text(&mut seq, "channel")?,
                segment: next_text(&mut seq, "segment")?,
                ts: next(&mut seq, "ts")?,
                campaign_id: next_opt_text(&mut seq)?,
                campaign_type: next_opt_text(&mut seq)?,
                product_line: next_opt_text(&mut seq)?,
                loyalty_member: seq.next_element::<Option<bool>>()?.flatten(),
                offered_price: seq.next_element::<Option<f64>>()?.flatten().into(),
            }))
        } else {
            Event::Purchase(Arc::new(Purchase {
                event_id: next_text(&mut seq, "event_id")?,
                order_id: next_text(&mut seq, "order_id")?,
                customer_id: next_text(&mut seq, "customer_id")?,
                ts: next(&mut seq, "ts")?,
                amount_micros: next(&mut seq, "amount_micros")?,
                offer_id: next_opt_text(&mut seq)?,
                is_upsell: seq
                    .next_element::<Option<bool>>()?
                    .flatten()
                    .unwrap_or(false),
                product_line: next_opt_text(&mut seq)?,
                loyalty_member: seq.next_element::<Option<bool>>()?.flatten(),
            }))
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Payload::Event(event))
    }
}
