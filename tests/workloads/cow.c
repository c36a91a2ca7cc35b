/*
 * cow: a parent with a big private heap and forked children that share it copy-on-write.
 * Usage: cow WORKDIR [MIB [CHILDREN]]   (default 32 MiB, 8 children; protocol in wl.h)
 *
 * The root fills MIB of private anonymous memory with a pattern, then forks the children,
 * which only read it (each also keeps 64 KiB of its own). Check (root, on SIGUSR1): the
 * root verifies its whole heap; every child (answering through a shared mailbox, as
 * tree.c) verifies one word of every page and one whole MiB (a different one per child
 * and check), plus its own memory; then each odd child writes a marker into one page of
 * its copy of the heap (page = its index, a new word each check), which it must see in
 * its own copy from then on, and which neither the root nor any other child may see:
 * the root's full verification after the children answered catches a write that leaked.
 */
#include "wl.h"
#include <sys/mman.h>

#define MAXC 256
#define OWN (64 << 10)
#define PAGE 4096

struct mailbox {
	volatile int ping;
	struct wl_slot s[MAXC];
};

static struct mailbox *mb;
static uint64_t *heap;
static size_t heap_words;
static int nchildren, me = -1;
static uint8_t *own;
/* Words this child has overwritten in its own copy (index -> value). */
static size_t written_at[1024];
static uint64_t written_val[1024];
static int nwritten;

static uint64_t word(size_t i)
{
	return (i + 1) * 0x9E3779B97F4A7C15ull ^ 0xC0FFEE;
}

static uint64_t expected(size_t i)
{
	for (int k = 0; k < nwritten; k++)
		if (written_at[k] == i)
			return written_val[k];
	return word(i);
}

static int check_range(size_t from, size_t to, size_t step)
{
	for (size_t i = from; i < to; i += step)
		if (heap[i] != expected(i))
			return wl_fail("%s %d: heap word %zu is %#llx, want %#llx",
				       me < 0 ? "root" : "child", me, i,
				       (unsigned long long)heap[i],
				       (unsigned long long)expected(i));
	return 1;
}

static int member_check(void)
{
	size_t per_page = PAGE / 8, per_mib = (1 << 20) / 8;
	size_t mibs = heap_words / per_mib;
	if (!check_range(0, heap_words, per_page))
		return 0;
	size_t m = (me + (size_t)mb->ping) % mibs;
	if (!check_range(m * per_mib, (m + 1) * per_mib, 1))
		return 0;
	size_t bad = wl_cmp(own, OWN, 100 + me);
	WL_CHECK(bad == (size_t)-1, "child %d: own memory differs at byte %zu", me, bad);
	if (me % 2 && nwritten < 1024) {
		/* A new word of page `me` of its copy. */
		size_t i = (size_t)me * per_page + 1 + nwritten;
		written_at[nwritten] = i;
		written_val[nwritten] = 0xdead000000000000ull | ((uint64_t)me << 16) | nwritten;
		heap[i] = written_val[nwritten];
		nwritten++;
	}
	return 1;
}

static void child_loop(int root)
{
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	own = malloc(OWN);
	if (!own)
		wl_die("malloc");
	wl_fill(own, OWN, 100 + me);
	struct wl_slot *s = &mb->s[me];
	s->ppid = root;
	s->pid = getpid();
	wl_slot_loop(s, &mb->ping, root, member_check, 5);
}

static const char *names[MAXC];

static int verify(void)
{
	if (!check_range(0, heap_words, 1))
		return 0;
	if (!wl_slots_ping(mb->s, nchildren, &mb->ping, names))
		return 0;
	/* The children's writes stay theirs. */
	return check_range(0, heap_words, 1);
}

static void corrupt(void)
{
	heap[heap_words / 2] ^= 1;
}

int main(int argc, char **argv)
{
	wl_init();
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 32;
	nchildren = argc > 3 ? atoi(argv[3]) : 8;
	if (mib < 1 || nchildren < 1 || nchildren > MAXC)
		wl_die("bad arguments");
	heap_words = (mib << 20) / 8;
	mb = mmap(NULL, sizeof(*mb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	heap = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mb == MAP_FAILED || heap == MAP_FAILED)
		wl_die("mmap");
	/* 4 KiB pages, so that a child's write copies one page, not 2 MiB. */
	madvise(heap, mib << 20, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < heap_words; i++)
		heap[i] = word(i);
	int root = getpid();
	static char namebuf[MAXC][16];
	for (int k = 0; k < nchildren; k++) {
		snprintf(namebuf[k], sizeof(namebuf[k]), "child %d", k);
		names[k] = namebuf[k];
		int pid = fork();
		if (pid < 0)
			wl_die("fork");
		if (pid == 0) {
			me = k;
			child_loop(root);
		}
	}
	if (!wl_slots_started(mb->s, nchildren))
		wl_die("children did not start");
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(10);
	}
}
