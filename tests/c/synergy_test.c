/* synergy_test.c — a C program that uses synergy() from libsynergy_craft.so the way SocketSynergy
 * programs do, for the lab tests.
 *
 *   synergy_test tcp|udp LOCAL LPORT PEER PPORT HOPLIMIT
 *       bind, (listen,) synergy(), then wait up to 10 s for PEER: print the first line it sends,
 *       answer "hello from C", exit 0; exit 1 with a message on failure.
 *   synergy_test errno LOCAL
 *       checks the error semantics (EAFNOSUPPORT, EPROTONOSUPPORT, ENOTCONN, ENOTSOCK) with
 *       sockets bound to LOCAL; exit 0 if all hold.
 *   synergy_test try tcp|udp|udplite|ping|mptcp LOCAL LPORT PEER PPORT HOPLIMIT [freebind]
 *                    [reuseaddr] [reuseport] [transparent] [mapped] [stale] [listen] [filter]
 *       makes the socket as asked (an attacker's socket, for the daemon's checks; "stale": connect
 *       it to a closed port on LOCAL first, so that the port it was given is released), calls
 *       synergy() once and prints "result 0" or "result -1 errno N NAME"; exit 0 if the call was
 *       made, 3 if the socket could not be set up.
 *   synergy_test stall SOCKPATH IDLE
 *       tries to pass the daemon a TCP socket whose last close blocks (SO_LINGER 1 h, a full send
 *       queue to a loopback peer that never reads), after the daemon's first line ("ready" when
 *       admitted), then opens IDLE connections that never send; prints "stalling: passed" or
 *       "stalling: refused (ERRNO)" and holds everything until stdin closes.
 *   synergy_test keep N LOCAL LPORT PEER PPORT HOPLIMIT
 *       N UDP sockets bound to LOCAL:LPORT+i, each kept open toward PEER:PPORT+i with
 *       synergy_keep() (HOPLIMIT 0: SYNERGY_HOP_AUTO); prints "kept N" (or "keep I: errno E NAME"
 *       and exits 1), then counts the sockets that receive a datagram from their peer until
 *       stdin closes, printing "heard K" each time K grows, and "heard K of N" at the end. The
 *       sockets close as it exits. With $SYNERGY_TEST_KEEP_FORK set, it forks after "kept N":
 *       the parent prints "forked PID" and exits, the child holds the sockets and goes on.
 *   synergy_test send N LOCAL LPORT PEER PPORT
 *       one datagram "hello I" from LOCAL:LPORT+i to PEER:PPORT+i for each i < N (no punch: the
 *       peer's side of `keep`); prints "sent N".
 *   synergy_test unkeep LOCAL LPORT PEER PPORT HOPLIMIT
 *       synergy_keep() then synergy_unkeep() twice on one socket; prints "keep R", "unkeep R" and
 *       "unkeep again R" (R: 0, or -1 errno NAME), then holds the socket until stdin closes.
 *   synergy_test time udp LOCAL LPORT PEER PPORT HOPLIMIT
 *       one synergy() call; prints "answered in N us" and the result.
 *   synergy_test server LOCAL LPORT HOPLIMIT NCONN blocking|poll|epoll PEER PPORT [PEER PPORT ...]
 *       the draft's server sequence: socket, bind, listen, synergy() once per PEER, then accept()
 *       NCONN connections (blocking accept, or after poll()/epoll_wait() readiness on a
 *       non-blocking listener); for each prints "accepted [ADDR]:PORT" and "got [ADDR]:PORT: LINE",
 *       answers "hello from C". Exit 0 after NCONN connections, 1 on failure (30 s at most). With
 *       $SYNERGY_TEST_KEEP set it calls synergy_keep() instead of synergy().
 *   synergy_test client LOCAL LPORT PEER PPORT HOPLIMIT
 *       the draft's client sequence: socket, bind, synergy(), connect(); a refused or timed-out
 *       attempt is repeated with a fresh socket (as a real program does) for up to 25 s. Sends
 *       "hello from C", prints "got: LINE" for the peer's line; exit 0. With
 *       $SYNERGY_TEST_CONNECT_DELAY_MS it waits that long between synergy() and connect().
 *   synergy_test launder LOCAL LPORT PEER PPORT HOPLIMIT OTHER OPORT
 *       synergy() toward PEER on a bound TCP socket, then connect() it to OTHER instead (a
 *       caller trying to use a socket the daemon made under its own user elsewhere); prints
 *       "connected" or "not connected" after at most 3 s, and whether SO_DETACH_FILTER worked.
 *   synergy_test repairrace LOCAL LPORT PEER PPORT HOPLIMIT ROUNDS
 *       an attacker's race: for each round a fresh TCP socket bound to LOCAL:LPORT+i, and while
 *       synergy() runs on it a second thread keeps trying a repair-only option (TCP_REPAIR_QUEUE)
 *       on that descriptor; prints "repair wins N" (how often the kernel let it) and "synergy ok N".
 */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <net/if.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "synergy.h"

#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif

static int fail(const char *what) {
    fprintf(stderr, "synergy_test: %s: %s\n", what, strerror(errno));
    return 1;
}

/* IP may carry a zone: fe80::1%eth0. */
static int addr6(const char *ip, const char *port, struct sockaddr_in6 *sa) {
    char host[128];
    snprintf(host, sizeof host, "%s", ip);
    memset(sa, 0, sizeof *sa);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons((uint16_t)atoi(port));
    char *zone = strchr(host, '%');
    if (zone) {
        *zone++ = 0;
        sa->sin6_scope_id = if_nametoindex(zone);
        if (sa->sin6_scope_id == 0) return -1;
    }
    return inet_pton(AF_INET6, host, &sa->sin6_addr) == 1 ? 0 : -1;
}

static int expect(const char *name, int rc, int want) {
    if (rc == -1 && errno == want) {
        printf("ok %s: errno %d\n", name, want);
        return 0;
    }
    printf("FAIL %s: rc %d errno %d (%s), want errno %d\n", name, rc, errno, strerror(errno), want);
    return 1;
}

static int errno_checks(const char *laddr) {
    int bad = 0;
    struct sockaddr_in6 peer;
    addr6("2001:db8:2::5", "5555", &peer);

    int v4 = socket(AF_INET, SOCK_DGRAM, 0);
    bad |= expect("IPv4 socket", synergy(v4, 2, &peer), EAFNOSUPPORT);

    int raw = socket(AF_INET6, SOCK_RAW, IPPROTO_UDP);
    if (raw < 0) return fail("raw socket (run as root)");
    bad |= expect("raw IPv6 socket", synergy(raw, 2, &peer), EPROTONOSUPPORT);

    int udp = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 local;
    addr6(laddr, "7001", &local);
    if (bind(udp, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    bad |= expect("unconnected socket, no peer", synergy(udp, 2, NULL), ENOTCONN);

    int file = open("/dev/null", O_RDONLY);
    bad |= expect("not a socket", synergy(file, 2, &peer), ENOTSOCK);
    return bad;
}

static int has(int argc, char **argv, int from, const char *opt) {
    for (int i = from; i < argc; i++)
        if (strcmp(argv[i], opt) == 0) return 1;
    return 0;
}

/* One synergy() call on an attacker's socket; prints its result. */
static int try_one(int argc, char **argv) {
    const char *kind = argv[2];
    int type = SOCK_DGRAM, proto = 0;
    if (strcmp(kind, "tcp") == 0) type = SOCK_STREAM;
    else if (strcmp(kind, "mptcp") == 0) type = SOCK_STREAM, proto = 262; /* IPPROTO_MPTCP */
    else if (strcmp(kind, "udplite") == 0) proto = IPPROTO_UDPLITE;
    else if (strcmp(kind, "ping") == 0) proto = IPPROTO_ICMPV6;
    struct sockaddr_in6 local, peer;
    if (addr6(argv[3], argv[4], &local) < 0 || addr6(argv[5], argv[6], &peer) < 0) {
        fprintf(stderr, "synergy_test: bad address\n");
        return 3;
    }
    int fd = socket(AF_INET6, type, proto);
    if (fd < 0) return fail("socket"), 3;
    int one = 1, zero = 0;
    if (has(argc, argv, 8, "freebind") && setsockopt(fd, SOL_IPV6, IPV6_FREEBIND, &one, sizeof one) < 0)
        return fail("IPV6_FREEBIND"), 3;
    if (has(argc, argv, 8, "transparent") &&
        setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) < 0)
        return fail("IPV6_TRANSPARENT"), 3;
    if (has(argc, argv, 8, "reuseaddr") && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        return fail("SO_REUSEADDR"), 3;
    if (has(argc, argv, 8, "mapped") && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0)
        return fail("IPV6_V6ONLY"), 3;
    if (has(argc, argv, 8, "reuseport") && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        return fail("SO_REUSEPORT"), 3;
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind"), 3;
    if (has(argc, argv, 8, "listen") && listen(fd, 8) < 0) return fail("listen"), 3;
    if (has(argc, argv, 8, "filter")) {
        /* A socket filter of the program's own: "keep everything". */
        struct sock_filter keep = {BPF_RET | BPF_K, 0, 0, 0xffffffff};
        struct sock_fprog prog = {1, &keep};
        if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
            return fail("SO_ATTACH_FILTER"), 3;
    }
    if (has(argc, argv, 8, "lockfilter") &&
        setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one) < 0)
        return fail("SO_LOCK_FILTER"), 3;
    if (has(argc, argv, 8, "stale")) {
        struct sockaddr_in6 closed = local;
        closed.sin6_port = htons(1);
        if (connect(fd, (struct sockaddr *)&closed, sizeof closed) == 0) {
            fprintf(stderr, "synergy_test: port 1 is open\n");
            return 3;
        }
    }
    int rc = synergy(fd, (uint8_t)atoi(argv[7]), &peer);
    if (rc == 0) printf("result 0\n");
    else printf("result -1 errno %d %s\n", errno, strerror(errno));
    return 0;
}

static void on_alarm(int sig) { (void)sig; }

/* Idle connections and a socket whose last close blocks, passed to the daemon. */
static int stall(const char *path, int idle) {
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    /* A loopback peer that never reads: the send queue fills and the FIN can never go out. */
    int l = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo;
    addr6("::1", "0", &lo);
    socklen_t len = sizeof lo;
    if (bind(l, (struct sockaddr *)&lo, sizeof lo) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&lo, &len) < 0)
        return fail("loopback listener");
    int t = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int small = 4096;
    setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (connect(t, (struct sockaddr *)&lo, sizeof lo) < 0 && errno != EINPROGRESS) return fail("connect lo");
    struct pollfd w = {t, POLLOUT, 0};
    poll(&w, 1, 2000);
    char junk[65536];
    memset(junk, 'x', sizeof junk);
    for (int i = 0; i < 1000; i++)
        if (send(t, junk, sizeof junk, MSG_DONTWAIT) < 0) break;
    struct linger lg = {1, 3600};
    if (setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) return fail("SO_LINGER");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&sun, sizeof sun) < 0) return fail("connect");
    char first[128];
    size_t got = 0;
    while (got < sizeof first - 1) { /* the daemon's first line: "ready" or a refusal */
        if (read(c, first + got, 1) != 1 || first[got++] == '\n') break;
    }
    char req[32] = {'S', 'Y', 'N', 'C', 3, 2, 0};
    struct iovec iov = {req, sizeof req};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &t, sizeof t);
    int sent = sendmsg(c, &msg, MSG_NOSIGNAL);
    int e = errno, lost = 0;
    /* Passed: the daemon now holds the last reference. Not passed: keep it (a close here would
     * block this program; its exit does not linger). */
    if (sent >= 0) {
        /* Should the daemon have closed its copy first, this close is the last and lingers: an
         * alarm interrupts it after 1 s (the descriptor is released all the same). */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; /* no SA_RESTART: close() returns EINTR */
        sigaction(SIGALRM, &sa, NULL);
        alarm(1);
        if (close(t) < 0 && errno == EINTR) lost = 1;
        alarm(0);
    }
    for (int i = 0; i < idle; i++) {
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&sun, sizeof sun) < 0) return fail("connect idle");
    }
    if (sent < 0) printf("stalling: refused (%s)\n", strerror(e));
    else if (lost) printf("stalling: lost (the daemon closed its copy first)\n");
    else printf("stalling: passed\n");
    fflush(stdout);
    char b;
    while (read(0, &b, 1) > 0) {
    }
    return 0;
}

static int time_one(char **argv) {
    struct sockaddr_in6 local, peer;
    if (addr6(argv[3], argv[4], &local) < 0 || addr6(argv[5], argv[6], &peer) < 0) return 2;
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = synergy(fd, (uint8_t)atoi(argv[7]), &peer);
    int e = errno;
    clock_gettime(CLOCK_MONOTONIC, &b);
    long us = (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000;
    printf("answered in %ld us: %s\n", us, rc == 0 ? "ok" : strerror(e));
    return rc == 0 ? 0 : 1;
}

static void name6(const struct sockaddr_in6 *a, char *out, size_t len) {
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
}

/* Waits until fd is readable: poll() or a one-shot epoll set. */
static int wait_readable(int fd, const char *how, int ms) {
    if (strcmp(how, "epoll") == 0) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, got;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        int n = epoll_wait(ep, &got, 1, ms);
        close(ep);
        return n;
    }
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms);
}

static volatile int race_stop;
static volatile int race_fd;
static volatile long race_wins;

static void *race_spin(void *arg) {
    (void)arg;
    int q = 1;
    while (!race_stop)
        if (setsockopt(race_fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof q) == 0) race_wins++;
    return NULL;
}

static int repair_race(char **argv) {
    struct sockaddr_in6 local, peer;
    if (addr6(argv[2], argv[3], &local) < 0 || addr6(argv[4], argv[5], &peer) < 0) return 2;
    int hop = atoi(argv[6]), rounds = atoi(argv[7]), ok = 0;
    for (int i = 0; i < rounds; i++) {
        int fd = socket(AF_INET6, SOCK_STREAM, 0);
        struct sockaddr_in6 l = local;
        l.sin6_port = htons((uint16_t)(atoi(argv[3]) + i));
        if (bind(fd, (struct sockaddr *)&l, sizeof l) < 0) return fail("bind");
        race_fd = fd;
        race_stop = 0;
        pthread_t t;
        pthread_create(&t, NULL, race_spin, NULL);
        if (synergy(fd, (uint8_t)hop, &peer) == 0) ok++;
        race_stop = 1;
        pthread_join(t, NULL);
        close(fd);
    }
    printf("repair wins %ld\nsynergy ok %d\n", race_wins, ok);
    return 0;
}

static int launder(char **argv) {
    struct sockaddr_in6 local, peer, other;
    if (addr6(argv[2], argv[3], &local) < 0 || addr6(argv[4], argv[5], &peer) < 0 ||
        addr6(argv[7], argv[8], &other) < 0)
        return 2;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    if (synergy(fd, (uint8_t)atoi(argv[6]), &peer) < 0) return fail("synergy");
    int zero = 0;
    int detach = setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero);
    printf("detach %s\n", detach == 0 ? "worked" : strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, (struct sockaddr *)&other, sizeof other) == 0) {
        printf("connected\n");
        return 0;
    }
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 1;
    socklen_t len = sizeof err;
    if (poll(&p, 1, 3000) == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("%s\n", err == 0 ? "connected" : "not connected");
    if (err == 0) send(fd, "laundered\n", 10, 0);
    return 0;
}

static int server(int argc, char **argv) {
    struct sockaddr_in6 local;
    if (addr6(argv[2], argv[3], &local) < 0) return 2;
    int hop = atoi(argv[4]), nconn = atoi(argv[5]);
    const char *how = argv[6];
    alarm(30);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    if (listen(fd, 8) < 0) return fail("listen");
    for (int i = 7; i + 1 < argc; i += 2) {
        struct sockaddr_in6 peer;
        if (addr6(argv[i], argv[i + 1], &peer) < 0) return 2;
        int kept = getenv("SYNERGY_TEST_KEEP") != NULL;
        if ((kept ? synergy_keep(fd, (uint8_t)hop, &peer) : synergy(fd, (uint8_t)hop, &peer)) < 0)
            return fail(kept ? "synergy_keep" : "synergy");
        printf("punched %s port %s\n", argv[i], argv[i + 1]);
    }
    fflush(stdout);
    int blocking = strcmp(how, "blocking") == 0;
    if (!blocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (int k = 0; k < nconn;) {
        if (!blocking && wait_readable(fd, how, 30000) != 1) {
            fprintf(stderr, "synergy_test: the listener never became readable\n");
            return 1;
        }
        struct sockaddr_in6 from;
        socklen_t len = sizeof from;
        int conn = accept(fd, (struct sockaddr *)&from, &len);
        if (conn < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (conn < 0) return fail("accept");
        k++;
        char who[80];
        name6(&from, who, sizeof who);
        printf("accepted %s\n", who);
        fflush(stdout);
        int fl = fcntl(conn, F_GETFL);
        fcntl(conn, F_SETFL, fl & ~O_NONBLOCK);
        struct pollfd q = {conn, POLLIN, 0};
        if (poll(&q, 1, 5000) != 1) {
            fprintf(stderr, "synergy_test: no data from %s\n", who);
            return 1;
        }
        char buf[512];
        ssize_t n = recv(conn, buf, sizeof buf - 1, 0);
        if (n < 0) return fail("recv");
        buf[n] = 0;
        printf("got %s: %s", who, buf);
        fflush(stdout);
        const char *answer = "hello from C\n";
        if (send(conn, answer, strlen(answer), 0) < 0) return fail("send");
        shutdown(conn, SHUT_WR);
        char rest[64];
        q.revents = 0;
        if (poll(&q, 1, 3000) == 1) (void)recv(conn, rest, sizeof rest, 0);
        close(conn);
    }
    return 0;
}

static int client(char **argv) {
    struct sockaddr_in6 local, peer;
    if (addr6(argv[2], argv[3], &local) < 0 || addr6(argv[4], argv[5], &peer) < 0) return 2;
    int hop = atoi(argv[6]);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int fd = -1;
    for (int attempt = 1;; attempt++) {
        fd = socket(AF_INET6, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
        if (synergy(fd, (uint8_t)hop, &peer) < 0) return fail("synergy");
        /* A program that meets its peer (a rendezvous) between synergy() and connect(). */
        if (getenv("SYNERGY_TEST_CONNECT_DELAY_MS")) usleep(1000 * atoi(getenv("SYNERGY_TEST_CONNECT_DELAY_MS")));
        if (connect(fd, (struct sockaddr *)&peer, sizeof peer) == 0) break;
        int e = errno;
        printf("attempt %d: %s\n", attempt, strerror(e));
        fflush(stdout);
        close(fd);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 25 || (e != ECONNREFUSED && e != ETIMEDOUT && e != ECONNRESET)) {
            errno = e;
            return fail("connect");
        }
        usleep(200000);
    }
    printf("connected\n");
    fflush(stdout);
    const char *hello = "hello from C\n";
    if (send(fd, hello, strlen(hello), 0) < 0) return fail("send");
    struct pollfd q = {fd, POLLIN, 0};
    if (poll(&q, 1, 5000) != 1) {
        fprintf(stderr, "synergy_test: no data from the peer\n");
        return 1;
    }
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0) return fail("recv");
    buf[n] = 0;
    printf("got: %s", buf);
    fflush(stdout);
    shutdown(fd, SHUT_WR);
    q.revents = 0;
    if (poll(&q, 1, 3000) == 1) (void)recv(fd, buf, sizeof buf, 0);
    return 0;
}

/* The nth port after a base port given as text. */
static int port_plus(const char *ip, const char *base, int n, struct sockaddr_in6 *sa) {
    char p[16];
    snprintf(p, sizeof p, "%d", atoi(base) + n);
    return addr6(ip, p, sa);
}

static int keep_many(char **argv) {
    int n = atoi(argv[2]), hop = atoi(argv[7]);
    if (n <= 0 || n > 60000) return 2;
    /* Room for N sockets: the soft descriptor limit up to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *fds = calloc((size_t)n, sizeof *fds);
    char *heard = calloc((size_t)n, 1);
    struct pollfd *pfd = calloc((size_t)n + 1, sizeof *pfd);
    if (!fds || !heard || !pfd) return fail("calloc");
    for (int i = 0; i < n; i++) {
        struct sockaddr_in6 local, peer;
        if (port_plus(argv[3], argv[4], i, &local) < 0 || port_plus(argv[5], argv[6], i, &peer) < 0)
            return 2;
        fds[i] = socket(AF_INET6, SOCK_DGRAM, 0);
        if (fds[i] < 0) return fail("socket");
        if (bind(fds[i], (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
        if (synergy_keep(fds[i], (uint8_t)hop, &peer) < 0) {
            printf("keep %d: errno %d %s\n", i, errno, strerror(errno));
            return 1;
        }
        pfd[i].fd = fds[i];
        pfd[i].events = POLLIN;
    }
    printf("kept %d\n", n);
    fflush(stdout);
    if (getenv("SYNERGY_TEST_KEEP_FORK")) {
        pid_t child = fork();
        if (child < 0) return fail("fork");
        if (child > 0) {
            printf("forked %d\n", (int)child);
            fflush(stdout);
            _exit(0);
        }
    }
    pfd[n].fd = 0;
    pfd[n].events = POLLIN;
    int count = 0;
    for (;;) {
        if (poll(pfd, (nfds_t)n + 1, -1) < 0) {
            if (errno == EINTR) continue;
            return fail("poll");
        }
        if (pfd[n].revents) {
            char b[64];
            if (read(0, b, sizeof b) <= 0) break;
        }
        int before = count;
        for (int i = 0; i < n; i++) {
            if (!pfd[i].revents) continue;
            struct sockaddr_in6 from, peer;
            socklen_t fl = sizeof from;
            char b[64];
            if (recvfrom(fds[i], b, sizeof b, 0, (struct sockaddr *)&from, &fl) < 0) continue;
            port_plus(argv[5], argv[6], i, &peer);
            if (!heard[i] && from.sin6_port == peer.sin6_port &&
                memcmp(&from.sin6_addr, &peer.sin6_addr, 16) == 0) {
                heard[i] = 1;
                count++;
            }
        }
        if (count != before) {
            printf("heard %d\n", count);
            fflush(stdout);
        }
    }
    printf("heard %d of %d\n", count, n);
    return 0;
}

static int send_many(char **argv) {
    int n = atoi(argv[2]), sent = 0;
    for (int i = 0; i < n; i++) {
        struct sockaddr_in6 local, peer;
        if (port_plus(argv[3], argv[4], i, &local) < 0 || port_plus(argv[5], argv[6], i, &peer) < 0)
            return 2;
        int fd = socket(AF_INET6, SOCK_DGRAM, 0);
        if (fd < 0) return fail("socket");
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
        char b[32];
        int len = snprintf(b, sizeof b, "hello %d", i);
        if (sendto(fd, b, (size_t)len, 0, (struct sockaddr *)&peer, sizeof peer) == len) sent++;
        close(fd);
    }
    printf("sent %d\n", sent);
    return sent == n ? 0 : 1;
}

static void result(const char *what, int rc) {
    if (rc == 0)
        printf("%s 0\n", what);
    else
        printf("%s -1 errno %s\n", what, strerror(errno));
}

static int unkeep_one(char **argv) {
    struct sockaddr_in6 local, peer;
    if (addr6(argv[2], argv[3], &local) < 0 || addr6(argv[4], argv[5], &peer) < 0) return 2;
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
    result("keep", synergy_keep(fd, (uint8_t)atoi(argv[6]), &peer));
    result("unkeep", synergy_unkeep(fd, &peer));
    result("unkeep again", synergy_unkeep(fd, &peer));
    fflush(stdout);
    char b[16];
    while (read(0, b, sizeof b) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 8 && strcmp(argv[1], "keep") == 0) return keep_many(argv);
    if (argc == 7 && strcmp(argv[1], "send") == 0) return send_many(argv);
    if (argc == 7 && strcmp(argv[1], "unkeep") == 0) return unkeep_one(argv);
    if (argc >= 9 && argc % 2 == 1 && strcmp(argv[1], "server") == 0) return server(argc, argv);
    if (argc == 7 && strcmp(argv[1], "client") == 0) return client(argv);
    if (argc == 8 && strcmp(argv[1], "repairrace") == 0) return repair_race(argv);
    if (argc == 9 && strcmp(argv[1], "launder") == 0) return launder(argv);
    if (argc == 3 && strcmp(argv[1], "errno") == 0) return errno_checks(argv[2]);
    if (argc >= 8 && strcmp(argv[1], "try") == 0) return try_one(argc, argv);
    if (argc == 4 && strcmp(argv[1], "stall") == 0) return stall(argv[2], atoi(argv[3]));
    if (argc == 8 && strcmp(argv[1], "time") == 0) return time_one(argv);
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
