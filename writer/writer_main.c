/* pageferry-writer: takes the workers' runs, one descriptor per run in the
 * form it goes out in, and drains them into its sink: the snapshot file
 * (writer/wr_sink_file.c) or a pageferry receiver's channels
 * (writer/wr_sink_net.c).
 *
 * argv: pageferry-writer --mode=snapshot [--device-state]
 *       pageferry-writer --mode=migrate --to=HOST:PORT --channels=N --zerocopy=off|auto|on|sendfile --tls=none|psk|x509
 *                        [--zstd] --connect-timeout-ms=MS [--rounds] --io-timeout-ms=MS [--device-state]
 *       either mode: [--guest-held-stopped] [--populate-arena]
 *       (--populate-arena: fault the workers' arenas in before lock-down,
 *       while the guest still runs: snapshot and migrate --qmp)
 *       snapshot with --device-state and --guest-held-stopped: [--guest-read-notice]
 *       ('R' on WRITER_FD_GUEST_READ once every worker has ended: every page
 *       is in an arena, so the VMM may resume the guest while we write)
 *       (--tls=psk: a pre-shared key file on fd 5, --tls=x509: the credentials directory there; --zstd: the workers compress;
 *       --rounds: a live migration's pre-copy rounds)
 * The writer does not map the guest: the workers read the pages into their
 * arena buffers, and we write or send them from there (long pieces of a
 * migration go by sendfile from the guest file).
 * fds (stage/stage_fds.h): 3 control segment, 4 guest (read-only, for sendfile),
 *      snapshot: 5 snapshot file, buffered (header and bitmap)
 *                6 the same file opened O_DIRECT (page data only)
 *                7 + 3W with --device-state: the VMM's device state, stored
 *                after the page data (protocol/proto_snapfile.h), read once
 *                the pages are written (the front end fills it before it
 *                starts the scanner)
 *                and an eventfd of our own, signalled as writes complete
 *      migrate:  5 TLS credentials: the key file or the X.509 directory (with --tls)
 *                6 socket to the front end, for the commit decision (and
 *                with --device-state, for the state: writer/wr_sink_net.c)
 *                7 + 3W with --device-state: the VMM's device state, sent on
 *                the main channel after its handshake (protocol/proto_state.h),
 *                read only once the front end says it is there
 *      7 + 2i  wake socket of ring worker i -> writer   (we consume)
 *      8 + 2i  wake socket of ring writer -> worker i   (buffers back)
 *      7 + 2W + i  worker i's arena, read-only
 *
 * Descriptors and run records are decoded from private copies and checked
 * against the geometry before any offset is computed from them.  The
 * fingerprints a record carries are applied here, as the run is taken: a
 * worker replaced mid-run leaves none behind (workers/wk_record.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "protocol/proto_desc.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include "workers/wk_arena.h"
#include "writer/wr_recheck.h"
#include "writer/wr_sink.h"

#define BURST 64u

struct writer {
	struct wr_source src;
	struct wr_sink sink;
	bool ended[SHM_MAX_WORKERS];
	uint32_t n_ended;
	bool rounds;
	bool held_stopped; /* --guest-held-stopped */
	/* Pre-copy rounds: descriptors after a worker's fence wait here. */
	bool fenced[SHM_MAX_WORKERS];
	uint32_t n_fenced;
	struct shm_slot held[SHM_MAX_WORKERS][BURST];
	uint32_t n_held[SHM_MAX_WORKERS], held_from[SHM_MAX_WORKERS];
	/* RUN, FENCE and END taken from each worker: what a replacement
	 * resumes from (its RESYNC). */
	uint64_t taken[SHM_MAX_WORKERS];
};

static void post_back(struct wr_source *src, uint32_t worker, const struct proto_desc *d)
{
	struct shm_slot s = proto_desc_pack(d);
	/* The ring holds more slots than the worker has buffers: never full. */
	int rc = shm_ring_enqueue_all(&src->back[worker], &s, 1);
	if (rc < 0)
		stage_die_ring(rc, "ring back to worker");
}

void wr_source_give_back(void *ctx, uint32_t worker, uint32_t buffer)
{
	struct wr_source *src = ctx;
	src->held[worker] &= (uint16_t)~(1u << buffer);
	struct proto_desc d = { .type = PROTO_DESC_BUFFER, .buffer = (uint16_t)buffer };
	post_back(src, worker, &d);
}

/* Check a RUN from worker i, read its record and apply its fingerprints.
 * Returns false (with *why) on anything a correct worker would not send. */
static bool take_run(struct wr_source *src, uint32_t i, const struct proto_desc *d, struct wr_run *run,
		     const char **why)
{
	static uint8_t copy[WK_RECORD_BYTES];
	run->worker = i;
	run->d = *d;
	if (d->encoding == PROTO_ENC_ZERO)
		return true;
	if (src->held[i] & (1u << d->buffer)) {
		*why = "a buffer it already gave us";
		return false;
	}
	const uint8_t *rec = src->arena[i] + wk_arena_record_offset(src->frame_size, d->buffer);
	if (!wk_record_read(rec, d->encoding, d->first_page, d->n_pages, src->seg.fp_chunk_pages, copy, &run->rec)) {
		*why = "a run record that does not match its run";
		return false;
	}
	src->held[i] |= (uint16_t)(1u << d->buffer);
	_Atomic uint64_t *table = shm_segment_fingerprints(&src->seg);
	for (uint32_t k = 0; k < run->rec.n_fp; k++) {
		struct wk_fp f = wk_record_fp(&run->rec, k);
		atomic_fetch_xor_explicit(&table[f.chunk], f.value, memory_order_relaxed);
	}
	return true;
}

void wr_source_drop(void *ctx, uint32_t worker, const struct proto_desc *d)
{
	struct wr_source *src = ctx;
	struct wr_run run;
	const char *why = "";
	if (d->type == PROTO_DESC_RUN && take_run(src, worker, d, &run, &why) && d->encoding != PROTO_ENC_ZERO)
		wr_source_give_back(src, worker, d->buffer);
}

void wr_source_after_failure(struct wr_source *src)
{
	struct writer *w = (struct writer *)src; /* src is its first member */
	if (src->rechecked || w->held_stopped)
		return; /* it passed, or the guest cannot have changed: the failure is about something else */
	bool ended[SHM_MAX_WORKERS];
	for (uint32_t i = 0; i < src->n_workers; i++) {
		/* Taken from the ring but not handled: handled now. */
		for (uint32_t k = w->held_from[i]; k < w->n_held[i]; k++) {
			struct proto_desc d;
			if (proto_desc_unpack(w->held[i][k], &src->geo, WK_ARENA_BUFFERS, &d) != PROTO_OK)
				continue;
			if (d.type == PROTO_DESC_END)
				w->ended[i] = true;
			wr_source_drop(src, i, &d);
		}
		w->n_held[i] = w->held_from[i] = 0;
		ended[i] = w->ended[i];
		/* Nothing will be sent any more: what the kernel still reads of a
		 * frame no longer matters, and the workers need their buffers to
		 * get to their END. */
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++)
			if (src->held[i] & (1u << b))
				wr_source_give_back(src, i, b);
	}
	wr_recheck_after_failure(&src->seg, src->in, src->back, 10000, wr_source_drop, src, ended);
}

/* A replacement worker asks where its predecessor stopped. */
static void answer_resync(struct writer *w, uint32_t i)
{
	if (w->ended[i])
		stage_die(STAGE_EXIT_FAILED, "worker %u was replaced after its end, during the final re-check, "
					     "which cannot be resumed", i);
	struct proto_desc d = { .type = PROTO_DESC_RESYNCED, .first_page = w->taken[i],
				.payload_len = w->src.held[i] };
	post_back(&w->src, i, &d);
}

/* Returns the number of descriptors handled from worker i's ring. */
static int drain_ring(struct writer *w, uint32_t i)
{
	struct wr_source *src = &w->src;
	struct shm_slot *batch = w->held[i];
	int n = (int)w->n_held[i], k0 = (int)w->held_from[i];
	if (k0 == n) {
		n = shm_ring_dequeue(&src->in[i], batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from worker");
		k0 = 0;
	}
	w->n_held[i] = w->held_from[i] = 0;
	for (int k = k0; k < n; k++) {
		struct proto_desc d;
		enum proto_err err = proto_desc_unpack(batch[k], &src->geo, WK_ARENA_BUFFERS, &d);
		if (err != PROTO_OK)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", i, proto_strerror(err));
		if (d.type == PROTO_DESC_RESYNC) {
			answer_resync(w, i);
			continue;
		}
		if (w->ended[i])
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: type %u after its end", i, d.type);
		w->taken[i]++;
		if (d.type == PROTO_DESC_FENCE) {
			/* This worker's round is done; what follows belongs to the
			 * next one and waits until every worker got here. */
			if (!w->rounds || d.first_page != src->round)
				stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: fence for round %llu in round %u",
					  i, (unsigned long long)d.first_page, src->round);
			w->fenced[i] = true;
			w->n_fenced++;
			w->n_held[i] = (uint32_t)n;
			w->held_from[i] = (uint32_t)(k + 1);
			return k + 1 - k0;
		}
		if (d.type == PROTO_DESC_END) {
			w->ended[i] = true;
			w->n_ended++;
			continue;
		}
		if (d.type != PROTO_DESC_RUN)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: unexpected type %u", i, d.type);
		struct wr_run run;
		const char *why = "";
		if (!take_run(src, i, &d, &run, &why))
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", i, why);
		/* The rest of the batch is ours alone now: a sink that fails in
		 * put must find it (wr_source_after_failure). */
		w->n_held[i] = (uint32_t)n;
		w->held_from[i] = (uint32_t)(k + 1);
		w->sink.put(&w->sink, &run);
		stage_stat_add(src->stats, SHM_STAT_PAGES, d.n_pages);
		stage_stat_add(src->stats, SHM_STAT_RUNS, 1);
	}
	return n - k0;
}

/* Every worker reached the fence: the round is over on every channel. */
static void end_round(struct writer *w)
{
	w->sink.round_end(&w->sink);
	/* Release, paired with the acquire in the scanner's wait_round_sent
	 * (scanner/sc_precopy.c): whoever sees round r sent also sees this
	 * round's statistics (bytes sent), which the scanner measures. */
	atomic_store_explicit(&w->src.stats->v[SHM_STAT_ROUND], w->src.round, memory_order_release);
	w->src.round++;
	w->n_fenced = 0;
	for (uint32_t i = 0; i < w->src.n_workers; i++)
		w->fenced[i] = false;
}

/* Nothing to do on any ring: sleep on all of their wake sockets at once,
 * and on whatever the sink waits for. */
static void sleep_on_rings(struct writer *w)
{
	struct wr_source *src = &w->src;
	struct pollfd pfd[SHM_MAX_WORKERS + PROTO_MAX_CHANNELS];
	/* The sink's fds first: the rings' follow. */
	unsigned n = w->sink.idle(&w->sink, pfd, PROTO_MAX_CHANNELS);
	for (uint32_t i = 0; i < src->n_workers; i++) {
		if (w->ended[i] || w->fenced[i])
			continue;
		int armed = shm_ring_arm_consumer(&src->in[i]);
		if (armed < 0)
			stage_die_ring(armed, "ring from worker");
		if (armed == 0)
			goto disarm; /* work arrived while arming */
		pfd[n++] = (struct pollfd){ .fd = src->in[i].wake_fd, .events = POLLIN };
	}
	if (n && poll(pfd, n, 1000) < 0 && errno != EINTR)
		stage_die_errno(-errno, "poll on worker rings");
disarm:
	for (uint32_t i = 0; i < src->n_workers; i++) {
		if (w->ended[i] || w->fenced[i])
			continue;
		shm_ring_disarm_consumer(&src->in[i]);
		int rc = shm_ring_drain_wakes(&src->in[i]);
		/* A worker that hung up before its END died mid-run (the front
		 * end holds a worker's ends while it can replace it). */
		if (rc < 0 && shm_ring_ready_count(&src->in[i]) == 0)
			stage_die_ring(rc, "ring from worker");
	}
}

/* A guest that shrank after its last page was read faults nowhere: check
 * its size before reporting the copy complete. */
static void check_guest_size(const struct wr_source *src)
{
	struct stat st;
	if (fstat(STAGE_FD_GUEST, &st) < 0)
		stage_die_errno(-errno, "fstat of the guest file");
	if ((uint64_t)st.st_size < src->geo.guest_pages * src->geo.page_size)
		stage_die(STAGE_EXIT_FAILED, "%s", stage_fault_reason(STAGE_MAP_GUEST));
}

/* Every page is in the workers' arenas and nothing reads the guest again
 * (--guest-held-stopped: no re-check): the front end may let it run while
 * the pages are written. */
static void tell_guest_read(int fd)
{
	if (stage_write_byte(fd, 'R') < 0)
		stage_die(STAGE_EXIT_PEER, "the front end went away before it learned that every page was read");
	if (close(fd) < 0)
		stage_die_errno(-errno, "closing the guest-read notice");
}

int main(int argc, char **argv)
{
	static struct writer w;
	struct wr_source *src = &w.src;
	stage_set_name("writer", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv,
		   "pageferry-writer --mode=snapshot [--device-state] | --mode=migrate --to=HOST:PORT --channels=N "
		   "--zerocopy=off|auto|on|sendfile --tls=none|psk|x509 [--zstd] --connect-timeout-ms=MS [--rounds] "
		   "--io-timeout-ms=MS [--device-state] [--guest-held-stopped] [--populate-arena] [--guest-read-notice]");
	static const char *const modes[] = { "snapshot", "migrate", NULL };
	bool migrate = stage_arg_choice("mode", modes) == 1;
	bool tls = migrate && wr_sink_net_args();
	w.rounds = migrate && wr_sink_net_rounds();
	bool device_state = stage_arg_flag("device-state");
	w.held_stopped = stage_arg_flag("guest-held-stopped");
	bool populate = stage_arg_flag("populate-arena");
	bool notice = stage_arg_flag("guest-read-notice");
	stage_args_done();
	if (notice && (migrate || !device_state || !w.held_stopped))
		stage_usage_error("--guest-read-notice goes with --mode=snapshot, --device-state and --guest-held-stopped");
	src->round = 1;
	stage_attach_segment(&src->seg);
	src->n_workers = src->seg.geo.n_workers;
	static const int no_creds[] = { WRITER_FD_CREDS };
	stage_close_inherited_fds(notice		? WRITER_FD_GUEST_READ(src->n_workers)
				  : device_state ? WRITER_FD_STATE(src->n_workers)
						 : WRITER_FD_ARENA(src->n_workers - 1, src->n_workers),
				  no_creds, migrate && !tls);
	src->geo = (struct proto_geometry){ .page_size = src->seg.geo.page_size,
					    .max_run_pages = src->seg.geo.max_run_pages,
					    .guest_pages = src->seg.geo.guest_pages };
	src->stats = shm_segment_stats(&src->seg, SHM_STATS_WRITER);
	src->frame_size = (uint64_t)src->geo.max_run_pages * src->geo.page_size;
	for (uint32_t i = 0; i < src->n_workers; i++) {
		stage_ring(&src->seg, SHM_RING_WORKER_TO_WRITER, i, WRITER_FD_RING_IN(i), &src->in[i]);
		stage_ring(&src->seg, SHM_RING_WRITER_TO_WORKER, i, WRITER_FD_RING_BACK(i), &src->back[i]);
		src->arena[i] = stage_map_arena(WRITER_FD_ARENA(i, src->n_workers),
						wk_arena_source_size(src->frame_size), 0);
		if (populate)
			stage_populate(src->arena[i], wk_arena_source_size(src->frame_size), 0, "a worker's arena");
	}
	int max_fd = WRITER_FD_ARENA(src->n_workers - 1, src->n_workers);
	if (migrate)
		wr_sink_net_init(&w.sink, src, &max_fd, device_state);
	else
		wr_sink_file_init(&w.sink, src, &max_fd, device_state);
	if (notice && WRITER_FD_GUEST_READ(src->n_workers) > max_fd)
		max_fd = WRITER_FD_GUEST_READ(src->n_workers);

	stage_lockdown(SB_ROLE_WRITER, max_fd, !migrate);
	stage_stat_set(src->stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	while (w.n_ended < src->n_workers) {
		w.sink.check_cancel(&w.sink);
		int handled = 0;
		for (uint32_t i = 0; i < src->n_workers; i++)
			if (!w.ended[i] && !w.fenced[i])
				handled += drain_ring(&w, i);
		if (w.n_fenced && w.n_fenced + w.n_ended == src->n_workers) {
			end_round(&w);
			continue;
		}
		if (handled == 0)
			sleep_on_rings(&w);
		else
			w.sink.progress(&w.sink);
	}
	check_guest_size(src);
	if (notice) {
		tell_guest_read(WRITER_FD_GUEST_READ(src->n_workers));
		stage_test_hook("guest-read");
	}
	/* Durable where it goes, then the check that the guest did not change
	 * meanwhile (its pages are all out of our hands now), then complete. */
	w.sink.prepare(&w.sink);
	uint64_t first = 0, last = 0;
	bool changed = wr_recheck_by_workers(&src->seg, src->in, src->back, w.rounds || w.held_stopped, &first,
					     &last) > 0;
	src->rechecked = true;
	w.sink.commit(&w.sink, changed, first, last);
	stage_stat_set(src->stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
