//! What each caller may still have of the daemon: connections open at once and requests per
//! second (a token bucket). Every caller is charged
//! to its uid; a caller admitted only through a group is charged to that group too, with
//! `GROUP_FACTOR` times the room, so that a member who can switch among many uids (subordinate
//! uids in a user namespace) gets no more than that factor and never touches other groups' or
//! users' room. Pure: no I/O; time is passed in.

use std::collections::HashMap;
use std::time::Instant;

use crate::punch::check::Refusal;

/// A group has this many times a uid's room.
pub const GROUP_FACTOR: usize = 8;

/// Whose room a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account {
    Uid(u32),
    Group(u32),
}

impl Account {
    fn name(self) -> String {
        match self {
            Account::Uid(u) => format!("uid {u}"),
            Account::Group(g) => format!("group {g}"),
        }
    }
}

/// The room of one uid (a group has `GROUP_FACTOR` times each).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub open: usize,
    pub rate: u32,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct Ledger {
    open: HashMap<Account, usize>,
    buckets: HashMap<Account, Bucket>,
}

impl Ledger {
    fn scaled(limits: Limits, a: Account) -> Limits {
        match a {
            Account::Uid(_) => limits,
            Account::Group(_) => Limits {
                open: limits.open * GROUP_FACTOR,
                rate: limits.rate.saturating_mul(GROUP_FACTOR as u32),
            },
        }
    }

    /// Takes one connection and one request token for each of `accounts`, or takes nothing and
    /// says why not.
    pub fn open(
        &mut self,
        accounts: &[Account],
        limits: Limits,
        now: Instant,
    ) -> Result<(), Refusal> {
        for &a in accounts {
            let l = Self::scaled(limits, a);
            let open = self.open.get(&a).copied().unwrap_or(0);
            if open >= l.open {
                return Err(Refusal::Busy {
                    who: a.name(),
                    what: "requests open",
                    open,
                    cap: l.open,
                });
            }
            let rate = f64::from(l.rate.max(1));
            let b = self.buckets.entry(a).or_insert(Bucket {
                tokens: rate,
                at: now,
            });
            b.tokens =
                (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate);
            b.at = now;
            if b.tokens < 1.0 {
                return Err(Refusal::RateLimit {
                    who: a.name(),
                    rate: l.rate,
                });
            }
        }
        for &a in accounts {
            if let Some(b) = self.buckets.get_mut(&a) {
                b.tokens -= 1.0;
            }
            *self.open.entry(a).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Gives back the connections taken by `open`.
    pub fn close(&mut self, accounts: &[Account]) {
        for a in accounts {
            if let Some(n) = self.open.get_mut(a) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.open.remove(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const L: Limits = Limits { open: 2, rate: 100 };

    #[test]
    fn a_uid_gets_its_room_and_no_more() {
        let now = Instant::now();
        let mut l = Ledger::default();
        let me = [Account::Uid(5)];
        assert!(l.open(&me, L, now).is_ok());
        assert!(l.open(&me, L, now).is_ok());
        assert!(matches!(l.open(&me, L, now), Err(Refusal::Busy { .. })));
        // Another uid is not touched.
        assert!(l.open(&[Account::Uid(6)], L, now).is_ok());
        l.close(&me);
        assert!(l.open(&me, L, now).is_ok());
    }

    #[test]
    fn many_uids_of_one_group_share_the_groups_room() {
        let now = Instant::now();
        let mut l = Ledger::default();
        let group = Account::Group(100);
        let mut ok = 0;
        for uid in 1000..1100 {
            if l.open(&[Account::Uid(uid), group], L, now).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, L.open * GROUP_FACTOR);
        // A refused request takes nothing: the uid that was refused still has its own room.
        assert!(l.open(&[Account::Uid(1099)], L, now).is_ok());
    }

    #[test]
    fn the_rate_refuses_until_the_bucket_refills() {
        let now = Instant::now();
        let mut l = Ledger::default();
        let me = [Account::Uid(5)];
        let slow = Limits {
            open: 1000,
            rate: 3,
        };
        for _ in 0..3 {
            l.open(&me, slow, now).unwrap();
            l.close(&me);
        }
        assert!(matches!(
            l.open(&me, slow, now),
            Err(Refusal::RateLimit { .. })
        ));
        assert!(l.open(&me, slow, now + Duration::from_secs(1)).is_ok());
    }
}
