//! `probe --watch`: what became of each probe of a run. Keeps each probe's key, send time, hop
//! limit and site as it goes out, then follows the replies until the watch is over or a signal
//! comes, matching each to its probe (identical probes in send order) and reporting it, then the
//! probes nothing came back for. No sockets of its own: replies come through `net::ReplySource`,
//! so the logic is unit-tested with scripted ones.

use std::time::{Duration, Instant};

use crate::net::ReplySource;
use crate::output::{FateEvent, RttStats};
use crate::param::Prefix;
use crate::reply::{ProbeKey, RunMatcher};

/// The probes of a run that went out, in send order.
#[derive(Debug, Default)]
pub(super) struct SentLog {
    keys: Vec<ProbeKey>,
    sent_at: Vec<Instant>,
    hop_limits: Vec<u8>,
    /// The local site of each probe's target.
    sites: Vec<Prefix>,
}

impl SentLog {
    pub fn record(&mut self, key: ProbeKey, at: Instant, hop_limit: u8, site: Prefix) {
        self.keys.push(key);
        self.sent_at.push(at);
        self.hop_limits.push(hop_limit);
        self.sites.push(site);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// What the watch found, for the closing statistics.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub answered: u64,
    pub silent: u64,
    pub rtts: RttStats,
}

/// Follows the replies to the probes of `log` until `watch` after the last was sent, or until
/// `stopped` says a signal came (what has already arrived is still read, with its own arrival
/// time); hands `on_fate` every reply matched to its probe, then every probe nothing came back
/// for, and returns the counts. A reply is only matched to a probe sent before it arrived.
pub(super) fn follow(
    replies: &mut dyn ReplySource,
    log: &SentLog,
    watch: Duration,
    stopped: &dyn Fn() -> bool,
    on_fate: &mut dyn FnMut(&FateEvent) -> anyhow::Result<()>,
) -> anyhow::Result<Tally> {
    let deadline = log.sent_at.last().copied().unwrap_or_else(Instant::now) + watch;
    let mut matcher = RunMatcher::new(&log.keys);
    let distinct = matcher.distinct().to_vec();
    let count = log.len() as u64;
    let mut tally = Tally::default();
    let event = |n: usize, fate, rtt, in_order| FateEvent {
        index: n as u64 + 1,
        count,
        hop_limit: log.hop_limits.get(n).copied().unwrap_or(0),
        fate,
        rtt,
        too_high: fate.is_some_and(|f: crate::reply::Fate| {
            log.sites.get(n).is_some_and(|s| f.reached_peer_side(s))
        }),
        in_order,
        watch,
    };
    loop {
        // Waited in slices, so that a signal ends the watch at once.
        let now = Instant::now();
        let over = stopped() || now >= deadline;
        let slice = if over {
            now
        } else {
            deadline.min(now + Duration::from_millis(100))
        };
        let Some((g, fate, at)) = replies.next_match(&distinct, slice)? else {
            if over {
                break;
            }
            continue;
        };
        let Some((n, in_order)) =
            matcher.assign(g, |j| log.sent_at.get(j).is_some_and(|s| *s <= at))
        else {
            continue;
        };
        tally.answered += 1;
        let rtt = log.sent_at.get(n).map(|s| at.saturating_duration_since(*s));
        if let Some(r) = rtt {
            tally.rtts.add(r);
        }
        on_fate(&event(n, Some(fate), rtt, in_order))?;
    }
    for n in matcher.unanswered() {
        tally.silent += 1;
        on_fate(&event(n, None, None, false))?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    //! The watch's logic with scripted replies: matching, order, arrival before sending, rtts,
    //! and a signal.
    use std::net::Ipv6Addr;

    use super::*;
    use crate::net::NetError;
    use crate::reply::Fate;

    fn key(sport: u16) -> ProbeKey {
        ProbeKey::from_packet(&crate::fixtures::udp_probe(sport, 2).to_bytes().unwrap().0).unwrap()
    }

    fn expired() -> Fate {
        Fate::Expired {
            by: "2001:db8:100::2".parse().unwrap(),
            code: 0,
        }
    }

    /// Yields the scripted replies that answer one of the keys asked for, then nothing; counts
    /// the waits that found nothing.
    struct Script {
        replies: Vec<(ProbeKey, Fate, Instant)>,
        empty_waits: usize,
    }

    impl ReplySource for Script {
        fn next_match(
            &mut self,
            keys: &[ProbeKey],
            _deadline: Instant,
        ) -> Result<Option<(usize, Fate, Instant)>, NetError> {
            while !self.replies.is_empty() {
                let (k, fate, at) = self.replies.remove(0);
                if let Some(i) = keys.iter().position(|x| *x == k) {
                    return Ok(Some((i, fate, at)));
                }
            }
            self.empty_waits += 1;
            Ok(None)
        }
    }

    fn site() -> Prefix {
        "2001:db8:1::/48".parse().unwrap()
    }

    /// What each reported fate said: index, fate, matched in send order, rtt.
    type Reported = Vec<(u64, Option<Fate>, bool, Option<Duration>)>;

    fn run(
        log: &SentLog,
        replies: Vec<(ProbeKey, Fate, Instant)>,
        stopped: bool,
    ) -> (Reported, Tally) {
        let mut script = Script {
            replies,
            empty_waits: 0,
        };
        let mut seen = Vec::new();
        let tally = follow(
            &mut script,
            log,
            Duration::from_secs(if stopped { 3600 } else { 0 }),
            &|| stopped,
            &mut |e| {
                seen.push((e.index, e.fate, e.in_order, e.rtt));
                Ok(())
            },
        )
        .unwrap();
        (seen, tally)
    }

    /// Twins (the same key) are answered in send order; a distinct probe with no reply is
    /// reported silent after the replies; rtts are each reply's own.
    #[test]
    fn twins_in_send_order_then_the_silent_ones() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = SentLog::default();
        log.record(key(40000), t0, 2, site());
        log.record(key(40001), t0 + ms(1), 2, site());
        log.record(key(40000), t0 + ms(2), 2, site());
        let (seen, tally) = run(
            &log,
            vec![
                (key(40000), expired(), t0 + ms(10)),
                (key(40000), expired(), t0 + ms(30)),
            ],
            false,
        );
        assert_eq!(
            seen,
            vec![
                (1, Some(expired()), true, Some(ms(10))),
                (3, Some(expired()), true, Some(ms(28))),
                (2, None, false, None),
            ]
        );
        assert_eq!((tally.answered, tally.silent), (2, 1));
        assert_eq!(
            (tally.rtts.min(), tally.rtts.max()),
            (Some(ms(10)), Some(ms(28)))
        );
    }

    /// A reply that arrived before its probe went out answers none; a reply to no probe of the
    /// run is not counted.
    #[test]
    fn a_reply_before_the_probe_answers_nothing() {
        let t0 = Instant::now();
        let mut log = SentLog::default();
        log.record(key(40000), t0, 2, site());
        let (seen, tally) = run(
            &log,
            vec![
                (key(40000), expired(), t0 - Duration::from_millis(1)),
                (key(41000), expired(), t0 + Duration::from_millis(1)),
            ],
            false,
        );
        assert_eq!(seen, vec![(1, None, false, None)]);
        assert_eq!((tally.answered, tally.silent), (0, 1));
    }

    /// With a signal the watch ends at once, whatever is left of it, after reading what had
    /// already arrived; a reset says the probe reached the peer's side.
    #[test]
    fn a_signal_ends_the_watch_after_what_arrived() {
        let t0 = Instant::now();
        let mut log = SentLog::default();
        log.record(key(40000), t0, 9, site());
        let reset = Fate::Reset {
            by: "2001:db8:2::5".parse::<Ipv6Addr>().unwrap(),
        };
        let mut script = Script {
            replies: vec![(key(40000), reset, t0 + Duration::from_millis(3))],
            empty_waits: 0,
        };
        let mut too_high = Vec::new();
        let started = Instant::now();
        let tally = follow(
            &mut script,
            &log,
            Duration::from_secs(3600),
            &|| true,
            &mut |e| {
                too_high.push((e.index, e.hop_limit, e.too_high));
                Ok(())
            },
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(script.empty_waits, 1, "one last look, then the end");
        assert_eq!(tally.answered, 1);
        assert_eq!(too_high, vec![(1, 9, true)]);
    }
}
