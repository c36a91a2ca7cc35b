/*
 * dumpable: a process the kernel made "dumpable 2" (SUID_DUMP_ROOT) restores.
 * Usage: dumpable WORKDIR   (protocol in wl.h; root; fs.suid_dumpable must be 2 while it
 * sets up, and may be anything afterwards)
 *
 * Setup: setfsuid(1) then setfsuid(0): each credential change sets the dumpable flag to
 * fs.suid_dumpable, so PR_GET_DUMPABLE is 2 (SETUP-ERROR otherwise).
 * Checks: PR_GET_DUMPABLE is still not 1 (2, or 0, the only value prctl can set that
 * keeps the same protection: ptrace and /proc of this process closed to its own uid).
 */
#include "wl.h"
#include <sys/fsuid.h>
#include <sys/prctl.h>

static int verify(void)
{
	int d = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	WL_CHECK(d == 2 || d == 0, "PR_GET_DUMPABLE %d, want 2 (or 0)", d);
	return 1;
}

static void corrupt(void)
{
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: dumpable WORKDIR");
	wl_init();
	setfsuid(1);
	setfsuid(0);
	if ((int)setfsuid(0) != 0)
		wl_die("setfsuid back to 0");
	int d = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (d != 2)
		wl_die("PR_GET_DUMPABLE %d after a credential change, want 2 (is "
		       "fs.suid_dumpable 2?)", d);
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
