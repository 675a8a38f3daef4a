#include "sluice_shims.h"

const char *sl_strerror(int err) { return rte_strerror(err); }

int sl_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
