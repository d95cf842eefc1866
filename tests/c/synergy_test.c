/* synergy_test.c — a C program that uses synergy() from libsynergy_craft.so the way SocketSynergy
 * programs do, for the lab tests.
 *
 *   synergy_test tcp|udp LOCAL LPORT PEER PPORT HOPLIMIT
 *       bind, (listen,) synergy(), then wait up to 10 s for PEER: print the first line it sends,
 *       answer "hello from C", exit 0; exit 1 with a message on failure.
 *   synergy_test errno
 *       checks the error semantics (EAFNOSUPPORT, EBADF, ENOTCONN, ENOTSOCK); exit 0 if all hold.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "synergy.h"

static int fail(const char *what) {
    fprintf(stderr, "synergy_test: %s: %s\n", what, strerror(errno));
    return 1;
}

static int addr6(const char *ip, const char *port, struct sockaddr_in6 *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons((uint16_t)atoi(port));
    return inet_pton(AF_INET6, ip, &sa->sin6_addr) == 1 ? 0 : -1;
}

static int expect(const char *name, int rc, int want) {
    if (rc == -1 && errno == want) {
        printf("ok %s: errno %d\n", name, want);
        return 0;
    }
    printf("FAIL %s: rc %d errno %d (%s), want errno %d\n", name, rc, errno, strerror(errno), want);
    return 1;
}

static int errno_checks(void) {
    int bad = 0;
    struct sockaddr_in6 peer;
    addr6("2001:db8:2::5", "5555", &peer);

    int v4 = socket(AF_INET, SOCK_DGRAM, 0);
    bad |= expect("IPv4 socket", synergy(v4, 2, &peer), EAFNOSUPPORT);

    int raw = socket(AF_INET6, SOCK_RAW, IPPROTO_UDP);
    if (raw < 0) return fail("raw socket (run as root)");
    bad |= expect("raw IPv6 socket", synergy(raw, 2, &peer), EBADF);

    int udp = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 local;
    addr6("::", "7001", &local);
    if (bind(udp, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    bad |= expect("unconnected socket, no peer", synergy(udp, 2, NULL), ENOTCONN);

    int file = open("/dev/null", O_RDONLY);
    bad |= expect("not a socket", synergy(file, 2, &peer), ENOTSOCK);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "errno") == 0) return errno_checks();
    if (argc != 7) {
        fprintf(stderr, "usage: synergy_test tcp|udp LOCAL LPORT PEER PPORT HOPLIMIT | errno\n");
        return 2;
    }
    int tcp = strcmp(argv[1], "tcp") == 0;
    struct sockaddr_in6 local, peer;
    if (addr6(argv[2], argv[3], &local) < 0 || addr6(argv[4], argv[5], &peer) < 0) {
        fprintf(stderr, "synergy_test: bad address\n");
        return 2;
    }
    int fd = socket(AF_INET6, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    if (tcp && listen(fd, 1) < 0) return fail("listen");
    if (synergy(fd, (uint8_t)atoi(argv[6]), &peer) < 0) return fail("synergy");
    printf("punched\n");
    fflush(stdout);

    int conn = fd;
    if (!tcp && connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) return fail("connect");
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) {
        fprintf(stderr, "synergy_test: the peer did not come within 10 s\n");
        return 1;
    }
    if (tcp) {
        conn = accept(fd, NULL, NULL);
        if (conn < 0) return fail("accept");
        struct pollfd q = {conn, POLLIN, 0};
        if (poll(&q, 1, 5000) != 1) {
            fprintf(stderr, "synergy_test: no data from the peer\n");
            return 1;
        }
    }
    char buf[512];
    ssize_t n = recv(conn, buf, sizeof buf - 1, 0);
    if (n < 0) return fail("recv");
    buf[n] = 0;
    printf("got: %s", buf);
    const char *answer = "hello from C\n";
    if (send(conn, answer, strlen(answer), 0) < 0) return fail("send");
    if (tcp) shutdown(conn, SHUT_WR);
    usleep(300000);
    return 0;
}
