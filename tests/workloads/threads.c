/*
 * threads: a multi-threaded process whose every thread keeps its own state.
 * Usage: threads WORKDIR [NTHREADS [MIB [MODE]]]   (protocol in wl.h; NTHREADS >= 16,
 * default 64; MIB: that much memory filled with a pattern and checked too, default 0)
 * MODE "nobody": once the threads run, the process drops to uid/gid 65534 (glibc applies
 * it to every thread), and every thread checks its own ids by raw syscalls;
 * MODE "oddcreds": thread 5 alone changes its gid to 65534 (a raw setresgid); every
 * thread checks its own gid (65534 in thread 5, 0 elsewhere);
 * MODE "oddnnp": thread 5 alone sets no_new_privs, which a dump must refuse;
 * MODE "churn": thread 7 creates and joins short-lived threads as fast as it can (they
 * are created and exit while a dump seizes the process), counting them.
 * Threads besides main, each with its own TLS id, tid, name ("t<i>"), sigmask (SIGUSR1,
 * SIGUSR2, SIGTERM and a pattern of real-time signals from its index) and rseq
 * registration, all checked by the thread itself every time it wakes:
 *  - 0 cond: pthread_cond_wait, woken by main;
 *  - 1 sleep: nanosleep 20 ms loops;
 *  - 2 poll: poll(NULL, 0, 30 ms) loops;
 *  - 3 futex: a raw FUTEX_WAIT without timeout, woken by main;
 *  - 4 alt: a 64 KiB sigaltstack; main sends it SIGRTMIN+1 (SA_ONSTACK handler, which
 *    checks it runs on that thread's stack) at each check;
 *  - 5 pinned: pinned to CPU 0 by itself; checks its affinity (every other thread checks
 *    it may still run on all the CPUs the process had at start);
 *  - 6 join: asked to exit at each check while holding a robust mutex; main joins it
 *    with a timeout (only works if the kernel clears and wakes its tid word: the tid
 *    address) and must then get EOWNERDEAD on the mutex (the robust list), then starts
 *    a new one;
 *  - 7..: workers: add to a shared counter and their own under one mutex.
 * A check waits until every thread has made progress, and compares the shared counter
 * with the sum of the workers' counters; /proc/self/task must list every thread (by
 * tid, or by count where /proc is an outer pid namespace's).
 */
#include "wl.h"
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <dirent.h>
#include <grp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/rseq.h>

#define MAXT 1024
#define ALT_SIZE (64 * 1024)
#define SIG_ALT (SIGRTMIN + 1)

enum { T_COND, T_SLEEP, T_POLL, T_FUTEX, T_ALT, T_PIN, T_JOIN, T_WORK };

static int nthreads;
static long work_sleep_ms;
static __thread int tls_id = -1;
static pthread_t th[MAXT];
static volatile pid_t tids[MAXT];
static volatile uint64_t progress[MAXT];
static volatile int bad[MAXT];
static char bad_why[MAXT][96];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t shared_count, worker_count[MAXT];
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t cv_gen;
static volatile uint32_t futex_word;
static char altstack[ALT_SIZE] __attribute__((aligned(64)));
static volatile sig_atomic_t alt_count, alt_off_stack;
static pthread_mutex_t robust;
static volatile int join_exit;
static int joins;
static int nobody_mode, oddcreds_mode, oddnnp_mode, churn_mode;
static volatile uint64_t churned;
/* The CPUs the process may run on at start: every thread but the pinned one keeps them. */
static int all_cpus;
static uint8_t *big;
static size_t big_len;

static void mark_bad(int i, const char *why, long got, long want)
{
	if (!bad[i]) {
		snprintf(bad_why[i], sizeof(bad_why[i]), "%s: got %ld want %ld", why, got, want);
		bad[i] = 1;
	}
}

static void thread_mask(int i, sigset_t *s)
{
	sigemptyset(s);
	sigaddset(s, SIGUSR1);
	sigaddset(s, SIGUSR2);
	sigaddset(s, SIGTERM);
	for (int b = 0; b < 10; b++)
		if ((i >> b) & 1)
			sigaddset(s, SIGRTMIN + 4 + b);
}

static uint64_t mask_bits(const sigset_t *s)
{
	uint64_t m = 0;
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(s, sig) == 1)
			m |= 1ull << (sig - 1);
	return m;
}

/* Everything a thread checks about itself whenever it runs. */
static void self_check(int i)
{
	if (tls_id != i)
		mark_bad(i, "TLS id", tls_id, i);
	pid_t t = (pid_t)syscall(SYS_gettid);
	if (t != tids[i])
		mark_bad(i, "tid", t, tids[i]);
	sigset_t want, cur;
	thread_mask(i, &want);
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	if (mask_bits(&cur) != mask_bits(&want))
		mark_bad(i, "sigmask", (long)mask_bits(&cur), (long)mask_bits(&want));
	char name[16] = { 0 }, wname[16];
	prctl(PR_GET_NAME, name);
	snprintf(wname, sizeof(wname), "t%d", i);
	if (strcmp(name, wname))
		mark_bad(i, "thread name", atol(name + 1), i);
	/* Registered already (by glibc, or by the restore): the kernel says EBUSY. */
	struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	long r = syscall(SYS_rseq, rs, 32, 0, 0x53053053);
	if (!(r == -1 && errno == EBUSY))
		mark_bad(i, "rseq registration (errno)", r == -1 ? errno : 0, EBUSY);
	if (nobody_mode == 2) {
		long u = syscall(SYS_getuid), eu = syscall(SYS_geteuid), g = syscall(SYS_getgid);
		if (u != 65534 || eu != 65534 || g != 65534)
			mark_bad(i, "uid (per-thread credentials)", u, 65534);
	}
	if (oddcreds_mode) {
		long g = syscall(SYS_getgid), want = i == T_PIN ? 65534 : 0;
		if (g != want)
			mark_bad(i, "gid (per-thread credentials)", g, want);
	}
	if (i == T_ALT) {
		stack_t ss;
		sigaltstack(NULL, &ss);
		if (ss.ss_sp != altstack || ss.ss_size != ALT_SIZE || (ss.ss_flags & SS_DISABLE))
			mark_bad(i, "sigaltstack flags", ss.ss_flags, 0);
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	sched_getaffinity(0, sizeof(set), &set);
	if (i == T_PIN && (CPU_COUNT(&set) != 1 || !CPU_ISSET(0, &set)))
		mark_bad(i, "affinity: CPUs", CPU_COUNT(&set), 1);
	if (i != T_PIN && CPU_COUNT(&set) != all_cpus)
		mark_bad(i, "affinity: CPUs", CPU_COUNT(&set), all_cpus);
	progress[i]++;
}

static void on_alt(int sig)
{
	(void)sig;
	char here;
	if ((uintptr_t)&here < (uintptr_t)altstack ||
	    (uintptr_t)&here >= (uintptr_t)altstack + ALT_SIZE)
		alt_off_stack++;
	alt_count++;
}

static void *churn_one(void *arg)
{
	return arg;
}

static void *run(void *arg)
{
	int i = (int)(intptr_t)arg;
	tls_id = i;
	tids[i] = (pid_t)syscall(SYS_gettid);
	sigset_t m;
	thread_mask(i, &m);
	pthread_sigmask(SIG_SETMASK, &m, NULL);
	char name[16];
	snprintf(name, sizeof(name), "t%d", i);
	prctl(PR_SET_NAME, name);
	if (i == T_ALT) {
		stack_t ss = { .ss_sp = altstack, .ss_size = ALT_SIZE, .ss_flags = 0 };
		if (sigaltstack(&ss, NULL))
			mark_bad(i, "sigaltstack setup", errno, 0);
	}
	if (i == T_PIN && oddnnp_mode && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		mark_bad(i, "PR_SET_NO_NEW_PRIVS", errno, 0);
	if (i == T_PIN && oddcreds_mode &&
	    syscall(SYS_setresgid, 65534, 65534, 65534))
		mark_bad(i, "setresgid", errno, 0);
	if (i == T_PIN) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			mark_bad(i, "sched_setaffinity", errno, 0);
	}
	for (;;) {
		self_check(i);
		switch (i) {
		case T_COND: {
			pthread_mutex_lock(&mu);
			uint64_t g = cv_gen;
			while (cv_gen == g)
				pthread_cond_wait(&cv, &mu);
			pthread_mutex_unlock(&mu);
			break;
		}
		case T_SLEEP: {
			struct timespec ts = { 0, 20 * 1000000L };
			nanosleep(&ts, NULL);
			break;
		}
		case T_POLL:
			poll(NULL, 0, 30);
			break;
		case T_FUTEX: {
			uint32_t v = futex_word;
			syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
			break;
		}
		case T_JOIN:
			if (join_exit) {
				pthread_mutex_lock(&robust);
				return (void *)0x55;
			}
			wl_sleep_ms(10);
			break;
		case T_ALT:
		case T_PIN:
			wl_sleep_ms(15);
			break;
		default:
			if (churn_mode && i == T_WORK) {
				pthread_t c;
				if (pthread_create(&c, NULL, churn_one, NULL) ||
				    pthread_join(c, NULL))
					mark_bad(i, "short-lived thread", errno, 0);
				else
					churned++;
				break;
			}
			pthread_mutex_lock(&mu);
			shared_count++;
			worker_count[i]++;
			pthread_mutex_unlock(&mu);
			wl_sleep_ms(work_sleep_ms);
		}
	}
	return NULL;
}

static void start(int i)
{
	tids[i] = 0;
	int e = pthread_create(&th[i], NULL, run, (void *)(intptr_t)i);
	if (e) {
		errno = e;
		wl_die("pthread_create %d", i);
	}
	while (!tids[i] || !progress[i])
		wl_sleep_ms(1);
}

static void wake(void)
{
	pthread_mutex_lock(&mu);
	cv_gen++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	futex_word++;
	syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Whether /proc is our pid namespace's: in a namespace nested below the one /proc was
 * mounted for, /proc/self/task names the threads by their tids up there. */
static int proc_is_ours(void)
{
	char b[32];
	ssize_t n = readlink("/proc/self", b, sizeof(b) - 1);
	if (n <= 0)
		return 0;
	b[n] = 0;
	return atoi(b) == (int)getpid();
}

static int count_tasks(void)
{
	char path[64], buf[64];
	int n = 0;
	if (!proc_is_ours()) {
		/* The tids do not match: every thread listed, and no other (main is no
		 * thread of tids[]). */
		DIR *d = opendir("/proc/self/task");
		struct dirent *e;
		while (d && (e = readdir(d)))
			n += e->d_name[0] != '.';
		if (d)
			closedir(d);
		return n - 1;
	}
	for (int i = 0; i < nthreads; i++) {
		snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tids[i]);
		if (wl_read_file(path, buf, sizeof(buf)) > 0)
			n++;
	}
	return n;
}

static int verify(void)
{
	uint64_t before[MAXT];
	for (int i = 0; i < nthreads; i++)
		before[i] = progress[i];
	int alt0 = alt_count;
	pthread_kill(th[T_ALT], SIG_ALT);
	/* Every thread must run again (blocked ones are woken by main). */
	for (int tries = 0;; tries++) {
		wake();
		int lagging = -1;
		for (int i = 0; i < nthreads && lagging < 0; i++)
			if (progress[i] == before[i])
				lagging = i;
		if (lagging < 0 && alt_count > alt0)
			break;
		WL_CHECK(tries < 1000, "thread %d (tid %d) made no progress in 10 s (alt handler %d)",
			 lagging, (int)tids[lagging < 0 ? 0 : lagging], alt_count - alt0);
		wl_sleep_ms(10);
	}
	for (int i = 0; i < nthreads; i++)
		WL_CHECK(!bad[i], "thread %d (tid %d): %s", i, (int)tids[i], bad_why[i]);
	size_t diff = big_len ? wl_cmp(big, big_len, 77) : (size_t)-1;
	WL_CHECK(diff == (size_t)-1, "big memory differs at byte %zu", diff);
	WL_CHECK(!alt_off_stack, "SA_ONSTACK handler ran off the sigaltstack %d times",
		 alt_off_stack);
	WL_CHECK(count_tasks() == nthreads, "%d of %d threads in /proc/self/task", count_tasks(),
		 nthreads);
	pthread_mutex_lock(&mu);
	uint64_t sum = 0;
	for (int i = T_WORK; i < nthreads; i++)
		sum += worker_count[i];
	uint64_t shared = shared_count;
	pthread_mutex_unlock(&mu);
	WL_CHECK(!churn_mode || churned > 0, "no short-lived thread was made");
	WL_CHECK(sum == shared && (sum > 0 || churn_mode), "shared counter %llu, workers' sum %llu",
		 (unsigned long long)shared, (unsigned long long)sum);

	/* The joined thread: its exit must clear and wake its tid word, and release the
	 * robust mutex it holds through its robust list. */
	join_exit = 1;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	void *ret = NULL;
	int e = pthread_timedjoin_np(th[T_JOIN], &ret, &dl);
	WL_CHECK(e == 0, "join of thread %d (tid %d): error %d (tid address lost?)", T_JOIN,
		 (int)tids[T_JOIN], e);
	WL_CHECK(ret == (void *)0x55, "joined thread returned %p", ret);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	e = pthread_mutex_timedlock(&robust, &dl);
	WL_CHECK(e == EOWNERDEAD, "robust mutex of the exited thread: %d, want EOWNERDEAD (robust list lost?)", e);
	pthread_mutex_consistent(&robust);
	pthread_mutex_unlock(&robust);
	join_exit = 0;
	joins++;
	progress[T_JOIN] = 0;
	start(T_JOIN);
	return 1;
}

static void corrupt(void)
{
	pthread_mutex_lock(&mu);
	shared_count += 7;
	pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: threads WORKDIR [NTHREADS]");
	nthreads = argc > 2 ? atoi(argv[2]) : 64;
	if (nthreads < 16 || nthreads > MAXT)
		wl_die("NTHREADS %d", nthreads);
	work_sleep_ms = nthreads > 128 ? 200 : 5;
	big_len = (argc > 3 ? (size_t)atol(argv[3]) : 0) << 20;
	const char *mode = argc > 4 ? argv[4] : "";
	nobody_mode = !strcmp(mode, "nobody");
	oddcreds_mode = !strcmp(mode, "oddcreds");
	churn_mode = !strcmp(mode, "churn");
	oddnnp_mode = !strcmp(mode, "oddnnp");
	wl_init();
	cpu_set_t set;
	CPU_ZERO(&set);
	sched_getaffinity(0, sizeof(set), &set);
	all_cpus = CPU_COUNT(&set);
	if (big_len) {
		big = malloc(big_len);
		if (!big)
			wl_die("malloc %zu", big_len);
		wl_fill(big, big_len, 77);
	}
	tls_id = -2;
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&robust, &a);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alt;
	sa.sa_flags = SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIG_ALT, &sa, NULL))
		wl_die("sigaction");
	/* Thread stacks small enough for 1024 of them. */
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 256 * 1024);
	pthread_setattr_default_np(&at);
	for (int i = 0; i < nthreads; i++)
		start(i);
	if (nobody_mode) {
		if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534))
			wl_die("dropping to 65534");
		nobody_mode = 2;
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		if (tls_id != -2)
			wl_fail("main TLS id %d", tls_id);
		wake();
		wl_sleep_ms(10);
	}
}
