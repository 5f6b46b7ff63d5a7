// gobench -- the bench/driver.c workload in Go, for comparison with the
// two common Go pools: database/sql + lib/pq, and pgx v4's pgxpool.
//
//	gobench -driver pq|pgx [-c CONNINFO] [-w WORKERS] [-m MAX] [-d SECONDS] [-q select|noop] [-s SCALE]
//
// -q select: pgbench's -S query, SELECT abalance FROM pgbench_accounts
// WHERE aid = $1 with a uniform random aid, through db.QueryRow (lib/pq: an
// unnamed statement, Parse/Describe then Bind/Execute) or pool.QueryRow
// (pgx: statement cache, prepared once per connection).
// -q noop: acquire + release only (db.Conn + Close, pool.Acquire + Release).
//
// Built offline from Debian's Go packages (GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gobench gobench.go
//
// Prints one key=value line like bench/driver.c.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v4/pgxpool"
	_ "github.com/lib/pq"
)

const selectSQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

type result struct {
	ops, errors int64
	lat         []float32
	firstErr    string
}

func main() {
	driver := flag.String("driver", "pgx", "pq (database/sql + lib/pq) or pgx (pgxpool)")
	conninfo := flag.String("c", os.Getenv("POOLRT_CONNINFO"), "libpq-style conninfo")
	workers := flag.Int("w", 1, "worker goroutines")
	max := flag.Int("m", 0, "pool max (default: workers)")
	secs := flag.Float64("d", 5, "seconds")
	mode := flag.String("q", "select", "select or noop")
	scale := flag.Int("s", 10, "pgbench scale")
	flag.Parse()
	if *max <= 0 {
		*max = *workers
	}
	dsn := *conninfo
	if !strings.Contains(dsn, "sslmode") {
		dsn += " sslmode=disable"
	}
	ctx := context.Background()
	accounts := int64(100000 * *scale)

	// op runs one cycle; warm opens n connections before the clock starts.
	var op func(r *rand.Rand) error
	var warm func(n int) error
	var closeAll func()
	switch *driver {
	case "pq":
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			fail(err)
		}
		db.SetMaxOpenConns(*max)
		db.SetMaxIdleConns(*max)
		db.SetConnMaxLifetime(0)
		closeAll = func() { db.Close() }
		warm = func(n int) error {
			cs := make([]*sql.Conn, 0, n)
			defer func() {
				for _, c := range cs {
					c.Close()
				}
			}()
			for i := 0; i < n; i++ {
				c, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				if err := c.PingContext(ctx); err != nil {
					return err
				}
				cs = append(cs, c)
			}
			return nil
		}
		if *mode == "noop" {
			op = func(r *rand.Rand) error {
				c, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				return c.Close()
			}
		} else {
			op = func(r *rand.Rand) error {
				var abalance int
				return db.QueryRow(selectSQL, 1+r.Int63n(accounts)).Scan(&abalance)
			}
		}
	case "pgx":
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			fail(err)
		}
		cfg.MaxConns = int32(*max)
		cfg.MinConns = 0
		cfg.MaxConnLifetime = time.Hour
		cfg.MaxConnIdleTime = time.Hour
		pool, err := pgxpool.ConnectConfig(ctx, cfg)
		if err != nil {
			fail(err)
		}
		closeAll = pool.Close
		warm = func(n int) error {
			cs := make([]*pgxpool.Conn, 0, n)
			defer func() {
				for _, c := range cs {
					c.Release()
				}
			}()
			for i := 0; i < n; i++ {
				c, err := pool.Acquire(ctx)
				if err != nil {
					return err
				}
				cs = append(cs, c)
			}
			return nil
		}
		if *mode == "noop" {
			op = func(r *rand.Rand) error {
				c, err := pool.Acquire(ctx)
				if err != nil {
					return err
				}
				c.Release()
				return nil
			}
		} else {
			op = func(r *rand.Rand) error {
				var abalance int32
				return pool.QueryRow(ctx, selectSQL, 1+r.Int63n(accounts)).Scan(&abalance)
			}
		}
	default:
		fail(fmt.Errorf("unknown driver %q", *driver))
	}
	n := *workers // noop (pool-only): every connection open, "T goroutines on max connections"
	if *max < n || *mode == "noop" {
		n = *max
	}
	if err := warm(n); err != nil {
		fail(fmt.Errorf("warm-up: %w", err))
	}

	var stop int32
	results := make([]result, *workers)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(*workers)
	done.Add(*workers)
	for i := 0; i < *workers; i++ {
		go func(i int) {
			defer done.Done()
			res := &results[i]
			r := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)*7919))
			res.lat = make([]float32, 0, 4096)
			ready.Done()
			<-start
			for atomic.LoadInt32(&stop) == 0 {
				t0 := time.Now()
				err := op(r)
				d := time.Since(t0)
				if err != nil {
					res.errors++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
					continue
				}
				if atomic.LoadInt32(&stop) != 0 {
					break
				}
				res.ops++
				res.lat = append(res.lat, float32(d.Nanoseconds())/1e3)
			}
		}(i)
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	time.Sleep(time.Duration(*secs * float64(time.Second)))
	atomic.StoreInt32(&stop, 1)
	elapsed := time.Since(t0).Seconds()
	done.Wait()
	closeAll()

	var ops, errs int64
	var all []float32
	first := ""
	for _, r := range results {
		ops += r.ops
		errs += r.errors
		all = append(all, r.lat...)
		if first == "" {
			first = r.firstErr
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float32 {
		if len(all) == 0 {
			return 0
		}
		return all[int(p*float64(len(all)-1))]
	}
	fmt.Printf("tps=%.1f ops=%d secs=%.3f p50_us=%.1f p99_us=%.1f errors=%d workers=%d max=%d first_error=%q\n",
		float64(ops)/elapsed, ops, elapsed, pct(0.5), pct(0.99), errs, *workers, *max, first)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gobench:", err)
	os.Exit(1)
}
