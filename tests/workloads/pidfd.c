/*
 * pidfd: pidfds of processes of the tree.
 * Usage: pidfd WORKDIR [outside]   (protocol in wl.h)
 * The parent holds a pidfd of itself (PIDFD_NONBLOCK), of its child, and of a zombie
 * child (exited with status 7, not reaped); the child holds a pidfd of its parent.
 * Check: each pidfd names its process (fdinfo Pid:), the child's is not readable (alive)
 * and takes signal 0, the zombie's is readable and waitid(P_PIDFD, WNOWAIT) gives status
 * 7; the child, asked through a pipe, checks its pidfd names its parent and answers.
 * `outside`: a pidfd of the workload's parent (outside the tree: refused by the dump).
 */
#include "wl.h"
#include <poll.h>
#include <sys/wait.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static int self_fd, child_fd, zombie_fd, parent_fd, ask[2], answer[2];
static pid_t child, zombie;

static int pidfd_open(pid_t pid, unsigned flags)
{
	return syscall(SYS_pidfd_open, pid, flags);
}

/* The Pid: line of fdinfo of `fd`. */
static int target(int fd)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	int pid = -2;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pid: %d", &pid) == 1)
			break;
	if (f)
		fclose(f);
	return pid;
}

static int readable(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static int verify(void)
{
	WL_CHECK(target(self_fd) == getpid(), "the pidfd of itself names %d", target(self_fd));
	WL_CHECK(fcntl(self_fd, F_GETFL) & O_NONBLOCK, "the pidfd of itself lost PIDFD_NONBLOCK");
	WL_CHECK(target(child_fd) == child, "the child's pidfd names %d, not %d",
		 target(child_fd), child);
	WL_CHECK(!readable(child_fd), "the child's pidfd says it exited");
	WL_CHECK(syscall(SYS_pidfd_send_signal, child_fd, 0, NULL, 0) == 0,
		 "pidfd_send_signal to the child: %s", strerror(errno));
	WL_CHECK(target(zombie_fd) == zombie, "the zombie's pidfd names %d, not %d",
		 target(zombie_fd), zombie);
	WL_CHECK(readable(zombie_fd), "the zombie's pidfd is not readable");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	WL_CHECK(waitid(P_PIDFD, zombie_fd, &si, WEXITED | WNOWAIT | WNOHANG) == 0 &&
			 si.si_pid == zombie && si.si_code == CLD_EXITED && si.si_status == 7,
		 "waitid on the zombie's pidfd: pid %d code %d status %d (%s)", si.si_pid,
		 si.si_code, si.si_status, strerror(errno));
	char b = '?';
	WL_CHECK(write(ask[1], "?", 1) == 1 && read(answer[0], &b, 1) == 1 && b == 'y',
		 "the child's pidfd of its parent: %c", b);
	return 1;
}

/* The child's answer: 'y' while its pidfd of its parent names its parent, alive. */
static int about_parent(char b)
{
	b = target(parent_fd) == getppid() && !readable(parent_fd) ? 'y' : 'n';
	return write(answer[1], &b, 1) != 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	wl_init();
	if (pipe(ask) || pipe(answer))
		wl_die("pipe");
	pid_t parent = getpid();
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		close(ask[1]);
		close(answer[0]);
		parent_fd = pidfd_open(parent, 0);
		if (parent_fd < 0)
			_exit(3);
		wl_serve(ask[0], about_parent);
	}
	close(ask[0]);
	close(answer[1]);
	zombie = fork();
	if (zombie < 0)
		wl_die("fork");
	if (zombie == 0)
		_exit(7);
	self_fd = pidfd_open(getpid(), PIDFD_NONBLOCK);
	child_fd = pidfd_open(child, 0);
	zombie_fd = pidfd_open(zombie, 0);
	if (self_fd < 0 || child_fd < 0 || zombie_fd < 0)
		wl_die("pidfd_open");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) && errno == EINTR)
		;
	if (argc > 2 && !strcmp(argv[2], "outside") && pidfd_open(getppid(), 0) < 0)
		wl_die("pidfd_open of the parent");
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
