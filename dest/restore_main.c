/* pageferry-restore: restores a snapshot file into a destination RAM file,
 * or only checks it (`pageferry check`).
 *
 * argv: pageferry-restore --mode=restore|check --threads=N [--in-place [--zeroed]] [--device-state]
 *                         [--done-notice]
 * fds (stage/stage_fds.h): 3 control segment (statistics only), 4 the
 *      destination RAM file (read-write, empty; with --in-place an existing
 *      file of the guest's size, a waiting VMM's RAM: pages the snapshot
 *      does not have become holes, unless --zeroed says it reads as zeros
 *      already; not in check mode),
 *      5 the snapshot (buffered: header, bitmap, extent table),
 *      6 the snapshot again, O_DIRECT where the filesystem allows (page data),
 *      7 with --device-state (restore --qmp): an empty file the snapshot's
 *      device state is written to, checked against its CRC before anything
 *      is written to the destination (a snapshot without one is refused
 *      there),
 *      8 with --done-notice (restore --qmp): a pipe on which we write 'D' once
 *      every page is written and synced, before our exit, which waits for the
 *      asynchronous I/O contexts' teardown (~30 ms on the VMs we run on): the
 *      front end lets the VMM load its state and run meanwhile.
 *
 * The snapshot is untrusted input: header, bitmap and extent table are
 * decoded field by field and checked (protocol/proto_snapfile.c,
 * dest/ds_extents.c) before any offset is used; after the pages are read,
 * every extent's pages are read into the thread's own buffers, checked
 * against its CRC-32C and written with pwrite (dest/ds_restore.c).  Check
 * mode reads and checks the same way, and writes nothing.
 *
 * There are no other processes: N reader threads of this one do the work,
 * each with its own asynchronous I/O context.  They are started before
 * lock-down and wait on a barrier, so the seccomp filter (synchronised to
 * every thread) covers them before they read a single page.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dest/ds_restore.h"
#include "stage/stage.h"

#define USAGE                                                                                                 \
	"pageferry-restore --mode=restore|check --threads=N [--in-place [--zeroed]] [--device-state] "          \
	"[--done-notice]"
#define MAX_THREADS 64

static pthread_barrier_t start_line;

static void *reader_main(void *arg)
{
	pthread_barrier_wait(&start_line);
	return ds_restore_reader(arg);
}

static void tell_done(void)
{
	if (stage_write_byte(RESTORE_FD_DONE, 'D') < 0)
		stage_die(STAGE_EXIT_PEER, "the front end went away before it learned that every page was restored");
}

int main(int argc, char **argv)
{
	stage_set_name("restore", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, USAGE);
	static const char *const modes[] = { "restore", "check", NULL };
	bool check_only = stage_arg_choice("mode", modes) == 1;
	int threads = (int)stage_arg_u64("threads", 1, MAX_THREADS);
	bool in_place = stage_arg_flag("in-place");
	bool zeroed = stage_arg_flag("zeroed");
	bool device_state = stage_arg_flag("device-state");
	bool done_notice = stage_arg_flag("done-notice");
	stage_args_done();
	if (check_only && (device_state || done_notice))
		stage_usage_error("%s goes with --mode=restore", device_state ? "--device-state" : "--done-notice");
	/* Up to the snapshot's O_DIRECT fd (--device-state: the device
	 * state's); check: no destination. */
	static const int no_dest[] = { STAGE_FD_GUEST };
	stage_close_inherited_fds(done_notice ? RESTORE_FD_DONE : device_state ? RESTORE_FD_STATE : RESTORE_FD_DATA,
				  no_dest, check_only ? 1 : 0);
	struct shm_segment seg;
	stage_attach_segment(&seg);

	static struct ds_restore r;
	const char *why = "";
	int rc = ds_restore_open(&r, RESTORE_FD_META, RESTORE_FD_DATA, &why);
	if (rc == -EBADMSG)
		stage_die(STAGE_EXIT_FAILED, "snapshot refused: %s", why);
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	/* The section's CRC, before any page; --device-state: and hand it over. */
	uint8_t *state = malloc(r.hdr.device_state_len ? r.hdr.device_state_len : 1);
	if (!state)
		stage_die_errno(-ENOMEM, "allocating the device state");
	rc = ds_restore_device_state(&r, device_state ? RESTORE_FD_STATE : -1, state, &why);
	if (rc == -EBADMSG)
		stage_die(STAGE_EXIT_FAILED, "snapshot refused: %s", why);
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	free(state);
	if (device_state && close(RESTORE_FD_STATE) < 0)
		stage_die_errno(-errno, "closing the device state");
	r.in_place = in_place && !check_only;
	r.dest_zeroed = r.in_place && zeroed;
	struct stat st;
	if (r.in_place && fstat(STAGE_FD_GUEST, &st) < 0)
		stage_die_errno(-errno, "fstat of the destination");
	if (r.in_place && (uint64_t)st.st_size != r.hdr.guest_size)
		stage_die(STAGE_EXIT_FAILED, "the snapshot's guest is %llu bytes but the destination is %llu",
			  (unsigned long long)r.hdr.guest_size, (unsigned long long)st.st_size);
	r.stats = shm_segment_stats(&seg, SHM_STATS_DEST);
	stage_stat_set(r.stats, SHM_STAT_FLAGS, r.direct ? SHM_FLAG_DIRECT_IO : 0);
	stage_stat_set(r.stats, SHM_STAT_TOTAL_PAGES, check_only ? r.hdr.pages_present : r.hdr.n_pages);
	static struct ds_place dest;
	if (!check_only && (rc = ds_restore_open_dest(&r, &dest, STAGE_FD_GUEST, &why)) < 0)
		stage_die_errno(rc, "%s", why);

	static struct ds_reader readers[MAX_THREADS];
	for (int i = 0; i < threads; i++)
		if ((rc = ds_reader_init(&readers[i], &r)) < 0)
			stage_die_errno(rc, "setting up a reader's buffers and asynchronous I/O (io_setup)");
	pthread_t tid[MAX_THREADS];
	if ((rc = pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1)) != 0)
		stage_die_errno(-rc, "pthread_barrier_init");
	for (int i = 0; i < threads; i++)
		if ((rc = pthread_create(&tid[i], NULL, reader_main, &readers[i])) != 0)
			stage_die_errno(-rc, "starting reader thread %d", i);
	stage_lockdown(SB_ROLE_RESTORE, done_notice ? RESTORE_FD_DONE : RESTORE_FD_DATA, !check_only);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	pthread_barrier_wait(&start_line);
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);

	char line[512];
	if (ds_restore_result(&r, line, sizeof(line)) < 0)
		stage_die(STAGE_EXIT_FAILED, "%s", line);
	if (!check_only && fdatasync(STAGE_FD_GUEST) < 0 && errno != EINVAL)
		stage_die_errno(-errno, "fdatasync of the destination");
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	if (done_notice)
		tell_done();
	stage_test_hook("restored");
	return STAGE_EXIT_OK;
}
