/* The snapshot sink: each data extent of a run goes to its fixed offset in
 * the snapshot file (writer/wr_snapfile.h) straight from the worker's arena
 * buffer, where the worker read the run's data pages (packed), with the CRC
 * the worker computed as its extent record.  The buffer goes back to its
 * worker once the last of its writes completed. */
#include <errno.h>

#include "protocol/proto_error.h"
#include "stage/stage.h"
#include "workers/wk_arena.h"
#include "writer/wr_recheck.h"
#include "writer/wr_sink.h"
#include "writer/wr_snapfile.h"

static struct wr_snapfile file;
/* snapshot --qmp: the VMM's device state, in WRITER_FD_STATE by the time
 * the scanner starts (the front end stops the guest and takes it only once
 * we run), stored once the pages are written. */
static int state_fd = -1;
/* Writes not yet completed from each arena buffer. */
static uint16_t writes_from[SHM_MAX_WORKERS][WK_ARENA_BUFFERS];
static int notify_fd;

static noreturn void file_failed(int rc, const char *what)
{
	stage_die_errno(rc, "%s", what);
}

static void write_released(void *ctx, uint32_t owner)
{
	uint32_t worker = owner / WK_ARENA_BUFFERS, buffer = owner % WK_ARENA_BUFFERS;
	if (--writes_from[worker][buffer] == 0)
		wr_source_give_back(ctx, worker, buffer);
}

static void file_put(struct wr_sink *s, const struct wr_run *r)
{
	struct wr_source *src = s->src;
	const struct proto_desc *d = &r->d;
	const uint64_t page = src->geo.page_size;
	if (d->encoding == PROTO_ENC_ZERO) {
		stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages);
		return;
	}
	if (d->encoding != PROTO_ENC_RAW && d->encoding != PROTO_ENC_SPARSE)
		stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: encoding %u in a snapshot", r->worker,
			  d->encoding);
	/* Counted before the first write: a completion reaped while the next
	 * is submitted must not give the buffer back early. */
	writes_from[r->worker][d->buffer] = (uint16_t)r->rec.n_extents;
	const uint8_t *arena = src->arena[r->worker] + d->buffer * src->frame_size;
	const uint32_t owner = r->worker * WK_ARENA_BUFFERS + d->buffer;
	uint32_t e = 0, present = 0, k = 0, start, len;
	while (wr_run_next_extent(r, &k, &start, &len)) {
		stage_test_hook("writer");
		int rc = wr_snapfile_add_extent(&file, arena + present * page, d->first_page + start, len,
						wk_record_crc(&r->rec, e++), owner);
		if (rc == -E2BIG)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: more extents than guest pages",
				  r->worker);
		if (rc < 0)
			file_failed(rc, "writing page data to the snapshot");
		present += len;
	}
	stage_stat_add(src->stats, SHM_STAT_BYTES, present * page);
	stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages - present);
}

static void file_round_end(struct wr_sink *s)
{
	stage_die(STAGE_EXIT_FAILED, "a snapshot has no rounds");
}

static void file_progress(struct wr_sink *s)
{
	int rc = wr_snapfile_reap(&file);
	if (rc < 0)
		file_failed(rc, "writing page data to the snapshot");
}

/* Workers may be waiting for buffers that only a completion frees: what is
 * pending goes out before we sleep. */
static unsigned file_idle(struct wr_sink *s, struct pollfd *pfd, unsigned max)
{
	int rc = wr_snapfile_flush(&file);
	if (rc < 0)
		file_failed(rc, "writing page data to the snapshot");
	file_progress(s);
	if (!file.queue.in_flight || max == 0)
		return 0;
	pfd[0] = (struct pollfd){ .fd = notify_fd, .events = POLLIN };
	return 1;
}

static void file_prepare(struct wr_sink *s)
{
	const char *what = "";
	int rc = wr_snapfile_drain(&file, &what);
	if (rc == 0 && state_fd >= 0)
		rc = wr_snapfile_copy_state(&file, state_fd, &what);
	if (rc == -EMSGSIZE)
		stage_die(STAGE_EXIT_FAILED, "the device state: %s", proto_strerror(PROTO_E_DEVICE_STATE_LEN));
	if (rc < 0)
		file_failed(rc, what);
}

static void file_commit(struct wr_sink *s, bool changed, uint64_t first, uint64_t last)
{
	if (changed)
		wr_recheck_changed(first, last);
	const char *what = "";
	int rc = wr_snapfile_finish(&file, &what);
	if (rc < 0)
		file_failed(rc, what);
}

static void file_check_cancel(struct wr_sink *s)
{
	/* The front end stops a snapshot by stopping us. */
}

void wr_sink_file_init(struct wr_sink *s, struct wr_source *src, int *max_fd, bool device_state)
{
	const char *what = "";
	int rc = wr_snapfile_begin(&file, WRITER_FD_META, WRITER_FD_DATA, src->geo.page_size,
				   src->geo.guest_pages * src->geo.page_size, &what);
	if (rc < 0)
		stage_die_errno(rc, "starting the snapshot: %s", what);
	file.released = write_released;
	file.released_ctx = src;
	if (device_state) {
		state_fd = WRITER_FD_STATE(src->n_workers);
		*max_fd = state_fd > *max_fd ? state_fd : *max_fd;
	}
	if ((notify_fd = wr_snapfile_notify_fd(&file)) < 0)
		stage_die_errno(notify_fd, "an eventfd for the snapshot's write completions");
	*max_fd = notify_fd > *max_fd ? notify_fd : *max_fd;
	/* The supervisor reads this to report (and tests assert) real direct I/O. */
	stage_stat_set(src->stats, SHM_STAT_FLAGS, file.direct ? SHM_FLAG_DIRECT_IO : 0);
	*s = (struct wr_sink){ .put = file_put, .round_end = file_round_end, .idle = file_idle,
			       .progress = file_progress, .prepare = file_prepare, .commit = file_commit,
			       .check_cancel = file_check_cancel, .src = src };
}
