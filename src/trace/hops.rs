//! What a hop-limit trace says: for each hop limit the responder and its place (inside the local
//! site, outside, or on the peer's side), when the trace must stop, and the hop limit to punch
//! with — the lowest whose probe is seen to expire outside the site (so it has crossed every
//! firewall of the site, answering or not), as the SocketSynergy draft's incremental learning
//! says. Silence is not evidence: without such an expiry there is no recommendation. Pure: no I/O.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::param::Prefix;
use crate::reply::Fate;

/// Where a hop's responder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Inside the local site (a local firewall or router).
    Inside,
    /// Past the local site: transit.
    Outside,
    /// The reply shows the probe reached the peer's side (reset, abort, answer, rejection).
    PeerSide,
    /// Nothing came back.
    Silent,
}

/// One hop limit's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    pub hop_limit: u8,
    pub fate: Option<Fate>,
    #[serde(serialize_with = "ser_ms", rename = "rtt_ms")]
    pub rtt: Option<Duration>,
    pub place: Place,
}

fn ser_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
        None => s.serialize_none(),
    }
}

impl Hop {
    pub fn new(hop_limit: u8, reply: Option<(Fate, Duration)>, site: &Prefix) -> Self {
        let place = match reply {
            None => Place::Silent,
            Some((f, _)) if f.reached_peer_side(site) => Place::PeerSide,
            Some((f, _)) if site.contains(f.by()) => Place::Inside,
            Some(_) => Place::Outside,
        };
        Hop {
            hop_limit,
            fate: reply.map(|r| r.0),
            rtt: reply.map(|r| r.1),
            place,
        }
    }

    pub fn responder(&self) -> Option<Ipv6Addr> {
        self.fate.map(|f| f.by())
    }

    /// The probe's hop limit ran out in transit (RFC 4443 §3.3, code 0).
    fn expired(&self) -> bool {
        matches!(self.fate, Some(Fate::Expired { code: 0, .. }))
    }

    /// Whether the trace may go on past this hop: only while its probe expired inside the site or
    /// nothing came back. An expiry outside the site is the answer; anything else (a rejection, a
    /// reset, no route) ends the path the trace can learn from, so no higher hop limit is sent
    /// and nothing of the trace goes beyond the first router outside the site.
    pub fn lets_trace_go_on(&self) -> bool {
        self.place == Place::Silent || (self.place == Place::Inside && self.expired())
    }
}

/// Where a trace ends: the hop whose reply ends it, if any (replies may come late, so any hop
/// counts, in hop order). A responder that answers for a second hop limit ends it too: one
/// router is one hop, so the path loops or something answers for hops it is not.
pub fn trace_end(hops: &[Hop]) -> Option<&Hop> {
    end_of(hops).and_then(|(i, _)| hops.get(i))
}

/// The index of the hop that ends the trace, and of the lower hop whose responder it repeats
/// when that is why.
fn end_of(hops: &[Hop]) -> Option<(usize, Option<usize>)> {
    for (i, h) in hops.iter().enumerate() {
        let repeats = h
            .responder()
            .and_then(|r| hops[..i].iter().position(|e| e.responder() == Some(r)));
        if repeats.is_some() || !h.lets_trace_go_on() {
            return Some((i, repeats));
        }
    }
    None
}

/// The hop limit to punch with, and the evidence for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Recommendation {
    /// The lowest hop limit whose probe was seen to expire outside the site; None without such
    /// evidence.
    pub hop_limit: Option<u8>,
    /// Who answered that expiry.
    pub outside_by: Option<Ipv6Addr>,
    /// The highest hop limit whose probe expired inside the site, before the recommendation.
    pub last_local: Option<u8>,
    /// The hop limit whose reply reached the peer's side, when that ended the trace.
    pub peer_side_from: Option<u8>,
    /// The hop whose reply ended the trace without a recommendation, and that reply.
    pub ended_at: Option<u8>,
    pub ended_by: Option<Fate>,
    /// The lower hop limit the responder of `ended_at` had answered already, when that ended it.
    pub repeats: Option<u8>,
    /// Hop limits sent, and how many of them got no reply.
    pub traced: u8,
    pub silent: u8,
}

/// The lowest hop limit whose probe is seen to expire outside the site, provided no reply before
/// it ended the trace. A silent hop is skipped, never counted as a crossing.
pub fn recommend(hops: &[Hop]) -> Recommendation {
    let mut r = Recommendation {
        hop_limit: None,
        outside_by: None,
        last_local: None,
        peer_side_from: None,
        ended_at: None,
        ended_by: None,
        repeats: None,
        traced: u8::try_from(hops.len()).unwrap_or(u8::MAX),
        silent: u8::try_from(hops.iter().filter(|h| h.place == Place::Silent).count())
            .unwrap_or(u8::MAX),
    };
    let end = end_of(hops);
    let before_end = end.map_or(hops, |(i, _)| &hops[..i]);
    r.last_local = before_end
        .iter()
        .filter(|h| h.place == Place::Inside)
        .map(|h| h.hop_limit)
        .next_back();
    let Some((i, repeats)) = end else { return r };
    let h = &hops[i];
    if let Some(e) = repeats {
        r.ended_at = Some(h.hop_limit);
        r.ended_by = h.fate;
        r.repeats = Some(hops[e].hop_limit);
    } else if h.place == Place::Outside && h.expired() {
        r.hop_limit = Some(h.hop_limit);
        r.outside_by = h.responder();
    } else {
        r.ended_at = Some(h.hop_limit);
        r.ended_by = h.fate;
        if h.place == Place::PeerSide {
            r.peer_side_from = Some(h.hop_limit);
        }
    }
    r
}

impl Recommendation {
    pub fn describe(&self) -> String {
        let local = self
            .last_local
            .map_or("no responder inside the site answered".to_string(), |l| {
                format!("the last responder inside the site answered at hop {l}")
            });
        match (self.hop_limit, self.ended_at, self.ended_by) {
            (None, Some(at), Some(f)) if self.repeats.is_some() => format!(
                "no recommendation: {} answers for hop {} and again for hop {at} (a loop, or something answering for hops it is not)",
                f.by(),
                self.repeats.unwrap_or(0)
            ),
            (Some(h), _, _) => format!(
                "recommended hop limit: {h} (the lowest seen to expire outside the site, at {}; {local})",
                self.outside_by.map_or("?".to_string(), |a| a.to_string())
            ),
            (None, Some(at), Some(f)) if self.peer_side_from.is_some() => format!(
                "no safe hop limit: the probe with hop limit {at} reached the peer's side ({}) before any was seen to expire outside the site",
                f.describe()
            ),
            (None, Some(at), Some(f)) => format!(
                "no recommendation: the path ends at hop {at} ({}) before any probe was seen to expire outside the site",
                f.describe()
            ),
            _ => format!(
                "no recommendation: no probe was seen to expire outside the site (hop limits 1-{}: {} silent; {local}); silence is not evidence: give the hop limit, or the site prefix if the site is larger",
                self.traced, self.silent
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Prefix {
        "2001:db8:1::/48".parse().unwrap()
    }

    fn hop(h: u8, fate: Option<Fate>) -> Hop {
        Hop::new(h, fate.map(|f| (f, Duration::from_micros(300))), &site())
    }

    fn exp(a: &str) -> Option<Fate> {
        Some(Fate::Expired {
            by: a.parse().unwrap(),
            code: 0,
        })
    }

    fn unreach(a: &str, code: u8) -> Option<Fate> {
        Some(Fate::Unreachable {
            by: a.parse().unwrap(),
            code,
        })
    }

    #[test]
    fn the_lowest_expiry_outside_the_site() {
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, exp("2001:db8:1:1::2")),
            hop(3, exp("2001:db8:100::2")),
        ];
        let r = recommend(&hops);
        assert_eq!((r.hop_limit, r.last_local), (Some(3), Some(2)));
        assert_eq!(r.outside_by, Some("2001:db8:100::2".parse().unwrap()));
        assert_eq!(trace_end(&hops).map(|h| h.hop_limit), Some(3));
        assert!(r.describe().starts_with("recommended hop limit: 3"));
    }

    #[test]
    fn a_silent_border_firewall_is_crossed_not_counted() {
        // hop 2 drops its own time exceeded: 2 would stop at it, 3 is seen past it.
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, None),
            hop(3, exp("2001:db8:100::2")),
        ];
        assert_eq!(recommend(&hops).hop_limit, Some(3));
        assert!(hops[1].lets_trace_go_on());
    }

    #[test]
    fn silence_is_not_evidence() {
        let hops: Vec<Hop> = (1..=3).map(|h| hop(h, None)).collect();
        let r = recommend(&hops);
        assert_eq!((r.hop_limit, r.traced, r.silent), (None, 3, 3));
        assert!(
            r.describe().starts_with("no recommendation: no probe"),
            "{}",
            r.describe()
        );
        assert_eq!(trace_end(&hops), None);
        // Replies from inside only: no recommendation either.
        let r = recommend(&[hop(1, exp("2001:db8:1::1")), hop(2, None)]);
        assert_eq!((r.hop_limit, r.last_local), (None, Some(1)));
    }

    #[test]
    fn the_peer_side_before_any_outside_expiry_means_no_safe_hop_limit() {
        let rst = Some(Fate::Reset {
            by: "2001:db8:2::5".parse().unwrap(),
        });
        let hops = [hop(1, exp("2001:db8:1::1")), hop(2, rst)];
        let r = recommend(&hops);
        assert_eq!((r.hop_limit, r.peer_side_from), (None, Some(2)));
        assert_eq!(hops[1].place, Place::PeerSide);
        assert!(r.describe().starts_with("no safe hop limit"));
        assert_eq!(trace_end(&hops).map(|h| h.hop_limit), Some(2));
    }

    #[test]
    fn an_unreachable_ends_the_trace_without_a_recommendation() {
        for (by, code) in [
            ("2001:db8:1::1", 0),
            ("2001:db8:100::2", 0),
            ("2001:db8:1::1", 1),
        ] {
            let hops = [hop(1, unreach(by, code)), hop(2, exp("2001:db8:100::2"))];
            let r = recommend(&hops);
            assert_eq!(
                (r.hop_limit, r.ended_at),
                (None, Some(1)),
                "{by} code {code}"
            );
            assert!(!hops[0].lets_trace_go_on());
            assert!(r.describe().starts_with("no "), "{}", r.describe());
        }
    }

    #[test]
    fn a_time_exceeded_other_than_in_transit_is_no_expiry() {
        let reassembly = Some(Fate::Expired {
            by: "2001:db8:100::2".parse().unwrap(),
            code: 1,
        });
        assert_eq!(recommend(&[hop(1, reassembly)]).hop_limit, None);
    }

    #[test]
    fn a_responder_is_one_hop() {
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, exp("2001:db8:1::1")),
            hop(3, exp("2001:db8:100::2")),
        ];
        assert_eq!(trace_end(&hops).map(|h| h.hop_limit), Some(2));
        let r = recommend(&hops);
        assert_eq!(
            (r.hop_limit, r.ended_at, r.repeats),
            (None, Some(2), Some(1))
        );
        assert!(r.describe().contains("again for hop 2"), "{}", r.describe());
        // The same "no route" from the first router at every hop: one reply ends it, no 7.
        let nr: Vec<Hop> = (1..=6)
            .map(|h| hop(h, unreach("2001:db8:1::1", 0)))
            .collect();
        let r = recommend(&nr);
        assert_eq!((r.hop_limit, r.ended_at), (None, Some(1)));
    }

    #[test]
    fn a_late_reply_from_a_lower_hop_ends_the_trace_there() {
        let hops = [
            hop(1, exp("2001:db8:100::2")),
            hop(2, None),
            hop(3, exp("2001:db8:100:1::2")),
        ];
        assert_eq!(trace_end(&hops).map(|h| h.hop_limit), Some(1));
        assert_eq!(recommend(&hops).hop_limit, Some(1));
    }
}
