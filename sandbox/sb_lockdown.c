#include "sandbox/sb_lockdown.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

enum sb_mode sb_default_mode(void)
{
#ifdef PF_SANDBOX_DEBUG
	return SB_MODE_LOG;
#else
	return SB_MODE_KILL;
#endif
}

static int set_limit(int resource, rlim_t value)
{
	struct rlimit rl = { .rlim_cur = value, .rlim_max = value };
	return setrlimit(resource, &rl) < 0 ? -errno : 0;
}


int sb_lockdown(enum sb_role role, const struct sb_options *opt, const char **failed_step)
{
	if ((unsigned)role >= _SB_ROLE_MAX || opt->max_fd < 2) {
		if (failed_step)
			*failed_step = "sandbox options";
		return -EINVAL;
	}
	/* Build the filter before the limits: libseccomp allocates. */
	scmp_filter_ctx ctx = sb_policy_build(role, opt->mode, (int32_t)getpid());
	if (!ctx) {
		if (failed_step)
			*failed_step = "building the seccomp filter";
		return -errno;
	}
	int rc = 0;
	const char *step = NULL;
	/* poll() fails with EINVAL when nfds exceeds RLIMIT_NOFILE, so the limit
	 * is the highest fd we use plus one, not zero (OpenSSH's lesson). */
	if ((rc = set_limit(RLIMIT_NOFILE, (rlim_t)opt->max_fd + 1)) < 0)
		step = "setrlimit(RLIMIT_NOFILE)";
	else if ((rc = set_limit(RLIMIT_NPROC, 0)) < 0)
		step = "setrlimit(RLIMIT_NPROC)";
	else if ((rc = set_limit(RLIMIT_CORE, 0)) < 0) /* a core would hold guest RAM */
		step = "setrlimit(RLIMIT_CORE)";
	else if (!opt->writes_files && (rc = set_limit(RLIMIT_FSIZE, 0)) < 0)
		step = "setrlimit(RLIMIT_FSIZE)";
	else if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		rc = -errno;
		step = "prctl(PR_SET_NO_NEW_PRIVS)";
	} else if ((rc = seccomp_load(ctx)) < 0)
		step = "seccomp_load";
	/* Released after load: free() only needs brk/munmap, which are allowed. */
	seccomp_release(ctx);
	if (rc < 0 && failed_step)
		*failed_step = step;
	return rc;
}
