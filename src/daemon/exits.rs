//! Ends the kept flows of a process that has exited: the daemon holds a pidfd of each process that
//! keeps flows (SO_PEERPIDFD of its connection: that process, no pid reuse can stand in for it) in
//! an epoll set, and a thread of its own removes the process's flows from the keeper as soon as it
//! exits, whoever holds its sockets then (a child that inherited them, a process they were passed
//! to). Does I/O.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::keep;

/// Whether the process of a pidfd has exited (the pidfd polls readable then; an error counts as
/// exited: nothing is kept for a process that cannot be watched).
fn exited(pidfd: &OwnedFd) -> bool {
    crate::net::poll_one(
        std::os::fd::AsFd::as_fd(pidfd),
        libc::POLLIN,
        Some(std::time::Duration::ZERO),
    )
    .map_or(true, |n| n > 0)
}

/// Processes of one uid watched at most (each holds a pidfd, a descriptor of the daemon's).
pub const PROCESSES_PER_UID: usize = 256;

/// Why a process could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the uid already has {0} processes keeping flows")]
    Busy(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The processes watched, by pid (with their pidfd and uid), and the epoll set their pidfds are
/// in; and the keeper whose flows they end.
pub struct Exits {
    epoll: OwnedFd,
    watched: Mutex<HashMap<i32, (OwnedFd, u32)>>,
    keeper: keep::Shared,
}

impl Exits {
    /// Starts the thread that ends an exited process's flows in `keeper`.
    pub fn start(keeper: keep::Shared) -> std::io::Result<Arc<Exits>> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let exits = Arc::new(Exits {
            // SAFETY: just created, owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: Mutex::default(),
            keeper,
        });
        let e = Arc::clone(&exits);
        std::thread::Builder::new()
            .name("exit-watch".into())
            .spawn(move || {
                if let Err(err) = crate::net::privilege::drop_all() {
                    log::error!(
                        "the exit watch could not give up its capabilities: {}",
                        crate::with_causes(&err)
                    );
                    return;
                }
                e.run()
            })?;
        Ok(exits)
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (OwnedFd, u32)>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches process `pid` (of `uid`) through `pidfd` (its connection's SO_PEERPIDFD), unless a
    /// pidfd of the same live process is watched already. A pid whose watched process has exited
    /// (and been reused by this one before the exit was handled) gets the new pidfd. A process
    /// that has exited already has its flows ended at once: call this after adding its flow.
    pub fn watch(&self, pid: i32, uid: u32, pidfd: OwnedFd) -> Result<(), WatchError> {
        let mut w = self.watched();
        if w.get(&pid).is_some_and(|(old, _)| !exited(old)) {
            return Ok(());
        }
        let of_uid = w.values().filter(|(_, u)| *u == uid).count();
        if !w.contains_key(&pid) && of_uid >= PROCESSES_PER_UID {
            return Err(WatchError::Busy(PROCESSES_PER_UID));
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: pid as u32 as u64,
        };
        // SAFETY: adding a valid descriptor to our epoll set with a valid event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let gone = exited(&pidfd);
        // An older pidfd under this pid leaves the epoll set as it is closed here.
        w.insert(pid, (pidfd, uid));
        drop(w);
        if gone {
            self.ended(pid);
        }
        Ok(())
    }

    /// Process `pid` has exited: forget it (only if its watched pidfd is the exited one: a newer
    /// one for a reused pid stays) and end its flows.
    fn ended(&self, pid: i32) {
        let mut w = self.watched();
        if !w.get(&pid).is_some_and(|(fd, _)| exited(fd)) {
            return;
        }
        w.remove(&pid);
        drop(w);
        let ended = self.keeper.lock().remove_process(pid);
        if ended > 0 {
            log::info!("pid {pid} exited: stopped keeping its {ended} flow(s)");
        }
    }

    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: waiting on our epoll set into a buffer of 64 events.
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::warn!("exit watch: {e}");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                continue;
            }
            for ev in &events[..n as usize] {
                self.ended(ev.u64 as u32 as i32);
            }
        }
    }
}
