/* TLS 1.3 around a connected TCP socket (GnuTLS; doc/security.md says why
 * GnuTLS).  Credentials are a pre-shared key (TLS-PSK with an ephemeral
 * (EC)DHE exchange) or X.509 files in the layout of QEMU's tls-creds-x509,
 * with the peer verified on both ends.
 *
 * Everything that opens files or talks to the random source happens in
 * net_tls_creds_* and the handshakes, before a stage locks down.  After it,
 * protecting and unprotecting records needs only sendmsg, recvfrom and
 * poll on the connection's fd (our own transport functions: no other
 * syscall reaches GnuTLS's defaults).
 *
 * Return convention: >= 0 success (a byte count where it says so), or
 * -errno; -EBADMSG means TLS itself failed (a record that does not
 * authenticate, an alert, a refused credential): net_tls_why says how. */
#ifndef PF_NET_TLS_H
#define PF_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* The identity both ends use with a pre-shared key: the key is what matters. */
#define NET_TLS_PSK_IDENTITY "pageferry"
#define NET_TLS_PSK_MIN 16u
#define NET_TLS_PSK_MAX 1024u
/* The most plaintext one record carries (TLS 1.3: 2^14). */
#define NET_TLS_RECORD_MAX 16384u

struct net_tls_creds;
struct net_tls;

enum net_tls_role { NET_TLS_CLIENT, NET_TLS_SERVER };

/* Wipes what it holds of keys. */
void net_tls_creds_free(struct net_tls_creds *c);

/* What a stage's credentials fd holds (its argument --tls=none|psk|x509). */
enum net_tls_kind { NET_TLS_NONE, NET_TLS_PSK, NET_TLS_X509 };
#define NET_TLS_KIND_NAMES { "none", "psk", "x509", NULL }
/* Load credentials of `kind` from fd and close it: PSK, a key file's bytes
 * (trailing newlines dropped), 16 to 1024 of them; X.509, a directory (fd
 * opened O_DIRECTORY) holding ca-cert.pem and server-cert.pem/server-key.pem
 * (server) or client-cert.pem/client-key.pem (client), as QEMU's
 * tls-creds-x509 lays them out.  What was read is wiped.  Also readies the
 * process to protect records: GnuTLS allocates buffers as records come and
 * go, and a thread's first malloc or a large one would mmap, which no
 * stage's sandbox allows, so every thread's malloc stays on the main heap
 * (brk).  *out is NULL for NONE; why: what was wrong, for the user. */
int net_tls_creds_load(struct net_tls_creds **out, enum net_tls_role role, enum net_tls_kind kind, int fd,
		       char *why, size_t why_len);

/* Client: handshake on a blocking fd, all of it within timeout_ms.
 * hostname: what the server's certificate must name (X.509 only). */
int net_tls_client(struct net_tls **out, int fd, const struct net_tls_creds *c, const char *hostname,
		   int timeout_ms);
/* Server: a session on a non-blocking fd; drive it with net_tls_step.
 * `read` (n_read <= 16 bytes): what was already read off the socket to tell
 * TLS from something else; TLS gets it first. */
int net_tls_server(struct net_tls **out, int fd, const struct net_tls_creds *c, const uint8_t *read, size_t n_read);
/* One step of a non-blocking handshake: 0 done, 1 call again once the fd is
 * ready for *events (POLLIN or POLLOUT), < 0 failed. */
int net_tls_step(struct net_tls *t, short *events);

/* Protect and send all of buf (one or more records). */
int net_tls_send(struct net_tls *t, const void *buf, size_t len);
/* The same, saying whether more follows at once (TCP may hold a partial
 * segment for it). */
int net_tls_send_more(struct net_tls *t, const void *buf, size_t len, bool more);
/* Receive and unprotect at most len bytes: > 0 bytes, 0 when the peer
 * closed properly, < 0 failure (-EAGAIN: nothing within the socket's
 * receive timeout, or nothing yet on a non-blocking fd; -ECONNRESET: closed
 * without the TLS close). */
ssize_t net_tls_recv(struct net_tls *t, void *buf, size_t len);
/* Bytes read off the socket and not yet returned (poll would not see them). */
bool net_tls_buffered(const struct net_tls *t);
/* Why the last call failed with -EBADMSG, for the user (never NULL). */
const char *net_tls_why(const struct net_tls *t);
/* Whether TLS refused something on this session (net_tls_why says what). */
bool net_tls_failed(const struct net_tls *t);
/* What the handshake agreed, e.g. "TLS1.3 AES-128-GCM PSK". */
const char *net_tls_description(struct net_tls *t, char *buf, size_t len);
/* Send the TLS close (best effort), free the session and wipe its keys;
 * the fd stays open. */
void net_tls_free(struct net_tls *t);

#endif
