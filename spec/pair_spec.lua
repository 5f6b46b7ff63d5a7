-- The primary + streaming standby harness (tools/pg-pair.sh,
-- spec/support/pair.lua) that issue 21's specs run against: roles,
-- replication, the multi-host conninfo, and a clean switchover.  Each test
-- starts its own pair and stops it in `finally`; teardown stops any that a
-- failure left behind.  Every wait is bounded.
local pair = require "spec.support.pair"

describe("pg-pair harness", function()
  teardown(pair.stop_all)

  it("starts a primary and a standby that streams from it", function()
    local p = pair.start()
    finally(function() p:stop() end)

    assert.is_number(p.primary_port)
    assert.is_number(p.standby_port)
    assert.not_equal(p.primary_port, p.standby_port)
    assert.equal("f", p:sql("primary", "select pg_is_in_recovery()"))
    assert.equal("t", p:sql("standby", "select pg_is_in_recovery()"))
    assert.equal("streaming", p:sql("standby", "select status from pg_stat_wal_receiver"))
    assert.equal(tostring(p.primary_port), p:sql("standby", "select sender_port from pg_stat_wal_receiver"))
    assert.equal("1", p:sql("primary", "select count(*) from pg_stat_replication where state = 'streaming'"))

    -- The standby refuses writes; a write on the primary reaches it.
    local _, err = p:try_sql("standby", "create table pair_t(x int)")
    assert.matches("read%-only transaction", err)
    p:sql("primary", "create table pair_t(x int); insert into pair_t values (1)")
    p:wait_sql("standby", "select count(*) from pair_t where x = 1", "1", 10, "row 1 on the standby")

    -- The multi-host conninfo, in libpq's form, picks the node the
    -- target_session_attrs ask for.
    assert.equal(("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=postgres")
                   :format(p.primary_port, p.standby_port), p:conninfo())
    assert.equal(tostring(p.standby_port),
                 p:sql(p:conninfo("target_session_attrs=prefer-standby"), "select inet_server_port()"))
    assert.equal(tostring(p.primary_port),
                 p:sql(p:conninfo{ target_session_attrs = "read-write" }, "select inet_server_port()"))
  end)

  it("switches over: the roles flip and the old primary streams from the new one", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local a, b = p.primary_port, p.standby_port

    p:sql("primary", "create table pair_t(x int); insert into pair_t values (1)")
    p:wait_sql("standby", "select count(*) from pair_t", "1", 10, "row 1 on the standby")

    p:switchover()

    assert.equal(b, p.primary_port)
    assert.equal(a, p.standby_port)
    assert.equal("f", p:sql(b, "select pg_is_in_recovery()"))
    assert.equal("t", p:sql(a, "select pg_is_in_recovery()"))
    assert.equal("streaming", p:sql(a, "select status from pg_stat_wal_receiver"))
    assert.equal(tostring(b), p:sql(a, "select sender_port from pg_stat_wal_receiver"))
    -- The promotion started a new timeline, which the old primary follows.
    assert.equal("2", p:sql(a, "select received_tli from pg_stat_wal_receiver"))

    -- Nothing written before the switchover was lost; a write on the new
    -- primary reaches the old one.
    assert.equal("1", p:sql(b, "select count(*) from pair_t where x = 1"))
    p:sql(b, "insert into pair_t values (2)")
    p:wait_sql(a, "select count(*) from pair_t where x = 2", "1", 10, "row 2 on the old primary")
    local _, err = p:try_sql(a, "insert into pair_t values (3)")
    assert.matches("read%-only transaction", err)

    -- The conninfo follows the roles: the new primary is listed first.
    assert.equal(tostring(b), p:sql(p:conninfo("target_session_attrs=read-write"), "select inet_server_port()"))
    assert.equal(tostring(a), p:sql(p:conninfo("target_session_attrs=standby"), "select inet_server_port()"))
  end)
end)
