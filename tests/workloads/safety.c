/*
 * safety: a workload for dumps that are interrupted or raced (tests/dump_safety.rs).
 * Usage: safety WORKDIR [MIB]   (protocol in wl.h; MIB defaults to 16)
 *  - MIB MiB of private anonymous memory, every word derived from its page and offset,
 *    so that a dump of it takes a while and any page lost or mixed up is seen;
 *  - blocked mask: exactly SIGWINCH and SIGRTMIN+4 (a dump that leaves every signal
 *    blocked, or none, fails the check);
 *  - a pending SIGTRAP, blocked, raised at the thread with a known si_value (sigqueue
 *    semantics through rt_tgsigqueueinfo): each check takes it with sigtimedwait,
 *    checks it and raises it again.
 */
#include "wl.h"
#include <sys/mman.h>

#define PG 4096UL
#define SIG_RT_BLOCKED (SIGRTMIN + 4)
#define TRAP_VALUE 7171

static uint64_t *mem;
static size_t npages;

static inline uint64_t word(size_t pg, size_t w)
{
	return (pg + 7) * 0x9E3779B97F4A7C15ull ^ (w * 0xBF58476D1CE4E5B9ull) ^ 0xa5a5;
}

static void raise_trap(void)
{
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	si.si_signo = SIGTRAP;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = TRAP_VALUE;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGTRAP, &si))
		wl_die("rt_tgsigqueueinfo(SIGTRAP)");
}

static int verify(void)
{
	sigset_t cur, pend;
	WL_CHECK(sigprocmask(SIG_SETMASK, NULL, &cur) == 0, "sigprocmask");
	for (int s = 1; s < NSIG; s++) {
		if (s == 32 || s == 33)
			continue; /* glibc's own */
		int want = s == SIGWINCH || s == SIG_RT_BLOCKED || s == SIGTRAP;
		WL_CHECK(sigismember(&cur, s) == want, "signal %d is %sblocked", s,
			 want ? "not " : "");
	}
	WL_CHECK(sigpending(&pend) == 0, "sigpending");
	for (int s = 1; s < NSIG; s++)
		if (s != 32 && s != 33)
			WL_CHECK(sigismember(&pend, s) == (s == SIGTRAP), "signal %d is %spending", s,
				 s == SIGTRAP ? "not " : "");
	sigset_t want;
	sigemptyset(&want);
	sigaddset(&want, SIGTRAP);
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	WL_CHECK(sigtimedwait(&want, &si, &zero) == SIGTRAP, "sigtimedwait(SIGTRAP): %s",
		 strerror(errno));
	WL_CHECK(si.si_code == SI_QUEUE && si.si_value.sival_int == TRAP_VALUE &&
			 si.si_pid == getpid(),
		 "pending SIGTRAP: code %d value %d pid %d", si.si_code, si.si_value.sival_int,
		 (int)si.si_pid);
	raise_trap();
	for (size_t pg = 0; pg < npages; pg++) {
		const uint64_t *p = mem + pg * (PG / 8);
		for (size_t w = 0; w < PG / 8; w++)
			WL_CHECK(p[w] == word(pg, w), "page %zu word %zu: %#llx, want %#llx", pg, w,
				 (unsigned long long)p[w], (unsigned long long)word(pg, w));
	}
	return 1;
}

static void corrupt(void)
{
	mem[npages / 2 * (PG / 8) + 5] ^= 1;
}

int main(int argc, char **argv)
{
	wl_init();
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 16;
	npages = (mib << 20) / PG;
	mem = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_die("mmap");
	if (madvise(mem, npages * PG, MADV_NOHUGEPAGE))
		wl_die("madvise");
	for (size_t pg = 0; pg < npages; pg++) {
		uint64_t *p = mem + pg * (PG / 8);
		for (size_t w = 0; w < PG / 8; w++)
			p[w] = word(pg, w);
	}
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGWINCH);
	sigaddset(&block, SIG_RT_BLOCKED);
	sigaddset(&block, SIGTRAP);
	if (sigprocmask(SIG_BLOCK, &block, NULL))
		wl_die("sigprocmask");
	raise_trap();
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
