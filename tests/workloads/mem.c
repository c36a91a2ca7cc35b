/*
 * mem: memory of every kind survives a checkpoint, at the same addresses.
 * Usage: mem WORKDIR   (protocol in wl.h)
 *  - heap buffers of several sizes (small ones from the brk heap, large ones
 *    above the mmap threshold), a stack array, all with known patterns;
 *  - a 64 MiB anonymous mapping (MADV_NOHUGEPAGE) of which only every 16th page is
 *    written: the others must still read zero (and must not be in the image);
 *  - a MAP_PRIVATE mapping of WORKDIR/mem-private.dat with some pages written: the
 *    written pages keep the new data, the others still match the file, and the file
 *    itself is unchanged;
 *  - a MAP_SHARED mapping of WORKDIR/mem-shared.dat: the file sees every write,
 *    also those made after a restore (a counter bumped in the main loop);
 *  - a region filled and then mprotect'ed PROT_READ (still r--p after restore);
 *  - checksums of everything, taken at setup.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096UL
#define ANON_SIZE (64UL << 20)
#define ANON_STRIDE 16
#define PRIV_PAGES 16
#define SHARED_PAGES 8
#define RO_PAGES 4
#define STACK_BYTES 16384

static const size_t heap_sizes[] = { 100, 4096, 100000, 1UL << 20, 2UL << 20 };
#define NHEAP (sizeof(heap_sizes) / sizeof(heap_sizes[0]))
static uint8_t *heap[NHEAP];
static uint64_t heap_sum[NHEAP];

static uint8_t *stack_arr;
static uint64_t stack_sum;

static uint8_t *anon;
static uint8_t *priv;
static uint8_t *shared;
static uint8_t *ro;
static uint64_t ro_sum;
static char priv_path[4096], shared_path[4096];
static const int priv_written[] = { 1, 5, 9, 15 };
#define NPRIVW (sizeof(priv_written) / sizeof(priv_written[0]))

/* Light work of the main loop, mirrored in the shared mapping (page 1). */
static uint64_t loops;
static uint64_t *loops_heap;
/* Value written at each check into the shared mapping (page 0), after the restore too. */
static uint64_t shared_stamp;

static int priv_is_written(int pg)
{
	for (size_t i = 0; i < NPRIVW; i++)
		if (priv_written[i] == pg)
			return 1;
	return 0;
}

static int pread_all(const char *path, void *buf, size_t len, off_t off)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r = pread(fd, buf, len, off);
	close(fd);
	return r == (ssize_t)len ? 0 : -1;
}

/* The VmFlags line of the smaps entry that starts at addr. */
static int smaps_flags(const void *addr, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return 0;
	char buf[1024];
	int in = 0, found = 0;
	while (fgets(buf, sizeof(buf), f)) {
		unsigned long lo, hi;
		char c;
		if (sscanf(buf, "%lx-%lx %c", &lo, &hi, &c) == 3) {
			in = (lo == (unsigned long)addr);
			continue;
		}
		if (in && strncmp(buf, "VmFlags:", 8) == 0) {
			snprintf(out, len, "%s", buf + 8);
			out[strcspn(out, "\n")] = 0;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static int check_map(const void *addr, const char *perms, const char *path, const char *what)
{
	char line[1024];
	unsigned long lo;
	WL_CHECK(wl_maps_line(addr, line, sizeof(line)), "%s: no mapping at %p any more", what, addr);
	WL_CHECK(sscanf(line, "%lx", &lo) == 1 && lo == (unsigned long)addr,
		 "%s: mapping at %p does not start there: %s", what, addr, line);
	char *sp = strchr(line, ' ');
	WL_CHECK(sp && strncmp(sp + 1, perms, 4) == 0, "%s: perms not %s: %s", what, perms, line);
	if (path)
		WL_CHECK(strstr(line, path) != NULL, "%s: not a mapping of %s: %s", what, path, line);
	return 1;
}

static int verify(void)
{
	/* heap */
	for (size_t i = 0; i < NHEAP; i++) {
		size_t bad = wl_cmp(heap[i], heap_sizes[i], 10 + i);
		WL_CHECK(bad == (size_t)-1, "heap buffer %zu (%zu bytes at %p) differs at byte %zu",
			 i, heap_sizes[i], (void *)heap[i], bad);
		WL_CHECK(wl_fnv(heap[i], heap_sizes[i]) == heap_sum[i], "heap buffer %zu checksum", i);
	}
	/* big heap buffers come from mmap: still there? */
	WL_CHECK(wl_maps_line(heap[NHEAP - 1], NULL, 0), "2 MiB malloc'd buffer not mapped");
	WL_CHECK(*loops_heap == loops, "loop counter on heap %llu != %llu",
		 (unsigned long long)*loops_heap, (unsigned long long)loops);

	/* stack */
	size_t bad = wl_cmp(stack_arr, STACK_BYTES, 20);
	WL_CHECK(bad == (size_t)-1, "stack array differs at byte %zu", bad);
	WL_CHECK(wl_fnv(stack_arr, STACK_BYTES) == stack_sum, "stack array checksum");

	/* sparse anonymous mapping */
	if (!check_map(anon, "rw-p", NULL, "64 MiB anon"))
		return 0;
	char fl[1024];
	WL_CHECK(smaps_flags(anon, fl, sizeof(fl)), "64 MiB anon: no VmFlags in smaps");
	WL_CHECK(strstr(fl, " nh") != NULL, "64 MiB anon: MADV_NOHUGEPAGE lost, VmFlags:%s", fl);
	for (size_t pg = 0; pg < ANON_SIZE / PG; pg++) {
		uint8_t *p = anon + pg * PG;
		if (pg % ANON_STRIDE == 0) {
			bad = wl_cmp(p, PG, 1000 + pg);
			WL_CHECK(bad == (size_t)-1, "anon page %zu (written) differs at byte %zu", pg,
				 bad);
		} else {
			const uint64_t *q = (const uint64_t *)p;
			for (size_t k = 0; k < PG / 8; k++)
				WL_CHECK(q[k] == 0, "anon page %zu (never written) is not zero at %zu",
					 pg, k * 8);
		}
	}

	/* private file mapping */
	if (!check_map(priv, "rw-p", priv_path, "private file map"))
		return 0;
	static uint8_t filepg[PG];
	for (int pg = 0; pg < PRIV_PAGES; pg++) {
		WL_CHECK(pread_all(priv_path, filepg, PG, pg * PG) == 0, "pread %s", priv_path);
		bad = wl_cmp(filepg, PG, 100 + pg);
		WL_CHECK(bad == (size_t)-1, "file %s page %d changed on disk (byte %zu)", priv_path,
			 pg, bad);
		if (priv_is_written(pg)) {
			bad = wl_cmp(priv + pg * PG, PG, 200 + pg);
			WL_CHECK(bad == (size_t)-1, "private map page %d (written) differs at %zu", pg,
				 bad);
		} else {
			WL_CHECK(memcmp(priv + pg * PG, filepg, PG) == 0,
				 "private map page %d (unwritten) no longer matches the file", pg);
		}
	}

	/* shared file mapping */
	if (!check_map(shared, "rw-s", shared_path, "shared file map"))
		return 0;
	WL_CHECK(((uint64_t *)shared)[0] == shared_stamp, "shared map stamp %llu != %llu",
		 (unsigned long long)((uint64_t *)shared)[0], (unsigned long long)shared_stamp);
	WL_CHECK(((uint64_t *)(shared + PG))[0] == loops, "shared map loop counter %llu != %llu",
		 (unsigned long long)((uint64_t *)(shared + PG))[0], (unsigned long long)loops);
	for (int pg = 2; pg < SHARED_PAGES; pg++) {
		bad = wl_cmp(shared + pg * PG, PG, 300 + pg);
		WL_CHECK(bad == (size_t)-1, "shared map page %d differs at %zu", pg, bad);
	}
	/* a write now (after a restore, perhaps) must reach the file */
	shared_stamp = shared_stamp * 31 + 7;
	((uint64_t *)shared)[0] = shared_stamp;
	static uint8_t whole[SHARED_PAGES * PG];
	WL_CHECK(pread_all(shared_path, whole, sizeof(whole), 0) == 0, "pread %s", shared_path);
	WL_CHECK(memcmp(whole, shared, sizeof(whole)) == 0,
		 "file %s does not see the shared mapping's contents", shared_path);

	/* read-only region */
	if (!check_map(ro, "r--p", NULL, "read-only region"))
		return 0;
	bad = wl_cmp(ro, RO_PAGES * PG, 400);
	WL_CHECK(bad == (size_t)-1, "read-only region differs at %zu", bad);
	WL_CHECK(wl_fnv(ro, RO_PAGES * PG) == ro_sum, "read-only region checksum");
	return 1;
}

static void corrupt(void)
{
	heap[NHEAP - 1][12345] ^= 0x5a;
}

static uint8_t *map_file(const char *path, size_t pages, int flags, uint64_t seed0, int fill)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die("open %s", path);
	static uint8_t pg[PG];
	for (size_t i = 0; i < pages; i++) {
		if (fill)
			wl_fill(pg, PG, seed0 + i);
		else
			memset(pg, 0, PG);
		if (pwrite(fd, pg, PG, i * PG) != (ssize_t)PG)
			wl_die("pwrite %s", path);
	}
	void *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		wl_die("mmap %s", path);
	close(fd); /* the mapping keeps the file */
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: mem WORKDIR\n");
		return 2;
	}
	wl_init();

	for (size_t i = 0; i < NHEAP; i++) {
		heap[i] = malloc(heap_sizes[i]);
		if (!heap[i])
			wl_die("malloc");
		wl_fill(heap[i], heap_sizes[i], 10 + i);
		heap_sum[i] = wl_fnv(heap[i], heap_sizes[i]);
	}
	loops_heap = malloc(sizeof(*loops_heap));
	*loops_heap = 0;

	uint8_t stk[STACK_BYTES];
	wl_fill(stk, sizeof(stk), 20);
	stack_arr = stk;
	stack_sum = wl_fnv(stk, sizeof(stk));

	anon = mmap(NULL, ANON_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		wl_die("mmap anon");
	if (madvise(anon, ANON_SIZE, MADV_NOHUGEPAGE))
		wl_die("madvise");
	for (size_t pg = 0; pg < ANON_SIZE / PG; pg += ANON_STRIDE)
		wl_fill(anon + pg * PG, PG, 1000 + pg);

	snprintf(priv_path, sizeof(priv_path), "%s/mem-private.dat", argv[1]);
	priv = map_file(priv_path, PRIV_PAGES, MAP_PRIVATE, 100, 1);
	for (size_t i = 0; i < NPRIVW; i++)
		wl_fill(priv + priv_written[i] * PG, PG, 200 + priv_written[i]);

	snprintf(shared_path, sizeof(shared_path), "%s/mem-shared.dat", argv[1]);
	shared = map_file(shared_path, SHARED_PAGES, MAP_SHARED, 0, 0);
	for (int pg = 2; pg < SHARED_PAGES; pg++)
		wl_fill(shared + pg * PG, PG, 300 + pg);
	shared_stamp = 12345;
	((uint64_t *)shared)[0] = shared_stamp;

	ro = mmap(NULL, RO_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro == MAP_FAILED)
		wl_die("mmap ro");
	wl_fill(ro, RO_PAGES * PG, 400);
	ro_sum = wl_fnv(ro, RO_PAGES * PG);
	if (mprotect(ro, RO_PAGES * PG, PROT_READ))
		wl_die("mprotect");

	wl_ready();
	for (;;) {
		loops++;
		*loops_heap = loops;
		((uint64_t *)(shared + PG))[0] = loops;
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
