/*
 * fifo: named pipes (FIFOs) survive a checkpoint, with their unread bytes, and a task
 * blocked in read() on one of them is still blocked after the restore.
 * Usage: fifo WORKDIR   (protocol in wl.h)
 *
 * Setup: WORKDIR/fifo-data and WORKDIR/fifo-wake are created with mkfifo and opened
 * O_RDWR on fds 10 and 11. "ABCDEFGH" is written into fifo-data and never consumed
 * (its capacity is raised to 128 KiB); fifo-wake stays empty.
 *
 * Main loop: a BLOCKING read() of fifo-wake (fd 11). The signal handlers are installed
 * without SA_RESTART, so a signal interrupts that read with EINTR. To close the race of
 * a signal landing between the flag test and the read, every handler also writes one
 * marker byte (0xff) into fifo-wake: the read returns at once and the marker is ignored.
 * Any other byte comes from the test, which writes 'a', 'b', ... one at a time and
 * waits for the line "WOKE <n> <byte>" after each one (n counts the test's bytes).
 *
 * Checks: fifo-data still holds exactly "ABCDEFGH" (read with O_NONBLOCK set for the
 * moment, then written back), its capacity is still 128 KiB, both fds are still O_RDWR
 * FIFOs on the same inodes as the paths, fd 11 is still blocking; the bytes read from
 * fifo-wake are exactly the test's ('a' + k), one per read; no read() ever failed with
 * anything but EINTR, never returned EOF, and never returned EINTR without one of our
 * handlers having run.
 */
#include "wl.h"
#include <sys/stat.h>

#define DATA_FD 10
#define WAKE_FD 11
#define PIPE_CAP (128 * 1024)
#define MARKER 0xff

static const char unread[] = "ABCDEFGH";
static struct stat data_st, wake_st;
static char data_path[4200], wake_path[4200];

static volatile sig_atomic_t handled; /* bumped by every handler */
static uint64_t got;                  /* bytes from the test so far */
static uint64_t eintr_ok;             /* reads interrupted by one of our handlers */
static char fail_reason[256];

static void on_signal(int sig)
{
	int saved = errno;
	wl_on_signal(sig);
	handled++;
	unsigned char m = MARKER;
	/* fifo-wake is ours O_RDWR: never blocks unless 64 KiB of markers piled up */
	ssize_t r = write(WAKE_FD, &m, 1);
	(void)r;
	errno = saved;
}

static void note_fail(const char *fmt, ...)
{
	if (fail_reason[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fail_reason, sizeof(fail_reason), fmt, ap);
	va_end(ap);
}

static int check_fd(int fd, const char *path, const struct stat *st0, const char *what)
{
	struct stat st, pst;
	WL_CHECK(fstat(fd, &st) == 0, "%s: fstat fd %d: %s", what, fd, strerror(errno));
	WL_CHECK(S_ISFIFO(st.st_mode), "%s: fd %d is not a FIFO (mode %o)", what, fd,
		 (unsigned)st.st_mode);
	WL_CHECK(stat(path, &pst) == 0, "%s: stat %s: %s", what, path, strerror(errno));
	WL_CHECK(st.st_ino == pst.st_ino && st.st_dev == pst.st_dev,
		 "%s: fd %d is not the FIFO at %s any more", what, fd, path);
	WL_CHECK(st.st_ino == st0->st_ino && st.st_dev == st0->st_dev,
		 "%s: fd %d is another inode than at start", what, fd);
	int fl = fcntl(fd, F_GETFL);
	WL_CHECK(fl != -1 && (fl & O_ACCMODE) == O_RDWR, "%s: fd %d flags %#x, want O_RDWR", what,
		 fd, fl);
	WL_CHECK(!(fl & O_NONBLOCK), "%s: fd %d is O_NONBLOCK (flags %#x)", what, fd, fl);
	int fdfl = fcntl(fd, F_GETFD);
	WL_CHECK(fdfl == 0, "%s: fd %d FD flags %#x, want 0", what, fd, fdfl);
	return 1;
}

static int verify(void)
{
	WL_CHECK(!fail_reason[0], "%s", fail_reason);
	if (!check_fd(DATA_FD, data_path, &data_st, "fifo-data") ||
	    !check_fd(WAKE_FD, wake_path, &wake_st, "fifo-wake"))
		return 0;

	int cap = fcntl(DATA_FD, F_GETPIPE_SZ);
	WL_CHECK(cap == PIPE_CAP, "fifo-data capacity %d, want %d", cap, PIPE_CAP);

	/* The unread bytes: take them out without blocking, compare, put them back. */
	int fl = fcntl(DATA_FD, F_GETFL);
	WL_CHECK(fcntl(DATA_FD, F_SETFL, fl | O_NONBLOCK) == 0, "F_SETFL O_NONBLOCK");
	char buf[260];
	ssize_t n = read(DATA_FD, buf, 128);
	int err = errno;
	ssize_t more = n > 0 ? read(DATA_FD, buf + n, 128) : -1;
	int err2 = errno;
	if (n > 0) {
		ssize_t w = write(DATA_FD, buf, n + (more > 0 ? more : 0));
		if (w != n + (more > 0 ? more : 0))
			wl_fail("writing the unread bytes back: %zd (%s)", w, strerror(errno));
	}
	fcntl(DATA_FD, F_SETFL, fl);
	WL_CHECK(n >= 0, "fifo-data: read: %s (the unread bytes are gone)", strerror(err));
	WL_CHECK(more == -1 && err2 == EAGAIN, "fifo-data: %zd more bytes after the first %zd",
		 more, n);
	buf[n] = 0;
	WL_CHECK(n == (ssize_t)strlen(unread) && memcmp(buf, unread, n) == 0,
		 "fifo-data holds %zd unread bytes '%.*s', want '%s'", n, (int)n, buf, unread);
	return 1;
}

static void corrupt(void)
{
	/* eat one of the unread bytes */
	int fl = fcntl(DATA_FD, F_GETFL);
	fcntl(DATA_FD, F_SETFL, fl | O_NONBLOCK);
	char c;
	ssize_t r = read(DATA_FD, &c, 1);
	(void)r;
	fcntl(DATA_FD, F_SETFL, fl);
}

static void make_fifo(const char *path, int want_fd, struct stat *st)
{
	if (unlink(path) && errno != ENOENT)
		wl_die("unlink %s", path);
	if (mkfifo(path, 0600))
		wl_die("mkfifo %s", path);
	int fd = open(path, O_RDWR);
	if (fd < 0)
		wl_die("open %s", path);
	if (dup2(fd, want_fd) != want_fd)
		wl_die("dup2 %s", path);
	close(fd);
	if (fstat(want_fd, st))
		wl_die("fstat %s", path);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: fifo WORKDIR");
	wl_init();
	/* Without SA_RESTART: a signal ends the blocking read with EINTR. */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGUSR2, &sa, NULL) ||
	    sigaction(SIGTERM, &sa, NULL))
		wl_die("sigaction");

	snprintf(data_path, sizeof(data_path), "%s/fifo-data", argv[1]);
	snprintf(wake_path, sizeof(wake_path), "%s/fifo-wake", argv[1]);
	make_fifo(data_path, DATA_FD, &data_st);
	make_fifo(wake_path, WAKE_FD, &wake_st);
	if (fcntl(DATA_FD, F_SETPIPE_SZ, PIPE_CAP) < PIPE_CAP)
		wl_die("F_SETPIPE_SZ %d", PIPE_CAP);
	if (write(DATA_FD, unread, strlen(unread)) != (ssize_t)strlen(unread))
		wl_die("write fifo-data");

	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		unsigned char buf[64];
		int before = handled;
		ssize_t r = read(WAKE_FD, buf, sizeof(buf));
		int err = errno;
		if (r < 0) {
			if (err != EINTR)
				note_fail("read(fifo-wake): errno %d (%s)", err, strerror(err));
			else if (handled == before)
				note_fail("read(fifo-wake) returned EINTR without a handler having run");
			else
				eintr_ok++;
			if (err != EINTR)
				wl_sleep_ms(20); /* do not spin on a broken fd */
			continue;
		}
		if (r == 0) {
			note_fail("read(fifo-wake) returned EOF");
			wl_sleep_ms(20);
			continue;
		}
		int test_bytes = 0;
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] == MARKER)
				continue;
			test_bytes++;
			unsigned char want = (unsigned char)('a' + got % 26);
			if (buf[i] != want)
				note_fail("fifo-wake: byte %llu is %#x, the test wrote %#x",
					  (unsigned long long)got, buf[i], want);
			got++;
			printf("WOKE %llu %c\n", (unsigned long long)got, buf[i]);
		}
		if (test_bytes > 1)
			note_fail("one read() of fifo-wake returned %d of the test's bytes; it writes "
				  "one at a time",
				  test_bytes);
		fflush(stdout);
	}
}
