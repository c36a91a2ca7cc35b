/*
 * sharedfile: a parent and the child it forked append numbered records to one file
 * through the one open file description they share (fd 3, O_RDWR, no O_APPEND): the
 * kernel's shared offset is all that keeps them from writing over each other.
 * Usage: sharedfile WORKDIR   (protocol in wl.h; the parent answers)
 *
 * Each writes 16-byte records "<P|C><14-digit n>\n", n = 1, 2, ... with a short sleep
 * between, and publishes its last n in a MAP_SHARED page.
 * Check (parent, on SIGUSR1): lseek(3, 0, SEEK_CUR) is a whole number of records; the file
 * up to there holds, for each writer, exactly its records 1..k in order (none missing,
 * none twice: two descriptions with their own offsets would overwrite each other), and
 * k >= what it published before the offset was read; both went on writing since the
 * last check; the child is still the parent's child.
 * The child exits when its parent is gone.
 */
#include "wl.h"
#include <sys/mman.h>

#define REC 16

struct shared {
	volatile long last[2];
};

static struct shared *sh;
static int fd = 3;
static pid_t child;
static long seen_before[2];

static void write_loop(int who)
{
	char rec[REC + 1];
	long n = sh->last[who];
	n++;
	snprintf(rec, sizeof(rec), "%c%014ld\n", who ? 'C' : 'P', n);
	if (write(fd, rec, REC) != REC)
		return;
	sh->last[who] = n;
}

static int verify(void)
{
	long pub[2] = { sh->last[0], sh->last[1] };
	off_t end = lseek(fd, 0, SEEK_CUR);
	WL_CHECK(end >= 0 && end % REC == 0, "offset %lld is not a whole number of records",
		 (long long)end);
	char *buf = malloc(end + 1);
	WL_CHECK(buf, "malloc");
	int rfd = open("shared.log", O_RDONLY);
	WL_CHECK(rfd >= 0, "open shared.log: %s", strerror(errno));
	ssize_t got = pread(rfd, buf, end, 0);
	close(rfd);
	if (got != end) {
		free(buf);
		return wl_fail("read %zd of %lld bytes", got, (long long)end);
	}
	long next[2] = { 1, 1 };
	for (off_t o = 0; o < end; o += REC) {
		char *r = buf + o;
		int who = r[0] == 'C';
		if ((r[0] != 'P' && r[0] != 'C') || r[REC - 1] != '\n') {
			free(buf);
			return wl_fail("record at %lld is damaged", (long long)o);
		}
		long n = strtol(r + 1, NULL, 10);
		if (n != next[who]) {
			free(buf);
			return wl_fail("record at %lld: %c %ld, expected %ld (overwritten?)",
				       (long long)o, r[0], n, next[who]);
		}
		next[who]++;
	}
	free(buf);
	for (int w = 0; w < 2; w++) {
		WL_CHECK(next[w] - 1 >= pub[w], "%s published %ld but the file has %ld",
			 w ? "child" : "parent", pub[w], next[w] - 1);
		WL_CHECK(next[w] - 1 > seen_before[w], "%s wrote nothing since the last check",
			 w ? "child" : "parent");
		seen_before[w] = next[w] - 1;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", child);
	FILE *f = fopen(path, "r");
	WL_CHECK(f, "child %d is gone", child);
	int ppid = 0;
	WL_CHECK(fscanf(f, "%*d %*s %*c %d", &ppid) == 1, "stat of child");
	fclose(f);
	WL_CHECK(ppid == getpid(), "child's parent is %d", ppid);
	return 1;
}

static void corrupt(void)
{
	pwrite(fd, "X", 1, 0);
}

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]))
		wl_die("usage: sharedfile WORKDIR");
	wl_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	int f = open("shared.log", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (f < 0 || dup2(f, fd) != fd)
		wl_die("open");
	if (f != fd)
		close(f);
	pid_t parent = getpid();
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		for (;;) {
			if (getppid() != parent)
				_exit(0);
			write_loop(1);
			wl_sleep_ms(3);
		}
	}
	/* Both have written before the first check. */
	while (sh->last[1] == 0)
		wl_sleep_ms(1);
	wl_ready();
	for (;;) {
		write_loop(0);
		wl_poll(verify, corrupt);
		wl_sleep_ms(3);
	}
}
