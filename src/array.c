/*
 * array.c -- growing the core's dynamic arrays (a pool's idle list, the
 * registry's pools, the process's live runtimes) by doubling.
 */
#include <stdlib.h>
#include "internal.h"

/* Makes room for `need` elements of `elem` bytes in `array` (of capacity
 * *cap), doubling from 8.  Returns the array, moved or not, with *cap
 * updated; NULL when out of memory, leaving the old array and *cap intact. */
void *prt__grow(void *array, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return array;
    int n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *grown = realloc(array, (size_t)n * elem);
    if (grown)
        *cap = n;
    return grown;
}
