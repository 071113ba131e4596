// System library target over Debian's OpenBLAS (libopenblas-dev): CBLAS and thread control.
#include <cblas.h>
