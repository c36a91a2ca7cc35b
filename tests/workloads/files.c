/*
 * files: open files survive a checkpoint (numbers, offsets, flags, data).
 * Usage: files WORKDIR   (protocol in wl.h)
 *  fd 0     /dev/null (from the test)
 *  fd 10    WORKDIR/files-ro.dat   O_RDONLY|O_NONBLOCK, FD_CLOEXEC; each check reads
 *           the next 1000 bytes and compares them with the file's pattern
 *  fd 11    WORKDIR/files-rw.dat   O_RDWR; the main loop reads 16 bytes and
 *           overwrites the next 16, so the offset keeps moving
 *  fd 12    dup of fd 11: must still share its offset after a restore
 *  fd 13    WORKDIR/files-log.txt  O_WRONLY|O_APPEND; the main loop appends lines
 *  fd 20    WORKDIR/files-dir      O_DIRECTORY, FD_CLOEXEC; openat() through it
 *  fd 21    /dev/zero              O_RDWR
 * Each is checked for: same inode as at setup, offset (lseek SEEK_CUR), access mode
 * and status flags (F_GETFL), FD_CLOEXEC (F_GETFD), and its data.
 */
#include "wl.h"
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define FD_RO 10
#define FD_RW 11
#define FD_RW_DUP 12
#define FD_LOG 13
#define FD_DIR 20
#define FD_DEVZERO 21

#define RO_SIZE (256 * 1024)
#define RW_SIZE (64 * 1024)
#define RO_CHUNK 1000

static char dir[4096];
static struct stat st_ro, st_rw, st_log, st_dir;
static off_t ro_off;     /* expected offset of FD_RO */
static off_t rw_off;     /* expected offset of FD_RW (and FD_RW_DUP) */
static uint64_t rw_gen;  /* how many 16-byte writes were made to files-rw.dat */
static off_t log_size;   /* expected size of the log */
static uint64_t ticks;
static uint8_t rw_shadow[RW_SIZE]; /* what files-rw.dat must contain */

static void path_of(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static void place(int fd, int want)
{
	if (fd < 0)
		wl_die("open for fd %d", want);
	if (dup2(fd, want) != want)
		wl_die("dup2 %d", want);
	close(fd);
}

static void write_file(const char *name, size_t size, uint64_t seed, uint8_t *copy)
{
	char p[4200];
	path_of(p, sizeof(p), name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		wl_die("create %s", p);
	static uint8_t buf[RO_SIZE];
	wl_fill(buf, size, seed);
	if (write(fd, buf, size) != (ssize_t)size)
		wl_die("write %s", p);
	if (copy)
		memcpy(copy, buf, size);
	close(fd);
}

static int same_file(int fd, const struct stat *want, const char *what)
{
	struct stat st;
	WL_CHECK(fstat(fd, &st) == 0, "%s: fd %d is closed (%s)", what, fd, strerror(errno));
	WL_CHECK(st.st_dev == want->st_dev && st.st_ino == want->st_ino,
		 "%s: fd %d is another file (dev %lu ino %lu, want %lu %lu)", what, fd,
		 (unsigned long)st.st_dev, (unsigned long)st.st_ino, (unsigned long)want->st_dev,
		 (unsigned long)want->st_ino);
	return 1;
}

static int flags_are(int fd, int fl, int cloexec, const char *what)
{
	int got = fcntl(fd, F_GETFL);
	int mask = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECTORY | O_SYNC | O_DIRECT | O_NOATIME;
	WL_CHECK(got != -1, "%s: F_GETFL: %s", what, strerror(errno));
	WL_CHECK((got & mask) == fl, "%s: fd %d flags %#o, want %#o", what, fd, got & mask, fl);
	int fdfl = fcntl(fd, F_GETFD);
	WL_CHECK(fdfl == (cloexec ? FD_CLOEXEC : 0), "%s: fd %d F_GETFD %d, want %d", what, fd,
		 fdfl, cloexec ? FD_CLOEXEC : 0);
	return 1;
}

static int offset_is(int fd, off_t want, const char *what)
{
	off_t got = lseek(fd, 0, SEEK_CUR);
	WL_CHECK(got == want, "%s: fd %d offset %lld, want %lld", what, fd, (long long)got,
		 (long long)want);
	return 1;
}

/* Light work of the main loop. */
static int work(void)
{
	/* rw: read 16 bytes, overwrite the next 16, wrap around */
	if (rw_off + 32 > RW_SIZE) {
		if (lseek(FD_RW, 0, SEEK_SET) != 0)
			return wl_fail("lseek rw: %s", strerror(errno));
		rw_off = 0;
	}
	uint8_t b[16];
	if (read(FD_RW, b, 16) != 16)
		return wl_fail("read rw at %lld: %s", (long long)rw_off, strerror(errno));
	if (memcmp(b, rw_shadow + rw_off, 16))
		return wl_fail("rw file data at %lld differs", (long long)rw_off);
	rw_gen++;
	for (int i = 0; i < 16; i++)
		b[i] = wl_pat(rw_gen, i);
	if (write(FD_RW_DUP, b, 16) != 16)
		return wl_fail("write rw: %s", strerror(errno));
	memcpy(rw_shadow + rw_off + 16, b, 16);
	rw_off += 32;

	/* log: append a line */
	char line[64];
	int n = snprintf(line, sizeof(line), "tick %llu\n", (unsigned long long)++ticks);
	if (write(FD_LOG, line, n) != n)
		return wl_fail("append log: %s", strerror(errno));
	log_size += n;
	return 1;
}

static int verify(void)
{
	struct stat st;
	/* stdin */
	WL_CHECK(fstat(0, &st) == 0, "fd 0 closed");
	WL_CHECK(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "fd 0 is not /dev/null");

	/* ro */
	if (!same_file(FD_RO, &st_ro, "ro") || !flags_are(FD_RO, O_RDONLY | O_NONBLOCK, 1, "ro") ||
	    !offset_is(FD_RO, ro_off, "ro"))
		return 0;
	static uint8_t buf[RO_CHUNK];
	if (ro_off + RO_CHUNK > RO_SIZE) {
		WL_CHECK(lseek(FD_RO, 0, SEEK_SET) == 0, "lseek ro");
		ro_off = 0;
	}
	WL_CHECK(read(FD_RO, buf, RO_CHUNK) == RO_CHUNK, "read ro at %lld: %s", (long long)ro_off,
		 strerror(errno));
	for (int i = 0; i < RO_CHUNK; i++)
		WL_CHECK(buf[i] == wl_pat(1, ro_off + i), "ro data at %lld wrong",
			 (long long)(ro_off + i));
	ro_off += RO_CHUNK;

	/* rw and its dup */
	if (!same_file(FD_RW, &st_rw, "rw") || !same_file(FD_RW_DUP, &st_rw, "rw dup") ||
	    !flags_are(FD_RW, O_RDWR, 0, "rw") || !flags_are(FD_RW_DUP, O_RDWR, 0, "rw dup") ||
	    !offset_is(FD_RW, rw_off, "rw") || !offset_is(FD_RW_DUP, rw_off, "rw dup"))
		return 0;
	WL_CHECK(lseek(FD_RW, 7, SEEK_CUR) == rw_off + 7, "lseek rw");
	WL_CHECK(lseek(FD_RW_DUP, 0, SEEK_CUR) == rw_off + 7,
		 "fd %d and its dup %d no longer share the file offset", FD_RW, FD_RW_DUP);
	WL_CHECK(lseek(FD_RW, rw_off, SEEK_SET) == rw_off, "lseek rw back");
	static uint8_t whole[RW_SIZE];
	WL_CHECK(pread(FD_RW, whole, RW_SIZE, 0) == RW_SIZE, "pread rw");
	WL_CHECK(memcmp(whole, rw_shadow, RW_SIZE) == 0, "files-rw.dat content differs");

	/* log */
	if (!same_file(FD_LOG, &st_log, "log") ||
	    !flags_are(FD_LOG, O_WRONLY | O_APPEND, 0, "log"))
		return 0;
	WL_CHECK(fstat(FD_LOG, &st) == 0 && st.st_size == log_size,
		 "log size %lld, want %lld", (long long)st.st_size, (long long)log_size);
	if (!offset_is(FD_LOG, log_size, "log"))
		return 0;

	/* directory */
	if (!same_file(FD_DIR, &st_dir, "dir") ||
	    !flags_are(FD_DIR, O_RDONLY | O_DIRECTORY, 1, "dir"))
		return 0;
	int fd = openat(FD_DIR, "inside.txt", O_RDONLY | O_CLOEXEC);
	WL_CHECK(fd >= 0, "openat(dirfd, inside.txt): %s", strerror(errno));
	char txt[64] = { 0 };
	ssize_t r = read(fd, txt, sizeof(txt) - 1);
	close(fd);
	WL_CHECK(r > 0 && strcmp(txt, "inside the directory\n") == 0,
		 "inside.txt read through the dir fd: %s", txt);

	/* /dev/zero */
	WL_CHECK(fstat(FD_DEVZERO, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5),
		 "fd %d is not /dev/zero", FD_DEVZERO);
	if (!flags_are(FD_DEVZERO, O_RDWR, 0, "zero"))
		return 0;
	memset(txt, 1, sizeof(txt));
	WL_CHECK(read(FD_DEVZERO, txt, sizeof(txt)) == sizeof(txt), "read /dev/zero");
	for (size_t i = 0; i < sizeof(txt); i++)
		WL_CHECK(txt[i] == 0, "/dev/zero gave non-zero");

	/* nothing else open: 0-2 and ours */
	for (int i = 3; i < 64; i++) {
		if (i == FD_RO || i == FD_RW || i == FD_RW_DUP || i == FD_LOG || i == FD_DIR ||
		    i == FD_DEVZERO)
			continue;
		WL_CHECK(fcntl(i, F_GETFD) == -1, "unexpected fd %d is open", i);
	}
	return 1;
}

static void corrupt(void)
{
	lseek(FD_RO, 1, SEEK_CUR);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: files WORKDIR");
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	wl_init();

	write_file("files-ro.dat", RO_SIZE, 1, NULL);
	write_file("files-rw.dat", RW_SIZE, 2, rw_shadow);
	char p[4200];
	path_of(p, sizeof(p), "files-dir");
	if (mkdir(p, 0755) && errno != EEXIST)
		wl_die("mkdir %s", p);
	path_of(p, sizeof(p), "files-dir/inside.txt");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "inside the directory\n", 21) != 21)
		wl_die("write %s", p);
	close(fd);

	path_of(p, sizeof(p), "files-ro.dat");
	place(open(p, O_RDONLY | O_NONBLOCK), FD_RO);
	fcntl(FD_RO, F_SETFD, FD_CLOEXEC);
	path_of(p, sizeof(p), "files-rw.dat");
	place(open(p, O_RDWR), FD_RW);
	if (dup2(FD_RW, FD_RW_DUP) != FD_RW_DUP)
		wl_die("dup2 rw");
	path_of(p, sizeof(p), "files-log.txt");
	place(open(p, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644), FD_LOG);
	path_of(p, sizeof(p), "files-dir");
	place(open(p, O_RDONLY | O_DIRECTORY), FD_DIR);
	fcntl(FD_DIR, F_SETFD, FD_CLOEXEC);
	place(open("/dev/zero", O_RDWR), FD_DEVZERO);

	if (fstat(FD_RO, &st_ro) || fstat(FD_RW, &st_rw) || fstat(FD_LOG, &st_log) ||
	    fstat(FD_DIR, &st_dir))
		wl_die("fstat");

	/* read part of the ro file, move the rw offset */
	static uint8_t buf[1234];
	if (read(FD_RO, buf, sizeof(buf)) != sizeof(buf))
		wl_die("read ro");
	ro_off = sizeof(buf);
	if (lseek(FD_RW, 3000, SEEK_SET) != 3000)
		wl_die("lseek rw");
	rw_off = 3000;

	wl_ready();
	for (;;) {
		if (!work()) {
			/* report at the next check; keep the reason */
			while (!wl_check_req && !wl_exit_req)
				wl_sleep_ms(20);
		}
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
