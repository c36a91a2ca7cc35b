/*
 * blocking: a task caught inside a blocking syscall carries on correctly.
 * Usage: blocking WORKDIR   (protocol in wl.h)
 * The main loop rotates through blocking calls of ~100 ms each:
 *   0 nanosleep (relative)           restart_block kind: a restore may turn it into one
 *   1 clock_nanosleep TIMER_ABSTIME      EINTR, the loop goes on with what is left
 *   2 poll(NULL, 0, 100)
 *   3 select(0, ..., 100 ms)          ERESTARTNOHAND kind: must simply run again
 *   4 pause(), woken by a one-shot ITIMER_REAL (SIGALRM handler), so the itimer must
 *     survive too
 * Checks: no call returns an errno other than EINTR (e.g. 516/514 leaking out); a call
 * that says it timed out really waited its full time (CLOCK_MONOTONIC); select() and
 * pause() never return EINTR without a handler having run; the itimer pause() waits
 * for is never found disarmed before it fired; the loop keeps going (a check is only
 * answered between two blocking calls).
 * EINTRs without a signal from the restart_block kind are counted, not failed (at
 * most one per restore is expected), and printed as "INFO spurious_eintr=N".
 */
#include "wl.h"
#include <poll.h>
#include <sys/select.h>
#include <sys/time.h>

#define PERIOD_MS 100

static volatile sig_atomic_t handled; /* every handler bumps it */
static volatile sig_atomic_t alarms;
static uint64_t wakeups, spurious;
static int phase;
static char fail_reason[256];

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
	handled++;
}

static void on_check(int sig)
{
	wl_on_signal(sig);
	handled++;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void note_fail(const char *what, int err)
{
	if (!fail_reason[0])
		snprintf(fail_reason, sizeof(fail_reason), "%s: errno %d (%s)", what, err,
			 strerror(err));
}

static void early(const char *what, int64_t waited)
{
	if (!fail_reason[0])
		snprintf(fail_reason, sizeof(fail_reason),
			 "%s said it timed out after only %lld us of %d ms", what,
			 (long long)(waited / 1000), PERIOD_MS);
}

/* One blocking call of ~PERIOD_MS, riding over interruptions. */
static void block_once(void)
{
	const int64_t period = PERIOD_MS * 1000000LL;
	int64_t start = now_ns(), deadline = start + period;
	for (;;) {
		int64_t left = deadline - now_ns();
		if (left < 0)
			left = 0;
		int before = handled;
		int r, err;
		const char *what;
		switch (phase) {
		case 0: {
			struct timespec ts = { left / 1000000000LL, left % 1000000000LL };
			what = "nanosleep";
			r = nanosleep(&ts, NULL);
			break;
		}
		case 1: {
			struct timespec ts = { deadline / 1000000000LL, deadline % 1000000000LL };
			what = "clock_nanosleep(TIMER_ABSTIME)";
			r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			if (r) {
				errno = r;
				r = -1;
			}
			break;
		}
		case 2:
			what = "poll";
			r = poll(NULL, 0, (int)((left + 999999) / 1000000));
			break;
		case 3: {
			struct timeval tv = { left / 1000000000LL, (left % 1000000000LL + 999) / 1000 };
			what = "select";
			r = select(0, NULL, NULL, NULL, &tv);
			break;
		}
		default: {
			what = "pause";
			int a = alarms;
			struct itimerval it = { { 0, 0 }, { left / 1000000000LL,
							  (left % 1000000000LL) / 1000 + 1 } };
			if (left > 0 && setitimer(ITIMER_REAL, &it, NULL))
				note_fail("setitimer", errno);
			while (alarms == a && left > 0) {
				int h = handled;
				r = pause();
				err = errno;
				if (r != -1 || err != EINTR) {
					note_fail("pause returned oddly", err);
					break;
				}
				if (handled == h) {
					note_fail("pause: EINTR without a signal handled", EINTR);
					break;
				}
				struct itimerval cur;
				if (!getitimer(ITIMER_REAL, &cur) && !cur.it_value.tv_sec &&
				    !cur.it_value.tv_usec && alarms == a) {
					note_fail("ITIMER_REAL disarmed before it fired", 0);
					break;
				}
			}
			wakeups++;
			return;
		}
		}
		err = errno;
		if (r == 0) {
			int64_t waited = now_ns() - start;
			if (waited < period - 1000000)
				early(what, waited);
			wakeups++;
			return;
		}
		if (r < 0 && err != EINTR) {
			note_fail(what, err);
			wakeups++;
			return;
		}
		if (r > 0) {
			note_fail("select/poll returned ready fds", 0);
			wakeups++;
			return;
		}
		if (handled == before) {
			if (phase == 3)
				note_fail("select: EINTR without a signal handled", EINTR);
			else
				spurious++;
		}
	}
}

static int verify(void)
{
	WL_CHECK(!fail_reason[0], "%s", fail_reason);
	WL_CHECK(wakeups > 0, "no blocking call completed");
	printf("INFO spurious_eintr=%llu wakeups=%llu\n", (unsigned long long)spurious,
	       (unsigned long long)wakeups);
	return 1;
}

static void corrupt(void)
{
	snprintf(fail_reason, sizeof(fail_reason), "corrupted on request");
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_check;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGUSR2, &sa, NULL) ||
	    sigaction(SIGTERM, &sa, NULL))
		wl_die("sigaction");
	sa.sa_handler = on_alarm;
	if (sigaction(SIGALRM, &sa, NULL))
		wl_die("sigaction SIGALRM");

	wl_ready();
	for (;;) {
		block_once();
		phase = (phase + 1) % 5;
		wl_poll(verify, corrupt);
	}
}
