-- wrk script: POST /v1/check for 10,000 distinct subjects, round robin per thread.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"namespace":"bench","subject":"user-%d","cost":1}', n % 10000)
  return wrk.format(nil, "/v1/check", nil, body)
end
