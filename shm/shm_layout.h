/* Layout of the control segment shared by the pipeline's processes.
 *
 * Everything here lives in shared memory, so: fixed-width fields, no pointers
 * (offsets from the segment start only), one writer per cache line, and every
 * offset the protocol depends on pinned by a _Static_assert.  Bump
 * SHM_ABI_VERSION whenever anything in this file changes, except a new flag
 * bit that a stage built before it leaves clear (doc/formats.md);
 * doc/architecture.md describes the same layout in prose.
 */
#ifndef PF_SHM_LAYOUT_H
#define PF_SHM_LAYOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_CACHE_LINE 64u
#define SHM_SEG_MAGIC UINT64_C(0x47455359524546ff) /* "\xffFERYSEG" little-endian */
#define SHM_ABI_VERSION 6u
#define SHM_SLOT_SIZE 16u
#define SHM_RING_MIN_SLOTS 8u
#define SHM_RING_MAX_SLOTS (1u << 20)
#define SHM_MAX_WORKERS 64u

/* One ring slot: a fixed 16-byte descriptor, so copies are two 8-byte moves. */
struct shm_slot {
	uint64_t w0;
	uint64_t w1;
};

/* The shared part of one single-producer/single-consumer ring.
 *
 * line 0: tail              written by the producer only
 * line 1: guard             keeps the adjacent-line prefetcher off line 2
 * line 2: head              written by the consumer only
 * line 3: guard
 * line 4: consumer_sleeping written by the consumer only
 * line 5: producer_sleeping written by the producer only
 * then  : slots[size]       written by the producer, read by the consumer
 *
 * Indices run free over 2^32; slot = index & (size - 1); used = tail - head.
 * The ring's size is NOT stored here: each side caches it privately from the
 * segment header it validated, so a peer cannot change it under us.
 */
struct shm_ring_ctrl {
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t tail;
	_Alignas(SHM_CACHE_LINE) uint8_t guard0[SHM_CACHE_LINE];
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t head;
	_Alignas(SHM_CACHE_LINE) uint8_t guard1[SHM_CACHE_LINE];
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t consumer_sleeping;
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t producer_sleeping;
};

_Static_assert(offsetof(struct shm_ring_ctrl, tail) == 0, "tail on line 0");
_Static_assert(offsetof(struct shm_ring_ctrl, head) == 2 * SHM_CACHE_LINE, "head on line 2");
_Static_assert(offsetof(struct shm_ring_ctrl, consumer_sleeping) == 4 * SHM_CACHE_LINE,
	       "consumer flag on line 4");
_Static_assert(offsetof(struct shm_ring_ctrl, producer_sleeping) == 5 * SHM_CACHE_LINE,
	       "producer flag on line 5");
_Static_assert(sizeof(struct shm_ring_ctrl) == 6 * SHM_CACHE_LINE, "ring control is 6 lines");
_Static_assert(sizeof(struct shm_slot) == SHM_SLOT_SIZE, "slot is 16 bytes");
_Static_assert(sizeof(_Atomic uint32_t) == 4 && _Alignof(_Atomic uint32_t) == 4,
	       "atomic u32 has the plain u32 layout");

/* Per-process statistics: two cache lines each, written by its owner only
 * with relaxed stores, read by the supervisor for progress.  The list below
 * is the one source of the statistics' order and names: it makes the enum
 * here, and tools/pf_describe.c prints the names (lower-cased) into the
 * supervisor's generated pf_abi.py. */
#define SHM_STAT_LIST(X) \
	X(PAGES)		/* pages this process handled */ \
	X(ZERO_PAGES)		/* found zero by content */ \
	X(HOLE_PAGES)		/* skipped as holes in the guest file */ \
	X(BYTES)		/* bytes written / sent / received */ \
	X(RUNS)			/* descriptors (page runs) handled */ \
	X(TOTAL_PAGES)		/* pages this process expects to handle (progress) */ \
	X(STATE)		/* enum shm_proc_state */ \
	X(FLAGS)		/* SHM_FLAG_* */ \
	X(PACKETS)		/* network packets sent / received */ \
	X(ZC_SENDS)		/* MSG_ZEROCOPY sends whose completion arrived */ \
	X(ZC_COPIED)		/* ... of which the kernel copied anyway */ \
	X(ROUND)		/* pre-copy round in progress */ \
	X(IN_BYTES)		/* writer: pages sent in zstd frames; inflater: frames taken */ \
	X(OUT_BYTES)		/* writer: those frames; inflater: the pages they gave */ \
	X(EVENT_US)		/* scanner: CLOCK_MONOTONIC µs of the guest pause; \
				 * writer: of the receiver's confirmation */ \
	X(SENDFILE_BYTES)	/* writer: guest bytes sent by sendfile */

enum {
#define SHM_STAT_ENUM(name) SHM_STAT_##name,
	SHM_STAT_LIST(SHM_STAT_ENUM)
#undef SHM_STAT_ENUM
	SHM_STAT_COUNT
};

enum shm_proc_state {
	SHM_PROC_STARTING = 0,
	SHM_PROC_LOCKED_DOWN = 1,
	SHM_PROC_DONE = 2,
	SHM_PROC_LISTENING = 3,	/* the receiver waits for connections */
};

#define SHM_FLAG_DIRECT_IO 1u /* the file data fd really has O_DIRECT */
#define SHM_FLAG_ZEROCOPY 2u  /* the sockets really have SO_ZEROCOPY */
#define SHM_FLAG_SENDFILE 4u  /* guest pages go by sendfile from the guest file */
/* An inflater found the destination's filesystem full (and exits): the
 * receive stage, which only sees it hang up, tells the sender that. */
#define SHM_FLAG_DEST_FULL 8u

struct shm_stats {
	_Alignas(SHM_CACHE_LINE) _Atomic uint64_t v[SHM_STAT_COUNT];
};
_Static_assert(sizeof(struct shm_stats) == 2 * SHM_CACHE_LINE, "a stats block is two lines");

/* The segment header at offset 0.  Written once by the creator before any
 * other process maps the segment; read once and validated by each attacher. */
struct shm_seg_header {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t header_size;
	uint64_t segment_size;
	uint32_t page_size;	/* guest page size in bytes */
	uint32_t n_workers;
	uint32_t ring_slots;	/* power of two */
	uint32_t slot_size;	/* SHM_SLOT_SIZE */
	uint32_t n_rings;
	uint32_t n_stats;
	uint64_t rings_offset;	/* ring i's control at rings_offset + i * ring_stride */
	uint64_t ring_stride;
	uint64_t stats_offset;	/* stats block i at stats_offset + i * sizeof(struct shm_stats) */
	uint64_t guest_pages;
	uint32_t max_run_pages;	/* pages in one descriptor at most */
	uint32_t fp_chunk_pages; /* pages per fingerprint chunk (below) */
	uint64_t fp_offset;	/* u64 fingerprint of chunk c at fp_offset + 8 c */
	uint64_t fp_chunks;
	uint8_t reserved[SHM_CACHE_LINE * 2 - 104];
	/* Run control, on its own line: written by the supervisor, read by all. */
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t cancel;
	uint8_t reserved2[SHM_CACHE_LINE - 4];
	/* The destination's session, on its own line: written by the receive
	 * stage only, read by its inflaters (zero in every other segment).  The
	 * supervisor makes a receive's segment before a sender has said what
	 * it sends, so the geometry above is a placeholder there (one 4 KiB
	 * page, runs of one page): the receive stage learns the real one from
	 * the sender's handshake and publishes it here, then sets dest_ready
	 * with a release store (R3); an inflater, or its replacement, load-
	 * acquires dest_ready (A3) before it reads the three fields, and checks
	 * them (doc/architecture.md, "The destination's session").  An
	 * inflater needs no round (ABI 4 had one here): the receive stage
	 * places the zero pages, whose handling depends on it. */
	_Alignas(SHM_CACHE_LINE) _Atomic uint32_t dest_ready;
	uint32_t dest_page_size;
	uint64_t dest_guest_pages;
	uint32_t dest_max_run_pages;
	uint8_t reserved3[SHM_CACHE_LINE - 20];
};

_Static_assert(offsetof(struct shm_seg_header, magic) == 0, "magic first");
_Static_assert(offsetof(struct shm_seg_header, abi_version) == 8, "abi at 8");
_Static_assert(offsetof(struct shm_seg_header, segment_size) == 16, "size at 16");
_Static_assert(offsetof(struct shm_seg_header, rings_offset) == 48, "rings_offset at 48");
_Static_assert(offsetof(struct shm_seg_header, guest_pages) == 72, "guest_pages at 72");
_Static_assert(offsetof(struct shm_seg_header, max_run_pages) == 80, "max_run_pages at 80");
_Static_assert(offsetof(struct shm_seg_header, fp_chunk_pages) == 84, "fp_chunk_pages at 84");
_Static_assert(offsetof(struct shm_seg_header, fp_offset) == 88, "fp_offset at 88");
_Static_assert(offsetof(struct shm_seg_header, fp_chunks) == 96, "fp_chunks at 96");
_Static_assert(offsetof(struct shm_seg_header, cancel) == 2 * SHM_CACHE_LINE, "cancel on line 2");
_Static_assert(offsetof(struct shm_seg_header, dest_ready) == 3 * SHM_CACHE_LINE, "dest session on line 3");
_Static_assert(offsetof(struct shm_seg_header, dest_guest_pages) == 3 * SHM_CACHE_LINE + 8, "dest guest pages");
_Static_assert(sizeof(struct shm_seg_header) == 4 * SHM_CACHE_LINE, "header is 4 lines");

/* Which ring carries what.  Three rings per worker, so no ring ever has more
 * than one producer or one consumer process.  A receive's segment has one
 * set per inflater: its "workers" are the inflaters, and its ring has a
 * name of its own (the same kind, so the same layout). */
enum shm_ring_kind {
	SHM_RING_SCAN_TO_WORKER = 0,	/* scanner -> worker i: page runs to check */
	SHM_RING_WORKER_TO_WRITER = 1,	/* worker i -> writer: iovec descriptors */
	SHM_RING_WRITER_TO_WORKER = 2,	/* writer -> worker i: buffers coming back */
	SHM_RING_KINDS = 3,
	/* Destination: the receive stage -> inflater i, zstd frames to place.
	 * The only ring of a receive: the inflater releases a slot once its
	 * pages are placed, so the ring's head tells the receive stage which
	 * buffers are free again (doc/architecture.md); kinds 1 and 2 of a
	 * receive's segment are unused. */
	SHM_RING_RECEIVER_TO_INFLATER = SHM_RING_SCAN_TO_WORKER,
};

static inline uint32_t shm_ring_index(enum shm_ring_kind kind, uint32_t worker)
{
	return worker * SHM_RING_KINDS + (uint32_t)kind;
}

/* Stats block numbers.  After the workers' blocks come SHM_MAX_ROUNDS round
 * records (same size), indexed by the SHM_ROUND_* fields below. */
enum { SHM_STATS_SCANNER = 0, SHM_STATS_WRITER = 1, SHM_STATS_WORKER0 = 2 };
/* restore, check and receive: the destination stage's own block (an
 * inflater's is SHM_STATS_WORKER0 + its index). */
enum { SHM_STATS_DEST = SHM_STATS_SCANNER };
#define SHM_MAX_ROUNDS 64u

/* A round record's fields, in order (pf_describe.c prints the names). */
#define SHM_ROUND_LIST(X) \
	X(PAGES)		/* scanner: pages posted in this round */ \
	X(BYTES)		/* scanner: bytes the writer sent during it */ \
	X(USEC)			/* scanner: its duration */ \
	X(DIRTY_PAGES)		/* scanner: dirty pages found at its end */ \
	X(BW)			/* scanner: guest bytes handled per second */ \
	X(DIRTY_RATE)		/* scanner: dirtied bytes per second */ \
	X(EXPECTED_US)		/* scanner: dirty bytes / bandwidth */ \
	X(THROTTLE)		/* scanner: throttle asked of the guest during it */ \
	X(DONE)			/* 1 once the record is complete */

enum {
#define SHM_ROUND_ENUM(name) SHM_ROUND_##name,
	SHM_ROUND_LIST(SHM_ROUND_ENUM)
#undef SHM_ROUND_ENUM
	SHM_ROUND_FIELDS
};
_Static_assert((int)SHM_ROUND_FIELDS <= (int)SHM_STAT_COUNT, "a round record fits a stats block");

/* Guest fingerprints (doc/formats.md): the workers XOR, for every non-zero
 * page they check, shm_fp_mix(page, crc32c of the page) into the u64 of the
 * page's chunk of SHM_FP_CHUNK_BYTES; a writer that re-reads the guest at
 * the end computes the same table and compares, so a page written during
 * the copy is found (a guest that was not stopped).  XOR makes the order in
 * which workers add their pages irrelevant. */
#define SHM_FP_CHUNK_BYTES (2u << 20)

static inline uint32_t shm_fp_chunk_pages(uint32_t page_size)
{
	return page_size >= SHM_FP_CHUNK_BYTES ? 1u : SHM_FP_CHUNK_BYTES / page_size;
}

/* splitmix64's finaliser, twice: every bit of index and crc reaches every
 * bit of the result, so two changed pages do not cancel by accident. */
static inline uint64_t shm_fp_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static inline uint64_t shm_fp_mix(uint64_t page, uint32_t crc)
{
	return shm_fp_mix64(shm_fp_mix64(page + UINT64_C(0x9e3779b97f4a7c15)) ^ crc);
}

#endif
