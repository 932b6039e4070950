// The tokenward demo page. Everything from the server goes into the page as text
// (textContent, never innerHTML); the access token never leaves the client's memory.
import { createClient, TokenwardError } from "../static/tokenward.js";

const client = createClient({ baseUrl: new URL(".", location.href).href.replace(/\/$/, "") });

const $ = (id) => document.getElementById(id);
const view = { "signed-out": $("signed-out"), "signed-in": $("signed-in") };
const [status, who, ttl, sessionList, eventList] =
  ["status", "who", "token-ttl", "sessions", "events"].map($);

const EVENT_LABELS = {
  "user.registered": "Account created", "login.succeeded": "Signed in",
  "login.failed": "Failed sign-in attempt", "password.changed": "Password changed",
  "session.refreshed": "Session refreshed", "session.logout": "Signed out",
  "session.reuse_detected": "Reused refresh token: session ended",
  "session.logout_all": "Signed out everywhere", "session.revoked": "Session revoked",
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function say(message, isError = false) {
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function describe(error) {
  if (error instanceof TokenwardError) {
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
  ttl.textContent = "";
  sessionList.replaceChildren();
  eventList.replaceChildren();
  setView("signed-out");
  if (message) say(message);
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

function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.busy) return;
    form.dataset.busy = "true";
    try {
      await action(form.elements.email.value.trim(), form.elements.password.value);
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
  await client.register(email, password);
  say("Account created; signing in…");
  await client.login(email, password);
});

onSubmit($("signin-form"), async (email, password) => {
  say("Signing in…");
  await client.login(email, password);
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
