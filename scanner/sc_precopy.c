#include "scanner/sc_precopy.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "protocol/proto_dirtylog.h"
#include "scanner/sc_scanner.h"

struct precopy {
	struct scanner *s;
	const struct sc_precopy_params *p;
	_Atomic uint64_t *log_bits;
	_Atomic uint32_t *pause_request, *pause_ack, *throttle;
	uint64_t words;
	uint64_t *dirty;	/* pages to send next round */
	uint64_t n_dirty;
	uint64_t round_start_us, round_start_bytes, round_start_pages;
	uint64_t last_bw;
};

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000u), (long)(us % 1000000u) * 1000 };
	nanosleep(&ts, NULL);
}

static void check_cancel(struct precopy *pc)
{
	if (atomic_load_explicit(&pc->s->seg.hdr->cancel, memory_order_acquire))
		stage_die(STAGE_EXIT_FAILED, "cancelled");
}

/* Take every dirty bit the VMM set since the last fetch. */
static void fetch_and_clear(struct precopy *pc)
{
	for (uint64_t w = 0; w < pc->words; w++) {
		uint64_t bits = atomic_exchange_explicit(&pc->log_bits[w], 0, memory_order_acquire);
		uint64_t fresh = bits & ~pc->dirty[w];
		pc->dirty[w] |= bits;
		pc->n_dirty += (uint64_t)__builtin_popcountll(fresh);
	}
}

/* The writer sends SYNC for a round once every worker reached its fence,
 * then publishes the round number with a release store (writer_main.c,
 * end_round); this acquire pairs with it. */
static void wait_round_sent(struct precopy *pc)
{
	while (atomic_load_explicit(&pc->s->writer_stats->v[SHM_STAT_ROUND], memory_order_acquire) < pc->s->round) {
		check_cancel(pc);
		sleep_us(500);
	}
}

static void post_dirty(struct precopy *pc)
{
	uint64_t n_pages = pc->s->seg.geo.guest_pages;
	for (uint64_t w = 0; w < pc->words; w++) {
		while (pc->dirty[w]) {
			uint64_t first = w * 64 + (uint64_t)__builtin_ctzll(pc->dirty[w]);
			uint64_t end = first;
			while (end < n_pages && (pc->dirty[end / 64] >> (end % 64)) & 1) {
				pc->dirty[end / 64] &= ~(1ull << (end % 64));
				end++;
			}
			sc_post_extent(pc->s, first, end);
		}
	}
	pc->n_dirty = 0;
}

/* Close the current round: fence, wait until sent, record what it cost. */
static void end_round(struct precopy *pc, int fetch)
{
	struct scanner *s = pc->s;
	sc_post_fence(s);
	wait_round_sent(pc);
	uint64_t now = sc_now_us();
	uint64_t usec = now - pc->round_start_us ? now - pc->round_start_us : 1;
	uint64_t bytes = atomic_load_explicit(&s->writer_stats->v[SHM_STAT_BYTES], memory_order_relaxed) -
			 pc->round_start_bytes;
	uint64_t pages = atomic_load_explicit(&s->stats->v[SHM_STAT_PAGES], memory_order_relaxed) -
			 pc->round_start_pages;
	/* Bandwidth in guest bytes handled per second (pages, not wire bytes:
	 * the dirty pages it is compared with will be compressed or found zero
	 * just the same).  The lower of this round's and the whole migration's:
	 * one fast round must not promise a switchover the link cannot keep. */
	uint64_t page = s->seg.geo.page_size;
	uint64_t bw = pages * page * 1000000u / usec;
	uint64_t overall = (pc->round_start_pages + pages) * page * 1000000u / (now - s->pacing_start_us + 1);
	if (bw)
		pc->last_bw = overall && overall < bw ? overall : bw;
	if (fetch)
		fetch_and_clear(pc);
	uint64_t dirty_bytes = pc->n_dirty * s->seg.geo.page_size;
	struct shm_stats *rec = shm_segment_round(&s->seg, s->round);
	if (rec) {
		stage_stat_set(rec, SHM_ROUND_PAGES, pages);
		stage_stat_set(rec, SHM_ROUND_BYTES, bytes);
		stage_stat_set(rec, SHM_ROUND_USEC, usec);
		stage_stat_set(rec, SHM_ROUND_DIRTY_PAGES, pc->n_dirty);
		stage_stat_set(rec, SHM_ROUND_BW, pc->last_bw);
		stage_stat_set(rec, SHM_ROUND_DIRTY_RATE, dirty_bytes * 1000000u / usec);
		stage_stat_set(rec, SHM_ROUND_EXPECTED_US,
			       pc->last_bw ? dirty_bytes * 1000000u / pc->last_bw : (dirty_bytes ? UINT64_MAX : 0));
		stage_stat_set(rec, SHM_ROUND_THROTTLE, atomic_load(pc->throttle));
		stage_stat_set(rec, SHM_ROUND_DONE, 1);
	}
	pc->round_start_us = now;
	pc->round_start_bytes += bytes;
	pc->round_start_pages += pages;
}

static void pause_guest(struct precopy *pc)
{
	uint64_t asked = sc_now_us();
	stage_stat_set(pc->s->stats, SHM_STAT_EVENT_US, asked);
	atomic_store_explicit(pc->pause_request, 1, memory_order_release);
	while (!atomic_load_explicit(pc->pause_ack, memory_order_acquire)) {
		if (sc_now_us() - asked > pc->p->pause_timeout_us) {
			atomic_store_explicit(pc->pause_request, 0, memory_order_release);
			stage_die(STAGE_EXIT_FAILED, "the VMM did not acknowledge the pause request within %llu ms",
				  (unsigned long long)(pc->p->pause_timeout_us / 1000));
		}
		sleep_us(100);
	}
}

void sc_precopy_run(struct scanner *s, uint8_t *dirty_log, const struct sc_precopy_params *p)
{
	struct precopy pc = {
		.s = s,
		.p = p,
		.log_bits = (_Atomic uint64_t *)(dirty_log + PROTO_DIRTYLOG_BITMAP_OFFSET),
		.pause_request = (_Atomic uint32_t *)(dirty_log + PROTO_DIRTYLOG_PAUSE_REQUEST),
		.pause_ack = (_Atomic uint32_t *)(dirty_log + PROTO_DIRTYLOG_PAUSE_ACK),
		.throttle = (_Atomic uint32_t *)(dirty_log + PROTO_DIRTYLOG_THROTTLE),
		.words = proto_dirtylog_words(s->seg.geo.guest_pages),
		.round_start_us = s->pacing_start_us,
	};
	pc.dirty = p->dirty_buf;
	stage_stat_set(s->stats, SHM_STAT_ROUND, s->round);
	for (;;) {
		end_round(&pc, 1);
		struct shm_stats *rec = shm_segment_round(&s->seg, s->round);
		uint64_t expected = atomic_load(&rec->v[SHM_ROUND_EXPECTED_US]);
		uint64_t dirty_rate = atomic_load(&rec->v[SHM_ROUND_DIRTY_RATE]);
		/* Plan for two thirds of the limit: the rest is the margin for what the
		 * estimate leaves out (the pause acknowledgement, the end-of-stream
		 * checks, the final round's pages landing on fresh destination
		 * memory).  Measured in doc/benchmarks.md. */
		if (expected <= p->downtime_limit_us * 2 / 3)
			break;
		if (s->round + 1 >= p->max_rounds) {
			atomic_store(pc.throttle, 0);
			stage_die(STAGE_EXIT_FAILED,
				  "no convergence after %u rounds: the guest dirties %.0f MiB/s, pages move at %.0f MiB/s, "
				  "%.0f ms of dirty pages left against a %.0f ms downtime limit",
				  s->round, dirty_rate / 1048576.0, pc.last_bw / 1048576.0, expected / 1000.0,
				  p->downtime_limit_us / 1000.0);
		}
		if (p->auto_converge && dirty_rate > pc.last_bw / 2) {
			uint32_t t = atomic_load(pc.throttle);
			atomic_store(pc.throttle, t == 0 ? 20 : t + 10 > 99 ? 99 : t + 10);
		}
		s->round++;
		stage_stat_set(s->stats, SHM_STAT_ROUND, s->round);
		post_dirty(&pc);
	}
	/* Switchover: pause, take what was dirtied since the last fetch, and
	 * send it all in the final round. */
	pause_guest(&pc);
	fetch_and_clear(&pc);
	s->round++;
	stage_stat_set(s->stats, SHM_STAT_ROUND, s->round);
	post_dirty(&pc);
	end_round(&pc, 0);
	atomic_store(pc.throttle, 0);
}
