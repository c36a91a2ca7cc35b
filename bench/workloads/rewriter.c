/*
 * rewriter: the pre-dump workload of ckpt-bench.
 * Usage: rewriter MIB RATE STATSFILE
 *
 * Fills MIB MiB of private anonymous memory, prints "READY <pid>", then rewrites a MiB
 * at a time at RATE MiB/s (a quarter of the memory in order, one page in eight anywhere)
 * and keeps, in STATSFILE (mapped shared, two u64): the MiB written so far and the
 * nanoseconds spent writing them. The bench compares the time per MiB before and during
 * a pre-dump: the cost of the write tracking (faults on protected pages) and of sharing
 * the machine with ckpt's copy.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	unsigned long mib = strtoul(argv[1], NULL, 0), rate = strtoul(argv[2], NULL, 0);
	int fd = open(argv[3], O_RDWR);
	volatile uint64_t *stats =
		fd < 0 ? MAP_FAILED : mmap(NULL, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	unsigned long npages = mib << 8;
	uint64_t *mem = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (stats == MAP_FAILED || mem == MAP_FAILED || !mib) {
		printf("SETUP-ERROR\n");
		return 2;
	}
	for (unsigned long i = 0; i < npages * (PG / 8); i++)
		mem[i] = i * 0x9E3779B97F4A7C15ull;
	printf("READY %d\n", (int)getpid());
	fflush(stdout);
	uint64_t lcg = 1, gen = 0;
	unsigned long next = 0, hot = npages / 4 ? npages / 4 : 1;
	for (;;) {
		uint64_t t0 = now_ns();
		gen++;
		for (int k = 0; k < 256; k++) {
			lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
			unsigned long p = (lcg >> 33) % 8 ? next : (lcg >> 20) % npages;
			if (p == next)
				next = (next + 1) % hot;
			uint64_t *w = mem + p * (PG / 8);
			for (unsigned long j = 0; j < PG / 8; j++)
				w[j] = gen ^ j;
		}
		stats[1] += now_ns() - t0;
		stats[0]++;
		if (rate)
			usleep(1000000 / rate);
	}
}
