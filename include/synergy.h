/* synergy.h — the synergy() call of synergy-craft (libsynergy_craft.so), with the semantics of
 * Rick van Rein's SocketSynergy: punch a hole in the local stateful firewalls for a socket's flow
 * by sending a TCP SYN, UDP datagram or SCTP packet whose hop limit expires before the remote ones.
 *
 * The sequences (docs/API.md has the details):
 *   TCP client (both sides of client/client): socket, bind, synergy(fd, hop, &peer), connect.
 *     synergy() gives the socket the probe's initial sequence number, so connect()'s SYN is the
 *     probe's twin and strict conntrack (nf_conntrack_tcp_be_liberal=0) takes it cleanly; until
 *     connect() the peer's SYN is swallowed (the port cannot be bound by another socket then); the
 *     library's connect() (or synergy_connect()) ends that hold as it connects.
 *   TCP server: socket, bind, listen, synergy(fd, hop, &peer) once per peer, accept. The peer's
 *     connection is made on another socket with the probe's sequence number (a simultaneous
 *     open) while the peer's SYNs to the listener are swallowed by a socket filter; accept()
 *     (this library's) returns it, and the listener polls readable when it is ready. Do not set
 *     a socket filter of your own on a punched listener (synergy() fails with EBUSY if one is
 *     there; one set later replaces the swallowing).
 *   UDP: socket, bind, synergy, connect.  SCTP: socket, bind, listen, synergy, accept.
 * With CAP_NET_RAW (and CAP_NET_ADMIN for TCP) the library does this itself; without, the
 * synergy-craft daemon does it ($SYNERGY_DAEMON_SOCKET, default /run/synergy-craft/synergy.sock).
 *
 * Before anything is sent (by the library with CAP_NET_RAW, or by the daemon) the kernel is asked
 * whether the socket really holds its address and port. Returns 0 on success, -1 with errno, one
 * per kind of refusal (docs/API.md has the full table):
 *   EACCES          the daemon does not admit this caller (policy, or the socket file's mode)
 *   EADDRNOTAVAIL   the source is not this host's (unassigned, ::, ::1, IPv4-mapped, freebind,
 *                   transparent, a link-local address off its interface)
 *   EADDRINUSE      another user's socket shares the address and port, or the kernel's
 *                   socket list does not show the socket
 *   EXDEV           the socket is in another network namespace than the daemon's
 *   EPROTONOSUPPORT not exactly TCP/MPTCP, UDP or SCTP (UDP-Lite, ping, raw sockets)
 *   EAFNOSUPPORT    not an IPv6 socket
 *   ENOTSOCK        not a socket
 *   EINVAL          the socket is not bound
 *   EDESTADDRREQ    the peer is unusable (multicast, ::, ::1, IPv4-mapped, this host, port 0)
 *   ENOTCONN        peer is NULL and the socket is not connected
 *   ERANGE          the hop limit is outside the daemon's range, or SYNERGY_HOP_AUTO and the
 *                   route memory has no hop limit for the peer's route (unknown, or empty)
 *   EAGAIN          the daemon's rate limit (per uid, per admitting group)
 *   EBUSY           too many requests of this uid (or group) open at once
 *   ETIMEDOUT       the request reached the daemon too late
 *   ECONNREFUSED    the daemon is unavailable (absent, not taking or answering within 5 s, or
 *                   not set up by root)
 *   EPROTO          the daemon's answer was not a valid reply
 *   EIO             the kernel could not be asked (nothing was sent)
 *   EBADF           sockfd is not an open descriptor
 *
 * $SYNERGY_DAEMON_SOCKET and $SYNERGY_DAEMON_UID are ignored in setuid/setgid programs.
 *
 * After the checks, a TCP punch can also fail with:
 *   EBUSY           the listener has a socket filter of its own
 *   EALREADY        this listener already waits for this peer
 *   ENOBUFS         the listener already waits for 64 peers
 *   EOPNOTSUPP      the listener is in an SO_REUSEPORT group
 *   EPROTONOSUPPORT (also) an MPTCP socket that is not connected
 * Through the daemon, synergy() on an unconnected TCP socket puts a new socket (same address and
 * port, the probe's sequence number, the common options copied) in place of sockfd with dup3().
 */
#ifndef SYNERGY_CRAFT_H
#define SYNERGY_CRAFT_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The hop limit that asks the route memory (`synergy-craft routes`): the highest hop limit not
 * known to reach the peer's side on the peer's route, else the lowest learnt to cross its last
 * local firewall. ERANGE when the memory knows nothing for the route, or its range is empty. */
#define SYNERGY_HOP_AUTO 0

int synergy(int sockfd, uint8_t hoplimit, struct sockaddr_in6 *peer);

/* synergy() for a UDP socket, and the hole kept open: punched again within 1/2 to 3/4 of the
 * firewalls' UDP timeout (Linux's 30 s unless the daemon is told --conntrack-timeout, or a
 * privileged program's own keeper $SYNERGY_CONNTRACK_TIMEOUT, e.g. "udp=5s"), at a random
 * point so that many kept flows spread out, until the socket is closed (the kernel is asked by the
 * socket's cookie before each punch; the socket is never held open), no longer takes peer's
 * datagrams, the calling process exits, or synergy_unkeep(). One socket may keep many peers.
 * On a TCP listener: the server sequence of synergy() with its hole kept (punched again every half
 * of the firewalls' SYN_SENT timeout, Linux's 120 s, with no time limit) until the peer's
 * connection is made (accept() returns it), the listener is closed, or the program exits.
 * Returns 0, or -1 with synergy()'s errno, and: EOPNOTSUPP for SCTP and for a TCP socket that is
 * not listening; EBUSY when this uid keeps 16384 flows (or 64 listeners) already. */
int synergy_keep(int sockfd, uint8_t hoplimit, const struct sockaddr_in6 *peer);

/* Stops keeping sockfd's flow toward peer (NULL: its connected peer). 0, or -1 with errno
 * (ENOENT: not kept for this caller). */
int synergy_unkeep(int sockfd, const struct sockaddr_in6 *peer);

/* The client sequence in one call: synergy() on the bound, unconnected TCP socket, then
 * connect() to peer (blocking, or -1/EINPROGRESS on a non-blocking socket, as connect(2)).
 * Returns 0, or -1 with errno (synergy()'s, or connect()'s). */
int synergy_connect(int sockfd, uint8_t hoplimit, const struct sockaddr_in6 *peer);

/* accept4(2) that yields a punched peer's connection when one is ready on the listener, and is
 * libc's accept4 for everything else. A program linked with -lsynergy_craft gets the same from
 * plain accept() and accept4(), which the library provides; synergy_accept() is for programs
 * that load the library otherwise (dlopen) or call libc's directly. */
int synergy_accept(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);

#ifdef __cplusplus
}
#endif

#endif
