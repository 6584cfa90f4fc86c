-- Argo CD health of a lifeboat.dev RestoreRequest, from its phase: a plan waiting for
-- `execute: true` is Suspended, a restore under way Progressing, Succeeded Healthy, and Failed or
-- RolledBack Degraded (a rollback put the old data back: the restore still did not happen).
local hs = { status = "Progressing", message = "waiting for the Lifeboat operator" }
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local phase = obj.status.phase
local reason = ""
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      reason = c.reason .. ": " .. (c.message or "")
    end
  end
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "restored and validated in " .. (obj.status.rto or "?")
elseif phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. reason
elseif phase == "Planned" then
  hs.status = "Suspended"
  hs.message = "plan ready; set spec.execute to true to restore"
else
  hs.message = phase .. " " .. reason
end
return hs
