/* test.h: the unit-test harness. Each test is a function; the runner forks one
 * child per test so a crash or leak in one cannot hide another's result.
 * Checks print both sides on failure. Usage:
 *
 *   TEST(buffer_grows) { CHECK_EQ(1 + 1, 2); }
 *   int main(int argc, char **argv) { return test_main(argc, argv); }
 */
#ifndef MSGD_TEST_H
#define MSGD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_case { const char *name; test_fn fn; };

#define TEST_MAX 256
static struct test_case test_cases[TEST_MAX];
static int test_count;

#define TEST(name)                                                            \
    static void test_##name(void);                                            \
    __attribute__((constructor)) static void test_register_##name(void)       \
    {                                                                         \
        if (test_count < TEST_MAX)                                            \
            test_cases[test_count++] = (struct test_case){#name, test_##name}; \
    }                                                                         \
    static void test_##name(void)

#define TEST_FAIL(...)                                                        \
    do {                                                                      \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                     \
        fprintf(stderr, __VA_ARGS__);                                         \
        fputc('\n', stderr);                                                  \
        exit(1);                                                              \
    } while (0)

#define CHECK(cond)                                                           \
    do { if (!(cond)) TEST_FAIL("CHECK(%s) failed", #cond); } while (0)

#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
        if (check_a_ != check_b_)                                             \
            TEST_FAIL("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, check_a_, check_b_); \
    } while (0)

#define CHECK_STR(a, b)                                                       \
    do {                                                                      \
        const char *check_a_ = (a), *check_b_ = (b);                          \
        if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0) \
            TEST_FAIL("CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b,          \
                      check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
    } while (0)

#define CHECK_MEM(a, b, n)                                                    \
    do {                                                                      \
        const void *check_a_ = (a), *check_b_ = (b);                          \
        size_t check_n_ = (size_t)(n);                                        \
        if (check_n_ > 0 && (check_a_ == NULL || check_b_ == NULL ||          \
                             memcmp(check_a_, check_b_, check_n_) != 0))      \
            TEST_FAIL("CHECK_MEM(%s, %s, %zu): bytes differ", #a, #b, check_n_); \
    } while (0)

/* Runs every registered test (or those named on the command line), each in a
 * forked child. Prints one line per test and "N passed, N failed" at the end.
 * Returns 0 when all passed. */
static inline int test_main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (int i = 0; i < test_count; i++) {
        if (argc > 1) {
            int want = 0;
            for (int a = 1; a < argc; a++)
                want |= strcmp(argv[a], test_cases[i].name) == 0;
            if (!want)
                continue;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            test_cases[i].fn();
            exit(0); /* not _exit: LeakSanitizer checks at exit */
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) < 0) {
            perror("fork/waitpid");
            return 2;
        }
        int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("%s %s.%s", ok ? "ok  " : "FAIL", prog, test_cases[i].name);
        if (!ok && WIFSIGNALED(st))
            printf(" (signal %d)", WTERMSIG(st));
        printf("\n");
        ok ? passed++ : failed++;
    }
    printf("%s: %d passed, %d failed\n", prog, passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}

#endif
