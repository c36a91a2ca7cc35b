/*
 * nobody: a process that dropped root to uid/gid 65534, optionally holding locked memory
 * beyond the RLIMIT_MEMLOCK it now has.
 * Usage: nobody WORKDIR [LOCK_MIB]   (protocol in wl.h; must be started as root)
 *
 * Setup, as root: with LOCK_MIB, an anonymous area of LOCK_MIB MiB, filled with a
 * pattern and mlock()ed (root's CAP_IPC_LOCK ignores the limit); then RLIMIT_MEMLOCK
 * 8 MiB soft and hard (lowering a limit below what is locked is allowed), no
 * supplementary groups, setresgid and setresuid 65534 (which drops every capability).
 * So with LOCK_MIB above 8 the process holds more locked memory than it could lock
 * itself.
 *
 * Checks: getresuid/getresgid all 65534, no groups, no effective or permitted
 * capabilities (CapEff/CapPrm 0); RLIMIT_MEMLOCK 8 MiB/8 MiB; with LOCK_MIB: the
 * contents, VmLck exactly LOCK_MIB MiB and every page resident (mincore).
 */
#include "wl.h"
#include <grp.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define NOBODY 65534
#define LIMIT (8ul << 20)

static uint8_t *area;
static size_t area_len;

static int verify(void)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	WL_CHECK(getresuid(&r, &e, &s) == 0 && r == NOBODY && e == NOBODY && s == NOBODY,
		 "uids %u %u %u", r, e, s);
	WL_CHECK(getresgid(&gr, &ge, &gs) == 0 && gr == NOBODY && ge == NOBODY && gs == NOBODY,
		 "gids %u %u %u", gr, ge, gs);
	WL_CHECK(getgroups(0, NULL) == 0, "%d supplementary groups", getgroups(0, NULL));
	WL_CHECK(wl_status_long("CapEff", 16) == 0 && wl_status_long("CapPrm", 16) == 0,
		 "CapEff %lx CapPrm %lx", wl_status_long("CapEff", 16), wl_status_long("CapPrm", 16));
	struct rlimit rl;
	WL_CHECK(getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur == LIMIT && rl.rlim_max == LIMIT,
		 "RLIMIT_MEMLOCK %lu/%lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
	if (area) {
		WL_CHECK(wl_cmp(area, area_len, 7) == (size_t)-1, "locked area contents differ");
		long lck = wl_status_long("VmLck", 10);
		WL_CHECK(lck == (long)(area_len >> 10), "VmLck %ld kB, want %lu kB", lck,
			 (unsigned long)(area_len >> 10));
		size_t pages = area_len / 4096;
		unsigned char *v = malloc(pages);
		WL_CHECK(v && mincore(area, area_len, v) == 0, "mincore: %s", strerror(errno));
		size_t missing = 0;
		for (size_t i = 0; i < pages; i++)
			missing += !(v[i] & 1);
		free(v);
		WL_CHECK(missing == 0, "%zu pages of the locked area are not resident", missing);
	}
	return 1;
}

static void corrupt(void)
{
	if (area)
		area[area_len / 2] ^= 1;
	else
		wl_fail("corrupted on request");
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: nobody WORKDIR [LOCK_MIB]");
	wl_init();
	if (argc > 2) {
		area_len = strtoul(argv[2], NULL, 10) << 20;
		area = mmap(NULL, area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			    0);
		if (area == MAP_FAILED)
			wl_die("mmap");
		wl_fill(area, area_len, 7);
		if (mlock(area, area_len))
			wl_die("mlock");
	}
	struct rlimit rl = { LIMIT, LIMIT };
	if (setrlimit(RLIMIT_MEMLOCK, &rl))
		wl_die("setrlimit(RLIMIT_MEMLOCK)");
	if (setgroups(0, NULL) || setresgid(NOBODY, NOBODY, NOBODY) ||
	    setresuid(NOBODY, NOBODY, NOBODY))
		wl_die("dropping to uid %d", NOBODY);
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
