-- Login with Scalekit end to end against the fake (authorize → code → tokens →
-- validation → logout), PKCE, refresh, JWKS caching and rate limiting, and the
-- client's webhook methods. Tokens for the reject cases are signed by the openssl CLI.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local proc = require "spec.support.proc"
local scalekit = require "scalekit"
local errors = require "scalekit.errors"

local REDIRECT = "https://app.example.com/auth/callback?x=1"

local function shell(cmd) return (proc.run(cmd)) end
local parse_query, url_query = helpers.parse_query, helpers.url_query

-- GET without following redirects: the Location header
local function location_of(url)
  return shell("curl -s -o /dev/null -w '%{redirect_url}' " .. proc.quote(url))
end

describe("auth helpers", function()
  local sk
  local srv = server.for_suite(setup, teardown, { workers = 1, oidc = true })
  setup(function() sk = helpers.new_client(srv) end)
  teardown(function() if sk then sk:close() end end)

  describe("authorization_url", function()
    it("carries every parameter, percent-encoded", function()
      local url = sk:authorization_url(REDIRECT, {
        state = "s t&a=te", nonce = "n/1", organization_id = "org_1", connection_id = "conn_1",
        domain_hint = "acme.com", login_hint = "a+b@acme.com", provider = "google",
        prompt = "login", code_challenge = "abc-_", code_challenge_method = "S256",
      })
      local base, q = url:match("^([^?]+)%?(.*)$")
      assert.equal(srv.url .. "/oauth/authorize", base)
      assert.is_nil(q:find("[^%w%-%._~%%=&]"), "unencoded character in " .. q)
      local p = parse_query(q)
      assert.same({
        response_type = "code", client_id = helpers.CLIENT_ID, redirect_uri = REDIRECT,
        scope = "openid profile email", state = "s t&a=te", nonce = "n/1",
        organization_id = "org_1", connection_id = "conn_1", domain_hint = "acme.com",
        login_hint = "a+b@acme.com", provider = "google", prompt = "login",
        code_challenge = "abc-_", code_challenge_method = "S256",
      }, p)
    end)

    it("takes scopes as a list and leaves out what is not given", function()
      local p = url_query(sk:authorization_url(REDIRECT, { scopes = { "openid", "offline_access" } }))
      assert.equal("openid offline_access", p.scope)
      assert.is_nil(p.state)
      assert.is_nil(p.organization_id)
    end)

    it("raises on misuse", function()
      assert.has_error(function() sk:authorization_url(nil) end,
        "scalekit: authorization_url: redirect_uri must be a non-empty string")
      assert.has_error(function() sk:authorization_url(REDIRECT, { orgnization_id = "x" }) end,
        "scalekit: authorization_url: unknown option 'orgnization_id'")
      assert.has_error(function() sk:authorization_url(REDIRECT, { state = 1 }) end,
        "scalekit: authorization_url: option 'state' must be a string")
    end)
  end)

  describe("pkce and random strings", function()
    it("makes an S256 pair that openssl agrees with", function()
      local verifier, challenge, method = scalekit.pkce()
      assert.equal("S256", method)
      assert.equal(43, #verifier)
      assert.is_nil(verifier:find("[^%w%-_]"))
      local expect = shell("printf %s '" .. verifier .. "' | openssl dgst -sha256 -binary | openssl base64 -A")
        :gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" })
      assert.equal(expect, challenge)
    end)

    it("never repeats a state", function()
      local seen = {}
      for _ = 1, 200 do
        local s = scalekit.random_string()
        assert.is_nil(seen[s])
        assert.equal(43, #s)
        seen[s] = true
      end
      assert.equal(22, #scalekit.random_string(16))
    end)
  end)

  describe("login end to end", function()
    it("authorize → code → authenticate_with_code → validate_access_token → logout", function()
      local state, nonce = scalekit.random_string(), scalekit.random_string()
      local url = sk:authorization_url(REDIRECT, { state = state, nonce = nonce, login_hint = "jo@acme.com",
                                                   organization_id = "org_7" })
      local back = location_of(url)
      assert.truthy(back:find(REDIRECT, 1, true) == 1, back)
      local p = url_query(back)
      assert.equal(state, p.state)
      assert.is_string(p.code)

      local res, err = sk:authenticate_with_code(p.code, REDIRECT, { nonce = nonce })
      assert.is_nil(err and tostring(err))
      assert.equal("jo@acme.com", res.user.email)
      assert.equal(nonce, res.user.nonce)
      assert.equal("org_7", res.user.oid)
      assert.equal(srv.url, res.user.iss)
      assert.is_string(res.id_token)
      assert.is_string(res.refresh_token)
      assert.is_number(res.expires_in)

      local claims, verr = sk:validate_access_token(res.access_token, {
        audience = helpers.CLIENT_ID, scopes = { "openid", "email" }, permissions = { "users:read" },
      })
      assert.is_nil(verr and tostring(verr))
      assert.equal(res.user.sub, claims.sub)

      local out = sk:logout_url{ id_token_hint = res.id_token, post_logout_redirect_uri = "https://app.example.com/bye",
                                 state = "st" }
      local lp = url_query(out)
      assert.equal(res.id_token, lp.id_token_hint)
      assert.equal(srv.url .. "/oidc/logout", out:match("^[^?]+"))
      assert.equal("https://app.example.com/bye?state=st", location_of(out))
    end)

    it("checks PKCE and refuses a wrong verifier", function()
      local verifier, challenge = scalekit.pkce()
      local function code()
        local back = location_of(sk:authorization_url(REDIRECT, { code_challenge = challenge,
                                                                 code_challenge_method = "S256" }))
        return url_query(back).code
      end
      local res, err = sk:authenticate_with_code(code(), REDIRECT, { code_verifier = scalekit.pkce() })
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal("invalid_grant", err.error_code)
      assert.equal(400, err.status)
      res, err = sk:authenticate_with_code(code(), REDIRECT, { code_verifier = verifier })
      assert.is_nil(err and tostring(err))
      assert.is_table(res.user)
    end)

    it("refuses a used code and a mismatched nonce", function()
      local back = location_of(sk:authorization_url(REDIRECT, { nonce = "good" }))
      local c = url_query(back).code
      local res, err = sk:authenticate_with_code(c, REDIRECT, { nonce = "other" })
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal("nonce_mismatch", err.error_code)
      res, err = sk:authenticate_with_code(c, REDIRECT, { nonce = "good" })
      assert.is_nil(res)
      assert.equal("invalid_grant", err.error_code)
    end)

    it("refresh_access_token rotates tokens; the old refresh token stops working", function()
      local back = location_of(sk:authorization_url(REDIRECT))
      local first = assert(sk:authenticate_with_code(url_query(back).code, REDIRECT))
      local second, err = sk:refresh_access_token(first.refresh_token)
      assert.is_nil(err and tostring(err))
      assert.not_equal(first.refresh_token, second.refresh_token)
      assert.equal(first.user.sub, second.user.sub)
      assert.truthy(sk:validate_access_token(second.access_token))
      local again
      again, err = sk:refresh_access_token(first.refresh_token)
      assert.is_nil(again)
      assert.equal("auth", err.kind)
      assert.equal("invalid_grant", err.error_code)
    end)

    it("reports wrong client credentials as auth errors without the secret", function()
      local bad = helpers.new_client(srv, { client_secret = "not-the-secret" })
      local res, err = bad:authenticate_with_code("code_x", REDIRECT)
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal("invalid_client", err.error_code)
      assert.is_nil(tostring(err):find("not-the-secret", 1, true))
      bad:close()
    end)
  end)

  describe("validate_access_token", function()
    local now = os.time()
    local function claims(over)
      local c = { iss = srv.url, sub = "usr_1", aud = { helpers.CLIENT_ID }, iat = now - 10,
                  nbf = now - 10, exp = now + 600, scope = "openid users:read",
                  permissions = { "org:read" } }
      for k, v in pairs(over or {}) do c[k] = v end
      return c
    end
    local function rejects(code, token, opts, client)
      local res, err = (client or sk):validate_access_token(token, opts)
      assert.is_nil(res)
      assert.is_true(errors.is(err, "auth"), tostring(err))
      assert.equal(code, err.error_code)
      return err
    end

    it("accepts a good token and caches the JWKS", function()
      local c = helpers.new_client(srv)
      local before = srv:stats().jwks_fetches
      for _ = 1, 20 do
        local got, err = c:validate_access_token(srv:sign_jwt(claims()), { audience = helpers.CLIENT_ID })
        assert.is_nil(err and tostring(err))
        assert.equal("usr_1", got.sub)
      end
      assert.equal(1, srv:stats().jwks_fetches - before)
      c:close()
    end)

    it("rejects expired, not-yet-valid, wrong issuer and wrong audience", function()
      rejects("token_expired", srv:sign_jwt(claims{ exp = now - 120 }))
      rejects("token_not_yet_valid", srv:sign_jwt(claims{ nbf = now + 600 }))
      rejects("issuer_mismatch", srv:sign_jwt(claims{ iss = "https://evil.example" }))
      rejects("audience_mismatch", srv:sign_jwt(claims()), { audience = "someone-else" })
    end)

    it("checks scopes and permissions", function()
      rejects("missing_scope", srv:sign_jwt(claims()), { scopes = { "users:write" } })
      rejects("missing_permission", srv:sign_jwt(claims()), { permissions = { "org:write" } })
      assert.truthy(sk:validate_access_token(srv:sign_jwt(claims()), { scopes = { "users:read" },
                                                                    permissions = { "org:read" } }))
    end)

    it("rejects alg none, HS256 made with the public key, tampering and garbage", function()
      local good = srv:sign_jwt(claims())
      local h, p = good:match("^([^.]+)%.([^.]+)%.")
      local none = srv:sign_jwt(claims(), { alg = "none", kid = srv.oidc_kid }, { raw_signature = "" })
      rejects("alg_not_allowed", none)
      -- algorithm confusion: HMAC keyed with the RSA public key's PEM
      local pem = shell("openssl pkey -in " .. srv.oidc_key .. " -pubout")
      local hs_input = srv:sign_jwt(claims(), { alg = "HS256", kid = srv.oidc_kid }, { raw_signature = "x" })
        :match("^([^.]+%.[^.]+)%.")
      proc.write_file(srv.prefix .. "/pem.txt", pem)
      local mac = shell("printf %s '" .. hs_input .. "' | openssl dgst -sha256 -mac HMAC -macopt key:\"$(cat "
        .. srv.prefix .. "/pem.txt)\" -binary | openssl base64 -A")
        :gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" })
      rejects("alg_not_allowed", hs_input .. "." .. mac)
      local other = srv:sign_jwt(claims{ sub = "usr_admin" })
      rejects("bad_signature", h .. "." .. other:match("^[^.]+%.([^.]+)%.") .. "." .. good:match("([^.]+)$"))
      rejects("token_malformed", h .. "." .. p)
      rejects("token_malformed", "not a token")
      rejects("token_malformed", nil)
      rejects("token_too_large", ("a"):rep(20000) .. ".b.c")
    end)

    it("refetches the JWKS once for an unknown kid, and rate-limits refetches", function()
      local c = helpers.new_client(srv, { jwks_refresh_interval = 0.5 })
      assert.truthy(c:validate_access_token(srv:sign_jwt(claims())))
      -- within the interval after a fetch, an unknown kid causes no refetch at all
      local before = srv:stats().jwks_fetches
      rejects("unknown_kid", srv:sign_jwt(claims(), { alg = "RS256", kid = "forged_0" }), nil, c)
      assert.equal(0, srv:stats().jwks_fetches - before)
      local forged = {}
      for i = 1, 25 do forged[i] = srv:sign_jwt(claims(), { alg = "RS256", kid = "forged_" .. i }) end
      require("scalekit.core").sleep(0.6)
      before = srv:stats().jwks_fetches
      for i = 1, 25 do rejects("unknown_kid", forged[i], nil, c) end
      assert.equal(1, srv:stats().jwks_fetches - before)
      c:close()
    end)

    it("returns the transport error when the JWKS cannot be fetched", function()
      local c = helpers.new_client(srv, { max_retries = 0 })
      srv:faults{ { match = "/keys", status = 503 } }
      local res, err = c:validate_access_token(srv:sign_jwt(claims()))
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(503, err.status)
      assert.truthy(c:validate_access_token(srv:sign_jwt(claims())))
      c:close()
    end)
  end)

  describe("webhooks through the client", function()
    it("verify the Standard Webhooks example vector and reject a tampered body", function()
      local headers = {
        ["Webhook-Id"] = "msg_p5jXN8AQM9LWM0D4loKWxJek",
        ["webhook-timestamp"] = "1614265330",
        ["WEBHOOK-SIGNATURE"] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
      }
      local secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
      local event, err = sk:verify_webhook('{"test": 2432232314}', headers, secret, { tolerance = false })
      assert.is_nil(err and tostring(err))
      assert.equal(2432232314, event.test)
      local _, err2 = sk:verify_webhook('{"test": 2432232315}', headers, secret, { tolerance = false })
      assert.equal("webhook_bad_signature", err2.error_code)
      local _, err3 = sk:verify_webhook('{"test": 2432232314}', headers, secret)
      assert.equal("webhook_timestamp_out_of_tolerance", err3.error_code)
      local payload = sk:verify_interceptor_payload('{"test": 2432232314}', headers, secret, { tolerance = false })
      assert.equal(2432232314, payload.test)
    end)
  end)
end)
