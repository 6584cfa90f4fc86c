-- Argo CD health of a lifeboat.dev BackupPolicy: Healthy while its newest backups are good,
-- Degraded when backups fail or a Secret is missing, Progressing until the operator has seen
-- the current spec. The RPO objective is reported in the message (RPOMet), not as Degraded:
-- a missed objective pages through the alert rules, it is not a sync problem.
local hs = { status = "Progressing", message = "waiting for the Lifeboat operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and (obj.status.observedGeneration or 0) < obj.metadata.generation then
  hs.message = "the operator has not observed this spec yet"
  return hs
end
local rpo = ""
for _, c in ipairs(obj.status.conditions) do
  if c.type == "RPOMet" and c.status == "False" then
    rpo = " (RPO: " .. (c.message or c.reason) .. ")"
  end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    else
      hs.status = "Degraded"
    end
    hs.message = c.reason .. ": " .. (c.message or "") .. rpo
  end
end
return hs
