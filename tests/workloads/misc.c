/*
 * misc: per-process attributes survive a checkpoint.
 * Usage: misc WORKDIR   (protocol in wl.h)
 * Checks: pid/tid; umask 027; cwd WORKDIR/misc-cwd (path and inode); RLIMIT_NOFILE
 * soft limit lowered to 200 (hard kept) and RLIMIT_CORE soft 0; comm "ckpt-misc"
 * (PR_GET_NAME and /proc/self/comm); PR_SET_NO_NEW_PRIVS; personality
 * ADDR_NO_RANDOMIZE; nice 5; CPU affinity (the last CPU only, when there are >= 2);
 * /proc/self/exe, cmdline and auxv as at start; [vdso] at AT_SYSINFO_EHDR;
 * CLOCK_MONOTONIC and CLOCK_REALTIME through the vDSO agree with the raw syscall
 * within 1 ms; brk still grows (sbrk) and older sbrk'd memory keeps its data; rseq
 * still registered at glibc's area (a second registration gets EBUSY, and the
 * kernel keeps cpu_id up to date).
 */
#include "wl.h"
#include <sched.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/auxv.h>
#include <sys/stat.h>

#define COMM "ckpt-misc"
#define NICE 5
#define SBRK_CHUNK (64 * 1024)
#define MAX_CHUNKS 64

static pid_t pid0;
static char cwd0[4096];
static struct stat cwd_st;
static char exe0[4096];
static char cmdline0[8192];
static ssize_t cmdline0_len;
static char auxv0[4096];
static ssize_t auxv0_len;
static int ncpus, pinned_cpu = -1;
static rlim_t nofile_hard0;
static uint8_t *chunks[MAX_CHUNKS];
static int nchunks;

static int clocks_agree(clockid_t id, const char *name)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		struct timespec a, b, c;
		WL_CHECK(clock_gettime(id, &a) == 0, "%s vdso: %s", name, strerror(errno));
		WL_CHECK(syscall(SYS_clock_gettime, id, &b) == 0, "%s syscall", name);
		WL_CHECK(clock_gettime(id, &c) == 0, "%s vdso", name);
		int64_t ta = a.tv_sec * 1000000000LL + a.tv_nsec;
		int64_t tb = b.tv_sec * 1000000000LL + b.tv_nsec;
		int64_t tc = c.tv_sec * 1000000000LL + c.tv_nsec;
		/* the syscall's time must lie between the two vDSO reads, within 1 ms slack */
		if (tb >= ta - 1000000 && tb <= tc + 1000000 && tc - ta < 1000000)
			return 1;
		if (attempt == 4)
			return wl_fail("%s: vDSO %lld / syscall %lld / vDSO %lld ns disagree", name,
				       (long long)ta, (long long)tb, (long long)tc);
	}
	return 1;
}

static int verify(void)
{
	WL_CHECK(getpid() == pid0, "getpid() %d, was %d", (int)getpid(), (int)pid0);
	WL_CHECK(syscall(SYS_getpid) == pid0, "raw getpid() changed");
	WL_CHECK(syscall(SYS_gettid) == pid0, "gettid() %ld != pid %d", syscall(SYS_gettid),
		 (int)pid0);

	mode_t m = umask(027);
	WL_CHECK(m == 027, "umask %03o, want 027", (unsigned)m);

	char buf[8192];
	WL_CHECK(getcwd(buf, sizeof(buf)) && strcmp(buf, cwd0) == 0, "cwd %s, want %s", buf, cwd0);
	struct stat st;
	WL_CHECK(stat(".", &st) == 0 && st.st_ino == cwd_st.st_ino && st.st_dev == cwd_st.st_dev,
		 "cwd is another directory than at start");

	struct rlimit rl;
	WL_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == 200,
		 "RLIMIT_NOFILE soft %llu, want 200", (unsigned long long)rl.rlim_cur);
	WL_CHECK(rl.rlim_max == nofile_hard0, "RLIMIT_NOFILE hard %llu, was %llu",
		 (unsigned long long)rl.rlim_max, (unsigned long long)nofile_hard0);
	WL_CHECK(getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur == 0,
		 "RLIMIT_CORE soft %llu, want 0", (unsigned long long)rl.rlim_cur);

	char name[32] = { 0 };
	WL_CHECK(prctl(PR_GET_NAME, name) == 0 && strcmp(name, COMM) == 0, "comm '%s', want '%s'",
		 name, COMM);
	ssize_t n = wl_read_file("/proc/self/comm", buf, sizeof(buf) - 1);
	WL_CHECK(n > 0, "read /proc/self/comm");
	buf[n] = 0;
	WL_CHECK(strcmp(buf, COMM "\n") == 0, "/proc/self/comm '%s'", buf);
	WL_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs lost");

	int pers = personality(0xffffffff);
	WL_CHECK(pers != -1 && (pers & ADDR_NO_RANDOMIZE), "personality %#x lacks ADDR_NO_RANDOMIZE",
		 pers);

	errno = 0;
	int prio = getpriority(PRIO_PROCESS, 0);
	WL_CHECK(prio == NICE && errno == 0, "nice %d, want %d", prio, NICE);

	if (pinned_cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		WL_CHECK(sched_getaffinity(0, sizeof(set), &set) == 0, "sched_getaffinity");
		WL_CHECK(CPU_COUNT(&set) == 1 && CPU_ISSET(pinned_cpu, &set),
			 "CPU affinity: %d cpus, cpu %d %s", CPU_COUNT(&set), pinned_cpu,
			 CPU_ISSET(pinned_cpu, &set) ? "set" : "not set");
	}

	n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	WL_CHECK(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
	buf[n] = 0;
	WL_CHECK(strcmp(buf, exe0) == 0, "/proc/self/exe is %s, was %s", buf, exe0);
	n = wl_read_file("/proc/self/cmdline", buf, sizeof(buf));
	WL_CHECK(n == cmdline0_len && memcmp(buf, cmdline0, n) == 0,
		 "/proc/self/cmdline changed (%zd bytes, was %zd)", n, cmdline0_len);
	n = wl_read_file("/proc/self/auxv", buf, sizeof(buf));
	WL_CHECK(n == auxv0_len && memcmp(buf, auxv0, n) == 0,
		 "/proc/self/auxv changed (%zd bytes, was %zd)", n, auxv0_len);

	char line[1024];
	void *vdso = (void *)getauxval(AT_SYSINFO_EHDR);
	WL_CHECK(vdso && wl_maps_line(vdso, line, sizeof(line)) && strstr(line, "[vdso]"),
		 "no [vdso] at AT_SYSINFO_EHDR %p", vdso);
	if (!clocks_agree(CLOCK_MONOTONIC, "CLOCK_MONOTONIC") ||
	    !clocks_agree(CLOCK_REALTIME, "CLOCK_REALTIME"))
		return 0;

	/* older sbrk'd chunks kept their data; the heap still grows */
	for (int i = 0; i < nchunks; i++) {
		size_t bad = wl_cmp(chunks[i], SBRK_CHUNK, 50 + i);
		WL_CHECK(bad == (size_t)-1, "sbrk chunk %d at %p differs at %zu", i,
			 (void *)chunks[i], bad);
	}
	if (nchunks < MAX_CHUNKS) {
		void *p = sbrk(SBRK_CHUNK);
		WL_CHECK(p != (void *)-1, "sbrk(%d) failed after restore: %s", SBRK_CHUNK,
			 strerror(errno));
		WL_CHECK(!nchunks || (uint8_t *)p >= chunks[nchunks - 1] + SBRK_CHUNK,
			 "sbrk gave %p, below the last chunk %p", p, (void *)chunks[nchunks - 1]);
		wl_fill(p, SBRK_CHUNK, 50 + nchunks);
		chunks[nchunks++] = p;
		WL_CHECK(wl_maps_line(p, line, sizeof(line)) && strstr(line, "[heap]"),
			 "sbrk'd memory at %p is not in [heap]: %s", p, line);
	}

	/* rseq */
	struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	WL_CHECK(__rseq_size > 0, "glibc did not register rseq (cannot check)");
	long r = syscall(SYS_rseq, rs, 32, 0, 0x53053053);
	WL_CHECK(r == -1 && errno == EBUSY, "rseq probe: %ld errno %d (want EBUSY: registered)", r,
		 errno);
	unsigned cpu = rs->cpu_id;
	WL_CHECK(cpu < (unsigned)ncpus, "rseq cpu_id %u (not kept up to date)", cpu);
	if (pinned_cpu >= 0)
		WL_CHECK((int)cpu == pinned_cpu, "rseq cpu_id %u, pinned to %d", cpu, pinned_cpu);
	return 1;
}

static void corrupt(void)
{
	umask(0);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: misc WORKDIR");
	wl_init();
	pid0 = getpid();

	umask(027);
	char p[4200];
	snprintf(p, sizeof(p), "%s/misc-cwd", argv[1]);
	if (mkdir(p, 0755) && errno != EEXIST)
		wl_die("mkdir %s", p);
	if (chdir(p))
		wl_die("chdir %s", p);
	if (!getcwd(cwd0, sizeof(cwd0)) || stat(".", &cwd_st))
		wl_die("getcwd");

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		wl_die("getrlimit");
	nofile_hard0 = rl.rlim_max;
	rl.rlim_cur = 200;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		wl_die("setrlimit NOFILE");
	if (getrlimit(RLIMIT_CORE, &rl))
		wl_die("getrlimit");
	rl.rlim_cur = 0;
	if (setrlimit(RLIMIT_CORE, &rl))
		wl_die("setrlimit CORE");

	if (prctl(PR_SET_NAME, COMM, 0, 0, 0))
		wl_die("PR_SET_NAME");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		wl_die("PR_SET_NO_NEW_PRIVS");
	if (personality(ADDR_NO_RANDOMIZE) == -1)
		wl_die("personality");
	if (setpriority(PRIO_PROCESS, 0, NICE))
		wl_die("setpriority");

	ncpus = (int)sysconf(_SC_NPROCESSORS_CONF);
	if (ncpus >= 2) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(ncpus - 1, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			wl_die("sched_setaffinity");
		pinned_cpu = ncpus - 1;
	}

	ssize_t n = readlink("/proc/self/exe", exe0, sizeof(exe0) - 1);
	if (n <= 0)
		wl_die("readlink exe");
	exe0[n] = 0;
	cmdline0_len = wl_read_file("/proc/self/cmdline", cmdline0, sizeof(cmdline0));
	auxv0_len = wl_read_file("/proc/self/auxv", auxv0, sizeof(auxv0));
	if (cmdline0_len <= 0 || auxv0_len <= 0)
		wl_die("read /proc/self");

	for (int i = 0; i < 4; i++) {
		void *c = sbrk(SBRK_CHUNK);
		if (c == (void *)-1)
			wl_die("sbrk");
		wl_fill(c, SBRK_CHUNK, 50 + i);
		chunks[nchunks++] = c;
	}

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
