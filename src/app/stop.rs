//! Ctrl-C and SIGTERM for runs that must still report: the first SIGINT or SIGTERM only sets a
//! flag, which the sending and watching loops check between batches, so the run stops early but
//! flushes its pcap, prints its summary and exits 128 + the signal (130, 143); a second one ends
//! the process at once. Does I/O (signal handlers).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether, and by which signal, the run was asked to stop.
#[derive(Clone)]
pub struct Stop {
    signal: Arc<AtomicUsize>,
}

/// The run was stopped by a signal; its output is complete up to there.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}: stopped early, the output up to there is complete", signal_name(*.0))]
pub struct Interrupted(pub i32);

/// The name of a signal that stops a run.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

impl Stop {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<Self> {
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // A second signal while the flag is set ends the process with the usual status.
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))?;
            signal_hook::flag::register(sig, flag)?;
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
        }
        Ok(Stop { signal })
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        match self.signal.load(Ordering::Relaxed) {
            0 => None,
            s => i32::try_from(s).ok(),
        }
    }

    /// Err(Interrupted) if a signal asked the run to stop.
    pub fn check(&self) -> Result<(), Interrupted> {
        self.requested().map_or(Ok(()), |s| Err(Interrupted(s)))
    }
}
