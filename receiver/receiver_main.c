/* pageferry-receiver: the destination side.  For now it restores snapshot
 * files; receiving a migration over TCP comes with the migration issue.
 *
 * restore mode fds: 3 control segment (statistics), 4 destination RAM file
 *      (read-write, empty), 5 snapshot (buffered: header and bitmap),
 *      6 the snapshot again, O_DIRECT (page data)
 * argv: pageferry-receiver restore THREADS
 *
 * The snapshot is untrusted input: header and bitmap are decoded field by
 * field and checked (protocol/proto_snapfile.c) before any offset is used.
 * Reader threads are started before lock-down and wait on a barrier, so the
 * seccomp filter (synchronised to every thread) covers them before they read
 * a single page.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "receiver/rc_restore.h"
#include "stage/stage.h"

#define FD_DEST STAGE_FD_GUEST
#define FD_META 5
#define FD_DATA 6
#define MAX_THREADS 64

static pthread_barrier_t start_line;

static void *reader_main(void *arg)
{
	pthread_barrier_wait(&start_line);
	return rc_restore_reader(arg);
}

int main(int argc, char **argv)
{
	stage_set_name("receiver", -1);
	if (argc != 3 || strcmp(argv[1], "restore") != 0)
		stage_die(STAGE_EXIT_USAGE, "usage: pageferry-receiver restore THREADS");
	int threads = (int)stage_parse_u64("thread count", argv[2], 1, MAX_THREADS);
	struct shm_segment seg;
	stage_attach_segment(&seg);

	static struct rc_restore r;
	const char *why = "";
	int rc = rc_restore_open(&r, FD_META, FD_DATA, FD_DEST, &why);
	if (rc == -EBADMSG)
		stage_die(STAGE_EXIT_FAILED, "snapshot refused: %s", why);
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	r.stats = shm_segment_stats(&seg, 0);
	stage_stat_set(r.stats, SHM_STAT_FLAGS, r.direct ? SHM_FLAG_DIRECT_IO : 0);
	stage_stat_set(r.stats, SHM_STAT_TOTAL_PAGES, r.hdr.n_pages);
	rc = rc_restore_map_dest(&r, &why);
	if (rc < 0)
		stage_die_errno(rc, "%s", why);

	pthread_t tid[MAX_THREADS];
	if ((rc = pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1)) != 0)
		stage_die_errno(-rc, "pthread_barrier_init");
	for (int i = 0; i < threads; i++)
		if ((rc = pthread_create(&tid[i], NULL, reader_main, &r)) != 0)
			stage_die_errno(-rc, "starting reader thread %d", i);
	stage_lockdown(SB_ROLE_RECEIVER, FD_DATA, 1);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	pthread_barrier_wait(&start_line);
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);

	int err = atomic_load(&r.failed_errno);
	if (err)
		stage_die_errno(-err, "reading page %llu of the snapshot",
				(unsigned long long)atomic_load(&r.failed_page));
	if (fdatasync(FD_DEST) < 0 && errno != EINVAL)
		stage_die_errno(-errno, "fdatasync of the destination");
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
