/*
 * flying: files in flight (SCM_RIGHTS sent, not received) beyond plain files and pipes.
 * Usage: flying WORKDIR [epoll]   (protocol in wl.h)
 * On a stream socketpair `car` (sent at car[0], waiting at car[1]), one message each,
 * the sender's copy closed after sending:
 *  'x' one end of a socketpair x whose other end the process keeps; "to-x1" waits in
 *      x[1]'s queue and "to-x0" in the queue of the end in flight;
 *  'y' one end of a socketpair y whose own queue carries, in flight too, one end of a
 *      socketpair z (sent at y[1]; y[1] and z[1] kept): a socket in flight carrying one;
 *  'f' a FIFO (WORKDIR/fifo, opened read-write) holding "fifo-data";
 *  'p' a pty master whose slave the process keeps (raw mode), "abc" typed at the master
 *      and not read at the slave;
 *  't' a timerfd armed for 1000 s, interval 500 s;
 *  'm' a memfd holding "memfd-data".
 * Also a socketpair s whose end s[1] waits in its own queue (sent at s[0]; both kept).
 * A check receives them all and uses them: each socket still talks to its peer (bytes
 * both ways, the queued ones first), the FIFO and the pty give their bytes, the pty master
 * is the slave's (TIOCGPTN), the timer still runs with its interval, the memfd reads its
 * bytes, s[1]'s copy is s[1] (kcmp); then everything is queued again as it was.
 * `epoll`: an epoll in flight too (refused by the dump).
 */
#include "wl.h"
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <termios.h>

static int car[2], x1, y1, z1, s[2], slave, ptn;
static char fifo[4096];

static int says(int fd, const char *want)
{
	char buf[64];
	size_t n = strlen(want);
	ssize_t got = read(fd, buf, sizeof(buf));
	return got == (ssize_t)n && !memcmp(buf, want, n);
}

static void put(int fd, const char *what)
{
	if (write(fd, what, strlen(what)) != (ssize_t)strlen(what))
		wl_die("write %s", what);
}

static void queue_x(int x0)
{
	put(x0, "to-x1");
	put(x1, "to-x0");
	wl_send_fd(car[0], 'x', x0);
	close(x0);
}

static void queue_y(int y0, int z0)
{
	wl_send_fd(y1, 'z', z0);
	close(z0);
	wl_send_fd(car[0], 'y', y0);
	close(y0);
}

static void queue_rest(int f, int master, int t, int m)
{
	put(f, "fifo-data");
	wl_send_fd(car[0], 'f', f);
	close(f);
	put(master, "abc");
	wl_send_fd(car[0], 'p', master);
	close(master);
	wl_send_fd(car[0], 't', t);
	close(t);
	wl_send_fd(car[0], 'm', m);
	close(m);
	wl_send_fd(s[0], 's', s[1]);
}

/* Takes the next message of `car`: it must carry tag `want`. */
static int take(char want)
{
	char tag = 0;
	int fd = wl_recv_fd(car[1], &tag);
	if (fd < 0 || tag != want)
		wl_fail("message '%c': got '%c', fd %d (%s)", want, tag, fd, strerror(errno));
	return fd;
}

static int verify(void)
{
	int x0 = take('x');
	WL_CHECK(x0 >= 0, "no x");
	WL_CHECK(says(x1, "to-x1"), "x[1] does not read what was queued");
	WL_CHECK(says(x0, "to-x0"), "the socket in flight does not read what was queued");
	put(x0, "ping");
	WL_CHECK(says(x1, "ping"), "the socket in flight is not connected to x[1]");

	int y0 = take('y');
	WL_CHECK(y0 >= 0, "no y");
	char tag = 0;
	int z0 = wl_recv_fd(y0, &tag);
	WL_CHECK(z0 >= 0 && tag == 'z', "the socket in flight carries no socket (%c)", tag);
	put(z0, "zz");
	WL_CHECK(says(z1, "zz"), "z[0] is not connected to z[1]");
	put(y1, "yy");
	WL_CHECK(says(y0, "yy"), "y[0] is not connected to y[1]");

	int f = take('f');
	WL_CHECK(f >= 0, "no FIFO");
	struct stat a, b;
	WL_CHECK(!fstat(f, &a) && !stat(fifo, &b) && a.st_ino == b.st_ino && S_ISFIFO(a.st_mode),
		 "the FIFO in flight is not %s", fifo);
	WL_CHECK(says(f, "fifo-data"), "the FIFO in flight lost its bytes");

	int master = take('p');
	WL_CHECK(master >= 0, "no pty master");
	int n = -1;
	WL_CHECK(!ioctl(master, TIOCGPTN, &n) && n == ptn, "the master is pts %d, not %d", n,
		 ptn);
	WL_CHECK(says(slave, "abc"), "the slave lost the input typed at the master");
	put(slave, "xyz");
	WL_CHECK(says(master, "xyz"), "the master does not read what the slave wrote");

	int t = take('t');
	WL_CHECK(t >= 0, "no timerfd");
	struct itimerspec its;
	WL_CHECK(!timerfd_gettime(t, &its) && its.it_interval.tv_sec == 500 &&
			 its.it_value.tv_sec > 0 && its.it_value.tv_sec <= 1000,
		 "the timerfd in flight: %ld s left, interval %ld s", (long)its.it_value.tv_sec,
		 (long)its.it_interval.tv_sec);

	int m = take('m');
	WL_CHECK(m >= 0, "no memfd");
	char buf[32];
	WL_CHECK(pread(m, buf, sizeof(buf), 0) == 10 && !memcmp(buf, "memfd-data", 10),
		 "the memfd in flight lost its bytes");

	int s1 = wl_recv_fd(s[1], &tag);
	WL_CHECK(s1 >= 0 && tag == 's', "no socket in its own queue");
	WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0, s1, s[1]) == 0,
		 "the socket in its own queue is not s[1]");
	close(s1);
	WL_CHECK(wl_recv_fd(car[1], &tag) < 0 && errno == EAGAIN, "more messages than sent");

	queue_x(x0);
	queue_y(y0, z0);
	queue_rest(f, master, t, m);
	return 1;
}

static int fresh_pair(int *keep)
{
	int p[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p))
		wl_die("socketpair");
	*keep = p[1];
	return p[0];
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	wl_init();
	snprintf(fifo, sizeof(fifo), "%s/fifo", argv[1]);
	if (mkfifo(fifo, 0600))
		wl_die("mkfifo %s", fifo);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, car) || socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		wl_die("socketpair");
	int x0 = fresh_pair(&x1), y0 = fresh_pair(&y1), z0 = fresh_pair(&z1);
	int f = open(fifo, O_RDWR | O_NONBLOCK);
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (f < 0 || master < 0 || grantpt(master) || unlockpt(master) ||
	    ioctl(master, TIOCGPTN, &ptn))
		wl_die("fifo/pty");
	slave = open(ptsname(master), O_RDWR | O_NOCTTY);
	struct termios tio;
	if (slave < 0 || tcgetattr(slave, &tio))
		wl_die("slave");
	cfmakeraw(&tio);
	if (tcsetattr(slave, TCSANOW, &tio))
		wl_die("raw");
	int t = timerfd_create(CLOCK_MONOTONIC, 0);
	struct itimerspec its = { { 500, 0 }, { 1000, 0 } };
	int m = memfd_create("flying", 0);
	if (t < 0 || timerfd_settime(t, 0, &its, NULL) || m < 0 || write(m, "memfd-data", 10) != 10)
		wl_die("timerfd/memfd");
	queue_x(x0);
	queue_y(y0, z0);
	queue_rest(f, master, t, m);
	/* The slave's input arrives through the tty's worker: wait for it to be there. */
	for (int i = 0; i < 1000; i++) {
		int q = 0;
		if (!ioctl(slave, FIONREAD, &q) && q == 3)
			break;
		wl_sleep_ms(5);
	}
	if (argc > 2 && !strcmp(argv[2], "epoll")) {
		int ep = epoll_create1(0);
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, x1, &ev))
			wl_die("epoll");
		wl_send_fd(car[0], 'e', ep);
		close(ep);
	}
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
