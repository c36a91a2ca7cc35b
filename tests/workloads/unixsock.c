/*
 * unixsock: unix sockets with state in flight at every dump.
 * Usage: unixsock WORKDIR MODE...   (protocol in wl.h)
 *
 * pair: socketpairs (stream, dgram, seqpacket) made by the parent before it forks a
 *   child; the parent keeps end A, the child end B. Between checks both directions hold
 *   unread data: numbered bytes on the stream, three messages of distinct sizes on the
 *   others (their boundaries must survive). Check (parent): what waits at A is what the
 *   child sent last; then the child (SIGUSR1, verdict in a shared page) checks what waits
 *   at B, and both queue the next batch. SO_PEERCRED of every end names the parent.
 * listen: a listener bound to WORKDIR/l.sock (mode 0640) and one on an abstract name, in
 *   this process; on each, one accepted connection with data queued both ways and two
 *   connections left in the queue. Check: names (getsockname/getpeername), the queued
 *   bytes, SO_PEERCRED, the file's mode; then the queued connections are accepted in
 *   their order (each client writes its number, the accepted end must read it), and two
 *   new ones are queued for the next dump.
 * dgram: a datagram socket bound to WORKDIR/d.sock with datagrams queued from an unnamed
 *   sender and from one bound to an abstract name (recvfrom must name it), and a socket
 *   connected to it.
 * closed: a stream pair whose one end was closed with bytes still unread at the other
 *   (read them, then EOF), and a pair shut down for writing on one side (bytes, then EOF
 *   there; the other way still works).
 * ext: a stream connected to WORKDIR/ext.sock, a listener of the test's (outside the
 *   tree). Check: its peer is still that name, and "ping N" written to it goes through
 *   (the test reads it on its side).
 * async: a socketpair end with O_ASYNC, owned by this process (F_SETOWN), signalling
 *   SIGRTMIN+2 (F_SETSIG). Check: owner, signal and flag as set; a byte written to the
 *   other end raises the signal here (the handler counts).
 * asyncother: a socketpair end whose O_ASYNC signals go to the child (refused).
 * childconn: the child connects to the parent's listener, which accepts: SO_PEERCRED of
 *   the accepted end names the child, the child's names the parent. Check: the parent
 *   sends "N", the child answers "N ok" if its own SO_PEERCRED still names the parent;
 *   the parent's must name the child.
 * oldpair: a socketpair made by the parent, then held by its child only (SO_PEERCRED
 *   names the parent, alive when the child's seed remakes it: refused).
 */
#include "wl.h"
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static int want_pair, want_listen, want_dgram, want_closed, ext = -1;
static char ext_path[200];
static pid_t child = -1;
/* Batch numbers, one per mode, growing by one per check. */
static int gen, lgen, dgen, cgen;

/* ---- helpers ---- */

static socklen_t mkaddr(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (abstract) {
		snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s", name);
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
	}
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
	return sizeof(*a);
}

static int name_is(int fd, int peer, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&a, &len))
		return 0;
	if (abstract)
		return a.sun_path[0] == 0 &&
		       len == offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name) &&
		       !memcmp(a.sun_path + 1, name, strlen(name));
	if (!name[0])
		return len == offsetof(struct sockaddr_un, sun_path);
	return !strcmp(a.sun_path, name);
}

static pid_t peer_pid(int fd)
{
	struct ucred c;
	socklen_t len = sizeof(c);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len))
		return -1;
	return c.pid;
}

/* Messages of batch g on socket type t, direction d: sizes differ so boundaries show. */
static size_t msg_len(int i)
{
	return 100 + 1000 * i;
}

static void send_batch(int fd, int type, int g, int dir)
{
	unsigned char buf[4096];
	if (type == SOCK_STREAM) {
		wl_fill(buf, 3000, g * 10 + dir);
		if (write(fd, buf, 3000) != 3000)
			wl_die("stream write");
		return;
	}
	for (int i = 0; i < 3; i++) {
		wl_fill(buf, msg_len(i), g * 100 + dir * 10 + i);
		if (send(fd, buf, msg_len(i), 0) != (ssize_t)msg_len(i))
			wl_die("send message");
	}
}

static int recv_batch(int fd, int type, int g, int dir, const char *what)
{
	unsigned char buf[8192];
	if (type == SOCK_STREAM) {
		size_t have = 0;
		while (have < 3000) {
			ssize_t n = recv(fd, buf + have, 3000 - have, MSG_DONTWAIT);
			WL_CHECK(n > 0, "%s: stream read %zd errno %d after %zu bytes", what, n, errno,
				 have);
			have += n;
		}
		WL_CHECK(wl_cmp(buf, 3000, g * 10 + dir) == (size_t)-1, "%s: stream bytes differ",
			 what);
		/* Nothing more (or the end, if the peer is gone or shut down). */
		ssize_t more = recv(fd, buf, 1, MSG_DONTWAIT | MSG_PEEK);
		WL_CHECK(more == 0 || (more < 0 && errno == EAGAIN), "%s: more bytes than sent",
			 what);
		return 1;
	}
	for (int i = 0; i < 3; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		WL_CHECK(n == (ssize_t)msg_len(i), "%s: message %d of %zd bytes (errno %d), want %zu",
			 what, i, n, errno, msg_len(i));
		WL_CHECK(wl_cmp(buf, n, g * 100 + dir * 10 + i) == (size_t)-1,
			 "%s: message %d differs", what, i);
	}
	WL_CHECK(recv(fd, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN,
		 "%s: more messages than sent", what);
	return 1;
}

/* ---- pair ---- */

static const int types[3] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
static int pa[3], pb[3];
struct shared {
	volatile int req, done, ok;
	char reason[400];
};
static struct shared *sh;
static pid_t parent_pid;

static void child_loop(void)
{
	for (int t = 0; t < 3; t++)
		close(pa[t]);
	int seen = 0;
	for (;;) {
		if (getppid() != parent_pid)
			_exit(0);
		if (sh->req == seen) {
			wl_sleep_ms(2);
			continue;
		}
		seen = sh->req;
		int ok = 1;
		wl_reason[0] = 0;
		for (int t = 0; t < 3 && ok; t++) {
			char what[64];
			snprintf(what, sizeof(what), "child end of pair type %d", types[t]);
			ok = recv_batch(pb[t], types[t], gen, 0, what);
			if (ok && peer_pid(pb[t]) != parent_pid)
				ok = wl_fail("child end type %d: SO_PEERCRED pid %d, want %d", types[t],
					     peer_pid(pb[t]), parent_pid);
		}
		gen++;
		for (int t = 0; t < 3 && ok; t++)
			send_batch(pb[t], types[t], gen, 1);
		snprintf(sh->reason, sizeof(sh->reason), "%s", wl_reason);
		sh->ok = ok;
		sh->done = seen;
	}
}

static void setup_pair(void)
{
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	for (int t = 0; t < 3; t++) {
		int sv[2];
		if (socketpair(AF_UNIX, types[t], 0, sv))
			wl_die("socketpair");
		pa[t] = sv[0];
		pb[t] = sv[1];
	}
	parent_pid = getpid();
	/* Batch 0 both ways before the fork. */
	for (int t = 0; t < 3; t++) {
		send_batch(pa[t], types[t], 0, 0);
		send_batch(pb[t], types[t], 0, 1);
	}
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0)
		child_loop();
	for (int t = 0; t < 3; t++)
		close(pb[t]);
}

static int verify_pair(void)
{
	for (int t = 0; t < 3; t++) {
		char what[64];
		snprintf(what, sizeof(what), "parent end of pair type %d", types[t]);
		if (!recv_batch(pa[t], types[t], gen, 1, what))
			return 0;
		WL_CHECK(peer_pid(pa[t]) == getpid(), "parent end type %d: SO_PEERCRED pid %d",
			 types[t], peer_pid(pa[t]));
	}
	int req = sh->req + 1;
	sh->req = req;
	for (int i = 0; i < 20000 && sh->done != req; i++)
		wl_sleep_ms(1);
	WL_CHECK(sh->done == req, "the child did not answer");
	WL_CHECK(sh->ok, "%s", sh->reason);
	gen++;
	for (int t = 0; t < 3; t++)
		send_batch(pa[t], types[t], gen, 0);
	return 1;
}

/* ---- listen ---- */

struct listener {
	int abstract;
	char name[108];
	int l, acc, cli, pending[2];
};
static struct listener ls[2];

static void queue_two(struct listener *x)
{
	struct sockaddr_un a;
	socklen_t len = mkaddr(&a, x->name, x->abstract);
	for (int i = 0; i < 2; i++) {
		x->pending[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (x->pending[i] < 0 || connect(x->pending[i], (struct sockaddr *)&a, len))
			wl_die("connect pending");
	}
}

static void setup_listen(const char *dir)
{
	for (int k = 0; k < 2; k++) {
		struct listener *x = &ls[k];
		x->abstract = k;
		if (k)
			snprintf(x->name, sizeof(x->name), "unixsock-%d", (int)getpid());
		else
			snprintf(x->name, sizeof(x->name), "%s/l.sock", dir);
		struct sockaddr_un a;
		socklen_t len = mkaddr(&a, x->name, x->abstract);
		x->l = socket(AF_UNIX, SOCK_STREAM, 0);
		if (x->l < 0 || bind(x->l, (struct sockaddr *)&a, len) || listen(x->l, 7))
			wl_die("listen");
		/* Accepting must never block; the flag must survive too. */
		fcntl(x->l, F_SETFL, O_NONBLOCK);
		if (!k && chmod(x->name, 0640))
			wl_die("chmod");
		x->cli = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(x->cli, (struct sockaddr *)&a, len))
			wl_die("connect");
		x->acc = accept4(x->l, NULL, NULL, 0);
		if (x->acc < 0)
			wl_die("accept");
		send_batch(x->cli, SOCK_STREAM, lgen, 2);
		send_batch(x->acc, SOCK_STREAM, lgen, 3);
		queue_two(x);
	}
}

static int verify_listen(void)
{
	for (int k = 0; k < 2; k++) {
		struct listener *x = &ls[k];
		WL_CHECK(name_is(x->l, 0, x->name, x->abstract), "listener %d: its name", k);
		WL_CHECK(name_is(x->acc, 0, x->name, x->abstract), "accepted %d: its name", k);
		WL_CHECK(name_is(x->cli, 1, x->name, x->abstract), "client %d: its peer's name", k);
		WL_CHECK(name_is(x->cli, 0, "", 0), "client %d: named", k);
		WL_CHECK(peer_pid(x->cli) == getpid() && peer_pid(x->acc) == getpid() &&
				 peer_pid(x->l) == getpid(),
			 "listener %d: SO_PEERCRED pids %d %d %d", k, peer_pid(x->cli),
			 peer_pid(x->acc), peer_pid(x->l));
		if (!x->abstract) {
			struct stat st;
			WL_CHECK(!stat(x->name, &st) && S_ISSOCK(st.st_mode) &&
					 (st.st_mode & 0777) == 0640,
				 "%s: mode %o", x->name, st.st_mode);
		}
		if (!recv_batch(x->acc, SOCK_STREAM, lgen, 2, "accepted end") ||
		    !recv_batch(x->cli, SOCK_STREAM, lgen, 3, "client end"))
			return 0;
		int opt = 0;
		socklen_t ol = sizeof(opt);
		WL_CHECK(!getsockopt(x->l, SOL_SOCKET, SO_ACCEPTCONN, &opt, &ol) && opt,
			 "listener %d not listening", k);
		WL_CHECK(fcntl(x->l, F_GETFL) & O_NONBLOCK, "listener %d: O_NONBLOCK lost", k);
		int got[2];
		for (int i = 0; i < 2; i++) {
			got[i] = accept4(x->l, NULL, NULL, SOCK_NONBLOCK);
			WL_CHECK(got[i] >= 0, "listener %d: queued connection %d: errno %d", k, i,
				 errno);
		}
		int more = accept4(x->l, NULL, NULL, SOCK_NONBLOCK);
		WL_CHECK(more < 0 && errno == EAGAIN, "listener %d: a third queued connection", k);
		for (int i = 0; i < 2; i++) {
			char c = '0' + i, r = 0;
			WL_CHECK(write(x->pending[i], &c, 1) == 1, "write to pending %d", i);
			WL_CHECK(read(got[i], &r, 1) == 1 && r == c,
				 "listener %d: connection %d accepted out of order (%c)", k, i, r);
			close(got[i]);
			close(x->pending[i]);
		}
	}
	lgen++;
	for (int k = 0; k < 2; k++) {
		send_batch(ls[k].cli, SOCK_STREAM, lgen, 2);
		send_batch(ls[k].acc, SOCK_STREAM, lgen, 3);
		queue_two(&ls[k]);
	}
	return 1;
}

/* ---- dgram ---- */

static int drecv, dnamed, danon, dconn;
static char dpath[108], dname[108];

static void dgram_batch(void)
{
	struct sockaddr_un a;
	socklen_t len = mkaddr(&a, dpath, 0);
	unsigned char buf[512];
	wl_fill(buf, 200, dgen * 3);
	if (sendto(danon, buf, 200, 0, (struct sockaddr *)&a, len) != 200)
		wl_die("sendto anon");
	wl_fill(buf, 300, dgen * 3 + 1);
	if (sendto(dnamed, buf, 300, 0, (struct sockaddr *)&a, len) != 300)
		wl_die("sendto named");
	wl_fill(buf, 400, dgen * 3 + 2);
	if (send(dconn, buf, 400, 0) != 400)
		wl_die("send connected");
}

static void setup_dgram(const char *dir)
{
	snprintf(dpath, sizeof(dpath), "%s/d.sock", dir);
	snprintf(dname, sizeof(dname), "unixsock-d-%d", (int)getpid());
	struct sockaddr_un a;
	socklen_t len = mkaddr(&a, dpath, 0);
	drecv = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (drecv < 0 || bind(drecv, (struct sockaddr *)&a, len))
		wl_die("bind dgram");
	danon = socket(AF_UNIX, SOCK_DGRAM, 0);
	dnamed = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un n;
	socklen_t nlen = mkaddr(&n, dname, 1);
	if (bind(dnamed, (struct sockaddr *)&n, nlen))
		wl_die("bind named sender");
	dconn = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (connect(dconn, (struct sockaddr *)&a, len))
		wl_die("connect dgram");
	dgram_batch();
}

static int verify_dgram(void)
{
	unsigned char buf[1024];
	size_t want[3] = { 200, 300, 400 };
	for (int i = 0; i < 3; i++) {
		struct sockaddr_un from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(drecv, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from,
				     &fl);
		WL_CHECK(n == (ssize_t)want[i], "datagram %d: %zd bytes (errno %d)", i, n, errno);
		WL_CHECK(wl_cmp(buf, n, dgen * 3 + i) == (size_t)-1, "datagram %d differs", i);
		if (i == 1)
			WL_CHECK(fl == offsetof(struct sockaddr_un, sun_path) + 1 + strlen(dname) &&
					 !memcmp(from.sun_path + 1, dname, strlen(dname)),
				 "datagram 1: sender not named @%s (len %u)", dname, fl);
		else
			WL_CHECK(fl == 0 || fl == offsetof(struct sockaddr_un, sun_path),
				 "datagram %d: a named sender (len %u)", i, fl);
	}
	WL_CHECK(recv(drecv, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "a fourth datagram");
	WL_CHECK(name_is(dconn, 1, dpath, 0), "connected dgram: its peer");
	WL_CHECK(name_is(dnamed, 0, dname, 1), "named sender: its name");
	dgen++;
	dgram_batch();
	return 1;
}

/* ---- closed ---- */

static int csurv, shut_a, shut_b, clis, cacc;

static void setup_closed(void)
{
	int sv[2];
	/* A listener's accepted connection whose client sent bytes and closed. */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "ckpt-closed-%d-%d", getpid(), cgen);
	socklen_t len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
	int cl = socket(AF_UNIX, SOCK_STREAM, 0);
	clis = socket(AF_UNIX, SOCK_STREAM, 0);
	if (clis < 0 || cl < 0 || bind(clis, (struct sockaddr *)&sa, len) || listen(clis, 4) ||
	    connect(cl, (struct sockaddr *)&sa, len))
		wl_die("closed client");
	cacc = accept(clis, NULL, NULL);
	if (cacc < 0)
		wl_die("accept");
	send_batch(cl, SOCK_STREAM, cgen, 6);
	close(cl);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		wl_die("socketpair");
	send_batch(sv[1], SOCK_STREAM, cgen, 4);
	close(sv[1]);
	csurv = sv[0];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		wl_die("socketpair");
	shut_a = sv[0];
	shut_b = sv[1];
	send_batch(shut_a, SOCK_STREAM, cgen, 5);
	shutdown(shut_a, SHUT_WR);
}

static int verify_closed(void)
{
	char c;
	if (!recv_batch(csurv, SOCK_STREAM, cgen, 4, "survivor"))
		return 0;
	WL_CHECK(recv(csurv, &c, 1, MSG_DONTWAIT) == 0, "survivor: no EOF after the bytes");
	if (!recv_batch(cacc, SOCK_STREAM, cgen, 6, "accepted, its client closed"))
		return 0;
	WL_CHECK(recv(cacc, &c, 1, MSG_DONTWAIT) == 0, "accepted, its client closed: no EOF");
	close(cacc);
	close(clis);
	if (!recv_batch(shut_b, SOCK_STREAM, cgen, 5, "shut down pair"))
		return 0;
	WL_CHECK(recv(shut_b, &c, 1, MSG_DONTWAIT) == 0, "shut down pair: no EOF");
	WL_CHECK(write(shut_b, "x", 1) == 1 && recv(shut_a, &c, 1, MSG_DONTWAIT) == 1 && c == 'x',
		 "shut down pair: the other way broken");
	WL_CHECK(send(shut_a, "y", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE,
		 "shut down pair: could still write");
	close(csurv);
	close(shut_a);
	close(shut_b);
	cgen++;
	setup_closed();
	return 1;
}

static int verify_ext(void)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "ping %d\n", wl_checks + 1);
	WL_CHECK(name_is(ext, 1, ext_path, 0), "external: its peer is not %s", ext_path);
	WL_CHECK(send(ext, line, n, MSG_NOSIGNAL) == n, "external: send: errno %d", errno);
	return 1;
}

/* ---- async ---- */

static int want_async, as_a, as_b;
static volatile sig_atomic_t as_signals;

static void on_async(int sig)
{
	(void)sig;
	as_signals++;
}

static void setup_async(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		wl_die("socketpair");
	as_a = sv[0];
	as_b = sv[1];
	signal(SIGRTMIN + 2, on_async);
	if (fcntl(as_a, F_SETOWN, getpid()) || fcntl(as_a, F_SETSIG, SIGRTMIN + 2) ||
	    fcntl(as_a, F_SETFL, fcntl(as_a, F_GETFL) | O_ASYNC | O_NONBLOCK))
		wl_die("O_ASYNC");
}

static int verify_async(void)
{
	WL_CHECK(fcntl(as_a, F_GETFL) & O_ASYNC, "O_ASYNC lost");
	WL_CHECK(fcntl(as_a, F_GETOWN) == getpid(), "F_GETOWN %d, want %d", fcntl(as_a, F_GETOWN),
		 getpid());
	WL_CHECK(fcntl(as_a, F_GETSIG) == SIGRTMIN + 2, "F_GETSIG %d", fcntl(as_a, F_GETSIG));
	int before = as_signals;
	WL_CHECK(write(as_b, "a", 1) == 1, "write");
	for (int i = 0; i < 2000 && as_signals == before; i++)
		wl_sleep_ms(1);
	WL_CHECK(as_signals > before, "no signal for the byte written");
	char c;
	WL_CHECK(read(as_a, &c, 1) == 1 && c == 'a', "read back");
	return 1;
}

/* ---- childconn ---- */

static int want_childconn, cc_sock;
static pid_t cc_child;

static void setup_childconn(const char *dir)
{
	char path[200];
	snprintf(path, sizeof(path), "%s/c.sock", dir);
	struct sockaddr_un a;
	socklen_t len = mkaddr(&a, path, 0);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, len) || listen(l, 4))
		wl_die("listen");
	pid_t parent = getpid();
	cc_child = fork();
	if (cc_child == 0) {
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&a, len))
			_exit(1);
		for (;;) {
			char buf[32];
			ssize_t n = read(c, buf, sizeof(buf) - 1);
			if (n <= 0 || getppid() != parent)
				_exit(0);
			buf[n] = 0;
			char out[64];
			int m = snprintf(out, sizeof(out), "%s %s", buf,
					 peer_pid(c) == parent ? "ok" : "bad");
			if (write(c, out, m) != m)
				_exit(1);
		}
	}
	cc_sock = accept(l, NULL, NULL);
	if (cc_sock < 0)
		wl_die("accept");
	close(l);
}

static int verify_childconn(void)
{
	WL_CHECK(peer_pid(cc_sock) == cc_child, "accepted end: SO_PEERCRED pid %d, want the child %d",
		 peer_pid(cc_sock), cc_child);
	char msg[16], want[32], got[64];
	int n = snprintf(msg, sizeof(msg), "%d", wl_checks + 1);
	snprintf(want, sizeof(want), "%s ok", msg);
	WL_CHECK(write(cc_sock, msg, n) == n, "write to the child: errno %d", errno);
	ssize_t r = read(cc_sock, got, sizeof(got) - 1);
	WL_CHECK(r > 0, "read from the child: %zd errno %d", r, errno);
	got[r] = 0;
	WL_CHECK(!strcmp(got, want), "the child answered %s, want %s", got, want);
	return 1;
}

static int verify(void)
{
	if (want_async && !verify_async())
		return 0;
	if (want_childconn && !verify_childconn())
		return 0;
	if (ext >= 0 && !verify_ext())
		return 0;
	if (want_pair && !verify_pair())
		return 0;
	if (want_listen && !verify_listen())
		return 0;
	if (want_dgram && !verify_dgram())
		return 0;
	if (want_closed && !verify_closed())
		return 0;
	return 1;
}

static void corrupt(void)
{
	if (want_pair)
		send(pa[1], "z", 1, 0);
	else if (want_listen)
		send(ls[0].cli, "z", 1, 0);
	else if (want_dgram)
		send(dconn, "z", 1, 0);
	else
		send(shut_b, "z", 1, 0);
}

/* A stream socketpair in `sv`, then a child that idles until this process is gone. */
static void pair_and_idle_child(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		wl_die("socketpair");
	pid_t parent = getpid();
	child = fork();
	if (child == 0) {
		while (getppid() == parent)
			wl_sleep_ms(5);
		_exit(0);
	}
}

int main(int argc, char **argv)
{
	wl_init();
	if (argc < 3 || chdir(argv[1]))
		wl_die("usage: unixsock WORKDIR MODE...");
	char dir[200];
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	for (int i = 2; i < argc; i++) {
		const char *k = argv[i];
		if (!strcmp(k, "pair")) {
			want_pair = 1;
			setup_pair();
		} else if (!strcmp(k, "listen")) {
			want_listen = 1;
			setup_listen(dir);
		} else if (!strcmp(k, "dgram")) {
			want_dgram = 1;
			setup_dgram(dir);
		} else if (!strcmp(k, "closed")) {
			want_closed = 1;
			setup_closed();
		} else if (!strcmp(k, "ext")) {
			snprintf(ext_path, sizeof(ext_path), "%s/ext.sock", dir);
			struct sockaddr_un a;
			socklen_t len = mkaddr(&a, ext_path, 0);
			ext = socket(AF_UNIX, SOCK_STREAM, 0);
			if (ext < 0 || connect(ext, (struct sockaddr *)&a, len))
				wl_die("connect %s", ext_path);
		} else if (!strcmp(k, "childconn")) {
			want_childconn = 1;
			setup_childconn(dir);
		} else if (!strcmp(k, "async")) {
			want_async = 1;
			setup_async();
		} else if (!strcmp(k, "asyncother")) {
			int sv[2];
			pair_and_idle_child(sv);
			if (fcntl(sv[0], F_SETOWN, child) ||
			    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_ASYNC))
				wl_die("O_ASYNC");
		} else if (!strcmp(k, "oldpair")) {
			int sv[2];
			pair_and_idle_child(sv);
			close(sv[0]);
			close(sv[1]);
		} else {
			wl_die("unknown mode %s", k);
		}
	}
	wl_ready();
	for (;;) {
		wl_poll(verify, corrupt);
		wl_sleep_ms(5);
	}
}
