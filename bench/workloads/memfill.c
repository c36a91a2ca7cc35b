/*
 * memfill: the memory workload of ckpt-bench.
 * Usage: memfill MIB SEED
 *
 * Maps MIB MiB of private anonymous memory (no THP advice: the system default, which is
 * `madvise` on the reference machine, gives 4 KiB pages) and writes every 8-byte word of
 * every page with a value derived from the seed and the word's index, so every page holds
 * distinct data and no page is zero. Then prints "READY <pid> <addr> <bytes>" and waits.
 *   SIGUSR1  verify every word of every page; print "PASS <pages>" or
 *            "FAIL page <n> word <i> ...", then wait again (to be killed).
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
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096UL
#define WORDS_PER_PAGE (PG / 8)

static volatile sig_atomic_t check_req;

static void on_usr1(int sig)
{
	(void)sig;
	check_req = 1;
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
	if (argc != 3) {
		say("usage: memfill MIB SEED\n");
		return 2;
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

	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);

	say("READY %d %lx %lu\n", getpid(), (unsigned long)mem, (unsigned long)bytes);
	for (;;) {
		/* SIGUSR1 is blocked outside sigsuspend: no wake-up is lost. */
		while (!check_req)
			sigsuspend(&old);
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
