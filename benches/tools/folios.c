// folios: how a file's page cache is made up. Maps FILE read-only, touches every page, looks
// up each page's frame (/proc/self/pagemap) and its flags (/proc/kpageflags: bit 15 compound
// head, 16 compound tail) and prints how many pages sit in order-0 and in large folios.
// Needs root (frame numbers). Build: gcc -O2 -o folios benches/tools/folios.c
// Use: read FILE through a mount first (cold: drop caches before), then `folios FILE`.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: folios FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4096) {
        perror(argv[1]);
        return 1;
    }
    size_t pages = st.st_size / 4096;
    volatile const char *p = mmap(0, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    unsigned long sum = 0;
    for (size_t i = 0; i < pages; i++)
        sum += p[i * 4096];
    int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);
    if (pm < 0 || kf < 0) {
        perror("/proc/self/pagemap or /proc/kpageflags (root needed)");
        return 1;
    }
    size_t heads = 0, tails = 0, single = 0;
    for (size_t i = 0; i < pages; i++) {
        uint64_t e, f;
        if (pread(pm, &e, 8, ((uintptr_t)p / 4096 + i) * 8) != 8 || !(e >> 63))
            continue;
        if (pread(kf, &f, 8, (e & ((1ULL << 55) - 1)) * 8) != 8)
            continue;
        if (f & (1ULL << 15))
            heads++;
        else if (f & (1ULL << 16))
            tails++;
        else
            single++;
    }
    printf("%s: %zu pages: %zu order-0, %zu in %zu large folios\n", argv[1], pages, single,
           heads + tails, heads);
    return sum == (unsigned long)-1 ? 3 : 0; // uses sum, so the touching loop stays
}
