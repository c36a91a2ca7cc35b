/*
 * handmade: the classic hand-made container. Usage: handmade WORKDIR IMAGE SCRIPT
 * Run in a network namespace of the test's (standing for the host, with a bridge br0).
 * clone()s a child with CLONE_NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET, gives it a veth (host
 * end hv0 on br0, eth0 inside), and the child: makes its mounts private, attaches a loop
 * device to IMAGE (an ext4 image holding a busybox root; LO_FLAGS_AUTOCLEAR, so the
 * device goes with the container), mounts it on WORKDIR/root, mounts proc and a tmpfs on
 * /tmp there, pivots into it, sets its hostname to "handmade" and runs
 * `/bin/sh -c SCRIPT` as pid 1. The parent prints "INIT <outer pid of the child>", then
 * waits for it and exits with its status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *workdir, *image, *script;
static int go[2];

static void die(const char *what)
{
	printf("SETUP-ERROR %s: %s\n", what, strerror(errno));
	fflush(stdout);
	_exit(1);
}

/* A loop device attached to `file`, cleared once nothing uses it; its path. */
static void attach_loop(const char *file, char *path, size_t len)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		die("open /dev/loop-control");
	int backing = open(file, O_RDWR | O_CLOEXEC);
	if (backing < 0)
		die("open the image");
	for (int tries = 0; tries < 8; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			die("LOOP_CTL_GET_FREE");
		snprintf(path, len, "/dev/loop%d", n);
		int dev = open(path, O_RDWR | O_CLOEXEC);
		if (dev < 0)
			die("open the loop device");
		struct loop_config cfg;
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = backing;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(dev, LOOP_CONFIGURE, &cfg) == 0) {
			/* `dev` stays open until the exec (O_CLOEXEC); the mount holds it then. */
			close(backing);
			close(ctl);
			return;
		}
		if (errno != EBUSY)
			die("LOOP_CONFIGURE");
		close(dev);
	}
	errno = EBUSY;
	die("no free loop device");
}

static int child(void *arg)
{
	(void)arg;
	char c;
	close(go[1]);
	if (read(go[0], &c, 1) != 1)
		die("waiting for the veth");
	close(go[0]);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		die("make / private");
	char dev[64], root[4096], at[4200];
	attach_loop(image, dev, sizeof(dev));
	snprintf(root, sizeof(root), "%s/root", workdir);
	mkdir(root, 0755);
	if (mount(dev, root, "ext4", 0, NULL))
		die("mount the image");
	snprintf(at, sizeof(at), "%s/proc", root);
	if (mount("proc", at, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		die("mount proc");
	snprintf(at, sizeof(at), "%s/tmp", root);
	if (mount("tmpfs", at, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777"))
		die("mount tmpfs");
	if (chdir(root))
		die("chdir to the new root");
	if (syscall(SYS_pivot_root, ".", "."))
		die("pivot_root");
	if (umount2(".", MNT_DETACH))
		die("detach the old root");
	if (chdir("/"))
		die("chdir /");
	if (sethostname("handmade", 8))
		die("sethostname");
	execl("/bin/sh", "sh", "-c", script, (char *)NULL);
	die("exec /bin/sh");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: handmade WORKDIR IMAGE SCRIPT\n");
		return 2;
	}
	workdir = argv[1];
	image = argv[2];
	script = argv[3];
	setvbuf(stdout, NULL, _IONBF, 0);
	if (pipe(go))
		die("pipe");
	static char stack[1 << 16];
	int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET;
	pid_t pid = clone(child, stack + sizeof(stack), flags | SIGCHLD, NULL);
	if (pid < 0)
		die("clone");
	close(go[0]);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "ip link add hv0 type veth peer name eth0 netns %d && "
		 "ip link set hv0 master br0 up",
		 pid);
	if (system(cmd) != 0) {
		errno = EINVAL;
		die(cmd);
	}
	if (write(go[1], "x", 1) != 1)
		die("releasing the child");
	close(go[1]);
	printf("INIT %d\n", pid);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
