/*
 * anonfds: holds the fds that are kernel objects rather than paths, each with state in
 * flight, and checks them.
 * Usage: anonfds WORKDIR KIND...   KIND: eventfd signalfd timerfd memfd deleted
 *                                  (protocol in wl.h)
 *
 * eventfd: A counts (non-blocking), 5 plus one per check; B is EFD_SEMAPHORE (blocking)
 *   holding 3. Check: A reads its expected count (then gets count+1 written back); B
 *   reads 1 three times and is then empty (poll), and gets 3 back; A non-blocking, B not.
 * signalfd: SIGWINCH and SIGRTMIN+3 blocked and read through a non-blocking signalfd;
 *   one SIGRTMIN+3 carrying the next number is always queued. Check: the fd reads it with
 *   that number, nothing else is queued, fdinfo's sigmask is the two; queues the next.
 * timerfd: M (MONOTONIC, relative) 1000 s left; R (REALTIME, ABSTIME) due in 2000 s
 *   every 7 s; T (MONOTONIC) every 10 ms; E (MONOTONIC, one-shot) expired and unread.
 *   Check: M has 800..1000 s left and no interval; R 1800..2000 s and interval 7 s,
 *   `settime flags: 01`; T has ticked (reads >= 1 after 30 ms); E reads exactly 1
 *   expiration and is made to expire again, unread.
 * memfd: "wl-memfd", 64 KiB of pattern, sealed against shrink and grow, offset moving
 *   one byte a check. Check: name, seals, size, contents, offset.
 * deleted: WORKDIR/gone.dat, 10 KiB of pattern, unlinked while open, offset moving by a
 *   byte a check. Check: nlink 0, size, contents, offset, link ends in " (deleted)".
 * inotify: WORKDIR/watched (IN_CREATE|IN_DELETE, wd 1) and WORKDIR/watched.log
 *   (IN_MODIFY|IN_EXCL_UNLINK, wd 2), non-blocking. Check: drops what is queued (an event
 *   queued at a dump would refuse it), creates and removes a file in the directory and writes the
 *   log, then reads exactly those three events with the right wds and name.
 * fanotify: a notification-class group (non-blocking, events' fds O_RDONLY) marking
 *   WORKDIR/fwatched (FAN_CLOSE_WRITE|FAN_EVENT_ON_CHILD) and ignoring FAN_CLOSE_WRITE on
 *   WORKDIR/fwatched/quiet (an inode mark with an ignore mask). Check: writes and closes
 *   quiet and a new file gN, then reads exactly one event, FAN_CLOSE_WRITE, whose fd is gN.
 * For the refusals (no check of their own): memfdmap, a memfd also mapped MAP_SHARED;
 *   bigdeleted, a deleted file of 9 MiB; inotifygap, watch 2 of 3 removed; inotifyq, an
 *   event not read yet;
 *   fanotifyq, the fanotify group with an event not read yet;
 *   fanotifyperm, a group of the content class (permission events).
 *   uring, an io_uring instance; uffd, a userfaultfd (both refused by name).
 */
#include "wl.h"
#include <sys/mman.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

static int ino = -1, ino_n, fan = -1, fan_n;
static int ev_a = -1, ev_b = -1, sfd = -1, tm = -1, tr = -1, tt = -1, te = -1, mfd = -1,
	   dfd = -1;
static uint64_t ev_a_count = 5;
static int sig_next = 1;
static off_t mpos = 1000, dpos = 777;

#define MEMFD_LEN (64 << 10)
#define DEL_LEN (10 << 10)

static void queue_sig(void)
{
	union sigval v = { .sival_int = sig_next };
	if (sigqueue(getpid(), SIGRTMIN + 3, v))
		wl_die("sigqueue");
}

static void expire_e(void)
{
	struct itimerspec its = { { 0, 0 }, { 0, 1 } };
	if (timerfd_settime(te, 0, &its, NULL))
		wl_die("timerfd_settime E");
	struct pollfd p = { te, POLLIN, 0 };
	while (poll(&p, 1, 1000) == 0)
		;
}

static int fd_line(int fd, const char *key, char *out, size_t len)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int found = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key))) {
			snprintf(out, len, "%s", line + strlen(key));
			out[strcspn(out, "\n")] = 0;
			found = 1;
			break;
		}
	fclose(f);
	return found;
}

static int check_eventfd(void)
{
	uint64_t v = 0;
	WL_CHECK(read(ev_a, &v, 8) == 8 && v == ev_a_count, "eventfd A read %llu, expected %llu",
		 (unsigned long long)v, (unsigned long long)ev_a_count);
	ev_a_count++;
	WL_CHECK(write(ev_a, &ev_a_count, 8) == 8, "eventfd A write");
	for (int i = 0; i < 3; i++) {
		struct pollfd p = { ev_b, POLLIN, 0 };
		WL_CHECK(poll(&p, 1, 0) == 1, "eventfd B empty after %d reads", i);
		WL_CHECK(read(ev_b, &v, 8) == 8 && v == 1, "eventfd B (semaphore) read %llu",
			 (unsigned long long)v);
	}
	struct pollfd p = { ev_b, POLLIN, 0 };
	WL_CHECK(poll(&p, 1, 0) == 0, "eventfd B holds more than 3");
	v = 3;
	WL_CHECK(write(ev_b, &v, 8) == 8, "eventfd B write");
	WL_CHECK(fcntl(ev_a, F_GETFL) & O_NONBLOCK, "eventfd A is blocking");
	WL_CHECK(!(fcntl(ev_b, F_GETFL) & O_NONBLOCK), "eventfd B is non-blocking");
	char s[64];
	WL_CHECK(fd_line(ev_b, "eventfd-semaphore:", s, sizeof(s)) && atoi(s) == 1,
		 "eventfd B is not a semaphore");
	return 1;
}

static int check_signalfd(void)
{
	struct signalfd_siginfo si;
	ssize_t n = read(sfd, &si, sizeof(si));
	WL_CHECK(n == sizeof(si), "signalfd read %zd (errno %d): the queued signal is gone", n,
		 errno);
	WL_CHECK((int)si.ssi_signo == SIGRTMIN + 3 && si.ssi_int == sig_next,
		 "signalfd read signal %u value %d, expected %d value %d", si.ssi_signo, si.ssi_int,
		 SIGRTMIN + 3, sig_next);
	n = read(sfd, &si, sizeof(si));
	WL_CHECK(n < 0 && errno == EAGAIN, "signalfd: more queued (%zd, signal %u)", n,
		 si.ssi_signo);
	char s[64];
	unsigned long long want = (1ull << (SIGWINCH - 1)) | (1ull << (SIGRTMIN + 3 - 1)), got = 0;
	WL_CHECK(fd_line(sfd, "sigmask:", s, sizeof(s)) && sscanf(s, "%llx", &got) == 1 &&
			 got == want,
		 "signalfd mask %llx, expected %llx", got, want);
	sig_next++;
	queue_sig();
	return 1;
}

static int check_timerfd(void)
{
	struct itimerspec its;
	WL_CHECK(!timerfd_gettime(tm, &its), "gettime M");
	WL_CHECK(its.it_value.tv_sec >= 800 && its.it_value.tv_sec < 1000 && !its.it_interval.tv_sec,
		 "timer M has %ld s left, interval %ld", (long)its.it_value.tv_sec,
		 (long)its.it_interval.tv_sec);
	WL_CHECK(!timerfd_gettime(tr, &its), "gettime R");
	WL_CHECK(its.it_value.tv_sec >= 1800 && its.it_value.tv_sec < 2000 &&
			 its.it_interval.tv_sec == 7 && !its.it_interval.tv_nsec,
		 "timer R has %ld s left, interval %ld s", (long)its.it_value.tv_sec,
		 (long)its.it_interval.tv_sec);
	char s[64];
	WL_CHECK(fd_line(tr, "settime flags:", s, sizeof(s)) && strtol(s, NULL, 8) == 1,
		 "timer R settime flags '%s', expected 01 (absolute)", s);
	wl_sleep_ms(30);
	uint64_t ticks = 0;
	WL_CHECK(read(tt, &ticks, 8) == 8 && ticks >= 1, "timer T did not tick (%s)",
		 strerror(errno));
	ticks = 0;
	WL_CHECK(read(te, &ticks, 8) == 8 && ticks == 1, "timer E read %llu expirations, not 1",
		 (unsigned long long)ticks);
	expire_e();
	return 1;
}

static int check_contents(int fd, size_t len, uint64_t seed, off_t *pos, const char *what)
{
	struct stat st;
	WL_CHECK(!fstat(fd, &st) && st.st_size == (off_t)len, "%s: size %lld", what,
		 (long long)st.st_size);
	WL_CHECK(lseek(fd, 0, SEEK_CUR) == *pos, "%s: offset %lld, expected %lld", what,
		 (long long)lseek(fd, 0, SEEK_CUR), (long long)*pos);
	uint8_t *buf = malloc(len);
	WL_CHECK(buf && pread(fd, buf, len, 0) == (ssize_t)len, "%s: pread", what);
	size_t bad = wl_cmp(buf, len, seed);
	free(buf);
	WL_CHECK(bad == (size_t)-1, "%s: byte %zu differs", what, bad);
	char c;
	WL_CHECK(read(fd, &c, 1) == 1, "%s: read at the offset", what);
	(*pos)++;
	return 1;
}

static int check_memfd(void)
{
	char link[256] = "";
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	readlink(path, link, sizeof(link) - 1);
	WL_CHECK(!strcmp(link, "/memfd:wl-memfd (deleted)"), "memfd is %s", link);
	int seals = fcntl(mfd, F_GET_SEALS);
	WL_CHECK(seals == (F_SEAL_SHRINK | F_SEAL_GROW), "memfd seals %#x", seals);
	return check_contents(mfd, MEMFD_LEN, 42, &mpos, "memfd");
}

static int check_deleted(void)
{
	char link[512] = "";
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
	readlink(path, link, sizeof(link) - 1);
	size_t l = strlen(link);
	WL_CHECK(l > 10 && !strcmp(link + l - 10, " (deleted)"), "deleted file is %s", link);
	struct stat st;
	WL_CHECK(!fstat(dfd, &st) && st.st_nlink == 0, "deleted file has %ld links",
		 (long)st.st_nlink);
	WL_CHECK((st.st_mode & 0777) == 0640, "deleted file mode %o", st.st_mode & 0777);
	return check_contents(dfd, DEL_LEN, 7, &dpos, "deleted file");
}

static int check_inotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	while (read(ino, buf, sizeof(buf)) > 0)
		;
	char name[32];
	snprintf(name, sizeof(name), "f%d", ++ino_n);
	char path[64];
	snprintf(path, sizeof(path), "watched/%s", name);
	int f = open(path, O_CREAT | O_WRONLY, 0600);
	WL_CHECK(f >= 0, "create %s", path);
	close(f);
	WL_CHECK(!unlink(path), "unlink %s", path);
	int l = open("watched.log", O_WRONLY | O_APPEND);
	WL_CHECK(l >= 0 && write(l, "x", 1) == 1, "write watched.log");
	close(l);
	uint32_t want_mask[3] = { IN_CREATE, IN_DELETE, IN_MODIFY };
	int want_wd[3] = { 1, 1, 2 };
	int got = 0;
	ssize_t n = read(ino, buf, sizeof(buf));
	WL_CHECK(n > 0, "no inotify event (errno %d)", errno);
	for (char *p = buf; p < buf + n; got++) {
		struct inotify_event *e = (struct inotify_event *)p;
		WL_CHECK(got < 3, "more than 3 events (wd %d mask %#x)", e->wd, e->mask);
		WL_CHECK(e->wd == want_wd[got] && e->mask == want_mask[got],
			 "event %d: wd %d mask %#x, expected wd %d mask %#x", got, e->wd, e->mask,
			 want_wd[got], want_mask[got]);
		WL_CHECK(got == 2 || (e->len && !strcmp(e->name, name)), "event %d names %s", got,
			 e->len ? e->name : "nothing");
		p += sizeof(*e) + e->len;
	}
	WL_CHECK(got == 3, "%d events, expected 3", got);
	return 1;
}

static void touch(const char *path)
{
	int f = open(path, O_CREAT | O_WRONLY, 0600);
	if (f < 0 || write(f, "x", 1) != 1)
		wl_die("write %s", path);
	close(f);
}

static int check_fanotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	char name[32], path[64], link[4200] = "", proc[64];
	snprintf(name, sizeof(name), "g%d", ++fan_n);
	snprintf(path, sizeof(path), "fwatched/%s", name);
	touch("fwatched/quiet");
	touch(path);
	ssize_t n = read(fan, buf, sizeof(buf));
	WL_CHECK(n > 0, "no fanotify event (errno %d)", errno);
	struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
	WL_CHECK(FAN_EVENT_OK(m, n) && m->mask == FAN_CLOSE_WRITE && m->fd >= 0,
		 "event mask %#llx fd %d", (unsigned long long)m->mask, m->fd);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", m->fd);
	ssize_t l = readlink(proc, link, sizeof(link) - 1);
	close(m->fd);
	WL_CHECK(l > 0 && strstr(link, path), "event on %s, not %s", link, path);
	WL_CHECK(n == m->event_len, "%zd bytes of events, expected one of %u", n, m->event_len);
	unlink(path);
	return 1;
}

static int verify(void)
{
	if (ino >= 0 && !check_inotify())
		return 0;
	if (fan >= 0 && !check_fanotify())
		return 0;
	return (ev_a < 0 || check_eventfd()) && (sfd < 0 || check_signalfd()) &&
	       (tm < 0 || check_timerfd()) && (mfd < 0 || check_memfd()) &&
	       (dfd < 0 || check_deleted());
}

int main(int argc, char **argv)
{
	if (argc < 3 || chdir(argv[1]))
		wl_die("usage: anonfds WORKDIR KIND...");
	wl_init();
	for (int i = 2; i < argc; i++) {
		const char *k = argv[i];
		if (!strcmp(k, "eventfd")) {
			ev_a = eventfd(5, EFD_NONBLOCK);
			ev_b = eventfd(3, EFD_SEMAPHORE);
			if (ev_a < 0 || ev_b < 0)
				wl_die("eventfd");
		} else if (!strcmp(k, "signalfd")) {
			sigset_t m;
			sigemptyset(&m);
			sigaddset(&m, SIGWINCH);
			sigaddset(&m, SIGRTMIN + 3);
			if (sigprocmask(SIG_BLOCK, &m, NULL))
				wl_die("sigprocmask");
			sfd = signalfd(-1, &m, SFD_NONBLOCK);
			if (sfd < 0)
				wl_die("signalfd");
			queue_sig();
		} else if (!strcmp(k, "timerfd")) {
			tm = timerfd_create(CLOCK_MONOTONIC, 0);
			tr = timerfd_create(CLOCK_REALTIME, 0);
			tt = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
			te = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
			if (tm < 0 || tr < 0 || tt < 0 || te < 0)
				wl_die("timerfd_create");
			struct itimerspec its = { { 0, 0 }, { 1000, 0 } };
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			struct itimerspec abs = { { 7, 0 }, { now.tv_sec + 2000, now.tv_nsec } };
			struct itimerspec tick = { { 0, 10000000 }, { 0, 10000000 } };
			if (timerfd_settime(tm, 0, &its, NULL) ||
			    timerfd_settime(tr, TFD_TIMER_ABSTIME, &abs, NULL) ||
			    timerfd_settime(tt, 0, &tick, NULL))
				wl_die("timerfd_settime");
			expire_e();
		} else if (!strcmp(k, "memfd")) {
			mfd = memfd_create("wl-memfd", MFD_ALLOW_SEALING);
			uint8_t *b = malloc(MEMFD_LEN);
			wl_fill(b, MEMFD_LEN, 42);
			if (mfd < 0 || write(mfd, b, MEMFD_LEN) != MEMFD_LEN ||
			    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) ||
			    lseek(mfd, mpos, SEEK_SET) != mpos)
				wl_die("memfd");
			free(b);
		} else if (!strcmp(k, "deleted")) {
			dfd = open("gone.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
			uint8_t *b = malloc(DEL_LEN);
			wl_fill(b, DEL_LEN, 7);
			if (dfd < 0 || write(dfd, b, DEL_LEN) != DEL_LEN || fchmod(dfd, 0640) ||
			    unlink("gone.dat") || lseek(dfd, dpos, SEEK_SET) != dpos)
				wl_die("deleted file");
			free(b);
		} else if (!strcmp(k, "inotify") || !strcmp(k, "inotifygap") ||
			   !strcmp(k, "inotifyq")) {
			mkdir("watched", 0700);
			int l = open("watched.log", O_CREAT | O_WRONLY, 0600);
			if (l < 0)
				wl_die("watched.log");
			close(l);
			ino = inotify_init1(IN_NONBLOCK);
			if (ino < 0 || inotify_add_watch(ino, "watched", IN_CREATE | IN_DELETE) != 1 ||
			    inotify_add_watch(ino, "watched.log", IN_MODIFY | IN_EXCL_UNLINK) != 2)
				wl_die("inotify");
			if (!strcmp(k, "inotifygap")) {
				if (inotify_add_watch(ino, ".", IN_ATTRIB) != 3 || inotify_rm_watch(ino, 2))
					wl_die("inotify gap");
				ino = -1;
			}
			if (!strcmp(k, "inotifyq")) {
				l = open("watched.log", O_WRONLY);
				if (l < 0 || write(l, "x", 1) != 1)
					wl_die("write watched.log");
				close(l);
				ino = -1;
			}
		} else if (!strcmp(k, "memfdmap")) {
			int fd = memfd_create("wl-mapped", 0);
			if (fd < 0 || ftruncate(fd, 8192) ||
			    mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
				wl_die("memfdmap");
		} else if (!strcmp(k, "fanotify") || !strcmp(k, "fanotifyq")) {
			fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
			if (fan < 0 || mkdir("fwatched", 0700))
				wl_die("fanotify_init");
			touch("fwatched/quiet");
			if (fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD,
					  AT_FDCWD, "fwatched") ||
			    fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK |
						       FAN_MARK_IGNORED_SURV_MODIFY,
					  FAN_CLOSE_WRITE, AT_FDCWD, "fwatched/quiet"))
				wl_die("fanotify_mark");
			if (!strcmp(k, "fanotifyq"))
				touch("fwatched/pending");
		} else if (!strcmp(k, "fanotifyperm")) {
			if (fanotify_init(FAN_CLASS_CONTENT | FAN_NONBLOCK, O_RDONLY) < 0)
				wl_die("fanotify_init");
		} else if (!strcmp(k, "uring")) {
			/* Refused by name (its rings and requests in flight are not restorable). */
			struct { unsigned v[30]; } params;
			memset(&params, 0, sizeof(params));
			if (syscall(__NR_io_uring_setup, 4, &params) < 0)
				wl_die("io_uring_setup");
		} else if (!strcmp(k, "uffd")) {
			/* Refused by name (its registrations are the process's own, not ckpt's). */
			if (syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK) < 0)
				wl_die("userfaultfd");
		} else if (!strcmp(k, "bigdeleted")) {
			int fd = open("big.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
			if (fd < 0 || ftruncate(fd, 9 << 20) || unlink("big.dat"))
				wl_die("bigdeleted");
		} else {
			wl_die("unknown kind %s", k);
		}
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(5);
	}
}
