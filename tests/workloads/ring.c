/*
 * ring: N processes (the root and N-1 children) pass a token round a ring through
 * shared memory, one futex per member; the ring counts its laps.
 * Usage: ring WORKDIR [N]   (default 101; protocol in wl.h, the root answers)
 *
 * Setup: a MAP_SHARED anonymous region (made before the forks) holds, per member, its
 * turn word (a shared futex: it sleeps on it until the one before wakes it) and how many
 * times it held the token, plus the lap counter and a failure note. Each member keeps
 * 8 KiB of its own pattern and checks it every time it holds the token.
 * Check (root, on SIGUSR1): the ring goes on counting (3 more laps within 20 s), no member
 * reported a failure, and each member held the token once a lap (its count is the laps,
 * or one more if the token is past it in the current lap).
 * A member whose parent is gone exits: killing the root ends the ring.
 */
#include "wl.h"
#include <linux/futex.h>
#include <sys/mman.h>

#define MAX 1024
#define OWN 8192

struct ring {
	volatile long laps;
	volatile int fail;
	char reason[256];
	struct {
		volatile int turn; /* 1: holds the token */
		volatile long held;
		volatile int pid;
	} m[MAX];
};

static struct ring *r;
static int n = 101, me, root;
static uint8_t own[OWN];

static void futex_wait(volatile int *w, int val)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(volatile int *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Waits for the token; 0 if it did not come (yet). */
static int take(void)
{
	if (!r->m[me].turn) {
		futex_wait(&r->m[me].turn, 0);
		if (!r->m[me].turn)
			return 0;
	}
	r->m[me].turn = 0;
	r->m[me].held++;
	if (wl_cmp(own, OWN, 500 + me) != (size_t)-1 && !r->fail) {
		snprintf(r->reason, sizeof(r->reason), "member %d (pid %d): own memory changed", me,
			 getpid());
		r->fail = 1;
	}
	return 1;
}

static void pass(void)
{
	int next = (me + 1) % n;
	if (next == 0)
		r->laps++;
	__sync_synchronize();
	r->m[next].turn = 1;
	futex_wake(&r->m[next].turn);
}

static int verify(void)
{
	WL_CHECK(!r->fail, "%s", r->reason);
	long laps = r->laps;
	for (int t = 0; t < 2000 && r->laps < laps + 3; t++) {
		if (take())
			pass();
		wl_sleep_ms(1);
	}
	WL_CHECK(r->laps >= laps + 3, "the ring stalled at %ld laps (was %ld)", r->laps, laps);
	WL_CHECK(!r->fail, "%s", r->reason);
	/* Counts are read while the token moves: each within one of the laps. */
	long l = r->laps;
	for (int i = 1; i < n; i++) {
		long h = r->m[i].held;
		WL_CHECK(h >= l - 2 && h <= l + 1, "member %d (pid %d) held the token %ld times in %ld laps",
			 i, r->m[i].pid, h, l);
	}
	WL_CHECK(wl_cmp(own, OWN, 500) == (size_t)-1, "root: own memory changed");
	return 1;
}

static void corrupt(void)
{
	own[10] ^= 1;
}

int main(int argc, char **argv)
{
	if (argc > 2)
		n = atoi(argv[2]);
	if (n < 2 || n > MAX)
		wl_die("N must be 2..%d", MAX);
	wl_init();
	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		wl_die("mmap");
	root = getpid();
	r->m[0].pid = root;
	for (int i = 1; i < n; i++) {
		int pid = fork();
		if (pid < 0)
			wl_die("fork");
		if (pid == 0) {
			me = i;
			signal(SIGUSR1, SIG_IGN);
			signal(SIGUSR2, SIG_IGN);
			signal(SIGTERM, SIG_DFL);
			r->m[me].pid = getpid();
			wl_fill(own, OWN, 500 + me);
			for (;;) {
				if (getppid() != root)
					_exit(0);
				if (take())
					pass();
			}
		}
	}
	wl_fill(own, OWN, 500);
	for (int t = 0; t < 5000; t++) {
		int k = 0;
		for (int i = 1; i < n; i++)
			k += r->m[i].pid != 0;
		if (k == n - 1)
			break;
		wl_sleep_ms(2);
	}
	r->m[0].turn = 1;
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		if (take()) {
			/* One lap every ~10 ms at most: the ring must not eat the machine. */
			wl_sleep_ms(10);
			pass();
		}
	}
}
