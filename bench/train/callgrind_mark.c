/* Callgrind client requests for bench/train/train_step.py (loaded with ctypes by bench/train/profile): start and
 * stop instrumentation around the timed steps, as train_step.rs does with inline assembly. Outside valgrind the
 * requests are no-ops. Build: cc -O1 -shared -fPIC -o callgrind_mark.so callgrind_mark.c (needs valgrind's headers). */
#include <valgrind/callgrind.h>

void medmae_callgrind_start(void) { CALLGRIND_START_INSTRUMENTATION; }

void medmae_callgrind_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
