/* Arena buffers: a memfd per worker, created by the supervisor, holding
 * WK_ARENA_BUFFERS buffers of one run's raw size each (buffer i at
 * i * buffer_size).  On the source a worker reads each run's pages into
 * one of its buffers (and compresses them there) and the writer writes or
 * sends from it; on the destination the receiver
 * receives compressed payloads into it and the worker decompresses from it.
 * A buffer's index travels in the ring descriptor; its owner gets it back on
 * the return ring once the other side is done with it. */
#ifndef PF_WK_ARENA_H
#define PF_WK_ARENA_H

#include <stdint.h>

#include "protocol/proto_geometry.h"
#include "workers/wk_record.h"

#define WK_ARENA_BUFFERS 16u
/* A destination buffer holds one packet's payload, at most one run's raw
 * size (the receiver learns the run size only from the sender). */
#define WK_ARENA_DEST_BUFFER_SIZE PROTO_MAX_RUN_BYTES

static inline uint64_t wk_arena_size(uint64_t buffer_size)
{
	return WK_ARENA_BUFFERS * buffer_size;
}

/* A source worker's arena: buffer b is one run's room of frame_size bytes
 * at b * frame_size (its pages, or its zstd frame) and a run record
 * (workers/wk_record.h) after all the frames.  The front end sizes the
 * memfd with pf_abi.source_arena_bytes. */
static inline uint64_t wk_arena_source_size(uint64_t frame_size)
{
	return WK_ARENA_BUFFERS * (frame_size + WK_RECORD_BYTES);
}
static inline uint64_t wk_arena_record_offset(uint64_t frame_size, uint32_t b)
{
	return WK_ARENA_BUFFERS * frame_size + (uint64_t)b * WK_RECORD_BYTES;
}

#endif
