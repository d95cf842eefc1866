/* sendto.c — the kernel baseline for scripts/bench.sh: a minimal loop of sendto() on an
 * AF_INET6/SOCK_RAW/IPPROTO_RAW socket bound to the source address, sending COUNT IPv6 TCP SYNs
 * with hop limit 3 to DST:80, source port cycling 10000-59999 with an RFC 1624 checksum update.
 *
 *   sendto SRC DST COUNT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: sendto SRC DST COUNT\n");
        return 2;
    }
    struct sockaddr_in6 src = {.sin6_family = AF_INET6}, dst = {.sin6_family = AF_INET6};
    if (inet_pton(AF_INET6, argv[1], &src.sin6_addr) != 1 || inet_pton(AF_INET6, argv[2], &dst.sin6_addr) != 1) return 2;
    long count = atol(argv[3]);
    int fd = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        perror("socket/bind");
        return 1;
    }
    uint8_t p[60] = {0};
    p[0] = 0x60;
    p[5] = 20; /* payload length */
    p[6] = 6;  /* TCP */
    p[7] = 3;  /* hop limit */
    memcpy(p + 8, &src.sin6_addr, 16);
    memcpy(p + 24, &dst.sin6_addr, 16);
    uint8_t *t = p + 40;
    t[0] = 10000 >> 8; t[1] = 10000 & 0xff; t[2] = 0; t[3] = 80;
    t[7] = 1;          /* seq 1 */
    t[12] = 5 << 4;    /* data offset */
    t[13] = 0x02;      /* SYN */
    t[14] = 0xff; t[15] = 0xff;
    uint32_t sum = 0;
    for (int i = 8; i < 40; i += 2) sum += (p[i] << 8) | p[i + 1];
    sum += 20 + 6;
    for (int i = 0; i < 20; i += 2) sum += (t[i] << 8) | t[i + 1];
    uint16_t base = (uint16_t)~fold(sum);
    for (long n = 0; n < count; n++) {
        uint16_t port = (uint16_t)(10000 + n % 50000);
        uint16_t c = (uint16_t)~fold((uint16_t)~base + (uint16_t)~10000 + port);
        t[0] = port >> 8; t[1] = port & 0xff;
        t[16] = c >> 8; t[17] = c & 0xff;
        while (sendto(fd, p, sizeof p, 0, (struct sockaddr *)&dst, sizeof dst) < 0) {
        }
    }
    return 0;
}
