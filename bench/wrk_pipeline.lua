-- wrk script for bench/pipeline.py: bench/wrk_callbacks.lua (its path in CTWA_BENCH_SCRIPT), plus a count of the
-- requests each thread made, printed at the end, so the benchmark can tell that no thread went round its share of
-- the pool: that no callback was sent twice.
dofile(os.getenv("CTWA_BENCH_SCRIPT"))

local threads = {}
local setup_callbacks = setup
function setup(thread)
  setup_callbacks(thread)
  table.insert(threads, thread)
end

local next_callback = request
sent = 0
function request()
  sent = sent + 1
  return next_callback()
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("ctwa-bench thread made %d requests of %d\n", thread:get("sent"), thread:get("request_count")))
  end
end
