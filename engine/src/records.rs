//! The rates and KPI topics' records of the board, as the bytes domain/board.py's
//! `WindowRecord` makes them: its `topic_key`, and `fastjson.dumps` (orjson) of its
//! `as_json` with the figures of domain/rates.py. Building them here spares a Python dict,
//! its floats and strings per record.
//!
//! A figure beyond 2^53 is left to the Python record: its ratios are then Python's exactly
//! rounded integer divisions, and beyond 64 bits its JSON is the standard library's.

use crate::cohorts::{CAMPAIGN, CHANNEL_SEGMENT, PURCHASES};
use crate::util::push_int;

const MICROS_PER_UNIT: f64 = 1_000_000.0;
// Every integer up to this magnitude is exactly a float (and so are sums of two of them
// up to 2^53), so that a / b is the correctly rounded quotient Python's int division gives.
const EXACT_LIMIT: u128 = 1 << 52;
// fastjson.dumps writes a float in positional notation when its decimal exponent lies
// within these (orjson's choice), and as `<digits>e<sign><exponent>` otherwise.
const POSITIONAL_EXPONENTS: std::ops::RangeInclusive<i32> = -5..=15;

/// A benchmark band scale (domain/bands.py's `BandScale`): `bounds[i]` is the lower bound
/// of `names[i + 1]`.
pub struct BandScale {
    pub names: Vec<String>,
    pub bounds: Vec<f64>,
}

impl BandScale {
    fn band(&self, rate: Option<f64>) -> Option<&str> {
        // bisect_right: the number of bounds at or below the rate.
        rate.map(|rate| self.names[self.bounds.partition_point(|b| *b <= rate)].as_str())
    }
}

pub struct Bands {
    pub campaign: BandScale,
    pub loyalty: BandScale,
}

/// One record due, borrowed from the board.
pub struct Due<'a> {
    pub view: &'a str,
    pub label: &'a str,
    pub start: i64,
    pub end: i64,
    pub key: (&'a str, &'a str),
    pub vector: &'a [i128],
    pub is_final: bool,
}

/// The record's topic key and JSON value, or None when a figure is beyond what is encoded
/// here exactly (see the module's comment) or the view is unknown. `emitted_at` is the
/// records' emitted_at as `push_rfc3339` writes it.
pub fn encode(due: &Due<'_>, bands: &Bands, emitted_at: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if due.vector.iter().any(|v| v.unsigned_abs() > EXACT_LIMIT) {
        return None;
    }
    let view = crate::cohorts::view_index(due.view)?;
    let (first, second) = match view {
        CHANNEL_SEGMENT => ("channel", "segment"),
        CAMPAIGN => ("campaign_type", "product_line"),
        PURCHASES => ("loyalty", "product_line"),
        _ => return None,
    };
    let mut start = Vec::with_capacity(24);
    push_rfc3339(&mut start, due.start);
    // Room for the longest record (purchases, with long texts) without growing.
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    if view != CHANNEL_SEGMENT {
        out.extend_from_slice(b"\"view\":");
        push_str(&mut out, due.view);
        out.push(b',');
    }
    out.extend_from_slice(b"\"window\":");
    push_str(&mut out, due.label);
    out.extend_from_slice(b",\"window_start\":\"");
    out.extend_from_slice(&start);
    out.extend_from_slice(b"\",\"window_end\":\"");
    push_rfc3339(&mut out, due.end);
    out.extend_from_slice(b"\",");
    push_name(&mut out, first);
    push_str(&mut out, due.key.0);
    out.push(b',');
    push_name(&mut out, second);
    push_str(&mut out, due.key.1);
    if view == PURCHASES {
        let scale = if due.key.0 == "member" {
            &bands.loyalty
        } else {
            &bands.campaign
        };
        purchase_figures(&mut out, due.vector, scale)?;
    } else {
        offer_figures(&mut out, due.vector, &bands.campaign)?;
    }
    out.extend_from_slice(b",\"final\":");
    out.extend_from_slice(if due.is_final { b"true" } else { b"false" });
    out.extend_from_slice(b",\"emitted_at\":\"");
    out.extend_from_slice(emitted_at);
    out.extend_from_slice(b"\"}");

    let mut key = Vec::with_capacity(64);
    if view != CHANNEL_SEGMENT {
        push_key_value(&mut key, due.view);
        key.push(b'|');
    }
    push_key_value(&mut key, due.label);
    key.push(b'|');
    key.extend_from_slice(&start);
    key.push(b'|');
    push_key_value(&mut key, due.key.0);
    key.push(b'|');
    push_key_value(&mut key, due.key.1);
    Some((key, out))
}

/// rates.py's `figures` of an offers view: offers, conversions, revenue_micros,
/// customers_targeted, customers_upsold.
fn offer_figures(out: &mut Vec<u8>, vector: &[i128], scale: &BandScale) -> Option<()> {
    let &[offers, conversions, revenue_micros, targeted, upsold] = vector else {
        return None;
    };
    let rate = ratio(conversions as f64, offers as f64);
    push_field_int(out, "offers", offers);
    push_field_int(out, "conversions", conversions);
    push_field_float(out, "rate", rate);
    push_field_float(
        out,
        "revenue",
        Some(revenue_micros as f64 / MICROS_PER_UNIT),
    );
    push_field_int(out, "customers_targeted", targeted);
    push_field_int(out, "customers_upsold", upsold);
    push_field_float(out, "customer_rate", ratio(upsold as f64, targeted as f64));
    push_field_band(out, scale.band(rate));
    Some(())
}

/// rates.py's `_purchase_figures`: upsell_purchases, other_purchases,
/// upsell_amount_micros, other_amount_micros, buyers_any, buyers_upsell.
fn purchase_figures(out: &mut Vec<u8>, vector: &[i128], scale: &BandScale) -> Option<()> {
    let &[upsell, other, upsell_micros, other_micros, buyers, upsell_buyers] = vector else {
        return None;
    };
    let upsell_amount = upsell_micros as f64 / MICROS_PER_UNIT;
    let other_amount = other_micros as f64 / MICROS_PER_UNIT;
    let upsell_mean = ratio(upsell_amount, upsell as f64);
    let other_mean = ratio(other_amount, other as f64);
    let rate = ratio(upsell as f64, (upsell + other) as f64);
    push_field_int(out, "purchases", upsell + other);
    push_field_int(out, "upsell_purchases", upsell);
    push_field_int(out, "other_purchases", other);
    push_field_float(out, "amount", Some(upsell_amount + other_amount));
    push_field_float(out, "upsell_amount", Some(upsell_amount));
    push_field_float(out, "other_amount", Some(other_amount));
    push_field_float(out, "transaction_rate", rate);
    push_field_float(
        out,
        "revenue_share",
        ratio(upsell_amount, upsell_amount + other_amount),
    );
    push_field_float(
        out,
        "aov_uplift",
        upsell_mean.zip(other_mean).map(|(u, o)| u - o),
    );
    push_field_int(out, "buyers", buyers);
    push_field_int(out, "upsell_buyers", upsell_buyers);
    push_field_float(
        out,
        "buyer_rate",
        ratio(upsell_buyers as f64, buyers as f64),
    );
    push_field_band(out, scale.band(rate));
    Some(())
}

/// rates.py's `ratio`: None while the denominator is 0.
fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator != 0.0).then(|| numerator / denominator)
}

/// `"name":` of a field that follows another one.
fn push_field_name(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    push_name(out, name);
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_field_int(out: &mut Vec<u8>, name: &str, value: i128) {
    push_field_name(out, name);
    push_int(out, value);
}

fn push_field_float(out: &mut Vec<u8>, name: &str, value: Option<f64>) {
    push_field_name(out, name);
    match value {
        Some(value) => push_float(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_field_band(out: &mut Vec<u8>, band: Option<&str>) {
    push_field_name(out, "band");
    match band {
        Some(band) => push_str(out, band),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as orjson writes it (UTF-8 as it is; quote, backslash and control
/// characters escaped): serde_json's escapes are the same.
fn push_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a string always encodes");
}

/// A finite float as orjson writes it: the shortest digits that read back as the same
/// float, positional within POSITIONAL_EXPONENTS ("0.00001", "100.0") and as "1.5e-6" or
/// "1e+16" beyond.
pub fn push_float(out: &mut Vec<u8>, value: f64) {
    let mut buffer = zmij::Buffer::new();
    let shortest = buffer.format_finite(value);
    let (negative, shortest) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exponent) = match shortest.bytes().position(|b| b == b'e' || b == b'E') {
        Some(at) => (
            &shortest[..at],
            shortest[at + 1..].parse::<i32>().unwrap_or(0),
        ),
        None => (shortest, 0),
    };
    // The value is 0.<digits> x 10^point.
    let integer_digits = mantissa
        .bytes()
        .position(|b| b == b'.')
        .unwrap_or(mantissa.len()) as i32;
    let all: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let leading = all.iter().take_while(|d| **d == b'0').count();
    let digits = &all[leading..];
    let digits = &digits[..digits.len() - digits.iter().rev().take_while(|d| **d == b'0').count()];
    if negative {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.extend_from_slice(b"0.0");
        return;
    }
    let point = integer_digits + exponent - leading as i32;
    let decimal_exponent = point - 1;
    if POSITIONAL_EXPONENTS.contains(&decimal_exponent) {
        let length = digits.len() as i32;
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(digits);
        } else if point >= length {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', (point - length) as usize));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[point as usize..]);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if decimal_exponent < 0 { b'-' } else { b'+' });
        push_int(out, decimal_exponent.unsigned_abs());
    }
}

/// topic_keys.py's `encode_value`: `%` as `%25`, then `|` as `%7C`.
fn push_key_value(out: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'%' => out.extend_from_slice(b"%25"),
            b'|' => out.extend_from_slice(b"%7C"),
            _ => out.push(byte),
        }
    }
}

/// windows.py's `rfc3339`: "2026-11-22T10:15:00.000Z", with ISO 8601's expanded year
/// beyond years 0-9999 ("+10000-...", "-0001-..."), into `out`.
pub fn push_rfc3339(out: &mut Vec<u8>, ms: i64) {
    let ms = ms as i128;
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (seconds, milli) = (rest / 1000, rest % 1000);
    let (minutes, second) = (seconds / 60, seconds % 60);
    let (hour, minute) = (minutes / 60, minutes % 60);
    if year > 9999 {
        out.push(b'+');
        push_int(out, year);
    } else {
        if year < 0 {
            out.push(b'-');
        }
        push_padded(out, year.unsigned_abs(), 4);
    }
    for (separator, value) in [
        (b'-', month),
        (b'-', day),
        (b'T', hour),
        (b':', minute),
        (b':', second),
    ] {
        out.push(separator);
        push_padded(out, value as u128, 2);
    }
    out.push(b'.');
    push_padded(out, milli as u128, 3);
    out.push(b'Z');
}

/// `value` with leading zeros to `width` digits at least (format!'s `{:0width$}`).
fn push_padded(out: &mut Vec<u8>, value: u128, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value);
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits.as_bytes());
}

/// windows.py's `civil_from_days` (Howard Hinnant's algorithm), with Python's floor
/// division.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}
