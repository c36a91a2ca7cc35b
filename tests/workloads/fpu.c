/*
 * fpu: FPU/SSE/AVX/AVX-512 register contents survive a checkpoint.
 * Usage: fpu WORKDIR   (protocol in wl.h)
 *
 * The main loop calls one of the assembly loops below. It loads known values into
 * registers (x87 st0-st6 as 80-bit long doubles; xmm0-14, or ymm0-14 with AVX, or
 * zmm0-14 + zmm16-30 + k1-k7 with AVX-512F) and then, without ever spilling them,
 * alternates a spin that compares every register with its value in memory and a raw
 * nanosleep syscall (10 ms): a checkpoint almost always catches the task with these
 * values live in its registers, either in the syscall or in the spin. The loop
 * returns when a check is requested (or at the first mismatch, whose register it names).
 * Also: rounding mode FE_UPWARD (x87 control word and MXCSR), MXCSR FTZ and DAZ, and a
 * division whose upward-rounded result differs from round-to-nearest.
 */
#include "wl.h"
#include <fenv.h>
#include <math.h>

#define NVEC 31 /* slots 0-14 -> zmm/ymm/xmm0-14, slots 16-30 -> zmm16-30; 15 unused */
struct regtab {
	uint8_t vec[32][64];  /* offset 0 */
	long double x87[8];   /* offset 2048, 16 bytes each */
	uint16_t k[8];        /* offset 2176 */
} __attribute__((aligned(64)));

static struct regtab tab;

/* rdi = &tab, rsi = &wl_check_req, rdx = &wl_exit_req, rcx = timespec*, r8 = spin count.
 * Returns 0 when a flag was seen, else 1 + the number of the register that differed:
 * 1-31 vector slot, 101-107 x87 st(i), 201-207 k1-k7. */
long fpu_loop_sse(struct regtab *, volatile sig_atomic_t *, volatile sig_atomic_t *,
		  const struct timespec *, long);
long fpu_loop_avx(struct regtab *, volatile sig_atomic_t *, volatile sig_atomic_t *,
		  const struct timespec *, long);
long fpu_loop_avx512(struct regtab *, volatile sig_atomic_t *, volatile sig_atomic_t *,
		     const struct timespec *, long);

#define LOOP_PROLOGUE                                   \
	"push rbx\n push r12\n push r13\n push r14\n push r15\n" \
	"mov r12, rdi\n mov r13, rsi\n mov r14, rdx\n mov r15, rcx\n mov rbx, r8\n"

/* x87: st0..st6 = tab.x87[0..6] (pushed in reverse). */
#define X87_LOAD                                                                      \
	".irp i,6,5,4,3,2,1,0\n fld tbyte ptr [r12 + 2048 + \\i*16]\n .endr\n"
/* compare st(i) with tab.x87[i]: push the memory value, compare with st(i+1), pop */
#define X87_CHECK1(i, j, fail)                                                 \
	"fld tbyte ptr [r12 + 2048 + " #i "*16]\n"                             \
	"fcomip st, st(" #j ")\n"                                              \
	"mov eax, 101+" #i "\n jne " fail "\n jp " fail "\n"
#define X87_CHECK(fail)                                                        \
	X87_CHECK1(0, 1, fail) X87_CHECK1(1, 2, fail) X87_CHECK1(2, 3, fail)   \
	X87_CHECK1(3, 4, fail) X87_CHECK1(4, 5, fail) X87_CHECK1(5, 6, fail)   \
	X87_CHECK1(6, 7, fail)
#define X87_POP ".rept 7\n fstp st(0)\n .endr\n"

/* sleep via a raw syscall, then look at the flags */
#define LOOP_SLEEP_AND_FLAGS(done)                                             \
	"mov eax, dword ptr [r13]\n test eax, eax\n jnz " done "\n"            \
	"mov eax, dword ptr [r14]\n test eax, eax\n jnz " done "\n"            \
	"mov eax, 35\n mov rdi, r15\n xor esi, esi\n syscall\n"

#define LOOP_EPILOGUE(name)                                                    \
	name "_done:\n xor eax, eax\n"                                         \
	name "_out:\n" X87_POP "vzeroupper\n"                                  \
	"pop r15\n pop r14\n pop r13\n pop r12\n pop rbx\n ret\n"

__asm__(".intel_syntax noprefix\n"
	".text\n"

	/* ---------------- SSE: xmm0-14 ---------------- */
	".globl fpu_loop_sse\n .type fpu_loop_sse,@function\n"
	"fpu_loop_sse:\n" LOOP_PROLOGUE
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n movdqu xmm\\i, [r12 + \\i*64]\n .endr\n"
	X87_LOAD
	"1:\n mov rcx, rbx\n"
	"2:\n"
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n"
	"movdqa xmm15, xmm\\i\n pcmpeqb xmm15, [r12 + \\i*64]\n pmovmskb eax, xmm15\n"
	"cmp eax, 0xffff\n mov eax, 1+\\i\n jne fpu_loop_sse_out\n"
	".endr\n"
	X87_CHECK("fpu_loop_sse_out")
	"dec rcx\n jnz 2b\n"
	LOOP_SLEEP_AND_FLAGS("fpu_loop_sse_done")
	"jmp 1b\n"
	LOOP_EPILOGUE("fpu_loop_sse")

	/* ---------------- AVX: ymm0-14 ---------------- */
	".globl fpu_loop_avx\n .type fpu_loop_avx,@function\n"
	"fpu_loop_avx:\n" LOOP_PROLOGUE
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n vmovdqu ymm\\i, [r12 + \\i*64]\n .endr\n"
	X87_LOAD
	"1:\n mov rcx, rbx\n"
	"2:\n"
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n"
	"vpcmpeqb ymm15, ymm\\i, [r12 + \\i*64]\n vpmovmskb eax, ymm15\n"
	"cmp eax, -1\n mov eax, 1+\\i\n jne fpu_loop_avx_out\n"
	".endr\n"
	X87_CHECK("fpu_loop_avx_out")
	"dec rcx\n jnz 2b\n"
	LOOP_SLEEP_AND_FLAGS("fpu_loop_avx_done")
	"jmp 1b\n"
	LOOP_EPILOGUE("fpu_loop_avx")

	/* -------- AVX-512F: zmm0-14, zmm16-30, k1-k7 -------- */
	".globl fpu_loop_avx512\n .type fpu_loop_avx512,@function\n"
	"fpu_loop_avx512:\n" LOOP_PROLOGUE
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30\n"
	"vmovdqu64 zmm\\i, [r12 + \\i*64]\n .endr\n"
	".irp i,1,2,3,4,5,6,7\n kmovw k\\i, word ptr [r12 + 2176 + \\i*2]\n .endr\n"
	X87_LOAD
	"1:\n mov rcx, rbx\n"
	"2:\n"
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30\n"
	"vpcmpeqq k0, zmm\\i, [r12 + \\i*64]\n kmovw eax, k0\n"
	"cmp eax, 0xff\n mov eax, 1+\\i\n jne fpu_loop_avx512_out\n"
	".endr\n"
	".irp i,1,2,3,4,5,6,7\n"
	"kmovw eax, k\\i\n cmp ax, word ptr [r12 + 2176 + \\i*2]\n mov eax, 200+\\i\n"
	"jne fpu_loop_avx512_out\n"
	".endr\n"
	X87_CHECK("fpu_loop_avx512_out")
	"dec rcx\n jnz 2b\n"
	LOOP_SLEEP_AND_FLAGS("fpu_loop_avx512_done")
	"jmp 1b\n"
	LOOP_EPILOGUE("fpu_loop_avx512")
	".att_syntax prefix\n");

static long reg_fail;   /* first mismatch seen by the loop */
static long loops_run;
static double third_up; /* 1/3 rounded upward, computed at setup */
static const char *mode;

#define MXCSR_FTZ (1u << 15)
#define MXCSR_DAZ (1u << 6)
#define MXCSR_RC_MASK (3u << 13)
#define MXCSR_RC_UP (2u << 13)

static unsigned get_mxcsr(void)
{
	unsigned m;
	__asm__ volatile("stmxcsr %0" : "=m"(m));
	return m;
}

static void set_mxcsr(unsigned m)
{
	__asm__ volatile("ldmxcsr %0" : : "m"(m));
}

static unsigned short get_fpucw(void)
{
	unsigned short cw;
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	return cw;
}

static int verify(void)
{
	WL_CHECK(reg_fail == 0,
		 "%s loop: register code %ld lost its value (1+n: vector register n, "
		 "101+n: x87 st(n), 200+n: k(n))",
		 mode, reg_fail);
	WL_CHECK(loops_run > 0, "register loop never ran");
	WL_CHECK(fegetround() == FE_UPWARD, "fegetround() = %d, want FE_UPWARD", fegetround());
	unsigned m = get_mxcsr();
	WL_CHECK((m & MXCSR_RC_MASK) == MXCSR_RC_UP, "MXCSR %#x: rounding not upward", m);
	WL_CHECK((m & (MXCSR_FTZ | MXCSR_DAZ)) == (MXCSR_FTZ | MXCSR_DAZ),
		 "MXCSR %#x: FTZ/DAZ lost", m);
	unsigned short cw = get_fpucw();
	WL_CHECK((cw & 0x0c00) == 0x0800, "x87 control word %#x: rounding not upward", cw);
	volatile double one = 1.0, three = 3.0;
	double q = one / three;
	WL_CHECK(q == third_up, "1/3 = %a, expected %a (upward)", q, third_up);
	/* denormals are flushed (FTZ) / treated as zero (DAZ) */
	volatile double tiny = 0x1p-1070;
	volatile double r = tiny * 1.0;
	WL_CHECK(r == 0.0, "denormal survived DAZ: %a", r);
	return 1;
}

static void corrupt(void)
{
	fesetround(FE_TONEAREST);
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();

	for (int i = 0; i < 32; i++)
		wl_fill(tab.vec[i], 64, 700 + i);
	tab.x87[0] = 1.0L / 3.0L; /* 64-bit mantissa, more than a double holds */
	tab.x87[1] = -2.718281828459045235360287471352662498L;
	tab.x87[2] = 3.141592653589793238462643383279502884L;
	tab.x87[3] = 1e300L * 1e300L; /* beyond double range */
	tab.x87[4] = -0.0L;
	tab.x87[5] = 12345678901234567890.0L;
	tab.x87[6] = 1.0L / 7.0L;
	for (int i = 0; i < 8; i++)
		tab.k[i] = (uint16_t)(0x1234 * (i + 1) ^ 0xa5a5);

	double nearest = 1.0 / 3.0; /* folded at compile time: round to nearest */
	if (fesetround(FE_UPWARD))
		wl_die("fesetround");
	set_mxcsr(get_mxcsr() | MXCSR_FTZ | MXCSR_DAZ);
	volatile double one = 1.0, three = 3.0;
	third_up = one / three;
	if (third_up == nearest)
		wl_die("upward rounding made no difference");

	long (*loop)(struct regtab *, volatile sig_atomic_t *, volatile sig_atomic_t *,
		     const struct timespec *, long) = fpu_loop_sse;
	mode = "sse";
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f")) {
		loop = fpu_loop_avx512;
		mode = "avx512";
	} else if (__builtin_cpu_supports("avx")) {
		loop = fpu_loop_avx;
		mode = "avx";
	}
	printf("MODE %s\n", mode);
	const struct timespec ts = { 0, 10 * 1000 * 1000 };

	wl_ready();
	for (;;) {
		long r = loop(&tab, &wl_check_req, &wl_exit_req, &ts, 20000);
		loops_run++;
		if (r && !reg_fail)
			reg_fail = r;
		wl_poll(verify, corrupt);
		if (r)
			wl_sleep_ms(10); /* do not spin on a mismatch */
	}
}
