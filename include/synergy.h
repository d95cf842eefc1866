/* synergy.h — the synergy() call of synergy-craft (libsynergy_craft.so), with the semantics of
 * Rick van Rein's SocketSynergy: punch a hole in the local stateful firewalls for a socket's flow
 * by sending a TCP SYN, UDP datagram or SCTP INIT whose hop limit expires before the remote ones.
 *
 * Call it between bind()/listen() and accept() (TCP, SCTP), or after bind() and before connect()
 * (UDP). With CAP_NET_RAW the library sends the probe itself; without it, it passes the socket to
 * the synergy-craft daemon ($SYNERGY_DAEMON_SOCKET, default /run/synergy-craft/synergy.sock).
 *
 * Returns 0 on success, -1 with errno on failure: EAFNOSUPPORT (not an IPv6 socket), EBADF
 * (unsupported socket type), the errno of a failed getsockname()/getpeername() (peer NULL and the
 * socket not connected: ENOTCONN), EPERM (no privilege and no daemon), or what the daemon gave.
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
