/* The snapshot sink: each data extent of a run goes to its fixed offset in
 * the snapshot file (writer/wr_snapfile.h) straight from the guest mapping,
 * with the CRC the worker computed as its extent record. */
#include <errno.h>

#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include "writer/wr_recheck.h"
#include "writer/wr_sink.h"
#include "writer/wr_snapfile.h"

static struct wr_snapfile file;

static noreturn void file_failed(int rc, const char *what)
{
	stage_die_if_fault(STAGE_MAP_GUEST, rc); /* O_DIRECT from a guest page that is gone */
	stage_die_errno(rc, "%s", what);
}

static void add_extent(const struct wr_source *src, uint32_t worker, uint64_t first, uint32_t n, uint32_t crc)
{
	stage_test_hook("writer");
	int rc = wr_snapfile_add_run(&file, src->guest + first * src->geo.page_size, first, n, crc);
	if (rc == -E2BIG)
		stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: more extents than guest pages", worker);
	if (rc < 0)
		file_failed(rc, "writing page data to the snapshot");
	stage_stat_add(src->stats, SHM_STAT_BYTES, (uint64_t)n * src->geo.page_size);
}

static void file_put(struct wr_sink *s, const struct wr_run *r)
{
	struct wr_source *src = s->src;
	const struct proto_desc *d = &r->d;
	switch (d->encoding) {
	case PROTO_ENC_ZERO:
		stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages);
		return;
	case PROTO_ENC_RAW:
		add_extent(src, r->worker, d->first_page, d->n_pages, wk_record_crc(&r->rec, 0));
		break;
	case PROTO_ENC_SPARSE: {
		uint32_t e = 0, present = 0, k = 0, start, len;
		while (proto_sparse_next_extent(r->rec.bitmap, d->n_pages, &k, &start, &len)) {
			add_extent(src, r->worker, d->first_page + start, len, wk_record_crc(&r->rec, e++));
			present += len;
		}
		stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages - present);
		break;
	}
	default:
		stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: encoding %u in a snapshot", r->worker,
			  d->encoding);
	}
	/* The extents' writes read the guest, not the record. */
	wr_source_give_back(src, r->worker, d->buffer);
}

static void file_round_end(struct wr_sink *s)
{
	stage_die(STAGE_EXIT_FAILED, "a snapshot has no rounds");
}

static unsigned file_idle(struct wr_sink *s, struct pollfd *pfd, unsigned max)
{
	int rc = wr_snapfile_flush(&file);
	if (rc < 0)
		file_failed(rc, "writing page data to the snapshot");
	return 0;
}

static void file_progress(struct wr_sink *s)
{
}

static void file_prepare(struct wr_sink *s)
{
	const char *what = "";
	int rc = wr_snapfile_drain(&file, &what);
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

void wr_sink_file_init(struct wr_sink *s, struct wr_source *src, const struct wr_device_state *state)
{
	const char *what = "";
	int rc = wr_snapfile_begin(&file, WRITER_FD_META, WRITER_FD_DATA, src->geo.page_size,
				   src->geo.guest_pages * src->geo.page_size, state->bytes, state->len, &what);
	if (rc < 0)
		stage_die_errno(rc, "starting the snapshot: %s", what);
	/* The supervisor reads this to report (and tests assert) real direct I/O. */
	stage_stat_set(src->stats, SHM_STAT_FLAGS, file.direct ? SHM_FLAG_DIRECT_IO : 0);
	*s = (struct wr_sink){ .put = file_put, .round_end = file_round_end, .idle = file_idle,
			       .progress = file_progress, .prepare = file_prepare, .commit = file_commit,
			       .check_cancel = file_check_cancel, .src = src };
}
