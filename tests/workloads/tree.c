/*
 * tree: a process tree whose every member checks itself.
 * Usage: tree WORKDIR   (protocol in wl.h; the root answers the signals)
 *
 *   root R
 *   +- A   plain child            +- A1  plain grandchild
 *   +- G   setpgid(0, 0)          +- G1  in G's group
 *   +- S   setsid()               +- S1  in S's session and group
 *   +- Z   a zombie: exited (or killed by a signal) and not reaped yet
 *
 * Setup: a MAP_SHARED anonymous region made before any fork is the tree's mailbox:
 * each member has a slot (its pid, its parent's, a counter it bumps every few ms, a
 * result). Each member fills 256 KiB of its own heap with its own pattern; the root also
 * fills 1 MiB before the forks that every member inherits and only reads.
 * Check (root, on SIGUSR1): the root writes its group and session and a new `ping` into
 * the region; every member sees it (only through shared memory), verifies its own heap,
 * the inherited MiB, getppid(), getpgid(0) and getsid(0) against what it must be
 * (relative to the root's, which a restore with -d may change: it gets a session of its
 * own) and answers in its slot. The root waits for all answers, checks that every
 * member's counter moved (they run, and their writes reach the root), its own memory,
 * and reaps Z: the exact status (exit 40+n, or killed by SIGUSR2 on odd checks) must
 * come back. Then it makes the next zombie, so each checkpoint has one.
 * A member whose parent is gone exits: killing the root ends the tree.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define MEMBERS 6
#define OWN (256 << 10)
#define INHERITED (1 << 20)

enum { A, A1, G, G1, S, S1 };
static const char *names[MEMBERS] = { "A", "A1", "G", "G1", "S", "S1" };

struct mailbox {
	volatile int ping;
	volatile int root_pgid, root_sid;
	struct wl_slot s[MEMBERS];
};

static struct mailbox *mb;
static uint8_t *inherited, *own;
static int zpid, zstatus_want, zgen;
static int me = -1; /* member index; -1 for the root */

static void fill_own(int who)
{
	own = malloc(OWN);
	if (!own)
		wl_die("malloc");
	wl_fill(own, OWN, 1000 + who);
}

static int member_check(void)
{
	struct wl_slot *s = &mb->s[me];
	size_t bad;
	if ((bad = wl_cmp(own, OWN, 1000 + me)) != (size_t)-1)
		return wl_fail("%s: own heap differs at byte %zu", names[me], bad);
	if ((bad = wl_cmp(inherited, INHERITED, 7)) != (size_t)-1)
		return wl_fail("%s: inherited memory differs at byte %zu", names[me], bad);
	WL_CHECK(getpid() == s->pid, "%s: pid %d, was %d", names[me], getpid(), s->pid);
	WL_CHECK(getppid() == s->ppid, "%s: ppid %d, want %d", names[me], getppid(), s->ppid);
	int pg = getpgid(0), sid = getsid(0);
	int want_pg, want_sid;
	switch (me) {
	case A:
	case A1:
		want_pg = mb->root_pgid;
		want_sid = mb->root_sid;
		break;
	case G:
	case G1:
		want_pg = mb->s[G].pid;
		want_sid = mb->root_sid;
		break;
	default:
		want_pg = want_sid = mb->s[S].pid;
	}
	WL_CHECK(pg == want_pg, "%s: process group %d, want %d", names[me], pg, want_pg);
	WL_CHECK(sid == want_sid, "%s: session %d, want %d", names[me], sid, want_sid);
	return 1;
}

static void member_loop(void)
{
	struct wl_slot *s = &mb->s[me];
	wl_slot_loop(s, &mb->ping, s->ppid, member_check, 3);
}

/* Forks member `who` (with `child` under it, or -1); returns its pid. */
static int start_member(int who, int child)
{
	int parent = getpid();
	int pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid > 0)
		return pid;
	me = who;
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	if (who == G && setpgid(0, 0))
		wl_die("setpgid");
	if (who == S && setsid() < 0)
		wl_die("setsid");
	mb->s[who].pid = getpid();
	mb->s[who].ppid = parent;
	fill_own(who);
	if (child >= 0)
		start_member(child, -1);
	member_loop();
	_exit(0);
}

/* The next zombie: exits with 40+n, or is killed by SIGUSR2 on odd n. */
static void make_zombie(void)
{
	zgen++;
	int sig = zgen % 2 ? SIGUSR2 : 0;
	zstatus_want = sig ? sig : (40 + zgen) << 8;
	zpid = fork();
	if (zpid < 0)
		wl_die("fork zombie");
	if (zpid == 0) {
		if (sig) {
			signal(sig, SIG_DFL);
			sigset_t all;
			sigemptyset(&all);
			sigprocmask(SIG_SETMASK, &all, NULL);
			raise(sig);
		}
		_exit(40 + zgen);
	}
	siginfo_t si;
	while (waitid(P_PID, zpid, &si, WEXITED | WNOWAIT) && errno == EINTR)
		;
}

static int verify(void)
{
	size_t bad;
	if ((bad = wl_cmp(own, OWN, 999)) != (size_t)-1)
		return wl_fail("root: own heap differs at byte %zu", bad);
	if ((bad = wl_cmp(inherited, INHERITED, 7)) != (size_t)-1)
		return wl_fail("root: inherited memory differs at byte %zu", bad);
	mb->root_pgid = getpgid(0);
	mb->root_sid = getsid(0);
	if (!wl_slots_ping(mb->s, MEMBERS, &mb->ping, names))
		return 0;
	int st = 0;
	int r = waitpid(zpid, &st, WNOHANG);
	WL_CHECK(r == zpid, "zombie %d: waitpid returned %d (%s)", zpid, r,
		 r < 0 ? strerror(errno) : "not exited");
	WL_CHECK(st == zstatus_want, "zombie %d: wait status %#x, want %#x", zpid, st,
		 zstatus_want);
	make_zombie();
	return 1;
}

static void corrupt(void)
{
	own[OWN / 2] ^= 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	mb = mmap(NULL, sizeof(*mb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	inherited = mmap(NULL, INHERITED, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			 0);
	if (mb == MAP_FAILED || inherited == MAP_FAILED)
		wl_die("mmap");
	wl_fill(inherited, INHERITED, 7);
	fill_own(-1); /* seed 999 */
	start_member(A, A1);
	start_member(G, G1);
	start_member(S, S1);
	/* Every member (grandchildren too) has filled in its slot. */
	wl_slots_started(mb->s, MEMBERS);
	make_zombie();
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(10);
	}
}
