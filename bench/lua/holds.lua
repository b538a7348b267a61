-- POST /api/v1/holds as many patients, each with its own bearer token, its own address (sent as
-- X-Forwarded-For, which the server believes from 127.0.0.1 only) and its own list of bodies.
-- args: wrk threads, plan file. A plan line is "token address body body ...": thread k takes
-- lines k, k+threads, …; its requests go to its patients in turn, and each patient walks through
-- its bodies, then repeats the last one (counted in `repeats`: a pool that ran out, or a burst's
-- patient asking again, as people do).
local patients, cursor = {}, {}

function init(args)
  local nthreads = tonumber(args[1])
  local line_no = 0
  for line in io.lines(args[2]) do
    if line_no % nthreads == thread_index then
      local token, address, rest = line:match("^(%S+) (%S+) (.*)$")
      local headers = {
        ["Authorization"] = "Bearer " .. token,
        ["X-Forwarded-For"] = address,
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json",
      }
      local list = {}
      for body in rest:gmatch("%S+") do
        list[#list + 1] = wrk.format("POST", "/api/v1/holds", headers, body)
      end
      patients[#patients + 1] = list
      cursor[#cursor + 1] = 0
    end
    line_no = line_no + 1
  end
end

function request()
  sent = sent + 1
  local p = (sent - 1) % #patients + 1
  local list, c = patients[p], cursor[p] + 1
  if c > #list then
    c = #list
    repeats = repeats + 1
  end
  cursor[p] = c
  return list[c]
end
