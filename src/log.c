/*
 * log.c -- one line per event on stderr, filtered by a process-wide level,
 * and the helper that formats error strings into callers' buffers.
 *
 * The level is an atomic int so any thread may read or set it without a lock.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "internal.h"

static atomic_int log_level = PRT_LOG_WARN;
/* Indexed by level + 1: the one list of the names (the host's --log-level
 * and the Lua binding read them through the two functions below). */
static const char *const level_names[] = { "off", "error", "warn", "info", "debug" };
enum { NLEVELS = sizeof level_names / sizeof level_names[0] };

const char *prt_log_level_name(int level)
{
    return level >= PRT_LOG_OFF && level <= PRT_LOG_DEBUG ? level_names[level + 1] : NULL;
}

int prt_log_level_parse(const char *name)
{
    for (int i = 0; name && i < NLEVELS; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i - 1;
    return PRT_EINVAL;
}

/* PRT_LOG_OFF (-1) silences everything. */
void prt_log_set_level(int level)
{
    if (level < PRT_LOG_OFF)
        level = PRT_LOG_OFF;
    if (level > PRT_LOG_DEBUG)
        level = PRT_LOG_DEBUG;
    atomic_store(&log_level, level);
}

int prt_log_get_level(void)
{
    return atomic_load(&log_level);
}

void prt_log(int level, const char *msg)
{
    prt_logf(level, "%s", msg);
}

/* One fprintf per line: stdio locks the stream, so lines from different
 * threads never interleave.  Lines longer than 1 KB are cut. */
void prt_logf(int level, const char *fmt, ...)
{
    if (level > atomic_load(&log_level) || level < PRT_LOG_ERROR)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ poolrt[%s] %s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level + 1], msg);
}

/* Formats into a caller-owned buffer; a NULL buffer means the caller does
 * not want the message. */
void prt__errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
