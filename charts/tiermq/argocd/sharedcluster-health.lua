-- Argo CD health check for tiermq.io SharedCluster (argocd-cm key
-- resource.customizations.health.tiermq.io_SharedCluster). A spec the operator has not observed
-- yet or Reconciling (brokers not all ready) -> Progressing; Stalled or Degraded -> Degraded;
-- Ready -> Healthy.
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

local function says(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or ""
end

if obj.status == nil then
  return { status = "Progressing", message = "waiting for the operator's first status" }
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  return { status = "Progressing", message = "the operator has not observed generation " .. generation .. " yet" }
end
for _, type in ipairs({ "Stalled", "Degraded" }) do
  local c = condition(type)
  if c ~= nil and c.status == "True" then
    return { status = "Degraded", message = type .. " " .. says(c) }
  end
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = says(ready) }
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return { status = "Progressing", message = says(reconciling) }
end
if ready == nil then
  return { status = "Progressing", message = "waiting for the Ready condition" }
end
return { status = "Progressing", message = says(ready) }
