"""The Redis registry's Lua scripts (one atomic round trip each; see :mod:`twibridge.state.redis_registry`).

Each reads the clock from Redis (``TIME``) where it needs one, so VMs with
skewed clocks agree on expiry.
"""

NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

# KEYS: call key, live; ARGV: sid, value, ttl.  1 = claimed, 0 = live elsewhere.
REGISTER = NOW + """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""

# Same keys/args.  Re-creates a record Redis lost; 0 = another instance owns it now.
REFRESH = NOW + """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: call key, live, summary key, history, transcript key; ARGV: sid, value ('' if none),
# summary, history ttl, max history, transcript ('' if none), transcript ttl.
# The live record is deleted only if it is still ours.
UNREGISTER = NOW + """
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl)
if ARGV[6] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7]) end
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - ttl)
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[5]) + 1))
return 1
"""

# KEYS: live.  Prune expired entries (crashed instances), then count.
COUNT = NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: live; ARGV: call key prefix.  Prune, then the live records' JSON.
LIVE = NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local sids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #sids == 0 then return {} end
local keys = {}
for i, sid in ipairs(sids) do keys[i] = ARGV[1] .. sid end
return redis.call('MGET', unpack(keys))
"""

# KEYS: answer key, reserved; ARGV: sid, history ttl, retry window, max answers, reserve s.
# 1 = answer (first time, or a retry of an unanswered one), 0 = refuse.
ANSWER = NOW + """
local function reserve()
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
  return 1
end
if redis.call('SET', KEYS[1], now .. '|1|0', 'NX', 'EX', ARGV[2]) then return reserve() end
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local first, n, streamed = string.match(cur, '^([^|]+)|([^|]+)|([^|]+)$')
if not first or streamed == '1' or now - tonumber(first) > tonumber(ARGV[3]) or tonumber(n) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SET', KEYS[1], first .. '|' .. (tonumber(n) + 1) .. '|0', 'XX', 'KEEPTTL')
return reserve()
"""

# KEYS: answer key, reserved, token key; ARGV: sid, token id ('' none), token ttl, once (1/0).
# 1 = the stream may go on, 0 = token used before / CallSid already streamed.
STARTED = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur then
  local first, n, streamed = string.match(cur, '^([^|]+)|([^|]+)|([^|]+)$')
  if first then
    if streamed == '1' and ARGV[4] == '1' then return 0 end
    redis.call('SET', KEYS[1], first .. '|' .. n .. '|1', 'XX', 'KEEPTTL')
  end
end
return 1
"""

# KEYS: live, reserved.  Prune both, then live + reserved.
ADMITTED = NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
"""

# KEYS: history; ARGV: summary key prefix, limit, transcript key prefix.  Newest first:
# {summaries, transcripts} (a transcript is false when none is kept or it expired).
RECENT = """
local sids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #sids == 0 then return {{}, {}} end
local keys, tkeys = {}, {}
for i, sid in ipairs(sids) do keys[i] = ARGV[1] .. sid tkeys[i] = ARGV[3] .. sid end
return {redis.call('MGET', unpack(keys)), redis.call('MGET', unpack(tkeys))}
"""
