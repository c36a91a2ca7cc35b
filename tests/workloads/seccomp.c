/*
 * seccomp: filters and strict mode that must still act after a restore.
 * Usage: seccomp WORKDIR [MODE]   (protocol in wl.h; the root answers the signals)
 *
 * MODE "filters" (default): no_new_privs, then filter F1 (getppid -> errno 42) in the main
 * thread; a child process C is forked, which adds F2 (getpgrp -> errno 43) to itself
 * alone; two threads are created, then the main thread installs F3 (getpriority -> errno
 * 44) with SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG, which puts it on every
 * thread. Check: in every thread (each answers through the shared mailbox, as tree.c),
 * and in C, the filtered calls fail with their errno, the others work, and
 * /proc/thread-self/status shows filter mode and the expected number of filters. Then
 * the main thread installs one more filter (allow all) with TSYNC, which only works if
 * every thread's chain is still one the main thread's descends from (they share it).
 * MODE "strict": a thread enters strict mode (SECCOMP_SET_MODE_STRICT) and then only
 * reads requests from a FIFO and writes its counter back to another; the check asks it
 * and reads /proc/self/task/TID/status: mode 1 there, 0 in the main thread.
 * MODE "notify": a filter returning SECCOMP_RET_USER_NOTIF (its listener closed), which
 * a dump must refuse by name.
 */
#include "wl.h"
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

enum { T1, T2, CHILD, MEMBERS };
static const char *names[MEMBERS] = { "thread 1", "thread 2", "child" };

struct mailbox {
	volatile int ping;
	volatile int filters; /* filters every thread of the root has */
	struct wl_slot s[MEMBERS];
};

static struct mailbox *mb;
static __thread int me = -1;

static int install(int nr, unsigned ret, unsigned flags)
{
	struct sock_filter prog[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, ret),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog fp = { .len = nr < 0 ? 1 : 4, .filter = nr < 0 ? prog + 3 : prog };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fp);
}

/* A raw call that must fail with `err` (0: must work). */
static int expect(const char *what, long r, int err)
{
	if (err)
		WL_CHECK(r == -1 && errno == err, "%s: %s returned %ld (errno %d), want errno %d",
			 me < 0 ? "main" : names[me], what, r, r < 0 ? errno : 0, err);
	else
		WL_CHECK(r >= 0, "%s: %s failed (errno %d) where no filter applies",
			 me < 0 ? "main" : names[me], what, errno);
	return 1;
}

static int status_value(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[256];
	int v = -1;
	size_t n = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = atoi(line + n + 1);
	fclose(f);
	return v;
}

/* The calls each filter acts on, and this thread's mode and filter count. */
static int own_check(int in_child, int filters)
{
	errno = 0;
	if (!expect("getppid", syscall(SYS_getppid), 42) ||
	    !expect("getpgrp", syscall(SYS_getpgrp), in_child ? 43 : 0) ||
	    !expect("getpriority", syscall(SYS_getpriority, PRIO_PROCESS, 0), in_child ? 0 : 44))
		return 0;
	int mode = status_value("/proc/thread-self/status", "Seccomp");
	int n = status_value("/proc/thread-self/status", "Seccomp_filters");
	WL_CHECK(mode == 2 && n == filters, "%s: seccomp mode %d with %d filters, want 2 with %d",
		 me < 0 ? "main" : names[me], mode, n, filters);
	return 1;
}

static int member_check(void)
{
	return own_check(me == CHILD, me == CHILD ? 2 : mb->filters);
}

static void *thread_main(void *arg)
{
	me = (int)(long)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	int last = mb->ping;
	for (;;) {
		wl_slot_serve(&mb->s[me], &mb->ping, &last, member_check);
		wl_sleep_ms(3);
	}
	return NULL;
}

static int root_pid;

static void child(void)
{
	me = CHILD;
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	if (install(SYS_getpgrp, SECCOMP_RET_ERRNO | 43, 0))
		wl_die("child filter");
	int last = mb->ping;
	mb->s[CHILD].pid = getpid();
	for (;;) {
		/* getppid is filtered: the parent's end shows in the mailbox instead. */
		if (kill(root_pid, 0))
			_exit(0);
		wl_slot_serve(&mb->s[CHILD], &mb->ping, &last, member_check);
		wl_sleep_ms(3);
	}
}

static int verify_filters(void)
{
	if (!own_check(0, mb->filters))
		return 0;
	if (!wl_slots_ping(mb->s, MEMBERS, &mb->ping, names))
		return 0;
	long r = install(-1, 0, SECCOMP_FILTER_FLAG_TSYNC);
	WL_CHECK(r == 0, "TSYNC of one more filter returned %ld (errno %d): a thread's chain is "
		 "no longer the main thread's", r, r < 0 ? errno : 0);
	mb->filters++;
	return own_check(0, mb->filters);
}

static void setup_filters(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		wl_die("no_new_privs");
	if (install(SYS_getppid, SECCOMP_RET_ERRNO | 42, 0))
		wl_die("filter F1");
	root_pid = getpid();
	int c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0)
		child();
	mb->filters = 2;
	pthread_t t;
	for (long i = T1; i <= T2; i++) {
		if (pthread_create(&t, NULL, thread_main, (void *)i))
			wl_die("pthread_create");
		mb->s[i].pid = getpid();
	}
	if (install(SYS_getpriority, SECCOMP_RET_ERRNO | 44,
		    SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG))
		wl_die("filter F3 with TSYNC");
	if (!wl_slots_started(mb->s, MEMBERS))
		wl_die("members did not start");
}

/* Strict mode: a thread that only reads requests and writes answers. */
static int req_fd, ans_fd, strict_tid;
static volatile long strict_count;

static void *strict_main(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	strict_tid = syscall(SYS_gettid);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL))
		wl_die("strict mode");
	for (;;) {
		char c;
		if (syscall(SYS_read, req_fd, &c, 1) == 1) {
			long v = ++strict_count;
			syscall(SYS_write, ans_fd, &v, sizeof(v));
		}
	}
	return NULL;
}

static int verify_strict(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", strict_tid);
	int mode = status_value(path, "Seccomp");
	WL_CHECK(mode == 1, "strict thread %d: seccomp mode %d, want 1", strict_tid, mode);
	mode = status_value("/proc/self/status", "Seccomp");
	WL_CHECK(mode == 0, "main thread: seccomp mode %d, want 0", mode);
	long before = strict_count, got = 0;
	WL_CHECK(write(req_fd, "x", 1) == 1, "request to the strict thread: %s", strerror(errno));
	WL_CHECK(read(ans_fd, &got, sizeof(got)) == sizeof(got), "answer of the strict thread: %s",
		 strerror(errno));
	WL_CHECK(got == before + 1, "strict thread answered %ld, want %ld", got, before + 1);
	return 1;
}

static void setup_strict(const char *dir)
{
	char req[512], ans[512];
	snprintf(req, sizeof(req), "%s/strict-req", dir);
	snprintf(ans, sizeof(ans), "%s/strict-ans", dir);
	unlink(req);
	unlink(ans);
	if (mkfifo(req, 0600) || mkfifo(ans, 0600))
		wl_die("mkfifo");
	req_fd = open(req, O_RDWR);
	ans_fd = open(ans, O_RDWR);
	if (req_fd < 0 || ans_fd < 0)
		wl_die("open fifos");
	pthread_t t;
	if (pthread_create(&t, NULL, strict_main, NULL))
		wl_die("pthread_create");
	while (!strict_tid)
		wl_sleep_ms(1);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", strict_tid);
	while (status_value(path, "Seccomp") != 1)
		wl_sleep_ms(1);
}

static void setup_notify(void)
{
	struct sock_filter prog[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog fp = { .len = 4, .filter = prog };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		wl_die("no_new_privs");
	int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
			 &fp);
	if (fd < 0)
		wl_die("filter with a listener");
	close(fd);
}

static int verify_nothing(void)
{
	return 1;
}

int main(int argc, char **argv)
{
	wl_init();
	const char *mode = argc > 2 ? argv[2] : "filters";
	mb = mmap(NULL, sizeof(*mb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mb == MAP_FAILED)
		wl_die("mmap");
	int (*verify)(void) = verify_filters;
	if (!strcmp(mode, "strict")) {
		setup_strict(argv[1]);
		verify = verify_strict;
	} else if (!strcmp(mode, "notify")) {
		setup_notify();
		verify = verify_nothing;
	} else {
		setup_filters();
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(10);
	}
}
