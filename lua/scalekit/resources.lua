--- Resource methods: `sk.organizations:get("org_1")` and the like, for every
--- operation of the API.
--
-- MAP below is the whole surface, one line per operation: resource → method →
-- { operationId, positional parameter names… }. A method takes those positional
-- ids first, then one optional table for the rest:
--   * keys that are query parameters of the operation go to the query string;
--   * for operations with a JSON body, every other key is a body field (or pass the
--     whole body as `body = {…}`);
--   * `list_field` methods also accept a plain list as that table
--     (`sk.roles:add_permissions("admin", {"read"})` → `{permission_names = {"read"}}`).
-- Paged list methods get iterators beside them: `list` → `each`, `pages`, `all`;
-- `list_users` → `each_users`, `pages_users`, `all_users`; `search` → `each_search`…
-- README's method reference and types/scalekit.lua are generated from MAP
-- (`make docs`), and spec/resources_spec.lua checks MAP covers every operation once.
local operations = require "scalekit.operations"
local errors = require "scalekit.errors"

local _M = {}

local type = type
local pairs = pairs
local error = error
local select = select
local setmetatable = setmetatable

-- Verbs users reach for that the API calls otherwise.
local SYNONYMS = {
  fetch = "get", retrieve = "get", read = "get", find = "get", show = "get",
  remove = "delete", destroy = "delete", del = "delete",
  new = "create", add = "create", insert = "create",
  edit = "update", modify = "update", patch = "update", set = "update",
  all = "list", index = "list", iter = "each", iterate = "each",
}

local MAP = {
  organizations = {
    list = { "OrganizationService_ListOrganization" },
    create = { "OrganizationService_CreateOrganization" },
    get = { "OrganizationService_GetOrganization", "id" },
    get_by_external_id = { "OrganizationService_GetOrganizationByExternalId", "external_id" },
    update = { "OrganizationService_UpdateOrganization", "id" },
    delete = { "OrganizationService_DeleteOrganization", "id" },
    generate_portal_link = { "OrganizationService_GeneratePortalLink", "id" },
    update_settings = { "OrganizationService_UpdateOrganizationSettings", "id" },
    get_session_policy = { "OrganizationService_GetOrganizationSessionPolicy", "organization_id" },
    update_session_policy = { "OrganizationService_UpdateOrganizationSessionPolicy", "organization_id" },
    update_user_management_settings = { "OrganizationService_UpsertUserManagementSettings", "organization_id" },
  },
  connections = {
    list = { "ConnectionService_ListConnections" },
    get = { "ConnectionService_GetConnection", "organization_id", "id" },
    delete = { "ConnectionService_DeleteConnection", "organization_id", "id" },
    enable = { "ConnectionService_EnableConnection", "organization_id", "id" },
    disable = { "ConnectionService_DisableConnection", "organization_id", "id" },
  },
  domains = {
    list = { "DomainService_ListDomains", "organization_id" },
    create = { "DomainService_CreateDomain", "organization_id" },
    get = { "DomainService_GetDomain", "organization_id", "id" },
    delete = { "DomainService_DeleteDomain", "organization_id", "id" },
  },
  directories = {
    list = { "DirectoryService_ListDirectories", "organization_id" },
    get = { "DirectoryService_GetDirectory", "organization_id", "id" },
    enable = { "DirectoryService_EnableDirectory", "organization_id", "id" },
    disable = { "DirectoryService_DisableDirectory", "organization_id", "id" },
    list_users = { "DirectoryService_ListDirectoryUsers", "organization_id", "directory_id" },
    list_groups = { "DirectoryService_ListDirectoryGroups", "organization_id", "directory_id" },
  },
  users = {
    list = { "UserService_ListUsers" },
    search = { "UserService_SearchUsers" },
    get = { "UserService_GetUser", "id" },
    get_by_external_id = { "UserService_GetUser2", "external_id" },
    update = { "UserService_UpdateUser", "id" },
    update_by_external_id = { "UserService_UpdateUser2", "external_id" },
    delete = { "UserService_DeleteUser", "id" },
    delete_by_external_id = { "UserService_DeleteUser2", "external_id" },
    create = { "UserService_CreateUserAndMembership", "organization_id" },
    list_by_organization = { "UserService_ListOrganizationUsers", "organization_id" },
    search_in_organization = { "UserService_SearchOrganizationUsers", "organization_id" },
    list_roles = { "UserService_ListUserRoles", "organization_id", "user_id" },
    list_permissions = { "UserService_ListUserPermissions", "organization_id", "user_id" },
    resend_invite = { "UserService_ResendInvite", "organization_id", "id" },
  },
  memberships = {
    create = { "UserService_CreateMembership", "organization_id", "id" },
    update = { "UserService_UpdateMembership", "organization_id", "id" },
    delete = { "UserService_DeleteMembership", "organization_id", "id" },
    create_by_external_id = { "UserService_CreateMembership2", "organization_id", "external_id" },
    update_by_external_id = { "UserService_UpdateMembership2", "organization_id", "external_id" },
    delete_by_external_id = { "UserService_DeleteMembership2", "organization_id", "external_id" },
  },
  roles = {
    list = { "RolesService_ListRoles" },
    create = { "RolesService_CreateRole" },
    get = { "RolesService_GetRole", "role_name" },
    update = { "RolesService_UpdateRole", "role_name" },
    delete = { "RolesService_DeleteRole", "role_name" },
    list_dependents = { "RolesService_ListDependentRoles", "role_name" },
    list_permissions = { "RolesService_ListRolePermissions", "role_name" },
    list_effective_permissions = { "RolesService_ListEffectiveRolePermissions", "role_name" },
    add_permissions = { "RolesService_AddPermissionsToRole", "role_name", list_field = "permission_names" },
    remove_permission = { "RolesService_RemovePermissionFromRole", "role_name", "permission_name" },
    count_users = { "RolesService_GetRoleUsersCount", "role_name" },
    set_defaults = { "RolesService_UpdateDefaultRoles" },
    -- PATCH /api/v1/roles/default: a second route to the same update as set_defaults
    update_defaults = { "RolesService_UpdateDefaultRoles2" },
  },
  organization_roles = {
    list = { "RolesService_ListOrganizationRoles", "org_id" },
    create = { "RolesService_CreateOrganizationRole", "org_id" },
    get = { "RolesService_GetOrganizationRole", "org_id", "role_name" },
    update = { "RolesService_UpdateOrganizationRole", "org_id", "role_name" },
    delete = { "RolesService_DeleteOrganizationRole", "org_id", "role_name" },
    set_defaults = { "RolesService_UpdateDefaultOrganizationRoles", "org_id" },
  },
  permissions = {
    list = { "RolesService_ListPermissions" },
    create = { "RolesService_CreatePermission" },
    get = { "RolesService_GetPermission", "permission_name" },
    update = { "RolesService_UpdatePermission", "permission_name" },
    delete = { "RolesService_DeletePermission", "permission_name" },
  },
  sessions = {
    get = { "SessionService_GetSession", "session_id" },
    revoke = { "SessionService_RevokeSession", "session_id" },
    list_by_user = { "SessionService_GetUserSessions", "user_id" },
    revoke_all = { "SessionService_RevokeAllUserSessions", "user_id" },
  },
  passwordless = {
    send = { "PasswordlessService_SendPasswordlessEmail" },
    verify = { "PasswordlessService_VerifyPasswordlessEmail" },
    resend = { "PasswordlessService_ResendPasswordlessEmail" },
  },
  webauthn = {
    list = { "WebAuthnService_ListCredentials" },
    update = { "WebAuthnService_UpdateCredential", "credential_id" },
    delete = { "WebAuthnService_DeleteCredential", "credential_id" },
  },
  clients = {
    list = { "ClientService_ListOrganizationClients", "organization_id" },
    create = { "ClientService_CreateOrganizationClient", "organization_id" },
    get = { "ClientService_GetOrganizationClient", "organization_id", "client_id" },
    update = { "ClientService_UpdateOrganizationClient", "organization_id", "client_id" },
    delete = { "ClientService_DeleteOrganizationClient", "organization_id", "client_id" },
    create_secret = { "ClientService_CreateOrganizationClientSecret", "organization_id", "client_id" },
    delete_secret = { "ClientService_DeleteOrganizationClientSecret", "organization_id", "client_id", "secret_id" },
  },
  connected_accounts = {
    list = { "ConnectedAccountService_ListConnectedAccounts" },
    search = { "ConnectedAccountService_SearchConnectedAccounts" },
    create = { "ConnectedAccountService_CreateConnectedAccount" },
    update = { "ConnectedAccountService_UpdateConnectedAccount" },
    delete = { "ConnectedAccountService_DeleteConnectedAccount" },
    get_auth = { "ConnectedAccountService_GetConnectedAccountAuth" },
    get_details = { "ConnectedAccountService_GetConnectedAccountDetails" },
    get_magic_link = { "ConnectedAccountService_GetMagicLinkForConnectedAccount" },
    verify_user = { "ConnectedAccountService_VerifyConnectedAccountUser" },
  },
  tools = {
    list = { "ToolService_ListTools" },
    list_available = { "ToolService_ListAvailableTools" },
    list_scoped = { "ToolService_ListScopedTools" },
    execute = { "ToolService_ExecuteTool" },
  },
  mcp = {
    list = { "McpService_ListMcpConfigs" },
    create = { "McpService_CreateMcpConfig" },
    get = { "McpService_GetMcpConfig", "config_id" },
    update = { "McpService_UpdateMcpConfig", "config_id" },
    delete = { "McpService_DeleteMcpConfig", "config_id" },
    list_connected_accounts = { "McpService_ListMcpConnectedAccounts", "config_id" },
    create_session_token = { "McpService_CreateMcpSessionToken", "mcp_config_id" },
  },
  providers = {
    create = { "ProviderService_CreateCustomProvider" },
    update = { "ProviderService_UpdateCustomProvider", "identifier" },
    delete = { "ProviderService_DeleteCustomProvider", "identifier" },
  },
  auth_logs = {
    list = { "AuditLogsService_ListAuthRequests" },
  },
}
_M.MAP = MAP

--- Names of the iterators derived from paged method `name`: list → each, pages, all;
--- list_users → each_users, …; search → each_search, ….
---@param name string
---@return string each, string pages, string all
function _M.iterator_names(name)
  if name == "list" then return "each", "pages", "all" end
  local rest = name:gsub("^list_", "")
  return "each_" .. rest, "pages_" .. rest, "all_" .. rest
end

local function is_sequence(t)
  return t[1] ~= nil
end

local function misuse(where, msg)
  errors.misuse("%s: %s", where, msg)
end

-- Turn (positional ids…, rest) into the params table of sk:call.
local function to_params(where, spec, op, path_set, n, ...)
  local npos = #spec - 1
  local params = {}
  local first = ...
  local rest
  if npos > 0 and n == 1 and type(first) == "table" then
    -- named form: sk.organizations:get{ id = "org_1" }
    rest = first
  else
    if n > npos + 1 then misuse(where, "too many arguments (" .. npos .. " ids and one table at most)") end
    for i = 1, npos do
      local v = select(i, ...)
      if v == nil then misuse(where, "missing argument #" .. i .. " (" .. spec[i + 1] .. ")") end
      params[spec[i + 1]] = v
    end
    rest = select(npos + 1, ...)
  end
  if rest == nil then return params end
  if type(rest) ~= "table" then
    misuse(where, "last argument must be a table, got " .. type(rest))
  end
  if spec.list_field and is_sequence(rest) then
    params.body = { [spec.list_field] = rest }
    return params
  end
  local body
  for k, v in pairs(rest) do
    if k == "body" or op.query[k] or params[k] ~= nil then
      params[k] = v
    elseif op.body and not path_set[k] then
      body = body or {}
      body[k] = v
    else
      params[k] = v -- a path param by name, or an unknown key: sk:call names it
    end
  end
  if body then
    if params.body ~= nil then misuse(where, "give body fields either loose or under 'body', not both") end
    params.body = body
  end
  return params
end

-- The client behind a resource object; a call made with '.' instead of ':' passes
-- the first argument as `self`, which is named here rather than failing deep inside.
local function client_of(self, resource, name)
  local client = type(self) == "table" and rawget(self, "_client")
  if not client then
    errors.misuse("sk.%s.%s(...) was called with '.'; call it as sk.%s:%s(...)", resource, name, resource, name)
  end
  return client
end

local function make_method(resource, name, spec)
  local op_id = spec[1]
  local op = operations[op_id]
  if not op then error("scalekit.resources: " .. resource .. "." .. name .. " maps to unknown " .. op_id) end
  local path_set = {}
  for i = 1, #op.path_params do path_set[op.path_params[i]] = true end
  local where = resource .. ":" .. name
  local function params_of(...)
    return to_params(where, spec, op, path_set, select("#", ...), ...)
  end
  local methods = {}
  methods[name] = function(self, ...)
    return client_of(self, resource, name):call(op_id, params_of(...))
  end
  if name == "get" then
    -- many gets at once: sk.organizations:get_many({ "org_1", "org_2" }, opts) (sk:batch)
    methods.get_many = function(self, ids, opts)
      return client_of(self, resource, "get_many"):get_many(resource, ids, opts)
    end
  end
  if op.paging and op.items then
    local each, pages, all = _M.iterator_names(name)
    methods[each] = function(self, ...)
      return client_of(self, resource, each):each(op_id, params_of(...))
    end
    methods[pages] = function(self, ...)
      return client_of(self, resource, pages):pages(op_id, params_of(...))
    end
    methods[all] = function(self, ...)
      local client = client_of(self, resource, all)
      local n = select("#", ...)
      local opts
      if n > 0 then
        -- all(ids…, params, opts): the last table after the params is the options
        local last = select(n, ...)
        if n == #spec + 1 and type(last) == "table" then
          opts = last
          n = n - 1
        end
      end
      return client:all(op_id, to_params(where, spec, op, path_set, n, ...), opts)
    end
  end
  return methods
end

-- Method tables, built once per resource on first use.
local classes = {}

local function class_of(resource)
  local cls = classes[resource]
  if cls then return cls end
  local entries = MAP[resource]
  if not entries then return nil end
  cls = {}
  for name, spec in pairs(entries) do
    for k, fn in pairs(make_method(resource, name, spec)) do cls[k] = fn end
  end
  cls.__index = function(_, k)
    local m = rawget(cls, k)
    if m ~= nil or type(k) ~= "string" or k:sub(1, 1) == "_" then return m end
    local names = {}
    for n, v in pairs(cls) do
      if type(v) == "function" and n:sub(1, 2) ~= "__" then names[#names + 1] = n end
    end
    local hint = SYNONYMS[k] and rawget(cls, SYNONYMS[k]) and " (did you mean '" .. SYNONYMS[k] .. "'?)"
      or errors.did_you_mean(k, names)
    errors.misuse("%s has no method '%s'%s", resource, k, hint)
  end
  cls.__tostring = function() return "scalekit resource " .. resource end
  classes[resource] = cls
  return cls
end

--- Names of every resource, sorted (for did-you-mean hints).
function _M.names()
  local out = {}
  for k in pairs(MAP) do out[#out + 1] = k end
  table.sort(out)
  return out
end

--- The resource object `name` bound to `client`, or nil if there is no such resource.
---@param client scalekit.Client
---@param name string
function _M.bind(client, name)
  if type(name) ~= "string" then return nil end
  local cls = class_of(name)
  if not cls then return nil end
  return setmetatable({ _client = client }, cls)
end

return _M
