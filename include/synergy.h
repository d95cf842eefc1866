/* synergy.h — the synergy() call of synergy-craft (libsynergy_craft.so), with the semantics of
 * Rick van Rein's SocketSynergy: punch a hole in the local stateful firewalls for a socket's flow
 * by sending a TCP SYN, UDP datagram or SCTP INIT whose hop limit expires before the remote ones.
 *
 * Call it between bind()/listen() and accept() (TCP, SCTP), or after bind() and before connect()
 * (UDP). With CAP_NET_RAW the library sends the probe itself; without it, it passes the socket to
 * the synergy-craft daemon ($SYNERGY_DAEMON_SOCKET, default /run/synergy-craft/synergy.sock).
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
 *   ERANGE          the hop limit is outside the daemon's range
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
 * Note for TCP through a strict conntrack firewall (nf_conntrack_tcp_be_liberal=0): a listener
 * answers with its own initial sequence number, unrelated to the probe's, and conntrack then drops
 * its segments as INVALID. `synergy-craft listen` (and the Rust API's tcp_accept_from) avoid this;
 * see docs/LAB.md.
 */
#ifndef SYNERGY_CRAFT_H
#define SYNERGY_CRAFT_H

#include <stdint.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

int synergy(int sockfd, uint8_t hoplimit, struct sockaddr_in6 *peer);

#ifdef __cplusplus
}
#endif

#endif
