/*
 * clones: a child that shares with its parent what fork would have copied.
 * Usage: clones WORKDIR MODE   (protocol in wl.h)
 * MODE: files (CLONE_FILES: one fd table), fs (CLONE_FS: one cwd/root/umask), vm
 * (CLONE_VM: one address space, the child on a stack of its own).
 * Check: the child is alive; files: an fd the parent opens is at once the child's too
 * (fcntl on it in the child, through a flag word both see: files and fs modes share
 * memory only through a MAP_SHARED page); fs: a umask the child sets is the parent's.
 * Corruption (SIGTERM): faked (ckpt refuses these, so no restore has to be caught).
 */
#include "wl.h"
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const char *mode;
static pid_t child;
static volatile int *box;
static char stack[64 << 10];

static int child_main(void *arg)
{
	(void)arg;
	for (;;) {
		if (box[0] == 1) { /* files: is the parent's new fd ours? */
			box[1] = fcntl(box[2], F_GETFD) >= 0;
			box[0] = 2;
		} else if (box[0] == 3) { /* fs: set a umask the parent must see */
			umask(box[2]);
			box[0] = 4;
		}
		usleep(1000);
	}
	return 0;
}

static int ask(int req, int done)
{
	box[0] = req;
	for (int i = 0; i < 5000 && box[0] != done; i++)
		usleep(1000);
	return box[0] == done;
}

static int verify(void)
{
	WL_CHECK(kill(child, 0) == 0, "child %d gone", child);
	if (!strcmp(mode, "files")) {
		int fd = open("/dev/null", O_RDONLY);
		box[2] = fd;
		box[1] = 0;
		WL_CHECK(ask(1, 2) && box[1] == 1, "fd %d of the parent not in the child", fd);
		close(fd);
	} else if (!strcmp(mode, "fs")) {
		box[2] = 0027;
		WL_CHECK(ask(3, 4), "child did not answer");
		mode_t m = umask(0022);
		WL_CHECK(m == 0027, "umask %o, not the child's 027", m);
	}
	return 1;
}

static void corrupt(void)
{
	wl_fail("corrupted on request");
}

int main(int argc, char **argv)
{
	if (argc < 3)
		wl_die("usage: clones WORKDIR MODE");
	wl_init();
	mode = argv[2];
	int flags = !strcmp(mode, "files") ? CLONE_FILES
		    : !strcmp(mode, "fs")   ? CLONE_FS
		    : !strcmp(mode, "vm")   ? CLONE_VM
					    : -1;
	if (flags < 0)
		wl_die("unknown mode %s", mode);
	box = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (box == MAP_FAILED)
		wl_die("mmap");
	child = clone(child_main, stack + sizeof(stack), flags | SIGCHLD, NULL);
	if (child < 0)
		wl_die("clone");
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
