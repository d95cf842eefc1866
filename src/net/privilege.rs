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

/// The error for an operation refused for want of a capability, with the `setcap` line that grants it.
pub fn missing(op: &'static str, cap: (Capability, &'static str, &'static str)) -> NetError {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "synergy-craft".to_string());
    NetError::MissingCapability {
        op,
        cap: cap.1,
        setcap: cap.2,
        exe,
    }
}

/// Whether the process holds `cap` in its effective set.
pub fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Drops every capability from the effective, permitted and inheritable sets, so that nothing the
/// process does after opening its sockets runs with privilege. Also for root: uid 0 without
/// capabilities cannot open raw sockets or change the network.
pub fn drop_all() {
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        if let Err(e) = caps::clear(None, set) {
            log::warn!("could not clear the {set:?} capability set: {e}");
        }
    }
    log::debug!("capabilities dropped");
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
