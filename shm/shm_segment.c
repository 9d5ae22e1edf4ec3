#include "shm/shm_segment.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static int geometry_valid(const struct shm_geometry *g)
{
	if (g->page_size < 4096 || (g->page_size & (g->page_size - 1)))
		return 0;
	if (g->n_workers == 0 || g->n_workers > SHM_MAX_WORKERS)
		return 0;
	if (g->ring_slots < SHM_RING_MIN_SLOTS || g->ring_slots > SHM_RING_MAX_SLOTS ||
	    (g->ring_slots & (g->ring_slots - 1)))
		return 0;
	/* Bounds shared with protocol/proto_geometry.h: 12 bits in a descriptor. */
	if (g->max_run_pages < 1 || g->max_run_pages > 4095 || g->guest_pages < 1 ||
	    g->guest_pages > (UINT64_C(1) << 46) / g->page_size)
		return 0;
	return 1;
}

struct layout {
	uint32_t n_rings, n_stats, fp_chunk_pages;
	uint64_t rings_offset, ring_stride, stats_offset, fp_offset, fp_chunks, total;
};

static void compute_layout(const struct shm_geometry *g, struct layout *l)
{
	l->n_rings = g->n_workers * SHM_RING_KINDS;
	l->n_stats = SHM_STATS_WORKER0 + g->n_workers + SHM_MAX_ROUNDS;
	l->rings_offset = align_up(sizeof(struct shm_seg_header), SHM_CACHE_LINE);
	l->ring_stride = align_up(shm_ring_bytes(g->ring_slots), SHM_CACHE_LINE);
	l->stats_offset = l->rings_offset + (uint64_t)l->n_rings * l->ring_stride;
	l->fp_chunk_pages = shm_fp_chunk_pages(g->page_size);
	l->fp_chunks = (g->guest_pages + l->fp_chunk_pages - 1) / l->fp_chunk_pages;
	l->fp_offset = l->stats_offset + (uint64_t)l->n_stats * sizeof(struct shm_stats);
	l->total = align_up(l->fp_offset + l->fp_chunks * sizeof(uint64_t), 4096);
}

uint64_t shm_segment_size(const struct shm_geometry *g)
{
	if (!geometry_valid(g))
		return 0;
	struct layout l;
	compute_layout(g, &l);
	return l.total;
}

int shm_segment_format_fd(int fd, const struct shm_geometry *g)
{
	if (!geometry_valid(g))
		return -EINVAL;
	struct layout l;
	compute_layout(g, &l);
	if (ftruncate(fd, (off_t)l.total) < 0)
		return -errno;
	uint8_t *base = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return -errno;
	struct shm_seg_header *h = (struct shm_seg_header *)base;
	memset(h, 0, sizeof(*h));
	h->magic = SHM_SEG_MAGIC;
	h->abi_version = SHM_ABI_VERSION;
	h->header_size = sizeof(*h);
	h->segment_size = l.total;
	h->page_size = g->page_size;
	h->n_workers = g->n_workers;
	h->ring_slots = g->ring_slots;
	h->slot_size = SHM_SLOT_SIZE;
	h->n_rings = l.n_rings;
	h->n_stats = l.n_stats;
	h->rings_offset = l.rings_offset;
	h->ring_stride = l.ring_stride;
	h->stats_offset = l.stats_offset;
	h->guest_pages = g->guest_pages;
	h->max_run_pages = g->max_run_pages;
	h->fp_chunk_pages = l.fp_chunk_pages;
	h->fp_offset = l.fp_offset;
	h->fp_chunks = l.fp_chunks;
	for (uint32_t i = 0; i < l.n_rings; i++)
		shm_ring_format(base + l.rings_offset + i * l.ring_stride);
	int rc = munmap(base, l.total) < 0 ? -errno : 0;
	/* Sealed: no peer can shrink the file under another's mapping (SIGBUS)
	 * or grow it; F_SEAL_SEAL keeps anyone from undoing that. */
	if (rc == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		rc = -errno;
	return rc;
}

int shm_segment_create(const struct shm_geometry *g)
{
	if (!geometry_valid(g))
		return -EINVAL;
	int fd = memfd_create("pageferry-control", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	int rc = shm_segment_format_fd(fd, g);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

#define REFUSE(code, msg)            \
	do {                         \
		if (why)             \
			*why = (msg); \
		rc = (code);         \
		goto fail;           \
	} while (0)

int shm_segment_attach(struct shm_segment *seg, int fd, const char **why)
{
	int rc;
	memset(seg, 0, sizeof(*seg));
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)sizeof(struct shm_seg_header)) {
		if (why)
			*why = "control segment smaller than its header";
		return -EBADMSG;
	}
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
		if (why)
			*why = "control segment is not sealed against resizing";
		return -EBADMSG;
	}
	size_t size = (size_t)st.st_size;
	uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return -errno;
	seg->base = base;
	seg->size = size;
	seg->hdr = (struct shm_seg_header *)base;

	/* Read every field once into a private copy; validate the copy. */
	const volatile struct shm_seg_header *h = (const volatile struct shm_seg_header *)base;
	uint64_t magic = h->magic;
	uint32_t abi = h->abi_version, header_size = h->header_size, slot_size = h->slot_size;
	uint64_t seg_size = h->segment_size;
	struct shm_geometry g = {
		.page_size = h->page_size,
		.n_workers = h->n_workers,
		.ring_slots = h->ring_slots,
		.max_run_pages = h->max_run_pages,
		.guest_pages = h->guest_pages,
	};
	uint32_t n_rings = h->n_rings, n_stats = h->n_stats;
	uint64_t rings_offset = h->rings_offset, ring_stride = h->ring_stride,
		 stats_offset = h->stats_offset;
	uint32_t fp_chunk_pages = h->fp_chunk_pages;
	uint64_t fp_offset = h->fp_offset, fp_chunks = h->fp_chunks;

	if (magic != SHM_SEG_MAGIC)
		REFUSE(-EBADMSG, "control segment has a bad magic");
	if (abi != SHM_ABI_VERSION)
		REFUSE(-EPROTO, "control segment ABI version differs from this binary's");
	if (header_size != sizeof(struct shm_seg_header) || slot_size != SHM_SLOT_SIZE)
		REFUSE(-EBADMSG, "control segment header or slot size differs");
	if (!geometry_valid(&g))
		REFUSE(-EBADMSG, "control segment geometry is invalid");
	/* Recompute the layout from the geometry; every stored offset must agree,
	 * so no offset can point outside the mapping. */
	struct layout l;
	compute_layout(&g, &l);
	if (seg_size != size || l.total != size || n_rings != l.n_rings || n_stats != l.n_stats ||
	    rings_offset != l.rings_offset || ring_stride != l.ring_stride ||
	    stats_offset != l.stats_offset || fp_chunk_pages != l.fp_chunk_pages ||
	    fp_offset != l.fp_offset || fp_chunks != l.fp_chunks)
		REFUSE(-EBADMSG, "control segment offsets disagree with its geometry");

	seg->geo = g;
	seg->n_rings = n_rings;
	seg->n_stats = n_stats;
	seg->rings_offset = rings_offset;
	seg->ring_stride = ring_stride;
	seg->stats_offset = stats_offset;
	seg->fp_chunk_pages = fp_chunk_pages;
	seg->fp_offset = fp_offset;
	seg->fp_chunks = fp_chunks;
	return 0;
fail:
	munmap(base, size);
	memset(seg, 0, sizeof(*seg));
	return rc;
}

void shm_segment_detach(struct shm_segment *seg)
{
	if (seg && seg->base)
		munmap(seg->base, seg->size);
	if (seg)
		memset(seg, 0, sizeof(*seg));
}

void *shm_segment_ring_mem(const struct shm_segment *seg, uint32_t ring)
{
	return seg->base + seg->rings_offset + (uint64_t)ring * seg->ring_stride;
}

struct shm_stats *shm_segment_stats(const struct shm_segment *seg, uint32_t block)
{
	return (struct shm_stats *)(seg->base + seg->stats_offset + (uint64_t)block * sizeof(struct shm_stats));
}

struct shm_stats *shm_segment_round(const struct shm_segment *seg, uint32_t round)
{
	if (round < 1 || round > SHM_MAX_ROUNDS)
		return NULL;
	return shm_segment_stats(seg, SHM_STATS_WORKER0 + seg->geo.n_workers + round - 1);
}

_Atomic uint64_t *shm_segment_fingerprints(const struct shm_segment *seg)
{
	return (_Atomic uint64_t *)(seg->base + seg->fp_offset);
}

int shm_segment_ring(const struct shm_segment *seg, enum shm_ring_kind kind, uint32_t worker,
		     int wake_fd, struct shm_ring *out)
{
	if (worker >= seg->geo.n_workers || (unsigned)kind >= SHM_RING_KINDS)
		return -EINVAL;
	return shm_ring_attach(out, shm_segment_ring_mem(seg, shm_ring_index(kind, worker)),
			       seg->geo.ring_slots, wake_fd);
}
