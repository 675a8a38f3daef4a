#define _GNU_SOURCE 1
#include <sched.h>
#include "sluice_shims.h"

const char *sl_strerror(int err) { return rte_strerror(err); }

int sl_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }

#include <signal.h>
#include <pthread.h>
#include <string.h>

static volatile sig_atomic_t sl_stop_signo;

static void sl_on_stop_signal(int signo) { sl_stop_signo = signo; }

void sl_install_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sl_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A parent may have blocked these (a thread pool spawning us passes its
     * mask on); the gateway must always be stoppable. */
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGINT);
    sigaddset(&unblock, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

int sl_stop_signal(void) { return sl_stop_signo; }

#include <stdio.h>

void sl_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

int sl_affinity_cpus(int *out, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set)) out[n++] = c;
    return n;
}
