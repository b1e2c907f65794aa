/*
 * secconf media bench: paced SRTP/RTP load generator and counting sink.
 *
 * Built at run time by bench/edge_vs_rtpengine.py:
 *   gcc -O2 -o loadgen bench/loadgen.c -lsrtp2 -lcrypto
 * Usage: loadgen CONFIG_FILE   (JSON report on stdout, diagnostics on stderr)
 *
 * One thread, one core.  Every tick (default 1 ms) it sends every packet that
 * is due (sendmmsg, one destination per message), then sleeps until the next
 * tick and drains every socket with recvmmsg(MSG_DONTWAIT).  It never blocks on
 * a socket, so a relay sending to the sink never has to wake it up (a blocking
 * receiver on loopback inflates the sender's CPU).
 *
 * Config file, one directive per line ('#' comments):
 *   duration SECONDS          sending time (float)
 *   drain_ms MS               receive-only time after the last send
 *   tick_us US                scheduling tick
 *   interval_us US            per-stream packet interval (20000 = 50 pps)
 *   payload BYTES             RTP payload size (160 = 20 ms G.711)
 *   blast 0|1                 1: ignore pacing, send as fast as possible
 *   socket PORT               bind a UDP socket on 127.0.0.1:PORT (index = order)
 *   tx SOCK DSTPORT SSRC PT SUITE KEYHEX|-
 *   rx SOCK SSRC SUITE KEYHEX|- [KEYHEX2]
 * SUITE is AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 or none; KEYHEX is
 * master key || master salt (30 bytes).  An rx stream with KEYHEX2 also accepts
 * packets under that second key and records when the first one arrived (rekey).
 *
 * Every payload starts with the CLOCK_MONOTONIC send time (ns) and the tx
 * stream index, so the sink measures one-way latency after authentication.
 *
 * SRTP (RFC 3711, AES_CM_128_HMAC_SHA1_80/_32, no MKI) is done here with
 * OpenSSL's AES-CTR and HMAC-SHA1: Debian's libsrtp2 is built on NSS and its
 * per-packet cost grows with the number of sessions (2 us at 1 session, 15 us
 * at 2000), which would make the generator the bottleneck.  `loadgen --selftest`
 * cross-checks this code against libsrtp2 in both directions; the bench script
 * runs it after every build.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <srtp2/srtp.h>

#define BATCH 64
#define PKT_MAX 1500
#define MAX_SOCKETS 16
#define LAT_BUCKET_US 50
#define LAT_BUCKETS 20000 /* 1 s */

enum suite { SUITE_NONE = 0, SUITE_80, SUITE_32 };

struct tx_stream {
    int sock;
    struct sockaddr_in dst;
    uint32_t ssrc;
    uint8_t pt;
    uint16_t seq;
    uint32_t ts;
    struct xsrtp *srtp;
    uint64_t sent;
};

struct rx_stream {
    int sock;
    uint32_t ssrc;
    struct xsrtp *srtp[2];
    int nkeys;
    int last_ok; /* key index that last authenticated */
    uint64_t received, received_new, auth_fail;
    int64_t first_new_ns, last_ns;
};

struct sock_batch {
    int fd;
    int n;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint8_t buf[BATCH][PKT_MAX];
    struct sockaddr_in names[BATCH];
};


/* ---- minimal SRTP (RFC 3711 section 4) on OpenSSL ------------------------ */

struct xsrtp {
    EVP_CIPHER_CTX *aes;      /* AES-128-CTR under the session key */
    EVP_MD_CTX *inner, *outer; /* HMAC-SHA1 state after ipad / opad */
    EVP_MD_CTX *work;
    uint8_t salt[14];
    int tag_len;
    uint32_t roc;   /* tx: current ROC; rx: highest ROC seen */
    uint16_t s_l;   /* rx: highest seq seen */
    int started;
};

static void kdf(const uint8_t *mkey, const uint8_t *msalt, uint8_t label, uint8_t *out, int n)
{
    uint8_t iv[16] = {0}, zero[32] = {0};
    memcpy(iv, msalt, 14);
    iv[7] ^= label;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l;
    EVP_EncryptInit_ex(c, EVP_aes_128_ctr(), NULL, mkey, iv);
    EVP_EncryptUpdate(c, out, &l, zero, n);
    EVP_CIPHER_CTX_free(c);
}

static struct xsrtp *xsrtp_new(const uint8_t *master /* 30 bytes */, int tag_len)
{
    struct xsrtp *x = calloc(1, sizeof *x);
    uint8_t ek[16], ak[64] = {0}, pad[64];
    kdf(master, master + 16, 0, ek, 16);
    kdf(master, master + 16, 1, ak, 20);
    kdf(master, master + 16, 2, x->salt, 14);
    x->aes = EVP_CIPHER_CTX_new();
    EVP_EncryptInit_ex(x->aes, EVP_aes_128_ctr(), NULL, ek, NULL);
    x->inner = EVP_MD_CTX_new();
    x->outer = EVP_MD_CTX_new();
    x->work = EVP_MD_CTX_new();
    for (int i = 0; i < 64; i++) pad[i] = ak[i] ^ 0x36;
    EVP_DigestInit_ex(x->inner, EVP_sha1(), NULL);
    EVP_DigestUpdate(x->inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = ak[i] ^ 0x5c;
    EVP_DigestInit_ex(x->outer, EVP_sha1(), NULL);
    EVP_DigestUpdate(x->outer, pad, 64);
    x->tag_len = tag_len;
    return x;
}

static void xsrtp_tag(struct xsrtp *x, const uint8_t *p, int len, uint32_t roc, uint8_t *tag)
{
    uint8_t r[4] = {(uint8_t)(roc >> 24), (uint8_t)(roc >> 16), (uint8_t)(roc >> 8), (uint8_t)roc};
    uint8_t h[20];
    unsigned int hl;
    EVP_MD_CTX_copy_ex(x->work, x->inner);
    EVP_DigestUpdate(x->work, p, (size_t)len);
    EVP_DigestUpdate(x->work, r, 4);
    EVP_DigestFinal_ex(x->work, h, &hl);
    EVP_MD_CTX_copy_ex(x->work, x->outer);
    EVP_DigestUpdate(x->work, h, 20);
    EVP_DigestFinal_ex(x->work, h, &hl);
    memcpy(tag, h, (size_t)x->tag_len);
}

static int rtp_header_len(const uint8_t *p, int len)
{
    int hdr = 12 + 4 * (p[0] & 0x0f);
    if (len < hdr) return -1;
    if (p[0] & 0x10) {
        if (len < hdr + 4) return -1;
        hdr += 4 + 4 * ((p[hdr + 2] << 8) | p[hdr + 3]);
        if (len < hdr) return -1;
    }
    return hdr;
}

static void xsrtp_crypt(struct xsrtp *x, uint8_t *p, int hdr, int len, uint64_t index)
{
    uint8_t iv[16] = {0};
    int l;
    memcpy(iv, x->salt, 14);
    for (int i = 0; i < 4; i++) iv[4 + i] ^= p[8 + i];
    for (int i = 0; i < 6; i++) iv[8 + i] ^= (uint8_t)(index >> (8 * (5 - i)));
    EVP_EncryptInit_ex(x->aes, NULL, NULL, NULL, iv);
    EVP_EncryptUpdate(x->aes, p + hdr, &l, p + hdr, len - hdr);
}

/* in place; buffer must have tag_len spare bytes; returns the new length */
static int xsrtp_protect(struct xsrtp *x, uint8_t *p, int len)
{
    int hdr = rtp_header_len(p, len);
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    if (x->started && seq == 0) x->roc++;
    x->started = 1;
    xsrtp_crypt(x, p, hdr, len, ((uint64_t)x->roc << 16) | seq);
    xsrtp_tag(x, p, len, x->roc, p + len);
    return len + x->tag_len;
}

/* in place; returns the RTP length or -1 if authentication fails */
static int xsrtp_unprotect(struct xsrtp *x, uint8_t *p, int len)
{
    len -= x->tag_len;
    if (len < 12) return -1;
    int hdr = rtp_header_len(p, len);
    if (hdr < 0) return -1;
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    uint32_t v = x->roc; /* RFC 3711 appendix A index guess */
    if (x->started) {
        if (x->s_l < 32768) {
            if (seq - x->s_l > 32768) v = x->roc - 1;
        } else if (x->s_l - 32768 > seq) {
            v = x->roc + 1;
        }
    }
    uint8_t tag[20];
    xsrtp_tag(x, p, len, v, tag);
    if (CRYPTO_memcmp(tag, p + len, (size_t)x->tag_len) != 0) return -1;
    xsrtp_crypt(x, p, hdr, len, ((uint64_t)v << 16) | seq);
    if (!x->started || v > x->roc || (v == x->roc && seq > x->s_l)) {
        x->roc = v;
        x->s_l = seq;
    }
    x->started = 1;
    return len;
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static struct tx_stream *txs;
static size_t ntx, cap_tx;
static struct rx_stream *rxs;
static size_t nrx, cap_rx;
static struct sock_batch *socks[MAX_SOCKETS];
static int nsocks;
static struct sock_batch rxbatch;

/* open addressing SSRC -> rx index */
static uint32_t *map_key;
static int32_t *map_val;
static size_t map_cap;

static uint64_t lat_hist[LAT_BUCKETS + 1];
static uint64_t lat_count, foreign, auth_fail_total, malformed, send_errors, undecrypted;
static uint64_t latency_max_us;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

static void map_build(void)
{
    map_cap = 1;
    while (map_cap < nrx * 4 + 16) map_cap <<= 1;
    map_key = calloc(map_cap, sizeof *map_key);
    map_val = malloc(map_cap * sizeof *map_val);
    for (size_t i = 0; i < map_cap; i++) map_val[i] = -1;
    for (size_t i = 0; i < nrx; i++) {
        size_t h = hash32(rxs[i].ssrc) & (map_cap - 1);
        while (map_val[h] >= 0) {
            if (map_key[h] == rxs[i].ssrc) die("duplicate rx ssrc");
            h = (h + 1) & (map_cap - 1);
        }
        map_key[h] = rxs[i].ssrc;
        map_val[h] = (int32_t)i;
    }
}

static int32_t map_get(uint32_t ssrc)
{
    size_t h = hash32(ssrc) & (map_cap - 1);
    while (map_val[h] >= 0) {
        if (map_key[h] == ssrc) return map_val[h];
        h = (h + 1) & (map_cap - 1);
    }
    return -1;
}

static enum suite parse_suite(const char *s)
{
    if (!strcmp(s, "none")) return SUITE_NONE;
    if (!strcmp(s, "AES_CM_128_HMAC_SHA1_80")) return SUITE_80;
    if (!strcmp(s, "AES_CM_128_HMAC_SHA1_32")) return SUITE_32;
    die("unknown suite");
    return SUITE_NONE;
}

static void parse_key(const char *hex, uint8_t *key)
{
    if (strlen(hex) != 60) die("key must be 60 hex digits (key || salt)");
    for (int i = 0; i < 30; i++) {
        unsigned int b;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1) die("bad key hex");
        key[i] = (uint8_t)b;
    }
}

static struct xsrtp *make_session(enum suite suite, const char *hex)
{
    uint8_t key[30];
    parse_key(hex, key);
    return xsrtp_new(key, suite == SUITE_80 ? 10 : 4);
}

/* libsrtp2 reference session, used only by --selftest */
static srtp_t libsrtp_session(enum suite suite, uint8_t *key, int inbound)
{
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    if (suite == SUITE_80) srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
    else srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&policy.rtp);
    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
    policy.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    policy.key = key;
    policy.window_size = 1024;
    srtp_t session;
    if (srtp_create(&session, &policy) != srtp_err_status_ok) die("srtp_create failed");
    return session;
}

/* Our SRTP against libsrtp2, both directions, both suites, across a ROC wrap. */
static int selftest(void)
{
    int failures = 0;
    for (int si = 0; si < 2; si++) {
        enum suite suite = si ? SUITE_32 : SUITE_80;
        uint8_t key[30];
        for (int i = 0; i < 30; i++) key[i] = (uint8_t)(i * 37 + 11 + si);
        srtp_t ref_tx = libsrtp_session(suite, key, 0), ref_rx = libsrtp_session(suite, key, 1);
        struct xsrtp *our_tx = xsrtp_new(key, suite == SUITE_80 ? 10 : 4);
        struct xsrtp *our_rx = xsrtp_new(key, suite == SUITE_80 ? 10 : 4);
        uint16_t seq = 65000;
        for (int n = 0; n < 1200; n++, seq++) {
            uint8_t a[256], b[256], orig[256];
            int len = 12 + 160;
            memset(orig, 0, sizeof orig);
            orig[0] = 0x80; orig[1] = 0;
            orig[2] = (uint8_t)(seq >> 8); orig[3] = (uint8_t)seq;
            orig[4] = 1; orig[7] = (uint8_t)n; orig[8] = 0xde; orig[9] = 0xad; orig[10] = 0xbe; orig[11] = 0xef;
            for (int i = 12; i < len; i++) orig[i] = (uint8_t)(i * n);
            /* ours -> libsrtp */
            memcpy(a, orig, (size_t)len);
            int la = xsrtp_protect(our_tx, a, len);
            memcpy(b, orig, (size_t)len);
            int lb = len;
            if (srtp_protect(ref_tx, b, &lb) != srtp_err_status_ok) die("srtp_protect");
            if (la != lb || memcmp(a, b, (size_t)la)) failures++;
            if (srtp_unprotect(ref_rx, a, &la) != srtp_err_status_ok || la != len || memcmp(a, orig, (size_t)len)) failures++;
            /* libsrtp -> ours */
            int lr = xsrtp_unprotect(our_rx, b, lb);
            if (lr != len || memcmp(b, orig, (size_t)len)) failures++;
        }
        /* a flipped bit must fail */
        uint8_t c[256];
        memset(c, 0, sizeof c);
        c[0] = 0x80; c[3] = 9; c[11] = 1;
        struct xsrtp *t2 = xsrtp_new(key, 10), *r2 = xsrtp_new(key, 10);
        int lc = xsrtp_protect(t2, c, 172);
        c[50] ^= 1;
        if (xsrtp_unprotect(r2, c, lc) != -1) failures++;
    }
    printf("{\"selftest\": \"%s\", \"failures\": %d}\n", failures ? "fail" : "ok", failures);
    return failures ? 1 : 0;
}

static int open_socket(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int size = 16 * 1024 * 1024;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "loadgen: bind 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(2);
    }
    return fd;
}

static void batch_init(struct sock_batch *b, int fd)
{
    memset(b, 0, sizeof *b);
    b->fd = fd;
    for (int i = 0; i < BATCH; i++) {
        b->iov[i].iov_base = b->buf[i];
        b->iov[i].iov_len = PKT_MAX;
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_name = &b->names[i];
        b->msgs[i].msg_hdr.msg_namelen = sizeof b->names[i];
    }
}

static void flush(struct sock_batch *b)
{
    int off = 0;
    while (off < b->n) {
        int r = sendmmsg(b->fd, b->msgs + off, (unsigned)(b->n - off), 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            send_errors++; /* drop this one message and go on */
            off++;
            continue;
        }
        off += r;
    }
    b->n = 0;
}

static size_t payload_len = 160;

static void queue_packet(struct tx_stream *t, size_t idx, int64_t stamp)
{
    struct sock_batch *b = socks[t->sock];
    uint8_t *p = b->buf[b->n];
    p[0] = 0x80;
    p[1] = t->pt & 0x7f;
    p[2] = (uint8_t)(t->seq >> 8);
    p[3] = (uint8_t)t->seq;
    p[4] = (uint8_t)(t->ts >> 24); p[5] = (uint8_t)(t->ts >> 16);
    p[6] = (uint8_t)(t->ts >> 8); p[7] = (uint8_t)t->ts;
    p[8] = (uint8_t)(t->ssrc >> 24); p[9] = (uint8_t)(t->ssrc >> 16);
    p[10] = (uint8_t)(t->ssrc >> 8); p[11] = (uint8_t)t->ssrc;
    memset(p + 12, 0xff, payload_len); /* u-law silence */
    memcpy(p + 12, &stamp, sizeof stamp);
    uint32_t i32 = (uint32_t)idx;
    memcpy(p + 20, &i32, sizeof i32);
    int len = (int)(12 + payload_len);
    if (t->srtp) len = xsrtp_protect(t->srtp, p, len);
    t->seq++;
    t->ts += 160;
    t->sent++;
    b->iov[b->n].iov_len = (size_t)len;
    b->names[b->n] = t->dst;
    b->msgs[b->n].msg_hdr.msg_namelen = sizeof t->dst;
    if (++b->n == BATCH) flush(b);
}

static void handle_packet(uint8_t *p, int len, int64_t now)
{
    if (len < 12 || (p[0] & 0xc0) != 0x80) { malformed++; return; }
    uint8_t pt = p[1] & 0x7f;
    if (pt >= 64 && pt <= 95) { foreign++; return; } /* RTCP */
    uint32_t ssrc = ((uint32_t)p[8] << 24) | ((uint32_t)p[9] << 16) | ((uint32_t)p[10] << 8) | p[11];
    int32_t i = map_get(ssrc);
    if (i < 0) { foreign++; return; }
    struct rx_stream *r = &rxs[i];
    int which = 0;
    if (r->nkeys > 0) {
        uint8_t copy[PKT_MAX];
        int l = len;
        int ok = -1;
        int first = r->last_ok;
        memcpy(copy, p, (size_t)len);
        for (int k = 0; k < r->nkeys; k++) {
            int key = (first + k) % r->nkeys;
            if (k > 0) { memcpy(p, copy, (size_t)len); l = len; }
            l = xsrtp_unprotect(r->srtp[key], p, len);
            if (l >= 0) { ok = key; break; }
        }
        if (ok < 0) { r->auth_fail++; auth_fail_total++; return; }
        r->last_ok = ok;
        which = ok;
        len = l;
    }
    /* The payload must start with our send time: a packet still encrypted (a
     * relay that forwarded SRTP as is) has a random stamp and is not counted. */
    int hdr = rtp_header_len(p, len);
    int64_t stamp = 0;
    if (hdr < 0 || len < hdr + 8) { undecrypted++; return; }
    memcpy(&stamp, p + hdr, sizeof stamp);
    int64_t us = (now - stamp) / 1000;
    if (us < 0 || us >= 60LL * 1000000) { undecrypted++; return; }
    size_t bucket = (size_t)(us / LAT_BUCKET_US);
    lat_hist[bucket < LAT_BUCKETS ? bucket : LAT_BUCKETS]++;
    lat_count++;
    if ((uint64_t)us > latency_max_us) latency_max_us = (uint64_t)us;
    r->received++;
    r->last_ns = now;
    if (which == 1) {
        if (!r->received_new) r->first_new_ns = now;
        r->received_new++;
    }
}

static void drain(void)
{
    for (int s = 0; s < nsocks; s++) {
        struct sock_batch *b = &rxbatch;
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                b->iov[i].iov_len = PKT_MAX;
                b->msgs[i].msg_hdr.msg_namelen = sizeof b->names[i];
            }
            int r = recvmmsg(socks[s]->fd, b->msgs, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0) break;
            int64_t now = now_ns();
            for (int i = 0; i < r; i++) handle_packet(b->buf[i], (int)b->msgs[i].msg_len, now);
            if (r < BATCH) break;
        }
    }
}

static uint64_t percentile(double q)
{
    if (!lat_count) return 0;
    uint64_t want = (uint64_t)(q * (double)lat_count);
    uint64_t acc = 0;
    for (size_t i = 0; i <= LAT_BUCKETS; i++) {
        acc += lat_hist[i];
        if (acc > want) return (uint64_t)(i + 1) * LAT_BUCKET_US;
    }
    return latency_max_us;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_flag) {
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) die("usage: loadgen CONFIG | --selftest");
    if (srtp_init() != srtp_err_status_ok) die("srtp_init failed");
    if (!strcmp(argv[1], "--selftest")) return selftest();
    FILE *f = fopen(argv[1], "r");
    if (!f) die("cannot open config");
    double duration = 10.0;
    int64_t drain_ns = 500 * 1000000LL, tick_ns = 1000000LL, interval_ns = 20000000LL;
    int blast = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char a[64], b[64] = "";
        int n = sscanf(line, "%63s %63s", a, b);
        if (n <= 0 || a[0] == '#') continue;
        if (!strcmp(a, "duration")) duration = atof(b);
        else if (!strcmp(a, "drain_ms")) drain_ns = atoll(b) * 1000000LL;
        else if (!strcmp(a, "tick_us")) tick_ns = atoll(b) * 1000LL;
        else if (!strcmp(a, "interval_us")) interval_ns = atoll(b) * 1000LL;
        else if (!strcmp(a, "payload")) payload_len = (size_t)atoi(b);
        else if (!strcmp(a, "blast")) blast = atoi(b);
        else if (!strcmp(a, "socket")) {
            if (nsocks == MAX_SOCKETS) die("too many sockets");
            socks[nsocks] = malloc(sizeof(struct sock_batch));
            batch_init(socks[nsocks], open_socket(atoi(b)));
            nsocks++;
        } else if (!strcmp(a, "tx")) {
            /* tx SOCK DSTPORT SSRC PT SUITE KEY */
            char sock[16], dport[16], ssrc[16], pt[16], suite[40], key[80];
            if (sscanf(line, "%*s %15s %15s %15s %15s %39s %79s", sock, dport, ssrc, pt, suite, key) != 6)
                die("bad tx line");
            if (ntx == cap_tx) { cap_tx = cap_tx ? cap_tx * 2 : 256; txs = realloc(txs, cap_tx * sizeof *txs); }
            struct tx_stream *t = &txs[ntx++];
            memset(t, 0, sizeof *t);
            t->sock = atoi(sock);
            if (t->sock < 0 || t->sock >= nsocks) die("tx socket index");
            t->dst.sin_family = AF_INET;
            t->dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            t->dst.sin_port = htons((uint16_t)atoi(dport));
            t->ssrc = (uint32_t)strtoul(ssrc, NULL, 10);
            t->pt = (uint8_t)atoi(pt);
            t->seq = (uint16_t)(t->ssrc * 7u);
            t->ts = t->ssrc * 13u;
            enum suite s = parse_suite(suite);
            if (s != SUITE_NONE) t->srtp = make_session(s, key);
        } else if (!strcmp(a, "rx")) {
            char sock[16], ssrc[16], suite[40], k1[80], k2[80];
            int m = sscanf(line, "%*s %15s %15s %39s %79s %79s", sock, ssrc, suite, k1, k2);
            if (m < 4) die("bad rx line");
            if (nrx == cap_rx) { cap_rx = cap_rx ? cap_rx * 2 : 256; rxs = realloc(rxs, cap_rx * sizeof *rxs); }
            struct rx_stream *r = &rxs[nrx++];
            memset(r, 0, sizeof *r);
            r->sock = atoi(sock);
            r->ssrc = (uint32_t)strtoul(ssrc, NULL, 10);
            enum suite s = parse_suite(suite);
            if (s != SUITE_NONE) {
                r->srtp[r->nkeys++] = make_session(s, k1);
                if (m == 5) r->srtp[r->nkeys++] = make_session(s, k2);
            }
        } else die("unknown directive");
    }
    fclose(f);
    if (!nsocks) die("no sockets");
    batch_init(&rxbatch, -1);
    map_build();
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int64_t t0 = now_ns() + 20000000LL;
    int64_t t_end = t0 + (int64_t)(duration * 1e9);
    uint64_t j = 0; /* global packet index: stream j % ntx, due at t0 + j * interval / ntx */
    int64_t max_lag = 0;
    uint64_t late_ticks = 0, ticks = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    sleep_until(t0);
    int64_t next_tick = t0;
    int64_t last_send = t0;
    while (!stop_flag && ntx) {
        int64_t now = now_ns();
        if (now >= t_end) break;
        ticks++;
        if (blast) {
            for (int k = 0; k < 4 * BATCH; k++, j++) queue_packet(&txs[j % ntx], j % ntx, now);
            for (int s = 0; s < nsocks; s++) if (socks[s]->n) flush(socks[s]);
            drain();
            continue;
        }
        int64_t due = t0 + (int64_t)((j * (uint64_t)interval_ns) / ntx);
        if (due <= now) {
            int64_t lag = now - due;
            if (lag > max_lag) max_lag = lag;
            if (lag > 2 * tick_ns) late_ticks++;
        }
        while (due <= now && due < t_end) {
            queue_packet(&txs[j % ntx], j % ntx, now);
            j++;
            due = t0 + (int64_t)((j * (uint64_t)interval_ns) / ntx);
        }
        for (int s = 0; s < nsocks; s++) if (socks[s]->n) flush(socks[s]);
        last_send = now;
        drain();
        next_tick += tick_ns;
        if (next_tick > now_ns()) sleep_until(next_tick);
        else next_tick = now_ns();
    }
    int64_t t_stop = now_ns();
    (void)last_send;
    uint64_t received_at_stop = 0; /* what a relay still holds now is its backlog */
    for (size_t i = 0; i < nrx; i++) received_at_stop += rxs[i].received;
    if (ntx == 0) t_stop = t_end, sleep_until(t_end);
    /* receive-only tail */
    int64_t tail_end = now_ns() + drain_ns;
    while (!stop_flag && now_ns() < tail_end) {
        drain();
        sleep_until(now_ns() + tick_ns);
    }
    drain();
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

    uint64_t sent = 0, received = 0, sent_min = UINT64_MAX, sent_max = 0;
    for (size_t i = 0; i < ntx; i++) {
        sent += txs[i].sent;
        if (txs[i].sent < sent_min) sent_min = txs[i].sent;
        if (txs[i].sent > sent_max) sent_max = txs[i].sent;
    }
    if (!ntx) sent_min = 0;
    uint64_t rx_min = UINT64_MAX, silent = 0;
    for (size_t i = 0; i < nrx; i++) {
        received += rxs[i].received;
        if (rxs[i].received < rx_min) rx_min = rxs[i].received;
        if (!rxs[i].received) silent++;
    }
    if (!nrx) rx_min = 0;
    printf("{\"t_start_ns\": %lld, \"t_stop_ns\": %lld, \"send_seconds\": %.6f, \"tx_streams\": %zu, \"rx_streams\": %zu,"
           " \"sent\": %llu, \"received\": %llu, \"received_at_stop\": %llu, \"sent_per_stream_min\": %llu, \"sent_per_stream_max\": %llu,"
           " \"received_per_stream_min\": %llu, \"silent_rx_streams\": %llu,"
           " \"foreign\": %llu, \"undecrypted\": %llu, \"malformed\": %llu, \"auth_fail\": %llu, \"send_errors\": %llu,"
           " \"max_lag_us\": %lld, \"late_ticks\": %llu, \"ticks\": %llu, \"cpu_seconds\": %.4f,"
           " \"latency_us\": {\"p50\": %llu, \"p99\": %llu, \"max\": %llu, \"count\": %llu},",
           (long long)t0, (long long)t_stop, (double)(t_stop - t0) / 1e9, ntx, nrx,
           (unsigned long long)sent, (unsigned long long)received, (unsigned long long)received_at_stop, (unsigned long long)sent_min,
           (unsigned long long)sent_max, (unsigned long long)rx_min, (unsigned long long)silent,
           (unsigned long long)foreign, (unsigned long long)undecrypted, (unsigned long long)malformed, (unsigned long long)auth_fail_total,
           (unsigned long long)send_errors, (long long)(max_lag / 1000), (unsigned long long)late_ticks,
           (unsigned long long)ticks, cpu, (unsigned long long)percentile(0.5),
           (unsigned long long)percentile(0.99), (unsigned long long)latency_max_us, (unsigned long long)lat_count);
    printf(" \"rx\": [");
    for (size_t i = 0; i < nrx; i++)
        printf("%s[%llu, %llu, %lld, %llu]", i ? ", " : "", (unsigned long long)rxs[i].received,
               (unsigned long long)rxs[i].received_new, (long long)rxs[i].first_new_ns,
               (unsigned long long)rxs[i].auth_fail);
    printf("]}\n");
    return 0;
}
