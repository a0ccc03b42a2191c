//! Who gets a connection: the total cap, the cap per client address, and
//! a refusal log that cannot flood the node's own log.
//!
//! * [`Admission::admit`] hands out a [`Ticket`] per accepted connection
//!   (held by the connection's task; dropping it frees the slot), or says
//!   why not. At most `max_connections` tickets exist, and at most
//!   `max_connections_per_addr` for one IP address (IPv4-mapped IPv6
//!   addresses count as their IPv4 address). Loopback clients are exempt
//!   from the per-address cap unless configured otherwise: local tools, and
//!   every client behind a local proxy or tunnel, share one address.
//! * [`RefusalLog`] lets one WARN line through per second, and reports the
//!   refusals it held back in the next line, or on its own a second later
//!   if none follows. A flood of refused connections costs a line a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ConnectionLimits;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_connections` connections are open.
    Full(usize),
    /// `max_connections_per_addr` connections from this address are open.
    AddrFull(usize),
}

impl Refusal {
    /// The error text the client gets.
    pub(super) fn message(self) -> String {
        match self {
            Refusal::Full(n) => format!("too many connections (limit {n}); try again later"),
            Refusal::AddrFull(n) => {
                format!("too many connections from your address (limit {n}); try again later")
            }
        }
    }
}

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The connection caps of one listener.
#[derive(Debug)]
pub(super) struct Admission {
    permits: Arc<Semaphore>,
    total: usize,
    per_addr: usize,
    loopback_exempt: bool,
    counts: Counts,
}

/// An admitted connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Ticket {
    _permit: OwnedSemaphorePermit,
    /// The address counted against the per-address cap.
    counted: Option<(IpAddr, Counts)>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((ip, counts)) = self.counted.take() {
            let mut counts = counts.lock();
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// Caps of `max_connections` in all, per address as `limits` say.
    pub(super) fn new(max_connections: usize, limits: &ConnectionLimits) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max_connections)),
            total: max_connections,
            per_addr: limits.max_per_addr.min(max_connections),
            loopback_exempt: limits.loopback_exempt,
            counts: Arc::default(),
        }
    }

    /// A slot for a client at `ip`, or why there is none.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = ip.to_canonical();
        if self.loopback_exempt && ip.is_loopback() {
            let permit = self.permit()?;
            return Ok(Ticket {
                _permit: permit,
                counted: None,
            });
        }
        let mut counts = self.counts.lock();
        let n = counts.get(&ip).copied().unwrap_or(0);
        if n >= self.per_addr {
            return Err(Refusal::AddrFull(self.per_addr));
        }
        let permit = self.permit()?;
        counts.insert(ip, n + 1);
        Ok(Ticket {
            _permit: permit,
            counted: Some((ip, self.counts.clone())),
        })
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full(self.total))
    }
}

/// Lets one refusal line through per [`RefusalLog::EVERY`] and counts the
/// ones it holds back.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    last_line: Option<Instant>,
    held_back: u64,
}

impl RefusalLog {
    /// At most one line this often.
    pub(super) const EVERY: Duration = Duration::from_secs(1);

    /// Notes a refusal at `now`. `Some(n)`: log it, mentioning the `n`
    /// refusals held back since the previous line; `None`: stay quiet.
    pub(super) fn refused(&mut self, now: Instant) -> Option<u64> {
        match self.last_line {
            Some(t) if now < t + Self::EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// When the held-back refusals are due to be reported on their own.
    pub(super) fn summary_due(&self) -> Option<Instant> {
        match self.last_line {
            Some(t) if self.held_back > 0 => Some(t + Self::EVERY),
            _ => None,
        }
    }

    /// The held-back refusals to report now (call once [`summary_due`] has
    /// passed); counts as a line.
    ///
    /// [`summary_due`]: RefusalLog::summary_due
    pub(super) fn summary(&mut self, now: Instant) -> u64 {
        self.last_line = Some(now);
        std::mem::take(&mut self.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_addr: usize, loopback_exempt: bool) -> ConnectionLimits {
        ConnectionLimits {
            max_per_addr: per_addr,
            loopback_exempt,
            ..ConnectionLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn the_per_address_cap_counts_each_address_and_frees_slots_on_drop() {
        let a = Admission::new(10, &limits(2, true));
        let t1 = a.admit(ip("10.0.0.1")).unwrap();
        let _t2 = a.admit(ip("::ffff:10.0.0.1")).unwrap();
        assert_eq!(
            a.admit(ip("10.0.0.1")).unwrap_err(),
            Refusal::AddrFull(2),
            "an IPv4-mapped address counts as its IPv4 address"
        );
        let _other = a.admit(ip("10.0.0.2")).unwrap();
        drop(t1);
        let _t3 = a.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn loopback_is_exempt_from_the_per_address_cap_only_when_configured() {
        let exempt = Admission::new(10, &limits(1, true));
        let _held: Vec<_> = (0..5)
            .map(|_| exempt.admit(ip("127.0.0.1")).unwrap())
            .collect();
        let capped = Admission::new(10, &limits(1, false));
        let _t = capped.admit(ip("::1")).unwrap();
        assert_eq!(capped.admit(ip("::1")).unwrap_err(), Refusal::AddrFull(1));
    }

    #[test]
    fn the_total_cap_holds_and_a_refused_client_leaves_no_count() {
        let a = Admission::new(2, &limits(100, false));
        let _t1 = a.admit(ip("10.0.0.1")).unwrap();
        let t2 = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3")).unwrap_err(), Refusal::Full(2));
        assert!(!a.counts.lock().contains_key(&ip("10.0.0.3")));
        drop(t2);
        assert!(!a.counts.lock().contains_key(&ip("10.0.0.2")));
        let _t3 = a.admit(ip("10.0.0.3")).unwrap();
    }

    #[test]
    fn the_per_address_cap_never_exceeds_the_total_cap() {
        let a = Admission::new(1, &limits(100, false));
        let _t = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).unwrap_err(), Refusal::AddrFull(1));
    }

    #[test]
    fn refusals_are_logged_once_a_second_with_the_held_back_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = RefusalLog::default();
        assert_eq!(log.summary_due(), None);
        assert_eq!(log.refused(ms(0)), Some(0));
        assert_eq!(log.summary_due(), None, "nothing held back yet");
        for n in 1..=500 {
            assert_eq!(log.refused(ms(n)), None);
        }
        assert_eq!(log.summary_due(), Some(ms(1000)));
        // The next refusal after a second carries the count…
        assert_eq!(log.refused(ms(1000)), Some(500));
        assert_eq!(log.refused(ms(1001)), None);
        // …or, if none comes, the summary does.
        assert_eq!(log.summary_due(), Some(ms(2000)));
        assert_eq!(log.summary(ms(2000)), 1);
        assert_eq!(log.summary_due(), None);
        assert_eq!(log.refused(ms(2500)), None, "the summary counts as a line");
        assert_eq!(log.refused(ms(3000)), Some(1));
    }
}
