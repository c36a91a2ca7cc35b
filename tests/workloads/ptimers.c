/*
 * ptimers: POSIX timers (timer_create) survive a checkpoint with their ids, clocks,
 * notifications and remaining times.
 * Usage: ptimers WORKDIR [foreign]   (protocol in wl.h)
 * Three timers are created and deleted first, so the ids kept are not 0, 1, 2:
 *  - P: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+1 with sival_ptr 0x1234, every 30 ms;
 *  - T: CLOCK_MONOTONIC, SIGEV_SIGNAL|SIGEV_THREAD_ID to the main thread, SIGRTMIN+2
 *    with sival_int 77, every 40 ms;
 *  - L: CLOCK_REALTIME, SIGEV_NONE, armed for 1000 s, interval 5 s;
 *  - C: CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, created but not armed.
 * Checks: every id still answers timer_gettime (the deleted ones EINVAL); L has 900 to
 * 1000 s left and its 5 s interval, C is disarmed; P and T keep firing (their handler
 * counts grow within 2 s) with their si_value and si_timerid.
 * With `foreign`, one more timer counts the CPU time of the parent process (a clock ckpt
 * refuses).
 * Corruption (SIGTERM) deletes L.
 */
#include "wl.h"
#include <signal.h>

static timer_t P, T, L, C, dead[3];
static volatile sig_atomic_t p_count, t_count, bad_info;

static void on_timer(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig == SIGRTMIN + 1) {
		if (si->si_value.sival_ptr != (void *)0x1234 || si->si_timerid != (int)(long)P)
			bad_info = sig;
		p_count++;
	} else {
		if (si->si_value.sival_int != 77 || si->si_timerid != (int)(long)T)
			bad_info = sig;
		t_count++;
	}
}

static void mk(timer_t *t, clockid_t clock, int notify, int sig, union sigval v)
{
	struct sigevent se;
	memset(&se, 0, sizeof(se));
	se.sigev_notify = notify;
	se.sigev_signo = sig;
	se.sigev_value = v;
	if (notify & SIGEV_THREAD_ID)
		se._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(clock, &se, t))
		wl_die("timer_create(clock %d)", (int)clock);
}

static void arm(timer_t t, long val_ms, long int_ms)
{
	struct itimerspec its = { { int_ms / 1000, (int_ms % 1000) * 1000000L },
				  { val_ms / 1000, (val_ms % 1000) * 1000000L } };
	if (timer_settime(t, 0, &its, NULL))
		wl_die("timer_settime");
}

static int verify(void)
{
	struct itimerspec its;
	for (int i = 0; i < 3; i++)
		WL_CHECK(timer_gettime(dead[i], &its) == -1 && errno == EINVAL,
			 "deleted timer %ld is back", (long)dead[i]);
	timer_t all[] = { P, T, L, C };
	for (int i = 0; i < 4; i++)
		WL_CHECK(timer_gettime(all[i], &its) == 0, "timer %ld: %s", (long)all[i],
			 strerror(errno));
	WL_CHECK(timer_gettime(L, &its) == 0 && its.it_value.tv_sec >= 900 &&
			 its.it_value.tv_sec < 1000 && its.it_interval.tv_sec == 5,
		 "L: %ld s left, interval %ld s", (long)its.it_value.tv_sec,
		 (long)its.it_interval.tv_sec);
	WL_CHECK(timer_gettime(C, &its) == 0 && its.it_value.tv_sec == 0 &&
			 its.it_value.tv_nsec == 0,
		 "C is armed");
	WL_CHECK(timer_gettime(P, &its) == 0 && its.it_interval.tv_nsec == 30000000L,
		 "P: interval %ld ns", its.it_interval.tv_nsec);
	int p0 = p_count, t0 = t_count;
	for (int i = 0; i < 200 && (p_count == p0 || t_count == t0); i++)
		wl_sleep_ms(10);
	WL_CHECK(p_count > p0, "P stopped firing (%d)", p0);
	WL_CHECK(t_count > t0, "T stopped firing (%d)", t0);
	WL_CHECK(!bad_info, "signal %d came with the wrong si_value or si_timerid", bad_info);
	return 1;
}

static void corrupt(void)
{
	timer_delete(L);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: ptimers WORKDIR [foreign]");
	wl_init();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_timer;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMIN + 1, &sa, NULL) || sigaction(SIGRTMIN + 2, &sa, NULL))
		wl_die("sigaction");
	union sigval none = { 0 };
	for (int i = 0; i < 3; i++)
		mk(&dead[i], CLOCK_MONOTONIC, SIGEV_NONE, 0, none);
	mk(&P, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 1, (union sigval){ .sival_ptr = (void *)0x1234 });
	mk(&T, CLOCK_MONOTONIC, SIGEV_SIGNAL | SIGEV_THREAD_ID, SIGRTMIN + 2,
	   (union sigval){ .sival_int = 77 });
	mk(&L, CLOCK_REALTIME, SIGEV_NONE, 0, none);
	mk(&C, CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 0, none);
	for (int i = 0; i < 3; i++)
		timer_delete(dead[i]);
	arm(P, 30, 30);
	arm(T, 40, 40);
	arm(L, 1000 * 1000, 5000);
	if (argc > 2 && !strcmp(argv[2], "foreign")) {
		clockid_t pc;
		timer_t f;
		if (clock_getcpuclockid(getppid(), &pc))
			wl_die("clock_getcpuclockid(parent)");
		mk(&f, pc, SIGEV_NONE, 0, none);
	}
	printf("INFO timer ids P %ld T %ld L %ld C %ld\n", (long)P, (long)T, (long)L, (long)C);
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
