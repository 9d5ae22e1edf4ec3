/* The control segment: a sealed memfd holding the header, the rings and the
 * per-process statistics (layout in shm_layout.h). */
#ifndef PF_SHM_SEGMENT_H
#define PF_SHM_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "shm/shm_layout.h"
#include "shm/shm_ring.h"

struct shm_geometry {
	uint32_t page_size;
	uint32_t n_workers;
	uint32_t ring_slots;
	uint32_t max_run_pages;
	uint64_t guest_pages;
};

/* A process's validated, private view of a mapped segment. */
struct shm_segment {
	uint8_t *base;
	size_t size;
	struct shm_geometry geo;	/* private copy, validated once */
	uint32_t n_rings;
	uint32_t n_stats;
	uint64_t rings_offset;
	uint64_t ring_stride;
	uint64_t stats_offset;
	uint32_t fp_chunk_pages;	/* guest fingerprint table (shm_layout.h) */
	uint64_t fp_offset;
	uint64_t fp_chunks;
	struct shm_seg_header *hdr;
};

/* Size of a segment for this geometry, or 0 if the geometry is invalid. */
uint64_t shm_segment_size(const struct shm_geometry *g);

/* Create a sealed memfd holding a formatted segment.  Returns the fd, or
 * -errno (-EINVAL for a bad geometry). */
int shm_segment_create(const struct shm_geometry *g);
/* Format an existing, empty memfd (size it, write the header, seal it). */
int shm_segment_format_fd(int fd, const struct shm_geometry *g);

/* Map and validate a segment received on fd.  Every header field is read once
 * and checked; returns 0 or -EBADMSG (bad header), -EPROTO (bad version), or
 * another -errno.  `why` (may be NULL) receives a static message on failure. */
int shm_segment_attach(struct shm_segment *seg, int fd, const char **why);
void shm_segment_detach(struct shm_segment *seg);

/* Local pointers into the segment (no bounds to check: attach did). */
void *shm_segment_ring_mem(const struct shm_segment *seg, uint32_t ring);
struct shm_stats *shm_segment_stats(const struct shm_segment *seg, uint32_t block);
/* Round r's record (1..SHM_MAX_ROUNDS, SHM_ROUND_* fields), or NULL. */
struct shm_stats *shm_segment_round(const struct shm_segment *seg, uint32_t round);

/* The guest fingerprint table: fp_chunks u64, XORed into by the workers. */
_Atomic uint64_t *shm_segment_fingerprints(const struct shm_segment *seg);

/* Bind a ring view for one of the segment's rings. */
int shm_segment_ring(const struct shm_segment *seg, enum shm_ring_kind kind, uint32_t worker,
		     int wake_fd, struct shm_ring *out);

#endif
