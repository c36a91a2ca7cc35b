/*
 * ipcns: the objects of an ipc namespace, used by two processes (run it in a container
 * with an ipc namespace of its own).
 * Usage: ipcns WORKDIR   (protocol in wl.h; the root answers the signals)
 *
 * Setup (root R, then its child C):
 *  - SysV shared memory (key 0xc4e0001, 64 KiB, mode 0640) attached by R; C inherits the
 *    attachment and attaches it a second time, read-only, elsewhere. Bytes 4096.. hold
 *    a pattern; the first page holds R's and C's counters and their sum, each bumped
 *    under semaphore 0 of a set (key 0xc4e0002, 2 semaphores: 1, and 7 that nobody
 *    touches).
 *  - a SysV message queue (key 0xc4e0003, mode 0620) holding three messages of types
 *    3, 1, 2 ("three", "one", "two"), never received.
 *  - a POSIX queue /ckpt-ipcns (mode 0600, 8 messages of 64 bytes at most) holding
 *    "low-a" (priority 1), "high" (5), "low-b" (1), closed: no fd holds it.
 * Check (R, on SIGUSR1): the ids are still the ones got at setup and the keys name them;
 * the segment's size, mode and attach count (3: R, C twice), the pattern, the counters
 * (the sum is R's plus C's; C's moved since the last check: C runs and writes through
 * the segment), C's read-only view shows what R wrote; semaphore 1 is 7; the message
 * queue holds its three messages in order (MSG_COPY, nothing received); the POSIX queue
 * has its attributes and gives "high", "low-a", "low-b" (then they are sent back).
 */
#include "wl.h"
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define SHM_SIZE (64 << 10)
#define MQ_NAME "/ckpt-ipcns"
#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

struct counters {
	volatile uint64_t r, c, sum;
	volatile uint64_t c_seen;
	volatile uint64_t c_ready; /* C attached its read-only view */
};

static int shmid, semid, msqid, child;
static const long types[3] = { 3, 1, 2 };
static const char *texts[3] = { "three", "one", "two" };
struct msg {
	long type;
	char text[64];
};
static uint8_t *seg;
static struct counters *ctr;
static uint64_t last_c;

static void sem_op(int num, int op)
{
	struct sembuf b = { .sem_num = num, .sem_op = op, .sem_flg = 0 };
	while (semop(semid, &b, 1) == -1)
		if (errno != EINTR)
			wl_die("semop");
}

static void bump(volatile uint64_t *mine)
{
	sem_op(0, -1);
	(*mine)++;
	ctr->sum++;
	sem_op(0, 1);
}

static void child_loop(void)
{
	/* A second, read-only attach of the same segment. */
	const uint8_t *ro = shmat(shmid, NULL, SHM_RDONLY);
	if (ro == (void *)-1)
		wl_die("shmat ro");
	ctr->c_ready = 1;
	int parent = getppid();
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		bump(&ctr->c);
		/* What R wrote, seen through the read-only view. */
		ctr->c_seen = ((const struct counters *)ro)->r;
		wl_sleep_ms(5);
	}
}

static int verify(void)
{
	struct shmid_ds ds;
	WL_CHECK(shmget(0xc4e0001, 0, 0) == shmid, "shm key names id %d, not %d",
		 shmget(0xc4e0001, 0, 0), shmid);
	WL_CHECK(shmctl(shmid, IPC_STAT, &ds) == 0, "shmctl IPC_STAT: %s", strerror(errno));
	WL_CHECK(ds.shm_segsz == SHM_SIZE, "segment size %zu", (size_t)ds.shm_segsz);
	WL_CHECK((ds.shm_perm.mode & 0777) == 0640, "segment mode %o", ds.shm_perm.mode);
	WL_CHECK(ds.shm_nattch == 3, "segment attached %lu times", (unsigned long)ds.shm_nattch);
	size_t bad = wl_cmp(seg + 4096, SHM_SIZE - 4096, 31);
	WL_CHECK(bad == (size_t)-1, "segment pattern differs at byte %zu", bad + 4096);
	sem_op(0, -1);
	uint64_t r = ctr->r, c = ctr->c, sum = ctr->sum;
	sem_op(0, 1);
	WL_CHECK(sum == r + c, "sum %lu != %lu + %lu", (unsigned long)sum, (unsigned long)r,
		 (unsigned long)c);
	/* The child runs and writes through the segment (given up to 10 s on a loaded host);
	 * its read-only view shows what we wrote. */
	for (int i = 0; i < 10000 && (ctr->c <= last_c || ctr->c_seen == 0); i++)
		wl_sleep_ms(1);
	WL_CHECK(ctr->c > last_c, "the child's counter did not move (%lu)", (unsigned long)c);
	last_c = ctr->c;
	WL_CHECK(ctr->c_seen > 0 && ctr->c_seen <= ctr->r, "the child's read-only view saw %lu of %lu",
		 (unsigned long)ctr->c_seen, (unsigned long)ctr->r);
	WL_CHECK(semget(0xc4e0002, 0, 0) == semid, "sem key names another id");
	WL_CHECK(semctl(semid, 1, GETVAL) == 7, "semaphore 1 is %d", semctl(semid, 1, GETVAL));
	WL_CHECK(msgget(0xc4e0003, 0) == msqid, "msg key names another id");
	struct msqid_ds mq;
	WL_CHECK(msgctl(msqid, IPC_STAT, &mq) == 0 && mq.msg_qnum == 3, "msg queue holds %lu",
		 (unsigned long)mq.msg_qnum);
	WL_CHECK((mq.msg_perm.mode & 0777) == 0620, "msg queue mode %o", mq.msg_perm.mode);
	for (int i = 0; i < 3; i++) {
		struct msg m;
		memset(&m, 0, sizeof(m));
		ssize_t n = msgrcv(msqid, &m, sizeof(m.text), i, IPC_NOWAIT | MSG_COPY);
		WL_CHECK(n == (ssize_t)strlen(texts[i]) && m.type == types[i] &&
				 !memcmp(m.text, texts[i], n),
			 "message %d: type %ld %.*s", i, m.type, (int)(n < 0 ? 0 : n), m.text);
	}
	mqd_t q = mq_open(MQ_NAME, O_RDWR | O_NONBLOCK);
	WL_CHECK(q != (mqd_t)-1, "mq_open: %s", strerror(errno));
	struct mq_attr a;
	mq_getattr(q, &a);
	int ok = a.mq_maxmsg == 8 && a.mq_msgsize == 64 && a.mq_curmsgs == 3;
	static const char *want[3] = { "high", "low-a", "low-b" };
	static const unsigned prios[3] = { 5, 1, 1 };
	char got[3][64];
	unsigned gp[3];
	for (int i = 0; ok && i < 3; i++) {
		ssize_t n = mq_receive(q, got[i], 64, &gp[i]);
		ok = n == (ssize_t)strlen(want[i]) && !memcmp(got[i], want[i], n) &&
		     gp[i] == prios[i];
	}
	/* Back as they were sent: low-a, high, low-b. */
	mq_send(q, "low-a", 5, 1);
	mq_send(q, "high", 4, 5);
	mq_send(q, "low-b", 5, 1);
	mq_close(q);
	WL_CHECK(ok, "POSIX queue: maxmsg %ld msgsize %ld curmsgs %ld or messages differ",
		 a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs);
	return 1;
}

static void corrupt(void)
{
	seg[5000] ^= 0xff;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: ipcns WORKDIR");
	wl_init();
	shmid = shmget(0xc4e0001, SHM_SIZE, IPC_CREAT | IPC_EXCL | 0640);
	semid = semget(0xc4e0002, 2, IPC_CREAT | IPC_EXCL | 0600);
	msqid = msgget(0xc4e0003, IPC_CREAT | IPC_EXCL | 0620);
	if (shmid < 0 || semid < 0 || msqid < 0)
		wl_die("get");
	seg = shmat(shmid, NULL, 0);
	if (seg == (void *)-1)
		wl_die("shmat");
	ctr = (struct counters *)seg;
	wl_fill(seg + 4096, SHM_SIZE - 4096, 31);
	unsigned short init[2] = { 1, 7 };
	if (semctl(semid, 0, SETALL, init))
		wl_die("SETALL");
	for (int i = 0; i < 3; i++) {
		struct msg m = { .type = types[i] };
		strcpy(m.text, texts[i]);
		if (msgsnd(msqid, &m, strlen(texts[i]), 0))
			wl_die("msgsnd");
	}
	struct mq_attr a = { .mq_maxmsg = 8, .mq_msgsize = 64 };
	mq_unlink(MQ_NAME);
	mqd_t q = mq_open(MQ_NAME, O_CREAT | O_EXCL | O_WRONLY, 0600, &a);
	if (q == (mqd_t)-1)
		wl_die("mq_open");
	if (mq_send(q, "low-a", 5, 1) || mq_send(q, "high", 4, 5) || mq_send(q, "low-b", 5, 1))
		wl_die("mq_send");
	mq_close(q);
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0)
		child_loop();
	while (!ctr->c_ready)
		wl_sleep_ms(1);
	wl_ready();
	for (;;) {
		bump(&ctr->r);
		wl_poll(verify, corrupt);
		wl_sleep_ms(5);
	}
}
