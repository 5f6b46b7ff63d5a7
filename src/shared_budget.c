/*
 * shared_budget.c -- one budget of server connections for several
 * processes, e.g. the workers of one nginx.
 *
 * Each runtime caps its own connections (max_connections, capacity.c), but
 * nginx runs N workers with a runtime each, and the server sees their sum.
 * A prt_budget is MAP_SHARED memory made before the processes fork
 * (prt_budget_new in nginx's master, from init_by_lua); every runtime that
 * joins it (prt_runtime_opts.shared_budget) takes one unit for each
 * connection in prt__slot_take, besides its own slot, and gives it back in
 * prt__slot_give (capacity.c: this file is one of its providers).  A unit is taken by a compare-and-swap of `used`
 * against `max` before the connect starts, so the sum over the members
 * never exceeds max, connects in flight included.
 *
 * Only atomics live in the shared memory: no process-shared mutex that a
 * dead process could keep locked.  Each member has a slot {pid, held,
 * waiting}; a process that dies (SIGKILL, a crash) cannot give its units
 * back, so whoever finds its pid gone (kill(pid, 0) == ESRCH) -- a runtime
 * joining, or any member's budget thread within 100 ms -- claims the slot
 * by a CAS of its pid to -1, subtracts its `held` from `used`, and frees
 * the slot.  (A pid reused by another process before anyone looked would
 * keep a dead member's units; nginx respawns a worker at once, so the
 * window is one budget-thread period.)
 *
 * Between processes, units move on a futex: `seq` is a 32-bit word in the
 * shared memory that is bumped, then FUTEX_WAKE'd (not FUTEX_PRIVATE), when
 * a unit is given back while some member has callers waiting, or when a
 * member asks for one.  Each joined runtime has a budget thread that waits
 * on it (at most 100 ms at a time), reclaims the slots of dead members,
 * and reports the tick through capacity.h's callback; pools.c then
 *   - grants free units to its own waiters;
 *   - publishes how many of its callers wait for a unit (`waiting`), and
 *     asks the others when that grew, when it was just granted units and
 *     still waits, or every 100 ms while it waits;
 *   - when the budget is spent and other members wait, closes its own least
 *     recently used idle connections, as many as callers wait elsewhere
 *     (evict_idle across processes), which gives the units back and wakes
 *     the asker.  An idle connection here
 *     means no caller of this runtime waits, so it is the right one to go.
 * Asks and gifts are counted per member and in total.
 *
 * Under steady load nothing is idle, and a member's released connections
 * go straight to its own waiters, so whoever took the units first would
 * keep them.  Hence a fair share: while other members wait, a member that
 * holds at least ceil(max / members holding or wanting units) takes no new
 * unit, and one holding more closes connections as they are released
 * (prt__budget_over, counted as given).  Without waiters elsewhere there
 * is no share: one member may use the whole budget.
 *
 * Reload: prt_budget_new(max, reuse = 1) in a process that made one before,
 * or was forked from one that did, returns that same budget with max
 * updated (found through the environment variable POOLRT_SHARED_BUDGET,
 * "creator pid:address", when that address is mapped here: see
 * made_before).  nginx's master runs init_by_lua again on `nginx -s reload`, so
 * old and new workers share one budget across a reload.  Such a budget is
 * never unmapped in the process that made it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define BUDGET_MAGIC 0x706f6f6c72746231ULL /* "poolrtb1" */
#define BUDGET_MEMBERS 128                 /* runtimes at once: workers, and old ones during a reload */
#define BUDGET_ENV "POOLRT_SHARED_BUDGET"
#define BUDGET_TICK 0.1                    /* seconds: the budget thread's longest sleep */

/* One joined runtime.  pid: 0 free, > 0 its process, -1 being reclaimed. */
typedef struct member {
    atomic_int pid;
    atomic_int held;         /* units taken by this runtime */
    atomic_int waiting;      /* its callers waiting for a unit, as its budget thread last counted */
    atomic_uint_fast64_t asked, given;
} member;

/* The shared memory itself; every field is an atomic or immutable. */
struct prt_budget {
    uint64_t magic;          /* immutable */
    int creator;             /* immutable: the pid that mapped it */
    atomic_int max, used;
    atomic_int waiting;      /* sum of the members' waiting */
    atomic_uint seq;         /* the futex word (32 bits) */
    atomic_uint_fast64_t asked, given, reclaimed;
    member m[BUDGET_MEMBERS];
};
_Static_assert(sizeof(atomic_uint) == 4, "futex words are 32 bits");

/* A runtime's side of its membership; rt->shared_budget. */
typedef struct prt__budget_link prt__budget_link;
struct prt__budget_link {
    prt_budget *b;           /* immutable */
    member *me;              /* immutable: this runtime's slot */
    pthread_t thread;
    atomic_int stop;         /* the budget thread must exit */
    atomic_int fair;         /* this member's fair share while others wait, else 0 (budget thread) */
    int held_at_tick;        /* budget thread: me->held before its last report */
    double asked_at;         /* budget thread: when it last asked the others */
};

/* Bumps seq and wakes every process's budget thread that waits on it. */
static void wake_all(prt_budget *b)
{
    atomic_fetch_add(&b->seq, 1);
    syscall(SYS_futex, (uint32_t *)&b->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleeps while seq == seen, at most `secs` (spurious returns are fine). */
static void wait_change(prt_budget *b, unsigned seen, double secs)
{
    struct timespec ts = { (time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9) };
    syscall(SYS_futex, (uint32_t *)&b->seq, FUTEX_WAIT, seen, &ts, NULL, 0);
}

/* Returns the units and the waiting count of member m to the budget. */
static void empty_member(prt_budget *b, member *m)
{
    int held = atomic_exchange(&m->held, 0);
    int waiting = atomic_exchange(&m->waiting, 0);
    atomic_fetch_sub(&b->used, held);
    atomic_fetch_sub(&b->waiting, waiting);
    if (held > 0)
        wake_all(b);
}

/* Reclaims the slot of every member whose process is gone.  Returns how
 * many.  Safe from any process at any time: the CAS to -1 lets one win. */
static int reclaim_dead(prt_budget *b)
{
    int n = 0;
    for (int i = 0; i < BUDGET_MEMBERS; i++) {
        member *m = &b->m[i];
        int pid = atomic_load(&m->pid);
        if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        if (!atomic_compare_exchange_strong(&m->pid, &pid, -1))
            continue;
        int held = atomic_load(&m->held);
        empty_member(b, m);
        atomic_store(&m->pid, 0);
        atomic_fetch_add(&b->reclaimed, 1);
        prt__logf(PRT_LOG_WARN, "shared budget: process %d is gone; its %d connection(s) returned to the budget",
                  pid, held);
        n++;
    }
    return n;
}

/* The budget that this process or one it was forked from made with reuse
 * (POOLRT_SHARED_BUDGET, "creator pid:address"), or NULL.  Not only the
 * creator itself: nginx runs init_by_lua before it daemonizes, so the
 * master that reloads is a child of the process that made the budget and
 * has the same mapping.  A process exec'd with that environment (nginx's
 * binary upgrade) does not have the mapping: mincore tells, before the
 * address is read. */
static prt_budget *made_before(void)
{
    const char *env = getenv(BUDGET_ENV);
    int pid = 0;
    unsigned long long addr = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (!env || sscanf(env, "%d:%llx", &pid, &addr) != 2 || !addr || page <= 0 || addr % (unsigned long long)page)
        return NULL;
    unsigned char vec[64];
    if ((sizeof(prt_budget) + (size_t)page - 1) / (size_t)page > sizeof vec)
        return NULL;
    if (mincore((void *)(uintptr_t)addr, sizeof(prt_budget), vec) != 0)
        return NULL; /* not mapped here */
    prt_budget *b = (prt_budget *)(uintptr_t)addr;
    return b->magic == BUDGET_MAGIC && b->creator == pid ? b : NULL;
}

/* Makes a budget of `max` connections in MAP_SHARED memory, to be shared
 * with the processes this one forks.  reuse: return the budget this
 * process made before (max updated) if there is one -- nginx's master on a
 * reload.  *out is freed with prt_budget_free (not a reused one while any
 * runtime uses it).  Returns 0, PRT_EINVAL (max < 1) or PRT_ENOMEM. */
int prt_budget_new(int max, int reuse, prt_budget **out, char *err, size_t errlen)
{
    if (!out || max < 1) {
        prt__errf(err, errlen, "shared budget: max must be >= 1");
        return PRT_EINVAL;
    }
    prt_budget *b = reuse ? made_before() : NULL;
    if (b) {
        atomic_store(&b->max, max);
        wake_all(b); /* a larger max serves waiters now */
        *out = b;
        return PRT_OK;
    }
    b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) {
        prt__errf(err, errlen, "shared budget: mmap failed: %s", strerror(errno));
        return PRT_ENOMEM;
    }
    /* Fresh anonymous memory is zero: every member free, nothing used. */
    b->magic = BUDGET_MAGIC;
    b->creator = (int)getpid();
    atomic_store(&b->max, max);
    if (reuse) {
        char val[64];
        snprintf(val, sizeof val, "%d:%llx", b->creator, (unsigned long long)(uintptr_t)b);
        setenv(BUDGET_ENV, val, 1);
    }
    *out = b;
    return PRT_OK;
}

/* Unmaps this process's view of the budget; other processes keep theirs. */
void prt_budget_free(prt_budget *b)
{
    if (b)
        munmap(b, sizeof *b);
}

/* Sets l->fair: while other members wait, the budget split evenly over
 * the members that hold or want units (rounded up), else 0 (no share). */
static void update_fair(prt__budget_link *l)
{
    prt_budget *b = l->b;
    int others = atomic_load(&b->waiting) - atomic_load(&l->me->waiting), active = 0;
    for (int i = 0; others > 0 && i < BUDGET_MEMBERS; i++)
        active += atomic_load(&b->m[i].pid) != 0 &&
                  (atomic_load(&b->m[i].held) > 0 || atomic_load(&b->m[i].waiting) > 0);
    int max = atomic_load(&b->max);
    atomic_store(&l->fair, active > 0 ? (max + active - 1) / active : 0);
}

/* Whether rt holds its fair share or more while other members wait: it
 * then takes no new unit, and closes connections as they are released. */
static int over_share(const prt__budget_link *l)
{
    int fair = atomic_load_explicit(&l->fair, memory_order_relaxed);
    return fair > 0 && atomic_load_explicit(&l->me->held, memory_order_relaxed) >= fair &&
           atomic_load(&l->b->waiting) > atomic_load(&l->me->waiting);
}

/* Publishes how many of rt's callers wait for a unit (`waiting`, counted
 * by pools.c in the tick this thread reported) and asks the other members
 * for units when that grew, when units just came and callers still wait,
 * or every BUDGET_TICK while they wait; then updates the fair share.
 * Budget thread only (inside its report). */
void prt__budget_publish(prt_runtime *rt, int waiting)
{
    prt__budget_link *l = rt->shared_budget;
    int granted = atomic_load(&l->me->held) > l->held_at_tick;
    int old = atomic_exchange(&l->me->waiting, waiting);
    atomic_fetch_add(&l->b->waiting, waiting - old);
    double now = prt_now();
    int spent = atomic_load(&l->b->used) >= atomic_load(&l->b->max);
    if (waiting > 0 && spent && (waiting > old || granted || now - l->asked_at >= BUDGET_TICK)) {
        atomic_fetch_add(&l->me->asked, 1);
        atomic_fetch_add(&l->b->asked, 1);
        l->asked_at = now;
        wake_all(l->b);
    }
    update_fair(l);
}

/* How many idle connections rt should close for callers waiting in other
 * processes: as many as wait elsewhere, once the budget is spent (pools.c
 * closes them, least recently used first, and counts each with
 * prt__budget_gave).  An idle connection here means no caller of rt
 * waits, so it is the right one to go.  Budget thread only. */
int prt__budget_owed(prt_runtime *rt)
{
    prt__budget_link *l = rt->shared_budget;
    prt_budget *b = l->b;
    int others = atomic_load(&b->waiting) - atomic_load(&l->me->waiting);
    return others > 0 && atomic_load(&b->used) >= atomic_load(&b->max) ? others : 0;
}

void prt__budget_gave(prt_runtime *rt)
{
    prt__budget_link *l = rt->shared_budget;
    atomic_fetch_add(&l->me->given, 1);
    atomic_fetch_add(&l->b->given, 1);
}

/* The budget thread of one runtime (see the top of the file): reclaims
 * dead members' units, then reports the tick upward (capacity.h), where
 * free units go to waiters, waiters are published and idle connections
 * are given to other members (pools.c's budget_tick, which calls back
 * prt__budget_publish, _owed and _gave). */
static void *budget_main(void *arg)
{
    prt_runtime *rt = arg;
    prt__budget_link *l = rt->shared_budget;
    prt_budget *b = l->b;
    double reclaimed_at = 0;
    while (!atomic_load(&l->stop)) {
        unsigned seen = atomic_load(&b->seq);
        double now = prt_now();
        if (now - reclaimed_at >= BUDGET_TICK) {
            reclaim_dead(b);
            reclaimed_at = now;
        }
        l->held_at_tick = atomic_load(&l->me->held);
        prt__cap_report(rt, PRT__CAP_BUDGET);
        if (atomic_load(&b->seq) == seen && !atomic_load(&l->stop))
            wait_change(b, seen, BUDGET_TICK);
    }
    return NULL;
}

/* Makes rt a member of b and starts its budget thread (rt->shared_budget is set
 * only on success).  Returns 0, PRT_EFULL (no free member slot) or
 * PRT_ENOMEM / PRT_ETHREAD, with err. */
int prt__budget_join(prt_runtime *rt, prt_budget *b, char *err, size_t errlen)
{
    if (b->magic != BUDGET_MAGIC) {
        prt__errf(err, errlen, "shared budget: not a budget made by prt_budget_new");
        return PRT_EINVAL;
    }
    prt__budget_link *l = calloc(1, sizeof *l);
    if (!l) {
        prt__errf(err, errlen, "shared budget: out of memory");
        return PRT_ENOMEM;
    }
    reclaim_dead(b);
    int pid = (int)getpid();
    for (int i = 0; i < BUDGET_MEMBERS && !l->me; i++) {
        int free_slot = 0;
        if (atomic_compare_exchange_strong(&b->m[i].pid, &free_slot, pid))
            l->me = &b->m[i];
    }
    if (!l->me) {
        free(l);
        prt__errf(err, errlen, "shared budget: all %d member slots are taken", BUDGET_MEMBERS);
        return PRT_EFULL;
    }
    l->b = b;
    rt->shared_budget = l;
    if (prt__thread_create(&l->thread, budget_main, rt) != 0) {
        rt->shared_budget = NULL;
        atomic_store(&l->me->pid, 0);
        free(l);
        prt__errf(err, errlen, "shared budget: could not start the budget thread");
        return PRT_ETHREAD;
    }
    return PRT_OK;
}

/* Stops rt's budget thread and leaves the budget.  Connections still in
 * use (they outlive the runtime, detached) keep their units until this
 * process exits.  Called once rt's pools are detached.  No lock held. */
void prt__budget_leave(prt_runtime *rt)
{
    prt__budget_link *l = rt->shared_budget;
    if (!l)
        return;
    atomic_store(&l->stop, 1);
    wake_all(l->b);
    pthread_join(l->thread, NULL);
    int held = atomic_load(&l->me->held);
    if (held == 0) {
        empty_member(l->b, l->me);
        atomic_store(&l->me->pid, 0);
    } else {
        /* Those connections stay open until released or until the process
         * exits (an nginx worker): their units stay taken, and the slot is
         * reclaimed once this pid is gone. */
        atomic_fetch_sub(&l->b->waiting, atomic_exchange(&l->me->waiting, 0));
        prt__logf(PRT_LOG_WARN, "shared budget: runtime freed with %d connection(s) still in use; "
                  "their units return when this process exits", held);
    }
    rt->shared_budget = NULL;
    free(l);
}

/* Takes one unit for a connection about to open.  Returns 1, or 0 when the
 * budget is spent.  p->mu held (capacity.c). */
int prt__budget_take(prt_runtime *rt)
{
    prt__budget_link *l = rt->shared_budget;
    if (over_share(l))
        return 0;
    int n = atomic_load(&l->b->used);
    do {
        if (n >= atomic_load_explicit(&l->b->max, memory_order_relaxed))
            return 0;
    } while (!atomic_compare_exchange_weak(&l->b->used, &n, n + 1));
    atomic_fetch_add(&l->me->held, 1);
    return 1;
}

/* Gives back n units; wakes the members when any of them has callers
 * waiting.  p->mu held (capacity.c). */
void prt__budget_give(prt_runtime *rt, int n)
{
    prt__budget_link *l = rt->shared_budget;
    atomic_fetch_sub(&l->me->held, n);
    atomic_fetch_sub(&l->b->used, n);
    if (atomic_load(&l->b->waiting) > 0)
        wake_all(l->b);
}

/* True when a connection released now should close instead of going idle
 * (or to this runtime's next waiter): the budget shrank below what is held
 * (a reload with a smaller max), or rt holds more than its fair share while
 * other members wait -- so that under load every member gets its share,
 * not only the one that took the units first.  The latter counts as given. */
int prt__budget_over(const prt_runtime *rt)
{
    prt__budget_link *l = rt ? rt->shared_budget : NULL;
    if (!l)
        return 0;
    if (atomic_load_explicit(&l->b->used, memory_order_relaxed) > atomic_load_explicit(&l->b->max, memory_order_relaxed))
        return 1;
    if (!over_share(l) || atomic_load(&l->me->held) <= atomic_load(&l->fair))
        return 0;
    atomic_fetch_add(&l->me->given, 1);
    atomic_fetch_add(&l->b->given, 1);
    return 1;
}

/* A caller of rt is about to wait for a unit (p->mu held, so rt's budget
 * thread, counting waiters, sees it queued): when rt published no waiter
 * yet and the budget is spent, wake the thread so the others hear of it
 * now rather than at the next tick. */
void prt__budget_blocked(prt_runtime *rt)
{
    prt__budget_link *l = rt->shared_budget;
    if (l && atomic_load(&l->me->waiting) == 0 && atomic_load(&l->b->used) >= atomic_load(&l->b->max))
        wake_all(l->b);
}

/* The numbers of budget b (NULL: rt's) and of rt's membership (rt NULL:
 * those are 0).  Returns 0, or PRT_EINVAL when neither names a budget. */
int prt_budget_stats_get(prt_budget *b, prt_runtime *rt, prt_budget_stats *out)
{
    prt__budget_link *l = rt ? rt->shared_budget : NULL;
    if (!b && l)
        b = l->b;
    if (!b || !out)
        return PRT_EINVAL;
    memset(out, 0, sizeof *out);
    out->max = atomic_load(&b->max);
    out->used = atomic_load(&b->used);
    out->waiting = atomic_load(&b->waiting);
    for (int i = 0; i < BUDGET_MEMBERS; i++)
        out->members += atomic_load(&b->m[i].pid) > 0;
    out->evictions_asked_total = atomic_load(&b->asked);
    out->evictions_given_total = atomic_load(&b->given);
    out->reclaimed_total = atomic_load(&b->reclaimed);
    if (l && l->b == b) {
        out->held = atomic_load(&l->me->held);
        out->held_waiting = atomic_load(&l->me->waiting);
        out->asked_total = atomic_load(&l->me->asked);
        out->given_total = atomic_load(&l->me->given);
    }
    return PRT_OK;
}
