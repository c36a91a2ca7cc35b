/*
 * forky: forks and reaps children as fast as it can, so a dump catches children being
 * born, running, exiting and not yet reaped.
 * Usage: forky WORKDIR   (protocol in wl.h)
 *
 * Up to 8 children at a time; child k sleeps 0-2 ms, then exits with k % 100 (every 7th
 * kills itself with SIGUSR2). The parent keeps the list of its children and what each
 * must report, and reaps with waitpid(-1).
 * Check: the forks go on (200 more within 20 s), and every reaped child was one of ours
 * with exactly its status, no wait failed (ECHILD with children outstanding means one was
 * lost), no unknown child turned up.
 */
#include "wl.h"
#include <sys/wait.h>

#define SLOTS 8

static int kids[SLOTS], want[SLOTS];
static long forks, reaped;
static char fail[256];

static void spawn(int slot)
{
	long k = forks++;
	int st = k % 7 == 6 ? SIGUSR2 : (int)(k % 100) << 8;
	int pid = fork();
	if (pid < 0) {
		snprintf(fail, sizeof(fail), "fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		wl_sleep_ms(k % 3);
		if (st == SIGUSR2) {
			signal(SIGUSR2, SIG_DFL);
			raise(SIGUSR2);
		}
		_exit(k % 100);
	}
	kids[slot] = pid;
	want[slot] = st;
}

static void reap_some(int block)
{
	int st;
	int pid = waitpid(-1, &st, block ? 0 : WNOHANG);
	if (pid == 0)
		return;
	if (pid < 0) {
		if (errno != EINTR && !fail[0])
			snprintf(fail, sizeof(fail), "waitpid: %s with children outstanding",
				 strerror(errno));
		return;
	}
	for (int i = 0; i < SLOTS; i++) {
		if (kids[i] == pid) {
			if (st != want[i] && !fail[0])
				snprintf(fail, sizeof(fail), "child %d: status %#x, want %#x", pid, st,
					 want[i]);
			kids[i] = 0;
			reaped++;
			return;
		}
	}
	if (!fail[0])
		snprintf(fail, sizeof(fail), "waitpid returned %d, not a child of ours", pid);
}

static void step(void)
{
	for (int i = 0; i < SLOTS; i++)
		if (!kids[i])
			spawn(i);
	reap_some(0);
	reap_some(1);
}

static int verify(void)
{
	WL_CHECK(!fail[0], "%s", fail);
	long f = forks;
	for (int t = 0; t < 100000 && forks < f + 200 && !fail[0]; t++)
		step();
	WL_CHECK(!fail[0], "%s", fail);
	WL_CHECK(forks >= f + 200, "only %ld forks", forks - f);
	return 1;
}

static void corrupt(void)
{
	snprintf(fail, sizeof(fail), "corrupted on request");
}

int main(void)
{
	wl_init();
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		step();
	}
}
