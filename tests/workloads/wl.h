/*
 * Shared protocol of the self-checking workloads (header only).
 *
 * A workload is started as `NAME WORKDIR` with stdin=/dev/null and stdout and
 * stderr going to a regular file. It sets up its state, prints "READY <pid>",
 * then loops doing light work. Signals:
 *   SIGUSR1  the main loop verifies all state and prints "PASS <n>" (n counts the
 *            checks done so far, 1, 2, ...) or "FAIL <reason>".
 *   SIGUSR2  verify, print PASS/FAIL as above, then exit(0) on pass, exit(1) on fail.
 *   SIGTERM  corrupt one piece of state on purpose, then as SIGUSR2: the check must
 *            notice it, so the exit status is 1 (and 0 would mean a blind checker).
 * The handlers only set flags; all work and all printing happens in the main loop.
 */
#ifndef CKPT_WL_H
#define CKPT_WL_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

static volatile sig_atomic_t wl_check_req, wl_exit_req, wl_corrupt_req;
static int wl_checks;
/* Failure reason of the check in progress; the first one wins. */
static char wl_reason[512];

__attribute__((unused)) static void wl_on_signal(int sig)
{
	if (sig == SIGUSR1)
		wl_check_req = 1;
	else if (sig == SIGUSR2)
		wl_exit_req = 1;
	else if (sig == SIGTERM) {
		wl_corrupt_req = 1;
		wl_exit_req = 1;
	}
}

/* Record a failure (printf-style); returns 0 so checks can `return wl_fail(...)`. */
__attribute__((format(printf, 1, 2), unused)) static int wl_fail(const char *fmt, ...)
{
	if (wl_reason[0])
		return 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(wl_reason, sizeof(wl_reason), fmt, ap);
	va_end(ap);
	for (char *p = wl_reason; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return 0;
}

#define WL_CHECK(cond, ...)                    \
	do {                                   \
		if (!(cond)) {                 \
			wl_fail(__VA_ARGS__);  \
			return 0;              \
		}                              \
	} while (0)

/* Setup failed before READY: say why and stop. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void wl_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("SETUP-ERROR ");
	vprintf(fmt, ap);
	printf(" (errno %d %s)\n", errno, strerror(errno));
	va_end(ap);
	fflush(stdout);
	exit(2);
}

__attribute__((unused)) static void wl_init(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wl_on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGUSR2, &sa, NULL) ||
	    sigaction(SIGTERM, &sa, NULL))
		wl_die("sigaction");
	setvbuf(stdout, NULL, _IOLBF, 0);
}

__attribute__((unused)) static void wl_ready(void)
{
	printf("READY %d\n", (int)getpid());
	fflush(stdout);
}

/* Sleep `ms` milliseconds, riding over EINTR (a restored nanosleep may see one). */
__attribute__((unused)) static void wl_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/*
 * Called from the main loop: runs `verify` when asked to and reports. `corrupt`
 * damages state for the SIGTERM path (may be NULL: then the failure is faked).
 */
__attribute__((unused)) static void wl_poll(int (*verify)(void), void (*corrupt)(void))
{
	if (!wl_check_req && !wl_exit_req)
		return;
	int exiting = wl_exit_req, corrupting = wl_corrupt_req;
	wl_check_req = 0;
	if (corrupting) {
		if (corrupt)
			corrupt();
		else
			wl_fail("corrupted on request");
	}
	int ok = verify();
	if (ok && !wl_reason[0]) {
		wl_checks++;
		printf("PASS %d\n", wl_checks);
	} else {
		printf("FAIL %s\n", wl_reason[0] ? wl_reason : "(no reason)");
		ok = 0;
	}
	fflush(stdout);
	wl_reason[0] = 0;
	if (exiting)
		exit(ok ? 0 : 1);
}

/* A cheap deterministic byte pattern. */
__attribute__((unused)) static inline uint8_t wl_pat(uint64_t seed, uint64_t i)
{
	uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (i * 0xBF58476D1CE4E5B9ull);
	x ^= x >> 31;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 29;
	return (uint8_t)x;
}

__attribute__((unused)) static void wl_fill(void *p, size_t n, uint64_t seed)
{
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = wl_pat(seed, i);
}

/* Returns the index of the first mismatch, or (size_t)-1. */
__attribute__((unused)) static size_t wl_cmp(const void *p, size_t n, uint64_t seed)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != wl_pat(seed, i))
			return i;
	return (size_t)-1;
}

__attribute__((unused)) static uint64_t wl_fnv(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/*
 * Find the line of /proc/self/maps whose range starts at `addr`; copies it to
 * `line` (may be NULL). Returns 1 if found.
 */
__attribute__((unused)) static int wl_maps_line(const void *addr, char *line, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return 0;
	char buf[1024];
	int found = 0;
	while (fgets(buf, sizeof(buf), f)) {
		unsigned long lo, hi;
		if (sscanf(buf, "%lx-%lx", &lo, &hi) == 2 && lo <= (unsigned long)addr &&
		    (unsigned long)addr < hi) {
			if (line) {
				snprintf(line, len, "%s", buf);
				line[strcspn(line, "\n")] = 0;
			}
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Read the whole of a small file (e.g. in /proc) into buf; returns bytes or -1. */
__attribute__((unused)) static ssize_t wl_read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	return (ssize_t)got;
}

/* Whether the mapping starting at addr has VmFlags letter f in /proc/self/smaps: 1 yes,
 * 0 no, -1 no such mapping. */
/*
 * Binds fd (AF_INET or AF_INET6 loopback) to a free port below the kernel's ephemeral
 * range: between a dump and its restore the port is free, and an ephemeral one could
 * become some client's local port meanwhile (the restore's bind then fails, rightly).
 */
static inline void wl_bind_lo(int fd, int family)
{
	static unsigned next;
	if (!next)
		next = (unsigned)getpid() * 31;
	for (int i = 0; i < 12000; i++) {
		int port = 20000 + (int)((next += 7919) % 12000);
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		socklen_t len;
		if (family == AF_INET) {
			struct sockaddr_in *a = (void *)&ss;
			a->sin_family = AF_INET;
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			a->sin_port = htons(port);
			len = sizeof(*a);
		} else {
			struct sockaddr_in6 *a = (void *)&ss;
			a->sin6_family = AF_INET6;
			a->sin6_addr = in6addr_loopback;
			a->sin6_port = htons(port);
			len = sizeof(*a);
		}
		if (bind(fd, (void *)&ss, len) == 0)
			return;
		if (errno != EADDRINUSE)
			break;
	}
	wl_die("bind fd %d to a loopback port", fd);
}

static inline int wl_vm_flag(const void *addr, const char *f)
{
	FILE *s = fopen("/proc/self/smaps", "r");
	if (!s)
		return -1;
	char line[1024];
	int in = 0, found = -1;
	while (fgets(line, sizeof(line), s)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = lo == (unsigned long)addr;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			char pat[8];
			snprintf(pat, sizeof(pat), " %s", f);
			char *p = line + 8;
			found = 0;
			while ((p = strstr(p, pat))) {
				if (p[3] == ' ' || p[3] == '\n' || p[3] == 0) {
					found = 1;
					break;
				}
				p++;
			}
			break;
		}
	}
	fclose(s);
	return found;
}

/* The value of a /proc/self/status field (after the colon and blanks), or "". */
static inline void wl_status_field(const char *name, char *out, size_t len)
{
	char buf[8192];
	out[0] = 0;
	ssize_t n = wl_read_file("/proc/self/status", buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = 0;
	size_t nl = strlen(name);
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, name, nl) == 0 && l[nl] == ':') {
			char *v = l + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t k = strcspn(v, "\n");
			if (k >= len)
				k = len - 1;
			memcpy(out, v, k);
			out[k] = 0;
			return;
		}
	}
}

/* A /proc/self/status field as a number in `base` (a "kB" after it is ignored); -1 if
 * there is no such field. */
static inline long wl_status_long(const char *name, int base)
{
	char v[64];
	wl_status_field(name, v, sizeof(v));
	return v[0] ? strtol(v, NULL, base) : -1;
}

/* capget(2) of this thread, version 3 (64-bit sets split over d[0] and d[1]). */
static inline int wl_get_caps(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	memset(d, 0, 2 * sizeof(*d));
	return (int)syscall(SYS_capget, &h, d);
}

/* capset(2) of this thread, version 3, to the 64-bit sets given. */
static inline int wl_set_caps(uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	for (int i = 0; i < 2; i++) {
		d[i].effective = (uint32_t)(eff >> (32 * i));
		d[i].permitted = (uint32_t)(prm >> (32 * i));
		d[i].inheritable = (uint32_t)(inh >> (32 * i));
	}
	return (int)syscall(SYS_capset, &h, d);
}

/*
 * The members of a multi-process workload answer the root through MAP_SHARED memory:
 * each has a slot; the root raises a ping, every member sees it, checks itself and
 * answers in its slot, and bumps its counter all the while (so the root sees it runs).
 */
struct wl_slot {
	volatile int pid, ppid;
	volatile long counter;
	volatile int answered; /* the ping it answered; negative: failed */
	char reason[200];
};

/* Member side, called in its loop: bump the counter; a new ping is checked and answered. */
__attribute__((unused)) static void wl_slot_serve(struct wl_slot *s, volatile int *ping,
						  int *last, int (*check)(void))
{
	s->counter++;
	int p = *ping;
	if (p == *last)
		return;
	*last = p;
	wl_reason[0] = 0;
	int ok = check() && !wl_reason[0];
	snprintf(s->reason, sizeof(s->reason), "%.*s", (int)sizeof(s->reason) - 1, wl_reason);
	__sync_synchronize();
	s->answered = ok ? p : -p;
}

/* Member side: serves pings every `ms` ms until its parent is no longer `parent`. */
__attribute__((unused, noreturn)) static void wl_slot_loop(struct wl_slot *s, volatile int *ping,
							   int parent, int (*check)(void), long ms)
{
	int last = *ping;
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		wl_slot_serve(s, ping, &last, check);
		wl_sleep_ms(ms);
	}
}

/* Root side: waits (up to ~20 s) until every member has filled in its slot and runs. */
__attribute__((unused)) static int wl_slots_started(struct wl_slot *s, int n)
{
	for (int t = 0; t < 4000; t++) {
		int k = 0;
		for (int i = 0; i < n; i++)
			k += s[i].pid != 0 && s[i].counter > 0;
		if (k == n)
			return 1;
		wl_sleep_ms(5);
	}
	return 0;
}

/* Root side: the next ping; every member must answer it well and have run meanwhile. */
__attribute__((unused)) static int wl_slots_ping(struct wl_slot *s, int n, volatile int *ping,
						 const char *const *names)
{
	long before[n];
	for (int i = 0; i < n; i++)
		before[i] = s[i].counter;
	__sync_synchronize();
	int p = *ping + 1;
	*ping = p;
	for (int t = 0; t < 2000; t++) {
		int done = 0;
		for (int i = 0; i < n; i++)
			done += s[i].answered == p || s[i].answered == -p;
		if (done == n)
			break;
		wl_sleep_ms(5);
	}
	for (int i = 0; i < n; i++) {
		int a = s[i].answered;
		WL_CHECK(a == p || a == -p,
			 "%s (pid %d) did not answer ping %d through the shared region (last %d)",
			 names[i], s[i].pid, p, a);
		WL_CHECK(a == p, "%s", s[i].reason);
		WL_CHECK(s[i].counter > before[i], "%s: its counter did not move (%ld)", names[i],
			 before[i]);
	}
	return 1;
}

/* The loop of a forked helper child that answers its parent's questions: one byte read
 * from `ask` per question, answered by `answer` (which returns nonzero when it could not
 * answer: the child then exits 3). The parent closing its end of `ask` ends the child. */
static inline void wl_serve(int ask, int (*answer)(char))
{
	for (;;) {
		char b;
		ssize_t n = read(ask, &b, 1);
		if (n == 0)
			_exit(0);
		if (n == 1 && answer(b))
			_exit(3);
	}
}

/* Sends one byte, `tag`, carrying `fd` (SCM_RIGHTS) on `sock`; dies if it cannot. */
static inline void wl_send_fd(int sock, char tag, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { &tag, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &m, 0) != 1)
		wl_die("sendmsg %c", tag);
}

/* Receives one message of one byte from `sock` without waiting: its tag into `tag`, and
 * returns the fd it carried (-1 if none, or nothing came). */
static inline int wl_recv_fd(int sock, char *tag)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { tag, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	if (recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
		return -1;
	int fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

#endif
