/*
 * rseq: a thread that spends nearly all its time inside an rseq critical section.
 * Usage: rseq WORKDIR   (protocol in wl.h)
 *  - uses glibc's rseq registration (glibc 2.35+; SETUP-ERROR without it);
 *  - the critical section (inline asm) points rseq_cs at its descriptor, spins a few
 *    milliseconds, and commits by storing the value rseq_cs has at that moment;
 *  - the kernel aborts the section on preemption, migration or a signal (clearing
 *    rseq_cs and jumping to the abort handler, which retries); it never clears rseq_cs
 *    under a section that goes on. So a commit that sees rseq_cs != its descriptor
 *    means the thread was resumed in the middle of the section without the abort (a
 *    checkpoint taken inside it and restored as is): counted, and the check fails.
 * The process is busy (one CPU) until killed.
 */
#include "wl.h"
#include <sys/rseq.h>

#define SPINS (1UL << 22)

static uint64_t commits, aborts, bad, bad_seen;
static uint64_t desc_addr;

static struct rseq *area(void)
{
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* One pass through the section: 1 if it committed (then *seen is rseq_cs at the
 * commit), 0 if the kernel aborted it. */
static int section(uint64_t *seen, uint64_t *desc)
{
	struct rseq *rs = area();
	int committed;
	__asm__ volatile(".pushsection .data.rseq_cs, \"aw\"\n\t"
			 ".balign 32\n"
			 "30:\n\t"
			 ".long 0, 0\n\t" /* version, flags */
			 ".quad 31f, 32f - 31f, 34f\n\t" /* start, post-commit offset, abort */
			 ".popsection\n\t"
			 "leaq 30b(%%rip), %%rax\n\t"
			 "movq %%rax, %[desc]\n\t"
			 "movq %%rax, %[cs]\n"
			 "31:\n\t" /* start of the section */
			 "movq %[spins], %%rcx\n"
			 "33:\n\t"
			 "decq %%rcx\n\t"
			 "jnz 33b\n\t"
			 "movq %[cs], %%rax\n\t"
			 "movq %%rax, %[seen]\n" /* the commit: last instruction inside */
			 "32:\n\t"
			 "movl $1, %[ok]\n\t"
			 "jmp 35f\n\t"
			 ".long 0x53053053\n" /* RSEQ_SIG, just before the abort handler */
			 "34:\n\t"
			 "movl $0, %[ok]\n"
			 "35:\n"
			 : [cs] "+m"(rs->rseq_cs), [seen] "=m"(*seen), [desc] "=m"(*desc),
			   [ok] "=r"(committed)
			 : [spins] "r"(SPINS)
			 : "rax", "rcx", "memory", "cc");
	return committed;
}

static int verify(void)
{
	WL_CHECK((int32_t)area()->cpu_id >= 0, "rseq no longer registered (cpu_id %d)",
		 (int32_t)area()->cpu_id);
	WL_CHECK(bad == 0,
		 "%llu commits saw rseq_cs %#llx instead of the descriptor %#llx: resumed inside "
		 "the critical section without its abort (%llu commits, %llu aborts)",
		 (unsigned long long)bad, (unsigned long long)bad_seen,
		 (unsigned long long)desc_addr, (unsigned long long)commits,
		 (unsigned long long)aborts);
	return 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	if (__rseq_size == 0)
		wl_die("glibc did not register rseq");
	uint64_t seen = 0, desc = 0;
	/* One pass first, so the descriptor address is known. */
	while (!section(&seen, &desc))
		;
	desc_addr = desc;
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		if (section(&seen, &desc)) {
			commits++;
			if (seen != desc_addr) {
				bad++;
				bad_seen = seen;
			}
		} else {
			aborts++;
		}
	}
}
