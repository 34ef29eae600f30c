// malloc-counter: an LD_PRELOAD shim that counts a process's heap allocations, for the benchmarks'
// "allocations per relayed signal" and "heap bytes per connection".
//
//   cc -O2 -shared -fPIC -o malloc-counter.so Benchmarks/malloc-counter.c
//   MALLOC_COUNTER_FILE=/tmp/counts LD_PRELOAD=./malloc-counter.so signal serve ...
//   signal bench relay --server-malloc-counters /tmp/counts ...
//
// The counters live in MALLOC_COUNTER_FILE, mapped shared, so another process reads them at any time:
// four little-endian uint64 — allocations (malloc, calloc, realloc, memalign family), frees, live bytes
// (malloc_usable_size of what is allocated and not freed), and a magic number. glibc's __libc_*
// entry points do the real work, so no dlsym bootstrap is needed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

#define MAGIC 0x6d616c6c6f63ULL

static uint64_t fallback[4];
static uint64_t *counters = fallback;

__attribute__((constructor)) static void malloc_counter_init(void) {
    const char *path = getenv("MALLOC_COUNTER_FILE");
    if (!path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, 4 * sizeof(uint64_t)) == 0) {
        void *map = mmap(NULL, 4 * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map != MAP_FAILED) {
            counters = map;
            memset(counters, 0, 3 * sizeof(uint64_t));
            counters[3] = MAGIC;
        }
    }
    close(fd);
}

static inline void counted(void *pointer) {
    if (!pointer) return;
    __atomic_fetch_add(&counters[0], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&counters[2], malloc_usable_size(pointer), __ATOMIC_RELAXED);
}

static inline void released(void *pointer) {
    if (!pointer) return;
    __atomic_fetch_add(&counters[1], 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&counters[2], malloc_usable_size(pointer), __ATOMIC_RELAXED);
}

void *malloc(size_t size) {
    void *pointer = __libc_malloc(size);
    counted(pointer);
    return pointer;
}

void *calloc(size_t count, size_t size) {
    void *pointer = __libc_calloc(count, size);
    counted(pointer);
    return pointer;
}

void *realloc(void *old, size_t size) {
    if (old) released(old);
    void *pointer = __libc_realloc(old, size);
    if (pointer) {
        counted(pointer);
    } else if (old && size != 0) {
        counted(old);  // failed: the old block is still allocated
    }
    return pointer;
}

void free(void *pointer) {
    released(pointer);
    __libc_free(pointer);
}

void *memalign(size_t alignment, size_t size) {
    void *pointer = __libc_memalign(alignment, size);
    counted(pointer);
    return pointer;
}

void *aligned_alloc(size_t alignment, size_t size) {
    return memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer) return ENOMEM;
    counted(pointer);
    *result = pointer;
    return 0;
}

void *valloc(size_t size) {
    return memalign((size_t)sysconf(_SC_PAGESIZE), size);
}
