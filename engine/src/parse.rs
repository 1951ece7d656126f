//! The compiled acceptance of input events: a message that is valid beyond doubt becomes
//! its events.Offer or events.Purchase here; anything else (every message to reject, and
//! the rare valid one in a form this does not read, such as a ts with a seconds offset)
//! is left to events.py's rules, which decide every rejection with its reason and detail.
//! What is accepted here is exactly what those rules accept, with the same values.

use pyo3::prelude::*;
use std::fmt;

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::events::{event_to_py, Event, Offer, Purchase};
use crate::util::{s, Str};
use std::sync::Arc;

const MAX_VALUE_CHARS: usize = 256;
const MIN_TS_MS: i64 = -62_135_596_800_000;
const MAX_TS_MS: i64 = 253_402_300_799_999;
const MAX_NUMBER: f64 = 1e15;
// A top-level float this large sends the document to the standard library (events.py).
const LARGEST_EXACT: f64 = 9.2e18;

/// A field's value as acceptance reads it: text borrowed from the document unless it holds
/// escapes (one allocation per accepted text, in the event); arrays and objects are read
/// whole, as ever, but kept as nothing (no field of an event is one).
enum Field<'de> {
    Null,
    Bool(bool),
    Number(Number),
    Text(Cow<'de, str>),
    Nested,
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field<'de>, E> {
        // As serde_json's Value reads it.
        Ok(Number::from_f64(v).map_or(Field::Null, Field::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Field::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<String, Value>()?.is_some() {}
        Ok(Field::Nested)
    }
}

/// A JSON object's fields in document order; a repeated name means its last value, as in
/// Python's json (a handful of fields: a search beats building a map).
struct Fields<'de>(Vec<(Cow<'de, str>, Field<'de>)>);

impl<'de> Fields<'de> {
    fn get(&self, name: &str) -> Option<&Field<'de>> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// An object's key, borrowed from the document unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(FieldVisitor)? {
            Field::Text(text) => Ok(Key(text)),
            _ => Err(de::Error::custom("a key is not a string")),
        }
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, Field<'de>>()? {
            fields.push((key, value));
        }
        Ok(Fields(fields))
    }
}

/// The fields of a JSON object, unless the document needs events.py's reading.
fn object(raw: &[u8]) -> Option<Fields<'_>> {
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let fields = deserializer.deserialize_any(FieldsVisitor).ok()?;
    deserializer.end().ok()?;
    for (_, value) in &fields.0 {
        if let Field::Number(n) = value {
            if n.is_f64()
                && !n
                    .as_f64()
                    .is_some_and(|f| -LARGEST_EXACT < f && f < LARGEST_EXACT)
            {
                return None;
            }
        }
    }
    Some(fields)
}

/// A present, non-null value.
fn present<'a, 'de>(fields: &'a Fields<'de>, name: &str) -> Option<&'a Field<'de>> {
    fields.get(name).filter(|v| !matches!(v, Field::Null))
}

fn text(value: &Field<'_>) -> Option<Str> {
    let Field::Text(text) = value else {
        return None;
    };
    (text.chars().count() <= MAX_VALUE_CHARS).then(|| s(text))
}

fn required_text(fields: &Fields<'_>, name: &str) -> Option<Str> {
    text(present(fields, name)?).filter(|t| !t.is_empty())
}

/// Absent or null: Some(None); a valid value: Some(Some(..)); anything else: None.
fn optional<T>(
    fields: &Fields<'_>,
    name: &str,
    read: impl Fn(&Field<'_>) -> Option<T>,
) -> Option<Option<T>> {
    match present(fields, name) {
        None => Some(None),
        Some(value) => read(value).map(Some),
    }
}

fn boolean(value: &Field<'_>) -> Option<bool> {
    match value {
        Field::Bool(b) => Some(*b),
        _ => None,
    }
}

/// A number within (-1e15, 1e15), as a float.
fn number(value: &Field<'_>) -> Option<f64> {
    let Field::Number(n) = value else { return None };
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() < 1_000_000_000_000_000).then_some(i as f64);
    }
    if n.is_u64() {
        return None;
    }
    n.as_f64().filter(|f| -MAX_NUMBER < *f && *f < MAX_NUMBER)
}

fn ts(fields: &Fields<'_>, latest_ts: Option<i64>) -> Option<i64> {
    let ms = match present(fields, "ts")? {
        Field::Number(n) => n
            .as_i64()
            .filter(|ms| (MIN_TS_MS..=MAX_TS_MS).contains(ms))?,
        Field::Text(text) => rfc3339_ms(text)?,
        _ => return None,
    };
    match latest_ts {
        Some(latest) if ms > latest => None,
        _ => Some(ms),
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,6}](Z|z|+HH:MM|-HH:MM)` in epoch ms (sub-ms digits
/// truncate towards the past); any other form is left to events.py.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=month_days[month as usize - 1]).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&count) {
            return None;
        }
        micros = digits(&rest[1..=count])? * 10_i64.pow(6 - count as u32);
        rest = &rest[1 + count..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let ms = (seconds * 1_000_000 + micros).div_euclid(1000);
    (MIN_TS_MS..=MAX_TS_MS).contains(&ms).then_some(ms)
}

pub fn offer(raw: &[u8], latest_ts: Option<i64>) -> Option<Offer> {
    let fields = object(raw)?;
    let offered_price = optional(&fields, "offered_price", number)?;
    if offered_price.is_some_and(|p| p < 0.0) {
        return None;
    }
    Some(Offer {
        event_id: required_text(&fields, "event_id")?,
        offer_id: required_text(&fields, "offer_id")?,
        customer_id: required_text(&fields, "customer_id")?,
        channel: required_text(&fields, "channel")?,
        segment: required_text(&fields, "segment")?,
        ts: ts(&fields, latest_ts)?,
        campaign_id: optional(&fields, "campaign_id", text)?,
        campaign_type: optional(&fields, "campaign_type", text)?,
        product_line: optional(&fields, "product_line", text)?,
        loyalty_member: optional(&fields, "loyalty_member", boolean)?,
        offered_price: offered_price.into(),
    })
}

pub fn purchase(raw: &[u8], latest_ts: Option<i64>) -> Option<Purchase> {
    let fields = object(raw)?;
    let amount = number(present(&fields, "amount")?)?;
    if amount < 0.0 {
        return None;
    }
    let offer_id = optional(&fields, "offer_id", text)?;
    let is_upsell = optional(&fields, "is_upsell", boolean)?.unwrap_or(offer_id.is_some());
    Some(Purchase {
        event_id: required_text(&fields, "event_id")?,
        order_id: required_text(&fields, "order_id")?,
        customer_id: required_text(&fields, "customer_id")?,
        ts: ts(&fields, latest_ts)?,
        // Python's round(): half to even.
        amount_micros: (amount * 1_000_000.0).round_ties_even() as i128,
        offer_id,
        is_upsell,
        product_line: optional(&fields, "product_line", text)?,
        loyalty_member: optional(&fields, "loyalty_member", boolean)?,
    })
}

/// The events.Offer of a message valid beyond doubt; None leaves it to events.py.
#[pyfunction]
#[pyo3(signature = (raw, latest_ts=None))]
pub fn accept_offer<'py>(
    py: Python<'py>,
    raw: &[u8],
    latest_ts: Option<i64>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match offer(raw, latest_ts) {
        None => Ok(None),
        Some(o) => event_to_py(py, &Event::Offer(Arc::new(o))).map(Some),
    }
}

/// The events.Purchase of a message valid beyond doubt; None leaves it to events.py.
#[pyfunction]
#[pyo3(signature = (raw, latest_ts=None))]
pub fn accept_purchase<'py>(
    py: Python<'py>,
    raw: &[u8],
    latest_ts: Option<i64>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match purchase(raw, latest_ts) {
        None => Ok(None),
        Some(p) => event_to_py(py, &Event::Purchase(Arc::new(p))).map(Some),
    }
}
