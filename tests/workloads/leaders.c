/*
 * leaders: sessions and process groups whose leader has exited, and a group led by a
 * sibling. Usage: leaders WORKDIR (protocol in wl.h; the root answers the signals)
 *
 * The root R is a child subreaper, so what its children leave behind comes to it:
 *   C   setsid(), forks D (stays in session C, group C), D2 (own group in session C)
 *       and X (setpgid(0, 0), forks Y: session C, group X, then exits); C exits.
 *       D, D2 and Y are R's now: a daemon's double fork.
 *   A   a group of its own; B is put into it (a pipeline), then A exits (reaped): B is
 *       in group A, whose leader is gone. A zombie Z (exit 7, unreaped) is in group A too.
 *   L   a group of its own, alive; M is put into it after (a sibling-led group).
 * Every member records its pid, ppid (R), process group and session once it is R's child,
 * then checks them (through the shared mailbox ping, as tree.c) against getpid,
 * getppid, getpgid(0) and getsid(0); one in the root's session compares with the root's
 * session of now (a restore with -d gives the root a new one). The root reaps Z through
 * waitpid(-A) (its group, exact status) and makes the next one in group A.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

enum { D, D2, Y, B, L, M, MEMBERS };
static const char *names[MEMBERS] = { "D", "D2", "Y", "B", "L", "M" };

/* What a member recorded of itself once in place. */
struct place {
	volatile int pgid, sid, in_root_session;
};

struct mailbox {
	volatile int ping;
	volatile int root_sid;
	volatile int a; /* the exited group leader A */
	volatile int go; /* every member is where it stays */
	struct wl_slot s[MEMBERS];
	struct place at[MEMBERS];
};

static struct mailbox *mb;
static int me = -1, root, zpid, zgen;

static int member_check(void)
{
	struct wl_slot *s = &mb->s[me];
	struct place *at = &mb->at[me];
	int want_sid = at->in_root_session ? mb->root_sid : at->sid;
	WL_CHECK(getpid() == s->pid, "%s: pid %d, was %d", names[me], getpid(), s->pid);
	WL_CHECK(getppid() == s->ppid, "%s: ppid %d, was %d", names[me], getppid(), s->ppid);
	WL_CHECK(getpgid(0) == at->pgid, "%s: process group %d, was %d", names[me], getpgid(0),
		 at->pgid);
	WL_CHECK(getsid(0) == want_sid, "%s: session %d, want %d", names[me], getsid(0),
		 want_sid);
	return 1;
}

/* A member: waits to be R's child, records itself, answers pings; exits once R is gone. */
static void member(int who)
{
	me = who;
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	while (getppid() != root || !mb->go)
		wl_sleep_ms(2);
	struct wl_slot *s = &mb->s[who];
	struct place *at = &mb->at[who];
	s->ppid = root;
	at->pgid = getpgid(0);
	at->sid = getsid(0);
	at->in_root_session = at->sid == getsid(root);
	__sync_synchronize();
	s->pid = getpid();
	wl_slot_loop(s, &mb->ping, root, member_check, 3);
}

static int fork_or_die(void)
{
	int p = fork();
	if (p < 0)
		wl_die("fork");
	return p;
}

/* C: the daemon's first fork. */
static void session_c(void)
{
	if (setsid() < 0)
		wl_die("setsid");
	if (fork_or_die() == 0)
		member(D);
	if (fork_or_die() == 0) {
		if (setpgid(0, 0))
			wl_die("setpgid D2");
		member(D2);
	}
	int x = fork_or_die();
	if (x == 0) {
		if (setpgid(0, 0))
			wl_die("setpgid X");
		int y = fork_or_die();
		if (y == 0)
			member(Y);
		_exit(0);
	}
	waitpid(x, NULL, 0);
	_exit(0);
}

/* A child that waits until it is in group A, then exits with 7 + zgen: the zombie. */
static void make_zombie(void)
{
	int gate[2];
	if (pipe(gate))
		wl_die("pipe");
	zgen++;
	zpid = fork_or_die();
	if (zpid == 0) {
		char c;
		close(gate[1]);
		while (read(gate[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(7 + zgen);
	}
	close(gate[0]);
	if (setpgid(zpid, mb->a))
		wl_die("setpgid zombie into group %d", mb->a);
	close(gate[1]);
	siginfo_t si;
	while (waitid(P_PID, zpid, &si, WEXITED | WNOWAIT) && errno == EINTR)
		;
}

static int verify(void)
{
	mb->root_sid = getsid(0);
	if (!wl_slots_ping(mb->s, MEMBERS, &mb->ping, names))
		return 0;
	int st = 0;
	int r = waitpid(-mb->a, &st, WNOHANG);
	WL_CHECK(r == zpid, "zombie %d in group %d: waitpid(-%d) returned %d (%s)", zpid, mb->a,
		 mb->a, r, r < 0 ? strerror(errno) : "none exited");
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7 + zgen, "zombie %d: wait status %#x",
		 zpid, st);
	make_zombie();
	return 1;
}

int main(void)
{
	wl_init();
	root = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		wl_die("PR_SET_CHILD_SUBREAPER");
	mb = mmap(NULL, sizeof(*mb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mb == MAP_FAILED)
		wl_die("mmap");
	int c = fork_or_die();
	if (c == 0)
		session_c();
	waitpid(c, NULL, 0);

	int a = fork_or_die();
	if (a == 0) {
		setpgid(0, 0);
		pause();
		_exit(0);
	}
	if (setpgid(a, a))
		wl_die("setpgid A");
	mb->a = a;
	int b = fork_or_die();
	if (b == 0)
		member(B);
	if (setpgid(b, a))
		wl_die("setpgid B");
	make_zombie();
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);

	int l = fork_or_die();
	if (l == 0) {
		setpgid(0, 0);
		member(L);
	}
	if (setpgid(l, l))
		wl_die("setpgid L");
	int m = fork_or_die();
	if (m == 0)
		member(M);
	if (setpgid(m, l))
		wl_die("setpgid M");

	mb->go = 1;
	/* Every member has recorded itself (after its last move). */
	if (!wl_slots_started(mb->s, MEMBERS))
		wl_die("a member did not start");
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(10);
	}
}
