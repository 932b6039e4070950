// The tokenward demo page. Everything from the server goes into the page as text
// (textContent, never innerHTML); the access token never leaves the client's memory.
// The same page answers the links of mails (verify-email, reset-password, confirm-email,
// cancel-email-change): it reads the token from the fragment and posts it when asked.
// A second factor: a sign-in may stop at a code prompt (the second-factor view); a signed-in
// user sets up an authenticator app, and actions that need a recent or two-factor sign-in ask
// for a password or a code in a dialog (step-up), then go ahead.
// Passkeys: added and listed in their card; at sign-in, when the server offers passwordless
// sign-in, a "Sign in with a passkey" button and the email field's autofill (conditional
// mediation); at the second-factor prompt, "Use a passkey"; in the step-up dialog, a passkey.
import {
  createClient,
  PasskeyError,
  tokenFromFragment,
  TokenwardError,
} from "../static/tokenward.js";

// The folder of the page: "/" itself, or the mount point when tokenward is embedded.
const base = new URL(".", location.href);
const client = createClient({
  baseUrl: base.href.replace(/\/$/, ""),
  onStepUp: (challenge) => askToStepUp(challenge),
});

const $ = (id) => document.getElementById(id);
const view = {
  "signed-out": $("signed-out"),
  "second-factor": $("second-factor"),
  "signed-in": $("signed-in"),
};
const [
  status, who, verified, ttl, authLevel, sessionList, eventList, mailList, factorList, passkeyList,
] = [
  "status", "who", "verified", "token-ttl", "auth-level", "sessions", "events", "mailbox",
  "factors", "passkeys",
].map($);

const PROBLEM = "urn:tokenward:problem:";

const EVENT_LABELS = {
  "user.registered": "Account created", "login.succeeded": "Signed in",
  "login.failed": "Failed sign-in attempt", "password.changed": "Password changed",
  "session.refreshed": "Session refreshed", "session.logout": "Signed out",
  "session.reuse_detected": "Reused refresh token: session ended",
  "session.logout_all": "Signed out everywhere", "session.revoked": "Session revoked",
  "email.verification_sent": "Verification email sent", "email.verified": "Email verified",
  "password.reset_requested": "Password reset requested", "password.reset": "Password reset",
  "email.change_requested": "Email change requested",
  "email.change_cancelled": "Email change cancelled", "email.changed": "Email changed",
  "email.sent": "Email sent", "email.suppressed": "Email not sent (limit)",
  "email.delivery_failed": "Email could not be delivered",
  "mfa.enrolled": "Authenticator app added", "mfa.removed": "Authenticator app removed",
  "mfa.required": "Password accepted; code asked", "mfa.verified": "Code accepted",
  "mfa.failed": "Wrong code", "mfa.replay_rejected": "Reused code refused",
  "mfa.recovery_code_used": "Recovery code used",
  "mfa.recovery_codes_regenerated": "New recovery codes", "reauthenticated": "Confirmed it was you",
  "passkey.registered": "Passkey added", "passkey.removed": "Passkey removed",
  "passkey.used": "Passkey used",
  "passkey.counter_regressed": "Passkey's counter went backwards (a cloned key?)",
};

// RFC 8176 authentication methods, as a person would say them.
const METHODS = {
  pwd: "password", otp: "one-time code", hwk: "passkey", swk: "passkey", mfa: null,
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function say(message, isError = false) {
  status.textContent = message;
  status.classList.toggle("error", isError);
}

const PASSKEY_PROBLEMS = {
  cancelled: "The passkey prompt was closed, timed out, or your device could not confirm it " +
    "was you. Try again, or use another way.",
  exists: "This device already keeps a passkey for your account.",
  unsupported: "This browser or device cannot use passkeys.",
  security: "Passkeys do not work on this address: the server's passkey settings name " +
    "another site.",
};

function describe(error) {
  if (error instanceof PasskeyError) return PASSKEY_PROBLEMS[error.reason] || error.message;
  if (error instanceof TokenwardError) {
    switch (error.type) {
      case `${PROBLEM}link-invalid`:
        return "This link no longer works: it was used already, replaced by a newer one, or " +
          "it expired. Ask for a new one.";
      case `${PROBLEM}email-not-verified`:
        return "Confirm your email address first: open the link we mailed you, or ask for a " +
          "new one below.";
      case `${PROBLEM}invalid-credentials`:
        if (client.signedIn) return "That is not your current password.";
        break;
      case `${PROBLEM}mfa-failed`:
        return "That code was not accepted. Check it and try again: each code works once.";
      case `${PROBLEM}passkey-failed`:
        return "That passkey was not accepted. Try again, or sign in with your password.";
      case `${PROBLEM}invalid-passkey`:
        return "The passkey could not be added: the server did not accept your device's " +
          "answer. Nothing was changed.";
      case `${PROBLEM}invalid-mfa-code`:
        return "That code does not match. Check that the app shows this account, and that " +
          "the device's clock is right, then try again.";
      case `${PROBLEM}insufficient-user-authentication`:
        return "That needs you to confirm it is you first; nothing was changed.";
      case `${PROBLEM}unknown-factor`:
        return "That authenticator app is no longer set up (or the setup took too long). " +
          "Start again.";
      default:
        break;
    }
    return error.rule ? `${error.message} (rule: ${error.rule})` : error.message;
  }
  return "Could not reach the server. Check the connection and try again.";
}

// 401s that answer what the user typed (a password, a code), not an ended session.
const WRONG_CREDENTIALS = [
  `${PROBLEM}invalid-credentials`, `${PROBLEM}mfa-failed`, `${PROBLEM}passkey-failed`,
];

function report(error) {
  if (error instanceof PasskeyError && error.reason === "aborted") return; // the page's own doing
  // A 401 after the session ended is told by the `sessionended` / `signedout` events instead.
  if (error instanceof TokenwardError && error.status === 401 && !client.signedIn &&
      !WRONG_CREDENTIALS.includes(error.type)) return;
  say(describe(error), true);
}

function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

function timeElement(iso) {
  const node = el("time");
  const date = new Date(iso);
  node.dateTime = String(iso);
  node.textContent = Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
  return node;
}

const TITLES = {
  "signed-out": $("signed-out-title"),
  "second-factor": $("second-factor-title"),
  "signed-in": who,
};

function setView(state) {
  const previous = document.body.dataset.state;
  const leaving = view[previous];
  const focused = document.activeElement;
  // Move focus only when it would otherwise vanish with the section being hidden.
  const lost = !focused || focused === document.body || leaving?.contains(focused);
  const moveFocus = previous !== state && leaving && lost;
  for (const [name, section] of Object.entries(view)) section.hidden = name !== state;
  document.body.dataset.state = state;
  if (state !== "signed-out") stopPasskeyAutofill();
  if (state === "signed-in") tick();
  if (moveFocus) TITLES[state].focus();
}

const lists = () => [client.sessions(), client.events(10), client.factors(), client.passkeys()];
let generation = 0; // bumped on every view change, so that late answers are dropped
let showing = null;

function showSignedIn() {
  if (showing) return showing;
  const mine = ++generation;
  const run = (async () => {
    const [user, sessions, events, factors, passkeys] =
      await Promise.allSettled([client.getUser(), ...lists()]);
    if (mine !== generation) return;
    if (user.status === "fulfilled" && user.value) {
      who.textContent = user.value.email;
      renderVerified(user.value);
      renderSessions(sessions);
      renderEvents(events);
      renderFactors(factors);
      renderPasskeys(passkeys);
      setView("signed-in");
    } else if (!client.signedIn) {
      showSignedOut();
    } else {
      report(user.reason);
    }
  })().finally(() => {
    if (showing === run) showing = null;
  });
  showing = run;
  return run;
}

function showSignedOut(message) {
  generation += 1;
  showing = null;
  who.textContent = "";
  renderVerified(null);
  ttl.textContent = "";
  authLevel.textContent = "";
  sessionList.replaceChildren();
  eventList.replaceChildren();
  hideDeleteConfirm();
  clearSecondFactor();
  clearPasskeys();
  // No passwords, codes or secrets stay behind.
  for (const section of Object.values(view)) {
    for (const form of section.querySelectorAll("form")) form.reset();
  }
  setView("signed-out");
  if (message) say(message);
  offerPasskeySignIn();
}

function renderVerified(user) {
  const known = typeof user?.email_verified === "boolean";
  verified.hidden = !known;
  verified.textContent = user?.email_verified ? "verified" : "not verified";
  verified.classList.toggle("warn", known && !user.email_verified);
  $("send-verification").hidden = !known || user.email_verified;
}

function renderSessions(result) {
  if (result.status === "rejected") return report(result.reason);
  sessionList.replaceChildren(
    ...result.value.map((session) => {
      const item = el("li");
      const text = el("div");
      text.append(el("span", "what", session.device));
      if (session.current) text.append(el("span", "badge", "this device"));
      const meta = el("span", "meta", `${session.ip || "unknown IP"} · last used `);
      meta.append(timeElement(session.last_used_at));
      text.append(meta);
      const revoke = el("button", "revoke secondary small", "Revoke");
      revoke.type = "button";
      revoke.dataset.sessionId = session.id;
      const which = session.current ? " (this device: signs you out)" : "";
      revoke.setAttribute("aria-label", `Revoke the session on ${session.device}${which}`);
      item.append(text, revoke);
      return item;
    }),
  );
}

function renderEvents(result) {
  if (result.status === "rejected") return report(result.reason);
  const events = result.value.slice(0, 10);
  eventList.replaceChildren(
    ...events.map((event) => {
      const item = el("li");
      const text = el("div");
      text.append(el("span", "what", EVENT_LABELS[event.type] || event.type), " ");
      text.append(el("code", "", event.type));
      const meta = el("span", "meta");
      meta.append(timeElement(event.at));
      if (event.ip) meta.append(` · ${event.ip}`);
      text.append(meta);
      item.append(text);
      return item;
    }),
  );
  $("events-empty").hidden = events.length > 0;
}

async function reloadLists() {
  const mine = generation;
  const [sessions, events, factors, passkeys] = await Promise.allSettled(lists());
  if (mine !== generation) return;
  renderSessions(sessions);
  renderEvents(events);
  renderFactors(factors);
  renderPasskeys(passkeys);
}

function tick() {
  if (document.body.dataset.state !== "signed-in") return;
  const expiresAt = client.expiresAt;
  ttl.textContent =
    expiresAt === null
      ? "No access token in memory"
      : `Access token expires in ${Math.max(0, Math.round((expiresAt - Date.now()) / 1000))} s`;
  const text = describeAuthentication(client.authentication);
  if (authLevel.textContent !== text) authLevel.textContent = text;
}

/** "Signed in with password and one-time code (aal2), 3 min ago", from the token's claims. */
function describeAuthentication(authentication) {
  if (!authentication) return "";
  const methods = authentication.amr
    .map((method) => (method in METHODS ? METHODS[method] : method))
    .filter(Boolean);
  let text = methods.length ? `Signed in with ${methods.join(" and ")}` : "Signed in";
  if (authentication.acr) text += ` (${authentication.acr})`;
  if (authentication.authTime !== null) {
    const minutes = Math.floor((Date.now() / 1000 - authentication.authTime) / 60);
    text += minutes < 1 ? ", just now" : `, ${minutes} min ago`;
  }
  return text;
}
setInterval(tick, 1000);

client.addEventListener("signedin", (event) => {
  if (event.detail?.how === "login") say("Signed in");
  showSignedIn();
});
client.addEventListener("signedout", (event) => {
  showSignedOut(event.detail?.where === "other-tab" ? "Signed out in another tab" : "Signed out");
});
client.addEventListener("sessionended", () => showSignedOut("Your session was ended elsewhere"));
client.addEventListener("token", () => {
  tick();
  // Another tab signed in and shared its token: this tab is signed in too. (A login here
  // sends `token` just before `signedin`, so look once that has had its turn.)
  queueMicrotask(() => {
    if (document.body.dataset.state === "signed-out" && client.signedIn && !showing) {
      say("Signed in in another tab");
      showSignedIn();
    }
  });
});

// Every form has an `email` field, a `password` field, or both.
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.busy) return;
    form.dataset.busy = "true";
    try {
      const { email, password } = form.elements;
      await action(email?.value.trim(), password?.value);
      for (const other of document.forms) other.reset();
    } catch (error) {
      report(error);
    } finally {
      delete form.dataset.busy;
    }
  });
}

onSubmit($("signup-form"), async (email, password) => {
  say("Creating your account…");
  const created = await client.register(email, password);
  if (created.status === "accepted") {
    // Verification required: the same answer whether or not the address had an account.
    say(`Check your email: we sent a message to ${email}. Open its link to confirm the ` +
      "address, then sign in.");
    mailboxSoon();
    return;
  }
  say("Account created; signing in…");
  const result = await client.login(email, password);
  if (result?.mfaRequired) showSecondFactor(result);
});

onSubmit($("signin-form"), async (email, password) => {
  say("Signing in…");
  let result;
  try {
    result = await client.login(email, password);
  } catch (error) {
    if (error instanceof TokenwardError && error.type === `${PROBLEM}email-not-verified`) {
      $("resend-email").value = email; // ready for "Resend verification email"
    }
    throw error;
  }
  if (result?.mfaRequired) showSecondFactor(result);
});

onSubmit($("forgot-form"), async (email) => {
  say("Sending…");
  await client.forgotPassword(email);
  say(`If ${email} has an account, a link to choose a new password is on its way. ` +
    "Check your email.");
  mailboxSoon();
});

onSubmit($("resend-form"), async (email) => {
  say("Sending…");
  await client.requestVerificationEmail(email);
  say(`If ${email} has an account waiting to be verified, a new link is on its way. ` +
    "Check your email.");
  mailboxSoon();
});

onSubmit($("email-form"), async (email, password) => {
  say("Sending the confirmation link…");
  await client.requestEmailChange(email, password);
  say(`Check ${email}: open the link we sent there to confirm the change. Until then your ` +
    "address stays as it is.");
  mailboxSoon();
});

/** A button that runs `action` once at a time, reporting its failure. */
function onClick(button, action) {
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
    }
  });
}

onClick($("withdraw-email"), async () => {
  await client.withdrawEmailChange();
  say("Any pending email change is withdrawn: its links no longer work.");
});

onClick($("send-verification"), async () => {
  const email = who.textContent;
  await client.requestVerificationEmail(email);
  say(`A link that verifies ${email} is on its way. Check your email.`);
  mailboxSoon();
});

// Deleting the account takes two steps: the password, then an explicit confirmation.
const deleteForm = $("delete-form");
const deleteConfirm = $("delete-confirm");

function hideDeleteConfirm() {
  deleteConfirm.hidden = true;
}

deleteForm.addEventListener("submit", (event) => {
  event.preventDefault();
  $("delete-warning").textContent =
    `Delete the account ${who.textContent}? Every session ends and the account is removed; ` +
    "this cannot be undone.";
  deleteConfirm.hidden = false;
  $("delete-yes").focus();
});

function keepAccount() {
  hideDeleteConfirm();
  $("delete-password").focus();
}

$("delete-no").addEventListener("click", keepAccount);
deleteConfirm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") keepAccount();
});

$("delete-yes").addEventListener("click", async () => {
  if (deleteForm.dataset.busy) return;
  deleteForm.dataset.busy = "true";
  say("Deleting your account…");
  try {
    await client.deleteAccount(deleteForm.elements.password.value);
    // The `signedout` event has shown the signed-out view already.
    say("Your account was deleted, and every session signed out.");
    mailboxSoon();
  } catch (error) {
    report(error);
    if (client.signedIn) keepAccount();
  } finally {
    delete deleteForm.dataset.busy;
  }
});

$("logout").addEventListener("click", () => client.logout().catch(report));

$("logout-all").addEventListener("click", async () => {
  try {
    await client.logoutAll();
    say("Signed out on every device");
  } catch (error) {
    report(error);
  }
});

$("reload-sessions").addEventListener("click", reloadLists);

// -- the second factor: the code prompt of a sign-in ---------------------------------------

const mfaForm = $("mfa-form");
const MFA_PROMPTS = {
  totp: {
    intro: "Enter the 6-digit code from your authenticator app.",
    label: "Authentication code",
    switchTo: "Use a recovery code instead",
    inputMode: "numeric",
  },
  recovery_code: {
    intro: "Enter one of the recovery codes you saved. Each works once.",
    label: "Recovery code",
    switchTo: "Use the authenticator app instead",
    inputMode: "text",
  },
};
let mfaMethods = [];

function setMfaMethod(method) {
  const prompt = MFA_PROMPTS[method];
  mfaForm.dataset.method = method;
  $("mfa-intro").textContent = prompt.intro;
  $("mfa-code-label").textContent = prompt.label;
  $("mfa-code").inputMode = prompt.inputMode;
  $("mfa-code").value = "";
  $("mfa-switch").textContent = prompt.switchTo;
  $("mfa-switch").hidden = !mfaMethods.includes(method === "totp" ? "recovery_code" : "totp");
}

/** The sign-in needs a second factor (or, first, setting one up): show its prompt. */
function showSecondFactor({ methods, enrollmentRequired }) {
  generation += 1;
  showing = null;
  mfaMethods = methods;
  mfaForm.hidden = enrollmentRequired;
  $("mfa-enroll-required").hidden = !enrollmentRequired;
  setView("second-factor");
  if (enrollmentRequired) {
    say("Set up two-step verification to finish signing in.");
    $("enroll-slot-sign-in").append($("totp-enroll"));
    startEnrollment().catch(signInFailed);
    return;
  }
  // A passkey, when the account has one and this browser can use it; codes, when it has any.
  const passkey = methods.includes("webauthn") && client.passkeysSupported;
  const codes = methods.some((method) => method in MFA_PROMPTS);
  $("mfa-passkey-box").hidden = !passkey;
  $("mfa-or").hidden = !codes;
  $("mfa-code-box").hidden = !codes;
  $("mfa-code").disabled = !codes;
  if (codes) setMfaMethod(methods.includes("totp") ? "totp" : "recovery_code");
  else $("mfa-switch").hidden = true;
  if (passkey) {
    say(codes ? "One more step: use your passkey, or enter a code." :
      "One more step: use your passkey.");
    $("mfa-passkey").focus();
  } else {
    say("One more step: enter your code.");
    $("mfa-code").focus();
  }
}

/** A failed step of a sign-in: ask again, or start over when it can no longer finish. */
function signInFailed(error) {
  if (!client.mfaPending && document.body.dataset.state === "second-factor") {
    showSignedOut();
    say("That sign-in attempt is over (it expired, or too many codes were wrong). Sign in " +
      "again.", true);
    return;
  }
  say(describe(error), true);
}

mfaForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (mfaForm.dataset.busy) return;
  mfaForm.dataset.busy = "true";
  say("Checking the code…");
  try {
    await client.verifyMfa($("mfa-code").value, mfaForm.dataset.method);
    mfaForm.reset(); // `signedin` shows the signed-in view
  } catch (error) {
    signInFailed(error);
    if (client.mfaPending) $("mfa-code").select();
  } finally {
    delete mfaForm.dataset.busy;
  }
});

$("mfa-passkey").addEventListener("click", async () => {
  if (mfaForm.dataset.busy) return;
  mfaForm.dataset.busy = "true";
  $("mfa-passkey").disabled = true;
  say("Waiting for your passkey…");
  try {
    await client.verifyMfa(null, "webauthn");
    mfaForm.reset(); // `signedin` shows the signed-in view
  } catch (error) {
    signInFailed(error);
  } finally {
    delete mfaForm.dataset.busy;
    $("mfa-passkey").disabled = false;
  }
});

$("mfa-switch").addEventListener("click", () => {
  setMfaMethod(mfaForm.dataset.method === "totp" ? "recovery_code" : "totp");
  $("mfa-code").focus();
});

function cancelSignIn() {
  client.cancelMfa();
  showSignedOut("Sign-in cancelled");
  $("signin-email").focus();
}
$("mfa-cancel").addEventListener("click", cancelSignIn);
$("mfa-enroll-cancel").addEventListener("click", cancelSignIn);

// -- the second factor: the signed-in user's panel -----------------------------------------

let factorState = { factors: [], remaining: 0 };
let enrollment = null; // { factorId } while an authenticator app is being set up

function renderFactors(result) {
  const unavailable = result.status === "rejected" && result.reason?.status === 404;
  $("mfa-card").hidden = unavailable; // a server without second factors
  if (unavailable) return;
  if (result.status === "rejected") return report(result.reason);
  const { factors = [], recovery_codes_remaining: remaining = 0 } = result.value || {};
  factorState = { factors, remaining };
  const on = factors.length > 0;
  $("mfa-badge").hidden = false;
  $("mfa-badge").textContent = on ? "on" : "off";
  $("mfa-badge").classList.toggle("warn", !on);
  $("mfa-summary").textContent = on
    ? `A sign-in needs your password and a code. ${remaining} recovery ` +
      `${remaining === 1 ? "code" : "codes"} left` +
      (remaining <= 3 ? ": make new ones soon." : ".")
    : "Off: your password alone signs you in. Add an authenticator app, so that a stolen " +
      "password is not enough.";
  $("regenerate-codes").hidden = !on;
  factorList.replaceChildren(
    ...factors.map((factor) => {
      const item = el("li");
      const text = el("div");
      text.append(el("span", "what", factor.type === "totp" ? "Authenticator app" : factor.type));
      const meta = el("span", "meta", "added ");
      meta.append(timeElement(factor.created_at), " · ");
      if (factor.last_used_at) meta.append("last used ", timeElement(factor.last_used_at));
      else meta.append("not used yet");
      text.append(meta);
      const remove = el("button", "remove-factor secondary small", "Remove");
      remove.type = "button";
      remove.dataset.factorId = factor.id;
      remove.setAttribute("aria-label", "Remove the authenticator app");
      item.append(text, remove);
      return item;
    }),
  );
}

// The QR code: the server's SVG (text) is parsed as XML into a separate, inert document, and
// rebuilt here element by element from a short list of drawing elements and attributes; any
// other element refuses the whole image (the key below it still works).
const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_ELEMENTS = new Set(["svg", "g", "path", "rect", "title", "desc"]);
const SVG_ATTRIBUTES = new Set([
  "width", "height", "viewBox", "d", "x", "y", "fill", "fill-rule", "stroke", "stroke-width",
  "stroke-linecap", "transform", "shape-rendering",
]);

function rebuiltSvg(text) {
  if (typeof text !== "string" || text.length > 100_000) return null;
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = parsed.documentElement;
  if (root.namespaceURI !== SVG_NS || root.localName !== "svg") return null;
  if (parsed.getElementsByTagNameNS("*", "parsererror").length) return null;
  const copy = (node) => {
    if (node.namespaceURI !== SVG_NS || !SVG_ELEMENTS.has(node.localName)) return null;
    const out = document.createElementNS(SVG_NS, node.localName);
    for (const attribute of node.attributes) {
      const value = attribute.value;
      if (attribute.namespaceURI || !SVG_ATTRIBUTES.has(attribute.name)) continue;
      if (/url|:|[<>&]/i.test(value)) continue; // no references to anything
      out.setAttribute(attribute.name, value);
    }
    for (const child of node.childNodes) {
      if (child.nodeType === Node.ELEMENT_NODE) {
        const part = copy(child);
        if (!part) return null;
        out.append(part);
      } else if (child.nodeType === Node.TEXT_NODE && ["title", "desc"].includes(node.localName)) {
        out.append(child.data);
      }
    }
    return out;
  };
  const svg = copy(root);
  if (!svg) return null;
  // Scalable by CSS: a viewBox from the drawing's own size when it has none.
  const [width, height] = [svg.getAttribute("width"), svg.getAttribute("height")];
  if (!svg.hasAttribute("viewBox") && /^\d+(\.\d+)?$/.test(`${width}`) &&
      /^\d+(\.\d+)?$/.test(`${height}`)) {
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  }
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  return svg;
}

async function startEnrollment() {
  say("Setting up an authenticator app…");
  const started = await client.enrollTotp();
  enrollment = { factorId: started.factor_id };
  const qr = rebuiltSvg(started.qr_svg);
  $("totp-qr").replaceChildren(qr || el("p", "hint", "No QR code: type the key instead."));
  $("totp-secret").textContent = started.secret;
  $("totp-enroll").hidden = false;
  $("totp-start").hidden = true;
  say("Scan the QR code, or type the key, then enter the code the app shows.");
  $("totp-code").focus();
}

function endEnrollment() {
  enrollment = null;
  $("totp-qr").replaceChildren();
  $("totp-secret").textContent = "";
  $("totp-confirm-form").reset();
  $("totp-enroll").hidden = true;
  $("totp-start").hidden = false;
  $("enroll-slot-account").append($("totp-enroll"));
}

function showRecoveryCodes(codes) {
  $("recovery-codes").replaceChildren(...codes.map((code) => {
    const item = el("li");
    item.append(el("code", "", code));
    return item;
  }));
  $("recovery-box").hidden = false;
  $("recovery-title").focus();
}

function hideRecoveryCodes() {
  $("recovery-codes").replaceChildren();
  $("recovery-box").hidden = true;
}

/** Signed out, or a sign-in given up: nothing of a second factor stays on the page. */
function clearSecondFactor() {
  endEnrollment();
  hideRecoveryCodes();
  factorList.replaceChildren();
  factorState = { factors: [], remaining: 0 };
  $("mfa-badge").hidden = true;
  $("mfa-summary").textContent = "";
  mfaMethods = [];
  if (stepUpAnswer) answerStepUp(null);
}

onClick($("totp-start"), startEnrollment);

const confirmForm = $("totp-confirm-form");
confirmForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (confirmForm.dataset.busy || !enrollment) return;
  confirmForm.dataset.busy = "true";
  say("Checking the code…");
  try {
    const signingIn = document.body.dataset.state === "second-factor";
    const result = await client.confirmTotp(enrollment.factorId, $("totp-code").value);
    endEnrollment();
    // A sign-in that had to set up a factor is signed in now (`signedin`): wait for the view.
    if (signingIn) await showing;
    say("Two-factor authentication is on for your account.");
    if (result.recovery_codes) showRecoveryCodes(result.recovery_codes);
    else $("mfa-title").focus();
    if (!signingIn) await reloadLists();
  } catch (error) {
    if (document.body.dataset.state === "second-factor") signInFailed(error);
    else report(error);
    if (enrollment) $("totp-code").select();
  } finally {
    delete confirmForm.dataset.busy;
  }
});

$("totp-cancel").addEventListener("click", () => {
  if (document.body.dataset.state === "second-factor") return cancelSignIn();
  endEnrollment();
  say("Setup cancelled: nothing was changed.");
  $("totp-start").focus();
});

$("recovery-done").addEventListener("click", () => {
  hideRecoveryCodes();
  $("mfa-title").focus();
});

onClick($("regenerate-codes"), async () => {
  const codes = await client.regenerateRecoveryCodes();
  say("New recovery codes: the old ones no longer work.");
  showRecoveryCodes(codes);
  await reloadLists();
});

factorList.addEventListener("click", async (event) => {
  const button = event.target.closest("button.remove-factor");
  if (!button || button.disabled) return;
  button.disabled = true;
  try {
    await client.removeFactor(button.dataset.factorId);
    say("Authenticator app removed.");
    hideRecoveryCodes();
    await reloadLists();
    $("mfa-title").focus(); // the button is gone; keep the keyboard user nearby
  } catch (error) {
    button.disabled = false;
    report(error);
  }
});

// -- passkeys: the signed-in user's card ---------------------------------------------------

let passkeyState = []; // the user's passkeys, as last listed

function renderPasskeys(result) {
  const unavailable = result.status === "rejected" && result.reason?.status === 404;
  $("passkeys-card").hidden = unavailable; // a server with passkeys off
  if (unavailable) {
    passkeyState = [];
    return;
  }
  if (result.status === "rejected") return report(result.reason);
  passkeyState = Array.isArray(result.value) ? result.value : [];
  const count = passkeyState.length;
  $("passkeys-badge").hidden = false;
  $("passkeys-badge").textContent = count ? String(count) : "none";
  $("passkey-form").hidden = !client.passkeysSupported;
  $("passkeys-summary").textContent = !client.passkeysSupported
    ? "This browser cannot use passkeys; you can still rename or remove the ones you have."
    : count
      ? "Your device unlocks a passkey with its fingerprint, face or screen lock; it works " +
        "only on this site, so it cannot be phished."
      : "No passkeys yet. A passkey signs you in with your device's fingerprint, face or " +
        "screen lock, and cannot be phished.";
  passkeyList.replaceChildren(...passkeyState.map(passkeyItem));
}

function passkeyItem(passkey) {
  const item = el("li");
  item.dataset.passkeyId = passkey.id;
  const text = el("div", "passkey-text");
  text.append(el("span", "what", passkey.name || "Passkey"));
  if (passkey.synced) {
    const badge = el("span", "badge synced", "synced");
    badge.title = "A multi-device passkey: your device's account keeps a copy";
    text.append(badge);
  }
  const meta = el("span", "meta", "added ");
  meta.append(timeElement(passkey.created_at), " · ");
  if (passkey.last_used_at) meta.append("last used ", timeElement(passkey.last_used_at));
  else meta.append("not used yet");
  text.append(meta);
  const buttons = el("div", "row-actions");
  const rename = el("button", "rename-passkey secondary small", "Rename");
  rename.type = "button";
  rename.setAttribute("aria-label", `Rename the passkey ${passkey.name || ""}`.trim());
  const remove = el("button", "remove-passkey secondary small", "Remove");
  remove.type = "button";
  remove.setAttribute("aria-label", `Remove the passkey ${passkey.name || ""}`.trim());
  buttons.append(rename, remove);
  item.append(text, buttons);
  return item;
}

/** An inline form in the passkey's row: its name, Save and Cancel. */
function startRenaming(item) {
  const passkey = passkeyState.find((one) => one.id === item.dataset.passkeyId);
  if (!passkey || item.querySelector("form")) return;
  const form = el("form", "rename-form");
  form.method = "post";
  const input = el("input");
  input.name = "name";
  input.type = "text";
  input.required = true;
  input.maxLength = 64;
  input.autocomplete = "off";
  input.value = passkey.name || "";
  input.setAttribute("aria-label", "New name of the passkey");
  const save = el("button", "small", "Save");
  save.type = "submit";
  const cancel = el("button", "cancel-rename secondary small", "Cancel");
  cancel.type = "button";
  const buttons = el("div", "row-actions");
  buttons.append(save, cancel);
  form.append(input, buttons);
  item.replaceChildren(form);
  input.select();
}

passkeyList.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  const item = button?.closest("li");
  if (!button || !item || button.disabled) return;
  if (button.classList.contains("rename-passkey")) return startRenaming(item);
  if (button.classList.contains("cancel-rename")) {
    item.replaceWith(passkeyItem(passkeyState.find((one) => one.id === item.dataset.passkeyId)));
    return $("passkeys-title").focus();
  }
  if (!button.classList.contains("remove-passkey")) return;
  button.disabled = true;
  try {
    await client.removePasskey(item.dataset.passkeyId);
    say("Passkey removed: it no longer signs you in. Your device may still list it; you can " +
      "delete it there.");
    await reloadLists();
    $("passkeys-title").focus(); // the button is gone; keep the keyboard user nearby
  } catch (error) {
    button.disabled = false;
    report(error);
  }
});

passkeyList.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const item = form.closest("li");
  if (form.dataset.busy || !item) return;
  form.dataset.busy = "true";
  try {
    const renamed = await client.renamePasskey(item.dataset.passkeyId, form.elements.name.value);
    say(`Passkey renamed to “${renamed?.name ?? form.elements.name.value.trim()}”.`);
    await reloadLists();
    $("passkeys-title").focus();
  } catch (error) {
    report(error);
  } finally {
    delete form.dataset.busy;
  }
});

const passkeyForm = $("passkey-form");
passkeyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (passkeyForm.dataset.busy) return;
  passkeyForm.dataset.busy = "true";
  const name = $("passkey-name").value.trim();
  say("Follow your browser's prompt to create the passkey…");
  try {
    const added = await client.registerPasskey(name);
    passkeyForm.reset();
    say(`Passkey “${added?.name ?? name}” added: it signs you in from now on.`);
    await reloadLists();
    $("passkeys-title").focus();
  } catch (error) {
    report(error);
  } finally {
    delete passkeyForm.dataset.busy;
  }
});

function clearPasskeys() {
  passkeyState = [];
  passkeyList.replaceChildren();
  $("passkeys-badge").hidden = true;
  $("passkeys-summary").textContent = "";
}

// -- passkeys: signing in with one, no password ------------------------------------------
// When the server offers it (TOKENWARD_PASSKEYS=passwordless: its sign-in options answer,
// where other modes answer 404), the sign-in form shows a button, and a conditional request
// waits in the background: the browser offers the passkeys in the email field's autofill.

let passwordless = null; // unknown until asked; then true or false for the page's life
let autofill = null; // the AbortController of the waiting conditional request

function stopPasskeyAutofill() {
  autofill?.abort();
  autofill = null;
}

async function offerPasskeySignIn() {
  stopPasskeyAutofill();
  if (passwordless === false || !client.passkeysSupported) {
    $("passkey-signin-box").hidden = true;
    return;
  }
  const controller = new AbortController();
  autofill = controller;
  try {
    passwordless = await client.canLoginWithPasskey();
  } catch {
    return; // the server is out of reach for now: offer it next time
  }
  const stillHere = () => autofill === controller && document.body.dataset.state === "signed-out";
  $("passkey-signin-box").hidden = !passwordless;
  if (!passwordless || !stillHere()) return;
  try {
    const user = await client.loginWithPasskey({ conditional: true, signal: controller.signal });
    if (user) say("Signed in with a passkey");
  } catch (error) {
    // Not started again by itself (a browser that answers at once would loop): the button,
    // or the next time the form shows, does.
    if (stillHere()) report(error);
  } finally {
    if (autofill === controller) autofill = null;
  }
}

onClick($("passkey-signin"), async () => {
  say("Follow your browser's prompt to sign in with a passkey…");
  try {
    await client.loginWithPasskey();
    say("Signed in with a passkey");
  } catch (error) {
    report(error);
    if (document.body.dataset.state === "signed-out") offerPasskeySignIn();
  }
});

// -- step-up: confirm it is you (RFC 9470) -------------------------------------------------
// The client asks (onStepUp) when an action needs a recent or a two-factor sign-in; the
// dialog's answer is the credentials it reauthenticates with, or null to give up.

const stepUpDialog = $("stepup-dialog");
const stepUpForm = $("stepup-form");
const stepUpMethod = $("stepup-method");
const stepUpSecret = $("stepup-secret");
let stepUpAnswer = null;

const STEP_UP_FIELDS = {
  password: { label: "Password", type: "password", autocomplete: "current-password" },
  totp: { label: "Code from the app", type: "text", autocomplete: "one-time-code" },
  recovery_code: { label: "Recovery code", type: "text", autocomplete: "off" },
  webauthn: null, // no field: the browser asks for the passkey
};

function setStepUpMethod(method) {
  const field = STEP_UP_FIELDS[method];
  stepUpMethod.value = method;
  $("stepup-secret-box").hidden = !field;
  stepUpSecret.disabled = !field;
  if (!field) return;
  $("stepup-secret-label").textContent = field.label;
  stepUpSecret.type = field.type;
  stepUpSecret.autocomplete = field.autocomplete;
  stepUpSecret.inputMode = method === "totp" ? "numeric" : "text";
  stepUpSecret.value = "";
}

function askToStepUp({ acrValues, maxAge, error }) {
  if (stepUpAnswer) answerStepUp(null); // one question at a time
  const twoFactor = acrValues.includes("aal2");
  const hasPasskey = passkeyState.length > 0 && client.passkeysSupported;
  // Codes when the user has an app; also when aal2 is wanted and nothing else is known.
  const hasCodes = factorState.factors.length > 0 || (twoFactor && !hasPasskey);
  const offered = {
    password: !twoFactor, totp: hasCodes, recovery_code: hasCodes, webauthn: hasPasskey,
  };
  for (const option of stepUpMethod.options) {
    option.hidden = !offered[option.value];
    option.disabled = option.hidden;
  }
  const ways = [hasPasskey && "a passkey", hasCodes && "a code"].filter(Boolean);
  const within = maxAge !== null ? ` (within ${Math.round(maxAge / 60)} min)` : "";
  $("stepup-reason").textContent = twoFactor
    ? "This needs two-step verification: confirm with " + [hasPasskey && "a passkey",
      hasCodes && "a code from your authenticator app, or a recovery code"]
      .filter(Boolean).join(", or ") + "."
    : `This needs a recent sign-in${within}: confirm with ${["your password", ...ways]
      .join(" or ")}.`;
  $("stepup-error").textContent = error ? describe(error) : "";
  setStepUpMethod(twoFactor ? (hasPasskey ? "webauthn" : "totp") : "password");
  return new Promise((resolve) => {
    stepUpAnswer = resolve;
    if (!stepUpDialog.open) stepUpDialog.showModal();
    (stepUpSecret.disabled ? stepUpMethod : stepUpSecret).focus();
  });
}

function answerStepUp(credentials) {
  const resolve = stepUpAnswer;
  stepUpAnswer = null;
  stepUpForm.reset();
  if (stepUpDialog.open) stepUpDialog.close();
  resolve?.(credentials);
}

stepUpMethod.addEventListener("change", () => {
  setStepUpMethod(stepUpMethod.value);
  if (!stepUpSecret.disabled) stepUpSecret.focus();
});

stepUpForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const method = stepUpMethod.value;
  const secret = stepUpSecret.value;
  if (method === "webauthn") {
    say("Follow your browser's prompt to confirm with a passkey…");
    return answerStepUp({ method });
  }
  say("Confirming…");
  answerStepUp(method === "password" ? { password: secret } : { method, code: secret });
});

$("stepup-cancel").addEventListener("click", () => answerStepUp(null));
stepUpDialog.addEventListener("close", () => {
  if (stepUpAnswer) answerStepUp(null); // Escape
});

// -- the development mailbox: GET /demo/mailbox, when the server offers it -------------------

const mailboxUrl = new URL("demo/mailbox", base).href;
let mailboxAvailable = true;
let mailboxTimers = [];

// Only web links become links; everything else stays text.
const LINK = /https?:\/\/[^\s<>"']+/g;

function linkified(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    const url = match[0].replace(/[.,;:!?)\]]+$/, ""); // sentence punctuation after a link
    parts.push(text.slice(last, match.index));
    const link = el("a", "", url);
    link.href = url;
    parts.push(link);
    last = match.index + url.length;
  }
  parts.push(text.slice(last));
  return parts;
}

function renderMailbox(mails) {
  mailList.replaceChildren(
    ...mails.map((mail) => {
      const item = el("li");
      const head = el("div", "mail-head");
      head.append(el("span", "what", mail.subject));
      const meta = el("span", "meta", `To ${mail.to} · `);
      meta.append(timeElement(mail.sent_at));
      head.append(meta);
      const text = el("pre", "mail-text");
      text.append(...linkified(String(mail.text ?? "")));
      item.append(head, text);
      return item;
    }),
  );
  const count = mails.length === 1 ? "1 mail" : `${mails.length || "No"} mails`;
  if ($("mailbox-count").textContent !== count) $("mailbox-count").textContent = count;
}

async function loadMailbox() {
  if (!mailboxAvailable) return;
  let response;
  try {
    response = await fetch(mailboxUrl, { cache: "no-store" });
  } catch {
    return; // unreachable for now: keep what is shown
  }
  if (response.status === 404) {
    // Not development, or mails really go out: there is no mailbox to show.
    mailboxAvailable = false;
    $("mailbox-card").hidden = true;
    return;
  }
  if (!response.ok) return;
  const mails = await response.json();
  if (!Array.isArray(mails)) return;
  renderMailbox(mails);
  $("mailbox-card").hidden = false;
}

/** Look again a few times: mails are sent by a worker, shortly after the request. */
function mailboxSoon() {
  for (const timer of mailboxTimers) clearTimeout(timer);
  mailboxTimers = [500, 1500, 3000, 6000].map((ms) => setTimeout(loadMailbox, ms));
}

$("reload-mailbox").addEventListener("click", loadMailbox);

// -- the pages of mailed links -----------------------------------------------------------

const LANDINGS = {
  "verify-email": {
    title: "Verify your email address",
    intro: "Confirm that this address is yours.",
    action: (token) => client.verifyEmail(token),
    done: "Your email address is verified.",
  },
  "reset-password": {
    title: "Choose a new password",
    intro: "Set a new password for your account. Every session of the account is then " +
      "signed out.",
    done: "Your password was changed and every session signed out. Sign in with the new " +
      "password.",
  },
  "confirm-email": {
    title: "Confirm your new email address",
    intro: "Confirm to make this the address of your account.",
    action: (token) => client.confirmEmailChange(token),
    done: "Your email address was changed, and is verified.",
  },
  "cancel-email-change": {
    title: "Cancel the email change",
    intro: "Someone asked to change the email address of your account. Confirm to cancel " +
      "the change; your address stays as it is.",
    action: (token) => client.cancelEmailChange(token),
    done: "The email change was cancelled: your address stays as it is. If you did not ask " +
      "for it, change your password too.",
  },
};

const landing = LANDINGS[location.pathname.split("/").pop()];
// Read once, and gone from the address bar at once (history.replaceState).
const landingToken = landing ? tokenFromFragment() : null;
const landingResult = $("landing-result");

function landingSay(message, isError = false) {
  landingResult.textContent = message;
  landingResult.classList.toggle("error", isError);
}

function landingFinished(message, isError = false) {
  $("landing-confirm").hidden = true;
  $("reset-form").hidden = true;
  $("landing-continue").hidden = false;
  landingSay(message, isError);
  landingResult.focus(); // the button or the form just went away
  loadMailbox();
  if (!isError && client.signedIn) showSignedIn(); // the new address, or the session ended
}

function landingFailed(error, retry) {
  const final = error instanceof TokenwardError && [400, 404, 409].includes(error.status);
  if (final) return landingFinished(describe(error), true);
  landingSay(describe(error), true); // try again: a weak password, a limit, the network
  retry.focus();
}

function setUpLanding() {
  if (!landing) return;
  $("landing").hidden = false;
  $("landing-title").textContent = landing.title;
  document.title = `${landing.title} · tokenward demo`;
  if (landingToken) {
    $("landing-intro").textContent = landing.intro;
    (landing.action ? $("landing-confirm") : $("reset-form")).hidden = false;
  } else {
    $("landing-intro").textContent =
      "This page needs the whole link from your email, token included. Open it again.";
    $("landing-continue").hidden = false;
  }
  $("landing-title").focus();
}

$("landing-confirm-button").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (button.disabled) return;
  button.disabled = true;
  landingSay("Confirming…");
  try {
    await landing.action(landingToken);
    landingFinished(landing.done);
    // A changed address: show it, once any load of the signed-in view already under way
    // (it may have read the old one) is done.
    Promise.resolve(showing).finally(() => {
      if (document.body.dataset.state === "signed-in") showSignedIn();
    });
  } catch (error) {
    landingFailed(error, button);
  } finally {
    button.disabled = false;
  }
});

const resetForm = $("reset-form");
resetForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (resetForm.dataset.busy) return;
  resetForm.dataset.busy = "true";
  landingSay("Setting the new password…");
  try {
    await client.resetPassword(landingToken, resetForm.elements.password.value);
    resetForm.reset();
    landingFinished(landing.done);
  } catch (error) {
    landingFailed(error, $("reset-password")); // a weak password keeps the link usable
  } finally {
    delete resetForm.dataset.busy;
  }
});

// A mailed link for this same page changes only the fragment: load the page for it.
addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.replace(/^#/, "")).has("token")) location.reload();
});

setUpLanding();
loadMailbox();

sessionList.addEventListener("click", async (event) => {
  const button = event.target.closest("button.revoke");
  if (!button) return;
  button.disabled = true;
  try {
    await client.revokeSession(button.dataset.sessionId);
    if (!client.signedIn) return; // the current session: the `signedout` event took over
    say("Session revoked");
    await reloadLists();
    $("sessions-title").focus(); // the button is gone; keep the keyboard user nearby
  } catch (error) {
    button.disabled = false;
    report(error);
  }
});

document.body.dataset.state = "loading";
if (await client.start()) await showSignedIn();
else if (document.body.dataset.state === "loading") showSignedOut();
