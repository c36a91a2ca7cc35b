/*
 * rewrite: keeps rewriting part of its memory, for pre-dump and incremental dumps.
 * Usage: rewrite WORKDIR [MIB [RATE [THREADS [CHILD [CHURN [THP]]]]]]   (protocol in wl.h)
 *   MIB      private anonymous memory, MiB (default 64)
 *   RATE     MiB/s rewritten in all (default 50; 0: as fast as it can)
 *   THREADS  writer threads, each rewriting its own slice (default 1: the main thread)
 *   CHILD    1: fork a child after setup that rewrites its copy-on-write copy too
 *   CHURN    1: every ~50 ms change the layout of a side region: MADV_DONTNEED of a
 *            MiB (must read zero after), refill it, mremap the region elsewhere, munmap
 *            and mmap a fresh MiB
 *   THP      1: the memory is MADV_HUGEPAGE (2 MiB aligned), in huge pages until written
 *            under write-protection (a tracked write splits the huge page)
 *
 * Every page i holds 512 words derived from (i, gen[i]); gen[] lives in the heap. A
 * writer sets `cur` to the page before rewriting it with gen+1 and bumps gen[i] after:
 * in any snapshot every page matches its gen except the one being written, which may
 * mix gen and gen+1 word by word. A quarter of the memory is hot (rewritten in order),
 * and one write in eight lands anywhere. The check verifies every page (and the child's
 * answer, through a shared page, and the side region's state).
 */
#include "wl.h"
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL
#define WORDS (PG / 8)
#define MAXT 16
#define SIDE (8UL << 20)

static uint64_t *mem;
static uint32_t *gen;
static unsigned long npages;
static long rate = 50;
static int nthreads = 1;

struct writer {
	volatile long cur; /* page being written, -1 between pages */
	unsigned long lo, hi; /* its slice of the hot part */
	uint64_t lcg;
	pthread_t th;
};
static struct writer w[MAXT];

static inline uint64_t word(unsigned long i, uint32_t g, unsigned long j)
{
	return ((uint64_t)i << 32 | g) * 0x9E3779B97F4A7C15ull ^ (j * 0xBF58476D1CE4E5B9ull);
}

static void write_page(struct writer *me, unsigned long i)
{
	me->cur = (long)i;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint32_t g = gen[i] + 1;
	uint64_t *p = mem + i * WORDS;
	for (unsigned long j = 0; j < WORDS; j++)
		p[j] = word(i, g, j);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	gen[i] = g;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	me->cur = -1;
}

/* Writes about a MiB (256 pages), 7 in 8 in its hot slice in order, 1 in 8 anywhere. */
static void write_mib(struct writer *me, unsigned long *next)
{
	for (int k = 0; k < 256; k++) {
		me->lcg = me->lcg * 6364136223846793005ull + 1442695040888963407ull;
		unsigned long i;
		if ((me->lcg >> 33) % 8 == 0) {
			i = (me->lcg >> 20) % npages;
		} else {
			i = *next;
			*next = *next + 1 >= me->hi ? me->lo : *next + 1;
		}
		write_page(me, i);
	}
}

static void pace(void)
{
	if (rate > 0)
		wl_sleep_ms(1000 / rate * nthreads > 0 ? 1000 / rate * nthreads : 1);
}

/* The check runs with the other writers parked (a page they finish while it is read
 * would look torn). */
static volatile int pause_req, parked;

static void *writer_thread(void *arg)
{
	struct writer *me = arg;
	unsigned long next = me->lo;
	for (;;) {
		if (pause_req) {
			__atomic_add_fetch(&parked, 1, __ATOMIC_SEQ_CST);
			while (pause_req)
				wl_sleep_ms(1);
			__atomic_sub_fetch(&parked, 1, __ATOMIC_SEQ_CST);
		}
		write_mib(me, &next);
		pace();
	}
	return NULL;
}

static int page_ok(unsigned long i)
{
	const uint64_t *p = mem + i * WORDS;
	uint32_t g = gen[i];
	for (int t = 0; t < nthreads; t++)
		if (w[t].cur == (long)i) {
			for (unsigned long j = 0; j < WORDS; j++)
				if (p[j] != word(i, g, j) && p[j] != word(i, g + 1, j))
					return 0;
			return 1;
		}
	for (unsigned long j = 0; j < WORDS; j++)
		if (p[j] != word(i, g, j))
			return 0;
	return 1;
}

static int verify_mem(void)
{
	for (unsigned long i = 0; i < npages; i++)
		WL_CHECK(page_ok(i), "page %lu (gen %u) does not hold its gen's words", i, gen[i]);
	return 1;
}

/* ---- the side region (CHURN) ---- */
struct side {
	volatile int busy;
	uint8_t *at;
	uint64_t seed[SIDE >> 20]; /* per MiB: 0 zero (dropped), else its pattern's seed */
	uint8_t *fresh; /* a MiB mmapped anew from time to time */
	uint64_t fresh_seed;
	unsigned long step;
};
static struct side side;
static int churn;

static void churn_step(void)
{
	unsigned long n = SIDE >> 20, k = side.step % n;
	side.busy = 1;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	switch (side.step % 4) {
	case 0: /* drop a MiB: it reads zero from now on */
		madvise(side.at + (k << 20), 1 << 20, MADV_DONTNEED);
		side.seed[k] = 0;
		break;
	case 1: { /* refill the MiB dropped just before */
		unsigned long d = (side.step - 1) % n;
		uint64_t s = 1000 + side.step;
		wl_fill(side.at + (d << 20), 1 << 20, s);
		side.seed[d] = s;
		break;
	}
	case 2: { /* move the whole region */
		void *to = mremap(side.at, SIDE, SIDE, MREMAP_MAYMOVE | MREMAP_FIXED,
				  mmap(NULL, SIDE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		if (to == MAP_FAILED)
			wl_die("mremap");
		side.at = to;
		break;
	}
	case 3: /* a fresh MiB instead of the old one */
		munmap(side.fresh, 1 << 20);
		side.fresh = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (side.fresh == MAP_FAILED)
			wl_die("mmap");
		side.fresh_seed = 5000 + side.step;
		wl_fill(side.fresh, 1 << 20, side.fresh_seed);
		break;
	}
	side.step++;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	side.busy = 0;
}

static int verify_side(void)
{
	if (!churn || side.busy)
		return 1;
	for (unsigned long k = 0; k < (SIDE >> 20); k++) {
		uint8_t *m = side.at + (k << 20);
		if (side.seed[k] == 0) {
			for (unsigned long b = 0; b < (1 << 20); b++)
				WL_CHECK(m[b] == 0, "side MiB %lu was dropped but byte %lu is %u", k, b,
					 m[b]);
		} else {
			WL_CHECK(wl_cmp(m, 1 << 20, side.seed[k]) == (size_t)-1,
				 "side MiB %lu does not hold seed %lu", k, (unsigned long)side.seed[k]);
		}
	}
	WL_CHECK(wl_cmp(side.fresh, 1 << 20, side.fresh_seed) == (size_t)-1,
		 "the fresh MiB does not hold seed %lu", (unsigned long)side.fresh_seed);
	return 1;
}

/* ---- the child (CHILD) ---- */
struct mailbox {
	volatile int ping, answered, ok;
	char reason[600];
};
static struct mailbox *mb;
static int child;

static int verify_all(void)
{
	pause_req = 1;
	while (parked < nthreads - 1)
		wl_sleep_ms(1);
	int ok = verify_mem() && verify_side();
	pause_req = 0;
	if (!ok)
		return 0;
	if (child) {
		int ping = mb->ping + 1;
		mb->ping = ping;
		for (int i = 0; i < 20000 && mb->answered != ping; i++)
			wl_sleep_ms(1);
		WL_CHECK(mb->answered == ping, "the child did not answer ping %d", ping);
		WL_CHECK(mb->ok, "child: %s", mb->reason);
	}
	return 1;
}

static void corrupt(void)
{
	mem[npages / 2 * WORDS + 7] ^= 1;
}

static void child_loop(void)
{
	struct writer *me = &w[0];
	unsigned long next = me->lo;
	int seen = mb->ping;
	for (;;) {
		if (getppid() == 1)
			_exit(0);
		if (mb->ping != seen) {
			seen = mb->ping;
			int ok = verify_mem();
			snprintf(mb->reason, sizeof(mb->reason), "%s", wl_reason);
			wl_reason[0] = 0;
			mb->ok = ok;
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			mb->answered = seen;
		}
		write_mib(me, &next);
		pace();
	}
}

int main(int argc, char **argv)
{
	wl_init();
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	rate = argc > 3 ? strtol(argv[3], NULL, 0) : 50;
	nthreads = argc > 4 ? atoi(argv[4]) : 1;
	child = argc > 5 && atoi(argv[5]);
	churn = argc > 6 && atoi(argv[6]);
	if (nthreads < 1 || nthreads > MAXT || mib == 0)
		wl_die("bad arguments");
	int thp = argc > 7 && atoi(argv[7]);
	npages = mib << 8;
	mem = mmap(NULL, (mib << 20) + (2UL << 20), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem != MAP_FAILED) {
		mem = (uint64_t *)(((uintptr_t)mem + (2UL << 20) - 1) & ~((2UL << 20) - 1));
		if (thp && madvise(mem, mib << 20, MADV_HUGEPAGE))
			wl_die("madvise(MADV_HUGEPAGE)");
	}
	gen = calloc(npages, sizeof(*gen));
	mb = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || !gen || mb == MAP_FAILED)
		wl_die("memory");
	struct writer setup = { .cur = -1 };
	for (unsigned long i = 0; i < npages; i++)
		write_page(&setup, i);
	unsigned long hot = npages / 4 ? npages / 4 : npages;
	for (int t = 0; t < nthreads; t++) {
		w[t].cur = -1;
		w[t].lo = hot * t / nthreads;
		w[t].hi = hot * (t + 1) / nthreads;
		w[t].lcg = 12345 + t;
	}
	if (churn) {
		side.at = mmap(NULL, SIDE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		side.fresh = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (side.at == MAP_FAILED || side.fresh == MAP_FAILED)
			wl_die("side region");
		for (unsigned long k = 0; k < (SIDE >> 20); k++) {
			side.seed[k] = 100 + k;
			wl_fill(side.at + (k << 20), 1 << 20, side.seed[k]);
		}
		side.fresh_seed = 99;
		wl_fill(side.fresh, 1 << 20, side.fresh_seed);
	}
	if (child) {
		pid_t c = fork();
		if (c < 0)
			wl_die("fork");
		if (c == 0) {
			w[0].lcg = 999;
			child_loop();
		}
	}
	/* Threads 1.. write their slices; the main thread writes slice 0 between checks. */
	for (int t = 1; t < nthreads; t++)
		if (pthread_create(&w[t].th, NULL, writer_thread, &w[t]))
			wl_die("pthread_create");
	wl_ready();
	unsigned long next = w[0].lo;
	long beat = 0;
	for (;;) {
		wl_poll(verify_all, corrupt);
		write_mib(&w[0], &next);
		if (churn && ++beat % 5 == 0)
			churn_step();
		pace();
	}
}
