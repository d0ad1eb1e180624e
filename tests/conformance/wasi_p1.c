/* wasi_p1.c: wasmpod's own WASI preview 1 conformance program.
 *
 * One family of preview 1 functions per run: `wasi_p1 FAMILY [ARGS...]`. Each family calls
 * the functions through wasi-libc's raw <wasi/api.h> bindings (not libc's wrappers, which
 * would hide what the host answered), checks every result and errno, prints `FAIL …` for
 * each check that does not hold, and ends with `FAMILY: N checks, M failed`; it exits 0
 * only when nothing failed. The file-system families work in the directory preopened as
 * `/data` (read-write); the test runners then check on the host what the guest left there.
 *
 *   clang --target=wasm32-wasi -O2 wasi_p1.c -o wasi_p1.wasm
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

static const char *family = "?";
static int checks, failures;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        checks++;                                                               \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            printf("FAIL %s line %d: ", family, __LINE__);                      \
            printf(__VA_ARGS__);                                                \
            printf("\n");                                                       \
        }                                                                       \
    } while (0)

/* The call must succeed. */
#define OK(call)                                                                \
    do {                                                                        \
        __wasi_errno_t e_ = (call);                                             \
        CHECK(e_ == __WASI_ERRNO_SUCCESS, "%s: errno %d", #call, e_);           \
    } while (0)

/* The call must fail with one of the listed errnos (WASI hosts differ only in which of
 * these a refusal is). */
static int one_of(__wasi_errno_t e, const __wasi_errno_t *allowed, int n) {
    for (int i = 0; i < n; i++)
        if (e == allowed[i]) return 1;
    return 0;
}
#define FAILS(call, ...)                                                        \
    do {                                                                        \
        const __wasi_errno_t allowed_[] = {__VA_ARGS__};                        \
        __wasi_errno_t e_ = (call);                                             \
        CHECK(one_of(e_, allowed_, sizeof allowed_ / sizeof allowed_[0]),       \
              "%s: errno %d, not one of the expected", #call, e_);              \
    } while (0)

/* Every right preview 1 defines (29 bits). */
static const __wasi_rights_t ALL = ((__wasi_rights_t)1 << 29) - 1;

/* The preopened directory `/data`, or -1. */
static __wasi_fd_t data_dir(void) {
    for (__wasi_fd_t fd = 3; fd < 64; fd++) {
        __wasi_prestat_t prestat;
        if (__wasi_fd_prestat_get(fd, &prestat) != __WASI_ERRNO_SUCCESS) continue;
        if (prestat.tag != __WASI_PREOPENTYPE_DIR) continue;
        char name[256] = {0};
        size_t len = prestat.u.dir.pr_name_len;
        if (len >= sizeof name) continue;
        if (__wasi_fd_prestat_dir_name(fd, (uint8_t *)name, len) != __WASI_ERRNO_SUCCESS)
            continue;
        if (strcmp(name, "/data") == 0) return fd;
    }
    return (__wasi_fd_t)-1;
}

static __wasi_fd_t need_data_dir(void) {
    __wasi_fd_t dir = data_dir();
    CHECK(dir != (__wasi_fd_t)-1, "no directory preopened as /data");
    if (dir == (__wasi_fd_t)-1) {
        printf("%s: %d checks, %d failed\n", family, checks, failures);
        exit(1);
    }
    return dir;
}

static __wasi_errno_t open_at(__wasi_fd_t dir, const char *path, __wasi_oflags_t oflags,
                              __wasi_rights_t rights, __wasi_fdflags_t fdflags,
                              __wasi_fd_t *fd) {
    return __wasi_path_open(dir, 0, path, oflags, rights, rights, fdflags, fd);
}

static __wasi_errno_t write_all(__wasi_fd_t fd, const char *text, __wasi_size_t *n) {
    __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    return __wasi_fd_write(fd, &iov, 1, n);
}

static __wasi_errno_t read_some(__wasi_fd_t fd, char *buf, size_t len, __wasi_size_t *n) {
    __wasi_iovec_t iov = {(uint8_t *)buf, len};
    return __wasi_fd_read(fd, &iov, 1, n);
}

/* args_sizes_get and args_get agree, and each argument arrives byte for byte. */
static void args(int argc, char **argv) {
    __wasi_size_t count = 0, size = 0;
    OK(__wasi_args_sizes_get(&count, &size));
    CHECK((int)count == argc, "args_sizes_get says %lu arguments, main got %d", count, argc);
    char **list = calloc(count + 1, sizeof *list);
    char *buf = calloc(size + 1, 1);
    OK(__wasi_args_get((uint8_t **)list, (uint8_t *)buf));
    size_t total = 0;
    for (__wasi_size_t i = 0; i < count; i++) {
        CHECK(strcmp(list[i], argv[i]) == 0, "args_get[%lu] differs from argv", i);
        total += strlen(list[i]) + 1;
        printf("arg[%lu]=%s\n", i, list[i]);
    }
    CHECK(total == size, "the arguments take %zu bytes, args_sizes_get said %lu", total, size);
}

/* environ_sizes_get and environ_get agree; the variables the runner set arrive exactly,
 * and one it did not set is absent. */
static void env(void) {
    __wasi_size_t count = 0, size = 0;
    OK(__wasi_environ_sizes_get(&count, &size));
    char **list = calloc(count + 1, sizeof *list);
    char *buf = calloc(size + 1, 1);
    OK(__wasi_environ_get((uint8_t **)list, (uint8_t *)buf));
    size_t total = 0;
    int seen = 0;
    for (__wasi_size_t i = 0; i < count; i++) {
        total += strlen(list[i]) + 1;
        if (strcmp(list[i], "CONFORMANCE_A=1") == 0) seen |= 1;
        if (strcmp(list[i], "CONFORMANCE_EMPTY=") == 0) seen |= 2;
        if (strcmp(list[i], "CONFORMANCE_SPACED=a b=c") == 0) seen |= 4;
        CHECK(strncmp(list[i], "CONFORMANCE_UNSET=", 18) != 0, "an unset variable arrived");
    }
    CHECK(total == size, "the environment takes %zu bytes, environ_sizes_get said %lu", total,
          size);
    CHECK(seen == 7, "the runner's variables arrived as %d of 7", seen);
    CHECK(getenv("CONFORMANCE_SPACED") && strcmp(getenv("CONFORMANCE_SPACED"), "a b=c") == 0,
          "getenv(CONFORMANCE_SPACED)");
}

/* Clocks: resolutions, monotonic time that does not go back, a plausible wall clock,
 * and an unknown clock refused; sched_yield. */
static void clocks(void) {
    __wasi_timestamp_t res = 0, a = 0, b = 0, now = 0;
    OK(__wasi_clock_res_get(__WASI_CLOCKID_MONOTONIC, &res));
    CHECK(res > 0 && res <= 1000000000ull, "monotonic resolution %llu ns", res);
    OK(__wasi_clock_res_get(__WASI_CLOCKID_REALTIME, &res));
    CHECK(res > 0 && res <= 1000000000ull, "realtime resolution %llu ns", res);
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &a));
    for (int i = 0; i < 1000; i++) OK(__wasi_sched_yield());
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &b));
    CHECK(b >= a, "monotonic time went back: %llu then %llu", a, b);
    OK(__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &now));
    /* 2020-01-01 and 2200-01-01, in nanoseconds. */
    CHECK(now > 1577836800ull * 1000000000ull && now < 7258118400ull * 1000000000ull,
          "realtime %llu is not a date of this era", now);
    /* The CPU-time clocks: a host answers, or refuses them (wasmtime: EBADF). An unknown
     * clock id is not asked: a host may trap on an enum value it does not know. */
    for (__wasi_clockid_t id = __WASI_CLOCKID_PROCESS_CPUTIME_ID;
         id <= __WASI_CLOCKID_THREAD_CPUTIME_ID; id++) {
        __wasi_errno_t e = __wasi_clock_time_get(id, 1, &now);
        CHECK(e == __WASI_ERRNO_SUCCESS || e == __WASI_ERRNO_INVAL || e == __WASI_ERRNO_NOTSUP ||
                  e == __WASI_ERRNO_BADF,
              "cputime clock %u: errno %d", id, e);
    }
}

/* random_get fills what it is given, differently each time. */
static void random_(void) {
    uint8_t a[1024] = {0}, b[1024] = {0};
    OK(__wasi_random_get(a, sizeof a));
    OK(__wasi_random_get(b, sizeof b));
    OK(__wasi_random_get(b, 0));
    int zero = 0;
    for (size_t i = 0; i < sizeof a; i++) zero += a[i] == 0;
    CHECK(zero < 64, "%d of 1024 random bytes are zero", zero);
    CHECK(memcmp(a, b, sizeof a) != 0, "two random_get calls gave the same bytes");
}

/* Reads on a file: write, tell, seek, read, positional I/O, sizes, times, flags,
 * renumber and close. Leaves /data/fd.txt as "hel+tail" with mtime 1600000000 s. */
static void fd(void) {
    __wasi_fd_t dir = need_data_dir(), f = 0, g = 0;
    __wasi_size_t n = 0;
    __wasi_filesize_t pos = 0;
    char buf[64] = {0};
    __wasi_filestat_t st;
    __wasi_fdstat_t fs;

    OK(write_all(1, "", &n));
    OK(open_at(dir, "fd.txt", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, ALL, 0, &f));
    OK(__wasi_fd_fdstat_get(f, &fs));
    CHECK(fs.fs_filetype == __WASI_FILETYPE_REGULAR_FILE, "fd.txt's filetype %d", fs.fs_filetype);
    OK(write_all(f, "hello", &n));
    CHECK(n == 5, "wrote %lu of 5 bytes", n);
    OK(__wasi_fd_tell(f, &pos));
    CHECK(pos == 5, "tell after writing 5 bytes: %llu", pos);
    OK(__wasi_fd_seek(f, 0, __WASI_WHENCE_SET, &pos));
    CHECK(pos == 0, "seek to 0 gave %llu", pos);
    OK(read_some(f, buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0, "read back %lu bytes: %.*s", n, (int)n, buf);
    OK(read_some(f, buf, sizeof buf, &n));
    CHECK(n == 0, "read at the end gave %lu bytes", n);
    OK(__wasi_fd_seek(f, -2, __WASI_WHENCE_END, &pos));
    CHECK(pos == 3, "seek to end-2 gave %llu", pos);
    OK(__wasi_fd_seek(f, 1, __WASI_WHENCE_CUR, &pos));
    CHECK(pos == 4, "seek cur+1 gave %llu", pos);
    FAILS(__wasi_fd_seek(f, -100, __WASI_WHENCE_SET, &pos), __WASI_ERRNO_INVAL);

    /* Positional I/O leaves the offset alone; a write past the end leaves a hole. */
    __wasi_ciovec_t x = {(const uint8_t *)"X", 1};
    OK(__wasi_fd_pwrite(f, &x, 1, 10, &n));
    CHECK(n == 1, "pwrite wrote %lu bytes", n);
    OK(__wasi_fd_tell(f, &pos));
    CHECK(pos == 4, "pwrite moved the offset to %llu", pos);
    memset(buf, 1, sizeof buf);
    __wasi_iovec_t hole = {(uint8_t *)buf, 11};
    OK(__wasi_fd_pread(f, &hole, 1, 4, &n));
    CHECK(n == 7 && buf[0] == 'o' && buf[1] == 0 && buf[5] == 0 && buf[6] == 'X',
          "pread of the hole gave %lu bytes", n);
    OK(__wasi_fd_filestat_get(f, &st));
    CHECK(st.size == 11 && st.filetype == __WASI_FILETYPE_REGULAR_FILE, "size %llu after pwrite",
          st.size);

    OK(__wasi_fd_filestat_set_size(f, 3));
    OK(__wasi_fd_filestat_get(f, &st));
    CHECK(st.size == 3, "size %llu after set_size(3)", st.size);
    OK(__wasi_fd_advise(f, 0, 3, __WASI_ADVICE_SEQUENTIAL));
    {
        __wasi_errno_t e = __wasi_fd_allocate(f, 0, 3);
        CHECK(e == __WASI_ERRNO_SUCCESS || e == __WASI_ERRNO_NOTSUP, "fd_allocate: errno %d", e);
    }
    OK(__wasi_fd_datasync(f));
    OK(__wasi_fd_sync(f));

    /* Append mode: every write lands at the end, whatever the offset. */
    OK(__wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_APPEND));
    OK(__wasi_fd_fdstat_get(f, &fs));
    CHECK(fs.fs_flags & __WASI_FDFLAGS_APPEND, "append flag not kept: %d", fs.fs_flags);
    OK(__wasi_fd_seek(f, 0, __WASI_WHENCE_SET, &pos));
    OK(write_all(f, "+tail", &n));
    OK(__wasi_fd_filestat_get(f, &st));
    CHECK(st.size == 8, "append gave size %llu, not 8", st.size);

    const __wasi_timestamp_t mtime = 1600000000ull * 1000000000ull;
    OK(__wasi_fd_filestat_set_times(f, 0, mtime, __WASI_FSTFLAGS_MTIM));
    OK(__wasi_fd_filestat_get(f, &st));
    CHECK(st.mtim == mtime, "mtime %llu after set_times", st.mtim);
    FAILS(__wasi_fd_filestat_set_times(f, 1, 2, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW),
          __WASI_ERRNO_INVAL);

    /* renumber: the file moves to another number, and the old one is closed. */
    OK(open_at(dir, "fd.txt", 0, ALL, 0, &g));
    OK(__wasi_fd_renumber(f, g));
    OK(__wasi_fd_filestat_get(g, &st));
    CHECK(st.size == 8, "the renumbered descriptor sees size %llu", st.size);
    FAILS(__wasi_fd_filestat_get(f, &st), __WASI_ERRNO_BADF);
    OK(__wasi_fd_close(g));
    FAILS(__wasi_fd_close(g), __WASI_ERRNO_BADF);
    FAILS(read_some(g, buf, 1, &n), __WASI_ERRNO_BADF);

    /* Read-only: writing is refused; a directory is not read as a file. */
    OK(open_at(dir, "fd.txt", 0, __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_FILESTAT_GET, 0, &f));
    FAILS(write_all(f, "no", &n), __WASI_ERRNO_BADF, __WASI_ERRNO_NOTCAPABLE, __WASI_ERRNO_PERM);
    OK(__wasi_fd_close(f));
    FAILS(read_some(dir, buf, 1, &n), __WASI_ERRNO_ISDIR, __WASI_ERRNO_BADF);
}

/* Standard input as the runner piped it: its length and a checksum. */
static void stdin_(void) {
    char buf[4096];
    __wasi_size_t n = 0;
    unsigned long total = 0, sum = 0;
    do {
        OK(read_some(0, buf, sizeof buf, &n));
        for (__wasi_size_t i = 0; i < n; i++) sum = sum * 31 + (unsigned char)buf[i];
        total += n;
    } while (n > 0);
    printf("stdin %lu bytes, sum %lu\n", total, sum);
}

/* Directories: the preopen's name, creating, listing (resumed by cookie), and what may
 * not be removed. Leaves /data/tree/keep/file.txt and nothing else under /data/tree. */
static void dir(void) {
    __wasi_fd_t data = need_data_dir(), f = 0, d = 0;
    __wasi_filestat_t st;
    __wasi_prestat_t prestat;
    OK(__wasi_fd_prestat_get(data, &prestat));
    CHECK(prestat.u.dir.pr_name_len == 5, "the preopen's name is %zu bytes",
          prestat.u.dir.pr_name_len);
    FAILS(__wasi_fd_prestat_get(1, &prestat), __WASI_ERRNO_BADF);

    OK(__wasi_path_create_directory(data, "tree"));
    FAILS(__wasi_path_create_directory(data, "tree"), __WASI_ERRNO_EXIST);
    OK(__wasi_path_create_directory(data, "tree/keep"));
    OK(__wasi_path_create_directory(data, "tree/gone"));
    OK(open_at(data, "tree/keep/file.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f));
    OK(__wasi_fd_close(f));
    OK(open_at(data, "tree/a", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, ALL, 0, &f));
    OK(__wasi_fd_close(f));
    FAILS(open_at(data, "tree/a", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, ALL, 0, &f),
          __WASI_ERRNO_EXIST);
    FAILS(open_at(data, "tree/a", __WASI_OFLAGS_DIRECTORY, ALL, 0, &f), __WASI_ERRNO_NOTDIR);
    FAILS(open_at(data, "tree/none", 0, ALL, 0, &f), __WASI_ERRNO_NOENT);
    OK(__wasi_path_filestat_get(data, 0, "tree/keep", &st));
    CHECK(st.filetype == __WASI_FILETYPE_DIRECTORY, "tree/keep's filetype %d", st.filetype);

    /* The listing, read 40 bytes at a time so that it must resume by cookie. */
    OK(__wasi_path_open(data, 0, "tree", __WASI_OFLAGS_DIRECTORY,
                        __WASI_RIGHTS_FD_READDIR | __WASI_RIGHTS_FD_FILESTAT_GET, ALL, 0, &d));
    uint8_t buf[40];
    __wasi_dircookie_t cookie = 0;
    int seen = 0, entries = 0;
    for (int rounds = 0; rounds < 100; rounds++) {
        __wasi_size_t used = 0;
        OK(__wasi_fd_readdir(d, buf, sizeof buf, cookie, &used));
        if (used < sizeof(__wasi_dirent_t)) break;
        __wasi_dirent_t ent;
        memcpy(&ent, buf, sizeof ent);
        size_t need = sizeof ent + ent.d_namlen;
        if (need > used) {
            /* A name cut off by the buffer: only its length is trusted; read it alone. */
            CHECK(ent.d_namlen < 200, "an entry's name of %u bytes", ent.d_namlen);
            uint8_t big[256];
            OK(__wasi_fd_readdir(d, big, sizeof big, cookie, &used));
            memcpy(buf, big, used < sizeof buf ? used : sizeof buf);
            if (used < need) break;
            memcpy(&ent, big, sizeof ent);
            char name[201] = {0};
            memcpy(name, big + sizeof ent, ent.d_namlen);
            if (strcmp(name, "keep") == 0) seen |= 1;
            entries++;
            cookie = ent.d_next;
            continue;
        }
        char name[64] = {0};
        memcpy(name, buf + sizeof ent, ent.d_namlen < 63 ? ent.d_namlen : 63);
        entries++;
        if (strcmp(name, "keep") == 0) {
            seen |= 1;
            CHECK(ent.d_type == __WASI_FILETYPE_DIRECTORY, "keep listed as type %d", ent.d_type);
        }
        if (strcmp(name, "gone") == 0) seen |= 2;
        if (strcmp(name, "a") == 0) {
            seen |= 4;
            CHECK(ent.d_type == __WASI_FILETYPE_REGULAR_FILE, "a listed as type %d", ent.d_type);
        }
        cookie = ent.d_next;
    }
    CHECK(seen == 7, "the listing of tree found %d of 7 (%d entries)", seen, entries);
    CHECK(entries >= 3 && entries <= 5, "tree lists %d entries (3, and . and .. if listed)",
          entries);
    OK(__wasi_fd_close(d));

    FAILS(__wasi_path_remove_directory(data, "tree/keep"), __WASI_ERRNO_NOTEMPTY);
    FAILS(__wasi_path_remove_directory(data, "tree/a"), __WASI_ERRNO_NOTDIR);
    FAILS(__wasi_path_unlink_file(data, "tree/gone"), __WASI_ERRNO_ISDIR, __WASI_ERRNO_PERM);
    OK(__wasi_path_remove_directory(data, "tree/gone"));
    OK(__wasi_path_unlink_file(data, "tree/a"));
    FAILS(__wasi_path_unlink_file(data, "tree/a"), __WASI_ERRNO_NOENT);
    FAILS(__wasi_path_filestat_get(data, 0, "tree/gone", &st), __WASI_ERRNO_NOENT);
}

/* Paths: rename, hard and symbolic links, `..` inside and outside the preopen, absolute
 * and looping links. Leaves /data/paths/{moved.txt, link -> moved.txt, sub/hard.txt}. */
static void path(void) {
    __wasi_fd_t data = need_data_dir(), f = 0;
    __wasi_filestat_t st;
    __wasi_size_t n = 0;
    char buf[64] = {0};

    OK(__wasi_path_create_directory(data, "paths"));
    OK(__wasi_path_create_directory(data, "paths/sub"));
    OK(open_at(data, "paths/orig.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f));
    OK(write_all(f, "content", &n));
    OK(__wasi_fd_close(f));

    OK(__wasi_path_rename(data, "paths/orig.txt", data, "paths/moved.txt"));
    FAILS(__wasi_path_filestat_get(data, 0, "paths/orig.txt", &st), __WASI_ERRNO_NOENT);
    FAILS(__wasi_path_rename(data, "paths/none", data, "paths/x"), __WASI_ERRNO_NOENT);
    OK(__wasi_path_rename(data, "paths/sub", data, "paths/sub2"));
    OK(__wasi_path_rename(data, "paths/sub2", data, "paths/sub"));

    OK(__wasi_path_link(data, 0, "paths/moved.txt", data, "paths/sub/hard.txt"));
    OK(__wasi_path_filestat_get(data, 0, "paths/moved.txt", &st));
    CHECK(st.nlink == 2, "a hard-linked file has %llu links", st.nlink);
    FAILS(__wasi_path_link(data, 0, "paths/moved.txt", data, "paths/sub/hard.txt"),
          __WASI_ERRNO_EXIST);

    /* `..` that stays inside is a path like another; one that leaves is refused. */
    OK(__wasi_path_filestat_get(data, 0, "paths/sub/../moved.txt", &st));
    CHECK(st.size == 7, "paths/sub/../moved.txt has size %llu", st.size);
    FAILS(open_at(data, "../escaped.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f),
          __WASI_ERRNO_NOTCAPABLE, __WASI_ERRNO_PERM, __WASI_ERRNO_ACCES);
    FAILS(open_at(data, "paths/../../escaped.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f),
          __WASI_ERRNO_NOTCAPABLE, __WASI_ERRNO_PERM, __WASI_ERRNO_ACCES);
    FAILS(open_at(data, "/etc/passwd", 0, ALL, 0, &f), __WASI_ERRNO_NOTCAPABLE,
          __WASI_ERRNO_PERM, __WASI_ERRNO_ACCES);

    /* A symbolic link, read and followed, or not. */
    OK(__wasi_path_symlink("moved.txt", data, "paths/link"));
    FAILS(__wasi_path_symlink("moved.txt", data, "paths/link"), __WASI_ERRNO_EXIST);
    OK(__wasi_path_readlink(data, "paths/link", (uint8_t *)buf, sizeof buf, &n));
    CHECK(n == 9 && memcmp(buf, "moved.txt", 9) == 0, "readlink gave %.*s", (int)n, buf);
    FAILS(__wasi_path_readlink(data, "paths/moved.txt", (uint8_t *)buf, sizeof buf, &n),
          __WASI_ERRNO_INVAL);
    OK(__wasi_path_filestat_get(data, 0, "paths/link", &st));
    CHECK(st.filetype == __WASI_FILETYPE_SYMBOLIC_LINK, "lstat of a link: type %d", st.filetype);
    OK(__wasi_path_filestat_get(data, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "paths/link", &st));
    CHECK(st.filetype == __WASI_FILETYPE_REGULAR_FILE && st.size == 7,
          "stat through a link: type %d size %llu", st.filetype, st.size);
    OK(__wasi_path_open(data, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "paths/link", 0, ALL, ALL, 0, &f));
    OK(read_some(f, buf, sizeof buf, &n));
    CHECK(n == 7 && memcmp(buf, "content", 7) == 0, "read through a link: %.*s", (int)n, buf);
    OK(__wasi_fd_close(f));
    FAILS(__wasi_path_open(data, 0, "paths/link", 0, ALL, ALL, 0, &f), __WASI_ERRNO_LOOP,
          __WASI_ERRNO_NOTDIR, __WASI_ERRNO_MLINK);

    /* Links that lead out, absolutely or by `..`, and a loop. */
    /* An absolute target: refused when made, or when followed. */
    __wasi_errno_t made = __wasi_path_symlink("/etc/passwd", data, "paths/absolute");
    CHECK(made == __WASI_ERRNO_SUCCESS || made == __WASI_ERRNO_PERM ||
              made == __WASI_ERRNO_NOTCAPABLE,
          "a symlink to /etc/passwd: errno %d", made);
    if (made == __WASI_ERRNO_SUCCESS) {
        FAILS(__wasi_path_open(data, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "paths/absolute", 0, ALL,
                               ALL, 0, &f),
              __WASI_ERRNO_NOTCAPABLE, __WASI_ERRNO_PERM, __WASI_ERRNO_ACCES);
        OK(__wasi_path_unlink_file(data, "paths/absolute"));
    }
    OK(__wasi_path_symlink("../../outside", data, "paths/climb"));
    FAILS(__wasi_path_open(data, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "paths/climb",
                           __WASI_OFLAGS_CREAT, ALL, ALL, 0, &f),
          __WASI_ERRNO_NOTCAPABLE, __WASI_ERRNO_PERM, __WASI_ERRNO_ACCES);
    OK(__wasi_path_symlink("loop-b", data, "paths/loop-a"));
    OK(__wasi_path_symlink("loop-a", data, "paths/loop-b"));
    FAILS(__wasi_path_open(data, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "paths/loop-a", 0, ALL, ALL, 0,
                           &f),
          __WASI_ERRNO_LOOP);
    FAILS(__wasi_path_filestat_get(data, 0, "paths/moved.txt/", &st), __WASI_ERRNO_NOTDIR,
          __WASI_ERRNO_NOENT);

    const __wasi_timestamp_t mtime = 1500000000ull * 1000000000ull;
    OK(__wasi_path_filestat_set_times(data, 0, "paths/sub/hard.txt", 0, mtime,
                                      __WASI_FSTFLAGS_MTIM));
    OK(__wasi_path_filestat_get(data, 0, "paths/moved.txt", &st));
    CHECK(st.mtim == mtime, "the hard link's mtime %llu", st.mtim);
    OK(__wasi_path_unlink_file(data, "paths/climb"));
    OK(__wasi_path_unlink_file(data, "paths/loop-a"));
    OK(__wasi_path_unlink_file(data, "paths/loop-b"));
}

/* poll_oneoff: relative and absolute clocks, descriptors that are ready at once, and
 * no subscriptions refused. */
static void poll(void) {
    __wasi_fd_t data = need_data_dir(), f = 0;
    __wasi_subscription_t sub[2];
    __wasi_event_t ev[2];
    __wasi_size_t n = 0;
    __wasi_timestamp_t before = 0, after = 0;
    memset(sub, 0, sizeof sub);

    sub[0].userdata = 11;
    sub[0].u.tag = __WASI_EVENTTYPE_CLOCK;
    sub[0].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
    sub[0].u.u.clock.timeout = 20000000; /* 20 ms */
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &before));
    OK(__wasi_poll_oneoff(sub, ev, 1, &n));
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &after));
    CHECK(n == 1 && ev[0].userdata == 11 && ev[0].type == __WASI_EVENTTYPE_CLOCK &&
              ev[0].error == 0,
          "a 20 ms sleep: %lu events, userdata %llu", n, ev[0].userdata);
    CHECK(after - before >= 20000000, "a 20 ms sleep took %llu ns", after - before);

    /* An absolute deadline 10 ms ahead. */
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &before));
    sub[0].u.u.clock.timeout = before + 10000000;
    sub[0].u.u.clock.flags = __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
    OK(__wasi_poll_oneoff(sub, ev, 1, &n));
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &after));
    CHECK(n == 1 && after >= before + 10000000, "an absolute deadline: %lu events", n);

    /* A regular file is always ready to read; it wins over a 10 s timer. */
    OK(open_at(data, "poll.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f));
    sub[0].u.u.clock.flags = 0;
    sub[0].u.u.clock.timeout = 10000000000ull;
    sub[1].userdata = 22;
    sub[1].u.tag = __WASI_EVENTTYPE_FD_READ;
    sub[1].u.u.fd_read.file_descriptor = f;
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &before));
    OK(__wasi_poll_oneoff(sub, ev, 2, &n));
    OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &after));
    CHECK(n >= 1 && ev[0].userdata == 22 && ev[0].type == __WASI_EVENTTYPE_FD_READ,
          "a file's read readiness: %lu events, first userdata %llu", n, ev[0].userdata);
    CHECK(after - before < 5000000000ull, "a ready file waited %llu ns", after - before);

    sub[1].u.tag = __WASI_EVENTTYPE_FD_WRITE;
    sub[1].u.u.fd_write.file_descriptor = f;
    OK(__wasi_poll_oneoff(sub, ev, 2, &n));
    CHECK(n >= 1 && ev[0].userdata == 22 && ev[0].type == __WASI_EVENTTYPE_FD_WRITE,
          "a file's write readiness: %lu events", n);
    OK(__wasi_fd_close(f));

    /* A closed descriptor is reported as an event with its error. */
    sub[1].u.u.fd_read.file_descriptor = f;
    sub[1].u.tag = __WASI_EVENTTYPE_FD_READ;
    __wasi_errno_t e = __wasi_poll_oneoff(sub, ev, 2, &n);
    CHECK(e == __WASI_ERRNO_BADF || (e == 0 && n >= 1 && ev[0].error == __WASI_ERRNO_BADF),
          "polling a closed descriptor: errno %d, event error %d", e, ev[0].error);
    FAILS(__wasi_poll_oneoff(sub, ev, 0, &n), __WASI_ERRNO_INVAL);
}

/* Sockets as far as preview 1 has them: only preopened sockets exist, so the socket
 * calls on anything else are refused. */
static void sockets(void) {
    __wasi_fd_t data = need_data_dir(), f = 0, accepted = 0;
    __wasi_size_t n = 0;
    __wasi_roflags_t ro = 0;
    char buf[8];
    __wasi_iovec_t in = {(uint8_t *)buf, sizeof buf};
    __wasi_ciovec_t out = {(const uint8_t *)"x", 1};
    OK(open_at(data, "sock.txt", __WASI_OFLAGS_CREAT, ALL, 0, &f));
    FAILS(__wasi_sock_accept(f, 0, &accepted), __WASI_ERRNO_NOTSOCK, __WASI_ERRNO_BADF,
          __WASI_ERRNO_NOTSUP);
    FAILS(__wasi_sock_recv(f, &in, 1, 0, &n, &ro), __WASI_ERRNO_NOTSOCK, __WASI_ERRNO_BADF,
          __WASI_ERRNO_NOTSUP);
    FAILS(__wasi_sock_send(f, &out, 1, 0, &n), __WASI_ERRNO_NOTSOCK, __WASI_ERRNO_BADF,
          __WASI_ERRNO_NOTSUP);
    FAILS(__wasi_sock_shutdown(f, __WASI_SDFLAGS_RD | __WASI_SDFLAGS_WR), __WASI_ERRNO_NOTSOCK,
          __WASI_ERRNO_BADF, __WASI_ERRNO_NOTSUP);
    FAILS(__wasi_sock_accept(data, 0, &accepted), __WASI_ERRNO_NOTSOCK, __WASI_ERRNO_BADF,
          __WASI_ERRNO_NOTSUP);
    FAILS(__wasi_sock_accept(77, 0, &accepted), __WASI_ERRNO_BADF);
    OK(__wasi_fd_close(f));
    OK(__wasi_path_unlink_file(data, "sock.txt"));
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("usage: wasi_p1 args|env|clocks|random|exit CODE|fd|stdin|dir|path|poll|sockets\n");
        return 2;
    }
    family = argv[1];
    if (strcmp(family, "args") == 0) args(argc, argv);
    else if (strcmp(family, "env") == 0) env();
    else if (strcmp(family, "clocks") == 0) clocks();
    else if (strcmp(family, "random") == 0) random_();
    else if (strcmp(family, "fd") == 0) fd();
    else if (strcmp(family, "stdin") == 0) stdin_();
    else if (strcmp(family, "dir") == 0) dir();
    else if (strcmp(family, "path") == 0) path();
    else if (strcmp(family, "poll") == 0) poll();
    else if (strcmp(family, "sockets") == 0) sockets();
    else if (strcmp(family, "exit") == 0) {
        /* What was written before proc_exit is out; the code is the guest's. */
        printf("exiting with %s\n", argc > 2 ? argv[2] : "0");
        fflush(stdout);
        __wasi_proc_exit(argc > 2 ? atoi(argv[2]) : 0);
    } else {
        printf("unknown family %s\n", family);
        return 2;
    }
    printf("%s: %d checks, %d failed\n", family, checks, failures);
    return failures ? 1 : 0;
}
