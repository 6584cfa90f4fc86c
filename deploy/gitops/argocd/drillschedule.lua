-- Argo CD health of a lifeboat.dev DrillSchedule: Healthy while the last drill passed (or none is
-- due yet), Degraded when it failed or missed its RTO/RPO objective, Progressing while the
-- operator has not observed the current spec.
local hs = { status = "Progressing", message = "waiting for the Lifeboat operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and (obj.status.observedGeneration or 0) < obj.metadata.generation then
  hs.message = "the operator has not observed this spec yet"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    else
      hs.status = "Degraded"
    end
    hs.message = c.reason .. ": " .. (c.message or "")
  end
end
return hs
