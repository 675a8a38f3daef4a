/* DPDK telemetry for Sluice. DPDK calls these callbacks on its telemetry
 * thread; they read the workers' counters (plain 64-bit values written by
 * one worker each: a read sees an old or a new value, never a torn one on
 * the targets we build for) and text lists the control thread replaces
 * under a mutex. Nothing here is on the packet path. */
#include <pthread.h>
#include <stdlib.h>
#include <rte_telemetry.h>
#include "sluice_shims.h"

static pthread_mutex_t tel_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_worker **tel_workers;
static unsigned tel_nworkers;
static char **tel_drop_names;
static unsigned tel_ndrop_names;
static char *tel_sas;
static char *tel_policies;

static uint64_t tel_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static int tel_stats(const char *cmd, const char *params, struct rte_tel_data *d) {
    (void)cmd; (void)params;
    rte_tel_data_start_dict(d);
    pthread_mutex_lock(&tel_lock);
    uint64_t rx = 0, tx = 0, bytes = 0, drop = 0;
    uint64_t reasons[SL_DROP_REASON_MAX] = {0};
    for (unsigned w = 0; w < tel_nworkers; w++) {
        sl_worker *c = tel_workers[w];
        rx += tel_load(&c->counters.rx_packets);
        tx += tel_load(&c->counters.tx_packets);
        bytes += tel_load(&c->counters.rx_bytes);
        for (unsigned r = 0; r < SL_DROP_REASON_MAX; r++) reasons[r] += tel_load(&c->counters.drops[r]);
    }
    for (unsigned r = 0; r < SL_DROP_REASON_MAX; r++) drop += reasons[r];
    rte_tel_data_add_dict_u64(d, "rx", rx);
    rte_tel_data_add_dict_u64(d, "tx", tx);
    rte_tel_data_add_dict_u64(d, "rx_bytes", bytes);
    rte_tel_data_add_dict_u64(d, "drop", drop);
    rte_tel_data_add_dict_u64(d, "workers", tel_nworkers);
    for (unsigned r = 0; r < tel_ndrop_names && r < SL_DROP_REASON_MAX; r++)
        if (reasons[r] != 0) rte_tel_data_add_dict_u64(d, tel_drop_names[r], reasons[r]);
    pthread_mutex_unlock(&tel_lock);
    return 0;
}

static int tel_cores(const char *cmd, const char *params, struct rte_tel_data *d) {
    (void)cmd; (void)params;
    rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
    pthread_mutex_lock(&tel_lock);
    for (unsigned w = 0; w < tel_nworkers; w++) {
        sl_worker *c = tel_workers[w];
        uint64_t drop = 0;
        for (unsigned r = 0; r < SL_DROP_REASON_MAX; r++) drop += tel_load(&c->counters.drops[r]);
        char line[RTE_TEL_MAX_STRING_LEN];
        snprintf(line, sizeof line, "lcore=%u queue=%u rx=%llu tx=%llu drop=%llu", c->lcore_id, c->queue_id,
                 (unsigned long long)tel_load(&c->counters.rx_packets),
                 (unsigned long long)tel_load(&c->counters.tx_packets), (unsigned long long)drop);
        rte_tel_data_add_array_string(d, line);
    }
    pthread_mutex_unlock(&tel_lock);
    return 0;
}

/* One array entry per line; telemetry strings are bounded, so long lines
 * are cut (the socket's `sa list`/`sp list` give them whole). */
static int tel_lines(const char *text, struct rte_tel_data *d) {
    rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
    pthread_mutex_lock(&tel_lock);
    const char *p = text ? text : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[RTE_TEL_MAX_STRING_LEN];
        size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
        memcpy(line, p, k);
        line[k] = 0;
        if (rte_tel_data_add_array_string(d, line) != 0) break;  /* array full */
        p += n + (nl ? 1 : 0);
    }
    pthread_mutex_unlock(&tel_lock);
    return 0;
}

static int tel_sa_list(const char *cmd, const char *params, struct rte_tel_data *d) {
    (void)cmd; (void)params;
    return tel_lines(tel_sas, d);
}

static int tel_sp_list(const char *cmd, const char *params, struct rte_tel_data *d) {
    (void)cmd; (void)params;
    return tel_lines(tel_policies, d);
}

int sl_telemetry_register(void) {
    int rc = rte_telemetry_register_cmd("/sluice/stats", tel_stats, "Sluice totals: rx, tx, drop and each drop reason.");
    if (rc == 0) rc = rte_telemetry_register_cmd("/sluice/cores", tel_cores, "Sluice per-worker counters.");
    if (rc == 0) rc = rte_telemetry_register_cmd("/sluice/sa/list", tel_sa_list, "Sluice SAs (keys redacted).");
    if (rc == 0) rc = rte_telemetry_register_cmd("/sluice/sp/list", tel_sp_list, "Sluice security policies.");
    return rc;
}

void sl_telemetry_set_workers(sl_worker *const *workers, unsigned count) {
    pthread_mutex_lock(&tel_lock);
    free(tel_workers);
    tel_workers = NULL;
    tel_nworkers = 0;
    if (count > 0 && (tel_workers = malloc(count * sizeof *tel_workers)) != NULL) {
        memcpy(tel_workers, workers, count * sizeof *tel_workers);
        tel_nworkers = count;
    }
    pthread_mutex_unlock(&tel_lock);
}

void sl_telemetry_set_drop_names(const char *const *names, unsigned count) {
    pthread_mutex_lock(&tel_lock);
    for (unsigned i = 0; i < tel_ndrop_names; i++) free(tel_drop_names[i]);
    free(tel_drop_names);
    tel_drop_names = calloc(count, sizeof *tel_drop_names);
    tel_ndrop_names = 0;
    if (tel_drop_names) {
        for (unsigned i = 0; i < count; i++) tel_drop_names[i] = strdup(names[i]);
        tel_ndrop_names = count;
    }
    pthread_mutex_unlock(&tel_lock);
}

void sl_telemetry_set_lists(const char *sas, const char *policies) {
    pthread_mutex_lock(&tel_lock);
    free(tel_sas);
    free(tel_policies);
    tel_sas = sas ? strdup(sas) : NULL;
    tel_policies = policies ? strdup(policies) : NULL;
    pthread_mutex_unlock(&tel_lock);
}
