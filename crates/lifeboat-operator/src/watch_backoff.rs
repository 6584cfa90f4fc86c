//! How long the controllers' watches wait after an error before they try again.
//!
//! kube-runtime's default (800 ms doubling to 30 s, reset only after 120 s without an error)
//! treats every watch error alike, including the `410 Gone` that every watch of a restarted API
//! server returns once (its watch cache starts at etcd's current revision): that is not a fault
//! but the protocol asking for a relist. A controller merges several watches (its resource, the
//! CronJobs or Jobs it owns) behind one backoff, so after a restart each watch's 410 in turn
//! doubled the wait, and a new BackupPolicy went unreconciled for over a minute (measured in
//! `tests/api_outage.rs`). Capped at 5 s, the same restart converges in seconds, and an API
//! server that stays down costs each watch one attempt per 5 s. The Backoff trait sees no error,
//! so the cap, not the error kind, is what can be tuned; kube-runtime's own exponential type
//! cannot be built with other bounds, hence this one.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(5);

/// 200 ms doubling to 5 s; back to 200 ms after any event that is not an error.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(CAP);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<u64> = b.by_ref().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
