#include "sluice_crypto.h"
