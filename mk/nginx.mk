# nginx -- the OpenResty embedding (lua/resty/poolrt.lua, examples/nginx).
# `make test` runs spec/openresty_spec.lua with every other spec; these
# targets are for working on it alone.
.PHONY: nginx-deps nginx-demo test-nginx bench-nginx

nginx-deps:
	@tools/deps.sh core nginx

# examples/nginx on a free loopback port against a throwaway PostgreSQL
# (or $POOLRT_CONNINFO), in the foreground until Ctrl-C.
nginx-demo: nginx-deps all
	tools/with-pg.sh examples/nginx/run.sh fg

# Only the real-nginx spec.
test-nginx: nginx-deps all
	BUSTED="$(BUILD)/poolrt /usr/bin/busted" SPECS=spec/openresty_spec.lua CTESTS=none \
	  tools/with-pg.sh tools/run-tests.sh

# nginx + poolrt vs pgbench direct; writes bench/RESULTS-nginx.md.  Needs wrk.
bench-nginx: nginx-deps all
	@command -v wrk >/dev/null || { echo "bench-nginx needs wrk: apt-get install -y wrk" >&2; exit 1; }
	bench/nginx_bench.sh
