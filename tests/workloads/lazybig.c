/*
 * lazybig: a big anonymous mapping of distinct per-page data, for lazy restores.
 * Usage: lazybig WORKDIR [MIB [huge|fork|fork2|forkexit|forkorphan|forkdrop|trap]]   (protocol in wl.h; MIB defaults to 512)
 *  - MIB MiB of private anonymous memory (MADV_NOHUGEPAGE, or MADV_HUGEPAGE with
 *    `huge`: such memory is restored by ckpt itself, not served lazily), every 8-byte word
 *    written with a value derived from its page and offset, so a page that reads
 *    zero, stale or another page's data fails the check;
 *  - SIGUSR1 verifies every word of every page (walking backwards, against a
 *    background copy that fills forwards) and prints PASS;
 *  - with `fork`, SIGHUP makes it fork (it prints FORKED <pid>): the child prints
 *    CHILD <pid> (stack and write(2) only), verifies its copy of every page, prints
 *    CHILD PASS or CHILD FAIL <reason> and exits; the parent reaps it in its loop;
 *  - with `fork2`, the same, but the child first forks a grandchild at once (while a
 *    lazy restore is still filling the child), which prints GRANDCHILD <pid>, verifies
 *    every page and prints GRANDCHILD PASS or GRANDCHILD FAIL <reason>; the child waits
 *    for it before its own check;
 *  - with `forkexit`, the same as `fork2`, but the grandchild exits at once (its memory
 *    is gone while the pager may still be filling it);
 *  - with `forkorphan`, the same as `fork2`, but the child exits at once instead of
 *    waiting: the grandchild goes on as an orphan;
 *  - with `forkdrop`, the same as `fork`, but the child first drops the first half of
 *    the mapping (MADV_DONTNEED, at once: while a lazy restore is still filling it),
 *    which must then read zero, and the rest its data;
 *  - with `trap`, every SIGTRAP is counted and reported as TRAP <n> code <si_code> pid
 *    <si_pid> (a SIGTRAP sent during a restore must arrive once, after it).
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL

static uint64_t *mem;
static size_t npages;
/* Pages [0, dropped) were given back (MADV_DONTNEED) and must read zero. */
static size_t dropped;

static inline uint64_t word(size_t pg, size_t w)
{
	return (pg + 1) * 0x9E3779B97F4A7C15ull ^ (w * 0xBF58476D1CE4E5B9ull) ^ 0x5a5a;
}

static int verify(void)
{
	for (size_t pg = npages; pg-- > 0;) {
		const uint64_t *p = mem + pg * (PG / 8);
		for (size_t w = 0; w < PG / 8; w++) {
			uint64_t want = pg < dropped ? 0 : word(pg, w);
			WL_CHECK(p[w] == want, "page %zu word %zu: %#llx, want %#llx", pg, w,
				 (unsigned long long)p[w], (unsigned long long)want);
		}
	}
	return 1;
}

static volatile sig_atomic_t fork_req;
static int fork_twice, fork_drop, grandchild_exits, orphan;

/* "WHO <pid>\n" by hand, on the stack: no libc state that may still be missing here. */
static void say_pid(const char *who)
{
	char line[48], digits[16];
	int n = 0, d = 0;
	while (*who)
		line[n++] = *who++;
	line[n++] = ' ';
	for (unsigned v = (unsigned)getpid(); v || !d; v /= 10)
		digits[d++] = (char)('0' + v % 10);
	while (d)
		line[n++] = digits[--d];
	line[n++] = '\n';
	if (write(1, line, (size_t)n) != n)
		_exit(3);
}

static void on_hup(int sig)
{
	(void)sig;
	fork_req = 1;
}

static void fork_and_verify(void)
{
	fork_req = 0;
	pid_t c = fork();
	if (c < 0) {
		printf("FAIL fork: %s\n", strerror(errno));
		return;
	}
	if (c > 0) {
		printf("FORKED %d\n", (int)c);
		return;
	}
	if (fork_drop) {
		if (madvise(mem, npages / 2 * PG, MADV_DONTNEED))
			_exit(5);
		dropped = npages / 2;
	}
	if (fork_twice) {
		pid_t g = fork();
		if (g == 0 && grandchild_exits)
			_exit(0);
		if (g == 0) {
			say_pid("GRANDCHILD");
			if (verify())
				printf("GRANDCHILD PASS\n");
			else
				printf("GRANDCHILD FAIL %s\n", wl_reason);
			fflush(stdout);
			_exit(0);
		}
		if (g > 0 && orphan)
			_exit(0);
		if (g < 0 || waitpid(g, NULL, 0) != g)
			_exit(4);
	}
	say_pid("CHILD");
	if (verify())
		printf("CHILD PASS\n");
	else
		printf("CHILD FAIL %s\n", wl_reason);
	fflush(stdout);
	_exit(0);
}

static volatile sig_atomic_t traps, trap_code, trap_pid;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	trap_code = si->si_code;
	trap_pid = si->si_pid;
	traps++;
}

static void corrupt(void)
{
	mem[npages / 2 * (PG / 8) + 3] ^= 1;
}

int main(int argc, char **argv)
{
	wl_init();
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 512;
	npages = (mib << 20) / PG;
	mem = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_die("mmap");
	const char *mode = argc > 3 ? argv[3] : "";
	int huge = !strcmp(mode, "huge");
	grandchild_exits = !strcmp(mode, "forkexit");
	orphan = !strcmp(mode, "forkorphan");
	fork_twice = !strcmp(mode, "fork2") || grandchild_exits || orphan;
	fork_drop = !strcmp(mode, "forkdrop");
	if (!strncmp(mode, "fork", 4)) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_hup;
		sa.sa_flags = SA_RESTART;
		if (sigaction(SIGHUP, &sa, NULL))
			wl_die("sigaction");
	}
	if (!strcmp(mode, "trap")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_trap;
		sa.sa_flags = SA_RESTART | SA_SIGINFO;
		if (sigaction(SIGTRAP, &sa, NULL))
			wl_die("sigaction");
	}
	if (madvise(mem, npages * PG, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		wl_die("madvise");
	for (size_t pg = 0; pg < npages; pg++) {
		uint64_t *p = mem + pg * (PG / 8);
		for (size_t w = 0; w < PG / 8; w++)
			p[w] = word(pg, w);
	}
	wl_ready();
	int reported = 0;
	for (;;) {
		if (traps != reported) {
			reported = traps;
			printf("TRAP %d code %d pid %d\n", reported, (int)trap_code, (int)trap_pid);
		}
		if (fork_req)
			fork_and_verify();
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
