//! Counts per view, window and key: sums and distinct customers, with change tracking
//! (cohorts.py's description holds: every count is made for the key and its three roll-ups
//! at once; distinct customers are held once per slot and field with the keys they were
//! counted under; a customer's memberships in one window are one stored entry, and those
//! added to it later one more entry per write).

use std::cmp::Ordering;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::labels::ALL;
use crate::packed::{
    entries_to_dict, pack_i128, pack_int, pack_list_header, pack_text, EntrySink, PackedEntries,
    Reader, Stored,
};
use crate::util::{
    int_of, int_to_py, items, json_key_into, push_int, s, Map, OrderedMap, OrderedSet, Part, Str,
};

pub const VIEW_NAMES: [&str; 3] = ["channel_segment", "campaign", "purchases"];
pub const CHANNEL_SEGMENT: u8 = 0;
pub const CAMPAIGN: u8 = 1;
pub const PURCHASES: u8 = 2;
pub const OFFER_VIEWS: [u8; 2] = [CHANNEL_SEGMENT, CAMPAIGN];
pub const SUM_FIELDS: [&[&str]; 3] = [
    &["offers", "conversions", "revenue_micros"],
    &["offers", "conversions", "revenue_micros"],
    &[
        "upsell_purchases",
        "other_purchases",
        "upsell_amount_micros",
        "other_amount_micros",
    ],
];
pub const DISTINCT_FIELDS: [&[&str]; 3] = [
    &["customers_targeted", "customers_upsold"],
    &["customers_targeted", "customers_upsold"],
    &["buyers_any", "buyers_upsell"],
];

pub fn view_index(name: &str) -> Option<u8> {
    VIEW_NAMES.iter().position(|v| *v == name).map(|i| i as u8)
}

pub type Key = (Str, Str);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Slot {
    pub view: u8,
    pub label: Str,
    pub start: i64,
}

impl Ord for Slot {
    // As Python orders (view name, label, start) tuples.
    fn cmp(&self, other: &Self) -> Ordering {
        VIEW_NAMES[self.view as usize]
            .cmp(VIEW_NAMES[other.view as usize])
            .then_with(|| self.label.cmp(&other.label))
            .then_with(|| self.start.cmp(&other.start))
    }
}

/// A `Slot` to look one up by, without a new reference to its label.
#[derive(Hash)]
struct SlotRef<'a> {
    view: u8,
    label: &'a str,
    start: i64,
}

impl<'a> SlotRef<'a> {
    fn new(view: u8, label: &'a str, start: i64) -> Self {
        Self { view, label, start }
    }
}

// Hashes as `Slot` does: `Str` hashes as its text.
impl indexmap::Equivalent<Slot> for SlotRef<'_> {
    fn equivalent(&self, slot: &Slot) -> bool {
        self.view == slot.view && self.start == slot.start && self.label == &*slot.label
    }
}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A key's cell, then those of its roll-ups, each once.
#[derive(Clone, Copy, Default)]
struct Family {
    cells: [u32; 4],
    len: u8,
}

impl Family {
    /// Keep only the cells `keep` is true of, in order.
    fn retain(&mut self, keep: impl Fn(&u32) -> bool) {
        let mut len = 0;
        for at in 0..self.len as usize {
            let cell = self.cells[at];
            if keep(&cell) {
                self.cells[len] = cell;
                len += 1;
            }
        }
        self.len = len as u8;
    }
}

impl std::ops::Deref for Family {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.cells[..self.len as usize]
    }
}

/// A membership's value: the one key cell a customer was counted under in a slot and
/// field (nearly always), or, with this bit set, the index of the several in `SlotData.many`.
const MANY: u32 = 1 << 31;

/// The customers counted in distinct fields, numbered: a membership holds a 4-byte number
/// instead of a 16-byte shared string. A number is let go, and may be given to another
/// customer, once no membership holds it.
#[derive(Default)]
struct Customers {
    numbers: Map<Str, u32>,
    // Per number: the customer and the memberships holding it (None: free).
    names: Vec<(Option<Str>, u32)>,
    free: Vec<u32>,
}

impl Customers {
    fn number(&self, customer: &str) -> Option<u32> {
        self.numbers.get(customer).copied()
    }

    fn name(&self, number: u32) -> &Str {
        self.names[number as usize]
            .0
            .as_ref()
            .expect("a held number")
    }

    /// The customer's number, held by one more membership.
    fn hold(&mut self, customer: &Str) -> u32 {
        if let Some(&number) = self.numbers.get(customer) {
            self.names[number as usize].1 += 1;
            return number;
        }
        let number = match self.free.pop() {
            Some(number) => {
                self.names[number as usize] = (Some(customer.clone()), 1);
                number
            }
            None => {
                self.names.push((Some(customer.clone()), 1));
                (self.names.len() - 1) as u32
            }
        };
        self.numbers.insert(customer.clone(), number);
        number
    }

    /// Let go of every membership a dropped slot held.
    fn release_all(&mut self, data: &SlotData) {
        for held_by in &data.members {
            for &number in held_by.keys() {
                let entry = &mut self.names[number as usize];
                entry.1 -= 1;
                if entry.1 == 0 {
                    if let Some(name) = entry.0.take() {
                        self.numbers.remove(&name);
                    }
                    self.free.push(number);
                }
            }
        }
    }
}

struct Cell {
    key: Key,
    sums: [i128; 4],
    distinct: [u64; 2],
    unsaved: bool,
    unpublished: bool,
}

pub struct SlotData {
    generation: u64,
    cells: Vec<Cell>,
    index: Map<Key, u32>,
    // Each counted key's cell and its roll-ups' cells, in rollups() order.
    families: Map<Key, Family>,
    // Per distinct field: each counted customer's number -> its key cells (see MANY).
    members: [Map<u32, u32>; 2],
    many: Vec<Vec<u32>>,
}

impl SlotData {
    /// The key cells of a membership's value.
    fn held_cells<'a>(&'a self, held: &'a u32) -> &'a [u32] {
        if held & MANY == 0 {
            std::slice::from_ref(held)
        } else {
            &self.many[(held & !MANY) as usize]
        }
    }

    /// The key's cell, then those of its roll-ups, each once (a roll-up's own key, as
    /// restored from versions before, is its own roll-up); made once per key.
    fn family(&mut self, key: &Key) -> Family {
        if let Some(family) = self.families.get(key) {
            return *family;
        }
        let mut family = Family {
            cells: [0; 4],
            len: 0,
        };
        for rolled in rollups(key) {
            let cell = match self.index.get(&rolled) {
                Some(cell) => *cell,
                None => {
                    let cell = self.cells.len() as u32;
                    self.cells.push(Cell {
                        key: rolled.clone(),
                        sums: [0; 4],
                        distinct: [0; 2],
                        unsaved: false,
                        unpublished: false,
                    });
                    self.index.insert(rolled, cell);
                    cell
                }
            };
            if !family.contains(&cell) {
                family.cells[family.len as usize] = cell;
                family.len += 1;
            }
        }
        self.families.insert(key.clone(), family);
        family
    }

    fn vector(&self, view: u8, cell: u32) -> Vec<i128> {
        let cell = &self.cells[cell as usize];
        let n = SUM_FIELDS[view as usize].len();
        let mut vector: Vec<i128> = cell.sums[..n].to_vec();
        vector.extend(cell.distinct.iter().map(|d| *d as i128));
        vector
    }
}

type CellRef = (Slot, u64, u32);
/// A membership added: its slot's generation, the customer's number, the distinct field
/// and the key cell it was counted under; its window and view are set when the changes are
/// taken. Small (24 bytes): a batch adds several per event.
struct Added {
    generation: u64,
    number: u32,
    cell: u32,
    // The window's place among those `take_changes` deals with (DROPPED: its slot is gone).
    window: u32,
    view: u8,
    index: u8,
}

/// `Added.window` of a membership whose slot was dropped since it was added.
const DROPPED: u32 = u32::MAX;
/// A window's slot of each view (indexed by view), those held.
type WindowViews<'a> = [Option<&'a SlotData>; 3];
type Group = (Str, i64, Str);
/// A membership as stored in a customer's window entry: view, distinct field, key.
type Row = (u8, usize, Key);

#[derive(Default)]
pub struct WindowCounts {
    slots: OrderedMap<Slot, SlotData>,
    customers: Customers,
    next_generation: u64,
    changed_cells: Vec<CellRef>,
    added: Vec<Added>,
    // The number of the last write that stored memberships added to a customer's window
    // entry (the suffix of their keys), at least that of any such entry restored.
    writes: u64,
    // Memberships added to customers' window entries, restored: taken back once every
    // entry is (`finish_restore`).
    restored_added: Vec<(Group, Vec<Row>)>,
    dropped: Vec<(Slot, SlotData)>,
    partials: Vec<CellRef>,
    // Entries of one membership each, as versions before wrote them, restored.
    migrated: OrderedMap<String, Group>,
}

fn rollups(key: &Key) -> [Key; 4] {
    let all = s(ALL);
    [
        key.clone(),
        (key.0.clone(), all.clone()),
        (all.clone(), key.1.clone()),
        (all.clone(), all),
    ]
}

pub struct Partial {
    pub slot: Slot,
    pub key: Key,
    pub vector: Vec<i128>,
}

impl WindowCounts {
    /// Add the amounts to sum fields and count `customer` once in distinct fields, of the
    /// key and its roll-ups.
    pub fn count(
        &mut self,
        slot: &Slot,
        key: &Key,
        sums: &[(usize, i128)],
        distinct: &[usize],
        customer: &Str,
    ) {
        let at = self.slot_index(slot);
        let (slot, data) = self.slots.get_index_mut(at).expect("made");
        let family = data.family(key);
        let generation = data.generation;
        for &(index, amount) in sums {
            for &cell in family.iter() {
                data.cells[cell as usize].sums[index] += amount;
            }
        }
        let mut joined: Vec<u32> = Vec::new();
        let mut number = self.customers.number(customer);
        for &index in distinct {
            let new_to = join(data, &mut self.customers, family, index, customer, number);
            if new_to.is_empty() {
                continue;
            }
            number = self.customers.number(customer);
            self.added.push(Added {
                generation,
                number: number.expect("numbered as it joined"),
                cell: family[0],
                window: DROPPED,
                view: slot.view,
                index: index as u8,
            });
            if sums.is_empty() {
                joined.extend_from_slice(&new_to);
            }
        }
        let touched: &[u32] = if sums.is_empty() { &joined } else { &family };
        for &cell in touched {
            let c = &mut data.cells[cell as usize];
            if !c.unsaved {
                c.unsaved = true;
                self.changed_cells.push((slot.clone(), generation, cell));
            }
            if !c.unpublished {
                c.unpublished = true;
                self.partials.push((slot.clone(), generation, cell));
            }
        }
    }

    pub fn windows(&self) -> Vec<Slot> {
        self.slots.keys().cloned().collect()
    }

    /// The windows held, as Python sees them: (view name, (window label, window start)).
    pub fn named_windows(&self) -> Vec<(&'static str, (String, i64))> {
        self.slots
            .keys()
            .map(|slot| {
                (
                    VIEW_NAMES[slot.view as usize],
                    (slot.label.to_string(), slot.start),
                )
            })
            .collect()
    }

    pub fn cells(&self, slot: &Slot) -> Vec<(Key, Vec<i128>)> {
        match self.slots.get(slot) {
            None => Vec::new(),
            Some(data) => (0..data.cells.len() as u32)
                .map(|i| {
                    (
                        data.cells[i as usize].key.clone(),
                        data.vector(slot.view, i),
                    )
                })
                .collect(),
        }
    }

    pub fn drop_slot(&mut self, slot: &Slot) {
        if let Some(data) = self.slots.shift_remove(slot) {
            self.dropped.push((slot.clone(), data));
        }
    }

    pub fn take_partials(&mut self) -> Vec<Partial> {
        let mut taken = std::mem::take(&mut self.partials);
        let mut keyed: Vec<(Slot, Key, u64, u32)> = Vec::with_capacity(taken.len());
        for (slot, generation, cell) in taken.drain(..) {
            let key = match self.slots.get_mut(&slot) {
                Some(data) if data.generation == generation => {
                    data.cells[cell as usize].unpublished = false;
                    data.cells[cell as usize].key.clone()
                }
                _ => continue,
            };
            keyed.push((slot, key, generation, cell));
        }
        keyed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        keyed
            .into_iter()
            .map(|(slot, key, _, cell)| {
                let vector = self.slots[&slot].vector(slot.view, cell);
                Partial { slot, key, vector }
            })
            .collect()
    }

    /// Store entries into `sink`: one per changed cell's sums, and per customer and window
    /// given memberships, one entry. A window the customer had none in before gets all of
    /// them under the window's customer key: the entry a snapshot writes, deleted with the
    /// window. Otherwise only those added are written, under that key and this write's
    /// number, so that a frequent customer's entry is not written whole again for each
    /// membership added. Those entries are not deleted when the window is dropped (which
    /// writes would they be?): its cells are, and a restore leaves out the memberships
    /// added to a window it does not hold (`finish_restore`).
    pub fn take_changes(&mut self, prefix: &str, sink: &mut dyn EntrySink) {
        let mut key = String::with_capacity(prefix.len() + 64);
        let mut value = Vec::with_capacity(256);
        // Written whole, or deleted once no membership is left.
        let mut groups: OrderedSet<Group> = OrderedSet::default();
        for (slot, data) in std::mem::take(&mut self.dropped) {
            for cell in &data.cells {
                cell_key(&mut key, prefix, &slot, &cell.key);
                sink.put_entry(&key, None);
            }
            for held_by in &data.members {
                for number in held_by.keys() {
                    let customer = self.customers.name(*number).clone();
                    groups.insert((slot.label.clone(), slot.start, customer));
                }
            }
            self.customers.release_all(&data);
        }
        for cell in std::mem::take(&mut self.changed_cells) {
            if let Some(data) = self.slots.get_mut(&cell.0) {
                if data.generation == cell.1 {
                    let c = &mut data.cells[cell.2 as usize];
                    c.unsaved = false;
                    packed_sums(&mut value, cell.0.view, c);
                    cell_key(&mut key, prefix, &cell.0, &c.key);
                    sink.put(&key, &value);
                }
            }
        }
        for (old_key, group) in std::mem::take(&mut self.migrated) {
            sink.put_entry(&format!("{prefix}{old_key}"), None);
            groups.insert(group);
        }
        // The memberships added, sorted in place by window and customer (a batch adds several
        // per event: no allocation per customer and window, nor a second list of them).
        let mut added = std::mem::take(&mut self.added);
        let mut windows = Windows::default();
        if !added.is_empty() {
            // Per slot held: its window (an index into `windows`), looked up once per slot
            // rather than once per comparison of the sort.
            let mut slots: Map<u64, u32> = Map::default();
            for (slot, data) in &self.slots {
                let at = windows.index(self, &slot.label, slot.start);
                slots.insert(data.generation, at as u32);
            }
            for membership in added.iter_mut() {
                membership.window = slots
                    .get(&membership.generation)
                    .copied()
                    .unwrap_or(DROPPED);
            }
        }
        // Those of a slot dropped since are gone with it (DROPPED: last, skipped).
        added.sort_unstable_by_key(|m| (m.window, m.number, m.view, m.index, m.cell));
        let write = self.writes + 1;
        let mut numbered = false;
        for rows in added.chunk_by(|a, b| a.window == b.window && a.number == b.number) {
            let (window, number) = (rows[0].window, rows[0].number);
            if window == DROPPED {
                continue;
            }
            let (label, start, views) = &windows.held[window as usize];
            let group = (label.clone(), *start, self.customers.name(number).clone());
            if groups.contains(&group) {
                continue;
            }
            // New to the window: what it added is all it holds there, written as the
            // whole entry (the rows in another order than a snapshot's: a restore takes
            // each row on its own).
            let mut held = 0;
            each_membership(views, number, |_, _, _| held += 1);
            let whole = held == rows.len();
            value.clear();
            pack_list_header(&mut value, rows.len());
            for membership in rows {
                let data = views[membership.view as usize].expect("a live slot");
                let cell_key = &data.cells[membership.cell as usize].key;
                pack_list_header(&mut value, 4);
                pack_text(&mut value, VIEW_NAMES[membership.view as usize]);
                pack_int(&mut value, i64::from(membership.index));
                pack_text(&mut value, &cell_key.0);
                pack_text(&mut value, &cell_key.1);
            }
            if whole {
                group_key(&mut key, prefix, &group.0, group.1, &group.2);
            } else {
                numbered = true;
                added_key(&mut key, prefix, &group.0, group.1, &group.2, write);
            }
            sink.put(&key, &value);
        }
        for (label, start, customer) in &groups {
            let at = windows.index(self, label, *start);
            let views = &windows.held[at].2;
            let held = match self.customers.number(customer) {
                Some(number) => self.memberships(&mut value, views, number),
                None => false,
            };
            group_key(&mut key, prefix, label, *start, customer);
            sink.put_entry(&key, held.then_some(value.as_slice()));
        }
        if numbered {
            self.writes = write;
        }
    }

    /// Every cell and membership held, as `take_changes` writes them, into `sink` (changes
    /// not taken yet are not taken: the caller takes them first). Memberships are written
    /// window by window; what is held meanwhile is one window's customer numbers.
    pub fn snapshot_into(&self, prefix: &str, sink: &mut dyn EntrySink) {
        let mut key = String::with_capacity(prefix.len() + 64);
        let mut value = Vec::with_capacity(256);
        for (slot, data) in &self.slots {
            for cell in &data.cells {
                packed_sums(&mut value, slot.view, cell);
                cell_key(&mut key, prefix, slot, &cell.key);
                sink.put(&key, &value);
            }
        }
        let windows: OrderedSet<(Str, i64)> = self
            .slots
            .keys()
            .map(|slot| (slot.label.clone(), slot.start))
            .collect();
        let mut written: std::collections::HashSet<u32, crate::util::Hasher> = Default::default();
        for (label, start) in windows {
            written.clear();
            let views = self.views_of(&label, start);
            for data in views.iter().flatten() {
                for held_by in &data.members {
                    for &number in held_by.keys() {
                        if !written.insert(number) {
                            continue;
                        }
                        if self.memberships(&mut value, &views, number) {
                            let customer = self.customers.name(number);
                            group_key(&mut key, prefix, &label, start, customer);
                            sink.put(&key, &value);
                        }
                    }
                }
            }
        }
    }

    /// The window's slot of each view, those held.
    fn views_of(&self, label: &str, start: i64) -> WindowViews<'_> {
        std::array::from_fn(|view| self.slots.get(&SlotRef::new(view as u8, label, start)))
    }

    /// Into `out` (in place of what it held): [[view name, distinct field, first key part,
    /// second key part], ...] of the memberships of customer `number` in a window (`views`,
    /// as `views_of` gives them), encoded; false (and `out` left empty) once there are none.
    fn memberships(&self, out: &mut Vec<u8>, views: &WindowViews<'_>, number: u32) -> bool {
        out.clear();
        let mut rows = 0;
        each_membership(views, number, |view, index, key| {
            rows += 1;
            pack_list_header(out, 4);
            pack_text(out, VIEW_NAMES[view]);
            pack_int(out, index as i64);
            pack_text(out, &key.0);
            pack_text(out, &key.1);
        });
        if rows == 0 {
            return false;
        }
        // The list's length comes before its rows: put in front once they are counted (a
        // second pass to count them first looked every membership up twice).
        let mut header = Vec::with_capacity(4);
        pack_list_header(&mut header, rows);
        out.splice(0..0, header);
        true
    }

    /// Take back one entry written by take_changes (without its prefix).
    pub fn restore(&mut self, entry_key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.restore_stored(entry_key, Stored::Py(value.clone()))
    }

    /// `restore` of a value decoded or encoded.
    pub fn restore_stored(&mut self, entry_key: &str, value: Stored<'_, '_>) -> PyResult<()> {
        let bad = || PyValueError::new_err(format!("not a window entry: {entry_key}"));
        let parts: Vec<serde_json::Value> = serde_json::from_str(entry_key).map_err(|_| bad())?;
        let text = |i: usize| -> PyResult<Str> {
            parts.get(i).and_then(|v| v.as_str()).map(s).ok_or_else(bad)
        };
        let int =
            |i: usize| -> PyResult<i64> { parts.get(i).and_then(|v| v.as_i64()).ok_or_else(bad) };
        if parts.len() == 3 || parts.len() == 4 {
            let (label, start, customer) = (text(0)?, int(1)?, text(2)?);
            let mut rows: Vec<Row> = Vec::new();
            match value {
                Stored::Py(value) => {
                    for row in value.try_iter()? {
                        let row = items(&row?)?;
                        if row.len() != 4 {
                            return Err(bad());
                        }
                        let view_name: String = row[0].extract()?;
                        rows.push((
                            view_index(&view_name).ok_or_else(bad)?,
                            row[1].extract()?,
                            (
                                s(&row[2].extract::<String>()?),
                                s(&row[3].extract::<String>()?),
                            ),
                        ));
                    }
                }
                Stored::Packed(raw) => {
                    let mut reader = Reader::new(raw);
                    for _ in 0..reader.list_len()? {
                        if reader.list_len()? != 4 {
                            return Err(bad());
                        }
                        let view = view_index(reader.text()?).ok_or_else(bad)?;
                        let index = usize::try_from(reader.int()?).map_err(|_| bad())?;
                        rows.push((view, index, (s(reader.text()?), s(reader.text()?))));
                    }
                }
            }
            let group = (label, start, customer);
            if parts.len() == 4 {
                let write = u64::try_from(int(3)?).map_err(|_| bad())?;
                self.writes = self.writes.max(write);
                self.restored_added.push((group, rows));
            } else {
                self.restore_rows(&group, rows, false);
            }
            return Ok(());
        }
        let view = view_index(&text(0)?).ok_or_else(bad)?;
        let slot = Slot {
            view,
            label: text(1)?,
            start: int(2)?,
        };
        let key = (text(3)?, text(4)?);
        if parts.len() == 5 {
            let at = self.slot_index(&slot);
            let data = &mut self.slots[at];
            let family = data.family(&key);
            let cell = &mut data.cells[family[0] as usize];
            match value {
                Stored::Py(value) => {
                    for (i, amount) in value.try_iter()?.enumerate() {
                        if i < cell.sums.len() {
                            cell.sums[i] = int_of(&amount?)?;
                        }
                    }
                }
                Stored::Packed(raw) => {
                    let mut reader = Reader::new(raw);
                    for i in 0..reader.list_len()? {
                        let amount = reader.i128()?;
                        if i < cell.sums.len() {
                            cell.sums[i] = amount;
                        }
                    }
                }
            }
            return Ok(());
        }
        let index = int(5)? as usize;
        let customer = text(6)?;
        self.restore_member(&slot, &key, index, &customer);
        self.migrated.insert(
            entry_key.to_owned(),
            (slot.label.clone(), slot.start, customer),
        );
        Ok(())
    }

    /// End a restore: take back the memberships added to windows held. Those of a window
    /// dropped since they were written are still stored (`take_changes`); its cells were
    /// deleted, so it is not held, and they are left out.
    pub fn finish_restore(&mut self) {
        for (group, rows) in std::mem::take(&mut self.restored_added) {
            self.restore_rows(&group, rows, true);
        }
    }

    /// Take back a customer's memberships in a window, as stored; with `held_only`, only
    /// those in slots held already.
    fn restore_rows(&mut self, (label, start, customer): &Group, rows: Vec<Row>, held_only: bool) {
        for (view, index, key) in rows {
            let slot = Slot {
                view,
                label: label.clone(),
                start: *start,
            };
            if !held_only || self.slots.contains_key(&slot) {
                self.restore_member(&slot, &key, index, customer);
            }
        }
    }

    fn restore_member(&mut self, slot: &Slot, key: &Key, index: usize, customer: &Str) {
        if index > 1 {
            return;
        }
        let at = self.slot_index(slot);
        let data = &mut self.slots[at];
        let family = data.family(key);
        let number = self.customers.number(customer);
        join(data, &mut self.customers, family, index, customer, number);
    }

    pub fn forget_changes(&mut self) {
        for cell in std::mem::take(&mut self.changed_cells) {
            if let Some(data) = self.slots.get_mut(&cell.0) {
                if data.generation == cell.1 {
                    data.cells[cell.2 as usize].unsaved = false;
                }
            }
        }
        for cell in std::mem::take(&mut self.partials) {
            if let Some(data) = self.slots.get_mut(&cell.0) {
                if data.generation == cell.1 {
                    data.cells[cell.2 as usize].unpublished = false;
                }
            }
        }
        self.added.clear();
        for (_, data) in std::mem::take(&mut self.dropped) {
            self.customers.release_all(&data);
        }
    }

    /// The position of a slot, made empty if new.
    fn slot_index(&mut self, slot: &Slot) -> usize {
        if let Some(at) = self.slots.get_index_of(slot) {
            return at;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.slots
            .insert_full(
                slot.clone(),
                SlotData {
                    generation,
                    cells: Vec::new(),
                    index: Map::default(),
                    families: Map::default(),
                    members: Default::default(),
                    many: Vec::new(),
                },
            )
            .0
    }
}

/// Count customer `number` (None: not numbered yet) under the family's key (its first
/// cell); the cells of the family it was new to, none if it was counted under the key
/// already.
fn join(
    data: &mut SlotData,
    customers: &mut Customers,
    family: Family,
    index: usize,
    customer: &Str,
    number: Option<u32>,
) -> Family {
    let own = family[0];
    let mut new_to = family;
    match number.and_then(|n| data.members[index].get(&n).copied().map(|held| (n, held))) {
        None => {
            let number = customers.hold(customer);
            data.members[index].insert(number, own);
        }
        Some((number, held)) => {
            if data.held_cells(&held).contains(&own) {
                return Family::default();
            }
            for &other in data.held_cells(&held) {
                // Every held key was counted through its family.
                let counted = &data.families[&data.cells[other as usize].key];
                new_to.retain(|cell| !counted.contains(cell));
            }
            if held & MANY == 0 {
                let at = data.many.len() as u32;
                data.many.push(vec![held, own]);
                data.members[index].insert(number, MANY | at);
            } else {
                data.many[(held & !MANY) as usize].push(own);
            }
        }
    }
    for cell in new_to.iter() {
        data.cells[*cell as usize].distinct[index] += 1;
    }
    new_to
}

/// (view, distinct field, key) of each membership of customer `number` in a window.
fn each_membership<'a>(
    views: &WindowViews<'a>,
    number: u32,
    mut visit: impl FnMut(usize, usize, &'a Key),
) {
    for (view, data) in views.iter().enumerate() {
        let Some(data) = data else {
            continue;
        };
        for (index, held_by) in data.members.iter().enumerate() {
            if let Some(held) = held_by.get(&number) {
                for cell in data.held_cells(held) {
                    visit(view, index, &data.cells[*cell as usize].key);
                }
            }
        }
    }
}

/// A cell's sums, encoded into `out` (in place of what it held).
fn packed_sums(out: &mut Vec<u8>, view: u8, cell: &Cell) {
    let n = SUM_FIELDS[view as usize].len();
    out.clear();
    pack_list_header(out, n);
    for amount in &cell.sums[..n] {
        pack_i128(out, *amount);
    }
}

/// The store key of a customer's memberships in a window, into `out`.
fn group_key(out: &mut String, prefix: &str, label: &str, start: i64, customer: &str) {
    json_key_into(
        out,
        prefix,
        &[Part::Text(label), Part::Int(start), Part::Text(customer)],
    )
}

/// The windows a take of changes deals with, each window's slots looked up once.
#[derive(Default)]
struct Windows<'a> {
    held: Vec<(Str, i64, WindowViews<'a>)>,
    positions: Map<(Str, i64), usize>,
}

impl<'a> Windows<'a> {
    /// The position in `held` of a window's slots, looked up in `counts` the first time.
    fn index(&mut self, counts: &'a WindowCounts, label: &Str, start: i64) -> usize {
        if let Some(&at) = self.positions.get(&(label.clone(), start)) {
            return at;
        }
        self.held
            .push((label.clone(), start, counts.views_of(label, start)));
        self.positions
            .insert((label.clone(), start), self.held.len() - 1);
        self.held.len() - 1
    }
}

/// The store key of memberships added to a customer's window entry in write `write`.
fn added_key(out: &mut String, prefix: &str, label: &str, start: i64, customer: &str, write: u64) {
    json_key_into(
        out,
        prefix,
        &[
            Part::Text(label),
            Part::Int(start),
            Part::Text(customer),
            Part::Int(write as i64),
        ],
    )
}

/// The store key of a cell's sums, into `out`.
fn cell_key(out: &mut String, prefix: &str, slot: &Slot, key: &Key) {
    json_key_into(
        out,
        prefix,
        &[
            Part::Text(VIEW_NAMES[slot.view as usize]),
            Part::Text(&slot.label),
            Part::Int(slot.start),
            Part::Text(&key.0),
            Part::Text(&key.1),
        ],
    )
}

// -- Python ---------------------------------------------------------------------------------

pub fn vector_to_py<'py>(py: Python<'py>, vector: &[i128]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for n in vector {
        list.append(int_to_py(py, *n)?)?;
    }
    Ok(list)
}

pub fn cells_to_py<'py>(
    py: Python<'py>,
    cells: Vec<(Key, Vec<i128>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, vector) in cells {
        dict.set_item((key.0.as_str(), key.1.as_str()), vector_to_py(py, &vector)?)?;
    }
    Ok(dict)
}

static PARTIAL_CLASS: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
    pyo3::sync::PyOnceLock::new();

pub fn partials_to_py<'py>(
    py: Python<'py>,
    partials: Vec<Partial>,
) -> PyResult<Bound<'py, PyList>> {
    let class = PARTIAL_CLASS.import(py, "stream_app.domain.cohorts", "Partial")?;
    let list = PyList::empty(py);
    for p in partials {
        let key = PyTuple::new(py, [p.key.0.as_str(), p.key.1.as_str()])?;
        list.append(class.call1((
            VIEW_NAMES[p.slot.view as usize],
            p.slot.label.as_str(),
            p.slot.start,
            key,
            vector_to_py(py, &p.vector)?,
        ))?)?;
    }
    Ok(list)
}

/// The partials topic's messages of one partition's partials (board.py's
/// `encode_partials` format: `[partition, stream_time, rows]`, a row being
/// `[view, label, start, key..., vector...]`), at most `per_message` rows each and one
/// message at least; only the last carries the stream time, as the board judges a
/// message's partials by the stream time before it. A message holding an integer beyond
/// 64 bits starts with a space (fastjson.py's mark, whose reader keeps it exact).
pub fn encode_partials(
    partition: i64,
    stream_time: Option<i64>,
    partials: &[Partial],
    per_message: usize,
) -> Vec<Vec<u8>> {
    let chunks: Vec<&[Partial]> = if partials.is_empty() {
        vec![&[]]
    } else {
        partials.chunks(per_message.max(1)).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, rows)| {
            let wide = rows
                .iter()
                .any(|p| p.vector.iter().any(|v| i64::try_from(*v).is_err()));
            let mut out = Vec::with_capacity(32 + rows.len() * 96);
            if wide {
                out.push(b' ');
            }
            out.push(b'[');
            push_int(&mut out, partition);
            out.push(b',');
            match stream_time.filter(|_| index == last) {
                Some(time) => push_int(&mut out, time),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",[");
            for (i, p) in rows.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                json_text(&mut out, VIEW_NAMES[p.slot.view as usize]);
                out.push(b',');
                json_text(&mut out, &p.slot.label);
                out.push(b',');
                push_int(&mut out, p.slot.start);
                out.push(b',');
                json_text(&mut out, &p.key.0);
                out.push(b',');
                json_text(&mut out, &p.key.1);
                for value in &p.vector {
                    out.push(b',');
                    push_int(&mut out, *value);
                }
                out.push(b']');
            }
            out.extend_from_slice(b"]]");
            out
        })
        .collect()
}

fn json_text(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a string always encodes");
}

fn slot_of(view: &Bound<'_, PyAny>, window: (String, i64)) -> PyResult<Slot> {
    let name: String = if let Ok(name) = view.extract::<String>() {
        name
    } else {
        view.getattr("name")?.extract()?
    };
    let view = view_index(&name).ok_or_else(|| PyValueError::new_err(format!("no view {name}")))?;
    Ok(Slot {
        view,
        label: s(&window.0),
        start: window.1,
    })
}

fn field_index(fields: &[&str], name: &str) -> PyResult<usize> {
    fields
        .iter()
        .position(|f| *f == name)
        .ok_or_else(|| PyValueError::new_err(format!("no field {name}")))
}

/// cohorts.WindowCounts, for the tests of its store entries.
#[pyclass(name = "WindowCounts", module = "stream_app._engine")]
#[derive(Default)]
pub struct PyWindowCounts {
    counts: WindowCounts,
}

#[pymethods]
impl PyWindowCounts {
    #[new]
    fn new() -> Self {
        Self::default()
    }
    fn count(
        &mut self,
        view: &Bound<'_, PyAny>,
        window: (String, i64),
        key: (String, String),
        sums: Vec<(String, Bound<'_, PyAny>)>,
        distinct: Vec<String>,
        customer: &str,
    ) -> PyResult<()> {
        let slot = slot_of(view, window)?;
        let sums = sums
            .iter()
            .map(|(name, amount)| {
                Ok((
                    field_index(SUM_FIELDS[slot.view as usize], name)?,
                    int_of(amount)?,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let distinct = distinct
            .iter()
            .map(|name| field_index(DISTINCT_FIELDS[slot.view as usize], name))
            .collect::<PyResult<Vec<_>>>()?;
        self.counts.count(
            &slot,
            &(s(&key.0), s(&key.1)),
            &sums,
            &distinct,
            &s(customer),
        );
        Ok(())
    }
    fn cells<'py>(
        &self,
        py: Python<'py>,
        view: &Bound<'py, PyAny>,
        window: (String, i64),
    ) -> PyResult<Bound<'py, PyDict>> {
        cells_to_py(py, self.counts.cells(&slot_of(view, window)?))
    }
    fn windows(&self) -> Vec<(&'static str, (String, i64))> {
        self.counts.named_windows()
    }
    fn drop(&mut self, view_name: &Bound<'_, PyAny>, window: (String, i64)) -> PyResult<()> {
        let slot = slot_of(view_name, window)?;
        self.counts.drop_slot(&slot);
        Ok(())
    }
    fn take_partials<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        partials_to_py(py, self.counts.take_partials())
    }
    fn take_changes<'py>(&mut self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyDict>> {
        let mut changes = PackedEntries::new();
        self.counts.take_changes(prefix, &mut changes);
        entries_to_dict(py, &changes)
    }
    fn restore(&mut self, entry_key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.counts.restore(entry_key, value)
    }

    fn finish_restore(&mut self) {
        self.counts.finish_restore();
    }
    fn forget_changes(&mut self) {
        self.counts.forget_changes()
    }
}
