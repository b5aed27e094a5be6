"""The team budget's one Lua script: :mod:`amptools.ratelimit`'s arithmetic, run inside Redis.

Every step of a Redis budget (:mod:`amptools.redis_budget`) is one call of this script,
so it is atomic: Redis runs one script at a time. The script reads its clock from
Redis (``TIME``), never from the client, because the machines of a team do not agree
on the time.

The arithmetic is :mod:`amptools.ratelimit`'s, written a second time in Lua:
:class:`~amptools.ratelimit.PaceState` (``current``, ``restart``, ``grant``, ``pause``,
``throttled``), :class:`~amptools.ratelimit.ClientPace`,
:func:`~amptools.ratelimit.fair_shares` and :func:`~amptools.ratelimit.grant_wait`, line
for line, with the same names. Its constants are not written here: every call passes
them as its first arguments, from :data:`CONSTANTS`, so they have one source. The
``probe_*`` operations run those functions on given states and times, without touching
any key: ``tests/test_team_budget.py`` feeds them random states and checks that Lua and
Python agree, so the two cannot drift apart silently.

Numbers leave Lua as text (``%.17g``, which reads back as the same double): Redis
turns a Lua number into an integer reply, and its own number-to-text keeps 14 digits.
"""

from __future__ import annotations

from .ratelimit import (
    BEYOND,
    BURST_SHARE,
    DECREASE,
    DOUBLING,
    HOLD,
    IDLE,
    INCREASE,
    MEMORY,
    MIN_SHARE,
    POLL,
    PROBE,
    START_SHARE,
    PaceState,
)

__all__ = ["ALIVE", "CONSTANTS", "KEEP", "LEASE", "SCRIPT"]

#: An in-flight permit whose answer never came stops counting as in flight after this
#: long (as :data:`amptools.budget.LEASE`), and then counts one more period.
LEASE = 300.0
#: Seconds a client may go without asking for a permit and still share its scope's pace.
ACTIVE = 10.0
#: A process not heard from for this long is dead: its permits complete and its claims
#: are free. Every call and a heartbeat every few seconds say it lives.
ALIVE = 10.0
#: Every key of a scope expires this long after its last write: nothing grows forever.
KEEP = 3600.0
_MINUTE = 60.0

#: The constants every call passes first, by their Lua names: one source, Python's.
CONSTANTS: tuple[tuple[str, float], ...] = (
    ("BURST_SHARE", BURST_SHARE),
    ("START_SHARE", START_SHARE),
    ("PROBE", PROBE),
    ("DOUBLING", DOUBLING),
    ("DECREASE", DECREASE),
    ("MIN_SHARE", MIN_SHARE),
    ("HOLD", HOLD),
    ("INCREASE", INCREASE),
    ("BEYOND", BEYOND),
    ("MEMORY", MEMORY),
    ("IDLE", IDLE),
    ("NEVER", PaceState().decreased),
    ("POLL", POLL),
    ("LEASE", LEASE),
    ("ACTIVE", ACTIVE),
    ("ALIVE", ALIVE),
    ("KEEP", KEEP),
    ("MINUTE", _MINUTE),
)

_HEADER = "\n".join(f"local {name} = tonumber(ARGV[{i}])" for i, (name, _) in enumerate(CONSTANTS, 1))

# The arithmetic of ratelimit.py. A state is a table with PaceState's fields, a pace one
# with ClientPace's; each function mirrors the Python one of the same name.
_ARITHMETIC = r"""
local function fmt(x) return string.format('%.17g', x) end
local function exp2(x) return 2 ^ x end

local FIELDS = {'rate', 'updated', 'probe_until', 'peak', 'decreased', 'not_before', 'active'}

local function new_state()
  return {rate = 0.0, updated = 0.0, probe_until = 0.0, peak = 0.0, decreased = NEVER,
          not_before = 0.0, active = NEVER}
end

local function remembers(s, now, period)
  return s.peak > 0 and now - s.decreased < MEMORY * period
end

local function restart(s, now, ceiling, period)
  local start = START_SHARE * ceiling
  if remembers(s, now, period) then
    s.rate = math.max(MIN_SHARE * ceiling, math.min(ceiling, DECREASE * s.peak))
    s.probe_until = now
  else
    s.peak = 0.0
    local idle = math.max(0.0, now - math.max(s.active, s.not_before)) / period
    local decayed = 0.0
    if s.rate > 0 then decayed = s.rate * exp2(-idle) end
    s.rate = math.max(start, math.min(ceiling, decayed))
    if s.rate <= start then s.probe_until = now + PROBE * period else s.probe_until = now end
  end
  s.updated = now
end

local function fresh(s, now, period)
  return s.rate <= 0 or now - math.max(s.active, s.not_before) > IDLE * period
end

local function starts_fresh(s, now, period)
  return fresh(s, now, period) and not remembers(s, now, period)
end

local function climbed(s, now, ceiling, period)
  local rate, since = s.rate, s.updated
  if not remembers(s, now, period) then
    -- never under the start pace of the largest ceiling now active
    rate = math.max(rate, START_SHARE * ceiling)
    local grow = math.max(now, s.probe_until) - math.max(since, s.probe_until)
    return math.min(ceiling, rate * exp2(math.max(0.0, grow) / (DOUBLING * period)))
  end
  rate = math.max(rate, MIN_SHARE * ceiling)
  local start = math.max(since, s.decreased + HOLD * period)
  if now <= start then return math.min(ceiling, rate) end
  local elapsed = now - start
  if rate < s.peak then
    local step = INCREASE * ceiling / period
    local needed = (s.peak - rate) / step
    if elapsed <= needed then return math.min(ceiling, rate + step * elapsed) end
    rate, elapsed = s.peak, elapsed - needed
  end
  return math.min(ceiling, rate * exp2(elapsed / (BEYOND * period)))
end

local function current(s, now, ceiling, period)
  if fresh(s, now, period) then
    local probe = {}
    for _, f in ipairs(FIELDS) do probe[f] = s[f] end
    restart(probe, now, ceiling, period)
    return climbed(probe, now, ceiling, period)
  end
  return climbed(s, now, ceiling, period)
end

local function grant(s, now, ceiling, period)
  if fresh(s, now, period) then restart(s, now, ceiling, period) end
  s.rate = climbed(s, now, ceiling, period)
  s.updated = now
  s.active = now
end

local function pause(s, now, seconds)
  s.not_before = math.max(s.not_before, now + math.max(0.0, seconds))
end

local function throttled(s, now, granted_at, in_window, ceiling, period)
  if granted_at ~= nil and granted_at <= s.decreased then return false end
  local floor = MIN_SHARE * ceiling
  s.peak = math.max(floor, in_window / period)
  s.rate = math.max(floor, DECREASE * s.peak)
  s.updated = now
  s.decreased = now
  s.probe_until = now
  return true
end

local function burst(share, period)
  return math.max(1, math.floor(share * period * BURST_SHARE))
end

local function pace_wait(p, now, share, period)
  if p.credit > 0 then return 0.0 end
  return p.tat - (burst(share, period) - 1) / share - now
end

local function pace_grant(p, now, share)
  if p.credit > 0 then p.credit = p.credit - 1; return end
  p.tat = math.max(p.tat, now) + 1.0 / share
end

local function give_credit(p, requests)
  p.credit = math.max(p.credit, requests)
end

local function after_decrease(p, s, share, period)
  if s.decreased > p.seen_decrease then
    p.seen_decrease = s.decreased
    p.credit = 0
    local saved = (burst(share, period) - 1) / share
    p.tat = math.max(p.tat, s.not_before + saved, s.decreased + saved)
  end
end

-- ceilings: a list of {client, ceiling}; returns client -> share.
local function fair_shares(total, ceilings)
  local order = {}
  for i, pair in ipairs(ceilings) do order[i] = pair end
  table.sort(order, function(a, b) return a[2] < b[2] end)
  local shares = {}
  local left = math.max(0.0, total)
  local first = 1
  while first <= #order do
    local equal = left / (#order - first + 1)
    local client, ceiling = order[first][1], order[first][2]
    if ceiling <= equal then
      shares[client] = ceiling
      left = left - ceiling
      first = first + 1
    else
      for i = first, #order do shares[order[i][1]] = equal end
      break
    end
  end
  return shares
end

local function grant_wait(s, p, now, share, period, in_window, mine, limit, ceiling, oldest)
  if starts_fresh(s, now, period) then
    give_credit(p, burst(limit / period, period) - burst(share, period))
  end
  after_decrease(p, s, share, period)
  local wait = math.max(s.not_before - now, pace_wait(p, now, share, period))
  local allowed = math.min(ceiling, current(s, now, ceiling, period)) * period
  if in_window >= math.max(1.0, allowed) or mine >= limit then
    local leaves = oldest()
    if leaves ~= nil then
      wait = math.max(wait, math.max(leaves + period - now, 1e-9))
    else
      wait = math.max(wait, POLL)
    end
  end
  return wait
end
"""

# The keys of one scope, the window's counts and the operations.
_BUDGET = r"""
local BASE = #CONSTANT_NAMES
local at = BASE + 1
local function arg() at = at + 1; return ARGV[at] end
local function num() return tonumber(arg()) end

local now
local given = ARGV[BASE + 1]
if given ~= '' then
  now = tonumber(given)  -- a test's fake clock
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local NS = KEYS[1]
local K = {pace = NS .. ':pace', ceil = NS .. ':ceil', seen = NS .. ':seen', flight = NS .. ':flight',
           done = NS .. ':done', granted = NS .. ':granted', alive = NS .. ':alive', seq = NS .. ':seq'}
local EDGE = 1e-3  -- the float edge of the window is checked exactly within this much of it

local function client_key(client) return NS .. ':c:' .. client end
-- A permit is "<n>:<client>", a client "<process>.<id>".
local function client_of(member) return string.match(member, ':(.*)$') end
local function process_of(client) return string.match(client, '^([^.]*)') end

local living = {}
local function alive(process)
  if living[process] == nil then
    local until_ = redis.call('ZSCORE', K.alive, process)
    living[process] = until_ and tonumber(until_) > now or false
  end
  return living[process]
end

local function keep(key) redis.call('PEXPIRE', key, math.floor(KEEP * 1000)) end

local function load_state()
  local values = redis.call('HMGET', K.pace, unpack(FIELDS))
  local s = new_state()
  if values[1] then
    for i, f in ipairs(FIELDS) do s[f] = tonumber(values[i]) end
  end
  return s
end

local function save_state(s)
  local pairs_ = {}
  for _, f in ipairs(FIELDS) do pairs_[#pairs_ + 1] = f; pairs_[#pairs_ + 1] = fmt(s[f]) end
  redis.call('HSET', K.pace, unpack(pairs_))
  keep(K.pace)
end

-- A permit completed at `done` (answered, failed, abandoned, its lease ran out, or its
-- process died): it counts one more period from then.
local function settle(member, done)
  if redis.call('ZREM', K.flight, member) == 1 then
    redis.call('ZADD', K.done, fmt(done), member)
    local key = client_key(client_of(member))
    redis.call('ZADD', key, fmt(done), member)
    keep(key)
  end
end

-- Not expired: done + period > now, or done > now - period (as ratelimit._expired).
local function counted(done, period) return done + period > now or done > now - period end

-- Completed permits of `key` in the window (its in-flight ones score +inf, so count too).
local function in_window(key, period)
  local edge = now - period
  local n = redis.call('ZCOUNT', key, '(' .. fmt(edge), '+inf')
  local near = redis.call('ZRANGEBYSCORE', key, fmt(edge - EDGE), fmt(edge), 'WITHSCORES')
  for i = 2, #near, 2 do
    if counted(tonumber(near[i]), period) then n = n + 1 end
  end
  return n
end

local function oldest(period)
  local edge = now - period
  local near = redis.call('ZRANGEBYSCORE', K.done, fmt(edge - EDGE), fmt(edge), 'WITHSCORES')
  for i = 2, #near, 2 do
    local done = tonumber(near[i])
    if counted(done, period) then return done end
  end
  local first = redis.call('ZRANGEBYSCORE', K.done, '(' .. fmt(edge), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return nil end
  return tonumber(first[2])
end

-- Permits a call took but its caller never heard of (the answer was lost: a timeout) are
-- unused: given back like the stash.
local function give_back(client, numbers)
  local mine = client_key(client)
  for n in string.gmatch(numbers, '(%d+)') do
    local member = n .. ':' .. client
    if redis.call('ZREM', K.flight, member) == 1 then
      redis.call('ZREM', mine, member)
      redis.call('ZREM', K.granted, member)
    end
  end
end

-- What every call does first: this process lives; the permits this client finished
-- ("<n>:<age>,...": completed <age> seconds ago), gave back unused ("<n>,...") and took in
-- calls whose answer it lost ("<call>,..."); the leases that ran out and the permits of
-- dead processes; what left the window.
local function tidy(client, period)
  local process = process_of(client)
  redis.call('ZADD', K.alive, fmt(now + ALIVE), process)
  living[process] = true
  for n, age in string.gmatch(arg(), '(%d+):([^,]+)') do
    settle(n .. ':' .. client, math.min(now, now - tonumber(age)))
  end
  give_back(client, arg())
  local calls = NS .. ':calls:' .. client
  for call in string.gmatch(arg(), '(%w+)') do
    local numbers = redis.call('HGET', calls, call)
    if numbers then give_back(client, numbers); redis.call('HDEL', calls, call) end
  end
  local mine = client_key(client)
  local expired = redis.call('ZRANGEBYSCORE', K.flight, '-inf', '(' .. fmt(now), 'WITHSCORES')
  for i = 1, #expired, 2 do settle(expired[i], tonumber(expired[i + 1])) end
  for _, member in ipairs(redis.call('ZRANGE', K.flight, 0, -1)) do
    if not alive(process_of(client_of(member))) then settle(member, now) end
  end
  local gone = now - math.max(period, MINUTE) - 1.0
  redis.call('ZREMRANGEBYSCORE', K.done, '-inf', fmt(gone))
  redis.call('ZREMRANGEBYSCORE', mine, '-inf', fmt(gone))
  redis.call('ZREMRANGEBYSCORE', K.granted, '-inf', fmt(now - MINUTE))
  redis.call('ZREMRANGEBYSCORE', K.alive, '-inf', fmt(now - KEEP))
  local idle = redis.call('ZRANGEBYSCORE', K.seen, '-inf', fmt(now - KEEP))
  for _, other in ipairs(idle) do
    redis.call('ZREM', K.seen, other)
    redis.call('HDEL', K.ceil, other)
  end
  for _, key in ipairs({K.alive, K.flight, K.done, K.granted, K.seen, K.ceil, K.seq, mine}) do keep(key) end
end

-- The scope's active clients: {client, ceiling} pairs, and the largest ceiling.
local function active(me)
  local list, largest = {}, nil
  for _, client in ipairs(redis.call('ZRANGEBYSCORE', K.seen, '(' .. fmt(now - ACTIVE), '+inf')) do
    if client == me or alive(process_of(client)) then
      local ceiling = tonumber(redis.call('HGET', K.ceil, client))
      if ceiling ~= nil then
        list[#list + 1] = {client, ceiling}
        if largest == nil or ceiling > largest then largest = ceiling end
      end
    end
  end
  return list, largest
end

local function window(period)
  return redis.call('ZCARD', K.flight) + in_window(K.done, period)
end

local op = arg()

if op == 'grant' then
  local client = arg()
  local ceiling, limit, period, want = num(), num(), num(), num()
  local p = {tat = num(), seen_decrease = num(), credit = num()}
  local call = arg()
  tidy(client, period)
  redis.call('HSET', K.ceil, client, fmt(ceiling))
  redis.call('ZADD', K.seen, fmt(now), client)
  local s = load_state()
  local clients, largest = active(client)
  local share = fair_shares(current(s, now, largest, period), clients)[client]
  local scope_count = window(period)
  local mine = in_window(client_key(client), period)
  local granted = {}
  local wait = 0.0
  while #granted < want do
    wait = grant_wait(s, p, now, share, period, scope_count, mine, limit, largest,
                      function() return oldest(period) end)
    if wait > 0 then break end
    grant(s, now, largest, period)
    pace_grant(p, now, share)
    local n = redis.call('INCR', K.seq)
    local member = n .. ':' .. client
    redis.call('ZADD', K.flight, fmt(now + LEASE), member)
    redis.call('ZADD', client_key(client), '+inf', member)
    redis.call('ZADD', K.granted, fmt(now), member)
    granted[#granted + 1] = tostring(n)
    scope_count = scope_count + 1
    mine = mine + 1
  end
  -- The permits of this call, in case its answer is lost on its way (the next call then
  -- gives them back); a client's grants come one at a time, so the answers of earlier
  -- calls were heard. A call sent again (a retry on a new connection) adds to its own.
  local calls = NS .. ':calls:' .. client
  local before = redis.call('HGET', calls, call)
  redis.call('DEL', calls)
  local granted_text = before or ''
  if #granted > 0 then
    save_state(s)
    if granted_text ~= '' then granted_text = granted_text .. ',' end
    granted_text = granted_text .. table.concat(granted, ',')
  end
  if granted_text ~= '' then
    redis.call('HSET', calls, call, granted_text)
    keep(calls)
  end
  local reply = {fmt(now), fmt(wait), fmt(share), fmt(fair_shares(largest, clients)[client]), tostring(#clients),
                 fmt(p.tat), fmt(p.seen_decrease), tostring(p.credit)}
  for _, n in ipairs(granted) do reply[#reply + 1] = n end
  return reply
end

if op == 'sync' then
  tidy(arg(), num())
  return {fmt(now)}
end

if op == 'pause' then
  local client = arg()
  local period, seconds = num(), num()
  tidy(client, period)
  local s = load_state()
  pause(s, now, seconds)
  save_state(s)
  return {fmt(now)}
end

if op == 'throttled' then
  local client = arg()
  local limit, period = num(), num()
  local age = arg()
  tidy(client, period)
  local s = load_state()
  local _, largest = active(nil)
  local granted_at = nil
  if age ~= '' then granted_at = now - tonumber(age) end
  local decreased = throttled(s, now, granted_at, window(period), largest or limit / period, period)
  save_state(s)
  return {fmt(now), decreased and '1' or '0'}
end

if op == 'counts' then
  local client = arg()
  local limit, period = num(), num()
  tidy(client, period)
  local s = load_state()
  local clients, largest = active(client)
  local listed = false
  for _, pair in ipairs(clients) do listed = listed or pair[1] == client end
  if not listed then
    clients[#clients + 1] = {client, limit / period}
    if largest == nil or limit / period > largest then largest = limit / period end
  end
  local share = fair_shares(current(s, now, largest, period), clients)[client]
  local used = redis.call('ZCOUNT', K.granted, '(' .. fmt(now - MINUTE), '+inf')
  return {fmt(now), tostring(window(period)), tostring(used), fmt(share), fmt(fair_shares(largest, clients)[client]),
          fmt(s.not_before), tostring(#clients)}
end

if op == 'leave' then
  local client = arg()
  tidy(client, num())
  redis.call('ZREM', K.seen, client)
  redis.call('HDEL', K.ceil, client)
  return {fmt(now)}
end

-- Claims: "<namespace>:claim:<hash of the key>" holds "<owner> <process>" until it expires;
-- "<namespace>:owned:<owner>" the hashes an owner holds.
if op == 'alive' then
  redis.call('ZADD', K.alive, fmt(now + ALIVE), arg())
  keep(K.alive)
  return {fmt(now)}
end

local function holder(key)
  local value = redis.call('GET', key)
  if not value then return nil end
  local owner, process = string.match(value, '^(%S+) (%S+)$')
  if owner == nil or not alive(process) then return nil end
  return owner
end

if op == 'claim' then
  local key, owner, process, ms = NS .. ':claim:' .. arg(), arg(), arg(), num()
  redis.call('ZADD', K.alive, fmt(now + ALIVE), process)
  living[process] = true
  keep(K.alive)
  local held = holder(key)
  if held ~= nil and held ~= owner then return {fmt(now), '0'} end
  redis.call('SET', key, owner .. ' ' .. process, 'PX', ms)
  local owned = NS .. ':owned:' .. owner
  redis.call('SADD', owned, key)
  redis.call('PEXPIRE', owned, math.max(ms, math.floor(KEEP * 1000)))
  return {fmt(now), '1'}
end

if op == 'release' then
  local key, owner = NS .. ':claim:' .. arg(), arg()
  local value = redis.call('GET', key)
  if value and (owner == '' or string.match(value, '^(%S+) ') == owner) then
    redis.call('DEL', key)
  end
  return {fmt(now)}
end

if op == 'release_owner' then
  local owner = arg()
  local owned = NS .. ':owned:' .. owner
  local count = 0
  for _, key in ipairs(redis.call('SMEMBERS', owned)) do
    local value = redis.call('GET', key)
    if value and string.match(value, '^(%S+) ') == owner then
      redis.call('DEL', key)
      count = count + 1
    end
  end
  redis.call('DEL', owned)
  return {fmt(now), tostring(count)}
end

if op == 'is_claimed' then
  return {fmt(now), holder(NS .. ':claim:' .. arg()) ~= nil and '1' or '0'}
end

-- Probes: the arithmetic alone, on given states and times (no key is read or written).
local function read_state()
  local s = new_state()
  for _, f in ipairs(FIELDS) do s[f] = num() end
  return s
end

local function state_reply(s, ...)
  local reply = {}
  for _, f in ipairs(FIELDS) do reply[#reply + 1] = fmt(s[f]) end
  for _, extra in ipairs({...}) do reply[#reply + 1] = extra end
  return reply
end

if op == 'probe_fair_shares' then
  local total, count = num(), num()
  local ceilings = {}
  for i = 1, count do ceilings[i] = {tostring(i), num()} end
  local shares = fair_shares(total, ceilings)
  local reply = {}
  for i = 1, count do reply[i] = fmt(shares[tostring(i)]) end
  return reply
end

if op == 'probe_state' then
  local s = read_state()
  local what, at_, ceiling, period = arg(), num(), num(), num()
  if what == 'current' then return state_reply(s, fmt(current(s, at_, ceiling, period))) end
  if what == 'grant' then grant(s, at_, ceiling, period); return state_reply(s) end
  if what == 'restart' then restart(s, at_, ceiling, period); return state_reply(s) end
  if what == 'pause' then pause(s, at_, ceiling); return state_reply(s) end
  if what == 'throttled' then
    local granted_at, count = arg(), num()
    if granted_at == '' then granted_at = nil else granted_at = tonumber(granted_at) end
    return state_reply(s, throttled(s, at_, granted_at, count, ceiling, period) and '1' or '0')
  end
  return redis.error_reply('unknown probe ' .. what)
end

if op == 'probe_pace' then
  local p = {tat = num(), seen_decrease = num(), credit = num()}
  local at_, share, period = num(), num(), num()
  pace_grant(p, at_, share)
  return {fmt(p.tat), tostring(p.credit), tostring(burst(share, period))}
end

if op == 'probe_grant_wait' then
  local s = read_state()
  local p = {tat = num(), seen_decrease = num(), credit = num()}
  local at_, share, period, count, mine, limit, ceiling = num(), num(), num(), num(), num(), num(), num()
  local leaves = arg()
  local asked = 0
  local wait = grant_wait(s, p, at_, share, period, count, mine, limit, ceiling, function()
    asked = asked + 1
    if leaves == '' then return nil end
    return tonumber(leaves)
  end)
  return {fmt(wait), fmt(p.tat), fmt(p.seen_decrease), tostring(p.credit), tostring(asked)}
end

return redis.error_reply('unknown operation ' .. tostring(op))
"""

_NAMES = "local CONSTANT_NAMES = {" + ", ".join(f"'{name}'" for name, _ in CONSTANTS) + "}"

#: The whole script: the constants read from the arguments, the arithmetic, the operations.
SCRIPT = "\n".join([_HEADER, _NAMES, _ARITHMETIC, _BUDGET])
