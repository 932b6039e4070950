// A front-end on its own origin using tokenward.js from the tokenward server. The module is
// also fine copied into the app's own bundle: it has no dependencies.
const server = new URLSearchParams(location.search).get("server") || "http://localhost:8000";
const { createClient } = await import(`${server}/static/tokenward.js`);
const client = createClient({ baseUrl: server });

const $ = (id) => document.getElementById(id);

async function show() {
  const user = await client.getUser();
  $("signin").hidden = Boolean(user);
  $("app").hidden = !user;
  $("who").textContent = user ? user.email : "";
  document.body.dataset.state = user ? "signed-in" : "signed-out";
}

// A user with a second factor: login() signs nobody in yet and says so (docs/mfa.md).
async function signIn() {
  const result = await client.login($("email").value, $("password").value);
  if (result && result.mfaRequired && !result.enrollmentRequired) {
    const code = (window.prompt("Code from your authenticator app, or a recovery code") || "").trim();
    if (code) await client.verifyMfa(code, /^\d{6}$/.test(code) ? "totp" : "recovery_code");
  }
}

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn();
  } catch (error) {
    $("status").textContent = error.message;
  }
});
$("register").addEventListener("click", async () => {
  try {
    await client.register($("email").value, $("password").value);
    await signIn();
  } catch (error) {
    $("status").textContent = error.message;
  }
});
$("signout").addEventListener("click", () => client.logout());
for (const name of ["signedin", "signedout", "sessionended"]) {
  client.addEventListener(name, () => show());
}
await show();
