/* Demo workload: a counter plus 32 MiB of memory whose checksum it re-verifies every tick. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIZE (32u << 20)

int main(void) {
    uint64_t *mem = malloc(SIZE);
    uint64_t sum = 0;
    for (size_t i = 0; i < SIZE / 8; i++) {
        mem[i] = i * 0x9e3779b97f4a7c15ull;
        sum += mem[i];
    }
    for (unsigned long n = 0;; n++) {
        uint64_t check = 0;
        for (size_t i = 0; i < SIZE / 8; i++)
            check += mem[i];
        printf("pid %d  tick %lu  memory %s\n", getpid(), n, check == sum ? "intact" : "CORRUPT");
        fflush(stdout);
        struct timespec ts = {0, 500 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}
