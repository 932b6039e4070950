// The tokenward demo page. Everything from the server goes into the page as text
// (textContent, never innerHTML); the access token never leaves the client's memory.
// The same page answers the links of mails (verify-email, reset-password, confirm-email,
// cancel-email-change): it reads the token from the fragment and posts it when asked.
import { createClient, tokenFromFragment, TokenwardError } from "../static/tokenward.js";

// The folder of the page: "/" itself, or the mount point when tokenward is embedded.
const base = new URL(".", location.href);
const client = createClient({ baseUrl: base.href.replace(/\/$/, "") });

const $ = (id) => document.getElementById(id);
const view = { "signed-out": $("signed-out"), "signed-in": $("signed-in") };
const [status, who, verified, ttl, sessionList, eventList, mailList] =
  ["status", "who", "verified", "token-ttl", "sessions", "events", "mailbox"].map($);

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
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function say(message, isError = false) {
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function describe(error) {
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
      default:
        break;
    }
    return error.rule ? `${error.message} (rule: ${error.rule})` : error.message;
  }
  return "Could not reach the server. Check the connection and try again.";
}

function report(error) {
  // A 401 after the session ended is told by the `sessionended` / `signedout` events instead.
  if (error instanceof TokenwardError && error.status === 401 && !client.signedIn) return;
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

function setView(state) {
  const previous = document.body.dataset.state;
  const leaving = view[previous];
  const focused = document.activeElement;
  // Move focus only when it would otherwise vanish with the section being hidden.
  const lost = !focused || focused === document.body || leaving?.contains(focused);
  const moveFocus = previous !== state && leaving && lost;
  for (const [name, section] of Object.entries(view)) section.hidden = name !== state;
  document.body.dataset.state = state;
  if (state === "signed-in") tick();
  if (moveFocus) (state === "signed-in" ? who : $("signed-out-title")).focus();
}

const lists = () => [client.sessions(), client.events(10)];
let generation = 0; // bumped on every view change, so that late answers are dropped
let showing = null;

function showSignedIn() {
  if (showing) return showing;
  const mine = ++generation;
  const run = (async () => {
    const [user, sessions, events] = await Promise.allSettled([client.getUser(), ...lists()]);
    if (mine !== generation) return;
    if (user.status === "fulfilled" && user.value) {
      who.textContent = user.value.email;
      renderVerified(user.value);
      renderSessions(sessions);
      renderEvents(events);
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
  sessionList.replaceChildren();
  eventList.replaceChildren();
  hideDeleteConfirm();
  for (const form of view["signed-in"].querySelectorAll("form")) form.reset(); // no passwords
  setView("signed-out");
  if (message) say(message);
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
  const [sessions, events] = await Promise.allSettled(lists());
  if (mine !== generation) return;
  renderSessions(sessions);
  renderEvents(events);
}

function tick() {
  if (document.body.dataset.state !== "signed-in") return;
  const expiresAt = client.expiresAt;
  ttl.textContent =
    expiresAt === null
      ? "No access token in memory"
      : `Access token expires in ${Math.max(0, Math.round((expiresAt - Date.now()) / 1000))} s`;
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
  await client.login(email, password);
});

onSubmit($("signin-form"), async (email, password) => {
  say("Signing in…");
  try {
    await client.login(email, password);
  } catch (error) {
    if (error instanceof TokenwardError && error.type === `${PROBLEM}email-not-verified`) {
      $("resend-email").value = email; // ready for "Resend verification email"
    }
    throw error;
  }
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
