// wschurn: connection-churn load generator, the C counterpart of `switchboard-bench churn`.
//
//   wschurn --host 127.0.0.1 --port P [--concurrency 200] [--duration 5] [--processes 2]
//           [--source-addresses 16] [--path /] [--timeout 2] [--no-close-frame]
//
// Each of --processes forked workers keeps its share of --concurrency connections in flight on one
// epoll loop. A connection's life: nonblocking connect from 127.0.0.(1 + i % source-addresses),
// GET upgrade with a random key (the same request lines as switchboard-bench), check the 101 and
// its Sec-WebSocket-Accept, send a masked close frame (1000), wait for the server's close frame or
// EOF (the server closes first), close(), next. --no-close-frame instead drops TCP right after the
// 101 (client closes first), which is what switchboard-bench churn does.
//
// A progress line per second goes to stderr; stdout gets one JSON line at the end. The first 0.5 s
// are a warm-up and not counted. Only libc; build with scripts/cbench/build.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 0.5
enum { RESPONSE_MAX = 2048, MAX_EVENTS = 256 };

// ---- SHA-1 and base64 (as in wsbroadcast.c; each program stands alone) ----

static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = len - i, total = rest + 9 <= 64 ? 64 : 128;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    for (int j = 0; j < 8; j++) tail[total - 1 - j] = (uint8_t)((uint64_t)len * 8 >> (8 * j));
    for (size_t j = 0; j < total; j += 64) sha1_block(h, tail + j);
    for (int j = 0; j < 20; j++) out[j] = (uint8_t)(h[j / 4] >> (24 - 8 * (j % 4)));
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        *out++ = i + 2 < len ? alphabet[v & 63] : '=';
    }
    *out = 0;
}

// ---- options, clock, randomness ----

static struct {
    struct sockaddr_in server;
    const char *host, *path;
    int port, concurrency, processes, sources, no_close_frame;
    double duration, timeout;
} opt = {.host = "127.0.0.1", .path = "/", .concurrency = 200, .processes = 2, .sources = 1, .duration = 5, .timeout = 2};

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);  // one clock for all processes, so deadlines can be shared
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static double dmin(double a, double b) { return a < b ? a : b; }

static uint64_t rng_state;

static uint64_t rng(void) {  // splitmix64: keys and masks need to differ, not to be secret
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- one worker process ----

enum { F_DESCRIPTORS, F_ADDRESSES, F_CONNECT, F_HANDSHAKE, F_CLOSE, F_TIMEOUT, F_KINDS };
static const char *const failure_names[F_KINDS] = {"descriptors", "addresses", "connect", "handshake", "close", "timeout"};

// What a worker tells the parent, one record per write: below PIPE_BUF, so the workers can share
// one pipe without interleaving.
struct record {
    int32_t tick, final;
    uint64_t completed, failures, why[F_KINDS];
};

enum { S_IDLE, S_CONNECTING, S_UPGRADING, S_CLOSING };

struct slot {
    int fd, index;
    uint8_t state, hdr_len;
    uint16_t got;       // response bytes in buf
    uint32_t round;
    uint64_t skip;      // payload bytes of a non-close frame still to skip while waiting for close
    double since;       // S_IDLE: when to retry; otherwise when this attempt began
    char key[25], accept[29];
    uint8_t hdr[14];
    char buf[RESPONSE_MAX];
};

static struct slot *slots;
static int nslots, epoll_fd, report_fd, idle_slots;
static double warm_end, end_at, now;
static struct record tick_counts, totals;

static void count(int failed, int why) {
    if (now < warm_end || now >= end_at) return;
    if (failed) {
        tick_counts.failures++, totals.failures++, totals.why[why]++;
    } else {
        tick_counts.completed++, totals.completed++;
    }
}

static void start(struct slot *s);

// A failed attempt waits 10 ms before the next: at the descriptor limit or out of source ports,
// retrying at once would spin and count millions of failures.
static void fail(struct slot *s, int why) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1, s->state = S_IDLE, s->since = now + 0.01;
    idle_slots++;
    count(1, why);
}

static void succeed(struct slot *s) {
    close(s->fd);
    s->fd = -1;
    count(0, 0);
    s->round++;
    start(s);
}

static int classify(int err) {
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) return F_DESCRIPTORS;
    if (err == EADDRNOTAVAIL || err == EADDRINUSE) return F_ADDRESSES;
    return F_CONNECT;
}

static void start(struct slot *s) {
    s->state = S_CONNECTING, s->since = now, s->got = 0, s->hdr_len = 0, s->skip = 0;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) { fail(s, classify(errno)); return; }
    int one = 1;
    // Bind the address only; connect() then picks the port per destination and may reuse ports of
    // TIME_WAIT sockets, where bind(port 0) would need a port unused by any socket on that address.
    setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as switchboard-bench does
    uint32_t source = 0x7F000001u + (uint32_t)((s->index + s->round) % (uint32_t)opt.sources);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(source)};
    if (bind(s->fd, (struct sockaddr *)&local, sizeof local) < 0) { fail(s, classify(errno)); return; }
    if (connect(s->fd, (struct sockaddr *)&opt.server, sizeof opt.server) < 0 && errno != EINPROGRESS) {
        fail(s, classify(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s->fd, &ev) < 0) { fail(s, classify(errno)); return; }
    uint8_t nonce[16], digest[20], joined[60];
    uint64_t r[2] = {rng(), rng()};
    memcpy(nonce, r, 16);
    base64(nonce, 16, s->key);
    memcpy(joined, s->key, 24);
    memcpy(joined + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    sha1(joined, 60, digest);
    base64(digest, 20, s->accept);
}

static void send_request(struct slot *s) {
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", opt.path, opt.host, opt.port, s->key);
    // A fresh socket's send buffer always takes a request this small; a short write is a failure.
    ssize_t w = write(s->fd, req, (size_t)n);
    if (w != n) { fail(s, w < 0 ? classify(errno) : F_HANDSHAKE); return; }
    s->state = S_UPGRADING;
}

// Scans server frames after our close frame; returns 1 once the server's close frame has begun.
static int close_seen(struct slot *s, const uint8_t *p, size_t len) {
    while (len) {
        if (s->skip) {
            size_t n = s->skip < len ? (size_t)s->skip : len;
            s->skip -= n, p += n, len -= n;
            continue;
        }
        s->hdr[s->hdr_len++] = *p++, len--;
        if (s->hdr_len == 1 && (s->hdr[0] & 0x0F) == 8) return 1;
        if (s->hdr_len < 2) continue;
        int l7 = s->hdr[1] & 0x7F;
        size_t need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (s->hdr[1] & 0x80 ? 4 : 0);
        if (s->hdr_len < need) continue;
        uint64_t plen = (uint64_t)l7;
        if (l7 == 126) plen = (uint64_t)s->hdr[2] << 8 | s->hdr[3];
        if (l7 == 127)
            for (int i = 0; i < 8; i++) plen = (i ? plen << 8 : 0) | s->hdr[2 + i];
        s->skip = plen, s->hdr_len = 0;
    }
    return 0;
}

// The response head is complete in buf[0..head): check it, then start closing.
static void upgraded(struct slot *s, size_t head) {
    size_t vlen = 0;
    const char *v = NULL, *line = s->buf;
    while ((line = memchr(line, '\n', (size_t)(s->buf + head - line))) && ++line < s->buf + head) {
        if (strncasecmp(line, "Sec-WebSocket-Accept:", 21) == 0) {
            v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            for (vlen = 0; v[vlen] != '\r' && v[vlen] != '\n' && v[vlen] != ' '; vlen++) {}
            break;
        }
    }
    int ok101 = head >= 13 && memcmp(s->buf, "HTTP/1.", 7) == 0 && memcmp(s->buf + 8, " 101", 4) == 0 &&
                (s->buf[12] == ' ' || s->buf[12] == '\r');
    if (!ok101 || !v || vlen != 28 || memcmp(v, s->accept, 28) != 0) { fail(s, F_HANDSHAKE); return; }
    if (opt.no_close_frame) { succeed(s); return; }
    uint32_t mask = (uint32_t)rng();
    uint8_t frame[8] = {0x88, 0x82, (uint8_t)mask, (uint8_t)(mask >> 8), (uint8_t)(mask >> 16), (uint8_t)(mask >> 24)};
    frame[6] = 0x03 ^ frame[2], frame[7] = 0xE8 ^ frame[3];  // 1000, masked
    if (write(s->fd, frame, 8) != 8) { fail(s, F_CLOSE); return; }
    s->state = S_CLOSING;
    if (close_seen(s, (uint8_t *)s->buf + head, s->got - head)) succeed(s);
}

static void on_event(struct slot *s, uint32_t events) {
    if (s->state == S_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) send_request(s);  // a failed connect fails this write
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        uint8_t scratch[4096];
        int upgrading = s->state == S_UPGRADING;
        size_t room = upgrading ? sizeof s->buf - s->got : sizeof scratch;
        ssize_t n = read(s->fd, upgrading ? (uint8_t *)s->buf + s->got : scratch, room);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            if (!upgrading && n == 0) { succeed(s); return; }  // EOF also ends the close handshake
            fail(s, upgrading ? F_HANDSHAKE : F_CLOSE);
            return;
        }
        if (upgrading) {
            size_t from = s->got > 3 ? s->got - 3u : 0;
            s->got = (uint16_t)(s->got + n);
            char *e = memmem(s->buf + from, s->got - from, "\r\n\r\n", 4);
            if (e) { upgraded(s, (size_t)(e - s->buf) + 4); return; }
            if (s->got == sizeof s->buf) { fail(s, F_HANDSHAKE); return; }
        } else if (close_seen(s, scratch, (size_t)n)) {
            succeed(s);
            return;
        }
        // Edge-triggered: a short read emptied the socket (see wsbroadcast.c).
        if ((size_t)n < room && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    }
}

// Retries idle slots whose pause is over and fails attempts older than --timeout (a server at its
// descriptor limit leaves connections in its backlog, never answered).
static void scan(void) {
    for (int i = 0; i < nslots; i++) {
        struct slot *s = &slots[i];
        if (s->state == S_IDLE && now >= s->since) {
            idle_slots--;
            start(s);
        } else if (s->state != S_IDLE && now - s->since > opt.timeout) {
            fail(s, F_TIMEOUT);
        }
    }
}

static void report(int tick, int final) {
    struct record r = final ? totals : tick_counts;
    r.tick = tick, r.final = final;
    if (write(report_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    memset(&tick_counts, 0, sizeof tick_counts);
}

static void worker(int first, int count_slots) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) seed = (uint64_t)getpid() << 32 ^ (uint64_t)now_seconds();
    rng_state = seed;
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    nslots = count_slots;
    slots = calloc((size_t)nslots, sizeof *slots);
    if (epoll_fd < 0 || !slots) _exit(1);
    now = now_seconds();
    for (int i = 0; i < nslots; i++) {
        slots[i].index = first + i;
        start(&slots[i]);
    }
    int tick = 1;
    double next_tick = dmin(warm_end + 1, end_at), next_scan = now + 0.1;
    struct epoll_event events[MAX_EVENTS];
    while (now < end_at) {
        double wake = dmin(next_tick, next_scan);
        int timeout = wake > now ? (int)((wake - now) * 1000) + 1 : 0;  // rounded up: no early wake-ups
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, timeout);
        now = now_seconds();
        for (int i = 0; i < n; i++) {
            struct slot *s = events[i].data.ptr;
            if (s->fd >= 0) on_event(s, events[i].events);  // stale events of a closed attempt: dropped
        }
        if (now >= next_scan) {
            scan();
            next_scan = now + (idle_slots ? 0.01 : 0.1);
        }
        if (now >= next_tick && now < end_at) {
            report(tick++, 0);
            next_tick = dmin(next_tick + 1, end_at);
        }
    }
    report(tick, 0);
    report(tick, 1);
    _exit(0);  // the kernel closes whatever is still in flight
}

// ---- parent: fork, gather, print ----

static void usage(const char *name) {
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--concurrency 200] [--duration 5] [--processes 2]\n"
            "       [--source-addresses 1] [--path /] [--timeout 2] [--no-close-frame]\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    static const struct option longs[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"concurrency", 1, 0, 'c'}, {"duration", 1, 0, 'd'},
        {"processes", 1, 0, 'n'}, {"source-addresses", 1, 0, 's'}, {"path", 1, 0, 'P'}, {"timeout", 1, 0, 't'},
        {"no-close-frame", 0, 0, 'x'}, {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        switch (c) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.concurrency = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.processes = atoi(optarg); break;
        case 's': opt.sources = atoi(optarg); break;
        case 'P': opt.path = optarg; break;
        case 't': opt.timeout = atof(optarg); break;
        case 'x': opt.no_close_frame = 1; break;
        default: usage(argv[0]);
        }
    }
    opt.server.sin_family = AF_INET;
    opt.server.sin_port = htons((uint16_t)opt.port);
    if (optind != argc || opt.port <= 0 || opt.port > 65535 || opt.concurrency < 1 || opt.processes < 1 ||
        opt.sources < 1 || opt.sources > 254 || !(opt.duration > 0) || !(opt.timeout > 0) || strlen(opt.path) > 512 ||
        strlen(opt.host) > 255 || inet_pton(AF_INET, opt.host, &opt.server.sin_addr) != 1)
        usage(argv[0]);
    if (opt.processes > opt.concurrency) opt.processes = opt.concurrency;
    signal(SIGPIPE, SIG_IGN);

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) return perror("pipe"), 1;
    // Deadlines on CLOCK_MONOTONIC, fixed before forking: every worker measures the same window.
    warm_end = now_seconds() + WARMUP;
    end_at = warm_end + opt.duration;
    int ticks = (int)opt.duration + (opt.duration > (int)opt.duration), first = 0;
    pid_t *pids = calloc((size_t)opt.processes, sizeof *pids);
    struct record *per_tick = calloc((size_t)ticks + 1, sizeof *per_tick);
    int *reported = calloc((size_t)ticks + 1, sizeof *reported);
    for (int w = 0; w < opt.processes; w++) {
        int share = opt.concurrency / opt.processes + (w < opt.concurrency % opt.processes);
        if ((pids[w] = fork()) == 0) {
            close(pipefd[0]);
            report_fd = pipefd[1];
            worker(first, share);
        }
        if (pids[w] < 0) return perror("fork"), 1;
        first += share;
    }
    close(pipefd[1]);

    struct record total = {0}, buf[64];
    int finals = 0, printed = 0;
    while (finals < opt.processes) {
        ssize_t n = read(pipefd[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // every worker gone without a final record: one crashed
        for (size_t i = 0; i < (size_t)n / sizeof *buf; i++) {
            struct record *r = &buf[i];
            if (r->final) {
                finals++;
                total.completed += r->completed, total.failures += r->failures;
                for (int k = 0; k < F_KINDS; k++) total.why[k] += r->why[k];
            } else if (r->tick >= 1 && r->tick <= ticks) {
                per_tick[r->tick].completed += r->completed, per_tick[r->tick].failures += r->failures;
                reported[r->tick]++;
            }
        }
        while (printed < ticks && reported[printed + 1] == opt.processes) {
            printed++;
            double length = dmin(1.0, opt.duration - (printed - 1));
            fprintf(stderr, "t=%d connections/s=%.0f failures=%llu\n", printed, per_tick[printed].completed / length,
                    (unsigned long long)per_tick[printed].failures);
        }
    }
    int status, crashed = finals < opt.processes;
    for (int w = 0; w < opt.processes; w++)
        if (waitpid(pids[w], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) crashed = 1;
    if (total.failures) {
        fprintf(stderr, "failures:");
        for (int k = 0; k < F_KINDS; k++)
            if (total.why[k]) fprintf(stderr, " %s=%llu", failure_names[k], (unsigned long long)total.why[k]);
        fprintf(stderr, "\n");
    }
    printf("{\"connections_per_second\": %.1f, \"completed\": %llu, \"failures\": %llu, \"seconds\": %g}\n",
           total.completed / opt.duration, (unsigned long long)total.completed, (unsigned long long)total.failures,
           opt.duration);
    if (crashed) fprintf(stderr, "a worker process failed\n");
    free(pids), free(per_tick), free(reported);
    return crashed ? 1 : 0;
}
