/*
 * mlock: locked memory stays locked, and lock-on-fault stays on fault.
 * Usage: mlock WORKDIR [future]   (protocol in wl.h)
 *  - L: 16 anonymous pages, filled, mlock()ed: VmFlags "lo", all pages resident.
 *  - F: 16 anonymous pages, mlock2(MLOCK_ONFAULT), pages 0-3 written: VmFlags "lo lf",
 *    exactly pages 0-3 resident (mincore).
 *  - with `future`: mlockall(MCL_FUTURE) last: a page mapped at check time is locked.
 * Checks: contents; VmFlags of L and F; mincore of L and F; VmLck of /proc/self/status
 * as at setup (its locked VMAs are exactly L and F); with `future`, a new mapping's
 * VmFlags have "lo" and VmLck grows by its size while it is mapped.
 */
#include "wl.h"
#include <sys/mman.h>

#define PAGE 4096
#define NPAGES 16
#define TOUCHED 4

static uint8_t *L, *F;
static long vmlck0;
static int future;

static int resident(const uint8_t *base, int first, int last)
{
	unsigned char v[NPAGES];
	if (mincore((void *)base, NPAGES * PAGE, v))
		return wl_fail("mincore: %s", strerror(errno));
	for (int i = 0; i < NPAGES; i++) {
		int want = i >= first && i < last;
		WL_CHECK((v[i] & 1) == want, "page %d of %p is %sresident", i, (void *)base,
			 want ? "not " : "");
	}
	return 1;
}

static int verify(void)
{
	WL_CHECK(wl_cmp(L, NPAGES * PAGE, 1) == (size_t)-1, "L contents differ");
	WL_CHECK(wl_cmp(F, TOUCHED * PAGE, 2) == (size_t)-1, "F contents differ");
	WL_CHECK(wl_vm_flag(L, "lo") == 1 && wl_vm_flag(L, "lf") == 0, "L: VmFlags lo %d lf %d",
		 wl_vm_flag(L, "lo"), wl_vm_flag(L, "lf"));
	WL_CHECK(wl_vm_flag(F, "lo") == 1 && wl_vm_flag(F, "lf") == 1, "F: VmFlags lo %d lf %d",
		 wl_vm_flag(F, "lo"), wl_vm_flag(F, "lf"));
	if (!resident(L, 0, NPAGES) || !resident(F, 0, TOUCHED))
		return 0;
	long lck = wl_status_long("VmLck", 10);
	WL_CHECK(lck == vmlck0, "VmLck %ld kB, was %ld kB", lck, vmlck0);
	if (future) {
		/* Read-only: never merged with L or F. */
		uint8_t *n = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		WL_CHECK(n != MAP_FAILED, "mmap: %s", strerror(errno));
		int lo = wl_vm_flag(n, "lo");
		long grown = wl_status_long("VmLck", 10) - lck;
		munmap(n, 2 * PAGE);
		WL_CHECK(lo == 1 && grown == 8,
			 "a new mapping is not locked (VmFlags lo %d, VmLck +%ld kB): MCL_FUTURE lost",
			 lo, grown);
	}
	return 1;
}

static void corrupt(void)
{
	munlock(F, NPAGES * PAGE);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: mlock WORKDIR [future]");
	wl_init();
	future = argc > 2 && strcmp(argv[2], "future") == 0;
	L = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	F = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (L == MAP_FAILED || F == MAP_FAILED)
		wl_die("mmap");
	wl_fill(L, NPAGES * PAGE, 1);
	if (mlock(L, NPAGES * PAGE))
		wl_die("mlock");
	if (syscall(SYS_mlock2, F, NPAGES * PAGE, MLOCK_ONFAULT))
		wl_die("mlock2(MLOCK_ONFAULT)");
	wl_fill(F, TOUCHED * PAGE, 2);
	if (future) {
		/* stdio's buffers first: heap grown after mlockall would be locked too. */
		printf("INFO future: L has lo %d\n", wl_vm_flag(L, "lo"));
		if (mlockall(MCL_FUTURE))
			wl_die("mlockall(MCL_FUTURE)");
	}
	vmlck0 = wl_status_long("VmLck", 10);
	if (vmlck0 != 2 * NPAGES * PAGE / 1024)
		wl_die("VmLck %ld kB, want %d", vmlck0, 2 * NPAGES * PAGE / 1024);

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
