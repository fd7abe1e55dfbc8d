-- Argo CD health check for smartregion.toscana.it/SmartRegionTenant.
--
-- Reads only what smartregion-operator writes: status.observedGeneration, status.phase
-- and the conditions Ready, NamespaceReady, DatabaseReady, WithinQuota, IngestReady and
-- ExposureReady.
-- Uses only Lua 5.1's base library (no string, no os), so it runs as an argocd-cm
-- customization without useOpenLibs. docs/argocd.md has the full table.
local hs = {}

-- Reasons with which a tenant that is not Ready yet is still on its way by itself (the
-- operator marks them pending: Normal Events, never Degraded). Every other reason on a
-- Provisioning tenant is a failure that needs someone to act.
local waiting = {
  Progressing = true,
  WaitingForNamespace = true,
  WaitingForDatabase = true,
  WaitingForMqttCredentials = true,
  WaitingForGateway = true,
}

local function find_condition(conditions, type_)
  for _, condition in ipairs(conditions) do
    if condition.type == type_ then
      return condition
    end
  end
  return nil
end

-- "<part>: <reason>: <message>", naming the part whose failure the Ready condition
-- reports (the operator copies that part's reason and message into Ready).
local function describe(conditions, ready)
  local reason = ready.reason or "Unknown"
  local message = ready.message or ""
  local part = "Ready"
  for _, condition in ipairs(conditions) do
    if condition.type ~= "Ready" and condition.status == "False"
        and condition.reason == reason and condition.message == message then
      part = condition.type
      break
    end
  end
  return part .. ": " .. reason .. ": " .. message
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for smartregion-operator to report the tenant's status"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for smartregion-operator to reconcile generation " .. generation
    .. " (the status describes generation " .. (observed or "none") .. ")"
  return hs
end

local conditions = status.conditions or {}
local ready = find_condition(conditions, "Ready") or {}
local phase = status.phase

if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = ready.message or "every part of the tenant is ready"
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = ready.message or "spec.suspended is true"
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = describe(conditions, ready)
elseif phase == "Provisioning" then
  if ready.reason == nil or waiting[ready.reason] then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = describe(conditions, ready)
elseif phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Waiting for smartregion-operator to start provisioning"
elseif phase == "Terminating" then
  -- Argo CD itself reports an object with a deletionTimestamp as "Pending deletion"
  -- before it runs any health check; this is for other readers of the script.
  if ready.reason == "DeletionNotConfirmed" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = describe(conditions, ready)
else
  hs.status = "Unknown"
  hs.message = "phase " .. phase .. " is not known to this health check"
end
return hs
