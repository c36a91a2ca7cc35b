/*
 * shelljob: a job started from a shell on a terminal (--shell-job).
 * Usage: shelljob WORKDIR   (protocol in wl.h; its lines go to WORKDIR/shelljob.out,
 * since stdin, stdout and stderr are the terminal, one description, made O_NONBLOCK)
 *  - termios changed from the start (no ECHO, VKILL = ^K), the window size the terminal
 *    had at the start: both checked;
 *  - its terminal is its session's controlling terminal and its own group the
 *    foreground one (tcgetsid, tcgetpgrp); it leads its group;
 *  - a line "ping-X" typed on the terminal is answered "pong-X" on it.
 */
#include "wl.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static struct termios want;
static struct winsize wsz;
static char line[256];
static size_t len;

static int verify(void)
{
	for (int fd = 0; fd < 3; fd++)
		WL_CHECK(isatty(fd), "fd %d is not a terminal", fd);
	int fl = fcntl(0, F_GETFL);
	WL_CHECK((fl & O_ACCMODE) == O_RDWR && (fl & O_NONBLOCK), "fd 0 flags %#o", fl);
	WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 2) == 0 &&
			 syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 1) == 0,
		 "fds 0, 1, 2 are not one description");
	struct termios t;
	WL_CHECK(tcgetattr(0, &t) == 0, "tcgetattr: %s", strerror(errno));
	WL_CHECK(t.c_iflag == want.c_iflag && t.c_oflag == want.c_oflag &&
			 t.c_cflag == want.c_cflag && t.c_lflag == want.c_lflag &&
			 !memcmp(t.c_cc, want.c_cc, sizeof(t.c_cc)),
		 "termios lflag %#o iflag %#o VKILL %d, want lflag %#o iflag %#o VKILL %d",
		 t.c_lflag, t.c_iflag, t.c_cc[VKILL], want.c_lflag, want.c_iflag,
		 want.c_cc[VKILL]);
	struct winsize w;
	WL_CHECK(ioctl(0, TIOCGWINSZ, &w) == 0, "TIOCGWINSZ: %s", strerror(errno));
	WL_CHECK(w.ws_row == wsz.ws_row && w.ws_col == wsz.ws_col, "window %dx%d, want %dx%d",
		 w.ws_row, w.ws_col, wsz.ws_row, wsz.ws_col);
	WL_CHECK(tcgetsid(0) == getsid(0), "the terminal's session is %d, mine %d",
		 (int)tcgetsid(0), (int)getsid(0));
	WL_CHECK(getpgrp() == getpid(), "group %d, not my own", (int)getpgrp());
	WL_CHECK(tcgetpgrp(0) == getpgrp(), "foreground group %d, mine %d", (int)tcgetpgrp(0),
		 (int)getpgrp());
	return 1;
}

static void corrupt(void)
{
	struct termios t = want;
	t.c_lflag |= ECHO;
	tcsetattr(0, TCSANOW, &t);
}

/* Reads what was typed; answers each complete "ping-X" line with "pong-X". */
static void serve(void)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };
	if (poll(&p, 1, 50) <= 0)
		return;
	ssize_t n = read(0, line + len, sizeof(line) - 1 - len);
	if (n <= 0)
		return;
	len += n;
	char *nl;
	while ((nl = memchr(line, '\n', len))) {
		*nl = 0;
		if (!strncmp(line, "ping-", 5)) {
			char out[300];
			int k = snprintf(out, sizeof(out), "pong-%s\n", line + 5);
			if (write(1, out, k) != k)
				printf("FAIL write to the terminal: %s\n", strerror(errno));
		}
		size_t used = nl + 1 - line;
		memmove(line, nl + 1, len - used);
		len -= used;
	}
	if (len == sizeof(line) - 1)
		len = 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	char path[4096];
	snprintf(path, sizeof(path), "%s/shelljob.out", argv[1]);
	FILE *log = fopen(path, "a");
	if (!log)
		return 2;
	stdout = log;
	wl_init();
	if (tcgetattr(0, &want))
		wl_die("tcgetattr");
	want.c_lflag &= ~(ECHO | ECHONL);
	want.c_cc[VKILL] = 'K' - '@';
	if (tcsetattr(0, TCSANOW, &want) || tcgetattr(0, &want))
		wl_die("tcsetattr");
	if (ioctl(0, TIOCGWINSZ, &wsz))
		wl_die("TIOCGWINSZ");
	if (fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK))
		wl_die("O_NONBLOCK");
	if (!verify())
		wl_die("not a foreground job on its terminal: %s", wl_reason);
	wl_ready();
	for (;;) {
		serve();
		wl_poll(verify, corrupt);
	}
}
