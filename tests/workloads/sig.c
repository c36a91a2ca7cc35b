/*
 * sig: signal state survives a checkpoint.
 * Usage: sig WORKDIR   (protocol in wl.h)
 *  - SIGWINCH: SA_SIGINFO|SA_RESTART handler, counts deliveries;
 *  - SIGRTMIN+3: SA_SIGINFO|SA_RESTART with SIGINT in sa_mask; checks si_value and
 *    that SIGINT is blocked while it runs;
 *  - SIGPROF: SA_SIGINFO|SA_ONSTACK on a sigaltstack; the handler checks it runs on
 *    that stack;
 *  - SIGPWR: SA_RESETHAND|SA_NODEFER (never delivered: only the flags are checked);
 *  - SIGALRM ignored (SIG_IGN), SIGINT default;
 *  - blocked mask: exactly SIGHUP and SIGRTMIN+5;
 *  - pending: a SIGHUP raised at the thread, and two SIGRTMIN+5 queued at the process
 *    with values 111 and 222, in this order. Each check takes them with sigtimedwait,
 *    checks them, and queues them again.
 * Every check also delivers SIGWINCH, SIGRTMIN+3 and SIGPROF again and checks the
 * counters (handlers must still run and return after a restore).
 */
#include "wl.h"

#define SIG_RT (SIGRTMIN + 3)
#define SIG_RT_BLOCKED (SIGRTMIN + 5)
#define ALTSTACK_SIZE (64 * 1024)

static volatile sig_atomic_t winch_count, rt_count, prof_count, prof_off_stack,
	rt_bad_value, rt_sigint_unblocked, winch_bad_info;
static int expect_count;
static char altstack[ALTSTACK_SIZE] __attribute__((aligned(64)));

static void on_winch(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig != SIGWINCH || si->si_signo != SIGWINCH || si->si_pid != getpid())
		winch_bad_info++;
	winch_count++;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	sigset_t cur;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	if (!sigismember(&cur, SIGINT))
		rt_sigint_unblocked++;
	if (sig != SIG_RT || si->si_code != SI_QUEUE || si->si_value.sival_int != 4242)
		rt_bad_value++;
	rt_count++;
}

static void on_prof(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	char here;
	stack_t cur;
	if ((uintptr_t)&here < (uintptr_t)altstack ||
	    (uintptr_t)&here >= (uintptr_t)altstack + ALTSTACK_SIZE)
		prof_off_stack++;
	else if (sigaltstack(NULL, &cur) || !(cur.ss_flags & SS_ONSTACK))
		prof_off_stack++;
	prof_count++;
}

static void install(int sig, void (*fn)(int, siginfo_t *, void *), int flags, int masksig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (masksig)
		sigaddset(&sa.sa_mask, masksig);
	if (sigaction(sig, &sa, NULL))
		wl_die("sigaction %d", sig);
}

static void on_pwr(int sig)
{
	(void)sig;
}

static int check_action(int sig, void *handler, int flags, int masksig)
{
	struct sigaction cur;
	WL_CHECK(sigaction(sig, NULL, &cur) == 0, "sigaction(%d) read: %s", sig, strerror(errno));
	WL_CHECK((void *)cur.sa_handler == handler, "signal %d: handler %p, expected %p", sig,
		 (void *)cur.sa_handler, handler);
	if (handler == (void *)SIG_IGN || handler == (void *)SIG_DFL)
		return 1;
	int mine = SA_SIGINFO | SA_RESTART | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
	WL_CHECK((cur.sa_flags & mine) == flags, "signal %d: flags %#x, expected %#x", sig,
		 cur.sa_flags & mine, flags);
	for (int s = 1; s < NSIG; s++) {
		if (s == 32 || s == 33)
			continue; /* glibc's own */
		int want = s == masksig;
		WL_CHECK(sigismember(&cur.sa_mask, s) == want, "signal %d: sa_mask has %d = %d", sig,
			 s, !want);
	}
	return 1;
}

static int take_pending(void)
{
	sigset_t pend, want;
	WL_CHECK(sigpending(&pend) == 0, "sigpending");
	WL_CHECK(sigismember(&pend, SIGHUP), "SIGHUP no longer pending");
	WL_CHECK(sigismember(&pend, SIG_RT_BLOCKED), "SIGRTMIN+5 no longer pending");
	for (int s = 1; s < NSIG; s++)
		if (s != SIGHUP && s != SIG_RT_BLOCKED && s != 32 && s != 33)
			WL_CHECK(!sigismember(&pend, s), "signal %d unexpectedly pending", s);

	/* Take them, check their siginfo, put them back. */
	struct timespec zero = { 0, 0 };
	siginfo_t si;
	sigemptyset(&want);
	sigaddset(&want, SIGHUP);
	WL_CHECK(sigtimedwait(&want, &si, &zero) == SIGHUP, "sigtimedwait(SIGHUP): %s",
		 strerror(errno));
	WL_CHECK(sigtimedwait(&want, &si, &zero) == -1 && errno == EAGAIN,
		 "SIGHUP was pending twice");
	sigemptyset(&want);
	sigaddset(&want, SIG_RT_BLOCKED);
	int vals[2] = { 111, 222 };
	for (int i = 0; i < 2; i++) {
		memset(&si, 0, sizeof(si));
		WL_CHECK(sigtimedwait(&want, &si, &zero) == SIG_RT_BLOCKED,
			 "queued SIGRTMIN+5 #%d missing: %s", i + 1, strerror(errno));
		WL_CHECK(si.si_code == SI_QUEUE && si.si_value.sival_int == vals[i] &&
				 si.si_pid == getpid(),
			 "queued SIGRTMIN+5 #%d: code %d value %d pid %d (want SI_QUEUE %d %d)",
			 i + 1, si.si_code, si.si_value.sival_int, (int)si.si_pid, vals[i],
			 (int)getpid());
	}
	WL_CHECK(sigtimedwait(&want, &si, &zero) == -1 && errno == EAGAIN,
		 "more than two SIGRTMIN+5 pending");
	raise(SIGHUP);
	for (int i = 0; i < 2; i++)
		sigqueue(getpid(), SIG_RT_BLOCKED, (union sigval){ .sival_int = vals[i] });
	return 1;
}

static int verify(void)
{
	/* mask */
	sigset_t cur;
	WL_CHECK(sigprocmask(SIG_SETMASK, NULL, &cur) == 0, "sigprocmask");
	for (int s = 1; s < NSIG; s++) {
		if (s == 32 || s == 33)
			continue;
		int want = s == SIGHUP || s == SIG_RT_BLOCKED;
		WL_CHECK(sigismember(&cur, s) == want, "signal %d %sblocked", s, want ? "not " : "");
	}

	/* dispositions */
	if (!check_action(SIGWINCH, (void *)on_winch, SA_SIGINFO | SA_RESTART, 0) ||
	    !check_action(SIG_RT, (void *)on_rt, SA_SIGINFO | SA_RESTART, SIGINT) ||
	    !check_action(SIGPROF, (void *)on_prof, SA_SIGINFO | SA_ONSTACK, 0) ||
	    !check_action(SIGPWR, (void *)on_pwr, SA_RESETHAND | SA_NODEFER, 0) ||
	    !check_action(SIGALRM, (void *)SIG_IGN, 0, 0) ||
	    !check_action(SIGINT, (void *)SIG_DFL, 0, 0) ||
	    !check_action(SIGUSR1, (void *)wl_on_signal, SA_RESTART, 0))
		return 0;

	/* sigaltstack */
	stack_t ss;
	WL_CHECK(sigaltstack(NULL, &ss) == 0, "sigaltstack read");
	WL_CHECK(ss.ss_sp == altstack && ss.ss_size == ALTSTACK_SIZE && ss.ss_flags == 0,
		 "sigaltstack is sp %p size %zu flags %d, expected %p %d 0", ss.ss_sp, ss.ss_size,
		 ss.ss_flags, (void *)altstack, ALTSTACK_SIZE);

	/* pending */
	if (!take_pending())
		return 0;

	/* counters from before, then deliver each once more */
	WL_CHECK(winch_count == expect_count && rt_count == expect_count &&
			 prof_count == expect_count,
		 "handler counters winch %d rt %d prof %d, expected %d", (int)winch_count,
		 (int)rt_count, (int)prof_count, expect_count);
	raise(SIGWINCH);
	sigqueue(getpid(), SIG_RT, (union sigval){ .sival_int = 4242 });
	raise(SIGPROF);
	expect_count++;
	WL_CHECK(winch_count == expect_count && rt_count == expect_count &&
			 prof_count == expect_count,
		 "after delivery: handler counters winch %d rt %d prof %d, expected %d",
		 (int)winch_count, (int)rt_count, (int)prof_count, expect_count);
	WL_CHECK(!winch_bad_info, "SIGWINCH handler saw a wrong siginfo");
	WL_CHECK(!rt_bad_value, "SIGRTMIN+3 handler saw a wrong si_code/si_value");
	WL_CHECK(!rt_sigint_unblocked, "SIGINT not blocked during the SIGRTMIN+3 handler");
	WL_CHECK(!prof_off_stack, "SIGPROF handler did not run on the alternate stack");
	return 1;
}

static void corrupt(void)
{
	signal(SIGALRM, SIG_DFL);
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();

	stack_t ss = { .ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL))
		wl_die("sigaltstack");
	install(SIGWINCH, on_winch, SA_SIGINFO | SA_RESTART, 0);
	install(SIG_RT, on_rt, SA_SIGINFO | SA_RESTART, SIGINT);
	install(SIGPROF, on_prof, SA_SIGINFO | SA_ONSTACK, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_pwr;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER;
	if (sigaction(SIGPWR, &sa, NULL))
		wl_die("sigaction SIGPWR");
	if (signal(SIGINT, SIG_DFL) == SIG_ERR) /* a shell may have left it ignored */
		wl_die("signal SIGINT");
	if (signal(SIGALRM, SIG_IGN) == SIG_ERR)
		wl_die("signal SIGALRM");

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIG_RT_BLOCKED);
	if (sigprocmask(SIG_BLOCK, &block, NULL))
		wl_die("sigprocmask");
	raise(SIGHUP);
	sigqueue(getpid(), SIG_RT_BLOCKED, (union sigval){ .sival_int = 111 });
	sigqueue(getpid(), SIG_RT_BLOCKED, (union sigval){ .sival_int = 222 });

	/* one delivery each before the checkpoint */
	raise(SIGWINCH);
	sigqueue(getpid(), SIG_RT, (union sigval){ .sival_int = 4242 });
	raise(SIGPROF);
	expect_count = 1;
	alarm(0);

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
