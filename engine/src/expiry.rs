//! Items waiting for stream time to pass their ts, taken in (ts, item) order.
//!
//! Nearly every item comes in ts order (none below the one before): those wait in a deque;
//! an item below the newest ts queued waits in a heap. What is due is taken from both and
//! sorted, so which items come out, and their order, are those of one heap of everything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

pub struct ExpiryQueue<T: Ord> {
    in_order: VecDeque<(i64, T)>,
    late: BinaryHeap<Reverse<(i64, T)>>,
}

impl<T: Ord> Default for ExpiryQueue<T> {
    fn default() -> Self {
        Self {
            in_order: VecDeque::new(),
            late: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> ExpiryQueue<T> {
    pub fn push(&mut self, ts: i64, item: T) {
        match self.in_order.back() {
            Some((last, _)) if ts < *last => self.late.push(Reverse((ts, item))),
            _ => self.in_order.push_back((ts, item)),
        }
    }

    /// Every entry whose ts < cutoff, in (ts, item) order, with the ts it was pushed with.
    pub fn take_due(&mut self, cutoff: i64) -> Vec<(i64, T)> {
        let mut due = Vec::new();
        while matches!(self.in_order.front(), Some((ts, _)) if *ts < cutoff) {
            due.push(self.in_order.pop_front().expect("checked"));
        }
        while matches!(self.late.peek(), Some(Reverse((ts, _))) if *ts < cutoff) {
            due.push(self.late.pop().expect("checked").0);
        }
        if due.len() > 1 {
            due.sort();
        }
        due
    }
}
