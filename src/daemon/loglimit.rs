//! The daemon's refusal log: each refusal at WARN, but at most `PER_WINDOW` lines per uid in each
//! `WINDOW`; the rest are counted and said in one summary line, so a flood cannot fill the log.
//! Does I/O (logging).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::net::fdpass::PeerCred;
use crate::punch::check::Refusal;

pub const WINDOW: Duration = Duration::from_secs(10);
pub const PER_WINDOW: u32 = 5;

struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

#[derive(Default)]
pub struct RefusalLog {
    by_uid: Mutex<HashMap<u32, Window>>,
}

impl RefusalLog {
    pub fn refused(&self, cred: &PeerCred, r: &Refusal) {
        let now = Instant::now();
        let mut map = self.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.entry(cred.uid).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            if w.suppressed > 0 {
                log::warn!(
                    "uid {}: {} more refusals in {} s were not logged one by one",
                    cred.uid,
                    w.suppressed,
                    now.duration_since(w.start).as_secs()
                );
            }
            *w = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < PER_WINDOW {
            w.logged += 1;
            log::warn!(
                "pid {} uid {} gid {}: refused: {}",
                cred.pid,
                cred.uid,
                cred.gid,
                crate::with_causes(r)
            );
            if w.logged == PER_WINDOW {
                log::warn!(
                    "uid {}: further refusals in this {} s window are counted, not logged",
                    cred.uid,
                    WINDOW.as_secs()
                );
            }
        } else {
            w.suppressed += 1;
        }
    }
}
