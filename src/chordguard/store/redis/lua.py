"""Every Lua script of the Redis store, in one place. Each runs as one atomic call.

Journal: ``RECORD`` (a chord once), ``PARTS`` (finished parts, first report kept),
``FINISH`` (end an open chord once). Leases: ``SWAP_LEASE`` (the one compare-and-set).
Dead letters: ``SETTLE``. Breakers: ``REPLACE_BREAKER`` (by version). Barriers:
``COMPLETE`` (record a part and count down: one round trip per completion),
``TRANSITION`` (finish, fail, reclaim), ``MARK_DISPATCHED``.
"""

# KEYS: chord hash, open zset
# ARGV: data json, state, polls, duplicates, score, id; when ended: reason, ended_at, ttl
RECORD = """
if redis.call('HSETNX', KEYS[1], 'data', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'polls', ARGV[3], 'duplicates', ARGV[4])
if ARGV[2] == 'open' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'reason', ARGV[7], 'ended_at', ARGV[8])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
return 1
"""

# KEYS: parts hash; ARGV: ttl, then task id, "state|at" pairs (first report kept)
PARTS = """
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: chord hash, open zset; ARGV: state, reason, ended_at, retention, id
FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[5])
return 1
"""

# KEYS: breaker; ARGV: expected version, new json
REPLACE_BREAKER = """
local cur = redis.call('GET', KEYS[1])
local version = 0
if cur then version = cjson.decode(cur)['version'] end
if tostring(version) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: letter, dlq zset; ARGV: new json, state
SETTLE = """
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['state'] ~= 'dead' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS: barrier, parts, due   ARGV: index, envelope, failed 0/1, now, token, id, grace, reason
COMPLETE = """
local b = KEYS[1]
local f = redis.call('HMGET', b, 'state', 'policy', 'deadline_at', 'stall_seconds',
                     'total', 'by_reference')
local state = f[1]
if not state then return {'missing'} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {'duplicate'} end
if redis.call('HLEN', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], math.max(redis.call('TTL', b), 1))
end
local now = tonumber(ARGV[4])
local remaining = redis.call('HINCRBY', b, 'remaining', -1)
if ARGV[3] == '1' then redis.call('HINCRBY', b, 'failed', 1) end
if state ~= 'waiting' then
  redis.call('HSET', b, 'updated_at', ARGV[4])
  return {'late'}
end
if ARGV[3] == '1' and f[2] == 'fail' then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'failed', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4], 'finished_at', ARGV[4],
             'reason', ARGV[8])
  redis.call('ZREM', KEYS[3], ARGV[6])
  return {'fail', cjson.encode(redis.call('HGETALL', b))}
end
if remaining <= 0 then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'dispatching', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4])
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
  local out = {'dispatch', cjson.encode(redis.call('HGETALL', b))}
  if f[6] == '0' then
    for i = 0, tonumber(f[5]) - 1 do
      out[#out + 1] = redis.call('HGET', KEYS[2], tostring(i)) or ''
    end
  end
  return out
end
redis.call('HSET', b, 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[3], math.min(tonumber(f[3]), now + tonumber(f[4])), ARGV[6])
return {'counted'}
"""

# KEYS: barrier, due, parts, header
# ARGV: from-states (comma list), to-state, now, token, id, reason, outcome,
#       due score ('' = remove from due), keep seconds, stale-claim-before ('' = any)
TRANSITION = """
local b = KEYS[1]
local state = redis.call('HGET', b, 'state')
if not state then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) then return false end
if ARGV[10] ~= '' then
  local claimed = tonumber(redis.call('HGET', b, 'claimed_at') or '0')
  if claimed >= tonumber(ARGV[10]) then return false end
end
redis.call('HSET', b, 'state', ARGV[2], 'updated_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', b, 'claim_token', ARGV[4], 'claimed_at', ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', b, 'reason', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', b, 'outcome', ARGV[7]) end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HSET', b, 'finished_at', ARGV[3])
  for _, key in ipairs({b, KEYS[3], KEYS[4]}) do redis.call('EXPIRE', key, ARGV[9]) end
else
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[5])
end
return cjson.encode(redis.call('HGETALL', b))
"""

# KEYS: barrier   ARGV: token, now
MARK_DISPATCHED = """
if redis.call('HGET', KEYS[1], 'claim_token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'dispatching' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dispatched', 'updated_at', ARGV[2])
return 1
"""

# KEYS: lease   ARGV: new holder ('' = release), ttl ms, then the expected holders
# ('' = nobody: no key, or it expired)
SWAP_LEASE = """
local current = redis.call('GET', KEYS[1]) or ''
for i = 3, #ARGV do
  if ARGV[i] == current then
    if ARGV[1] == '' then redis.call('DEL', KEYS[1])
    else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
    return 1
  end
end
return 0
"""
