#include "dio/dio_queue.h"
#include "dio/dio_sync.h"

#include <errno.h>
#include <linux/aio_abi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

struct dio_request {
	struct iocb cb;
	uint64_t tag;
	uint64_t total;		/* bytes asked for, to report on completion */
	struct iovec iov[DIO_QUEUE_MAX_IOV]; /* what is left (after a short transfer) */
	uint32_t n_iov, first_iov;
	uint64_t left;
	uint64_t off;
};

#define REAP_BATCH 64

int dio_queue_init(struct dio_queue *q, uint32_t depth, dio_done_fn done, void *done_ctx)
{
	memset(q, 0, sizeof(*q));
	q->notify_fd = -1;
	if (depth == 0 || depth > DIO_QUEUE_MAX_DEPTH)
		return -EINVAL;
	q->depth = depth;
	q->done = done;
	q->done_ctx = done_ctx;
	q->req = calloc(depth, sizeof(*q->req));
	q->free_slots = calloc(depth, sizeof(*q->free_slots));
	if (!q->req || !q->free_slots) {
		dio_queue_destroy(q);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < depth; i++)
		q->free_slots[i] = i;
	q->n_free = depth;
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, depth, &ctx) < 0) {
		int err = -errno;
		dio_queue_destroy(q);
		return err;
	}
	q->ctx_id = ctx;
	return 0;
}

void dio_queue_init_sync(struct dio_queue *q, dio_done_fn done, void *done_ctx)
{
	memset(q, 0, sizeof(*q));
	q->notify_fd = -1;
	q->done = done;
	q->done_ctx = done_ctx;
}

/* A synchronous request: done, and reported done, before it returns. */
static int transfer_now(struct dio_queue *q, enum dio_op op, int fd, const struct iovec *iov, uint32_t n_iov,
			uint64_t off, uint64_t tag)
{
	struct iovec left[DIO_QUEUE_MAX_IOV];
	uint64_t total = 0;
	for (uint32_t i = 0; i < n_iov; i++) {
		left[i] = iov[i];
		total += iov[i].iov_len;
	}
	int rc = dio_rwv_full(fd, op == DIO_WRITE, left, (int)n_iov, off);
	if (rc < 0)
		return rc;
	if (q->done)
		q->done(q->done_ctx, tag, total);
	return 0;
}

static int submit_slot(struct dio_queue *q, uint32_t slot)
{
	struct dio_request *r = &q->req[slot];
	struct iocb *cb = &r->cb;
	uint16_t opcode = cb->aio_lio_opcode;
	uint32_t fd = cb->aio_fildes;
	memset(cb, 0, sizeof(*cb));
	cb->aio_data = slot;
	cb->aio_lio_opcode = opcode;
	cb->aio_fildes = fd;
	cb->aio_buf = (uint64_t)(uintptr_t)(r->iov + r->first_iov);
	cb->aio_nbytes = r->n_iov - r->first_iov;
	cb->aio_offset = (int64_t)r->off;
	if (q->notify_fd >= 0) {
		cb->aio_flags = IOCB_FLAG_RESFD;
		cb->aio_resfd = (uint32_t)q->notify_fd;
	}
	struct iocb *list[1] = { cb };
	for (;;) {
		long n = syscall(SYS_io_submit, (aio_context_t)q->ctx_id, 1L, list);
		if (n == 1)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		/* EAGAIN: the kernel is short of request slots right now. */
		if (n < 0 && errno == EAGAIN && q->in_flight)
			return -EAGAIN;
		return n < 0 ? -errno : -EIO;
	}
	q->in_flight++;
	return 0;
}

/* A short transfer moved `done` bytes: the iovecs now start after them. */
static void skip_done(struct dio_request *r, uint64_t done)
{
	while (done) {
		struct iovec *v = &r->iov[r->first_iov];
		if (done < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + done;
			v->iov_len -= done;
			return;
		}
		done -= v->iov_len;
		r->first_iov++;
	}
}

/* Reap at least `min` completions.  A short transfer is resubmitted for the
 * rest (O_DIRECT rarely does that, but a filling disk can). */
static int reap(struct dio_queue *q, long min)
{
	struct io_event ev[REAP_BATCH];
	long got;
	do
		got = syscall(SYS_io_getevents, (aio_context_t)q->ctx_id, min, (long)REAP_BATCH, ev, NULL);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return -errno;
	int first_err = 0;
	for (long k = 0; k < got; k++) {
		uint32_t slot = (uint32_t)ev[k].data;
		if (slot >= q->depth)
			return -EPROTO;
		struct dio_request *r = &q->req[slot];
		q->in_flight--;
		int64_t res = ev[k].res;
		if (res < 0 || (res == 0 && r->left)) {
			if (!first_err)
				first_err = res < 0 ? (int)res : -EIO;
			q->free_slots[q->n_free++] = slot;
			continue;
		}
		if ((uint64_t)res < r->left) {
			skip_done(r, (uint64_t)res);
			r->off += (uint64_t)res;
			r->left -= (uint64_t)res;
			int rc = submit_slot(q, slot);
			if (rc < 0 && !first_err)
				first_err = rc;
			continue;
		}
		q->free_slots[q->n_free++] = slot;
		if (q->done)
			q->done(q->done_ctx, r->tag, r->total);
	}
	return first_err;
}

int dio_queue_submitv(struct dio_queue *q, enum dio_op op, int fd, const struct iovec *iov, uint32_t n_iov,
		      uint64_t off, uint64_t tag)
{
	if (n_iov == 0 || n_iov > DIO_QUEUE_MAX_IOV)
		return -EINVAL;
	if (q->depth == 0)
		return transfer_now(q, op, fd, iov, n_iov, off, tag);
	while (q->n_free == 0) {
		int rc = reap(q, 1);
		if (rc < 0)
			return rc;
	}
	uint32_t slot = q->free_slots[--q->n_free];
	struct dio_request *r = &q->req[slot];
	r->tag = tag;
	r->total = 0;
	for (uint32_t i = 0; i < n_iov; i++) {
		r->iov[i] = iov[i];
		r->total += iov[i].iov_len;
	}
	r->n_iov = n_iov;
	r->first_iov = 0;
	r->left = r->total;
	r->off = off;
	r->cb.aio_lio_opcode = op == DIO_WRITE ? IOCB_CMD_PWRITEV : IOCB_CMD_PREADV;
	r->cb.aio_fildes = (uint32_t)fd;
	int rc;
	while ((rc = submit_slot(q, slot)) == -EAGAIN)
		if ((rc = reap(q, 1)) < 0)
			break;
	if (rc < 0)
		q->free_slots[q->n_free++] = slot;
	return rc;
}

int dio_queue_submit(struct dio_queue *q, enum dio_op op, int fd, void *buf, uint64_t len, uint64_t off,
		     uint64_t tag)
{
	struct iovec v = { buf, len };
	return dio_queue_submitv(q, op, fd, &v, 1, off, tag);
}

int dio_queue_notify(struct dio_queue *q)
{
	q->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return q->notify_fd < 0 ? -errno : q->notify_fd;
}

int dio_queue_reap(struct dio_queue *q)
{
	if (q->notify_fd >= 0) {
		uint64_t count;
		/* Reset before reaping: a completion after this signals again. */
		if (read(q->notify_fd, &count, sizeof(count)) < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return q->in_flight ? reap(q, 0) : 0;
}

int dio_queue_wait(struct dio_queue *q)
{
	return q->in_flight ? reap(q, 1) : 0;
}

int dio_queue_drain(struct dio_queue *q)
{
	int first_err = 0;
	while (q->in_flight) {
		int rc = reap(q, 1);
		if (rc < 0 && !first_err)
			first_err = rc;
	}
	return first_err;
}

void dio_queue_destroy(struct dio_queue *q)
{
	if (q->ctx_id)
		syscall(SYS_io_destroy, (aio_context_t)q->ctx_id);
	if (q->notify_fd >= 0)
		close(q->notify_fd);
	free(q->req);
	free(q->free_slots);
	memset(q, 0, sizeof(*q));
	q->notify_fd = -1;
}
