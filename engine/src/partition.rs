//! The state of one partition of customers (partition.py's module text has the why):
//! dedupe, stream time, attribution, counts; its partials and its store entries.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PyString};

use crate::accept::PyAccepted;
use crate::attribution::{Attribution, Conversion, Labels, OpenOffer, PendingId};
use crate::cohorts::{
    cells_to_py, encode_partials, partials_to_py, view_index, Key, Slot, WindowCounts, CAMPAIGN,
    CHANNEL_SEGMENT, OFFER_VIEWS, PURCHASES,
};
use crate::dedupe::Memory;
use crate::events::{
    decode_item, event_from_row, offer_from_packed, pack_offer_row, pack_purchase_row, Event, Item,
    Offer, Payload, Purchase,
};
use crate::labels::{LabelCap, DIMENSIONS};
use crate::packed::{
    chunk_entries, entries_to_dict, entries_to_list, pack_dict_header, pack_i128, pack_int,
    pack_list_header, pack_opt_int, pack_opt_text, pack_text, pack_texts, unpack, ChunkWriter,
    Discard, EntrySink, PackedEntries, Reader, Stored,
};
use crate::util::{
    int_of, int_to_py, items, json_key, s, window_start, Interner, Map, OrderedMap, OrderedSet,
    Part, Str,
};
use crate::window_rules::WindowRules;

const META_KEY: &str = "m";
const DEDUPE: &str = "e|";
const OFFER: &str = "o|";
const PENDING: &str = "p|";

/// The arrival of an item handed over in process, which has no internal-topic offset. Only
/// input partition p hands items to events partition p, so its source offset is unique
/// among them, and it is the same when the input is read again after a restart; moved
/// below every topic offset (those are at least 0), the two never meet.
fn handed_arrival(source_offset: i64) -> i64 {
    i64::MIN / 2 + source_offset
}
const UNDECIDED: &str = "k|";
const WINDOW: &str = "w|";
const LABEL: &str = "l|";

const NONE: &str = "__none__";

// Totals, in partition.py's TOTALS order.
const TOTAL_NAMES: [&str; 12] = [
    "offers",
    "conversions",
    "revenue_micros",
    "campaign_offers",
    "campaign_conversions",
    "campaign_revenue_micros",
    "purchases",
    "purchase_amount_micros",
    "rejected",
    "late",
    "duplicates",
    "label_overflow",
];
const OFFERS_TOTAL: usize = 0;
const CONVERSIONS_TOTAL: usize = 1;
const REVENUE_TOTAL: usize = 2;
const CAMPAIGN_OFFERS_TOTAL: usize = 3;
const CAMPAIGN_CONVERSIONS_TOTAL: usize = 4;
const CAMPAIGN_REVENUE_TOTAL: usize = 5;
const PURCHASES_TOTAL: usize = 6;
const PURCHASE_AMOUNT_TOTAL: usize = 7;
const REJECTED_TOTAL: usize = 8;
const LATE_TOTAL: usize = 9;
const DUPLICATES_TOTAL: usize = 10;
const LABEL_OVERFLOW_TOTAL: usize = 11;

// Fields of the views (cohorts.rs SUM_FIELDS / DISTINCT_FIELDS).
const OFFERS: usize = 0;
const CONVERSIONS: usize = 1;
const REVENUE: usize = 2;
const TARGETED: usize = 0;
const UPSOLD: usize = 1;
const BUYERS_ANY: usize = 0;
const BUYERS_UPSELL: usize = 1;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Upsell,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Upsell => "upsell",
            Kind::Other => "other",
        }
    }
    // (purchases field, amount field, distinct buyers fields) in the purchases view.
    fn fields(self) -> (usize, usize, &'static [usize]) {
        match self {
            Kind::Upsell => (0, 2, &[BUYERS_ANY, BUYERS_UPSELL]),
            Kind::Other => (1, 3, &[BUYERS_ANY]),
        }
    }
}

#[derive(Clone)]
pub struct Config {
    rules: WindowRules,
    max_label_values: usize,
}

/// The stream time at which a decision due once stream time passes `due` was taken, for
/// stream time that moved from `since` to `now` through every value in between.
fn due_moment(due: Option<i64>, since: Option<i64>, now: Option<i64>) -> Option<i64> {
    let (Some(due), Some(now)) = (due, now) else {
        return now;
    };
    let mut moment = due + 1;
    if let Some(since) = since {
        moment = moment.max(since);
    }
    Some(moment.min(now))
}

fn dim(value: &Option<Str>, none: &Str) -> Str {
    value.clone().unwrap_or_else(|| none.clone())
}

type Counter = OrderedMap<Vec<Str>, i128>;

pub struct Partition {
    config: Config,
    pub stream_time: Option<i64>,
    pub next_offset: i64,
    totals: [Counter; 12],
    watermarks: OrderedMap<(Str, i64), i64>,
    memory: Memory,
    attribution: Attribution,
    counts: WindowCounts,
    labels: LabelCap,
    // Purchases that name an offer not here yet and are not upsells by themselves.
    undecided: Map<PendingId, Labels>,
    changed_undecided: OrderedSet<PendingId>,
    remembered: OrderedSet<Str>,
    // The label tuples in use, one shared copy each.
    label_tuples: Map<Vec<Str>, Labels>,
    interned: Interner,
    none: Str,
}

impl Partition {
    fn new(config: Config) -> Self {
        Self {
            memory: Memory::new(config.rules.attribution_ms),
            attribution: Attribution::new(config.rules.attribution_ms, config.rules.grace_ms),
            labels: LabelCap::new(config.max_label_values, config.rules.attribution_ms),
            config,
            stream_time: None,
            next_offset: 0,
            totals: Default::default(),
            watermarks: OrderedMap::default(),
            counts: WindowCounts::default(),
            undecided: Map::default(),
            changed_undecided: OrderedSet::default(),
            remembered: OrderedSet::default(),
            label_tuples: Map::default(),
            interned: Interner::default(),
            none: s(NONE),
        }
    }

    fn shared_labels(&mut self, labels: Vec<Str>) -> Labels {
        if let Some(shared) = self.label_tuples.get(&labels) {
            return shared.clone();
        }
        let shared: Labels = Arc::new(labels.iter().cloned().collect());
        self.label_tuples.insert(labels, shared.clone());
        shared
    }

    fn add(&mut self, total: usize, key: &[Str], amount: i128) {
        match self.totals[total].get_mut(key) {
            Some(n) => *n += amount,
            None => {
                self.totals[total].insert(key.to_vec(), amount);
            }
        }
    }

    /// Apply one item of the internal topic read at `offset`.
    fn apply(&mut self, item: Item, offset: i64) {
        if offset < self.next_offset {
            return;
        }
        self.next_offset = offset + 1;
        self.apply_item(item, offset);
    }

    /// Apply one item, whichever way it came: read from the internal topic or handed over
    /// in process by the validating stage (an item's source offset makes it count once).
    /// `arrival` tells apart copies of one event_id waiting at once (see `PendingId`): the
    /// internal topic's offset, or `handed_arrival` of an item handed over.
    fn apply_item(&mut self, item: Item, arrival: i64) {
        let event = match item.payload {
            Payload::Tick => {
                self.advance(item.stamp);
                return;
            }
            Payload::Reject(reason) => Err(reason),
            Payload::Event(event) => Ok(event),
        };
        let source = (item.source_topic, item.source_partition);
        if self
            .watermarks
            .get(&source)
            .is_some_and(|mark| item.source_offset <= *mark)
        {
            return; // the validating stage sent this again after a restart
        }
        let topic = source.0.clone();
        self.watermarks.insert(source, item.source_offset);
        let event = match event {
            Err(reason) => {
                let reason = if reason.is_empty() {
                    "unknown".to_owned()
                } else {
                    reason
                };
                self.add(REJECTED_TOTAL, &[topic, s(&reason)], 1);
                return;
            }
            Ok(event) => event,
        };
        self.advance(item.stamp);
        if self.memory.is_duplicate(event.event_id(), self.stream_time) {
            self.add(DUPLICATES_TOTAL, &[topic], 1);
            return;
        }
        self.memory.remember(event.event_id().clone(), event.ts());
        self.remembered.insert(event.event_id().clone());
        // Before anything is counted: totals, windows and kept events see labels only.
        let (event, overflowed) = self.labels.cap(event, self.stream_time);
        let event = self.intern(event);
        for dimension in overflowed {
            self.add(LABEL_OVERFLOW_TOTAL, &[s(DIMENSIONS[dimension])], 1);
        }
        let windows = self.open_windows(event.ts());
        if windows.len() < self.config.rules.sizes.len() {
            self.add(LATE_TOTAL, &[topic], 1);
        }
        // What came due before this event is decided first, as if everything had arrived
        // in order, whether or not another event happened to arrive in between.
        self.advance(Some(event.ts()));
        match event {
            Event::Offer(offer) => self.present(offer, &windows),
            Event::Purchase(purchase) => self.purchase(purchase, &windows, arrival),
        }
        // A purchase that arrived after its ts + grace is due at once: as of now.
        self.settle(self.stream_time);
    }

    /// The event with its repeating values shared with earlier events'.
    fn intern(&mut self, event: Event) -> Event {
        let interned = &mut self.interned;
        match event {
            Event::Offer(o) => Event::Offer(Arc::new(Offer {
                customer_id: interned.get(&o.customer_id),
                channel: interned.get(&o.channel),
                segment: interned.get(&o.segment),
                campaign_id: interned.get_opt(&o.campaign_id),
                campaign_type: interned.get_opt(&o.campaign_type),
                product_line: interned.get_opt(&o.product_line),
                ..(*o).clone()
            })),
            Event::Purchase(p) => Event::Purchase(Arc::new(Purchase {
                customer_id: interned.get(&p.customer_id),
                product_line: interned.get_opt(&p.product_line),
                ..(*p).clone()
            })),
        }
    }

    fn offer_keys(&self, offer: &Offer) -> (Key, Key) {
        (
            (offer.channel.clone(), offer.segment.clone()),
            (
                dim(&offer.campaign_type, &self.none),
                dim(&offer.product_line, &self.none),
            ),
        )
    }

    fn present(&mut self, offer: Arc<Offer>, windows: &[(Str, i64)]) {
        let (pair, campaign) = self.offer_keys(&offer);
        self.add(OFFERS_TOTAL, &[pair.0.clone(), pair.1.clone()], 1);
        self.add(
            CAMPAIGN_OFFERS_TOTAL,
            &[campaign.0.clone(), campaign.1.clone()],
            1,
        );
        for (view, key) in [(CHANNEL_SEGMENT, &pair), (CAMPAIGN, &campaign)] {
            for (label, start) in windows {
                let slot = Slot {
                    view,
                    label: label.clone(),
                    start: *start,
                };
                self.counts
                    .count(&slot, key, &[(OFFERS, 1)], &[TARGETED], &offer.customer_id);
            }
        }
        let labels = self.shared_labels(windows.iter().map(|(l, _)| l.clone()).collect());
        let conversions = self.attribution.add_offer(offer, labels);
        self.count(conversions, self.stream_time);
    }

    fn purchase(&mut self, purchase: Arc<Purchase>, windows: &[(Str, i64)], offset: i64) {
        let (conversions, waiting) = self.attribution.add_purchase(&purchase, offset);
        let labels = self.shared_labels(windows.iter().map(|(l, _)| l.clone()).collect());
        let now = self.stream_time;
        if purchase.is_upsell || !conversions.is_empty() {
            self.count_purchase(&purchase, &labels, Kind::Upsell, now);
        } else if let Some(id) = waiting {
            self.changed_undecided.insert(id.clone());
            self.undecided.insert(id, labels);
        } else {
            self.count_purchase(&purchase, &labels, Kind::Other, now);
        }
        self.count(conversions, now);
    }

    fn purchase_key(&self, purchase: &Purchase) -> Key {
        let loyalty = match purchase.loyalty_member {
            None => "unknown",
            Some(true) => "member",
            Some(false) => "non_member",
        };
        (s(loyalty), dim(&purchase.product_line, &self.none))
    }

    fn count_purchase(
        &mut self,
        purchase: &Purchase,
        labels: &Labels,
        kind: Kind,
        decided_at: Option<i64>,
    ) {
        let key = self.purchase_key(purchase);
        let (purchases, amount, buyers) = kind.fields();
        let total_key = [s(kind.name()), key.0.clone(), key.1.clone()];
        self.add(PURCHASES_TOTAL, &total_key, 1);
        self.add(PURCHASE_AMOUNT_TOTAL, &total_key, purchase.amount_micros);
        for label in labels.iter() {
            let Some(size) = self.config.rules.size_of(label) else {
                continue;
            };
            let start = window_start(purchase.ts, size);
            if self.config.rules.is_final(label, start, decided_at) {
                continue;
            }
            let slot = Slot {
                view: PURCHASES,
                label: label.clone(),
                start,
            };
            self.counts.count(
                &slot,
                &key,
                &[(purchases, 1), (amount, purchase.amount_micros)],
                buyers,
                &purchase.customer_id,
            );
        }
    }

    /// Count conversions decided when stream time was `decided_at`: they change only the
    /// windows that were not final by then.
    fn count(&mut self, conversions: Vec<Conversion>, decided_at: Option<i64>) {
        for conversion in conversions {
            let offer = &conversion.offer;
            let purchase = &conversion.purchase;
            let amount = purchase.amount_micros;
            let (pair, campaign) = self.offer_keys(offer);
            let pair_key = [pair.0.clone(), pair.1.clone()];
            let campaign_key = [campaign.0.clone(), campaign.1.clone()];
            self.add(CONVERSIONS_TOTAL, &pair_key, 1);
            self.add(REVENUE_TOTAL, &pair_key, amount);
            self.add(CAMPAIGN_CONVERSIONS_TOTAL, &campaign_key, 1);
            self.add(CAMPAIGN_REVENUE_TOTAL, &campaign_key, amount);
            for label in conversion.windows.iter() {
                let Some(size) = self.config.rules.size_of(label) else {
                    continue;
                };
                let start = window_start(offer.ts, size);
                if self.config.rules.is_final(label, start, decided_at) {
                    continue;
                }
                for view in OFFER_VIEWS {
                    let key = if view == CHANNEL_SEGMENT {
                        &pair
                    } else {
                        &campaign
                    };
                    let slot = Slot {
                        view,
                        label: label.clone(),
                        start,
                    };
                    self.counts.count(
                        &slot,
                        key,
                        &[(CONVERSIONS, 1), (REVENUE, amount)],
                        &[UPSOLD],
                        &offer.customer_id,
                    );
                }
            }
            let undecided = conversion.pending.as_ref().and_then(|id| {
                let labels = self.undecided.remove(id)?;
                self.changed_undecided.insert(id.clone());
                Some(labels)
            });
            if let Some(labels) = undecided {
                self.count_purchase(purchase, &labels, Kind::Upsell, decided_at);
            }
        }
    }

    fn open_windows(&self, ts: i64) -> Vec<(Str, i64)> {
        let mut windows = Vec::with_capacity(self.config.rules.sizes.len());
        for (label, size) in &self.config.rules.sizes {
            let start = window_start(ts, *size);
            if !self.config.rules.is_closed(start + size, self.stream_time) {
                windows.push((label.clone(), start));
            }
        }
        windows
    }

    fn advance(&mut self, moment: Option<i64>) {
        let Some(moment) = moment else { return };
        if self.stream_time.is_some_and(|now| moment <= now) {
            return;
        }
        let since = self.stream_time.replace(moment);
        self.settle(since);
    }

    /// Decide the last-touch purchases now due and count the purchases that gave up
    /// waiting for their offer as `other`, each as of the stream time at which it fell due
    /// on the way from `since`.
    fn settle(&mut self, since: Option<i64>) {
        let now = self.stream_time;
        for conversion in self.attribution.advance(now) {
            let due = due_moment(conversion.due, since, now);
            self.count(vec![conversion], due);
        }
        for given_up in self.attribution.take_given_up() {
            if let Some(labels) = self.undecided.remove(&given_up.pending) {
                self.changed_undecided.insert(given_up.pending.clone());
                self.count_purchase(
                    &given_up.purchase,
                    &labels,
                    Kind::Other,
                    due_moment(given_up.due, since, now),
                );
            }
        }
    }

    fn forget_expired(&mut self) {
        let Some(now) = self.stream_time else { return };
        for event_id in self.memory.forget_expired(now) {
            self.remembered.insert(event_id);
        }
        for slot in self.counts.windows() {
            if self
                .config
                .rules
                .is_final(&slot.label, slot.start, Some(now))
            {
                self.counts.drop_slot(&slot);
            }
        }
    }

    /// Every entry of the state, as `take_changes` writes them, into `sink` one at a time
    /// (changes not taken yet are taken with it: the snapshot holds them). Nothing but the
    /// encoded entries is made for the whole state.
    fn snapshot_into(&mut self, sink: &mut dyn EntrySink) {
        self.take_changes(&mut Discard);
        for (event_id, ts) in self.memory.entries() {
            sink.put(
                &format!("{DEDUPE}{event_id}"),
                &encoded(|out| pack_int(out, ts)),
            );
        }
        for kept in self.attribution.open_offers() {
            let offer = &kept.offer;
            sink.put(
                &offer_key(&offer.customer_id, &offer.offer_id),
                &packed_kept(&self.attribution, kept),
            );
        }
        for (id, purchase) in self.attribution.pending_purchases() {
            let value = encoded(|out| pack_purchase_row(out, purchase));
            sink.put(&format!("{PENDING}{}", id.key), &value);
        }
        for (id, labels) in &self.undecided {
            let value = encoded(|out| pack_texts(out, labels));
            sink.put(&format!("{UNDECIDED}{}", id.key), &value);
        }
        self.counts.snapshot_into(WINDOW, sink);
        for (dimension, value, last_use) in self.labels.entries() {
            sink.put(
                &label_key(dimension, value),
                &encoded(|out| pack_int(out, last_use)),
            );
        }
        sink.put(META_KEY, &self.packed_meta());
    }

    /// Store entries changed since the last call (None deletes), encoded, into `sink`; and
    /// forget expired state.
    fn take_changes(&mut self, sink: &mut dyn EntrySink) {
        self.forget_expired();
        self.interned.prune();
        let mut value = Vec::with_capacity(256);
        let mut key = String::with_capacity(64);
        for event_id in std::mem::take(&mut self.remembered) {
            let ts = self.memory.ts_of(&event_id);
            let value = ts.map(|ts| {
                value.clear();
                pack_int(&mut value, ts);
                value.as_slice()
            });
            key.clear();
            key.push_str(DEDUPE);
            key.push_str(&event_id);
            sink.put_entry(&key, value);
        }
        let attribution_changes = std::mem::take(&mut self.attribution.changes);
        for (customer_id, offer_id) in attribution_changes.offers {
            let value = self
                .attribution
                .offer(&customer_id, &offer_id)
                .map(|kept| packed_kept(&self.attribution, kept));
            sink.put_entry(&offer_key(&customer_id, &offer_id), value.as_deref());
        }
        for id in attribution_changes.purchases {
            let value = self
                .attribution
                .pending_purchase(&id)
                .map(|purchase| encoded(|out| pack_purchase_row(out, purchase)));
            sink.put_entry(&format!("{PENDING}{}", id.key), value.as_deref());
        }
        for id in std::mem::take(&mut self.changed_undecided) {
            let value = self
                .undecided
                .get(&id)
                .map(|labels| encoded(|out| pack_texts(out, labels)));
            sink.put_entry(&format!("{UNDECIDED}{}", id.key), value.as_deref());
        }
        self.counts.take_changes(WINDOW, sink);
        self.labels.forget_unused(self.stream_time);
        for (dimension, label, last_use) in self.labels.take_changes() {
            let value = last_use.map(|at| {
                value.clear();
                pack_int(&mut value, at);
                value.as_slice()
            });
            sink.put_entry(&label_key(dimension, &label), value);
        }
        sink.put(META_KEY, &self.packed_meta());
    }

    /// `take_changes` as a list of entries.
    fn take_change_entries(&mut self) -> PackedEntries {
        let mut changes = PackedEntries::new();
        self.take_changes(&mut changes);
        changes
    }

    /// The meta entry: input offset, stream time, watermarks and totals, encoded.
    fn packed_meta(&self) -> Vec<u8> {
        let mut meta = Vec::with_capacity(256);
        pack_list_header(&mut meta, 4);
        pack_int(&mut meta, self.next_offset);
        pack_opt_int(&mut meta, self.stream_time);
        pack_list_header(&mut meta, self.watermarks.len());
        for ((topic, partition), offset) in &self.watermarks {
            pack_list_header(&mut meta, 3);
            pack_text(&mut meta, topic);
            pack_int(&mut meta, *partition);
            pack_int(&mut meta, *offset);
        }
        self.pack_totals_row(&mut meta);
        meta
    }

    /// `totals_row`, encoded.
    fn pack_totals_row(&self, out: &mut Vec<u8>) {
        pack_dict_header(out, self.totals.iter().filter(|c| !c.is_empty()).count());
        for (name, counter) in TOTAL_NAMES.iter().zip(&self.totals) {
            if counter.is_empty() {
                continue;
            }
            pack_text(out, name);
            pack_list_header(out, counter.len());
            for (key, n) in counter {
                pack_list_header(out, key.len() + 1);
                for part in key {
                    pack_text(out, part);
                }
                pack_i128(out, *n);
            }
        }
    }

    /// Totals.as_row(): {name: [[*key, n], ...]} of every counter with entries.
    fn totals_row<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let row = PyDict::new(py);
        for (name, counter) in TOTAL_NAMES.iter().zip(&self.totals) {
            if counter.is_empty() {
                continue;
            }
            let entries = PyList::empty(py);
            for (key, n) in counter {
                let entry = PyList::new(py, key.iter().map(|k| k.as_str()))?;
                entry.append(int_to_py(py, *n)?)?;
                entries.append(entry)?;
            }
            row.set_item(*name, entries)?;
        }
        Ok(row)
    }

    /// Rebuild from store entries: a dict of values (bytes: encoded), as `restore` of the
    /// Python face takes them.
    fn restore(config: Config, entries: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = entries.py();
        let mut partition = Partition::new(config);
        if let Some(meta) = entries.get_item(META_KEY)? {
            partition.restore_meta(decoded(meta)?)?;
        }
        let mut labels: Vec<(String, Str, i64)> = Vec::new();
        for (key, value) in entries.iter() {
            if value.is_none() {
                continue;
            }
            let key = key.cast::<PyString>()?;
            let value = match value.cast::<PyBytes>() {
                Ok(raw) => Stored::Packed(raw.as_bytes()),
                Err(_) => Stored::Py(value.clone()),
            };
            partition.restore_entry(py, key.to_str()?, value, &mut labels)?;
        }
        partition.finish_restore(labels);
        Ok(partition)
    }

    /// Rebuild from an older format's entries (decoded) and then the store's chunks in
    /// order (state_store.py), read here without a Python object per entry.
    fn restore_chunks(
        config: Config,
        older: &Bound<'_, PyDict>,
        chunks: &Bound<'_, PyList>,
    ) -> PyResult<Self> {
        let py = older.py();
        let chunks: Vec<Bound<'_, PyBytes>> = chunks
            .iter()
            .map(|chunk| chunk.cast_into::<PyBytes>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?;
        let raw: Vec<&[u8]> = chunks.iter().map(|chunk| chunk.as_bytes()).collect();
        let mut partition = Partition::new(config);
        // The entries a state has most of are decoded without the GIL, so that a worker
        // given several partitions loads them on all its cores (faust_app.py's loads).
        let (merged, rest) = py.detach(|| partition.restore_packed(&raw))?;
        match merged.get(META_KEY) {
            Some(Some(raw)) => partition.restore_meta(unpack(py, raw)?)?,
            Some(None) => {}
            None => {
                if let Some(meta) = older.get_item(META_KEY)? {
                    partition.restore_meta(meta)?;
                }
            }
        }
        let mut labels: Vec<(String, Str, i64)> = Vec::new();
        for (key, value) in older.iter() {
            let key = key.cast::<PyString>()?;
            let key = key.to_str()?;
            if value.is_none() || merged.contains_key(key) {
                continue;
            }
            partition.restore_entry(py, key, Stored::Py(value), &mut labels)?;
        }
        for (key, raw) in rest {
            partition.restore_entry(py, key, Stored::Packed(raw), &mut labels)?;
        }
        partition.finish_restore(labels);
        Ok(partition)
    }

    /// Each key's newest value in the chunks (None: deleted), in the order keys first
    /// came; the entries read straight from their encoding are restored, the others left
    /// for `restore_entry`.
    #[allow(clippy::type_complexity)]
    fn restore_packed<'a>(
        &mut self,
        chunks: &[&'a [u8]],
    ) -> PyResult<(OrderedMap<&'a str, Option<&'a [u8]>>, Vec<(&'a str, &'a [u8])>)> {
        let mut merged: OrderedMap<&str, Option<&[u8]>> = OrderedMap::default();
        for chunk in chunks {
            for (key, value) in chunk_entries(chunk)? {
                merged.insert(key, value);
            }
        }
        let mut rest = Vec::new();
        for (key, value) in &merged {
            if let Some(raw) = value {
                if *key != META_KEY && !self.restore_packed_entry(key, raw)? {
                    rest.push((*key, *raw));
                }
            }
        }
        Ok((merged, rest))
    }

    /// Restore an entry of the kinds a state has most of (duplicate memory, offers,
    /// window counts) straight from its encoding; false for any other kind.
    fn restore_packed_entry(&mut self, key: &str, raw: &[u8]) -> PyResult<bool> {
        let mut reader = Reader::new(raw);
        if let Some(event_id) = key.strip_prefix(DEDUPE) {
            self.memory.remember(s(event_id), reader.int()?);
            return Ok(true);
        }
        if key.starts_with(OFFER) {
            if reader.list_len()? != 3 {
                return Err(PyValueError::new_err(format!("{key} holds no offer")));
            }
            let offer = Arc::new(offer_from_packed(&mut reader)?);
            let mut windows = Vec::new();
            for _ in 0..reader.list_len()? {
                windows.push(s(reader.text()?));
            }
            let converted_by = reader.opt_text()?.map(s);
            self.restore_offer(offer, windows, converted_by);
            return Ok(true);
        }
        if let Some(window_key) = key.strip_prefix(WINDOW) {
            self.counts.restore_stored(window_key, Stored::Packed(raw))?;
            return Ok(true);
        }
        Ok(false)
    }

    fn restore_meta(&mut self, meta: Bound<'_, PyAny>) -> PyResult<()> {
        if !meta.is_none() {
            let meta = items(&meta)?;
            if meta.len() != 4 {
                return Err(PyValueError::new_err("the meta entry is not 4 items"));
            }
            self.next_offset = meta[0].extract()?;
            self.stream_time = meta[1].extract()?;
            for mark in meta[2].try_iter()? {
                let mark = items(&mark?)?;
                let topic: String = mark[0].extract()?;
                self.watermarks
                    .insert((s(&topic), mark[1].extract()?), mark[2].extract()?);
            }
            for (name, rows) in meta[3].cast::<PyDict>()?.iter() {
                let name: String = name.extract()?;
                let Some(total) = TOTAL_NAMES.iter().position(|n| *n == name) else {
                    continue;
                };
                for entry in rows.try_iter()? {
                    let entry = entry?;
                    let entry = entry.cast::<PyList>()?;
                    let n = entry.len();
                    let mut key = Vec::with_capacity(n.saturating_sub(1));
                    for i in 0..n.saturating_sub(1) {
                        key.push(s(&entry.get_item(i)?.extract::<String>()?));
                    }
                    self.totals[total].insert(key, int_of(&entry.get_item(n - 1)?)?);
                }
            }
        }
        Ok(())
    }

    /// Take back one entry (the meta entry aside); label entries are collected into
    /// `labels`, restored together by `finish_restore`.
    fn restore_entry(
        &mut self,
        py: Python<'_>,
        key: &str,
        value: Stored<'_, '_>,
        labels: &mut Vec<(String, Str, i64)>,
    ) -> PyResult<()> {
        if key == META_KEY {
            return Ok(());
        }
        // The entries a state has most of are read straight from their encoding.
        if let Stored::Packed(raw) = value {
            if self.restore_packed_entry(key, raw)? {
                return Ok(());
            }
        }
        let value = match value {
            Stored::Py(value) => value,
            Stored::Packed(raw) => unpack(py, raw)?,
        };
        if let Some(event_id) = key.strip_prefix(DEDUPE) {
            self.memory.remember(s(event_id), value.extract()?);
        } else if key.starts_with(OFFER) {
            let row = value.cast::<PyList>()?;
            let Event::Offer(offer) = event_from_row(&row.get_item(0)?)? else {
                return Err(PyValueError::new_err(format!("{key} holds no offer")));
            };
            let windows: Vec<String> = row.get_item(1)?.extract()?;
            let converted_by: Option<String> = row.get_item(2)?.extract()?;
            self.restore_offer(
                offer,
                windows.iter().map(|w| s(w)).collect(),
                converted_by.map(|c| s(&c)),
            );
        } else if let Some(pending) = key.strip_prefix(PENDING) {
            let Event::Purchase(purchase) = event_from_row(&value)? else {
                return Err(PyValueError::new_err(format!("{key} holds no purchase")));
            };
            let Event::Purchase(purchase) = self.intern(Event::Purchase(purchase)) else {
                unreachable!("a purchase stays one")
            };
            self.attribution
                .restore_pending(PendingId::stored(pending), purchase);
        } else if let Some(pending) = key.strip_prefix(UNDECIDED) {
            let windows: Vec<String> = value.extract()?;
            let windows = self.shared_labels(windows.iter().map(|w| s(w)).collect());
            self.undecided.insert(PendingId::stored(pending), windows);
        } else if let Some(window_key) = key.strip_prefix(WINDOW) {
            self.counts.restore(window_key, &value)?;
        } else if let Some(label_key) = key.strip_prefix(LABEL) {
            let (dimension, label): (String, String) = serde_json::from_str(label_key)
                .map_err(|_| PyValueError::new_err(format!("not a label entry: {key}")))?;
            labels.push((dimension, s(&label), value.extract()?));
        }
        Ok(())
    }

    fn restore_offer(&mut self, offer: Arc<Offer>, windows: Vec<Str>, converted_by: Option<Str>) {
        let Event::Offer(offer) = self.intern(Event::Offer(offer)) else {
            unreachable!("an offer stays one")
        };
        let windows = self.shared_labels(windows);
        self.attribution
            .restore_offer(OpenOffer { offer, windows }, converted_by);
    }

    fn finish_restore(&mut self, labels: Vec<(String, Str, i64)>) {
        self.labels.restore(labels);
        self.counts.finish_restore();
        self.remembered.clear();
        self.counts.forget_changes();
    }
}

/// A value written by `write`, encoded.
fn encoded(write: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    write(&mut out);
    out
}

fn offer_key(customer_id: &str, offer_id: &str) -> String {
    json_key(OFFER, &[Part::Text(customer_id), Part::Text(offer_id)])
}

/// A kept offer's entry: [offer row, window labels, converted by], encoded.
fn packed_kept(attribution: &Attribution, kept: &OpenOffer) -> Vec<u8> {
    let converted_by = attribution.converted_by(&kept.offer);
    encoded(|out| {
        pack_list_header(out, 3);
        pack_offer_row(out, &kept.offer);
        pack_texts(out, &kept.windows);
        pack_opt_text(out, converted_by.map(|by| by.as_str()));
    })
}

fn label_key(dimension: usize, value: &str) -> String {
    json_key(
        LABEL,
        &[Part::Text(DIMENSIONS[dimension]), Part::Text(value)],
    )
}

/// An entry's value: bytes are in the store's compact encoding (packed.rs).
fn decoded(value: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    match value.cast::<PyBytes>() {
        Ok(raw) => unpack(value.py(), raw.as_bytes()),
        Err(_) => Ok(value),
    }
}

/// The compiled CustomerPartition; partition.py's class of that name is its typed face.
#[pyclass(name = "CustomerPartition", module = "stream_app._engine")]
pub struct PyCustomerPartition {
    partition: Partition,
}

fn config_of(
    sizes: Vec<(String, i64)>,
    attribution_ms: i64,
    grace_ms: i64,
    max_label_values: usize,
) -> PyResult<Config> {
    if sizes.iter().any(|(_, size)| *size <= 0) {
        return Err(PyValueError::new_err("window sizes must be positive"));
    }
    Ok(Config {
        rules: WindowRules::new(&sizes, attribution_ms, grace_ms),
        max_label_values,
    })
}

#[pymethods]
impl PyCustomerPartition {
    #[new]
    fn new(
        sizes: Vec<(String, i64)>,
        attribution_ms: i64,
        grace_ms: i64,
        max_label_values: usize,
    ) -> PyResult<Self> {
        Ok(Self {
            partition: Partition::new(config_of(
                sizes,
                attribution_ms,
                grace_ms,
                max_label_values,
            )?),
        })
    }

    #[staticmethod]
    fn restore(
        sizes: Vec<(String, i64)>,
        attribution_ms: i64,
        grace_ms: i64,
        max_label_values: usize,
        entries: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let config = config_of(sizes, attribution_ms, grace_ms, max_label_values)?;
        Ok(Self {
            partition: Partition::restore(config, entries)?,
        })
    }

    #[staticmethod]
    fn restore_chunks(
        sizes: Vec<(String, i64)>,
        attribution_ms: i64,
        grace_ms: i64,
        max_label_values: usize,
        older: &Bound<'_, PyDict>,
        chunks: &Bound<'_, PyList>,
    ) -> PyResult<Self> {
        let config = config_of(sizes, attribution_ms, grace_ms, max_label_values)?;
        Ok(Self {
            partition: Partition::restore_chunks(config, older, chunks)?,
        })
    }

    /// Apply one item of the internal topic, as its record's value, read at `offset`.
    fn apply_raw(&mut self, value: &[u8], offset: i64) -> PyResult<()> {
        let item = decode_item(value)?;
        self.partition.apply(item, offset);
        Ok(())
    }

    /// Apply fetched records of the internal topic (objects with `value` and `offset`), in
    /// order; records without a value are skipped.
    fn apply_records(&mut self, records: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = records.py();
        let value_name = pyo3::intern!(py, "value");
        let offset_name = pyo3::intern!(py, "offset");
        for record in records.try_iter()? {
            let record = record?;
            let value = record.getattr(value_name)?;
            if value.is_none() {
                continue;
            }
            let offset: i64 = record.getattr(offset_name)?.extract()?;
            let bytes = value.cast::<PyBytes>()?;
            let item = decode_item(bytes.as_bytes())?;
            self.partition.apply(item, offset);
        }
        Ok(())
    }

    /// Apply items the validating stage hands over in process, without the internal
    /// topic, in order: each an accepted event as `(source_topic, source_partition,
    /// source_offset, stamp, Accepted)`, or another item encoded as on that topic. They
    /// carry no offset of it.
    fn apply_handed(&mut self, values: &Bound<'_, PyList>) -> PyResult<()> {
        for value in values.iter() {
            let item = if let Ok(raw) = value.cast::<PyBytes>() {
                decode_item(raw.as_bytes())?
            } else {
                let (topic, partition, offset, stamp, accepted): (
                    String,
                    i64,
                    i64,
                    Option<i64>,
                    PyRef<'_, PyAccepted>,
                ) = value.extract()?;
                Item {
                    source_topic: s(&topic),
                    source_partition: partition,
                    source_offset: offset,
                    stamp,
                    payload: Payload::Event(accepted.event.clone()),
                }
            };
            let arrival = handed_arrival(item.source_offset);
            self.partition.apply_item(item, arrival);
        }
        Ok(())
    }

    #[getter]
    fn stream_time(&self) -> Option<i64> {
        self.partition.stream_time
    }

    #[getter]
    fn next_offset(&self) -> i64 {
        self.partition.next_offset
    }

    fn totals_row<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.partition.totals_row(py)
    }

    fn window_vectors<'py>(
        &self,
        py: Python<'py>,
        view: &str,
        window: (String, i64),
    ) -> PyResult<Bound<'py, PyDict>> {
        let view =
            view_index(view).ok_or_else(|| PyValueError::new_err(format!("no view {view}")))?;
        cells_to_py(
            py,
            self.partition.counts.cells(&Slot {
                view,
                label: s(&window.0),
                start: window.1,
            }),
        )
    }

    /// (view name, (label, start)) of every window held.
    fn windows(&self) -> Vec<(&'static str, (String, i64))> {
        self.partition.counts.named_windows()
    }

    fn open_offers(&self) -> usize {
        self.partition.attribution.len()
    }

    fn admitted_labels<'py>(
        &self,
        py: Python<'py>,
        dimension: &str,
    ) -> PyResult<Bound<'py, PyFrozenSet>> {
        let d = LabelCap::dimension_index(dimension)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(dimension.to_owned()))?;
        PyFrozenSet::new(py, self.partition.labels.admitted(d).map(|v| v.as_str()))
    }

    fn take_partials<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        partials_to_py(py, self.partition.counts.take_partials())
    }

    fn take_changes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        entries_to_dict(py, &self.partition.take_change_entries())
    }

    /// The changes as store records: (key, encoded value, or None to delete it).
    fn take_packed_changes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries_to_list(py, self.partition.take_change_entries())
    }

    /// The whole state as store records (key, encoded value).
    fn packed_snapshot<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut whole = PackedEntries::new();
        self.partition.snapshot_into(&mut whole);
        entries_to_list(py, whole)
    }

    /// The whole state as the store's chunks of write `sequence` (packed.rs `ChunkWriter`),
    /// encoded straight into them.
    fn snapshot_chunks<'py>(
        &mut self,
        py: Python<'py>,
        sequence: i64,
        chunk_bytes: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut writer = ChunkWriter::new(chunk_bytes);
        self.partition.snapshot_into(&mut writer);
        writer.finish(py, sequence, false)
    }

    /// `take_packed_changes` as the store's records of write `sequence` (packed.rs
    /// `ChunkWriter`, the format `pack_chunks` writes), each entry encoded straight into
    /// them: no list of the entries, no Python object per entry.
    fn take_changes_chunks<'py>(
        &mut self,
        py: Python<'py>,
        sequence: i64,
        chunk_bytes: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut writer = ChunkWriter::new(chunk_bytes);
        self.partition.take_changes(&mut writer);
        writer.finish(py, sequence, true)
    }

    /// The partials that changed since the last call as the partials topic's messages of
    /// this partition (cohorts.rs `encode_partials`), at most `per_message` rows each.
    fn take_partials_encoded<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
        per_message: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let partials = self.partition.counts.take_partials();
        let messages = encode_partials(
            partition,
            self.partition.stream_time,
            &partials,
            per_message,
        );
        PyList::new(py, messages.iter().map(|m| PyBytes::new(py, m)))
    }
}
