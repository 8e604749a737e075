-- Argo CD health check for tiermq.io RabbitMQInstance (argocd-cm key
-- resource.customizations.health.tiermq.io_RabbitMQInstance). Reads the operator's conditions:
-- Paused -> Suspended; a spec the operator has not observed yet, Reconciling (a conversion runs,
-- a flip is held, a cluster is being provisioned) -> Progressing; Stalled, InvalidSpec,
-- DrainTimedOut or Degraded -> Degraded; Ready -> Healthy.
local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(type)
  local c = condition(type)
  return c ~= nil and c.status == "True"
end

local function says(c)
  if c == nil then
    return ""
  end
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or ""
end

local paused_by = obj.metadata and obj.metadata.annotations and obj.metadata.annotations["tiermq.io/paused"]
if is_true("Paused") or (paused_by ~= nil and string.lower(paused_by):match("^%s*true%s*$")) then
  local c = condition("Paused")
  if c ~= nil and c.status == "True" then
    return { status = "Suspended", message = says(c) }
  end
  return { status = "Suspended", message = "reconciling is paused by the annotation tiermq.io/paused" }
end
if obj.status == nil then
  return { status = "Progressing", message = "waiting for the operator's first status" }
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  return { status = "Progressing", message = "the operator has not observed generation " .. generation .. " yet" }
end
for _, type in ipairs({ "Stalled", "InvalidSpec", "DrainTimedOut", "Degraded" }) do
  if is_true(type) then
    return { status = "Degraded", message = type .. " " .. says(condition(type)) }
  end
end
if is_true("Reconciling") then
  return { status = "Progressing", message = says(condition("Reconciling")) }
end
if is_true("Ready") then
  local served = condition("TierServed")
  if served ~= nil and served.status ~= "True" then
    return { status = "Progressing", message = says(served) }
  end
  return { status = "Healthy", message = says(condition("Ready")) }
end
local ready = condition("Ready")
if ready == nil then
  return { status = "Progressing", message = "waiting for the Ready condition" }
end
return { status = "Progressing", message = says(ready) }
