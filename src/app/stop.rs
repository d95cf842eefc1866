//! Ctrl-C and SIGTERM for runs that must still report: the first SIGINT or SIGTERM only sets a
//! flag, which the sending and watching loops check between batches, so the run stops early but
//! flushes its pcap, prints its summary and exits 128 + the signal (130, 143); a second one ends
//! the process at once. Commands without such loops (`hops`, `listen`, `connect`) report and
//! exit at the first signal instead (`exit_on_signal`). Does I/O (signal handlers).

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

/// For the commands that have no loop to stop (`hops`, `listen`, `connect`): the first SIGINT or
/// SIGTERM ends the process at once with 128 + the signal, after `report` has said so (their
/// pcap files are written as they go, so nothing is left to flush).
/// The command's own error path may see the signal first (a system call it was in fails with
/// EINTR): it asks `signalled` and `claim_report`, so that the run is reported once, as
/// interrupted.
pub fn exit_on_signal(report: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    let flag = SIGNALLED.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(flag), sig as usize)?;
    }
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // This thread needs no privilege, and capabilities are per thread.
            if let Err(e) = crate::net::privilege::drop_all() {
                eprintln!(
                    "synergy-craft: the signal thread could not give up its capabilities: {}",
                    crate::with_causes(&e)
                );
                std::process::exit(1);
            }
            if let Some(sig) = signals.forever().next()
                && claim_report()
            {
                // Whatever the report meets (a closed stdout panics println!), the process ends:
                // the main thread, which saw the report claimed, waits for this exit.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report(sig)));
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

static SIGNALLED: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The signal that has come to a command under `exit_on_signal`, if one has.
pub fn signalled() -> Option<i32> {
    let s = SIGNALLED.get()?.load(Ordering::SeqCst);
    (s != 0).then(|| i32::try_from(s).ok()).flatten()
}

/// Claims the one report of how the run ended: false when the signal thread has it (and is
/// about to exit the process).
pub fn claim_report() -> bool {
    !REPORTED.swap(true, Ordering::SeqCst)
}

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
