//! Log lines about things that can happen once per request (a session store outage, a
//! failing `accept`) are written once per interval, with the count since the last one,
//! instead of filling the log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub(crate) struct Throttle {
    every_secs: u64,
    /// Unix seconds of the last report (0: never).
    last: AtomicU64,
    /// Events since the last report.
    count: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every_secs: every.as_secs().max(1),
            last: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when it is time to report the `n` events counted
    /// since the last report.
    pub(crate) fn hit(&self) -> Option<u64> {
        let count = self.count.fetch_add(1, Relaxed) + 1;
        let now = portcullis_core::time::unix_now();
        let last = self.last.load(Relaxed);
        if now >= last + self.every_secs
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.count.store(0, Relaxed);
            return Some(count);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_reports_and_the_next_ones_wait() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(1));
        for _ in 0..1000 {
            assert_eq!(t.hit(), None);
        }
    }
}
