/* pageferry-mkseg: formats the control segment for the supervisor, which
 * creates the memfd (so it owns it) and passes it here on MKSEG_FD_SEGMENT
 * (stage/stage_fds.h).
 * argv: --page-size=BYTES --workers=N --ring-slots=N --max-run-pages=N --guest-pages=N
 * The geometry is checked by shm_segment_format_fd. */
#include <errno.h>

#include "shm/shm_segment.h"
#include "stage/stage.h"

int main(int argc, char **argv)
{
	stage_set_name("mkseg", -1);
	stage_args(argc, argv, "pageferry-mkseg --page-size=BYTES --workers=N --ring-slots=N --max-run-pages=N "
			       "--guest-pages=N");
	struct shm_geometry g = {
		.page_size = (uint32_t)stage_arg_u64("page-size", 1, UINT32_MAX),
		.n_workers = (uint32_t)stage_arg_u64("workers", 1, SHM_MAX_WORKERS),
		.ring_slots = (uint32_t)stage_arg_u64("ring-slots", 1, UINT32_MAX),
		.max_run_pages = (uint32_t)stage_arg_u64("max-run-pages", 1, UINT32_MAX),
		.guest_pages = stage_arg_u64("guest-pages", 1, UINT64_MAX),
	};
	stage_args_done();
	stage_close_inherited_fds(MKSEG_FD_SEGMENT, NULL, 0);
	int rc = shm_segment_format_fd(MKSEG_FD_SEGMENT, &g);
	if (rc == -EINVAL)
		stage_die(STAGE_EXIT_FAILED, "formatting the control segment: invalid geometry");
	if (rc < 0)
		stage_die_errno(rc, "formatting the control segment");
	return 0;
}
