/*
 * memfill: the memory workload of ckpt-bench.
 * Usage: memfill MIB SEED [TICKFILE]
 *
 * Maps MIB MiB of private anonymous memory (no THP advice: the system default, which is
 * `madvise` on the reference machine, gives 4 KiB pages) and writes every 8-byte word of
 * every page with a value derived from the seed and the word's index, so every page holds
 * distinct data and no page is zero. Then prints "READY <pid> <addr> <bytes>" and waits.
 *   SIGUSR1  verify every word of every page; print "PASS <pages>" or
 *            "FAIL page <n> word <i> ...", then wait again (to be killed).
 *   SIGUSR2  (with TICKFILE) start ticking, print "TICKING": from then on the process
 *            wakes every 200 us and stores CLOCK_MONOTONIC (ns) in the first u64 of
 *            TICKFILE (mapped shared) if that is 0, and always in the second. The bench
 *            zeroes the first before a restore: the process itself then records the
 *            moment it runs again (a restore resumes it in nanosleep, which returns at
 *            once with EINTR).
 * stdout is written with write(2) (no stdio buffer to lose across a checkpoint).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define WORDS_PER_PAGE (PG / 8)

static volatile sig_atomic_t check_req, tick_req;

static void on_usr1(int sig)
{
	(void)sig;
	check_req = 1;
}

static void on_usr2(int sig)
{
	(void)sig;
	tick_req = 1;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static inline uint64_t word(uint64_t seed, uint64_t idx)
{
	/* Distinct for every index (odd multiplier: a bijection mod 2^64), never the same
	 * page twice, and never zero-filled pages. */
	return (idx + 1) * 0x9E3779B97F4A7C15ULL ^ seed;
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(1, p, n);
		if (w <= 0)
			return;
		p += w;
		n -= w;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		say("usage: memfill MIB SEED [TICKFILE]\n");
		return 2;
	}
	volatile uint64_t *tick = NULL;
	if (argc == 4) {
		int fd = open(argv[3], O_RDWR);
		if (fd < 0 || ftruncate(fd, PG)) {
			say("FAIL open %s: %s\n", argv[3], strerror(errno));
			return 1;
		}
		tick = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (tick == MAP_FAILED) {
			say("FAIL mmap %s: %s\n", argv[3], strerror(errno));
			return 1;
		}
	}
	uint64_t bytes = strtoull(argv[1], NULL, 0) << 20;
	uint64_t seed = strtoull(argv[2], NULL, 0);
	if (!bytes)
		return 2;

	uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		say("FAIL mmap %s\n", strerror(errno));
		return 1;
	}
	uint64_t nwords = bytes / 8;
	for (uint64_t i = 0; i < nwords; i++)
		mem[i] = word(seed, i);

	sigset_t usr, old;
	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigaddset(&usr, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr, &old);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	say("READY %d %lx %lu\n", getpid(), (unsigned long)mem, (unsigned long)bytes);
	int ticking = 0;
	for (;;) {
		if (!ticking) {
			/* The signals are blocked outside sigsuspend: no wake-up is lost. */
			while (!check_req && !tick_req)
				sigsuspend(&old);
			if (tick_req && tick) {
				ticking = 1;
				sigprocmask(SIG_SETMASK, &old, NULL);
				say("TICKING\n");
			}
			tick_req = 0;
		}
		if (ticking) {
			uint64_t t = now_ns();
			if (!tick[0])
				tick[0] = t;
			tick[1] = t;
			if (!check_req) {
				/* A signal ends the sleep early (EINTR), so is seen at once. */
				struct timespec d = { 0, 200000 };
				nanosleep(&d, NULL);
				continue;
			}
		}
		if (!check_req)
			continue;
		check_req = 0;
		uint64_t bad = 0, first = 0;
		for (uint64_t i = 0; i < nwords; i++) {
			if (mem[i] != word(seed, i)) {
				if (!bad)
					first = i;
				bad++;
			}
		}
		if (bad)
			say("FAIL page %lu word %lu: %lu bad words, got %lx want %lx\n",
			    (unsigned long)(first / WORDS_PER_PAGE), (unsigned long)(first % WORDS_PER_PAGE),
			    (unsigned long)bad, (unsigned long)mem[first], (unsigned long)word(seed, first));
		else
			say("PASS %lu\n", (unsigned long)(bytes / PG));
	}
}
