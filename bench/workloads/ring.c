/*
 * ring: the process-tree workload of ckpt-bench.
 * Usage: ring NPROCS [HEAP_MIB]
 *
 * The root (with HEAP_MIB, first filling that much private anonymous memory with a
 * pattern: its children inherit it copy-on-write and only read it) forks NPROCS-1
 * children; the NPROCS members pass a token round a ring through a shared anonymous
 * region, one futex each, and count the laps. Each member keeps 8 KiB of its own pattern
 * and, holding the token, checks it and one word of every 64th page of the heap; a
 * member whose parent is gone exits. Prints "READY <pid> <nprocs> <child pid>..." once
 * every member runs, then waits.
 *   SIGUSR1  the ring must make 3 more laps within 20 s with no member reporting a
 *            failure, and the root checks its whole heap: "PASS <nprocs>" or "FAIL ...".
 * stdout is written with write(2) (no stdio buffer to lose across a checkpoint).
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX 1024
#define OWN 8192
#define PG 4096UL

struct ring {
	volatile long laps;
	volatile int fail;
	char reason[200];
	struct {
		volatile int turn;
		volatile int pid;
	} m[MAX];
};

static struct ring *r;
static int n, me, root;
static uint8_t own[OWN];
static uint64_t *heap;
static size_t heap_words;
static volatile sig_atomic_t check_req;

static void say(const char *fmt, ...)
{
	char b[8192];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (len > (int)sizeof(b))
		len = sizeof(b);
	if (write(1, b, len) < 0)
		exit(3);
}

static uint64_t word(size_t i)
{
	return (i + 1) * 0x9E3779B97F4A7C15ULL ^ 0xC0FFEE;
}

static void fill_own(void)
{
	for (int i = 0; i < OWN; i++)
		own[i] = (uint8_t)(i * 7 + me * 13 + 1);
}

static int own_ok(void)
{
	for (int i = 0; i < OWN; i++)
		if (own[i] != (uint8_t)(i * 7 + me * 13 + 1))
			return 0;
	return 1;
}

static void note(const char *what)
{
	if (!r->fail) {
		snprintf(r->reason, sizeof(r->reason), "member %d (pid %d): %s", me, getpid(), what);
		r->fail = 1;
	}
}

static void member_turn(void)
{
	if (!r->m[me].turn) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		syscall(SYS_futex, &r->m[me].turn, FUTEX_WAIT, 0, &ts, NULL, 0);
		if (!r->m[me].turn)
			return;
	}
	r->m[me].turn = 0;
	if (!own_ok())
		note("own memory changed");
	for (size_t i = me % 64 * (PG / 8); i < heap_words; i += 64 * (PG / 8))
		if (heap[i] != word(i)) {
			note("inherited heap changed");
			break;
		}
	int next = (me + 1) % n;
	if (next == 0)
		r->laps++;
	__sync_synchronize();
	r->m[next].turn = 1;
	syscall(SYS_futex, &r->m[next].turn, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void on_usr1(int sig)
{
	(void)sig;
	check_req = 1;
}

static void check(void)
{
	long laps = r->laps;
	for (int t = 0; t < 20000 && r->laps < laps + 3 && !r->fail; t++) {
		member_turn();
		if (!r->m[0].turn)
			usleep(1000);
	}
	if (r->fail) {
		say("FAIL %s\n", r->reason);
		return;
	}
	if (r->laps < laps + 3) {
		say("FAIL the ring made %ld laps in 20 s\n", r->laps - laps);
		return;
	}
	for (size_t i = 0; i < heap_words; i++)
		if (heap[i] != word(i)) {
			say("FAIL root: heap word %zu changed\n", i);
			return;
		}
	say("PASS %d\n", n);
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atoi(argv[1]) : 100;
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 0;
	if (n < 2 || n > MAX) {
		say("FAIL NPROCS %d\n", n);
		return 2;
	}
	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED) {
		say("FAIL mmap\n");
		return 2;
	}
	if (mib) {
		heap_words = (mib << 20) / 8;
		heap = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
		if (heap == MAP_FAILED) {
			say("FAIL mmap heap\n");
			return 2;
		}
		madvise(heap, mib << 20, MADV_NOHUGEPAGE);
		for (size_t i = 0; i < heap_words; i++)
			heap[i] = word(i);
	}
	root = getpid();
	signal(SIGUSR1, on_usr1);
	r->m[0].pid = root;
	for (int k = 1; k < n; k++) {
		int pid = fork();
		if (pid < 0) {
			say("FAIL fork\n");
			return 2;
		}
		if (pid == 0) {
			me = k;
			signal(SIGUSR1, SIG_IGN);
			fill_own();
			r->m[me].pid = getpid();
			while (getppid() == root)
				member_turn();
			_exit(0);
		}
	}
	fill_own();
	for (int k = 1; k < n; k++)
		while (!r->m[k].pid)
			usleep(1000);
	char pids[MAX * 8] = "";
	size_t at = 0;
	for (int k = 1; k < n; k++)
		at += snprintf(pids + at, sizeof(pids) - at, " %d", r->m[k].pid);
	r->m[0].turn = 1;
	say("READY %d %d%s\n", root, n, pids);
	for (;;) {
		if (check_req) {
			check_req = 0;
			check();
		}
		member_turn();
	}
}
