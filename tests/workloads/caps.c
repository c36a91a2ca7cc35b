/*
 * caps: the capability state beyond E/P/I survives a checkpoint: the bounding set,
 * ambient capabilities and securebits.
 * Usage: caps WORKDIR MODE   (protocol in wl.h; must be started as root)
 *        caps --probe WANT    (internal: exit 0 iff CapEff is WANT, in hex)
 *
 * MODE root: stays uid 0 with its capabilities as they were (so they equal those of
 *   ckpt itself), drops CAP_SYS_MODULE, CAP_SYS_BOOT and CAP_MKNOD from the bounding set
 *   and sets SECBIT_NOROOT | SECBIT_NO_SETUID_FIXUP.
 * MODE user: the same bounding drops; I = {CAP_NET_BIND_SERVICE}, raised to ambient;
 *   securebits KEEP_CAPS | NO_SETUID_FIXUP | NO_CAP_AMBIENT_RAISE and its lock; then
 *   setresgid/setresuid 1000 (caps untouched thanks to NO_SETUID_FIXUP) and
 *   E = P = I = {CAP_NET_BIND_SERVICE}; PR_SET_DUMPABLE 1.
 *
 * Checks: ids; capget E, P, I; CapBnd and CapAmb of /proc/self/status as at setup;
 * PR_CAPBSET_READ 0 for each dropped cap and 1 for CAP_NET_BIND_SERVICE;
 * PR_CAP_AMBIENT_IS_SET as set up; PR_GET_SECUREBITS as at setup. And what the state
 * does: a child exec'ing this program (probe) gets the capabilities the kernel computes
 * from it: in root mode none (SECBIT_NOROOT: root gains nothing at exec; lost bits give
 * the full set), in user mode CAP_NET_BIND_SERVICE alone (from the ambient set; lost
 * ambient gives none).
 */
#include "wl.h"
#include <grp.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define UID 1000
#define GID 1000
#define NBS (1ull << CAP_NET_BIND_SERVICE)

static const int dropped[] = { CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_MKNOD };
static int user_mode;
static struct __user_cap_data_struct caps0[2];
static char capbnd0[64], capamb0[64];
static int secbits0;
static uid_t uid0;
static char self_exe[4096];

static uint64_t cap64(const struct __user_cap_data_struct d[2], int which)
{
	uint32_t lo = which == 0 ? d[0].effective : which == 1 ? d[0].permitted : d[0].inheritable;
	uint32_t hi = which == 0 ? d[1].effective : which == 1 ? d[1].permitted : d[1].inheritable;
	return (uint64_t)hi << 32 | lo;
}

/* The CapEff a freshly exec'd copy of this program gets; -1 on error. */
static long long child_capeff(uint64_t want)
{
	char arg[32];
	snprintf(arg, sizeof(arg), "%llx", (unsigned long long)want);
	pid_t c = fork();
	if (c < 0)
		return -1;
	if (c == 0) {
		char *argv[] = { self_exe, "--probe", arg, NULL };
		execv(self_exe, argv);
		_exit(127);
	}
	int st;
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int verify(void)
{
	uid_t r, e, s;
	WL_CHECK(getresuid(&r, &e, &s) == 0, "getresuid");
	WL_CHECK(r == uid0 && e == uid0 && s == uid0, "resuid %u/%u/%u, want %u", r, e, s, uid0);

	struct __user_cap_data_struct d[2];
	WL_CHECK(wl_get_caps(d) == 0, "capget: %s", strerror(errno));
	const char *names[] = { "CapEff", "CapPrm", "CapInh" };
	for (int i = 0; i < 3; i++)
		WL_CHECK(cap64(d, i) == cap64(caps0, i), "%s %#llx, was %#llx", names[i],
			 (unsigned long long)cap64(d, i), (unsigned long long)cap64(caps0, i));

	char v[64];
	wl_status_field("CapBnd", v, sizeof(v));
	WL_CHECK(strcmp(v, capbnd0) == 0, "CapBnd %s, was %s", v, capbnd0);
	for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
		WL_CHECK(prctl(PR_CAPBSET_READ, dropped[i], 0, 0, 0) == 0,
			 "cap %d is back in the bounding set", dropped[i]);
	WL_CHECK(prctl(PR_CAPBSET_READ, CAP_NET_BIND_SERVICE, 0, 0, 0) == 1,
		 "CAP_NET_BIND_SERVICE left the bounding set");

	wl_status_field("CapAmb", v, sizeof(v));
	WL_CHECK(strcmp(v, capamb0) == 0, "CapAmb %s, was %s", v, capamb0);
	int amb = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0);
	WL_CHECK(amb == user_mode, "PR_CAP_AMBIENT_IS_SET(NET_BIND_SERVICE) %d, want %d", amb,
		 user_mode);

	int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	WL_CHECK(sb == secbits0, "securebits %#x, was %#x", sb, secbits0);
	if (user_mode) {
		int dm = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
		WL_CHECK(dm == 1, "PR_GET_DUMPABLE %d, want 1", dm);
	}

	/* What the kernel makes of it at exec. */
	uint64_t want = user_mode ? NBS : 0;
	long long got = child_capeff(want);
	WL_CHECK(got == 0, "an exec'd child does not have CapEff %#llx (probe exit %lld)",
		 (unsigned long long)want, got);
	return 1;
}

static void corrupt(void)
{
	if (user_mode)
		prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_NET_BIND_SERVICE, 0, 0);
	else
		prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0);
}

static int probe(const char *want)
{
	char v[64];
	wl_status_field("CapEff", v, sizeof(v));
	return strtoull(v, NULL, 16) == strtoull(want, NULL, 16) ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--probe") == 0)
		return probe(argv[2]);
	if (argc < 3 || (strcmp(argv[2], "root") && strcmp(argv[2], "user")))
		wl_die("usage: caps WORKDIR root|user");
	wl_init();
	user_mode = strcmp(argv[2], "user") == 0;
	if (geteuid() != 0)
		wl_die("must start as root (euid %u)", geteuid());
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0)
		wl_die("readlink /proc/self/exe");
	self_exe[n] = 0;

	struct __user_cap_data_struct d[2];
	if (wl_get_caps(d))
		wl_die("capget");
	for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
		if (prctl(PR_CAPBSET_DROP, dropped[i], 0, 0, 0))
			wl_die("PR_CAPBSET_DROP %d", dropped[i]);
	if (user_mode) {
		static const gid_t groups[] = { GID };
		if (setgroups(1, groups))
			wl_die("setgroups");
		if (wl_set_caps(cap64(d, 1), cap64(d, 1), NBS))
			wl_die("capset I=NET_BIND_SERVICE");
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
			wl_die("PR_CAP_AMBIENT_RAISE");
		if (prctl(PR_SET_SECUREBITS,
			  SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_CAP_AMBIENT_RAISE |
				  SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
			  0, 0, 0))
			wl_die("PR_SET_SECUREBITS");
		if (setresgid(GID, GID, GID) || setresuid(UID, UID, UID))
			wl_die("setresgid/setresuid");
		if (wl_set_caps(NBS, NBS, NBS))
			wl_die("capset E=P=I=NET_BIND_SERVICE");
		if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
			wl_die("PR_SET_DUMPABLE");
	} else if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NO_SETUID_FIXUP, 0, 0, 0)) {
		wl_die("PR_SET_SECUREBITS");
	}
	uid0 = geteuid();
	if (wl_get_caps(caps0))
		wl_die("capget");
	secbits0 = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	wl_status_field("CapBnd", capbnd0, sizeof(capbnd0));
	wl_status_field("CapAmb", capamb0, sizeof(capamb0));
	if (!capbnd0[0] || !capamb0[0])
		wl_die("no CapBnd/CapAmb in /proc/self/status");

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
