-- wrk script: replays pre-signed Sinch callbacks, one line each: signature TAB nonce TAB timestamp TAB body.
-- Every wrk thread takes its own share of the lines, so no callback is sent twice until the file wraps.
local path = os.getenv("CTWA_BENCH_REQUESTS")
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  thread:set("thread_total", tonumber(os.getenv("CTWA_BENCH_THREADS")))
end

function init(args)
  requests = {}
  local n, line_number = 0, 0
  for line in io.lines(path) do
    if line_number % thread_total == thread_index then
      local signature, nonce, timestamp, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      n = n + 1
      requests[n] = wrk.format("POST", "/webhooks/sinch", {
        ["Content-Type"] = "application/json",
        ["x-sinch-webhook-signature"] = signature,
        ["x-sinch-webhook-signature-nonce"] = nonce,
        ["x-sinch-webhook-signature-timestamp"] = timestamp,
        ["x-sinch-webhook-signature-algorithm"] = "HmacSHA256",
      }, body)
    end
    line_number = line_number + 1
  end
  request_count = n
  next_index = 0
end

function request()
  next_index = next_index % request_count + 1
  return requests[next_index]
end
