#include "writer/wr_tls_send.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "writer/wr_net.h"

struct wr_tls_sender {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t posted, finished;
	struct net_tls *tls;
	int wake_fd;
	bool busy;		/* a batch is handed over and not done */
	int error;		/* the first failure; nothing is sent after it */
	_Atomic uint64_t done;
	size_t n_iov;
	struct iovec iov[WR_NET_IOV];
	uint8_t gather[NET_TLS_RECORD_MAX];
};

/* Full records: a long piece is protected straight from where it lies, in
 * whole records; what is left of it and the small pieces (headers, bitmaps)
 * are gathered with what follows them. */
static int send_batch(struct wr_tls_sender *s)
{
	size_t fill = 0;
	for (size_t i = 0; i < s->n_iov; i++) {
		const uint8_t *p = s->iov[i].iov_base;
		size_t len = s->iov[i].iov_len;
		while (len) {
			int rc = 0;
			if (fill == 0 && len >= NET_TLS_RECORD_MAX) {
				size_t whole = len - len % NET_TLS_RECORD_MAX;
				rc = net_tls_send_more(s->tls, p, whole, len > whole || i + 1 < s->n_iov);
				p += whole;
				len -= whole;
			} else {
				size_t take = NET_TLS_RECORD_MAX - fill < len ? NET_TLS_RECORD_MAX - fill : len;
				memcpy(s->gather + fill, p, take);
				fill += take;
				p += take;
				len -= take;
				if (fill == NET_TLS_RECORD_MAX) {
					rc = net_tls_send_more(s->tls, s->gather, fill, len || i + 1 < s->n_iov);
					fill = 0;
				}
			}
			if (rc < 0)
				return rc;
		}
	}
	return fill ? net_tls_send(s->tls, s->gather, fill) : 0;
}

static void *run(void *arg)
{
	struct wr_tls_sender *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->busy)
			pthread_cond_wait(&s->posted, &s->lock);
		int failed = s->error;
		pthread_mutex_unlock(&s->lock);
		int rc = failed ? failed : send_batch(s);
		pthread_mutex_lock(&s->lock);
		if (rc < 0 && !s->error)
			s->error = rc;
		s->busy = false;
		atomic_fetch_add_explicit(&s->done, 1, memory_order_release);
		pthread_cond_signal(&s->finished);
		char one = 1;
		(void)!write(s->wake_fd, &one, 1); /* a full pipe already wakes the writer */
	}
	return NULL;
}

int wr_tls_sender_start(struct wr_tls_sender **out, struct net_tls *tls, int wake_fd)
{
	struct wr_tls_sender *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->tls = tls;
	s->wake_fd = wake_fd;
	int rc = pthread_mutex_init(&s->lock, NULL);
	if (rc == 0)
		rc = pthread_cond_init(&s->posted, NULL);
	if (rc == 0)
		rc = pthread_cond_init(&s->finished, NULL);
	if (rc == 0)
		rc = pthread_create(&s->thread, NULL, run, s);
	if (rc != 0) {
		free(s);
		return -rc;
	}
	*out = s;
	return 0;
}

int wr_tls_sender_wait(struct wr_tls_sender *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->busy)
		pthread_cond_wait(&s->finished, &s->lock);
	int rc = s->error;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int wr_tls_sender_check(struct wr_tls_sender *s)
{
	pthread_mutex_lock(&s->lock);
	int rc = s->busy ? 0 : s->error;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void wr_tls_sender_post(struct wr_tls_sender *s, const struct iovec *iov, size_t n_iov)
{
	pthread_mutex_lock(&s->lock);
	memcpy(s->iov, iov, n_iov * sizeof(*iov));
	s->n_iov = n_iov;
	s->busy = true;
	pthread_cond_signal(&s->posted);
	pthread_mutex_unlock(&s->lock);
}

uint64_t wr_tls_sender_done(struct wr_tls_sender *s)
{
	return atomic_load_explicit(&s->done, memory_order_acquire);
}
