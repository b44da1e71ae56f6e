// wsbroadcast: a minimal single-threaded epoll WebSocket broadcaster, the "C reference server" of
// our benchmarks. Every text or binary message a client sends goes, as one unmasked frame of the
// same opcode, to every open connection, the sender included (`switchboard echo --broadcast`).
//
//   wsbroadcast PORT        listen on 0.0.0.0:PORT (0: any free port), print the URL, serve forever
//   wsbroadcast --self-test check SHA-1/base64 against RFC 6455's sample handshake and exit
//
// It is a yardstick, not a product: no extensions, no UTF-8 validation of text, no timeouts.
// Only libc; build with scripts/cbench/build.sh.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_MESSAGE = 64 * 1024,  // largest message (or reassembled fragments) accepted
    MAX_REQUEST = 8 * 1024,   // an upgrade request longer than this gets 400
    OUT_LIMIT = 16 << 20,     // a reader this far behind is dropped rather than buffered forever
    READ_CHUNK = 128 * 1024,  // more than one maximal frame, so a whole frame fits in one read
    MAX_EVENTS = 512,
};

// ---- SHA-1 (FIPS 180-1) and base64, just enough for Sec-WebSocket-Accept ----

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

// The 28-character Sec-WebSocket-Accept for a key of at most 64 bytes.
static void accept_key(const char *key, size_t len, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t joined[64 + sizeof guid], digest[20];
    memcpy(joined, key, len);
    memcpy(joined + len, guid, sizeof guid - 1);
    sha1(joined, len + sizeof guid - 1, digest);
    base64(digest, 20, out);
}

// ---- connections ----

enum { ST_FREE, ST_HANDSHAKE, ST_OPEN, ST_CLOSING };

// Indexed by descriptor in one calloc'd table: an idle open connection owns nothing else, and the
// table's untouched pages cost no RSS. Buffers exist only while they hold bytes.
struct conn {
    uint8_t state;
    uint8_t dead;        // queued in `graveyard`, closed at the end of the event batch
    uint8_t msg_opcode;  // 1 or 2 while a fragmented message is being assembled in `msg`
    int slot;            // index in `open_fds` while ST_OPEN, else -1
    uint8_t *in;         // bytes of an incomplete request or frame, carried to the next read
    uint32_t in_len, in_cap;
    uint8_t *out;        // bytes the kernel did not take yet; unsent ones are [out_off, out_len)
    uint32_t out_off, out_len, out_cap;
    uint8_t *msg;
    uint32_t msg_len;
};

static struct conn *conns;
static int max_fds, listen_fd, epoll_fd;
static int *open_fds, open_count;   // connections that receive broadcasts
static int *graveyard, grave_count; // closed only once the batch is done: see `kill_conn`
static uint8_t read_buf[READ_CHUNK];

static void leave_open_list(struct conn *c) {
    if (c->slot < 0) return;
    int last = open_fds[--open_count];
    open_fds[c->slot] = last;
    conns[last].slot = c->slot;
    c->slot = -1;
}

// A connection may die in the middle of a broadcast whose payload sits in its own buffers, or while
// its events are being handled, so it is only marked here: memory and descriptor go in `bury`.
static void kill_conn(int fd) {
    struct conn *c = &conns[fd];
    if (c->dead) return;
    c->dead = 1;
    leave_open_list(c);
    graveyard[grave_count++] = fd;
}

static void bury(void) {
    for (int i = 0; i < grave_count; i++) {
        struct conn *c = &conns[graveyard[i]];
        free(c->in), free(c->out), free(c->msg);
        *c = (struct conn){.slot = -1};
        close(graveyard[i]);  // also leaves the epoll set
    }
    grave_count = 0;
}

static int out_append(struct conn *c, const uint8_t *p, size_t n) {
    if (n == 0) return 0;
    size_t pending = c->out_len - c->out_off;
    if (pending + n > OUT_LIMIT) return -1;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {  // slide the unsent bytes down before growing
            memmove(c->out, c->out + c->out_off, pending);
            c->out_off = 0, c->out_len = (uint32_t)pending;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n) cap *= 2;
            uint8_t *grown = realloc(c->out, cap);
            if (!grown) return -1;
            c->out = grown, c->out_cap = (uint32_t)cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    return 0;
}

// Writes a then b, straight to the socket unless older bytes are still queued (order matters).
static void conn_send(int fd, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    struct conn *c = &conns[fd];
    if (c->dead) return;
    size_t done = 0;
    if (c->out_len == c->out_off) {
        struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
        ssize_t n = writev(fd, iov, blen ? 2 : 1);
        if (n < 0 && errno != EAGAIN && errno != EINTR) { kill_conn(fd); return; }
        done = n < 0 ? 0 : (size_t)n;
        if (done == alen + blen) return;
    }
    int failed = done < alen ? out_append(c, a + done, alen - done) | out_append(c, b, blen)
                             : out_append(c, b + (done - alen), blen - (done - alen));
    if (failed) kill_conn(fd);  // out of memory, or a reader hopelessly behind
}

// Graceful end: the server closes first, once everything queued (the close frame) is written.
static void close_when_flushed(int fd) {
    struct conn *c = &conns[fd];
    c->state = ST_CLOSING;
    leave_open_list(c);
    if (c->out_len == c->out_off) kill_conn(fd);
}

static void flush(int fd) {
    struct conn *c = &conns[fd];
    while (c->out_off < c->out_len) {
        ssize_t n = write(fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) kill_conn(fd);
            return;  // EAGAIN: the next EPOLLOUT edge resumes
        }
        c->out_off += (uint32_t)n;
    }
    free(c->out);  // an idle connection keeps no buffer
    c->out = NULL, c->out_off = c->out_len = c->out_cap = 0;
    if (c->state == ST_CLOSING) kill_conn(fd);
}

static size_t frame_header(uint8_t *h, int opcode, size_t len) {
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) return h[1] = (uint8_t)len, 2;
    if (len < 65536) return h[1] = 126, h[2] = (uint8_t)(len >> 8), h[3] = (uint8_t)len, 4;
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static void send_frame(int fd, int opcode, const uint8_t *payload, size_t len) {
    uint8_t h[10];
    conn_send(fd, h, frame_header(h, opcode, len), payload, len);
}

static void fail_protocol(int fd, uint16_t code) {
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_frame(fd, 8, body, 2);
    close_when_flushed(fd);
}

static void broadcast(int opcode, const uint8_t *payload, size_t len) {
    uint8_t h[10];
    size_t hlen = frame_header(h, opcode, len);
    // Backwards: a failed write removes connection i by swapping in the last one, already visited.
    for (int i = open_count - 1; i >= 0; i--) conn_send(open_fds[i], h, hlen, payload, len);
}

static void handle_frame(int fd, int fin, int opcode, uint8_t *payload, size_t len) {
    struct conn *c = &conns[fd];
    if (opcode >= 8) {
        if (!fin || len > 125) { fail_protocol(fd, 1002); return; }
        if (opcode == 8) {
            if (len == 1) { fail_protocol(fd, 1002); return; }
            send_frame(fd, 8, payload, len < 2 ? 0 : 2);  // echo the code, drop the reason
            close_when_flushed(fd);
            return;
        }
        if (opcode == 9) { send_frame(fd, 10, payload, len); return; }
        if (opcode == 10) return;
        fail_protocol(fd, 1002);
        return;
    }
    if (opcode == 1 || opcode == 2) {
        if (c->msg_opcode) { fail_protocol(fd, 1002); return; }  // new message inside a fragmented one
        if (fin) { broadcast(opcode, payload, len); return; }
        c->msg_opcode = (uint8_t)opcode;
    } else if (opcode != 0 || !c->msg_opcode) {
        fail_protocol(fd, 1002);
        return;
    }
    // A fragment: assembled, so that receivers get one frame per message.
    if (c->msg_len + len > MAX_MESSAGE) { fail_protocol(fd, 1009); return; }
    if (len) {
        uint8_t *grown = realloc(c->msg, c->msg_len + len);
        if (!grown) { kill_conn(fd); return; }
        memcpy(grown + c->msg_len, payload, len);
        c->msg = grown, c->msg_len += (uint32_t)len;
    }
    if (!fin) return;
    broadcast(c->msg_opcode, c->msg, c->msg_len);
    free(c->msg);  // after the broadcast: a dead sender's buffers live until `bury`
    c->msg = NULL, c->msg_len = 0, c->msg_opcode = 0;
}

// Handles every complete frame in p[0..len) and returns how many bytes it used.
static size_t consume_frames(int fd, uint8_t *p, size_t len) {
    struct conn *c = &conns[fd];
    size_t off = 0;
    while (c->state == ST_OPEN && !c->dead && len - off >= 2) {
        uint8_t *f = p + off;
        size_t avail = len - off, hlen = 2;
        uint64_t plen = f[1] & 0x7F;
        if (f[0] & 0x70 || !(f[1] & 0x80)) { fail_protocol(fd, 1002); break; }  // no extensions; clients mask
        if (plen == 126) {
            if (avail < 4) break;
            plen = (uint64_t)f[2] << 8 | f[3], hlen = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0, hlen = 10;
            for (int i = 0; i < 8; i++) plen = plen << 8 | f[2 + i];
        }
        if (plen > MAX_MESSAGE) { fail_protocol(fd, 1009); break; }
        if (avail < hlen + 4 + plen) break;
        uint8_t *mask = f + hlen, *payload = mask + 4;
        for (size_t i = 0; i < plen; i++) payload[i] ^= mask[i & 3];
        off += hlen + 4 + plen;
        handle_frame(fd, f[0] & 0x80, f[0] & 0x0F, payload, (size_t)plen);
    }
    return off;
}

// Finds a header's value in a request head (names compared case-insensitively), trimmed.
static const char *header_value(const char *head, size_t len, const char *name, size_t *vlen) {
    size_t nlen = strlen(name);
    const char *end = head + len, *line = memchr(head, '\n', len);
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol;
    }
    return NULL;
}

// Answers the upgrade once its head is complete; returns the bytes used (0: need more).
static size_t consume_request(int fd, uint8_t *p, size_t len) {
    static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    uint8_t *head_end = memmem(p, len, "\r\n\r\n", 4);
    if (!head_end) {
        if (len < MAX_REQUEST) return 0;
        conn_send(fd, (const uint8_t *)bad, sizeof bad - 1, NULL, 0);
        close_when_flushed(fd);
        return len;
    }
    size_t head_len = (size_t)(head_end - p) + 4, klen = 0;
    const char *key = header_value((const char *)p, head_len, "Sec-WebSocket-Key", &klen);
    if (len < 4 || memcmp(p, "GET ", 4) != 0 || !key || klen == 0 || klen > 64) {
        conn_send(fd, (const uint8_t *)bad, sizeof bad - 1, NULL, 0);
        close_when_flushed(fd);
        return len;
    }
    char reply[160], accept[29];
    accept_key(key, klen, accept);
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    conn_send(fd, (const uint8_t *)reply, (size_t)n, NULL, 0);
    struct conn *c = &conns[fd];
    if (c->dead) return len;
    c->state = ST_OPEN;
    c->slot = open_count;
    open_fds[open_count++] = fd;
    return head_len;
}

static void on_readable(int fd, uint32_t events) {
    struct conn *c = &conns[fd];
    for (;;) {
        ssize_t n = read(fd, read_buf, sizeof read_buf);
        if (n == 0) { kill_conn(fd); return; }  // the peer went away (or finished closing)
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) kill_conn(fd);
            return;
        }
        // After our close frame, input is read only so that close() sends FIN, not RST.
        if (c->state != ST_CLOSING) {
            uint8_t *data = read_buf;
            size_t len = (size_t)n;
            if (c->in_len) {  // prepend the incomplete frame left from the previous read
                if (c->in_len + len > c->in_cap) {
                    uint8_t *grown = realloc(c->in, c->in_len + len);
                    if (!grown) { kill_conn(fd); return; }
                    c->in = grown, c->in_cap = c->in_len + (uint32_t)len;
                }
                memcpy(c->in + c->in_len, read_buf, len);
                data = c->in, len = c->in_len + len;
            }
            size_t used = c->state == ST_HANDSHAKE ? consume_request(fd, data, len) : 0;
            used += consume_frames(fd, data + used, len - used);
            if (c->dead) return;
            size_t left = c->state == ST_CLOSING ? 0 : len - used;
            if (left == 0) {
                free(c->in);
                c->in = NULL, c->in_len = c->in_cap = 0;
            } else if (data == c->in) {
                memmove(c->in, c->in + used, left);
                c->in_len = (uint32_t)left;
            } else {
                if (!(c->in = malloc(left))) { kill_conn(fd); return; }
                memcpy(c->in, data + used, left);
                c->in_len = c->in_cap = (uint32_t)left;
            }
        }
        // Edge-triggered: a short read emptied the socket, and data arriving later raises a new
        // edge; only a FIN already queued at epoll_wait time (RDHUP) needs the extra read.
        if ((size_t)n < sizeof read_buf && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    }
}

// ---- accepting ----

static double resume_at;  // > 0 while the listen socket is out of the epoll set (EMFILE)

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Level-triggered listen socket: left in the set it would wake us in a busy loop
                // until a descriptor frees up, so it sits out for 100 ms.
                epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, NULL);
                resume_at = now_seconds() + 0.1;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // a broadcast must not wait for an ACK
        // Edge-triggered with EPOLLOUT from the start: one epoll_ctl per connection, never a MOD.
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
        if (fd >= max_fds || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        conns[fd] = (struct conn){.state = ST_HANDSHAKE, .slot = -1};
    }
}

// RFC 6455 section 1.3's sample handshake (two SHA-1 blocks) and FIPS 180's "abc" (one block).
static int self_test(void) {
    char accept[29], abc[29];
    uint8_t digest[20];
    accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
    sha1((const uint8_t *)"abc", 3, digest);
    base64(digest, 20, abc);  // a9993e364706816aba3e25717850c26c9cd0d89d
    int ok = strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0 && strcmp(abc, "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") == 0;
    printf("self-test: accept %s, sha1(abc) %s: %s\n", accept, abc, ok ? "ok" : "FAILED");
    return !ok;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--self-test") == 0) return self_test();
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT | --self-test\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    max_fds = limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (1 << 20) ? 1 << 20 : (int)limit.rlim_cur;
    conns = calloc((size_t)max_fds, sizeof *conns);
    open_fds = calloc((size_t)max_fds, sizeof *open_fds);
    graveyard = calloc((size_t)max_fds, sizeof *graveyard);
    if (!conns || !open_fds || !graveyard) return perror("calloc"), 1;

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t alen = sizeof addr;
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listen_fd, 4096) < 0 ||
        getsockname(listen_fd, (struct sockaddr *)&addr, &alen) < 0)
        return perror("listen"), 1;
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = listen_fd};
    if (epoll_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &lev) < 0) return perror("epoll"), 1;
    printf("listening on ws://127.0.0.1:%d/\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int timeout = -1;
        if (resume_at > 0) {
            double wait = resume_at - now_seconds();
            timeout = wait > 0 ? (int)(wait * 1000) + 1 : 0;
        }
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) return perror("epoll_wait"), 1;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                accept_all();
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->state == ST_FREE || c->dead) continue;
            if (events[i].events & EPOLLOUT && c->out_off < c->out_len) flush(fd);
            if (!c->dead && events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(fd, events[i].events);
        }
        bury();
        if (resume_at > 0 && now_seconds() >= resume_at) {
            resume_at = 0;
            epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &lev);
        }
    }
}
