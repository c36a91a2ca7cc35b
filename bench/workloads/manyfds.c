/* manyfds N: the per-fd cost of ckpt (bench/fds.sh runs it). Holds about N fds: 3N/9
 * files (created in the cwd), N/9 pipes and N/9 socketpairs (both ends), N/9 eventfds,
 * N/9 opens of /dev/null; every inherited fd above 2 closed first. Prints "ready", then
 * pauses. Not yet a row of ckpt-bench. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/close_range.h>
#include <sys/syscall.h>
int main(int argc, char **argv)
{
	syscall(SYS_close_range, 3, ~0U, 0);
	int n = atoi(argv[1]) / 9;
	char p[64];
	for (int i = 0; i < 3 * n; i++) {
		snprintf(p, sizeof p, "f%d", i);
		if (open(p, O_RDWR | O_CREAT, 0600) < 0) return 1;
	}
	for (int i = 0; i < n; i++) {
		int fd[2];
		if (pipe(fd) || eventfd(i, 0) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, fd) ||
		    open("/dev/null", O_RDWR) < 0)
			return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
