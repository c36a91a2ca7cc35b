/*
 * shm: a shared memory object mapped by several VMAs stays ONE object.
 * Usage: shm WORKDIR   (protocol in wl.h; must run as root: it opens
 * /proc/self/map_files, which needs CAP_SYS_ADMIN)
 *
 * Setup:
 *  - anon: 4 pages MAP_SHARED|MAP_ANONYMOUS, filled with a pattern; page 1 is then
 *    mprotect'ed read-only, so the region is 3 VMAs of one shmem object.
 *  - memfd "ckpt-shm" of 2 pages mapped MAP_SHARED twice (view1, view2), filled through
 *    view1; the fd is closed.
 * Checks:
 *  - anon: the 3 VMAs (rw-s, r--s, rw-s) at their addresses with offsets 0, 1, 2 pages;
 *    /proc/self/map_files of the first and the last VMA are the same inode, of size 4
 *    pages; a fresh MAP_SHARED view of that file shows the region's contents, and a word
 *    written through the view (into the read-only page too) is seen in the region.
 *  - memfd: view1 and view2 are "/memfd:ckpt-shm (deleted)" of the same inode; a word
 *    written through one is seen through the other, both ways; contents are as written.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define PAGE 4096
#define ANON_PAGES 4
#define MEMFD_PAGES 2

static uint8_t *anon, *view1, *view2;
static uint64_t tick;
/* What each mapping must hold (the checks keep them in step). */
static uint8_t anon_shadow[ANON_PAGES * PAGE], memfd_shadow[MEMFD_PAGES * PAGE];

static int map_files_fd(const void *start, const void *end)
{
	char p[128];
	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (unsigned long)start,
		 (unsigned long)end);
	return open(p, O_RDWR | O_CLOEXEC);
}

static int check_line(const void *addr, const char *perms, unsigned long off, const char *name)
{
	char line[512];
	WL_CHECK(wl_maps_line(addr, line, sizeof(line)), "%p is not mapped", addr);
	unsigned long lo, hi, o;
	char pm[8];
	WL_CHECK(sscanf(line, "%lx-%lx %7s %lx", &lo, &hi, pm, &o) == 4, "maps line '%s'", line);
	WL_CHECK(lo == (unsigned long)addr, "no VMA starts at %p: '%s'", addr, line);
	WL_CHECK(strcmp(pm, perms) == 0, "%p: perms %s, want %s", addr, pm, perms);
	WL_CHECK(o == off, "%p: offset %#lx, want %#lx ('%s')", addr, o, off, line);
	WL_CHECK(!name || strstr(line, name), "%p: '%s' does not name %s", addr, line, name);
	return 1;
}

static int verify_anon(void)
{
	if (!check_line(anon, "rw-s", 0, NULL) || !check_line(anon + PAGE, "r--s", PAGE, NULL) ||
	    !check_line(anon + 2 * PAGE, "rw-s", 2 * PAGE, NULL))
		return 0;
	WL_CHECK(memcmp(anon, anon_shadow, sizeof(anon_shadow)) == 0, "anon contents differ");
	int a = map_files_fd(anon, anon + PAGE);
	int b = map_files_fd(anon + 2 * PAGE, anon + ANON_PAGES * PAGE);
	struct stat sa, sb;
	int ok = a >= 0 && b >= 0 && fstat(a, &sa) == 0 && fstat(b, &sb) == 0;
	if (b >= 0)
		close(b);
	if (!ok) {
		if (a >= 0)
			close(a);
		return wl_fail("map_files of the anon VMAs: %s", strerror(errno));
	}
	if (sa.st_ino != sb.st_ino || sa.st_size != ANON_PAGES * PAGE) {
		close(a);
		return wl_fail("anon VMAs: inodes %lu and %lu, size %ld: not one object of 4 pages",
			       (unsigned long)sa.st_ino, (unsigned long)sb.st_ino, (long)sa.st_size);
	}
	uint8_t *view = mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
	close(a);
	WL_CHECK(view != MAP_FAILED, "mmap of the anon object: %s", strerror(errno));
	int same = memcmp(view, anon_shadow, sizeof(anon_shadow)) == 0;
	/* Through the view into every page, the read-only one included. */
	for (int p = 0; p < ANON_PAGES; p++) {
		uint64_t v = tick * 16 + (uint64_t)p;
		memcpy(view + p * PAGE + 8, &v, 8);
		memcpy(anon_shadow + p * PAGE + 8, &v, 8);
	}
	int seen = memcmp(anon, anon_shadow, sizeof(anon_shadow)) == 0;
	munmap(view, ANON_PAGES * PAGE);
	WL_CHECK(same, "a new view of the anon object differs from the region");
	WL_CHECK(seen, "writes through a view of the anon object are not seen in the region");
	return 1;
}

static int verify_memfd(void)
{
	if (!check_line(view1, "rw-s", 0, "/memfd:ckpt-shm (deleted)") ||
	    !check_line(view2, "rw-s", 0, "/memfd:ckpt-shm (deleted)"))
		return 0;
	int a = map_files_fd(view1, view1 + MEMFD_PAGES * PAGE);
	int b = map_files_fd(view2, view2 + MEMFD_PAGES * PAGE);
	struct stat sa, sb;
	int ok = a >= 0 && b >= 0 && fstat(a, &sa) == 0 && fstat(b, &sb) == 0;
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	WL_CHECK(ok, "map_files of the memfd views: %s", strerror(errno));
	WL_CHECK(sa.st_ino == sb.st_ino, "memfd views: inodes %lu and %lu",
		 (unsigned long)sa.st_ino, (unsigned long)sb.st_ino);
	WL_CHECK(memcmp(view1, memfd_shadow, sizeof(memfd_shadow)) == 0, "view1 contents differ");
	WL_CHECK(memcmp(view2, memfd_shadow, sizeof(memfd_shadow)) == 0, "view2 contents differ");
	uint64_t v = tick, got;
	memcpy(view1 + PAGE + 16, &v, 8);
	memcpy(&got, view2 + PAGE + 16, 8);
	WL_CHECK(got == v, "written %llu through view1, view2 has %llu", (unsigned long long)v,
		 (unsigned long long)got);
	v = ~tick;
	memcpy(view2 + 24, &v, 8);
	memcpy(&got, view1 + 24, 8);
	WL_CHECK(got == v, "written through view2, view1 has another value");
	memcpy(memfd_shadow + PAGE + 16, &tick, 8);
	memcpy(memfd_shadow + 24, &v, 8);
	return 1;
}

static int verify(void)
{
	tick++;
	return verify_anon() && verify_memfd();
}

static void corrupt(void)
{
	anon[3 * PAGE + 100] ^= 0xff;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: shm WORKDIR");
	wl_init();
	anon = mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	if (anon == MAP_FAILED)
		wl_die("mmap anon");
	wl_fill(anon, ANON_PAGES * PAGE, 7);
	memcpy(anon_shadow, anon, sizeof(anon_shadow));
	if (mprotect(anon + PAGE, PAGE, PROT_READ))
		wl_die("mprotect");

	int fd = memfd_create("ckpt-shm", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, MEMFD_PAGES * PAGE))
		wl_die("memfd");
	view1 = mmap(NULL, MEMFD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	view2 = mmap(NULL, MEMFD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (view1 == MAP_FAILED || view2 == MAP_FAILED)
		wl_die("mmap memfd");
	close(fd);
	wl_fill(view1, MEMFD_PAGES * PAGE, 9);
	memcpy(memfd_shadow, view1, sizeof(memfd_shadow));

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
