//! Capabilities: checking for the one an operation needs, naming it when it is missing, and
//! dropping every capability once the privileged sockets are open. Does I/O (capset/capget).

use caps::{CapSet, Capability};

use super::NetError;

/// The capability that sending hand-made packets needs.
pub const NET_RAW: (Capability, &str, &str) =
    (Capability::CAP_NET_RAW, "CAP_NET_RAW", "cap_net_raw");

/// The capability that TCP_REPAIR (choosing a socket's initial sequence number) needs.
pub const NET_ADMIN: (Capability, &str, &str) =
    (Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN", "cap_net_admin");

/// The capability root's `hops` (and `listen`/`connect ... auto`) keeps, permitted only, until it
/// has written the route memory into the daemon's user's directory.
pub const DAC_OVERRIDE: (Capability, &str, &str) = (
    Capability::CAP_DAC_OVERRIDE,
    "CAP_DAC_OVERRIDE",
    "cap_dac_override",
);

/// The error for an operation refused for want of a capability (the command's whole set and the
/// setcap line for it are the application edge's to say).
pub fn missing(op: &'static str, cap: (Capability, &'static str, &'static str)) -> NetError {
    NetError::MissingCapability { op, cap: cap.1 }
}

/// Whether the process holds `cap` in its effective set.
pub fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Drops every capability from the calling thread's effective, permitted and inheritable sets,
/// so that nothing it does after opening its sockets runs with privilege, and reads the sets
/// back: a set that could not be cleared is an error, and the caller stops (a security step
/// cannot fail quietly). Also for root: uid 0 without capabilities cannot open raw sockets or
/// change the network. Capabilities are per thread (capset(2)): a thread started earlier keeps
/// its own, so every thread that needs none calls this at its start.
pub fn drop_all() -> Result<(), DropError> {
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        caps::clear(None, set).map_err(|source| DropError::Caps {
            op: "clearing a capability set",
            source,
        })?;
        let left = caps::read(None, set).map_err(|source| DropError::Caps {
            op: "reading a capability set back",
            source,
        })?;
        if !left.is_empty() {
            let mut names: Vec<String> = left.iter().map(ToString::to_string).collect();
            names.sort();
            return Err(DropError::Remains(format!(
                "{} set: {}",
                format!("{set:?}").to_lowercase(),
                names.join(", ")
            )));
        }
    }
    log::debug!("capabilities dropped");
    Ok(())
}

/// [`drop_all`], but for `keep`: each stays in this thread's permitted set (not effective) if it
/// was there, for one later step to raise (`with_effective`); then [`drop_all`] ends it. The sets
/// are read back as `drop_all` does.
pub fn drop_all_keeping(keep: &[Capability]) -> Result<(), DropError> {
    let had = caps::read(None, CapSet::Permitted).map_err(|source| DropError::Caps {
        op: "reading the permitted set",
        source,
    })?;
    let kept: caps::CapsHashSet = keep.iter().copied().filter(|c| had.contains(c)).collect();
    for set in [CapSet::Effective, CapSet::Inheritable] {
        caps::clear(None, set).map_err(|source| DropError::Caps {
            op: "clearing a capability set",
            source,
        })?;
    }
    caps::set(None, CapSet::Permitted, &kept).map_err(|source| DropError::Caps {
        op: "narrowing the permitted set",
        source,
    })?;
    let left = caps::read(None, CapSet::Permitted).map_err(|source| DropError::Caps {
        op: "reading a capability set back",
        source,
    })?;
    if !left.is_subset(&kept) {
        let mut names: Vec<String> = left.difference(&kept).map(ToString::to_string).collect();
        names.sort();
        return Err(DropError::Remains(format!(
            "permitted set: {}",
            names.join(", ")
        )));
    }
    Ok(())
}

/// Clears the effective set but keeps the permitted one, so that a later step can raise a
/// capability again (`raise_permitted`); used where a privileged step repeats (connect retries).
pub fn drop_effective() {
    if let Err(e) = caps::clear(None, CapSet::Effective) {
        log::warn!("could not clear the effective capability set: {e}");
    }
}

/// Makes every permitted capability effective again (see `drop_effective`).
pub fn raise_permitted() {
    match caps::read(None, CapSet::Permitted) {
        Ok(set) => {
            if let Err(e) = caps::set(None, CapSet::Effective, &set) {
                log::warn!("could not raise the permitted capabilities: {e}");
            }
        }
        Err(e) => log::warn!("could not read the permitted capabilities: {e}"),
    }
}

/// Why giving up privilege failed (a security step: the caller must stop, not go on).
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("{op}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}")]
    Caps {
        op: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("capabilities remain after dropping them: {0}")]
    Remains(String),
}

fn os(op: &'static str, rc: libc::c_int) -> Result<(), DropError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(DropError::Os {
            op,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Empties the capability bounding set, where the process may (CAP_SETPCAP).
fn drop_bounding() -> Result<(), DropError> {
    if has(Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| DropError::Caps {
                op: "dropping the bounding set",
                source,
            })?;
        }
    }
    Ok(())
}

/// Empties the bounding set (when allowed), every capability set and the ambient set, and sets
/// no-new-privs, so that nothing this process runs can regain a capability. Checks the result.
pub fn drop_everything() -> Result<(), DropError> {
    drop_all_but(&[])
}

/// As [`drop_everything`], but `keep` stays in the permitted set (not the effective one: a thread
/// raises it for the one call that needs it, see [`with_effective`]).
fn drop_all_but(keep: &[Capability]) -> Result<(), DropError> {
    drop_bounding()?;
    // SAFETY: prctl with integer arguments.
    os("setting no-new-privs", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    let kept: caps::CapsHashSet = keep.iter().copied().collect();
    let caps_err = |op| move |source| DropError::Caps { op, source };
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Effective).map_err(caps_err("clearing the effective set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("narrowing the permitted set"))?;
    for (set, want) in [
        (CapSet::Effective, caps::CapsHashSet::new()),
        (CapSet::Permitted, kept.clone()),
        (CapSet::Ambient, caps::CapsHashSet::new()),
    ] {
        let left = caps::read(None, set).map_err(caps_err("reading the capabilities"))?;
        if left != want {
            return Err(DropError::Remains(format!("{set:?}: {left:?}")));
        }
    }
    Ok(())
}

/// Becomes `uid`/`gid` with no supplementary groups (when started as root), then drops every
/// capability but `keep`, which stays permitted and not effective (`drop_all_but`), and makes
/// the process undumpable, so that the unprivileged user cannot ptrace it or read its memory.
/// Fails closed: any step that fails is an error.
pub fn become_user(uid: u32, gid: u32, keep: &[Capability]) -> Result<(), DropError> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 || has(Capability::CAP_SETUID) {
        drop_bounding()?;
        // SAFETY: plain credential system calls; glibc applies them to every thread. KEEPCAPS
        // keeps the permitted set across the change of uid (it is narrowed to `keep` below).
        unsafe {
            os(
                "keeping capabilities",
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            )?;
            os("setgroups", libc::setgroups(0, std::ptr::null()))?;
            os("setresgid", libc::setresgid(gid, gid, gid))?;
            os("setresuid", libc::setresuid(uid, uid, uid))?;
            os(
                "ending keep-capabilities",
                libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            )?;
        }
        // SAFETY: as above.
        let (ru, eu) = unsafe { (libc::getuid(), libc::geteuid()) };
        if ru != uid || eu != uid {
            return Err(DropError::Remains(format!("uid is {ru}/{eu}, not {uid}")));
        }
    }
    drop_all_but(keep)?;
    // SAFETY: prctl with integer arguments.
    os("making the process undumpable", unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
    })
}

/// Runs `f` with `cap` raised in this thread's effective set (it must be permitted), and lowers
/// it again afterwards (one already effective is left as it is). Capability sets are per
/// thread: other threads are not affected.
pub fn with_effective<T>(
    cap: (Capability, &'static str, &'static str),
    f: impl FnOnce() -> T,
) -> T {
    if has(cap.0) {
        return f();
    }
    let raised = caps::raise(None, CapSet::Effective, cap.0);
    if let Err(e) = &raised {
        log::debug!("raising {}: {e}", cap.1);
    }
    let out = f();
    if raised.is_ok()
        && let Err(e) = caps::drop(None, CapSet::Effective, cap.0)
    {
        log::warn!("lowering {} again: {e}", cap.1);
    }
    out
}

/// Whether this process is in the initial user namespace (its uid map is the identity over every
/// uid). Capabilities held in another user namespace do not reach the host's network.
pub fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let f: Vec<&str> = m.split_whitespace().collect();
        f == ["0", "0", "4294967295"]
    })
}

/// Whether `synergy()` may send its probe itself: CAP_NET_RAW, held in the initial user namespace.
/// A process in a user namespace of its own asks the daemon, which then decides on what it holds.
pub fn can_send_raw() -> bool {
    has(NET_RAW.0) && in_initial_user_namespace()
}
