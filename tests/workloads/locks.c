/*
 * locks: file locks and leases held through fds survive a checkpoint.
 * Usage: locks WORKDIR MODE   (protocol in wl.h)
 * MODE (the file is WORKDIR/locked, held on fd 5, dup'ed to fd 6):
 *  - flock_sh / flock_ex: flock(LOCK_SH / LOCK_EX). Checked from that second open
 *    file description: LOCK_EX|LOCK_NB must fail with EWOULDBLOCK; for a shared
 *    lock LOCK_SH|LOCK_NB must succeed (and is dropped again).
 *  - posix: F_SETLK write lock on bytes [10, 15) and a read lock from 100 to EOF.
 *  - ofd: F_OFD_SETLK read lock on bytes [0, 50) and write lock on [60, 70).
 *    posix and ofd are checked with F_OFD_GETLK from a second description, opened at
 *    setup and never closed (closing it would drop POSIX locks), which sees
 *    the locks of every other owner: each range reports its lock with type, start and
 *    length, and the gaps between them report none.
 *  - flock_mapped: flock(LOCK_EX) through a third description, then mapped and its fd
 *    closed: the lock is held through no fd, only the mapping (as the JVM holds its
 *    hsperfdata file). Corruption unmaps it.
 *  - lease_rd / lease_wr: F_SETLEASE F_RDLCK on an O_RDONLY fd / F_WRLCK on O_RDWR,
 *    with F_SETSIG SIGRTMIN+3 as the lease-break signal; checked with F_GETLEASE and
 *    F_GETSIG.
 * Every mode also checks its fdinfo has as many `lock:` lines as it holds locks.
 * Corruption (SIGTERM) releases the locks.
 */
#include "wl.h"
#include <sys/file.h>
#include <sys/mman.h>

#define FD 5

static const char *mode;
static char path[4096];
/* The second open file description the locks are probed through: opened once and never
 * closed (closing any fd of the file would drop the process's POSIX locks on it). */
static int o = -1;
/* flock_mapped: the mapping that alone holds the locked description. */
static void *mapped;

static int nlocks(void)
{
	char buf[4096];
	ssize_t n = wl_read_file("/proc/self/fdinfo/5", buf, sizeof(buf) - 1);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	int c = 0;
	for (char *p = buf; (p = strstr(p, "lock:")); p++)
		c++;
	return c;
}

/* F_OFD_GETLK through `fd` for [start, start+len): the conflicting type, or F_UNLCK. */
static int probe(int fd, short type, off_t start, off_t len, struct flock *out)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, F_OFD_GETLK, &fl))
		return -1;
	if (out)
		*out = fl;
	return fl.l_type;
}

static int check_range(int o, off_t start, off_t len, short want)
{
	struct flock fl = { 0 };
	int t = probe(o, F_WRLCK, start, len, &fl);
	WL_CHECK(t == want, "[%ld, +%ld): conflicting lock type %d, want %d", (long)start,
		 (long)len, t, want);
	if (want != F_UNLCK)
		WL_CHECK(fl.l_start == start && fl.l_len == len,
			 "[%ld, +%ld): the lock found is [%ld, +%ld)", (long)start, (long)len,
			 (long)fl.l_start, (long)fl.l_len);
	return 1;
}

static int verify(void)
{
	int ok = 1;
	if (!strncmp(mode, "flock", 5)) {
		int r = flock(o, LOCK_EX | LOCK_NB);
		if (r == 0 || errno != EWOULDBLOCK)
			ok = wl_fail("an exclusive flock from elsewhere got %d (%s): lock lost", r,
				     r ? strerror(errno) : "granted");
		if (ok && !strcmp(mode, "flock_sh")) {
			if (flock(o, LOCK_SH | LOCK_NB))
				ok = wl_fail("a shared flock from elsewhere: %s", strerror(errno));
			else
				flock(o, LOCK_UN);
		}
		/* flock_mapped: the lock is on a description no fd holds. */
		if (ok && nlocks() != !!strcmp(mode, "flock_mapped"))
			ok = wl_fail("fdinfo shows %d locks", nlocks());
	} else if (!strcmp(mode, "posix")) {
		ok = check_range(o, 10, 5, F_WRLCK) && check_range(o, 0, 10, F_UNLCK) &&
		     check_range(o, 15, 85, F_UNLCK) && check_range(o, 100, 0, F_RDLCK);
		if (ok && nlocks() != 2)
			ok = wl_fail("fdinfo shows %d locks", nlocks());
	} else if (!strcmp(mode, "ofd")) {
		ok = check_range(o, 0, 50, F_RDLCK) && check_range(o, 50, 10, F_UNLCK) &&
		     check_range(o, 60, 10, F_WRLCK) && check_range(o, 70, 0, F_UNLCK);
		if (ok && nlocks() != 2)
			ok = wl_fail("fdinfo shows %d locks", nlocks());
	} else {
		int want = strcmp(mode, "lease_rd") ? F_WRLCK : F_RDLCK;
		int got = fcntl(FD, F_GETLEASE);
		if (got != want)
			ok = wl_fail("F_GETLEASE %d, want %d", got, want);
		if (ok && fcntl(FD, F_GETSIG) != SIGRTMIN + 3)
			ok = wl_fail("F_GETSIG %d, want %d", fcntl(FD, F_GETSIG), SIGRTMIN + 3);
		if (ok && nlocks() != 1)
			ok = wl_fail("fdinfo shows %d locks", nlocks());
	}
	return ok;
}

static void corrupt(void)
{
	if (!strcmp(mode, "flock_mapped")) {
		munmap(mapped, 4096); /* the description's last reference: the lock goes */
	} else if (!strncmp(mode, "flock", 5)) {
		flock(FD, LOCK_UN);
	} else if (!strncmp(mode, "lease", 5)) {
		fcntl(FD, F_SETLEASE, F_UNLCK);
	} else {
		struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
		fcntl(FD, strcmp(mode, "ofd") ? F_SETLK : F_OFD_SETLK, &fl);
	}
}

static void lock(int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(FD, cmd, &fl))
		wl_die("fcntl lock [%ld, +%ld)", (long)start, (long)len);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		wl_die("usage: locks WORKDIR MODE");
	wl_init();
	mode = argv[2];
	snprintf(path, sizeof(path), "%s/locked", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "0123456789", 10) != 10)
		wl_die("create %s", path);
	close(fd);
	fd = open(path, !strcmp(mode, "lease_rd") ? O_RDONLY : O_RDWR);
	if (fd < 0 || dup2(fd, FD) != FD || dup2(FD, FD + 1) != FD + 1)
		wl_die("open %s", path);
	close(fd);
	/* Not for a lease: any other open breaks it (SIGIO). */
	if (strncmp(mode, "lease", 5) && (o = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		wl_die("open %s again", path);
	if (!strcmp(mode, "flock_sh") || !strcmp(mode, "flock_ex")) {
		if (flock(FD, strcmp(mode, "flock_sh") ? LOCK_EX : LOCK_SH))
			wl_die("flock");
	} else if (!strcmp(mode, "posix")) {
		lock(F_SETLK, F_WRLCK, 10, 5);
		lock(F_SETLK, F_RDLCK, 100, 0);
	} else if (!strcmp(mode, "ofd")) {
		lock(F_OFD_SETLK, F_RDLCK, 0, 50);
		lock(F_OFD_SETLK, F_WRLCK, 60, 10);
	} else if (!strcmp(mode, "flock_mapped")) {
		/* A lock only a mapping keeps: its description has no fd left. */
		int m = open(path, O_RDWR | O_CLOEXEC);
		if (m < 0 || flock(m, LOCK_EX) ||
		    (mapped = mmap(NULL, 4096, PROT_READ, MAP_SHARED, m, 0)) == MAP_FAILED)
			wl_die("flock and map %s", path);
		close(m);
	} else if (!strcmp(mode, "lease_rd") || !strcmp(mode, "lease_wr")) {
		if (fcntl(FD, F_SETSIG, SIGRTMIN + 3) ||
		    fcntl(FD, F_SETLEASE, strcmp(mode, "lease_rd") ? F_WRLCK : F_RDLCK))
			wl_die("F_SETSIG / F_SETLEASE");
	} else {
		wl_die("unknown mode %s", mode);
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
