/*
 * kstate: per-process kernel state that a restore used to drop silently.
 * Usage: kstate WORKDIR MODE   (protocol in wl.h)
 * MODE:
 *  - loginuid: writes 4242 to /proc/self/loginuid (as root; only the task itself can);
 *    checks it reads 4242.
 *  - vmflags: four 4-page anonymous mappings with data: S (MADV_SEQUENTIAL, VmFlags
 *    "sr"), R (MADV_RANDOM, "rr"), N (MAP_NORESERVE, "nr"), D (MAP_DROPPABLE, "dp",
 *    without "ac": not ordinary memory), and A named "wl-name" (PR_SET_VMA_ANON_NAME,
 *    "[anon:wl-name]" in maps, where the kernel has CONFIG_ANON_VMA_NAME). Checks each VmFlags, the name, the data of S, R, N, A.
 *  - thp: PR_SET_THP_DISABLE 1; checks PR_GET_THP_DISABLE and THP_enabled 0 in status.
 *  - subreaper: PR_SET_CHILD_SUBREAPER 1; checks PR_GET_CHILD_SUBREAPER.
 *  - membarrier: registers GLOBAL_EXPEDITED, PRIVATE_EXPEDITED(_SYNC_CORE, _RSEQ);
 *    checks MEMBARRIER_CMD_GET_REGISTRATIONS and that the private expedited barriers
 *    it registered for succeed (EPERM if the registration was lost).
 *  - timerslack: PR_SET_TIMERSLACK 123456 ns; checks PR_GET_TIMERSLACK.
 *  - pdeathsig: PR_SET_PDEATHSIG SIGWINCH (restored only as a sibling of ckpt, whose
 *    parent it then has); checks PR_GET_PDEATHSIG.
 *  - mdwe: PR_SET_MDWE (memory-deny-write-execute; ckpt refuses it, and cannot map its
 *    executable scratch area in such a process); checks PR_GET_MDWE. It cannot be undone:
 *    corruption is faked.
 *  - coredump: writes 0x7b to /proc/self/coredump_filter; checks it reads 0000007b.
 *  - ioprio: ioprio_set(IOPRIO_WHO_PROCESS, 0, best-effort level 5); checks ioprio_get.
 *  - mempolicy: set_mempolicy(MPOL_PREFERRED, node 0) (which ckpt refuses); checks
 *    get_mempolicy.
 *  - mbind: a mapping with MPOL_PREFERRED node 0 of its own (refused); checks
 *    get_mempolicy(MPOL_F_ADDR) on it.
 *  - deadline: SCHED_DEADLINE (runtime 1 ms, deadline and period 30 ms; ckpt refuses
 *    it); checks sched_getscheduler.
 *  - tmpfile: an O_TMPFILE file in WORKDIR with 5 bytes (ckpt refuses it); checks them.
 *  - chroot: chroot()s into WORKDIR/croot (its libraries and executable stay outside)
 *    and works in /sub there; checks that / is that directory (inode), the cwd is /sub
 *    (path and inode), /marker is there and /proc is not (nothing of the host shows).
 *  - futexhash: makes a thread and joins it (the kernel gives the process a private
 *    futex hash then); checks PR_FUTEX_HASH_GET_SLOTS still says what it said after the
 *    join, and that a futex wait/wake pair still works.
 *  - cpuid: arch_prctl(ARCH_SET_CPUID, 0) (CPUID faults; where the CPU can), then makes a
 *    thread, which inherits it; checks ARCH_GET_CPUID is 0 in the main thread and in the
 *    thread (which answers each request of the main loop).
 *  - autogroup: setsid() (a new autogroup) and writes 7 to /proc/self/autogroup; checks
 *    it reads "nice 7".
 *  - keyring: makes a process keyring (keyctl; ckpt refuses it); checks it is there.
 *  - ldt: installs one LDT entry (modify_ldt; ckpt refuses it); checks it reads back.
 *  - rmdir: opens WORKDIR/rmd as fd 7 and enters WORKDIR/cwdgone, then removes both;
 *    checks fd 7 is a directory with no links whose /proc link is "WORKDIR/... (deleted)",
 *    that nothing can be made in it (ENOENT), that getcwd() fails (ENOENT) and that the
 *    working directory is such a directory too.
 *  - sockown: a UDP socket (fd 8) and a socketpair end (fd 9) owned by this process
 *    (F_SETOWN, no O_ASYNC: the owner gets SIGURG); checks F_GETOWN of both.
 *  - hostshm: a System V segment of the host's ipc namespace (IPC_PRIVATE, 3 pages,
 *    filled) attached as H; checks its bytes and that shmctl(IPC_STAT) of the id it got
 *    still gives 3 pages and one attach.
 *  - shmrmid: the same, removed (IPC_RMID) while attached (ckpt refuses it).
 *  - hostmq: a POSIX message queue of the host's ipc namespace, /ckpt-kstate-PID (4 x 32
 *    bytes, two messages in it), held as fd 11 (O_RDWR|O_NONBLOCK); checks the fd is a
 *    queue with two messages and O_NONBLOCK, and the very queue its name opens (inode).
 *  - lazyumount: a file on a tmpfs mounted at WORKDIR/lazy, open as fd 12, the tmpfs then
 *    unmounted lazily (umount -l: the fd's /proc path becomes "/f"; ckpt refuses it);
 *    checks fd 12 reads "on the detached tmpfs".
 *  - mqnotify: the same, and registered for its notification (mq_notify; ckpt refuses it);
 *    checks it still is (a second mq_notify is EBUSY).
 * Corruption (SIGTERM) undoes the state (membarrier: cannot unregister, faked).
 */
#include "wl.h"
#include <sys/mman.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/shm.h>
#include <mqueue.h>
#include <sys/mount.h>

#define PAGE 4096
#define NP 4
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#define LOGINUID 4242
#define SLACK 123456
#define MB_REGS (4 | 16 | 64 | 256)

#define COREDUMP_FILTER 0x7b
#define IOPRIO ((2 << 13) | 5)
#define MPOL_PREFERRED 1
#define MPOL_F_ADDR 2

static const char *mode;
static const char *workdir;

/* fd `fd` (or the cwd, fd -1) is an empty directory removed while in use, inside WORKDIR. */
static int removed_dir(int fd)
{
	char link[256], got[512] = { 0 };
	struct stat st;
	if (fd < 0)
		snprintf(link, sizeof(link), "/proc/self/cwd");
	else
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if (readlink(link, got, sizeof(got) - 1) < 0)
		return wl_fail("readlink %s: %s", link, strerror(errno));
	size_t n = strlen(got), w = strlen(workdir);
	if (strncmp(got, workdir, w) || n < 10 || strcmp(got + n - 10, " (deleted)"))
		return wl_fail("%s -> \"%s\", not a removed directory in %s", link, got, workdir);
	if ((fd < 0 ? stat(".", &st) : fstat(fd, &st)) || !S_ISDIR(st.st_mode) || st.st_nlink)
		return wl_fail("%s: not a directory without links (nlink %lu)", link,
			       (unsigned long)st.st_nlink);
	int c = openat(fd < 0 ? AT_FDCWD : fd, "new", O_CREAT | O_WRONLY, 0600);
	if (c >= 0 || errno != ENOENT)
		return wl_fail("%s: a file could be made in it (or errno %d)", link, errno);
	return 1;
}
static int tmpfd = -1;
static long hash_slots;

#define ARCH_GET_CPUID 0x1011
#define ARCH_SET_CPUID 0x1012
/* The cpuid thread's answer: -2 asked, else its ARCH_GET_CPUID. */
static volatile long thread_cpuid = -2;
static volatile int thread_asked;

static void *cpuid_thread(void *arg)
{
	for (;;) {
		if (thread_asked) {
			thread_cpuid = syscall(SYS_arch_prctl, ARCH_GET_CPUID, 0);
			thread_asked = 0;
		}
		wl_sleep_ms(5);
	}
	return arg;
}

static long ask_thread_cpuid(void)
{
	thread_cpuid = -2;
	thread_asked = 1;
	for (int i = 0; i < 2000 && thread_asked; i++)
		wl_sleep_ms(1);
	return thread_asked ? -3 : thread_cpuid;
}

static char mq_name[64];

/* The inode of the queue its name opens now, or -1. */
static long mq_named_ino(void)
{
	mqd_t q = mq_open(mq_name, O_RDONLY);
	struct stat st;
	long ino = q != (mqd_t)-1 && !fstat(q, &st) ? (long)st.st_ino : -1;
	if (q != (mqd_t)-1)
		mq_close(q);
	return ino;
}

static int autogroup_nice(void)
{
	char b[128] = { 0 };
	if (wl_read_file("/proc/self/autogroup", b, sizeof(b) - 1) <= 0)
		return -100;
	char *n = strstr(b, "nice ");
	return n ? atoi(n + 5) : -101;
}

static long ldt_bytes(void)
{
	uint8_t b[16];
	return syscall(SYS_modify_ldt, 0, b, sizeof(b));
}

static void *nothing(void *arg)
{
	return arg;
}
static uint8_t *S, *R, *N, *D, *A, *H;
static int shmid = -1;
static int named = 1;

static int read_loginuid(void)
{
	char b[32] = { 0 };
	if (wl_read_file("/proc/self/loginuid", b, sizeof(b) - 1) <= 0)
		return -1;
	return (int)strtoul(b, NULL, 10);
}

static int read_coredump_filter(void)
{
	char b[32] = { 0 };
	if (wl_read_file("/proc/self/coredump_filter", b, sizeof(b) - 1) <= 0)
		return -1;
	return (int)strtoul(b, NULL, 16);
}

static struct stat croot_st, sub_st, marker_st;

static int same_inode(const char *path, const struct stat *want)
{
	struct stat st;
	return stat(path, &st) == 0 && st.st_ino == want->st_ino && st.st_dev == want->st_dev;
}

static int policy_at(void *addr)
{
	int pol = -1;
	unsigned long nodes = 0;
	if (syscall(SYS_get_mempolicy, &pol, &nodes, 64, addr, addr ? MPOL_F_ADDR : 0))
		return -1;
	return pol;
}

static int verify(void)
{
	if (!strcmp(mode, "loginuid")) {
		WL_CHECK(read_loginuid() == LOGINUID, "loginuid %d, want %d", read_loginuid(),
			 LOGINUID);
	} else if (!strcmp(mode, "vmflags")) {
		WL_CHECK(wl_vm_flag(S, "sr") == 1, "S: no sr (MADV_SEQUENTIAL lost)");
		WL_CHECK(wl_vm_flag(R, "rr") == 1, "R: no rr (MADV_RANDOM lost)");
		WL_CHECK(wl_vm_flag(N, "nr") == 1, "N: no nr (MAP_NORESERVE lost)");
		WL_CHECK(wl_vm_flag(D, "dp") == 1, "D: no dp (MAP_DROPPABLE lost)");
		WL_CHECK(wl_vm_flag(D, "ac") == 0, "D: ac (restored as ordinary memory)");
		char line[1024];
		WL_CHECK(!named || (wl_maps_line(A, line, sizeof(line)) && strstr(line, "[anon:wl-name]")),
			 "A: maps line %s lacks its name", line);
		WL_CHECK(wl_cmp(S, NP * PAGE, 1) == (size_t)-1, "S data");
		WL_CHECK(wl_cmp(R, NP * PAGE, 2) == (size_t)-1, "R data");
		WL_CHECK(wl_cmp(N, NP * PAGE, 3) == (size_t)-1, "N data");
		WL_CHECK(wl_cmp(A, NP * PAGE, 5) == (size_t)-1, "A data");
	} else if (!strcmp(mode, "thp")) {
		WL_CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "PR_GET_THP_DISABLE %d",
			 prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
		WL_CHECK(wl_status_long("THP_enabled", 10) == 0, "THP_enabled %ld",
			 wl_status_long("THP_enabled", 10));
	} else if (!strcmp(mode, "subreaper")) {
		int v = -1;
		WL_CHECK(prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) == 0 && v == 1,
			 "PR_GET_CHILD_SUBREAPER %d", v);
	} else if (!strcmp(mode, "membarrier")) {
		long r = syscall(SYS_membarrier, 1 << 9, 0, 0);
		WL_CHECK(r == MB_REGS, "membarrier registrations %#lx, want %#x", r, MB_REGS);
		WL_CHECK(syscall(SYS_membarrier, 8, 0, 0) == 0, "PRIVATE_EXPEDITED: %s",
			 strerror(errno));
		WL_CHECK(syscall(SYS_membarrier, 32, 0, 0) == 0, "PRIVATE_EXPEDITED_SYNC_CORE: %s",
			 strerror(errno));
		WL_CHECK(syscall(SYS_membarrier, 128, 0, 0) == 0, "PRIVATE_EXPEDITED_RSEQ: %s",
			 strerror(errno));
	} else if (!strcmp(mode, "pdeathsig")) {
		int v = -1;
		WL_CHECK(prctl(PR_GET_PDEATHSIG, &v, 0, 0, 0) == 0 && v == SIGWINCH,
			 "PR_GET_PDEATHSIG %d", v);
	} else if (!strcmp(mode, "mdwe")) {
		WL_CHECK(prctl(66 /* PR_GET_MDWE */, 0, 0, 0, 0) == 1, "PR_GET_MDWE %d",
			 prctl(66, 0, 0, 0, 0));
	} else if (!strcmp(mode, "coredump")) {
		WL_CHECK(read_coredump_filter() == COREDUMP_FILTER, "coredump_filter %#x, want %#x",
			 read_coredump_filter(), COREDUMP_FILTER);
	} else if (!strcmp(mode, "ioprio")) {
		long p = syscall(SYS_ioprio_get, 1, 0);
		WL_CHECK(p == IOPRIO, "ioprio %#lx, want %#x", p, IOPRIO);
	} else if (!strcmp(mode, "futexhash")) {
		long now = prctl(78, 2, 0, 0, 0);
		WL_CHECK(now == hash_slots, "futex hash slots %ld, want %ld", now, hash_slots);
		pthread_t t;
		WL_CHECK(pthread_create(&t, NULL, nothing, NULL) == 0 && pthread_join(t, NULL) == 0,
			 "a thread after the restore");
	} else if (!strcmp(mode, "tmpfile")) {
		char b[8] = { 0 };
		WL_CHECK(pread(tmpfd, b, 5, 0) == 5 && !memcmp(b, "hello", 5), "tmpfile reads %s", b);
	} else if (!strcmp(mode, "deadline")) {
		WL_CHECK(sched_getscheduler(0) == 6, "policy %d", sched_getscheduler(0));
	} else if (!strcmp(mode, "mempolicy")) {
		WL_CHECK(policy_at(NULL) == MPOL_PREFERRED, "policy %d", policy_at(NULL));
	} else if (!strcmp(mode, "mbind")) {
		WL_CHECK(policy_at(S) == MPOL_PREFERRED, "policy of S %d", policy_at(S));
		WL_CHECK(wl_cmp(S, NP * PAGE, 1) == (size_t)-1, "S data");
	} else if (!strcmp(mode, "hostshm") || !strcmp(mode, "shmrmid")) {
		struct shmid_ds ds;
		WL_CHECK(wl_cmp(H, 3 * PAGE, 3) == (size_t)-1, "segment bytes");
		WL_CHECK(!shmctl(shmid, IPC_STAT, &ds) && ds.shm_segsz == 3 * PAGE && ds.shm_nattch == 1,
			 "segment %d: IPC_STAT %s, %zu bytes, %lu attached", shmid, strerror(errno),
			 (size_t)ds.shm_segsz, (unsigned long)ds.shm_nattch);
	} else if (!strcmp(mode, "lazyumount")) {
		char b[32] = "";
		WL_CHECK(pread(12, b, sizeof(b) - 1, 0) == 21 && !strcmp(b, "on the detached tmpfs"),
			 "fd 12 reads \"%s\"", b);
	} else if (!strcmp(mode, "hostmq") || !strcmp(mode, "mqnotify")) {
		struct mq_attr a = { 0 };
		struct stat st = { 0 };
		WL_CHECK(!mq_getattr(11, &a) && a.mq_curmsgs == 2 && a.mq_msgsize == 32 &&
				 (a.mq_flags & O_NONBLOCK),
			 "fd 11: mq_getattr %s, %ld messages, flags %lx", strerror(errno), a.mq_curmsgs,
			 a.mq_flags);
		if (!strcmp(mode, "mqnotify")) {
			/* Still registered: a second registration is EBUSY (closing another fd of
			 * the queue, as mq_named_ino does, would end the registration). */
			struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
			WL_CHECK(mq_notify(11, &ev) && errno == EBUSY, "fd 11: no mq_notify registration");
		} else {
			WL_CHECK(!fstat(11, &st) && (long)st.st_ino == mq_named_ino(),
				 "fd 11 is inode %lu, %s is %ld", (unsigned long)st.st_ino, mq_name,
				 mq_named_ino());
		}
	} else if (!strcmp(mode, "sockown")) {
		WL_CHECK(fcntl(8, F_GETOWN) == getpid() && fcntl(9, F_GETOWN) == getpid(),
			 "owners %d and %d, not %d", fcntl(8, F_GETOWN), fcntl(9, F_GETOWN), getpid());
	} else if (!strcmp(mode, "rmdir")) {
		char cwd[256];
		WL_CHECK(removed_dir(7), "fd 7");
		WL_CHECK(removed_dir(-1), "cwd");
		WL_CHECK(!getcwd(cwd, sizeof(cwd)) && errno == ENOENT, "getcwd works: %s", cwd);
	} else if (!strcmp(mode, "cpuid")) {
		long main_cpuid = syscall(SYS_arch_prctl, ARCH_GET_CPUID, 0);
		long t = ask_thread_cpuid();
		WL_CHECK(main_cpuid == 0 && t == 0, "ARCH_GET_CPUID: main %ld, thread %ld", main_cpuid,
			 t);
	} else if (!strcmp(mode, "autogroup")) {
		WL_CHECK(autogroup_nice() == 7, "autogroup nice %d", autogroup_nice());
	} else if (!strcmp(mode, "keyring")) {
		long k = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -2 /* PROCESS */, 0);
		WL_CHECK(k > 0, "process keyring %ld", k);
	} else if (!strcmp(mode, "ldt")) {
		WL_CHECK(ldt_bytes() == 16, "LDT read gives %ld bytes", ldt_bytes());
	} else if (!strcmp(mode, "timerslack")) {
		WL_CHECK(prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == SLACK, "timer slack %d",
			 prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0));
	} else if (!strcmp(mode, "chroot")) {
		char cwd[256] = "";
		WL_CHECK(same_inode("/", &croot_st), "/ is not the chroot directory");
		WL_CHECK(getcwd(cwd, sizeof(cwd)) && !strcmp(cwd, "/sub"), "cwd \"%s\"", cwd);
		WL_CHECK(same_inode(".", &sub_st), "cwd is not /sub's inode");
		WL_CHECK(same_inode("/marker", &marker_st), "/marker is not there");
		struct stat st;
		WL_CHECK(stat("/proc/self", &st) != 0, "the host's /proc shows inside the chroot");
	}
	return 1;
}

static void corrupt(void)
{
	if (!strcmp(mode, "loginuid")) {
		FILE *f = fopen("/proc/self/loginuid", "w");
		if (f) {
			fprintf(f, "4343");
			fclose(f);
		}
	} else if (!strcmp(mode, "vmflags")) {
		madvise(S, NP * PAGE, MADV_NORMAL);
	} else if (!strcmp(mode, "thp")) {
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
	} else if (!strcmp(mode, "subreaper")) {
		prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	} else if (!strcmp(mode, "timerslack")) {
		prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0);
	} else if (!strcmp(mode, "hostshm")) {
		H[PAGE + 5] ^= 1;
	} else if (!strcmp(mode, "hostmq")) {
		char m[32];
		if (mq_receive(11, m, sizeof(m), NULL) < 0)
			wl_die("mq_receive");
	} else if (!strcmp(mode, "sockown")) {
		fcntl(9, F_SETOWN, 0);
	} else if (!strcmp(mode, "rmdir")) {
		if (chdir(workdir))
			wl_fail("chdir");
	} else if (!strcmp(mode, "cpuid")) {
		syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
	} else if (!strcmp(mode, "autogroup")) {
		int fd = open("/proc/self/autogroup", O_WRONLY);
		if (fd < 0 || write(fd, "3", 1) != 1)
			wl_die("write autogroup");
		close(fd);
	} else if (!strcmp(mode, "pdeathsig")) {
		prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
	} else if (!strcmp(mode, "coredump")) {
		int fd = open("/proc/self/coredump_filter", O_WRONLY);
		if (fd < 0 || write(fd, "0x33", 4) != 4)
			wl_die("write coredump_filter");
		close(fd);
	} else if (!strcmp(mode, "ioprio")) {
		syscall(SYS_ioprio_set, 1, 0, 0);
	} else if (!strcmp(mode, "mempolicy")) {
		syscall(SYS_set_mempolicy, 0, NULL, 0);
	} else if (!strcmp(mode, "futexhash")) {
		hash_slots += 1;
	} else if (!strcmp(mode, "chroot")) {
		if (chdir("/"))
			wl_fail("chdir /");
	} else {
		wl_fail("corrupted on request");
	}
}

static uint8_t *map(int flags, uint64_t seed)
{
	uint8_t *p = mmap(NULL, NP * PAGE, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		wl_die("mmap(flags %#x)", flags);
	if (seed)
		wl_fill(p, NP * PAGE, seed);
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		wl_die("usage: kstate WORKDIR MODE");
	wl_init();
	mode = argv[2];
	workdir = argv[1];
	if (!strcmp(mode, "chroot")) {
		char root[4096], path[4200];
		snprintf(root, sizeof(root), "%s/croot", argv[1]);
		snprintf(path, sizeof(path), "%s/sub", root);
		if (mkdir(root, 0755) || mkdir(path, 0755) || stat(root, &croot_st) ||
		    stat(path, &sub_st))
			wl_die("mkdir %s", path);
		snprintf(path, sizeof(path), "%s/marker", root);
		int fd = open(path, O_CREAT | O_WRONLY, 0644);
		if (fd < 0 || fstat(fd, &marker_st))
			wl_die("create %s", path);
		close(fd);
		if (chroot(root) || chdir("/sub"))
			wl_die("chroot %s", root);
	}
	if (!strcmp(mode, "loginuid")) {
		FILE *f = fopen("/proc/self/loginuid", "w");
		if (!f || fprintf(f, "%d", LOGINUID) < 0 || fclose(f))
			wl_die("write /proc/self/loginuid");
	} else if (!strcmp(mode, "vmflags")) {
		/* Each differs from its neighbours in flags or name: none merge. */
		S = map(MAP_PRIVATE, 1);
		R = map(MAP_PRIVATE, 2);
		N = map(MAP_PRIVATE | MAP_NORESERVE, 3);
		D = map(MAP_DROPPABLE, 4);
		A = map(MAP_PRIVATE, 5);
		if (madvise(S, NP * PAGE, MADV_SEQUENTIAL) || madvise(R, NP * PAGE, MADV_RANDOM))
			wl_die("madvise");
		/* EINVAL: a kernel without CONFIG_ANON_VMA_NAME (this one): nothing to name. */
		if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, A, NP * PAGE, "wl-name")) {
			if (errno != EINVAL)
				wl_die("PR_SET_VMA_ANON_NAME");
			printf("INFO no anonymous VMA names on this kernel\n");
			named = 0;
		}
	} else if (!strcmp(mode, "thp")) {
		if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
			wl_die("PR_SET_THP_DISABLE");
	} else if (!strcmp(mode, "subreaper")) {
		if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
			wl_die("PR_SET_CHILD_SUBREAPER");
	} else if (!strcmp(mode, "membarrier")) {
		for (int cmd = 4; cmd <= 256; cmd *= 4)
			if (syscall(SYS_membarrier, cmd, 0, 0))
				wl_die("membarrier register %#x", cmd);
	} else if (!strcmp(mode, "timerslack")) {
		if (prctl(PR_SET_TIMERSLACK, SLACK, 0, 0, 0))
			wl_die("PR_SET_TIMERSLACK");
	} else if (!strcmp(mode, "pdeathsig")) {
		if (prctl(PR_SET_PDEATHSIG, SIGWINCH, 0, 0, 0))
			wl_die("PR_SET_PDEATHSIG");
	} else if (!strcmp(mode, "coredump")) {
		int fd = open("/proc/self/coredump_filter", O_WRONLY);
		if (fd < 0 || write(fd, "0x7b", 4) != 4)
			wl_die("write coredump_filter");
		close(fd);
	} else if (!strcmp(mode, "ioprio")) {
		if (syscall(SYS_ioprio_set, 1, 0, IOPRIO))
			wl_die("ioprio_set");
	} else if (!strcmp(mode, "mempolicy")) {
		unsigned long node0 = 1;
		if (syscall(SYS_set_mempolicy, MPOL_PREFERRED, &node0, 64))
			wl_die("set_mempolicy");
	} else if (!strcmp(mode, "futexhash")) {
		pthread_t t;
		if (pthread_create(&t, NULL, nothing, NULL) || pthread_join(t, NULL))
			wl_die("pthread");
		hash_slots = prctl(78 /* PR_FUTEX_HASH */, 2 /* GET_SLOTS */, 0, 0, 0);
		if (hash_slots < 0)
			hash_slots = 0; /* a kernel without private futex hashes */
	} else if (!strcmp(mode, "tmpfile")) {
		tmpfd = open(argv[1], O_TMPFILE | O_RDWR, 0600);
		if (tmpfd < 0 || write(tmpfd, "hello", 5) != 5)
			wl_die("O_TMPFILE in %s", argv[1]);
	} else if (!strcmp(mode, "deadline")) {
		struct {
			uint32_t size, policy;
			uint64_t flags;
			int32_t nice;
			uint32_t prio;
			uint64_t runtime, deadline, period;
		} a = { sizeof(a), 6, 0, 0, 0, 1000000, 30000000, 30000000 };
		if (syscall(SYS_sched_setattr, 0, &a, 0))
			wl_die("sched_setattr(SCHED_DEADLINE)");
	} else if (!strcmp(mode, "mbind")) {
		unsigned long node0 = 1;
		S = map(MAP_PRIVATE, 0);
		if (syscall(SYS_mbind, S, NP * PAGE, MPOL_PREFERRED, &node0, 64, 0))
			wl_die("mbind");
		wl_fill(S, NP * PAGE, 1);
	} else if (!strcmp(mode, "hostshm") || !strcmp(mode, "shmrmid")) {
		shmid = shmget(IPC_PRIVATE, 3 * PAGE, IPC_CREAT | 0600);
		if (shmid < 0 || (H = shmat(shmid, NULL, 0)) == (void *)-1)
			wl_die("shmget/shmat");
		wl_fill(H, 3 * PAGE, 3);
		if (!strcmp(mode, "shmrmid") && shmctl(shmid, IPC_RMID, NULL))
			wl_die("IPC_RMID");
	} else if (!strcmp(mode, "lazyumount")) {
		char dir[4200], f[4300];
		snprintf(dir, sizeof(dir), "%s/lazy", workdir);
		snprintf(f, sizeof(f), "%s/f", dir);
		int fd;
		if (mkdir(dir, 0755) || mount("none", dir, "tmpfs", 0, "size=64k") ||
		    (fd = open(f, O_RDWR | O_CREAT, 0600)) < 0 ||
		    write(fd, "on the detached tmpfs", 21) != 21 || dup2(fd, 12) != 12 ||
		    umount2(dir, MNT_DETACH))
			wl_die("a file on a lazily unmounted tmpfs in %s", dir);
		close(fd);
	} else if (!strcmp(mode, "hostmq") || !strcmp(mode, "mqnotify")) {
		struct mq_attr a = { .mq_maxmsg = 4, .mq_msgsize = 32 };
		snprintf(mq_name, sizeof(mq_name), "/ckpt-kstate-%d", getpid());
		mqd_t q = mq_open(mq_name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &a);
		if (q == (mqd_t)-1 || dup2(q, 11) != 11 || mq_send(11, "one", 3, 1) ||
		    mq_send(11, "two", 3, 5))
			wl_die("mq_open/mq_send %s", mq_name);
		close(q);
		struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
		signal(SIGUSR2, SIG_IGN);
		if (!strcmp(mode, "mqnotify") && mq_notify(11, &ev))
			wl_die("mq_notify");
	} else if (!strcmp(mode, "sockown")) {
		int u = socket(AF_INET, SOCK_DGRAM, 0), sv[2];
		if (u < 0 || dup2(u, 8) != 8 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) ||
		    dup2(sv[0], 9) != 9 || fcntl(8, F_SETOWN, getpid()) || fcntl(9, F_SETOWN, getpid()))
			wl_die("owned sockets");
		close(u);
		close(sv[0]);
	} else if (!strcmp(mode, "rmdir")) {
		char a[4200], b[4200];
		snprintf(a, sizeof(a), "%s/rmd", workdir);
		snprintf(b, sizeof(b), "%s/cwdgone", workdir);
		int fd;
		if (mkdir(a, 0755) || mkdir(b, 0755) || (fd = open(a, O_RDONLY | O_DIRECTORY)) < 0 ||
		    dup2(fd, 7) != 7 || chdir(b) || rmdir(a) || rmdir(b))
			wl_die("removed directories in %s", workdir);
		close(fd);
	} else if (!strcmp(mode, "cpuid")) {
		pthread_t t;
		if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0))
			wl_die("ARCH_SET_CPUID 0 (a CPU without CPUID faulting?)");
		if (pthread_create(&t, NULL, cpuid_thread, NULL))
			wl_die("pthread_create");
	} else if (!strcmp(mode, "autogroup")) {
		int fd;
		if (getsid(0) != getpid() && setsid() < 0)
			wl_die("setsid");
		fd = open("/proc/self/autogroup", O_WRONLY);
		if (fd < 0 || write(fd, "7", 1) != 1)
			wl_die("write /proc/self/autogroup");
		close(fd);
	} else if (!strcmp(mode, "keyring")) {
		if (syscall(SYS_keyctl, 0, -2, 1) < 0)
			wl_die("keyctl: make a process keyring");
	} else if (!strcmp(mode, "ldt")) {
		struct {
			unsigned int entry_number, base_addr, limit, flags;
		} d = { 0, 0, 0xfffff, 1 /* seg_32bit */ | (1 << 4) /* limit_in_pages */ |
					       (1 << 6) /* useable */ };
		if (syscall(SYS_modify_ldt, 1, &d, sizeof(d)))
			wl_die("modify_ldt");
	} else if (!strcmp(mode, "mdwe")) {
		if (prctl(65 /* PR_SET_MDWE */, 1 /* MDWE_REFUSE_EXEC_GAIN */, 0, 0, 0))
			wl_die("PR_SET_MDWE");
	} else if (strcmp(mode, "chroot")) {
		wl_die("unknown mode %s", mode);
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
