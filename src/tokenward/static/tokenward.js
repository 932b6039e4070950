// tokenward.js: the browser client for a tokenward server. One ES module, no dependencies.
//
// The access token lives only in this module's memory: never in localStorage, sessionStorage
// or a readable cookie. The refresh token is the server's HttpOnly cookie, which scripts
// cannot read. Refreshes are single-flight within a tab and across tabs (Web Locks, or a
// BroadcastChannel fallback), and tabs share each new access token over a BroadcastChannel,
// so N tabs send one refresh, not N. The channel, the lock and the marker are named after the
// server (its URL), so a page that talks to two tokenward servers never hands one's token to
// the other, nor waits on the other's refresh.
//
// A second factor: login() resolves to `{mfaRequired: true, ...}` when the server asks for a
// code; the pending sign-in's `mfa_token` stays in this module's memory (never in storage),
// and verifyMfa(code) completes it. Step-up (RFC 9470): a 401 whose challenge says
// `insufficient_user_authentication` asks the app's `onStepUp` for credentials, calls
// reauthenticate() and retries the request once.
//
// Passkeys (WebAuthn): registerPasskey() adds one to the signed-in account, loginWithPasskey()
// signs in with one and no username (the browser offers the passkeys it holds, also in the
// email field's autofill: conditional mediation), and verifyMfa(null, "webauthn") uses one as
// the second factor of a password sign-in. The server's options are WebAuthn Level 3 JSON;
// they are parsed, and the browser's answer serialized, by the browser itself where it can
// (parseCreationOptionsFromJSON, toJSON), else by the small base64url coder below.

const CHANNEL = "tokenward";
const LOCK = "tokenward-refresh";
// A non-secret marker (a time, never a token) that tells a tab waiting for the refresh lock
// that another tab has just refreshed, so it should expect the token by message.
const REFRESHED_AT = "tokenward:refreshed-at";
const PEER_WAIT_MS = 150;
const RETRY_MS = 5000;
const PROBLEM = "urn:tokenward:problem:";
// A 401 of these types answers wrong credentials (a current password, a second-factor code),
// not a refused access token: no reason to refresh, and sending them again would count a
// second failed attempt (or replay a one-time code).
const WRONG_CREDENTIALS = new Set([
  `${PROBLEM}invalid-credentials`,
  `${PROBLEM}mfa-failed`,
  `${PROBLEM}passkey-failed`,
]);
// RFC 9470: the access token is valid, but its authentication is too weak or too old.
const STEP_UP = "insufficient_user_authentication";
// The server ends a pending sign-in after this many wrong codes; the client forgets it then.
const MFA_ATTEMPTS = 5;
// How many times onStepUp is asked again after wrong credentials, per step-up.
const STEP_UP_ATTEMPTS = 3;
// A passwordless sign-in's challenge lives this long on the server unless it says otherwise
// (TOKENWARD_WEBAUTHN_CHALLENGE_TTL); a waiting conditional request renews it before then.
const PASSKEY_FLOW_SECONDS = 300;
const PASSKEY_RENEW_FRACTION = 0.9;

/** An error answer from the server: RFC 9457 problem details. */
export class TokenwardError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "TokenwardError";
    this.status = status;
    this.type = problem.type || "about:blank";
    this.title = problem.title || "";
    this.rule = problem.rule;
    this.problem = problem;
  }
}

/**
 * A request needs a stronger or more recent authentication (RFC 9470) and none was given:
 * no `onStepUp` callback, the callback gave up (returned null), or the new token still fell
 * short. `acrValues` (e.g. ["aal2"]) and `maxAge` (seconds, or null) say what is wanted:
 * call `reauthenticate()` with a password or a second-factor code, then try again.
 */
export class StepUpRequiredError extends TokenwardError {
  constructor(challenge, problem = {}) {
    super(401, {
      type: `${PROBLEM}insufficient-user-authentication`,
      title: "Insufficient user authentication",
      detail: "a stronger or more recent authentication is required",
      ...problem,
    });
    this.name = "StepUpRequiredError";
    this.acrValues = challenge.acrValues;
    this.maxAge = challenge.maxAge;
  }
}

/**
 * A passkey ceremony that did not finish in the browser; nothing was sent to the server.
 * `reason`: "cancelled" (the user closed the prompt, it timed out, or the authenticator
 * refused, e.g. user verification failed: the browser's NotAllowedError does not say which),
 * "exists" (this authenticator holds a passkey of the account already: InvalidStateError),
 * "unsupported" (no WebAuthn in this browser, or none of the server's algorithms),
 * "security" (the page's origin may not use the server's RP ID: SecurityError), "aborted"
 * (withdrawn: the caller's signal, or another ceremony of this client replaced a conditional
 * one), "failed" (anything else). `cause` is the browser's own error.
 */
export class PasskeyError extends Error {
  constructor(reason, message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "PasskeyError";
    this.reason = reason;
  }
}

const PASSKEY_ERRORS = {
  NotAllowedError: ["cancelled", "the passkey request was cancelled, timed out or not allowed"],
  AbortError: ["cancelled", "the passkey request was cancelled"],
  InvalidStateError: ["exists", "this authenticator already holds a passkey for this account"],
  NotSupportedError: ["unsupported", "this browser or authenticator cannot make this passkey"],
  SecurityError: ["security", "this page's origin may not use the server's passkeys (RP ID)"],
};

function passkeyError(error, aborted) {
  if (error instanceof PasskeyError) return error;
  if (aborted) return new PasskeyError("aborted", "the passkey request was withdrawn", error);
  const [reason, message] = PASSKEY_ERRORS[error?.name] || [
    "failed",
    `the passkey request failed: ${error?.message || error}`,
  ];
  return new PasskeyError(reason, message, error);
}

// -- WebAuthn JSON (Level 3): base64url for every binary member ------------------------------

function toBase64url(buffer) {
  const bytes = ArrayBuffer.isView(buffer)
    ? new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    : new Uint8Array(buffer);
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text) {
  const base64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

const withIds = (descriptors) =>
  Array.isArray(descriptors) ? descriptors.map((d) => ({ ...d, id: fromBase64url(d.id) })) : [];

/** PublicKeyCredentialCreationOptionsJSON -> the options navigator.credentials.create takes. */
function creationOptions(json) {
  const parse = globalThis.PublicKeyCredential?.parseCreationOptionsFromJSON;
  if (typeof parse === "function") return parse.call(globalThis.PublicKeyCredential, json);
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    user: { ...json.user, id: fromBase64url(json.user.id) },
    excludeCredentials: withIds(json.excludeCredentials),
  };
}

/** PublicKeyCredentialRequestOptionsJSON -> the options navigator.credentials.get takes. */
function requestOptions(json) {
  const parse = globalThis.PublicKeyCredential?.parseRequestOptionsFromJSON;
  if (typeof parse === "function") return parse.call(globalThis.PublicKeyCredential, json);
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    allowCredentials: withIds(json.allowCredentials),
  };
}

/** A PublicKeyCredential as RegistrationResponseJSON or AuthenticationResponseJSON. */
function credentialJson(credential) {
  if (typeof credential.toJSON === "function") return credential.toJSON();
  const answer = credential.response;
  const response = { clientDataJSON: toBase64url(answer.clientDataJSON) };
  if (answer.attestationObject) {
    response.attestationObject = toBase64url(answer.attestationObject);
    response.transports = answer.getTransports?.() || [];
    const data = answer.getAuthenticatorData?.();
    if (data) response.authenticatorData = toBase64url(data);
    const key = answer.getPublicKey?.();
    if (key) response.publicKey = toBase64url(key);
    const algorithm = answer.getPublicKeyAlgorithm?.();
    if (algorithm !== undefined) response.publicKeyAlgorithm = algorithm;
  } else {
    response.authenticatorData = toBase64url(answer.authenticatorData);
    response.signature = toBase64url(answer.signature);
    if (answer.userHandle) response.userHandle = toBase64url(answer.userHandle);
  }
  const json = {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response,
    clientExtensionResults: credential.getClientExtensionResults?.() || {},
  };
  if (credential.authenticatorAttachment) {
    json.authenticatorAttachment = credential.authenticatorAttachment;
  }
  return json;
}

/** Whether this browser can offer passkeys in a form field's autofill (conditional UI). */
async function conditionalMediationAvailable() {
  try {
    return (await globalThis.PublicKeyCredential?.isConditionalMediationAvailable?.()) === true;
  } catch {
    return false;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An auth-param of a WWW-Authenticate header: `name=token` or `name="quoted"`; a bare token
// (no "=") is a scheme and starts the next challenge.
const AUTH_PARAM = /([!#$%&'*+.^_`|~\w-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*))?/g;

/** The parameters of the `Bearer` challenge of a WWW-Authenticate header (names lowercased). */
function bearerParams(header) {
  const params = {};
  let scheme = null;
  for (const [, name, raw] of (header || "").matchAll(AUTH_PARAM)) {
    if (raw === undefined) {
      scheme = name.toLowerCase();
    } else if (scheme === "bearer") {
      const quoted = raw.startsWith('"');
      params[name.toLowerCase()] = quoted ? raw.slice(1, -1).replace(/\\(.)/g, "$1") : raw;
    }
  }
  return params;
}

function challengeOf(acrValues, maxAge) {
  return {
    acrValues: String(acrValues || "").split(/\s+/).filter(Boolean),
    maxAge: /^\d+$/.test(String(maxAge ?? "")) ? Number(maxAge) : null,
  };
}

/**
 * RFC 9470's challenge in a 401, as `{acrValues, maxAge}`, or null when it is not one. From
 * WWW-Authenticate; or, when that header is out of reach (another origin that does not expose
 * it), from tokenward's problem details, which say the same.
 */
async function stepUpChallenge(response) {
  if (response.status !== 401) return null;
  const header = response.headers.get("WWW-Authenticate");
  if (header !== null) {
    const params = bearerParams(header);
    return params.error === STEP_UP ? challengeOf(params.acr_values, params.max_age) : null;
  }
  if (!(response.headers.get("Content-Type") || "").includes("json")) return null;
  try {
    const problem = await response.clone().json();
    if (problem?.type !== `${PROBLEM}insufficient-user-authentication`) return null;
    return challengeOf(problem.acr_values, problem.max_age);
  } catch {
    return null; // not JSON after all
  }
}

/** The claims of a JWT, unverified (for display and for deciding to step up), or null. */
function unverifiedClaims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

function readMarker(key) {
  try {
    return Number(localStorage.getItem(key)) || 0;
  } catch {
    return 0; // storage disabled: tabs simply wait for messages a little longer
  }
}

function writeMarker(key, time) {
  try {
    localStorage.setItem(key, String(time));
  } catch {
    /* storage disabled */
  }
}

/**
 * A tokenward client. Events (on the client itself, an EventTarget):
 * - `signedin`: a token was obtained by login or by restoring the session (detail.how);
 * - `signedout`: logout here or in another tab (detail.where: "here" | "other-tab");
 * - `sessionended`: the server ended the session (revoked elsewhere, expired, password changed).
 * - `token`: a new access token (detail.expiresAt); for displays, not for storing it.
 * - `reauthenticated`: reauthenticate() succeeded (detail: see `authentication`).
 */
export class TokenwardClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the tokenward server, e.g. "https://auth.example.com";
   *   default: this page's origin.
   * @param {string[]} [options.tokenOrigins] other origins that may receive the access token
   *   from fetch(); the server's origin is always included. Never send it anywhere else.
   * @param {number} [options.refreshMarginSeconds] refresh this long before expiry; default
   *   a fifth of the token's lifetime, at least 1 s and at most 60 s.
   * @param {function} [options.onStepUp] called when a request needs a stronger or more
   *   recent authentication (RFC 9470) with `{acrValues, maxAge, attempt, error}` (`error`:
   *   why the previous attempt failed); returns (or resolves to) the credentials for
   *   reauthenticate(), `{password}`, `{method: "totp" | "recovery_code", code}` or
   *   `{method: "webauthn"}` (a passkey), or null to give up (the request then fails with a
   *   StepUpRequiredError). It is asked again, with `error`, after wrong credentials or a
   *   passkey prompt that did not finish. Without it, such a request fails with a
   *   StepUpRequiredError at once.
   */
  constructor(options = {}) {
    super();
    this.baseUrl = (options.baseUrl || globalThis.location.origin).replace(/\/+$/, "");
    const server = new URL(this.baseUrl, globalThis.location.href);
    this.tokenOrigins = new Set([server.origin, ...(options.tokenOrigins || [])]);
    // Per server: the clients of one server share tokens across tabs, never those of another.
    const scope = server.href.replace(/\/+$/, "");
    this._names = {
      channel: `${CHANNEL} ${scope}`,
      lock: `${LOCK} ${scope}`,
      marker: `${REFRESHED_AT} ${scope}`,
    };
    this.marginSeconds = options.refreshMarginSeconds;
    this.refreshCount = 0; // refresh requests this tab sent, for tests and diagnostics
    this._token = null; // { value, expiresAt } (expiresAt in ms since the epoch)
    this._timer = null;
    this._inflight = null;
    this._started = null;
    this._channel =
      typeof BroadcastChannel === "function" ? new BroadcastChannel(this._names.channel) : null;
    this._channel?.addEventListener("message", (event) => this._onMessage(event.data));
    this._peerRefreshingUntil = 0;
    this.onStepUp = options.onStepUp || null;
    // A sign-in waiting for its second factor: { token, methods, enrollmentRequired,
    // expiresAt, failures }. Its token is in memory only, and never shared with other tabs.
    this._mfa = null;
    this._stepping = null; // the step-up under way: one at a time
    this._ceremony = null; // the passkey prompt under way: { controller, conditional }
    this._loginFlow = null; // a passwordless sign-in's challenge fetched ahead (single use)
    this._reauthenticatedAt = 0;
    this._onVisible = () => {
      if (document.visibilityState === "visible" && this._token && this._dueSoon()) {
        this.refresh({ stale: this._token.value }).catch(() => {});
      }
    };
    globalThis.document?.addEventListener("visibilitychange", this._onVisible);
  }

  // -- state -------------------------------------------------------------------------------

  /** True while this tab holds an access token that has not expired. */
  get signedIn() {
    return this._token !== null && this._token.expiresAt > Date.now();
  }

  /** When the current access token expires (ms since the epoch), or null. */
  get expiresAt() {
    return this._token ? this._token.expiresAt : null;
  }

  /**
   * How the current session authenticated, from the access token: `{acr, amr, authTime}`
   * ("aal1" | "aal2", e.g. ["pwd", "otp", "mfa"], Unix seconds), or null when signed out.
   * Read without verifying the token: for display and for deciding when to step up, never
   * for a security decision (the server decides).
   */
  get authentication() {
    const claims = this._token && unverifiedClaims(this._token.value);
    if (!claims) return null;
    return {
      acr: typeof claims.acr === "string" ? claims.acr : null,
      amr: Array.isArray(claims.amr) ? [...claims.amr] : [],
      authTime: typeof claims.auth_time === "number" ? claims.auth_time : null,
    };
  }

  /**
   * True while a sign-in waits for its second factor (login() resolved to `mfaRequired`) and
   * has not expired. After a failed verifyMfa(), false means: start again with login().
   */
  get mfaPending() {
    return this._mfa !== null && this._mfa.expiresAt > Date.now();
  }

  /** Whether this browser has WebAuthn (passkeys), in a secure context. */
  get passkeysSupported() {
    return (
      typeof globalThis.PublicKeyCredential === "function" &&
      typeof globalThis.navigator?.credentials?.get === "function" &&
      globalThis.isSecureContext !== false
    );
  }

  /**
   * Restore the session once per page: take a fresh token from another tab, or refresh from
   * the cookie. Resolves to true when signed in. Safe to call many times.
   */
  start() {
    this._started ||= (async () => {
      if (await this._askPeers()) return true;
      try {
        await this.refresh();
        return true;
      } catch {
        return false;
      }
    })();
    return this._started;
  }

  // -- account -----------------------------------------------------------------------------

  /**
   * Create an account (does not sign in). Resolves to the new user `{id, email, created_at}`
   * (201), or to `{status: "accepted"}` (202) when the server requires a verified address:
   * a link is on its way ("check your email"), and the answer is the same whether or not the
   * address already had an account. Tell them apart with `result.status === "accepted"`.
   */
  async register(email, password) {
    const response = await this._sendJson("POST", "/auth/register", { email, password });
    if (response.status === 202) return { status: "accepted" };
    return response.json();
  }

  /**
   * Sign in. Resolves to the user, as getUser() does; or, when the account has a second
   * factor, to `{mfaRequired: true, methods, enrollmentRequired: false, expiresIn}` (methods:
   * "totp", "recovery_code", "webauthn" for a passkey): nothing is signed in yet, finish with
   * verifyMfa(code, method) (a passkey: verifyMfa(null, "webauthn")) within `expiresIn`
   * seconds. `enrollmentRequired: true` (the server requires a second factor, and the account
   * has none): set one up with enrollTotp() and confirmTotp(), which then signs in. Tell the
   * cases apart with `result.mfaRequired`.
   */
  async login(email, password) {
    const body = await this._json("POST", "/auth/login", { email, password }, true);
    if (body.mfa_required) {
      const expiresIn = Number(body.expires_in) || 300;
      this._mfa = {
        token: body.mfa_token,
        methods: Array.isArray(body.methods) ? [...body.methods] : [],
        enrollmentRequired: body.enrollment_required === true,
        expiresAt: Date.now() + expiresIn * 1000,
        failures: 0,
      };
      return {
        mfaRequired: true,
        methods: [...this._mfa.methods],
        enrollmentRequired: this._mfa.enrollmentRequired,
        expiresIn,
      };
    }
    this._mfa = null;
    this._started = Promise.resolve(true);
    this._accept(body, "login");
    return this.getUser();
  }

  /**
   * Finish a sign-in that login() left waiting for a second factor: `code` is the
   * authenticator app's current code (method "totp") or an unused recovery code (method
   * "recovery_code"); with method "webauthn" there is no code (pass null): the browser asks
   * for one of the account's passkeys. Resolves to the user, and dispatches `signedin` as
   * login() does. A wrong code or a refused passkey is a TokenwardError (401, type
   * `...:mfa-failed`); then `mfaPending` says whether to try again or to start again with
   * login() (expired, or too many attempts). A passkey prompt that did not finish is a
   * PasskeyError (e.g. reason "cancelled"): nothing was sent, the sign-in still waits.
   */
  async verifyMfa(code, method = "totp") {
    const pending = this._pendingMfa();
    const counted = async (request) => {
      try {
        return await request();
      } catch (error) {
        if (error instanceof TokenwardError && error.status === 401) {
          pending.failures += 1;
          if (pending.failures >= MFA_ATTEMPTS && this._mfa === pending) this._mfa = null;
        }
        throw error;
      }
    };
    const body = { mfa_token: pending.token, method };
    if (method === "webauthn") {
      const options = await counted(() =>
        this._json("POST", "/auth/mfa/webauthn/options", { mfa_token: pending.token }),
      );
      body.credential = await this._passkeyCeremony("get", options);
    } else {
      body.code = String(code).trim();
    }
    const answer = await counted(() => this._json("POST", "/auth/mfa/verify", body, true));
    if (this._mfa === pending) this._mfa = null;
    this._started = Promise.resolve(true);
    this._accept(answer, "login");
    return this.getUser();
  }

  /** Forget a sign-in waiting for its second factor (the user chose to start over). */
  cancelMfa() {
    this._mfa = null;
  }

  // -- second factor -----------------------------------------------------------------------

  /**
   * Start adding an authenticator app (TOTP). Resolves to `{factor_id, secret, otpauth_uri,
   * qr_svg, expires_in}`: show the QR code (an SVG document, as text: never put it in the page
   * as HTML) or the base32 `secret`, then confirmTotp(factor_id, code). Needs a recent sign-in,
   * and a two-factor one when the user already has a factor: the step-up (onStepUp) handles
   * that. During a sign-in with `enrollmentRequired`, uses that sign-in instead of a session.
   */
  async enrollTotp() {
    const enrolling = this._enrolling();
    if (enrolling) {
      return this._json("POST", "/auth/mfa/totp/enroll", { mfa_token: enrolling.token });
    }
    return this._authorized("POST", "/auth/mfa/totp/enroll", { body: {} });
  }

  /**
   * Confirm a new authenticator app with its current code. Resolves to `{factor,
   * recovery_codes}`: `recovery_codes` (10 strings) only for the user's first factor, else
   * null; show them once. A wrong code is a TokenwardError (422, `...:invalid-mfa-code`). During
   * a sign-in with `enrollmentRequired`, this signs in (`signedin`, as login() does).
   */
  async confirmTotp(factorId, code) {
    const body = { factor_id: factorId, code: String(code).trim() };
    const enrolling = this._enrolling();
    if (!enrolling) return this._authorized("POST", "/auth/mfa/totp/confirm", { body });
    const answer = await this._json(
      "POST",
      "/auth/mfa/totp/confirm",
      { ...body, mfa_token: enrolling.token },
      true,
    );
    if (this._mfa === enrolling) this._mfa = null;
    const { factor, recovery_codes: recoveryCodes = null } = answer;
    if (answer.access_token) {
      this._started = Promise.resolve(true);
      this._accept(answer, "login");
    }
    return { factor, recovery_codes: recoveryCodes };
  }

  /** `{factors: [{id, type, created_at, last_used_at}], recovery_codes_remaining}`. */
  async factors() {
    return this._authorized("GET", "/auth/mfa/factors");
  }

  /** Remove a second factor (needs a recent two-factor sign-in: see onStepUp). */
  async removeFactor(id) {
    await this._authorized("DELETE", `/auth/mfa/factors/${encodeURIComponent(id)}`);
  }

  /** New recovery codes (the old ones stop working); resolves to the list: show it once. */
  async regenerateRecoveryCodes() {
    return (await this._authorized("POST", "/auth/mfa/recovery-codes/regenerate", { body: {} }))
      .recovery_codes;
  }

  // -- passkeys ----------------------------------------------------------------------------

  /**
   * Add a passkey to the signed-in account, named `name` (optional: the server names it
   * "Passkey" otherwise): the server's options, the browser's prompt
   * (navigator.credentials.create), then the server checks and keeps it. Resolves to the
   * passkey `{id, name, created_at, last_used_at, synced, backed_up}`. Needs a recent sign-in,
   * and a two-factor one when the user has a second factor already: the step-up (onStepUp)
   * handles that. A prompt that did not finish is a PasskeyError (reason "cancelled", or
   * "exists" when this authenticator holds a passkey of the account already); an answer the
   * server does not accept is a TokenwardError (422, `...:invalid-passkey`).
   */
  async registerPasskey(name) {
    const options = await this._authorized("POST", "/auth/passkeys/register/options", {
      body: {},
    });
    const credential = await this._passkeyCeremony("create", options);
    const body = { credential };
    const named = String(name ?? "").trim();
    if (named) body.name = named; // else the server's default name
    return this._authorized("POST", "/auth/passkeys/register", { body });
  }

  /** The user's passkeys, `[{id, name, created_at, last_used_at, synced, backed_up}]`. */
  async passkeys() {
    return (await this._authorized("GET", "/auth/passkeys")).passkeys;
  }

  /** Rename one of the user's passkeys; resolves to the passkey. */
  async renamePasskey(id, name) {
    return this._authorized("PATCH", `/auth/passkeys/${encodeURIComponent(id)}`, {
      body: { name: String(name).trim() },
    });
  }

  /** Remove one of the user's passkeys (needs a recent two-factor sign-in: see onStepUp). */
  async removePasskey(id) {
    await this._authorized("DELETE", `/auth/passkeys/${encodeURIComponent(id)}`);
  }

  /**
   * Whether this server offers sign-in with a passkey and no password (TOKENWARD_PASSKEYS=
   * passwordless) and this browser can do it. It asks the server for a sign-in challenge,
   * kept for the next loginWithPasskey(): call it when showing a sign-in form.
   */
  async canLoginWithPasskey() {
    if (!this.passkeysSupported) return false;
    try {
      this._loginFlow = await this._newLoginFlow();
      return true;
    } catch (error) {
      if (error instanceof TokenwardError && [404, 405].includes(error.status)) return false;
      throw error;
    }
  }

  /**
   * Sign in with a passkey, no username: the browser offers the passkeys it holds for this
   * server. Resolves to the user, and dispatches `signedin`, as login() does.
   *
   * `conditional: true`: the request waits for the user to pick a passkey in the autofill of
   * a field marked `autocomplete="username webauthn"` (call it when the sign-in form shows);
   * it resolves to null at once when the browser has no such autofill. Its challenge is
   * renewed before it expires, and any other passkey prompt of this client (a button's
   * loginWithPasskey(), verifyMfa, registerPasskey) or a sign-in withdraws it (a PasskeyError,
   * reason "aborted"). `signal`: an AbortSignal that withdraws the request.
   *
   * A refused passkey (no user verification, unknown, an origin the server does not list, a
   * reused answer) is a TokenwardError (401, `...:passkey-failed`); a prompt that did not
   * finish, a PasskeyError.
   */
  async loginWithPasskey({ conditional = false, signal } = {}) {
    if (!this.passkeysSupported) {
      throw new PasskeyError("unsupported", "this browser does not support passkeys");
    }
    if (conditional && !(await conditionalMediationAvailable())) return null;
    let flow;
    let credential;
    for (;;) {
      if (signal?.aborted) throw new PasskeyError("aborted", "the passkey request was withdrawn");
      flow = this._loginFlow && this._loginFlow.renewAt > Date.now() ? this._loginFlow : null;
      this._loginFlow = null;
      flow ||= await this._newLoginFlow();
      // A conditional request may wait long: renew its challenge before the server forgets it.
      const renew = conditional ? new AbortController() : null;
      const renewIn = Math.max(0, flow.renewAt - Date.now());
      const timer = renew && setTimeout(() => renew.abort(), renewIn);
      try {
        credential = await this._passkeyCeremony("get", flow.options, {
          mediation: conditional ? "conditional" : undefined,
          signals: [signal, renew?.signal],
        });
        break;
      } catch (error) {
        if (renew?.signal.aborted && !signal?.aborted && error.reason === "aborted") continue;
        throw error;
      } finally {
        clearTimeout(timer);
      }
    }
    const body = await this._json(
      "POST",
      "/auth/passkeys/login",
      { flow_id: flow.id, credential },
      true,
    );
    this._mfa = null;
    this._started = Promise.resolve(true);
    this._accept(body, "login");
    return this.getUser();
  }

  async _newLoginFlow() {
    const body = await this._json("POST", "/auth/passkeys/login/options", {});
    const seconds = Number(body.expires_in) || Number(body.options?.timeout) / 1000 || 0;
    const lifetime = (seconds > 0 ? seconds : PASSKEY_FLOW_SECONDS) * 1000;
    return {
      id: body.flow_id,
      options: body.options,
      renewAt: Date.now() + lifetime * PASSKEY_RENEW_FRACTION,
    };
  }

  /**
   * The browser's passkey prompt: `kind` "create" or "get" with the server's options JSON;
   * resolves to the credential as JSON. Withdraws a conditional request of this client first
   * (the browser runs one prompt at a time).
   */
  async _passkeyCeremony(kind, optionsJson, { mediation, signals = [] } = {}) {
    if (!this.passkeysSupported) {
      throw new PasskeyError("unsupported", "this browser does not support passkeys");
    }
    this._withdrawConditional();
    const controller = new AbortController();
    const ceremony = { controller, conditional: mediation === "conditional" };
    this._ceremony = ceremony;
    const stops = signals.filter(Boolean);
    const stop = () => controller.abort(new DOMException("withdrawn", "AbortError"));
    for (const signal of stops) {
      if (signal.aborted) stop();
      signal.addEventListener("abort", stop, { once: true });
    }
    try {
      const publicKey =
        kind === "create" ? creationOptions(optionsJson) : requestOptions(optionsJson);
      const request = { publicKey, signal: controller.signal };
      if (mediation) request.mediation = mediation;
      const credential = await navigator.credentials[kind](request);
      if (!credential) throw new PasskeyError("cancelled", "no passkey was chosen");
      return credentialJson(credential);
    } catch (error) {
      throw passkeyError(error, controller.signal.aborted);
    } finally {
      for (const signal of stops) signal.removeEventListener("abort", stop);
      if (this._ceremony === ceremony) this._ceremony = null;
    }
  }

  /** Withdraw a conditional passkey request under way (signed in, or another prompt). */
  _withdrawConditional() {
    if (this._ceremony?.conditional) {
      this._ceremony.controller.abort(new DOMException("withdrawn", "AbortError"));
      this._ceremony = null;
    }
  }

  /**
   * Authenticate again within the session: `{password}`, `{method: "totp" |
   * "recovery_code", code}` or `{method: "webauthn"}` (the browser asks for one of the user's
   * passkeys); a second factor raises the session to aal2. The session's tokens carry the new
   * `auth_time` (and `acr`) from now on, in every tab. Resolves to `authentication`. Wrong
   * credentials are a TokenwardError (401, `...:invalid-credentials` or `...:mfa-failed`),
   * sent once, never again on their own; a passkey prompt that did not finish, a PasskeyError.
   */
  async reauthenticate(credentials = {}) {
    await this.start();
    if (this._token && this._dueSoon()) {
      await this.refresh({ stale: this._token.value }).catch(() => {});
    }
    let body;
    if (credentials.password !== undefined) {
      body = { password: credentials.password };
    } else if (credentials.method === "webauthn") {
      const path = "/auth/passkeys/reauthenticate/options";
      const options = await this._withSessionToken("POST", path, {});
      if (!options.ok) throw await this._error(options);
      const credential = await this._passkeyCeremony("get", await options.json());
      body = { method: "webauthn", credential };
    } else {
      body = { method: credentials.method || "totp", code: String(credentials.code ?? "").trim() };
    }
    // credentials: "include", so that the answer may update the cookie, also cross-origin.
    const response = await this._withSessionToken("POST", "/auth/reauthenticate", body, "include");
    if (!response.ok) throw await this._error(response);
    const answer = await response.json();
    this._reauthenticatedAt = Date.now();
    this._accept(answer, null);
    const authentication = this.authentication;
    this.dispatchEvent(new CustomEvent("reauthenticated", { detail: authentication }));
    return authentication;
  }

  /**
   * Send a JSON body with the access token, refreshing once when the token itself is refused
   * (before anything else was looked at); never a step-up (reauthenticate() is the step-up).
   */
  async _withSessionToken(method, path, body, credentials) {
    const send = (token) => {
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      const init = { headers, body: JSON.stringify(body) };
      if (credentials) init.credentials = credentials;
      return this._send(method, path, init);
    };
    const used = this._token?.value;
    const response = await send(used);
    if (response.status === 401 && used && (await this._tokenRefused(response))) {
      // The token was refused before the body was looked at: refresh, send again.
      try {
        await this.refresh({ stale: used });
      } catch {
        return response;
      }
      return send(this._token?.value);
    }
    return response;
  }

  /** End this browser's session on the server; every tab is signed out. */
  async logout() {
    this._mfa = null;
    try {
      await this._send("POST", "/auth/logout", { credentials: "include" });
    } finally {
      this._signOut("here", true);
    }
  }

  /** End every session of the user, on every device. */
  async logoutAll() {
    const response = await this.fetch(this._url("/auth/logout-all"), {
      method: "POST",
      credentials: "include", // so that the answer may clear the cookie, also cross-origin
    });
    if (!response.ok && response.status !== 401) throw await this._error(response);
    this._signOut("here", true);
  }

  /** The signed-in user ({id, email, email_verified, created_at}), or null when signed out. */
  async getUser() {
    if (!(await this.start()) && !this._token) return null;
    const response = await this.fetch(this._url("/auth/me"));
    if (response.status === 401) return null;
    if (!response.ok) throw await this._error(response);
    return response.json();
  }

  /** The user's live sessions, the current one marked `current: true`. */
  async sessions() {
    return (await this._authorized("GET", "/auth/sessions")).sessions;
  }

  /** End one session; ending the current one signs this browser out. */
  async revokeSession(id) {
    const current = (await this.sessions()).find((session) => session.current);
    await this._authorized("DELETE", `/auth/sessions/${encodeURIComponent(id)}`);
    if (current && current.id === id) this._signOut("here", true);
  }

  /** The user's recent security events, newest first. */
  async events(limit = 20) {
    return (await this._authorized("GET", `/auth/events?limit=${limit}`)).events;
  }

  // -- accounts by email -------------------------------------------------------------------
  // Mailed links carry their token in the fragment (`<page>#token=...`), which no browser
  // sends to a server: read it with tokenFromFragment(), and post it only when the user asks
  // (a mail scanner loads pages too). The "always 202" calls resolve to nothing whatever the
  // account's state: the server never says whether an address has an account.

  /** Send (again) the link that verifies `email`; resolves alike for any address. */
  async requestVerificationEmail(email) {
    await this._json("POST", "/auth/verify-email/request", { email });
  }

  /** Verify an address with the token of its mailed link (`verify-email#token=...`). */
  async verifyEmail(token) {
    await this._json("POST", "/auth/verify-email", { token });
  }

  /** Send a password-reset link to `email`; resolves alike for any address. */
  async forgotPassword(email) {
    await this._json("POST", "/auth/password/forgot", { email });
  }

  /**
   * Set a new password with the token of a reset link (`reset-password#token=...`). A
   * `weak-password` error (422) leaves the link usable. Does not sign in; the server ends the
   * user's sessions (by default), which a client signed in as that user learns at its next
   * request or refresh (`sessionended`).
   */
  async resetPassword(token, newPassword) {
    await this._json("POST", "/auth/password/reset", { token, new_password: newPassword });
  }

  /**
   * Ask to change the signed-in user's address: a confirmation link goes to `newEmail`, a
   * notice with a cancel link to the current address. A wrong `currentPassword` is a
   * TokenwardError with status 401 and type `...:invalid-credentials` (the session stays).
   */
  async requestEmailChange(newEmail, currentPassword) {
    await this._authorized("POST", "/auth/email", {
      body: { new_email: newEmail, current_password: currentPassword },
    });
  }

  /** Withdraw the signed-in user's pending address change (its links stop working). */
  async withdrawEmailChange() {
    await this._authorized("DELETE", "/auth/email");
  }

  /** Confirm an address change with the token of its link (`confirm-email#token=...`). */
  async confirmEmailChange(token) {
    await this._json("POST", "/auth/email/confirm", { token });
  }

  /** Withdraw an address change with the token of its link (`cancel-email-change#token=...`). */
  async cancelEmailChange(token) {
    await this._json("POST", "/auth/email/cancel", { token });
  }

  /**
   * Delete the signed-in user's account: every session ends, and every tab signs out as on
   * logout. A wrong `currentPassword` is a TokenwardError with status 401 and type
   * `...:invalid-credentials`; then nothing changes.
   */
  async deleteAccount(currentPassword) {
    await this._authorized("DELETE", "/auth/account", {
      body: { current_password: currentPassword },
      credentials: "include", // so that the answer may clear the cookie, also cross-origin
    });
    this._signOut("here", true);
  }

  /** The token of the mailed link this page was opened with: see `tokenFromFragment()`. */
  tokenFromFragment() {
    return tokenFromFragment();
  }

  // -- fetch with the access token ---------------------------------------------------------

  /**
   * fetch() with `Authorization: Bearer` for the server's origin and `tokenOrigins`. Refreshes
   * first when the token is about to expire, and once more on a 401, then retries. A 401 that
   * asks for a stronger or more recent authentication (RFC 9470, `WWW-Authenticate: Bearer
   * error="insufficient_user_authentication"`) is not refreshed: `onStepUp` is asked for
   * credentials, reauthenticate() runs, and the request is sent once more; when that cannot
   * be done (no callback, it gave up, still not enough) the call rejects with a
   * StepUpRequiredError. (On another origin, the challenge is read from WWW-Authenticate
   * when its CORS answer exposes that header, else from tokenward's problem details.)
   */
  async fetch(input, init = {}) {
    const request = new Request(input, init);
    if (!this.tokenOrigins.has(new URL(request.url).origin)) return fetch(request);
    await this.start();
    if (this._token && this._dueSoon()) {
      await this.refresh({ stale: this._token.value }).catch(() => {});
    }
    const sentAt = Date.now();
    const used = this._token?.value;
    const response = await fetch(this._withToken(request.clone(), used));
    if (response.status !== 401 || !used) return response;
    const challenge = await stepUpChallenge(response);
    if (challenge) return this._stepUpAndRetry(request, response, challenge, sentAt);
    // Wrong credentials (a current password, a code) are no reason to refresh, and sending
    // them again would count a second failed attempt.
    if (await this._isWrongCredentials(response)) return response;
    try {
      await this.refresh({ stale: used });
    } catch {
      return response; // the session is over; `sessionended` has been dispatched
    }
    const retriedAt = Date.now();
    const retried = await fetch(this._withToken(request.clone(), this._token?.value));
    const later = await stepUpChallenge(retried);
    return later ? this._stepUpAndRetry(request, retried, later, retriedAt) : retried;
  }

  /** Step up (once for concurrent requests), then send `request` one last time. */
  async _stepUpAndRetry(request, response, challenge, sentAt) {
    // A step-up that finished after this request went out may have settled it already.
    if (this._reauthenticatedAt <= sentAt || this._stepping) {
      if (!this.onStepUp && !this._stepping) throw await this._stepUpError(response, challenge);
      this._stepping ||= this._stepUp(challenge).finally(() => {
        this._stepping = null;
      });
      await this._stepping;
    }
    const retried = await fetch(this._withToken(request.clone(), this._token?.value));
    const still = await stepUpChallenge(retried);
    if (still) throw await this._stepUpError(retried, still);
    return retried;
  }

  async _stepUp(challenge) {
    let error = null;
    for (let attempt = 1; attempt <= STEP_UP_ATTEMPTS; attempt += 1) {
      const credentials = await this.onStepUp({ ...challenge, attempt, error });
      if (!credentials) throw new StepUpRequiredError(challenge, { detail: "step-up cancelled" });
      try {
        await this.reauthenticate(credentials);
        return;
      } catch (failure) {
        // Wrong credentials, or a passkey prompt that did not finish: ask again (with the
        // reason); anything else ends the step-up.
        const wrong = failure instanceof TokenwardError && WRONG_CREDENTIALS.has(failure.type);
        if (!wrong && !(failure instanceof PasskeyError)) throw failure;
        error = failure;
      }
    }
    throw error;
  }

  async _stepUpError(response, challenge) {
    let problem = {};
    try {
      problem = await response.clone().json();
    } catch {
      /* not JSON: a resource server's plain answer */
    }
    return new StepUpRequiredError(challenge, problem?.constructor === Object ? problem : {});
  }

  // -- refresh -----------------------------------------------------------------------------

  /**
   * Get a new access token from the refresh cookie: one request at a time in this tab, and
   * across tabs. `stale` names a token the caller saw refused: any other valid token will do.
   */
  refresh({ stale } = {}) {
    this._inflight ||= this._refreshAcrossTabs(stale).finally(() => {
      this._inflight = null;
    });
    return this._inflight;
  }

  async _refreshAcrossTabs(stale) {
    const decidedAt = Date.now();
    const work = async () => {
      if (this._usable(stale)) return; // another tab's token arrived while we waited
      if (readMarker(this._names.marker) > decidedAt) {
        // Another tab refreshed while we waited: its token is on the way.
        await this._waitForToken(stale, 1000);
        if (this._usable(stale)) return;
      }
      await this._refreshNow();
    };
    if (globalThis.navigator?.locks) {
      await navigator.locks.request(this._names.lock, work);
    } else {
      // Fallback without Web Locks: announce, and let a tab that heard another's announcement
      // wait for that tab's token. Two tabs announcing at once both refresh; the server's
      // reuse interval gives them the same successor, so nothing is lost.
      if (Date.now() < this._peerRefreshingUntil) {
        await this._waitForToken(stale, 3000);
        if (this._usable(stale)) return;
      }
      this._post({ type: "refreshing" });
      await work();
    }
  }

  async _refreshNow() {
    this.refreshCount += 1;
    const startedAt = Date.now();
    const response = await this._send("POST", "/auth/refresh", { credentials: "include" });
    if (response.status === 401) {
      // The cookie is gone, expired or its session was ended: the session is over.
      const wasSignedIn = this._token !== null;
      this._clear();
      if (wasSignedIn) {
        this._post({ type: "ended" });
        this.dispatchEvent(new CustomEvent("sessionended"));
      }
      throw await this._error(response);
    }
    if (!response.ok) {
      // 429 or 503: keep what we have and try again shortly; the session is not over.
      if (this._token) {
        clearTimeout(this._timer);
        const stale = this._token.value;
        this._timer = setTimeout(() => this.refresh({ stale }).catch(() => {}), RETRY_MS);
      }
      throw await this._error(response);
    }
    const body = await response.json();
    const wasSignedIn = this._token !== null;
    // A reauthentication that finished meanwhile holds the newer token (its acr, auth_time);
    // this answer may predate it. The cookie has rotated either way.
    if (wasSignedIn && this._reauthenticatedAt > startedAt && this.signedIn) return;
    this._accept(body, wasSignedIn ? null : "restore");
    writeMarker(this._names.marker, Date.now());
  }

  // -- internals ---------------------------------------------------------------------------

  _accept(body, signedInHow) {
    if (signedInHow) this._withdrawConditional();
    this._setToken({ value: body.access_token, expiresAt: Date.now() + body.expires_in * 1000 });
    this._post({ type: "token", token: this._token });
    if (signedInHow) this.dispatchEvent(new CustomEvent("signedin", { detail: { how: signedInHow } }));
  }

  _setToken(token) {
    this._token = token;
    clearTimeout(this._timer);
    const lifetime = token.expiresAt - Date.now();
    const margin =
      this.marginSeconds !== undefined
        ? this.marginSeconds * 1000
        : Math.min(60_000, Math.max(1000, lifetime / 5));
    const due = () => this.refresh({ stale: token.value }).catch(() => {});
    this._timer = setTimeout(due, Math.max(0, lifetime - margin));
    this.dispatchEvent(new CustomEvent("token", { detail: { expiresAt: token.expiresAt } }));
  }

  _clear() {
    this._token = null;
    clearTimeout(this._timer);
    this._timer = null;
  }

  _signOut(where, tell) {
    const wasSignedIn = this._token !== null;
    this._clear();
    this._started = Promise.resolve(false);
    if (tell) this._post({ type: "signedout" });
    if (wasSignedIn || where === "here") {
      this.dispatchEvent(new CustomEvent("signedout", { detail: { where } }));
    }
  }

  _dueSoon() {
    const lifetimeLeft = this._token.expiresAt - Date.now();
    return lifetimeLeft < 1000;
  }

  _usable(stale) {
    return this.signedIn && this._token.value !== stale && !this._dueSoon();
  }

  async _waitForToken(stale, ms) {
    const deadline = Date.now() + ms;
    while (!this._usable(stale) && Date.now() < deadline) await sleep(20);
  }

  async _askPeers() {
    if (!this._channel) return false;
    this._post({ type: "who-has-a-token" });
    await this._waitForToken(undefined, PEER_WAIT_MS);
    if (this.signedIn) {
      this.dispatchEvent(new CustomEvent("signedin", { detail: { how: "other-tab" } }));
      return true;
    }
    return false;
  }

  _onMessage(message) {
    switch (message?.type) {
      case "token": {
        const wasSignedOut = this._token === null;
        if (wasSignedOut || message.token.expiresAt > this._token.expiresAt) {
          this._setToken(message.token);
        }
        if (wasSignedOut) this._withdrawConditional();
        if (wasSignedOut && this._started) {
          // Signed in by another tab (a tab still starting announces it itself).
          this._started = Promise.resolve(true);
          this.dispatchEvent(new CustomEvent("signedin", { detail: { how: "other-tab" } }));
        }
        break;
      }
      case "who-has-a-token":
        if (this.signedIn && !this._dueSoon()) this._post({ type: "token", token: this._token });
        break;
      case "refreshing":
        this._peerRefreshingUntil = Date.now() + 3000;
        break;
      case "signedout":
        this._signOut("other-tab", false);
        break;
      case "ended":
        if (this._token) {
          this._clear();
          this._started = Promise.resolve(false);
          this.dispatchEvent(new CustomEvent("sessionended"));
        }
        break;
      default:
        break;
    }
  }

  _post(message) {
    this._channel?.postMessage(message);
  }

  _url(path) {
    return this.baseUrl + path;
  }

  _withToken(request, token) {
    if (!token) return request;
    const headers = new Headers(request.headers);
    headers.set("Authorization", `Bearer ${token}`);
    return new Request(request, { headers });
  }

  _send(method, path, init = {}) {
    return fetch(this._url(path), { method, ...init });
  }

  /** Send a JSON body without the access token; the answer if it is a success, else throw. */
  async _sendJson(method, path, body, withCookie = false) {
    const response = await this._send(method, path, {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: withCookie ? "include" : "same-origin",
    });
    if (!response.ok) throw await this._error(response);
    return response;
  }

  async _json(method, path, body, withCookie = false) {
    const response = await this._sendJson(method, path, body, withCookie);
    return response.status === 204 ? null : response.json();
  }

  async _authorized(method, path, { body, credentials } = {}) {
    const init = { method };
    if (body !== undefined) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    if (credentials) init.credentials = credentials;
    const response = await this.fetch(this._url(path), init);
    if (!response.ok) throw await this._error(response);
    return response.status === 204 ? null : response.json();
  }

  async _isWrongCredentials(response) {
    if (!(response.headers.get("Content-Type") || "").includes("json")) return false;
    try {
      return WRONG_CREDENTIALS.has((await response.clone().json())?.type);
    } catch {
      return false; // not JSON after all
    }
  }

  /** Whether a 401 refused the access token itself (header, or the problem's type). */
  async _tokenRefused(response) {
    const header = response.headers.get("WWW-Authenticate");
    if (header !== null) return bearerParams(header).error === "invalid_token";
    try {
      return (await response.clone().json())?.type === `${PROBLEM}invalid-token`;
    } catch {
      return false;
    }
  }

  /** The sign-in waiting for a second factor, or a TokenwardError when there is none. */
  _pendingMfa() {
    if (this.mfaPending) return this._mfa;
    this._mfa = null;
    throw new TokenwardError(401, {
      type: `${PROBLEM}mfa-failed`,
      title: "Second factor not accepted",
      detail: "no sign-in is waiting for a second factor (or it expired): sign in again",
    });
  }

  /** The pending sign-in that must enrol a factor before it may finish, or null. */
  _enrolling() {
    return this.mfaPending && this._mfa.enrollmentRequired ? this._mfa : null;
  }

  async _error(response) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      /* not JSON */
    }
    return new TokenwardError(response.status, problem);
  }
}

/**
 * The token of the mailed link this page was opened with (`<page>#token=...`), or null. The
 * fragment is then removed from the address bar and from this history entry
 * (history.replaceState), so that the token does not linger where it could be bookmarked,
 * shared or read back: call it once per page load, the next call finds nothing. It posts
 * nothing: a page should post the token only when the user asks (mail scanners load pages).
 */
export function tokenFromFragment() {
  const { hash, pathname, search } = globalThis.location;
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  if (!params.has("token")) return null;
  globalThis.history?.replaceState(globalThis.history.state, "", pathname + search);
  return params.get("token") || null;
}

/** A client for the server at `baseUrl` (default: this page's origin). */
export function createClient(options) {
  return new TokenwardClient(options);
}
