//! Items waiting for stream time to pass their ts, taken in their order (ts first).
//!
//! Nearly every item comes in ts order (none below the one before): those wait in a deque;
//! an item below the newest ts queued waits in a heap. What is due is taken from both and
//! sorted, so which items come out, and their order, are those of one heap of everything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// An item that knows its own ts, ordered by it first: the queue holds no ts beside it.
pub trait Timed: Ord {
    fn ts(&self) -> i64;
}

pub struct ExpiryQueue<T: Timed> {
    in_order: VecDeque<T>,
    late: BinaryHeap<Reverse<T>>,
}

impl<T: Timed> Default for ExpiryQueue<T> {
    fn default() -> Self {
        Self {
            in_order: VecDeque::new(),
            late: BinaryHeap::new(),
        }
    }
}

impl<T: Timed> ExpiryQueue<T> {
    pub fn push(&mut self, item: T) {
        match self.in_order.back() {
            Some(last) if item.ts() < last.ts() => self.late.push(Reverse(item)),
            _ => self.in_order.push_back(item),
        }
    }

    /// Every item whose ts < cutoff, in order.
    pub fn take_due(&mut self, cutoff: i64) -> Vec<T> {
        let mut due = Vec::new();
        while matches!(self.in_order.front(), Some(item) if item.ts() < cutoff) {
            due.push(self.in_order.pop_front().expect("checked"));
        }
        while matches!(self.late.peek(), Some(Reverse(item)) if item.ts() < cutoff) {
            due.push(self.late.pop().expect("checked").0);
        }
        if due.len() > 1 {
            due.sort();
        }
        due
    }
}
