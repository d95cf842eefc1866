//! The keeper's thread with real I/O: whether a kept socket still exists is asked of the kernel
//! by its cookie (`net::sockdiag::Link`, one exact lookup per punch, the socket never held open),
//! and each flow is punched again through one raw socket opened before. Used by the daemon and,
//! for a privileged program, by the library. Does I/O.

use crate::keep::{self, Kept, Probe, Timeouts};
use crate::net::raw::RawSender;
use crate::net::sockdiag;
use crate::net::{NetError, privilege};
use crate::param::HopLimit;
use crate::punch::check::Proto;
use crate::wire::probe::ProbeRepr;

/// Starts the keeper's thread: it gives up every capability it has (the raw socket is open
/// already), then runs [`keep::serve`]. `sent` is told of every punch just before it is sent (the
/// daemon learns from the answers to them).
pub fn start(
    sender: RawSender,
    timeouts: Timeouts,
    sent: impl Fn(&Kept, &Probe) + Send + 'static,
) -> Result<keep::Shared, NetError> {
    let link = sockdiag::Link::open()
        .map_err(|e| NetError::io("opening sock_diag for the keeper", "NETLINK_SOCK_DIAG", e))?;
    let shared = keep::Shared::new(keep::Keeper::new(
        timeouts,
        u64::from(crate::net::random_u32()) << 32 | u64::from(crate::net::random_u32()),
    ));
    let k = shared.clone();
    std::thread::Builder::new()
        .name("synergy-keeper".into())
        .spawn(move || {
            if let Err(e) = privilege::drop_all() {
                // Fails closed: no flow is punched by a thread that kept privilege it need not.
                log::error!(
                    "the keeper could not give up its capabilities: {}",
                    crate::with_causes(&e)
                );
                return;
            }
            keep::serve(
                &k,
                |flows| alive(&link, flows),
                |f, probe| {
                    // Told before the punch goes out: its answer may come before send() returns.
                    sent(f, probe);
                    punch(&sender, f, probe).map_or_else(
                        |e| {
                            log::warn!("keeper: {}", crate::with_causes(&e));
                            false
                        },
                        |()| true,
                    )
                },
            )
        })
        .map_err(|e| NetError::io("starting the keeper's thread", "synergy-keeper", e))?;
    Ok(shared)
}

/// Whether each kept flow's socket still exists and takes the peer's datagrams (only UDP flows
/// are kept: `Refusal::KeepProto`).
fn alive(link: &sockdiag::Link, flows: &[Kept]) -> Vec<std::io::Result<bool>> {
    let asked: Vec<_> = flows.iter().map(|f| (f.local, f.peer, f.cookie)).collect();
    link.udp_sockets(&asked)
        .into_iter()
        .zip(flows)
        .map(|(a, f)| match f.proto {
            Proto::Udp => a.map(|s| s.is_some()),
            Proto::Tcp | Proto::Sctp => Ok(false),
        })
        .collect()
}

/// The kept flow's probe, built once: the punch `synergy()` sends for it (a UDP datagram: only
/// UDP flows are kept).
pub fn probe_of(f: &Kept) -> Result<Probe, NetError> {
    let repr: ProbeRepr = super::plan::probe_for(
        super::plan::Flow::Udp,
        f.local,
        f.peer,
        HopLimit(f.hop_limit),
    );
    let (bytes, checksum) = repr.to_bytes()?;
    Ok(Probe {
        bytes: bytes.into(),
        key: crate::reply::ProbeKey::of(&repr, checksum),
    })
}

/// Sends a kept flow's probe.
pub fn punch(sender: &RawSender, f: &Kept, probe: &Probe) -> Result<(), NetError> {
    sender.send(&probe.bytes, *f.peer.ip(), f.peer.scope_id())?;
    Ok(())
}
