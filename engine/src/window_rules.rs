//! The windows' rules shared by the customer partitions and the rates board: each
//! configured size, when a window closes (its end plus the grace) and when it is final (no
//! on-time purchase can change it any more: its end plus the attribution window and the
//! grace).

use crate::util::{s, Str};

#[derive(Clone)]
pub struct WindowRules {
    pub sizes: Vec<(Str, i64)>,
    pub attribution_ms: i64,
    pub grace_ms: i64,
}

impl WindowRules {
    pub fn new(sizes: &[(String, i64)], attribution_ms: i64, grace_ms: i64) -> Self {
        Self {
            sizes: sizes
                .iter()
                .map(|(label, size)| (s(label), *size))
                .collect(),
            attribution_ms,
            grace_ms,
        }
    }

    pub fn size_of(&self, label: &str) -> Option<i64> {
        self.sizes
            .iter()
            .find(|(l, _)| l.as_str() == label)
            .map(|(_, size)| *size)
    }

    /// Whether a window ending at `end` has closed at `stream_time`.
    pub fn is_closed(&self, end: i64, stream_time: Option<i64>) -> bool {
        passes(stream_time, end + self.grace_ms)
    }

    /// Whether a window's counts are final at `stream_time`. A window of a size no longer
    /// configured (the sizes changed across a restart) counts as final: nothing counts in it.
    pub fn is_final(&self, label: &str, start: i64, stream_time: Option<i64>) -> bool {
        match self.size_of(label) {
            None => true,
            Some(size) => passes(
                stream_time,
                start + size + self.attribution_ms + self.grace_ms,
            ),
        }
    }
}

pub fn passes(stream_time: Option<i64>, moment: i64) -> bool {
    matches!(stream_time, Some(now) if now > moment)
}
