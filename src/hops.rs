//! What a hop-limit trace says: for each hop limit the responder and its place (inside the local
//! site, outside, or on the peer's side), and the hop limit to punch with — the lowest whose probe
//! crosses the last local firewall, kept below the first one that reached the peer's side (the
//! incremental learning of the SocketSynergy draft). Pure: no I/O.

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
    #[serde(serialize_with = "ser_ms")]
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
}

/// The hop limit to punch with, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Recommendation {
    /// None when no hop limit is safe: the probe reaches the peer's side before it has crossed the
    /// last local firewall.
    pub hop_limit: Option<u8>,
    /// The hop limit at which the last responder inside the site answered.
    pub last_local: Option<u8>,
    /// The lowest hop limit whose reply came from the peer's side.
    pub peer_side_from: Option<u8>,
}

/// Recommends the lowest hop limit that crosses the last local firewall (one past the last
/// responder inside `site`), but only if it stays below the first reply from the peer's side.
pub fn recommend(hops: &[Hop]) -> Recommendation {
    let peer_side_from = hops
        .iter()
        .filter(|h| h.place == Place::PeerSide)
        .map(|h| h.hop_limit)
        .min();
    let last_local = hops
        .iter()
        .filter(|h| h.place == Place::Inside && peer_side_from.is_none_or(|p| h.hop_limit < p))
        .map(|h| h.hop_limit)
        .max();
    let candidate = last_local.map_or(1, |h| h.saturating_add(1));
    let hop_limit = (peer_side_from.is_none_or(|p| candidate < p)).then_some(candidate);
    Recommendation {
        hop_limit,
        last_local,
        peer_side_from,
    }
}

impl Recommendation {
    pub fn describe(&self) -> String {
        match (self.hop_limit, self.last_local, self.peer_side_from) {
            (Some(h), Some(l), p) => format!(
                "recommended hop limit: {h} (crosses the last responder inside the site, at hop {l}{})",
                p.map(|p| format!("; replies from the peer's side start at hop {p}"))
                    .unwrap_or_default()
            ),
            (Some(h), None, _) => {
                format!("recommended hop limit: {h} (no responder inside the site answered)")
            }
            (None, l, p) => format!(
                "no safe hop limit: the probe reaches the peer's side at hop {} but the last local responder is at hop {}",
                p.unwrap_or(0),
                l.unwrap_or(0)
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

    #[test]
    fn one_past_the_last_local_responder() {
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, exp("2001:db8:1:1::2")),
            hop(3, exp("2001:db8:100::2")),
            hop(4, None),
            hop(5, None),
        ];
        let r = recommend(&hops);
        assert_eq!(
            (r.hop_limit, r.last_local, r.peer_side_from),
            (Some(3), Some(2), None)
        );
    }

    #[test]
    fn stays_below_the_peer_side() {
        let rst = Some(Fate::Reset {
            by: "2001:db8:2::5".parse().unwrap(),
        });
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, exp("2001:db8:100::2")),
            hop(3, exp("2001:db8:100:1::2")),
            hop(4, rst),
        ];
        let r = recommend(&hops);
        assert_eq!((r.hop_limit, r.peer_side_from), (Some(2), Some(4)));
        assert_eq!(hops[3].place, Place::PeerSide);
    }

    #[test]
    fn empty_range_is_said() {
        let rej = Some(Fate::Unreachable {
            by: "2001:db8:100::2".parse().unwrap(),
            code: 1,
        });
        let hops = [
            hop(1, exp("2001:db8:1::1")),
            hop(2, rej),
            hop(3, exp("2001:db8:1:1::2")),
        ];
        let r = recommend(&hops);
        assert_eq!(r.hop_limit, None);
        assert!(r.describe().starts_with("no safe hop limit"));
    }

    #[test]
    fn silent_site_means_one() {
        let r = recommend(&[hop(1, None), hop(2, exp("2001:db8:100::2"))]);
        assert_eq!(r.hop_limit, Some(1));
    }
}
