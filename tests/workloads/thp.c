/*
 * thp: transparent huge pages stay huge across a checkpoint.
 * Usage: thp WORKDIR   (protocol in wl.h)
 *  - 8 MiB of private anonymous memory, 2 MiB aligned, MADV_HUGEPAGE, every byte
 *    written with a known pattern: the kernel backs it with huge pages when the host's
 *    THP mode is `always` or `madvise` (setup fails if it does not: nothing to test);
 *  - prints "HUGE <kB>" (its AnonHugePages) before READY;
 *  - the check: the pattern, and AnonHugePages of the region in /proc/self/smaps at
 *    least what it was at setup.
 */
#include "wl.h"
#include <sys/mman.h>

#define MB (1UL << 20)
#define SIZE (8 * MB)
#define SEED 77

static uint8_t *region;
static unsigned long huge_at_setup;

/* AnonHugePages (kB) of the mapping that starts at `start`; -1 if not found. */
static long anon_huge_kb(const void *start)
{
	static char buf[1 << 20];
	ssize_t n = wl_read_file("/proc/self/smaps", buf, sizeof(buf) - 1);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char head[32];
	snprintf(head, sizeof(head), "%lx-", (unsigned long)start);
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, head, strlen(head)))
			continue;
		char *h = strstr(line, "\nAnonHugePages:");
		return h ? strtol(h + strlen("\nAnonHugePages:"), NULL, 10) : -1;
	}
	return -1;
}

static int verify(void)
{
	size_t bad = wl_cmp(region, SIZE, SEED);
	WL_CHECK(bad == (size_t)-1, "region byte %zu differs", bad);
	long kb = anon_huge_kb(region);
	WL_CHECK(kb >= 0, "region %p not found in smaps", (void *)region);
	WL_CHECK((unsigned long)kb >= huge_at_setup, "AnonHugePages %ld kB, %lu kB at setup", kb,
		 huge_at_setup);
	return 1;
}

static void corrupt(void)
{
	region[SIZE / 2] ^= 1;
}

int main(void)
{
	wl_init();
	uint8_t *raw = mmap(NULL, SIZE + 2 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	if (raw == MAP_FAILED)
		wl_die("mmap");
	region = (uint8_t *)(((uintptr_t)raw + 2 * MB - 1) & ~(2 * MB - 1));
	/* Only the aligned part stays: its own VMA, exactly the region. */
	if (region > raw && munmap(raw, (size_t)(region - raw)))
		wl_die("munmap head");
	if (munmap(region + SIZE, (size_t)(raw + SIZE + 2 * MB - (region + SIZE))))
		wl_die("munmap tail");
	if (madvise(region, SIZE, MADV_HUGEPAGE))
		wl_die("madvise(MADV_HUGEPAGE)");
	wl_fill(region, SIZE, SEED);
	long kb = anon_huge_kb(region);
	if (kb <= 0) {
		errno = 0;
		wl_die("no transparent huge pages in the region (AnonHugePages %ld kB): THP off?", kb);
	}
	huge_at_setup = (unsigned long)kb;
	printf("HUGE %lu\n", huge_at_setup);
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
