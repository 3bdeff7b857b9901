/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hello-web: examples/hello's `web` service, a tiny static HTTP server (one request per
 * connection, port 8080). For each request it calls the guest agent's GetKey over
 * /var/run/dstack.sock (raw HTTP/1.1 over a Unix socket, path "hello", purpose "web"),
 * fetches `backend`'s answer (http://backend:8081/), and replies with
 *   <GREETING> key-sha256=<hex SHA-256 of the 32 key bytes> backend=<backend's answer>
 * so a client can check the answer against the key GetKey returns for the app without the
 * key itself leaving the CVM. On its first start it writes /data/note.txt (its data volume:
 * "hello-note-<32 random hex>") and `GET /note` answers with that file, so a client can check
 * that the volume survives a stop/start and that its backing disk never holds the plaintext.
 * Built with `cc -static -lcrypto` by scripts/build-hello-images.sh.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/time.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RESP_MAX 16384
#define KEY_LEN  32

static ssize_t roundtrip(int fd, const char *req, char *resp, size_t cap)
{
    size_t len = strlen(req), off = 0;
    while (off < len) {
        ssize_t n = write(fd, req + off, len - off);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    off = 0;
    for (;;) {
        ssize_t n = read(fd, resp + off, cap - 1 - off);
        if (n < 0)
            return -1;
        if (n == 0 || off + (size_t)n >= cap - 1) {
            off += (size_t)(n > 0 ? n : 0);
            break;
        }
        off += (size_t)n;
    }
    resp[off] = 0;
    return (ssize_t)off;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : NULL;
}

/* GetKey -> SHA-256(key) as hex in out (65 bytes). */
static int key_digest(char *out)
{
    static char resp[RESP_MAX];
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/var/run/dstack.sock");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ssize_t n = roundtrip(fd,
                          "GET /GetKey?path=hello&purpose=web HTTP/1.1\r\nHost: localhost\r\n"
                          "Connection: close\r\n\r\n",
                          resp, sizeof(resp));
    close(fd);
    if (n <= 0 || strncmp(resp, "HTTP/1.1 200", 12) != 0)
        return -1;
    const char *k = strstr(resp, "\"key\":\"");
    if (!k)
        return -1;
    k += 7;
    unsigned char key[KEY_LEN], md[SHA256_DIGEST_LENGTH];
    for (int i = 0; i < KEY_LEN; i++) {
        unsigned int v;
        if (sscanf(k + 2 * i, "%2x", &v) != 1)
            return -1;
        key[i] = (unsigned char)v;
    }
    if (k[2 * KEY_LEN] != '"')
        return -1;
    SHA256(key, sizeof(key), md);
    memset(key, 0, sizeof(key));
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    return 0;
}

#define DNS_MAX 512

/* Resolve NAME to an IPv4 address with one DNS A query to the first nameserver in
 * /etc/resolv.conf (Docker's embedded DNS for compose service names). A static glibc binary
 * cannot use getaddrinfo's NSS modules, hence this. */
static int resolve4(const char *name, struct in_addr *out)
{
    char line[256], ns[64] = "";
    FILE *f = fopen("/etc/resolv.conf", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "nameserver %63s", ns) == 1)
            break;
    if (f)
        fclose(f);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
    if (!*ns || inet_pton(AF_INET, ns, &sa.sin_addr) != 1)
        return -1;
    unsigned char q[DNS_MAX] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, r[DNS_MAX];
    size_t n = 12;
    for (const char *p = name; *p;) {
        size_t l = strcspn(p, ".");
        if (l == 0 || l > 63 || n + l + 6 > sizeof(q))
            return -1;
        q[n++] = (unsigned char)l;
        memcpy(q + n, p, l);
        n += l;
        p += l + (p[l] == '.');
    }
    q[n++] = 0;
    q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A, IN */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t rn = -1;
    if (fd >= 0 && sendto(fd, q, n, 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)n)
        rn = recv(fd, r, sizeof(r), 0);
    if (fd >= 0)
        close(fd);
    if (rn < (ssize_t)n || r[0] != 0x12 || r[1] != 0x34 || (r[3] & 0xf) != 0)
        return -1;
    size_t off = n, an = (size_t)(r[6] << 8 | r[7]);
    for (size_t i = 0; i < an; i++) {
        while (off < (size_t)rn && r[off] && (r[off] & 0xc0) != 0xc0)
            off += r[off] + 1u;
        off += off < (size_t)rn && r[off] ? 2 : 1;
        if (off + 10 > (size_t)rn)
            return -1;
        size_t type = (size_t)(r[off] << 8 | r[off + 1]),
               rdl = (size_t)(r[off + 8] << 8 | r[off + 9]);
        off += 10;
        if (off + rdl > (size_t)rn)
            return -1;
        if (type == 1 && rdl == 4) {
            memcpy(out, r + off, 4);
            return 0;
        }
        off += rdl;
    }
    return -1;
}

static void backend_answer(char *out, size_t cap)
{
    static char resp[RESP_MAX];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(8081)};
    snprintf(out, cap, "unreachable");
    if (resolve4("backend", &sa.sin_addr) != 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        roundtrip(fd, "GET / HTTP/1.0\r\nHost: backend\r\n\r\n", resp, sizeof(resp)) > 0) {
        const char *b = body_of(resp);
        if (b) {
            snprintf(out, cap, "%s", b);
            out[strcspn(out, "\r\n")] = 0;
        }
    }
    if (fd >= 0)
        close(fd);
}

#define NOTE_PATH "/data/note.txt"
#define NOTE_MAX  128

/* First start: write NOTE_PATH with a random token; later starts keep the file. */
static void note_init(void)
{
    if (access(NOTE_PATH, F_OK) == 0)
        return;
    unsigned char rnd[16];
    FILE *u = fopen("/dev/urandom", "rb");
    if (!u || fread(rnd, 1, sizeof(rnd), u) != sizeof(rnd)) {
        if (u)
            fclose(u);
        fprintf(stderr, "hello-web: /dev/urandom unreadable\n");
        return;
    }
    fclose(u);
    FILE *f = fopen(NOTE_PATH ".tmp", "w");
    if (!f) {
        perror("hello-web: " NOTE_PATH);
        return;
    }
    fprintf(f, "hello-note-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        fprintf(f, "%02x", rnd[i]);
    fprintf(f, "\n");
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
        rename(NOTE_PATH ".tmp", NOTE_PATH) != 0)
        perror("hello-web: writing " NOTE_PATH);
}

static void note_read(char *out, size_t cap)
{
    snprintf(out, cap, "no-note\n");
    FILE *f = fopen(NOTE_PATH, "r");
    if (f) {
        if (!fgets(out, (int)cap, f))
            snprintf(out, cap, "no-note\n");
        fclose(f);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    note_init();
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(8080)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 64) < 0) {
        perror("hello-web: listen :8080");
        return 1;
    }
    fprintf(stderr, "hello-web: listening on :8080\n");
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            continue;
        char req[4096], digest[2 * SHA256_DIGEST_LENGTH + 1], be[512], body[1024], out[1400];
        ssize_t rl = read(c, req, sizeof(req) - 1);
        req[rl > 0 ? rl : 0] = 0;
        if (strncmp(req, "GET /note ", 10) == 0) {
            char note[NOTE_MAX];
            note_read(note, sizeof(note));
            int ol = snprintf(out, sizeof(out),
                              "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                              "%zu\r\nConnection: close\r\n\r\n%s",
                              strlen(note), note);
            (void)write(c, out, (size_t)ol);
            close(c);
            continue;
        }
        const char *greeting = getenv("GREETING");
        int status = 200;
        if (key_digest(digest) != 0) {
            status = 500;
            snprintf(digest, sizeof(digest), "GetKey-failed");
        }
        backend_answer(be, sizeof(be));
        int bl = snprintf(body, sizeof(body), "%s key-sha256=%s backend=%s\n",
                          greeting && *greeting ? greeting : "hello", digest, be);
        int ol = snprintf(out, sizeof(out),
                          "HTTP/1.0 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                          "Connection: close\r\n\r\n%s",
                          status, status == 200 ? "OK" : "Error", bl, body);
        (void)write(c, out, (size_t)ol);
        close(c);
    }
}
