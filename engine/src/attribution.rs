//! Which purchase converts which offer (attribution.py's module text has the rules): a
//! named offer converts as soon as both are here; last-touch purchases are decided once
//! stream time passes ts + grace, in (ts, event_id) order; offers and purchases waiting
//! for an offer are forgotten once stream time passes ts + attribution window + grace.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::HashTable;

use pyo3::prelude::*;

use crate::events::{event_from_py, Event, Offer, Purchase};
use crate::expiry::{ExpiryQueue, Timed};
use crate::util::{s, Hasher, Map, OrderedSet, Str};

/// The window labels an event was counted in, shared between events (a thin pointer: a
/// kept offer holds one).
pub type Labels = Arc<Box<[Str]>>;

/// A kept offer: 16 bytes beside the offer it shares (which purchase converted it is
/// kept aside, in `Conversions`: few offers have one).
pub struct OpenOffer {
    pub offer: Arc<Offer>,
    pub windows: Labels,
}

/// A converted kept offer: (customer_id, offer_id) and the event_id of the purchase that
/// converted it.
struct Converted {
    customer_id: Str,
    offer_id: Str,
    by: Str,
}

/// Which purchase converted each converted kept offer, found by (customer_id, offer_id):
/// a field of every kept offer would cost each of them 8 bytes, most for nothing.
#[derive(Default)]
struct Conversions {
    hasher: Hasher,
    table: HashTable<Converted>,
}

impl Conversions {
    fn hash(&self, customer_id: &str, offer_id: &str) -> u64 {
        self.hasher.hash_one((customer_id, offer_id))
    }

    fn by(&self, customer_id: &str, offer_id: &str) -> Option<&Str> {
        if self.table.is_empty() {
            return None;
        }
        let hash = self.hash(customer_id, offer_id);
        let found = self.table.find(hash, |c| {
            c.customer_id.as_str() == customer_id && c.offer_id.as_str() == offer_id
        });
        found.map(|c| &c.by)
    }

    /// Record (Some) or clear (None) which purchase converted the offer.
    fn set(&mut self, customer_id: &Str, offer_id: &Str, by: Option<Str>) {
        let hash = self.hash(customer_id, offer_id);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |c| c.customer_id == *customer_id && c.offer_id == *offer_id,
            |c| hasher.hash_one((c.customer_id.as_str(), c.offer_id.as_str())),
        );
        match (entry, by) {
            (hashbrown::hash_table::Entry::Occupied(found), None) => {
                found.remove();
            }
            (hashbrown::hash_table::Entry::Occupied(mut found), Some(by)) => {
                found.get_mut().by = by;
            }
            (hashbrown::hash_table::Entry::Vacant(free), Some(by)) => {
                free.insert(Converted {
                    customer_id: customer_id.clone(),
                    offer_id: offer_id.clone(),
                    by,
                });
            }
            (hashbrown::hash_table::Entry::Vacant(_), None) => {}
        }
    }
}

/// Which waiting purchase: the internal-topic offset it arrived at and its store key's tail.
/// Two copies of one event_id can wait at once (the second is a new event once the first's
/// event_id is no longer remembered, while the first still waits for its grace or its
/// offer), so a waiting purchase is never told apart by its event_id alone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PendingId {
    arrival: i64,
    pub key: Str,
}

impl PendingId {
    pub fn arrived(offset: i64, event_id: &str) -> Self {
        Self {
            arrival: offset,
            key: s(&[itoa::Buffer::new().format(offset), "|", event_id].concat()),
        }
    }

    /// From a store key's tail; an older state keyed by event_id alone (one waiting copy
    /// per event_id) arrived before anything written since.
    pub fn stored(key: &str) -> Self {
        let arrival = key
            .split_once('|')
            .and_then(|(offset, _)| offset.parse().ok())
            .unwrap_or(-1);
        Self {
            arrival,
            key: s(key),
        }
    }
}

pub struct Conversion {
    pub offer: Arc<Offer>,
    pub windows: Labels,
    pub purchase: Arc<Purchase>,
    /// The purchase's id while it waited; None when it converted on arrival.
    pub pending: Option<PendingId>,
    /// The stream time whose passing decided it; None when an arrival decided it.
    pub due: Option<i64>,
}

pub struct GivenUp {
    pub purchase: Arc<Purchase>,
    pub pending: PendingId,
    pub due: Option<i64>,
}

pub type OfferRef = (Str, Str);

/// A kept offer waiting for its expiry, ordered by (ts, customer_id, offer_id): one
/// pointer per entry instead of the ts and the two strings.
#[derive(Clone)]
struct Expiring(Arc<Offer>);

impl PartialEq for Expiring {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Expiring {}

impl Ord for Expiring {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (a, b) = (&self.0, &other.0);
        (a.ts, &a.customer_id, &a.offer_id).cmp(&(b.ts, &b.customer_id, &b.offer_id))
    }
}

impl Timed for Expiring {
    fn ts(&self) -> i64 {
        self.0.ts
    }
}

impl PartialOrd for Expiring {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A customer's kept offers: a few in a list sized to them (nearly every customer), more
/// in a table by offer_id. An empty map per customer cost several times the offer it held.
enum CustomerOffers {
    Few(Vec<OpenOffer>),
    Many(Box<ManyOffers>),
}

/// Offers a customer keeps in a list; above this, in a table.
const FEW_OFFERS: usize = 8;

/// Kept offers found by their offer_id's hash, the id read from the offer itself: no key
/// beside each.
#[derive(Default)]
struct ManyOffers {
    hasher: Hasher,
    table: HashTable<OpenOffer>,
}

impl ManyOffers {
    fn hash(&self, offer_id: &str) -> u64 {
        self.hasher.hash_one(offer_id)
    }

    fn insert(&mut self, kept: OpenOffer) {
        let hash = self.hash(&kept.offer.offer_id);
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, kept, |k| hasher.hash_one(k.offer.offer_id.as_str()));
    }
}

fn is_offer(offer_id: &str) -> impl Fn(&OpenOffer) -> bool + '_ {
    move |kept| kept.offer.offer_id.as_str() == offer_id
}

impl CustomerOffers {
    fn get(&self, offer_id: &str) -> Option<&OpenOffer> {
        match self {
            CustomerOffers::Few(few) => few.iter().find(|k| is_offer(offer_id)(k)),
            CustomerOffers::Many(many) => many.table.find(many.hash(offer_id), is_offer(offer_id)),
        }
    }

    fn get_mut(&mut self, offer_id: &str) -> Option<&mut OpenOffer> {
        match self {
            CustomerOffers::Few(few) => few.iter_mut().find(|k| is_offer(offer_id)(k)),
            CustomerOffers::Many(many) => {
                let hash = many.hash(offer_id);
                many.table.find_mut(hash, is_offer(offer_id))
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &OpenOffer> {
        let (few, many) = match self {
            CustomerOffers::Few(few) => (Some(few.iter()), None),
            CustomerOffers::Many(many) => (None, Some(many.table.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Keep an offer not kept yet.
    fn insert(&mut self, kept: OpenOffer) {
        match self {
            CustomerOffers::Few(few) if few.len() < FEW_OFFERS => {
                few.reserve_exact(1);
                few.push(kept);
            }
            CustomerOffers::Few(few) => {
                let mut many = ManyOffers::default();
                for k in few.drain(..).chain(std::iter::once(kept)) {
                    many.insert(k);
                }
                *self = CustomerOffers::Many(Box::new(many));
            }
            CustomerOffers::Many(many) => many.insert(kept),
        }
    }

    /// Forget an offer; whether it was kept.
    fn remove(&mut self, offer_id: &str) -> bool {
        match self {
            CustomerOffers::Few(few) => match few.iter().position(is_offer(offer_id)) {
                Some(at) => {
                    few.swap_remove(at);
                    few.shrink_to_fit();
                    true
                }
                None => false,
            },
            CustomerOffers::Many(many) => {
                let hash = many.hash(offer_id);
                match many.table.find_entry(hash, is_offer(offer_id)) {
                    Ok(found) => {
                        found.remove();
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            CustomerOffers::Few(few) => few.is_empty(),
            CustomerOffers::Many(many) => many.table.is_empty(),
        }
    }
}

#[derive(Default)]
pub struct Changes {
    pub offers: OrderedSet<OfferRef>,
    pub purchases: OrderedSet<PendingId>,
}

pub struct Attribution {
    attribution_ms: i64,
    grace_ms: i64,
    // customer_id -> its kept offers.
    offers: Map<Str, CustomerOffers>,
    offer_count: usize,
    conversions: Conversions,
    waiting_for_offer: Map<OfferRef, Vec<PendingId>>,
    // (due, ts, event_id, id): decided in (ts, event_id) order, copies in arrival order.
    last_touch_due: BinaryHeap<Reverse<(i64, i64, Str, PendingId)>>,
    pending: Map<PendingId, Arc<Purchase>>,
    offer_expiry: ExpiryQueue<Expiring>,
    waiting_expiry: BinaryHeap<Reverse<(i64, Str, PendingId)>>,
    pub given_up: Vec<GivenUp>,
    pub changes: Changes,
}

impl Attribution {
    pub fn new(attribution_ms: i64, grace_ms: i64) -> Self {
        Self {
            attribution_ms,
            grace_ms,
            offers: Map::default(),
            offer_count: 0,
            conversions: Conversions::default(),
            waiting_for_offer: Map::default(),
            last_touch_due: BinaryHeap::new(),
            pending: Map::default(),
            offer_expiry: ExpiryQueue::default(),
            waiting_expiry: BinaryHeap::new(),
            given_up: Vec::new(),
            changes: Changes::default(),
        }
    }

    pub fn offer(&self, customer_id: &str, offer_id: &str) -> Option<&OpenOffer> {
        self.offers.get(customer_id)?.get(offer_id)
    }

    /// The event_id of the purchase that converted a kept offer, if one did.
    pub fn converted_by(&self, offer: &Offer) -> Option<&Str> {
        self.conversions.by(&offer.customer_id, &offer.offer_id)
    }

    pub fn open_offers(&self) -> impl Iterator<Item = &OpenOffer> {
        self.offers.values().flat_map(|offers| offers.values())
    }

    pub fn pending_purchase(&self, id: &PendingId) -> Option<&Arc<Purchase>> {
        self.pending.get(id)
    }

    pub fn len(&self) -> usize {
        self.offer_count + self.pending.len()
    }

    /// Keep an offer; the conversion if a purchase naming it was waiting.
    pub fn add_offer(&mut self, offer: Arc<Offer>, windows: Labels) -> Vec<Conversion> {
        if self.offer(&offer.customer_id, &offer.offer_id).is_some() {
            return Vec::new();
        }
        let reference = (offer.customer_id.clone(), offer.offer_id.clone());
        self.keep_offer(OpenOffer { offer, windows }, None);
        let mut conversions = Vec::new();
        let mut waiting: Vec<(PendingId, Arc<Purchase>)> = self
            .waiting_for_offer
            .get(&reference)
            .into_iter()
            .flatten()
            .map(|id| (id.clone(), self.pending[id].clone()))
            .collect();
        waiting.sort_by(|a, b| (a.1.ts, &a.1.event_id, &a.0).cmp(&(b.1.ts, &b.1.event_id, &b.0)));
        for (id, purchase) in waiting {
            self.drop_pending(&id);
            let matches = {
                let kept = self.offer(&reference.0, &reference.1).expect("kept");
                self.matches(kept, &purchase)
            };
            if conversions.is_empty() && matches {
                conversions.push(self.convert(&reference, purchase, Some(id), None));
            } else {
                self.given_up.push(GivenUp {
                    purchase,
                    pending: id,
                    due: None,
                });
            }
        }
        conversions
    }

    /// Attribute a purchase that arrived at internal-topic `offset`: its conversion, and
    /// its id if it now waits for its named offer.
    pub fn add_purchase(
        &mut self,
        purchase: &Arc<Purchase>,
        offset: i64,
    ) -> (Vec<Conversion>, Option<PendingId>) {
        let id = PendingId::arrived(offset, &purchase.event_id);
        if let Some(offer_id) = &purchase.offer_id {
            let matches = self
                .offer(&purchase.customer_id, offer_id)
                .map(|kept| self.matches(kept, purchase));
            match matches {
                None => {
                    self.keep_pending(id.clone(), purchase.clone());
                    return (Vec::new(), Some(id));
                }
                Some(true) => {
                    let reference = (purchase.customer_id.clone(), offer_id.clone());
                    return (
                        vec![self.convert(&reference, purchase.clone(), None, None)],
                        None,
                    );
                }
                Some(false) => {}
            }
        } else if purchase.is_upsell {
            self.keep_pending(id, purchase.clone());
        }
        (Vec::new(), None)
    }

    /// Decide every last-touch purchase whose ts + grace stream time has passed, then
    /// forget what nothing on time can match any more.
    pub fn advance(&mut self, stream_time: Option<i64>) -> Vec<Conversion> {
        let Some(now) = stream_time else {
            return Vec::new();
        };
        let mut conversions = Vec::new();
        while let Some(Reverse((due_at, _, _, _))) = self.last_touch_due.peek() {
            if now <= *due_at {
                break;
            }
            let Reverse((due_at, _, _, id)) = self.last_touch_due.pop().expect("peeked");
            let Some(purchase) = self.pending.get(&id).cloned() else {
                continue;
            };
            self.drop_pending(&id);
            if let Some(reference) = self.last_touch_offer(&purchase) {
                conversions.push(self.convert(&reference, purchase, Some(id), Some(due_at)));
            }
        }
        self.expire(now);
        conversions
    }

    pub fn take_given_up(&mut self) -> Vec<GivenUp> {
        std::mem::take(&mut self.given_up)
    }

    fn expire(&mut self, now: i64) {
        let horizon = self.attribution_ms + self.grace_ms;
        for Expiring(offer) in self.offer_expiry.take_due(now.saturating_sub(horizon)) {
            self.forget_offer(&offer.customer_id, &offer.offer_id);
        }
        while let Some(Reverse((ts, _, _))) = self.waiting_expiry.peek() {
            if ts + horizon >= now {
                break;
            }
            let Reverse((ts, _, id)) = self.waiting_expiry.pop().expect("peeked");
            let Some(purchase) = self.pending.get(&id).cloned() else {
                continue;
            };
            self.drop_pending(&id);
            self.given_up.push(GivenUp {
                purchase,
                pending: id,
                due: Some(ts + horizon),
            });
        }
    }

    fn forget_offer(&mut self, customer_id: &Str, offer_id: &Str) {
        let Some(offers) = self.offers.get_mut(customer_id) else {
            return;
        };
        if !offers.remove(offer_id) {
            return;
        }
        self.offer_count -= 1;
        if offers.is_empty() {
            self.offers.remove(customer_id);
        }
        self.conversions.set(customer_id, offer_id, None);
        self.changes
            .offers
            .insert((customer_id.clone(), offer_id.clone()));
    }

    /// Every purchase waiting, by its id.
    pub fn pending_purchases(&self) -> impl Iterator<Item = (&PendingId, &Arc<Purchase>)> {
        self.pending.iter()
    }

    pub fn restore_offer(&mut self, kept: OpenOffer, converted_by: Option<Str>) {
        let reference = (kept.offer.customer_id.clone(), kept.offer.offer_id.clone());
        self.keep_offer(kept, converted_by);
        self.changes.offers.shift_remove(&reference);
    }

    pub fn restore_pending(&mut self, id: PendingId, purchase: Arc<Purchase>) {
        self.keep_pending(id.clone(), purchase);
        self.changes.purchases.shift_remove(&id);
    }

    fn matches(&self, kept: &OpenOffer, purchase: &Purchase) -> bool {
        let offer = &kept.offer;
        let delta = purchase.ts - offer.ts;
        offer.customer_id == purchase.customer_id
            && 0 <= delta
            && delta <= self.attribution_ms
            && self.converted_by(offer).is_none()
    }

    fn last_touch_offer(&self, purchase: &Purchase) -> Option<OfferRef> {
        let mut best: Option<&OpenOffer> = None;
        for kept in self.offers.get(&purchase.customer_id)?.values() {
            if self.matches(kept, purchase)
                && best.is_none_or(|b| {
                    (kept.offer.ts, &kept.offer.offer_id) > (b.offer.ts, &b.offer.offer_id)
                })
            {
                best = Some(kept);
            }
        }
        best.map(|b| (b.offer.customer_id.clone(), b.offer.offer_id.clone()))
    }

    fn convert(
        &mut self,
        reference: &OfferRef,
        purchase: Arc<Purchase>,
        pending: Option<PendingId>,
        due: Option<i64>,
    ) -> Conversion {
        let kept = self
            .offers
            .get_mut(&reference.0)
            .and_then(|offers| offers.get_mut(&reference.1))
            .expect("a kept offer");
        let conversion = Conversion {
            offer: kept.offer.clone(),
            windows: kept.windows.clone(),
            purchase,
            pending,
            due,
        };
        let offer = &conversion.offer;
        let by = Some(conversion.purchase.event_id.clone());
        self.conversions
            .set(&offer.customer_id, &offer.offer_id, by);
        self.changes.offers.insert(reference.clone());
        conversion
    }

    fn keep_offer(&mut self, kept: OpenOffer, converted_by: Option<Str>) {
        let offer = kept.offer.clone();
        let offers = self
            .offers
            .entry(offer.customer_id.clone())
            .or_insert_with(|| CustomerOffers::Few(Vec::new()));
        let replaced = match offers.get_mut(&offer.offer_id) {
            Some(held) => {
                *held = kept;
                true
            }
            None => {
                offers.insert(kept);
                self.offer_count += 1;
                false
            }
        };
        // An offer not kept before has no conversion recorded (forgetting one clears it).
        if replaced || converted_by.is_some() {
            self.conversions
                .set(&offer.customer_id, &offer.offer_id, converted_by);
        }
        let reference = (offer.customer_id.clone(), offer.offer_id.clone());
        self.offer_expiry.push(Expiring(offer.clone()));
        self.changes.offers.insert(reference);
    }

    /// Wait for the named offer, or in line for a last-touch decision.
    fn keep_pending(&mut self, id: PendingId, purchase: Arc<Purchase>) {
        self.changes.purchases.insert(id.clone());
        if let Some(offer_id) = &purchase.offer_id {
            self.waiting_expiry.push(Reverse((
                purchase.ts,
                purchase.event_id.clone(),
                id.clone(),
            )));
            self.waiting_for_offer
                .entry((purchase.customer_id.clone(), offer_id.clone()))
                .or_default()
                .push(id.clone());
        } else {
            self.last_touch_due.push(Reverse((
                purchase.ts + self.grace_ms,
                purchase.ts,
                purchase.event_id.clone(),
                id.clone(),
            )));
        }
        self.pending.insert(id, purchase);
    }

    fn drop_pending(&mut self, id: &PendingId) {
        let Some(purchase) = self.pending.remove(id) else {
            return;
        };
        self.changes.purchases.insert(id.clone());
        if let Some(offer_id) = &purchase.offer_id {
            let reference = (purchase.customer_id.clone(), offer_id.clone());
            if let Some(waiting) = self.waiting_for_offer.get_mut(&reference) {
                if let Some(at) = waiting.iter().position(|w| w == id) {
                    waiting.remove(at);
                }
                if waiting.is_empty() {
                    self.waiting_for_offer.remove(&reference);
                }
            }
        }
    }
}

/// attribution.Attribution alone, for the test of when offers are forgotten.
#[pyclass(name = "Attribution", module = "stream_app._engine")]
pub struct PyAttribution {
    attribution: Attribution,
}

#[pymethods]
impl PyAttribution {
    #[new]
    fn new(attribution_ms: i64, grace_ms: i64) -> Self {
        Self {
            attribution: Attribution::new(attribution_ms, grace_ms),
        }
    }
    fn __len__(&self) -> usize {
        self.attribution.len()
    }
    /// Keep an offer counted in `windows`; the number of conversions it made.
    fn add_offer(&mut self, offer: &Bound<'_, PyAny>, windows: Vec<String>) -> PyResult<usize> {
        let Event::Offer(offer) = event_from_py(offer)? else {
            return Err(pyo3::exceptions::PyTypeError::new_err("not an Offer"));
        };
        let windows: Labels = Arc::new(windows.iter().map(|w| s(w)).collect());
        Ok(self.attribution.add_offer(offer, windows).len())
    }
    #[pyo3(signature = (stream_time))]
    fn advance(&mut self, stream_time: Option<i64>) -> usize {
        self.attribution.advance(stream_time).len()
    }
    /// (customer_id, offer_id, ts) of every kept offer.
    fn open_offers(&self) -> Vec<(String, String, i64)> {
        self.attribution
            .open_offers()
            .map(|k| {
                (
                    k.offer.customer_id.to_string(),
                    k.offer.offer_id.to_string(),
                    k.offer.ts,
                )
            })
            .collect()
    }
    fn has_offer(&self, reference: (String, String)) -> bool {
        self.attribution.offer(&reference.0, &reference.1).is_some()
    }
    /// The offers kept, converted or forgotten since the last call, in the order they
    /// first changed (the store writes them in it).
    fn take_changed_offers(&mut self) -> Vec<(String, String)> {
        let taken = std::mem::take(&mut self.attribution.changes.offers);
        taken
            .into_iter()
            .map(|(c, o)| (c.to_string(), o.to_string()))
            .collect()
    }
}
