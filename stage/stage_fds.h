/* The fd map: which fd number each stage finds what on.
 *
 * The supervisor dup2's exactly these onto each stage it spawns
 * (supervisor/pf_jobs.py, pf_migrate.py), reading the numbers
 * from the generated module pf_abi.py (tools/pf_describe.c prints it from
 * this file), so the two sides cannot drift.  i is a worker's (or
 * inflater's) index, n the worker count.  Every fd is of the form
 * base + a * i + b * n: the describer checks that and hands Python the
 * three numbers.
 *
 * Each stage closes every other fd at start-up (stage_close_inherited_fds):
 * what the front end inherited never reaches a sandboxed stage.
 */
#ifndef PF_STAGE_FDS_H
#define PF_STAGE_FDS_H

/* Every stage */
#define STAGE_FD_SEGMENT 3	/* control segment (sealed memfd) */
#define STAGE_FD_GUEST 4	/* source: guest RAM file, read-only; destination: the RAM file written */

/* pageferry-scanner */
#define SCANNER_FD_RING(i) (5 + (int)(i))	  /* wake socket of ring scanner -> worker i */
#define SCANNER_FD_DIRTY_LOG(n) (5 + (int)(n)) /* the VMM's dirty log, read-write (--live) */
#define SCANNER_FD_GO(n) (5 + (int)(n))	/* --held (never with --live): one byte, 'G', says start */

/* pageferry-worker */
#define WORKER_FD_IN 5		/* wake socket of ring scanner -> this worker (we consume) */
#define WORKER_FD_OUT 6		/* wake socket of ring this worker -> writer (we produce) */
#define WORKER_FD_BACK 7	/* wake socket of ring writer -> this worker (buffers back) */
#define WORKER_FD_ARENA 8	/* its arena, read-write (--zstd-level) */

/* pageferry-writer */
#define WRITER_FD_META 5	/* snapshot: the snapshot file, buffered (header, bitmap) */
#define WRITER_FD_DATA 6	/* snapshot: the same file, O_DIRECT (page data only) */
#define WRITER_FD_CREDS 5	/* migrate: TLS credentials, the key file or the X.509 directory (--tls) */
#define WRITER_FD_COMMIT 6	/* migrate: socket to the front end, for the commit decision */
#define WRITER_FD_RING_IN(i) (7 + 2 * (int)(i))	/* wake socket of ring worker i -> writer */
#define WRITER_FD_RING_BACK(i) (8 + 2 * (int)(i)) /* wake socket of ring writer -> worker i */
#define WRITER_FD_ARENA(i, n) (7 + 2 * (int)(n) + (int)(i)) /* worker i's arena, read-only (--zstd=1) */
#define WRITER_FD_STATE(n) (7 + 3 * (int)(n)) /* --device-state: the VMM's device state, read-only */
#define WRITER_FD_GUEST_READ(n) (8 + 3 * (int)(n)) /* snapshot --guest-read-notice: one byte, 'R', once
							* every page is out of the guest */

/* pageferry-restore (--mode=restore, or check: no destination) */
#define RESTORE_FD_META 5	/* the snapshot, buffered (header, bitmap, extents) */
#define RESTORE_FD_DATA 6	/* the snapshot again, O_DIRECT (page data) */
#define RESTORE_FD_STATE 7	/* --device-state: the snapshot's device state is written here (empty file) */
#define RESTORE_FD_DONE 8	/* --done-notice: one byte, 'D', once every page is written and synced */

/* pageferry-receive */
#define RECEIVE_FD_CREDS 5	/* TLS credentials, the key file or the X.509 directory (--tls) */
#define RECEIVE_FD_COMMIT 6	/* socket to the front end (dest/ds_commit.h) */
#define RECEIVE_FD_RING(i) (7 + (int)(i))	/* wake socket of ring receive -> inflater i (we produce) */
#define RECEIVE_FD_ARENA(i, n) (7 + (int)(n) + (int)(i)) /* inflater i's arena, read-write */
#define RECEIVE_FD_STATE(n) (7 + 2 * (int)(n))	/* --device-state: the sender's device state is written here */

/* pageferry-inflater (its ring has no way back: the receive stage sees what
 * was placed from the ring's head, doc/architecture.md) */
#define INFLATER_FD_IN 5	/* wake socket of ring receive -> this inflater (we consume) */
#define INFLATER_FD_ARENA 6	/* its arena, read-only */

/* pageferry-mkseg (not a stage: it formats the segment and exits) */
#define MKSEG_FD_SEGMENT 3

#endif
