//! Route memory, as the SocketSynergy draft asks: "a host should store the values learnt as a
//! route-dependent maximum Hop Limit". A per-host table of hop-limit ranges, learnt per route (the
//! outgoing interface and next hop, or the on-link prefix) from `hops` runs (the minimum that
//! crosses the last local firewall; a maximum when the trace reached the peer's side) and from
//! refusals of punches (a TCP reset, an SCTP ABORT or an ICMPv6 administratively-prohibited: the
//! hop limit reached the peer's side, so the maximum becomes one less), and set by the operator per
//! destination prefix (`daemon --hop-range`). "auto" chooses from it. Its text form is the state
//! file (`store` reads and writes it). Pure: no I/O.

pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use thiserror::Error;

pub use crate::net::route::RouteKey;
use crate::param::Prefix;

/// Where a bound came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `daemon --hop-range`.
    Operator,
    /// A `hops` trace.
    Hops,
    /// A TCP RST in answer to a punch.
    Reset,
    /// An SCTP ABORT in answer to a punch.
    Abort,
    /// An ICMPv6 administratively-prohibited (or other rejection) from outside the local site.
    Prohibited,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Operator => "operator",
            Source::Hops => "hops",
            Source::Reset => "reset",
            Source::Abort => "abort",
            Source::Prohibited => "prohibited",
        }
    }
}

impl FromStr for Source {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [
            Source::Operator,
            Source::Hops,
            Source::Reset,
            Source::Abort,
            Source::Prohibited,
        ]
        .into_iter()
        .find(|x| x.name() == s)
        .ok_or(())
    }
}

/// One end of a range: the hop limit, where it came from and when (Unix seconds; 0 for the
/// operator's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bound {
    pub value: u8,
    pub from: Source,
    pub at: u64,
}

/// What is known of one route: the lowest hop limit that crosses every local firewall and the
/// highest that does not reach the peer's side. Either may be unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub min: Option<Bound>,
    pub max: Option<Bound>,
}

impl Range {
    /// Whether the bounds contradict each other (nothing can be chosen): to be reported.
    pub fn is_empty(&self) -> bool {
        matches!((self.min, self.max), (Some(a), Some(b)) if a.value > b.value)
    }

    /// The narrower of two ranges: the higher minimum, the lower maximum.
    fn narrow(self, other: Range) -> Range {
        let pick = |a: Option<Bound>, b: Option<Bound>, higher: bool| match (a, b) {
            (Some(x), Some(y)) => Some(if (x.value > y.value) == higher { x } else { y }),
            (x, y) => x.or(y),
        };
        Range {
            min: pick(self.min, other.min, true),
            max: pick(self.max, other.max, false),
        }
    }

    /// The hop limit "auto" uses: the maximum when known (the highest not known to reach the
    /// peer's side: it crosses every local firewall the minimum crosses, and more), else the
    /// minimum (just enough to cross the last local firewall the trace saw). A refusal of an auto
    /// punch from the peer's side lowers the maximum by one: the draft's incremental learning.
    pub fn choose(&self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        self.max.or(self.min).map(|b| b.value)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |b: Option<Bound>| match b {
            Some(b) => format!("{} ({})", b.value, b.from.name()),
            None => "?".to_string(),
        };
        write!(f, "{}-{}", end(self.min), end(self.max))
    }
}

/// Why "auto" has no hop limit for a destination.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AutoError {
    #[error(
        "no hop limit is known for {dst} (route {route}): run `synergy-craft hops` toward it, or \
         set one with `daemon --hop-range`"
    )]
    Unknown { dst: Ipv6Addr, route: String },
    #[error("the hop-limit range for {dst} (route {route}) is empty: {range}")]
    Empty {
        dst: Ipv6Addr,
        route: String,
        range: Range,
    },
}

/// What a refusal taught (`Table::learn_refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lesson {
    /// The route's maximum is lower now: its range.
    Lowered(Range),
    /// Nothing new: the maximum was that low already.
    Known,
    /// Not learnt: the maximum would fall below the minimum known for the destination.
    Contradicts(Bound),
    /// Not learnt: the maximum would fall below the daemon's lowest hop limit.
    BelowFloor(u8),
    /// Not learnt: nothing is known of what crosses the local firewalls toward the destination.
    NoMinimum,
}

/// What a row is keyed by: a route (learnt), or a destination prefix (the operator's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Route(RouteKey),
    Prefix(Ipv6Addr, u8),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Route(k) => write!(f, "route {k}"),
            Place::Prefix(a, l) => write!(f, "prefix {a}/{l}"),
        }
    }
}

/// One row as `routes --json` and `status` show it (docs/JSON.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowView {
    /// `via` (a next hop), `on_link` (a prefix on an interface), `operator` (a destination
    /// prefix set with `daemon --hop-range`).
    pub kind: &'static str,
    /// The row's key as the text form writes it.
    pub route: String,
    pub next_hop: Option<Ipv6Addr>,
    pub dev: Option<String>,
    pub prefix: Option<String>,
    pub min: Option<Bound>,
    pub max: Option<Bound>,
    /// The bounds contradict each other: "auto" refuses this route.
    pub empty: bool,
}

/// The table: learnt ranges by route, the operator's by prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    rows: BTreeMap<Place, Range>,
}

/// The first line of the state file: its format and version.
pub const HEADER: &str = "synergy-craft routes 1";

/// A state file line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

impl Table {
    pub fn rows(&self) -> impl Iterator<Item = (&Place, &Range)> {
        self.rows.iter()
    }

    /// Every row as shown (`RowView`), in the table's order.
    pub fn views(&self) -> Vec<RowView> {
        self.rows
            .iter()
            .map(|(p, r)| {
                let (kind, next_hop, dev, prefix) = match p {
                    Place::Route(RouteKey::Via { dev, gateway }) => {
                        ("via", Some(*gateway), Some(dev.clone()), None)
                    }
                    Place::Route(RouteKey::OnLink { dev, prefix, len }) => (
                        "on_link",
                        None,
                        Some(dev.clone()),
                        Some(format!("{prefix}/{len}")),
                    ),
                    Place::Prefix(a, l) => ("operator", None, None, Some(format!("{a}/{l}"))),
                };
                RowView {
                    kind,
                    route: match p {
                        Place::Route(k) => k.to_string(),
                        Place::Prefix(a, l) => format!("{a}/{l}"),
                    },
                    next_hop,
                    dev,
                    prefix,
                    min: r.min,
                    max: r.max,
                    empty: r.is_empty(),
                }
            })
            .collect()
    }

    /// The range for a destination whose route is `key`: the route's learnt range narrowed by
    /// the operator's for the longest prefix holding `dst`.
    pub fn range_for(&self, key: &RouteKey, dst: Ipv6Addr) -> Range {
        let learnt = self
            .rows
            .get(&Place::Route(key.clone()))
            .copied()
            .unwrap_or_default();
        let operator = self
            .rows
            .iter()
            .filter_map(|(p, r)| match p {
                Place::Prefix(a, l) if Prefix::of(dst, *l).addr == *a => Some((*l, *r)),
                _ => None,
            })
            .max_by_key(|(l, _)| *l)
            .map(|(_, r)| r)
            .unwrap_or_default();
        learnt.narrow(operator)
    }

    /// The hop limit "auto" uses toward `dst` (route `key`), or why there is none.
    pub fn auto(&self, key: &RouteKey, dst: Ipv6Addr) -> Result<u8, AutoError> {
        let range = self.range_for(key, dst);
        if range.is_empty() {
            return Err(AutoError::Empty {
                dst,
                route: key.to_string(),
                range,
            });
        }
        range.choose().ok_or_else(|| AutoError::Unknown {
            dst,
            route: key.to_string(),
        })
    }

    /// The operator's ranges replace every earlier operator row (`daemon --hop-range`, at start).
    pub fn set_operator(&mut self, ranges: &[(Prefix, u8, u8)]) {
        self.rows.retain(|p, _| !matches!(p, Place::Prefix(..)));
        for (p, min, max) in ranges {
            let b = |value| {
                Some(Bound {
                    value,
                    from: Source::Operator,
                    at: 0,
                })
            };
            self.rows.insert(
                Place::Prefix(p.addr, p.len),
                Range {
                    min: b(*min),
                    max: b(*max),
                },
            );
        }
    }

    /// What a `hops` trace found for route `key`: the lowest hop limit seen to expire outside the
    /// site (the new minimum), and the highest that stayed off the peer's side when the trace
    /// reached it (the new maximum).
    pub fn learn_trace(&mut self, key: &RouteKey, min: Option<u8>, max: Option<u8>, at: u64) {
        let r = self.rows.entry(Place::Route(key.clone())).or_default();
        let b = |value| Bound {
            value,
            from: Source::Hops,
            at,
        };
        if let Some(m) = min {
            r.min = Some(b(m));
        }
        if let Some(m) = max {
            r.max = Some(b(m));
        }
    }

    /// An auto punch toward `dst` with `hop_limit` was refused from the peer's side (`from`): the
    /// route's maximum becomes one less, if that is lower than what is known. Only toward a
    /// destination whose minimum (what crosses the local firewalls) is known, and never below it
    /// nor below `floor` (the daemon's `--min-hop`): a refusal that says otherwise contradicts that
    /// knowledge and is reported, not learnt, so that no answer (forged, or from a destination
    /// nearer than the peers) can empty a route's range for everyone.
    pub fn learn_refusal(
        &mut self,
        key: &RouteKey,
        dst: Ipv6Addr,
        hop_limit: u8,
        from: Source,
        at: u64,
        floor: u8,
    ) -> Lesson {
        let value = hop_limit.saturating_sub(1);
        // Only where it is known what crosses the local firewalls toward `dst` can a refusal be
        // told from a destination nearer than them (a router next door answers too).
        let Some(min) = self.range_for(key, dst).min else {
            return Lesson::NoMinimum;
        };
        if min.value > value {
            return Lesson::Contradicts(min);
        }
        if value < floor {
            return Lesson::BelowFloor(floor);
        }
        let r = self.rows.entry(Place::Route(key.clone())).or_default();
        if r.max.is_some_and(|m| m.value <= value) {
            return Lesson::Known;
        }
        r.max = Some(Bound { value, from, at });
        Lesson::Lowered(*r)
    }

    /// The learnt rows of `other` (a newer read of the file) replace this table's.
    pub fn merge_learnt(&mut self, other: &Table) {
        for (p, r) in &other.rows {
            if matches!(p, Place::Route(_)) {
                self.rows.insert(p.clone(), *r);
            }
        }
    }

    /// The state file's text: the header, then one line per row, fields separated by tabs:
    /// `route KEY` or `prefix ADDR/LEN`, then the minimum and the maximum, each `-` or
    /// `VALUE SOURCE UNIX-SECONDS`.
    pub fn to_text(&self) -> String {
        let end = |b: Option<Bound>| match b {
            Some(b) => format!("{} {} {}", b.value, b.from.name(), b.at),
            None => "-".to_string(),
        };
        let mut s = format!("{HEADER}\n");
        for (p, r) in &self.rows {
            s.push_str(&format!("{p}\t{}\t{}\n", end(r.min), end(r.max)));
        }
        s
    }

    /// Reads what [`Table::to_text`] writes; anything else is an error naming the line.
    pub fn from_text(text: &str) -> Result<Table, ParseError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h == HEADER => {}
            _ => {
                return Err(ParseError {
                    line: 1,
                    why: format!("the first line is not {HEADER:?}"),
                });
            }
        }
        let mut t = Table::default();
        for (i, line) in lines {
            let bad = |why: &str| ParseError {
                line: i + 1,
                why: why.to_string(),
            };
            let f: Vec<&str> = line.split('\t').collect();
            let [place, min, max] = f[..] else {
                return Err(bad("not three tab-separated fields"));
            };
            let place = if let Some(k) = place.strip_prefix("route ") {
                Place::Route(k.parse().map_err(|_| bad("not a route"))?)
            } else if let Some(p) = place.strip_prefix("prefix ") {
                let p: Prefix = p.parse().map_err(|_| bad("not a prefix"))?;
                Place::Prefix(p.addr, p.len)
            } else {
                return Err(bad("neither a route nor a prefix"));
            };
            let end = |s: &str| -> Result<Option<Bound>, ParseError> {
                if s == "-" {
                    return Ok(None);
                }
                let w: Vec<&str> = s.split(' ').collect();
                let [v, from, at] = w[..] else {
                    return Err(bad("a bound is not VALUE SOURCE SECONDS"));
                };
                Ok(Some(Bound {
                    value: v.parse().map_err(|_| bad("a hop limit is not 0-255"))?,
                    from: from.parse().map_err(|()| bad("unknown source"))?,
                    at: at.parse().map_err(|_| bad("a time is not a number"))?,
                }))
            };
            let r = Range {
                min: end(min)?,
                max: end(max)?,
            };
            if t.rows.insert(place, r).is_some() {
                return Err(bad("a second row for the same route or prefix"));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(gw: &str) -> RouteKey {
        RouteKey::Via {
            dev: "to-fwa1".into(),
            gateway: gw.parse().unwrap(),
        }
    }

    fn b() -> Ipv6Addr {
        "2001:db8:2::5".parse().unwrap()
    }

    #[test]
    fn nothing_known_is_reported_not_guessed() {
        let t = Table::default();
        assert!(matches!(
            t.auto(&via("fe80::1"), b()),
            Err(AutoError::Unknown { .. })
        ));
    }

    #[test]
    fn a_refusal_lowers_the_maximum_and_auto_follows() {
        let mut t = Table::default();
        let k = via("fe80::1");
        // Nothing known of the local side toward B: a refusal teaches nothing.
        assert_eq!(
            t.learn_refusal(&k, b(), 4, Source::Reset, 9, 1),
            Lesson::NoMinimum
        );
        t.learn_trace(&k, Some(1), None, 9);
        assert!(matches!(
            t.learn_refusal(&k, b(), 4, Source::Reset, 10, 1),
            Lesson::Lowered(_)
        ));
        assert_eq!(t.auto(&k, b()), Ok(3));
        // A higher refused hop limit teaches nothing new.
        assert_eq!(
            t.learn_refusal(&k, b(), 6, Source::Reset, 11, 1),
            Lesson::Known
        );
        assert_eq!(t.auto(&k, b()), Ok(3));
        assert!(matches!(
            t.learn_refusal(&k, b(), 3, Source::Prohibited, 12, 1),
            Lesson::Lowered(_)
        ));
        assert_eq!(t.auto(&k, b()), Ok(2));
        // Never below the daemon's lowest hop limit.
        assert_eq!(
            t.learn_refusal(&k, b(), 2, Source::Reset, 13, 2),
            Lesson::BelowFloor(2)
        );
        // Never below the known minimum.
        assert!(matches!(
            t.learn_refusal(&k, b(), 1, Source::Reset, 14, 0),
            Lesson::Contradicts(_)
        ));
        assert_eq!(t.auto(&k, b()), Ok(2));
        // Another route knows nothing of it.
        assert!(t.auto(&via("fe80::2"), b()).is_err());
    }

    #[test]
    fn auto_takes_the_maximum_and_no_refusal_goes_below_the_minimum() {
        let mut t = Table::default();
        let k = via("fe80::1");
        t.learn_trace(&k, Some(2), None, 5);
        assert_eq!(t.auto(&k, b()), Ok(2));
        t.set_operator(&[("2001:db8:2::/48".parse().unwrap(), 2, 5)]);
        assert_eq!(t.auto(&k, b()), Ok(5));
        assert!(matches!(
            t.learn_refusal(&k, b(), 5, Source::Reset, 6, 1),
            Lesson::Lowered(_)
        ));
        assert_eq!(t.auto(&k, b()), Ok(4));
        // A refusal at the minimum (a nearer destination's, or a forged one) is not learnt: the
        // route keeps its range for everyone.
        let near: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let m = t.learn_refusal(&k, near, 2, Source::Prohibited, 7, 1);
        assert!(
            matches!(
                m,
                Lesson::Contradicts(Bound {
                    value: 2,
                    from: Source::Hops,
                    ..
                })
            ),
            "{m:?}"
        );
        assert_eq!(t.auto(&k, b()), Ok(4));
        // Only the operator's range and a learnt maximum can still disagree: an empty range is
        // refused with both bounds named.
        t.set_operator(&[("2001:db8:2::/48".parse().unwrap(), 5, 6)]);
        let e = t.auto(&k, b()).unwrap_err();
        assert!(matches!(e, AutoError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("5 (operator)-4 (reset)"), "{e}");
    }

    #[test]
    fn the_operator_narrows_by_the_longest_prefix() {
        let mut t = Table::default();
        let k = via("fe80::1");
        t.set_operator(&[
            ("2001:db8::/32".parse().unwrap(), 1, 6),
            ("2001:db8:2::/48".parse().unwrap(), 3, 5),
        ]);
        assert_eq!(t.auto(&k, b()), Ok(5));
        assert_eq!(t.auto(&k, "2001:db8:3::7".parse().unwrap()), Ok(6));
        t.learn_refusal(&k, b(), 5, Source::Reset, 1, 1);
        let r = t.range_for(&k, b());
        assert_eq!(r.max.map(|m| (m.value, m.from)), Some((4, Source::Reset)));
        assert_eq!(
            r.min.map(|m| (m.value, m.from)),
            Some((3, Source::Operator))
        );
        // Setting the operator's ranges again replaces them all, and keeps what was learnt.
        t.set_operator(&[]);
        assert_eq!(t.auto(&k, b()), Ok(4));
    }

    #[test]
    fn the_text_round_trips_and_bad_lines_are_named() {
        let mut t = Table::default();
        t.set_operator(&[("2001:db8:2::/48".parse().unwrap(), 2, 5)]);
        t.learn_trace(&via("fe80::1"), Some(2), Some(3), 1_764_000_000);
        t.learn_refusal(
            &via("2001:db8:1::1"),
            b(),
            3,
            Source::Prohibited,
            1_764_000_001,
            1,
        );
        let text = t.to_text();
        assert_eq!(Table::from_text(&text), Ok(t));
        assert!(Table::from_text("").is_err());
        for (bad, line) in [
            (format!("{HEADER}\nroute x\t-\t-\n"), 2),
            (format!("{HEADER}\nprefix 2001:db8::/32\t-\n"), 2),
            (
                format!("{HEADER}\nprefix 2001:db8::/32\t-\t300 hops 1\n"),
                2,
            ),
            (format!("{HEADER}\nprefix 2001:db8::/32\t-\t3 guess 1\n"), 2),
            (
                format!("{HEADER}\nprefix 2001:db8::/32\t-\t-\nprefix 2001:db8::/32\t-\t-\n"),
                3,
            ),
        ] {
            assert_eq!(
                Table::from_text(&bad).map_err(|e| e.line),
                Err(line),
                "{bad}"
            );
        }
    }
}
