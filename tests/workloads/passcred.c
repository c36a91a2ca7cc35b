/*
 * passcred: messages carrying credentials (SCM_CREDENTIALS) waiting in a queue.
 * Usage: passcred WORKDIR [outside]   (protocol in wl.h)
 * A datagram socketpair d; the receiver d[1] has SO_PASSCRED. Queued at d[1]:
 *  "m0" sent before SO_PASSCRED was set (no credentials: pid 0, uid/gid 65534);
 *  "m1" sent by the process (its own credentials, attached by the kernel);
 *  "m2" sent with explicit credentials: its pid, uid 4321, gid 8765;
 *  "m3" sent by a child (which keeps d[0] too): the child's pid.
 * A check receives them, compares each message's credentials, then queues them again
 * (the child sends "m3" when asked through a pipe and says when it is done).
 * `outside`: one more message whose credentials name the parent of the workload
 * (outside the tree: refused by the dump).
 */
#include "wl.h"
#include <sys/uio.h>
#include <sys/wait.h>

static int d[2], ask[2], done[2];
static pid_t child = -1;

static void send_creds(const char *msg, const struct ucred *uc)
{
	char cbuf[CMSG_SPACE(sizeof(struct ucred))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { (void *)msg, strlen(msg) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (uc) {
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_CREDENTIALS;
		c->cmsg_len = CMSG_LEN(sizeof(*uc));
		memcpy(CMSG_DATA(c), uc, sizeof(*uc));
	}
	if (sendmsg(d[0], &m, 0) != (ssize_t)strlen(msg))
		wl_die("sendmsg %s", msg);
}

static void passcred(int on)
{
	if (setsockopt(d[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		wl_die("SO_PASSCRED");
}

static void queue(void)
{
	passcred(0);
	send_creds("m0", NULL);
	passcred(1);
	send_creds("m1", NULL);
	struct ucred uc = { getpid(), 4321, 8765 };
	send_creds("m2", &uc);
	char b = 'q';
	if (write(ask[1], &b, 1) != 1 || read(done[0], &b, 1) != 1)
		wl_die("asking the child");
}

/* Receives one message: its text must be `want`, its credentials (pid, uid, gid). */
static int got(const char *want, pid_t pid, uid_t uid, gid_t gid)
{
	char buf[16] = { 0 }, cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(d[1], &m, MSG_DONTWAIT);
	WL_CHECK(n == (ssize_t)strlen(want) && !strcmp(buf, want), "%s: got %zd bytes %s (%s)",
		 want, n, buf, strerror(errno));
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	WL_CHECK(c && c->cmsg_type == SCM_CREDENTIALS, "%s: no credentials", want);
	struct ucred uc;
	memcpy(&uc, CMSG_DATA(c), sizeof(uc));
	WL_CHECK(uc.pid == pid && uc.uid == uid && uc.gid == gid,
		 "%s: credentials pid %d uid %u gid %u, want %d %u %u", want, uc.pid, uc.uid,
		 uc.gid, pid, uid, gid);
	return 1;
}

static int verify(void)
{
	if (!got("m0", 0, 65534, 65534) || !got("m1", getpid(), getuid(), getgid()) ||
	    !got("m2", getpid(), 4321, 8765) || !got("m3", child, getuid(), getgid()))
		return 0;
	char buf[8];
	WL_CHECK(recv(d[1], buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN,
		 "more messages than sent");
	queue();
	return 1;
}

/* The child's answer: one more message, sent by it, then a byte on `done`. */
static int send_m3(char b)
{
	return send(d[0], "m3", 2, 0) != 2 || write(done[1], &b, 1) != 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	wl_init();
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, d) || pipe(ask) || pipe(done))
		wl_die("socketpair/pipe");
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		close(d[1]);
		close(ask[1]);
		close(done[0]);
		wl_serve(ask[0], send_m3);
	}
	queue();
	if (argc > 2 && !strcmp(argv[2], "outside")) {
		struct ucred uc = { getppid(), getuid(), getgid() };
		send_creds("m4", &uc);
	}
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
