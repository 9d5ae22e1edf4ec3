/* Many O_DIRECT reads or writes in flight from one thread, through Linux
 * native AIO (io_submit/io_getevents).
 *
 * Why AIO and not threads: ext4 holds the inode lock across a synchronous
 * direct write that allocates blocks, so writer threads serialise; an
 * asynchronous submission releases it once the bio is queued (measured in
 * bench/scatter_ref.c).  Why not io_uring: its operations are not seen by
 * seccomp, and AIO can only read and write the fds it is handed.
 */
#ifndef PF_DIO_QUEUE_H
#define PF_DIO_QUEUE_H

#include <stdint.h>
#include <sys/uio.h>

#define DIO_QUEUE_MAX_DEPTH 1024u
#define DIO_QUEUE_MAX_IOV 8u	/* pieces of memory in one request */

enum dio_op { DIO_READ, DIO_WRITE };

/* Called once per request that completed in full. */
typedef void (*dio_done_fn)(void *ctx, uint64_t tag, uint64_t len);

struct dio_request;

struct dio_queue {
	unsigned long ctx_id;		/* aio_context_t */
	uint32_t depth;			/* 0: synchronous (dio_queue_init_sync) */
	uint32_t in_flight;
	uint32_t n_free;
	uint32_t *free_slots;
	struct dio_request *req;
	dio_done_fn done;
	void *done_ctx;
	int notify_fd;			/* eventfd signalled on each completion, or -1 */
};

/* Allocates everything and creates the kernel context: call before lock-down. */
int dio_queue_init(struct dio_queue *q, uint32_t depth, dio_done_fn done, void *done_ctx);
/* The same calls without a kernel context: each request is done by
 * preadv/pwritev in dio_queue_submit*, which calls `done` before it
 * returns.  For a process with few requests to make: an AIO context's
 * teardown holds the process's exit for an RCU grace period (~31 ms here,
 * doc/benchmarks.md "Start-up cost"). */
void dio_queue_init_sync(struct dio_queue *q, dio_done_fn done, void *done_ctx);
/* Queue one request; if all slots are busy, waits for a completion first.
 * `buf`, `len` and `off` must suit O_DIRECT on `fd`.  -errno on failure
 * (of this submission or of an earlier request reaped meanwhile). */
int dio_queue_submit(struct dio_queue *q, enum dio_op op, int fd, void *buf, uint64_t len, uint64_t off,
		     uint64_t tag);
/* The same from up to DIO_QUEUE_MAX_IOV pieces of memory, to or from one
 * stretch of the file (tag's completion covers them all). */
int dio_queue_submitv(struct dio_queue *q, enum dio_op op, int fd, const struct iovec *iov, uint32_t n_iov,
		      uint64_t off, uint64_t tag);
/* Have every completion signal an eventfd (made here, before lock-down):
 * a caller that sleeps in poll wakes for it.  Returns the fd or -errno. */
int dio_queue_notify(struct dio_queue *q);
/* Take the completions there are, without waiting (and reset the eventfd).
 * -errno if a request failed. */
int dio_queue_reap(struct dio_queue *q);
/* Wait for at least one completion (none in flight: return at once).
 * -errno if a request failed. */
int dio_queue_wait(struct dio_queue *q);
/* Wait until nothing is in flight.  -errno if any request failed. */
int dio_queue_drain(struct dio_queue *q);
void dio_queue_destroy(struct dio_queue *q);

#endif
