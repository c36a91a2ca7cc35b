/*
 * creds: credentials of a process that dropped root survive a checkpoint.
 * Usage: creds WORKDIR   (protocol in wl.h; must be started as root)
 *
 * Setup (its stdout was opened by whoever started it, before any privilege drop):
 * setgroups {44, 1000}; PR_SET_KEEPCAPS 1; setresgid(1000, 1000, 1000);
 * setresuid(1000, 1000, 1000); capset (raw syscall, _LINUX_CAPABILITY_VERSION_3) to keep
 * CAP_NET_BIND_SERVICE alone in permitted and effective, nothing inheritable;
 * PR_SET_DUMPABLE 1 (the uid change reset it to 0).
 *
 * Checks: getresuid/getresgid all 1000; /proc/self/status Uid and Gid (real, effective,
 * saved, fs) all 1000; getgroups is exactly {44, 1000}; capget E = P = CAP_NET_BIND_SERVICE
 * and I = 0, CapBnd as at start, CapAmb 0; PR_GET_KEEPCAPS 1 and securebits as at start;
 * PR_GET_DUMPABLE 1; NoNewPrivs 0. And the capability works: a TCP socket binds to
 * 127.0.0.1 on a random port in 600..999 (another port on EADDRINUSE) and is closed at
 * once; with CAP_NET_BIND_SERVICE dropped from the effective set for a moment the same
 * bind fails with EACCES (when the port is below ip_unprivileged_port_start; otherwise
 * this control is skipped and "INFO bind-control-skipped" is printed once), and raising
 * it again from the permitted set works.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define UID 1000
#define GID 1000
#define CAP_BIT (1u << CAP_NET_BIND_SERVICE)

static const gid_t groups0[] = { 44, 1000 };
static int secbits0;
static char capbnd0[64];
static int unpriv_start = 1024;
static unsigned seed;

/* bind() a fresh TCP socket to 127.0.0.1:port; returns 0 or the errno */
static int try_bind(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return errno ? errno : -1;
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int r = bind(s, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
	close(s);
	return r;
}

static int pick_port(void)
{
	int hi = unpriv_start < 1000 ? unpriv_start : 1000;
	if (hi <= 600)
		hi = 1000;
	return 600 + (int)(rand_r(&seed) % (unsigned)(hi - 600));
}

/* The capability works: bind below 1024 with it; without it in E (control), EACCES. */
static int check_bind(void)
{
	static int control_skip_said;
	for (int attempt = 0; attempt < 50; attempt++) {
		int port = pick_port();
		int control = port < unpriv_start;
		if (control) {
			WL_CHECK(wl_set_caps(0, CAP_BIT, 0) == 0, "capset E=0: %s", strerror(errno));
			int e = try_bind(port);
			int back = wl_set_caps(CAP_BIT, CAP_BIT, 0);
			WL_CHECK(back == 0,
				 "capset E=P=NET_BIND_SERVICE (raising it back from permitted): %s",
				 strerror(errno));
			if (e == EADDRINUSE)
				continue;
			WL_CHECK(e == EACCES,
				 "control: bind to port %d without CAP_NET_BIND_SERVICE in E gave "
				 "%d (%s), want EACCES",
				 port, e, e ? strerror(e) : "success");
		} else if (!control_skip_said) {
			control_skip_said = 1;
			printf("INFO bind-control-skipped (ip_unprivileged_port_start %d)\n",
			       unpriv_start);
		}
		int e = try_bind(port);
		if (e == EADDRINUSE)
			continue;
		WL_CHECK(e == 0, "bind to 127.0.0.1:%d with CAP_NET_BIND_SERVICE: %s", port,
			 strerror(e));
		return 1;
	}
	return wl_fail("50 ports in 600..999 were all in use");
}

static int verify(void)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	WL_CHECK(getresuid(&r, &e, &s) == 0, "getresuid");
	WL_CHECK(r == UID && e == UID && s == UID, "resuid %u/%u/%u, want %u", r, e, s, UID);
	WL_CHECK(getresgid(&gr, &ge, &gs) == 0, "getresgid");
	WL_CHECK(gr == GID && ge == GID && gs == GID, "resgid %u/%u/%u, want %u", gr, ge, gs, GID);

	char v[256];
	wl_status_field("Uid", v, sizeof(v));
	WL_CHECK(strcmp(v, "1000\t1000\t1000\t1000") == 0, "status Uid '%s'", v);
	wl_status_field("Gid", v, sizeof(v));
	WL_CHECK(strcmp(v, "1000\t1000\t1000\t1000") == 0, "status Gid '%s'", v);

	gid_t g[64];
	int n = getgroups(64, g);
	WL_CHECK(n == 2, "getgroups: %d groups, want 2 (44, 1000)", n);
	int has44 = 0, has1000 = 0;
	for (int i = 0; i < n; i++) {
		has44 |= g[i] == 44;
		has1000 |= g[i] == 1000;
	}
	WL_CHECK(has44 && has1000, "groups %u %u, want 44 1000", g[0], g[1]);

	struct __user_cap_data_struct d[2];
	WL_CHECK(wl_get_caps(d) == 0, "capget: %s", strerror(errno));
	WL_CHECK(d[0].effective == CAP_BIT && d[1].effective == 0, "CapEff %08x%08x, want %08x",
		 d[1].effective, d[0].effective, CAP_BIT);
	WL_CHECK(d[0].permitted == CAP_BIT && d[1].permitted == 0, "CapPrm %08x%08x, want %08x",
		 d[1].permitted, d[0].permitted, CAP_BIT);
	WL_CHECK(d[0].inheritable == 0 && d[1].inheritable == 0, "CapInh %08x%08x, want 0",
		 d[1].inheritable, d[0].inheritable);
	wl_status_field("CapBnd", v, sizeof(v));
	WL_CHECK(strcmp(v, capbnd0) == 0, "CapBnd %s, was %s", v, capbnd0);
	wl_status_field("CapAmb", v, sizeof(v));
	WL_CHECK(strcmp(v, "0000000000000000") == 0, "CapAmb %s, want 0", v);

	int k = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0);
	WL_CHECK(k == 1, "PR_GET_KEEPCAPS %d, want 1", k);
	int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	WL_CHECK(sb == secbits0, "securebits %#x, was %#x", sb, secbits0);
	int dm = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	WL_CHECK(dm == 1, "PR_GET_DUMPABLE %d, want 1", dm);
	wl_status_field("NoNewPrivs", v, sizeof(v));
	WL_CHECK(strcmp(v, "0") == 0, "NoNewPrivs '%s', want 0", v);
	WL_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0, "PR_GET_NO_NEW_PRIVS set");

	return check_bind();
}

static void corrupt(void)
{
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: creds WORKDIR");
	wl_init();
	if (geteuid() != 0)
		wl_die("must start as root (euid %u)", geteuid());
	seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	char buf[64];
	ssize_t n = wl_read_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", buf,
				 sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = 0;
		unpriv_start = atoi(buf);
	}

	if (setgroups(2, groups0))
		wl_die("setgroups");
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		wl_die("PR_SET_KEEPCAPS");
	if (setresgid(GID, GID, GID))
		wl_die("setresgid");
	if (setresuid(UID, UID, UID))
		wl_die("setresuid");
	/* With keepcaps the permitted set survived the uid change, the effective set not. */
	if (wl_set_caps(CAP_BIT, CAP_BIT, 0))
		wl_die("capset");
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		wl_die("PR_SET_DUMPABLE");
	secbits0 = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	if (secbits0 < 0)
		wl_die("PR_GET_SECUREBITS");
	wl_status_field("CapBnd", capbnd0, sizeof(capbnd0));
	if (!capbnd0[0])
		wl_die("no CapBnd in /proc/self/status");

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
