/*
 * devices: stateless character devices survive a checkpoint, also at a high fd number.
 * Usage: devices WORKDIR [ptmx]   (protocol in wl.h)
 *  fd 4000  /dev/urandom  O_RDONLY|O_NONBLOCK (dup2 from a low fd; the soft
 *           RLIMIT_NOFILE is raised to the hard limit for it)
 *  fd 5     /dev/null     O_WRONLY|O_APPEND, FD_CLOEXEC
 *  fd 6     /dev/full     O_RDWR
 *  fd 7     /dev/random   O_RDONLY
 *  fd 8     /dev/ptmx     O_RDWR|O_NOCTTY (only with `ptmx`: restored with its number)
 * Checks: each fd is the same device (rdev) with the same access mode, status flags and
 * FD_CLOEXEC; /dev/urandom gives 64 bytes that are not all equal; /dev/null swallows a
 * write; /dev/full gives zeros on read and ENOSPC on write. With ptmx, the pty master is still a pty (TIOCGPTN answers the
 * same number).
 */
#include "wl.h"
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

#define FD_URANDOM 4000
#define FD_NULL 5
#define FD_FULL 6
#define FD_RANDOM 7
#define FD_PTMX 8

struct dev {
	int fd;
	const char *path;
	int flags;
	int cloexec;
	unsigned maj, min;
};

static struct dev devs[] = {
	{ FD_URANDOM, "/dev/urandom", O_RDONLY | O_NONBLOCK, 0, 1, 9 },
	{ FD_NULL, "/dev/null", O_WRONLY | O_APPEND, 1, 1, 3 },
	{ FD_FULL, "/dev/full", O_RDWR, 0, 1, 7 },
	{ FD_RANDOM, "/dev/random", O_RDONLY, 0, 1, 8 },
};
#define NDEVS (sizeof(devs) / sizeof(devs[0]))

static int with_ptmx;
static unsigned ptn0;

static void place(const struct dev *d)
{
	int fd = open(d->path, d->flags | (d->cloexec ? O_CLOEXEC : 0));
	if (fd < 0)
		wl_die("open %s", d->path);
	if (fd != d->fd) {
		if (dup3(fd, d->fd, d->cloexec ? O_CLOEXEC : 0) != d->fd)
			wl_die("dup3 %s to fd %d", d->path, d->fd);
		close(fd);
	}
}

static int verify(void)
{
	for (size_t i = 0; i < NDEVS; i++) {
		const struct dev *d = &devs[i];
		struct stat st;
		WL_CHECK(fstat(d->fd, &st) == 0, "fd %d (%s): fstat: %s", d->fd, d->path,
			 strerror(errno));
		WL_CHECK(S_ISCHR(st.st_mode) && st.st_rdev == makedev(d->maj, d->min),
			 "fd %d is not %s (rdev %u:%u)", d->fd, d->path, major(st.st_rdev),
			 minor(st.st_rdev));
		int fl = fcntl(d->fd, F_GETFL);
		int want = d->flags;
		WL_CHECK((fl & (O_ACCMODE | O_APPEND | O_NONBLOCK)) == want,
			 "fd %d (%s): flags %#x, want %#x", d->fd, d->path,
			 fl & (O_ACCMODE | O_APPEND | O_NONBLOCK), want);
		int cl = fcntl(d->fd, F_GETFD);
		WL_CHECK(cl >= 0 && !!(cl & FD_CLOEXEC) == d->cloexec, "fd %d (%s): FD_CLOEXEC %d",
			 d->fd, d->path, cl);
	}
	uint8_t b[64];
	WL_CHECK(read(FD_URANDOM, b, sizeof(b)) == sizeof(b), "read /dev/urandom: %s",
		 strerror(errno));
	int same = 1;
	for (size_t i = 1; i < sizeof(b); i++)
		same &= b[i] == b[0];
	WL_CHECK(!same, "/dev/urandom gave 64 equal bytes");
	WL_CHECK(write(FD_NULL, "x", 1) == 1, "write /dev/null: %s", strerror(errno));
	memset(b, 0xff, sizeof(b));
	WL_CHECK(read(FD_FULL, b, sizeof(b)) == sizeof(b) && b[0] == 0 && b[63] == 0,
		 "read /dev/full");
	WL_CHECK(write(FD_FULL, "x", 1) == -1 && errno == ENOSPC, "write /dev/full: not ENOSPC");
	if (with_ptmx) {
		unsigned n;
		WL_CHECK(ioctl(FD_PTMX, TIOCGPTN, &n) == 0 && n == ptn0, "pty number %u, was %u", n,
			 ptn0);
	}
	return 1;
}

static void corrupt(void)
{
	int z = open("/dev/zero", O_RDONLY | O_NONBLOCK);
	dup2(z, FD_URANDOM);
	close(z);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: devices WORKDIR [ptmx]");
	wl_init();
	with_ptmx = argc > 2 && strcmp(argv[2], "ptmx") == 0;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		wl_die("getrlimit");
	if (rl.rlim_cur <= FD_URANDOM) {
		if (rl.rlim_max <= FD_URANDOM)
			wl_die("hard RLIMIT_NOFILE %lu is too low for fd %d",
			       (unsigned long)rl.rlim_max, FD_URANDOM);
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			wl_die("setrlimit");
	}
	for (size_t i = 0; i < NDEVS; i++)
		place(&devs[i]);
	if (with_ptmx) {
		int fd = posix_openpt(O_RDWR | O_NOCTTY);
		if (fd < 0 || dup2(fd, FD_PTMX) != FD_PTMX)
			wl_die("posix_openpt");
		if (fd != FD_PTMX)
			close(fd);
		if (ioctl(FD_PTMX, TIOCGPTN, &ptn0))
			wl_die("TIOCGPTN");
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
