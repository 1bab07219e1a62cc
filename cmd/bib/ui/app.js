// bib supervisor page: sign in, list the calls in your monitoring search
// space, listen to one (WHEP: POST an SDP offer, play the answer's audio),
// stop. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("bib_token") || "";
let listening = null; // {callId, pc, location}
let pollTimer = null;
let recTimer = null;

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  opts.headers = authHeaders(opts.headers);
  opts.credentials = "same-origin";
  const r = await fetch(path, opts);
  if (r.status === 401) { showSignIn(); throw new Error("signed out"); }
  return r;
}

function showSignIn() {
  stopPolling();
  $("signin").hidden = false;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
}

function showApp(user) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = !user;
  $("who").textContent = user ? "Signed in as " + user : "";
  startPolling();
}

async function checkSession() {
  const r = await fetch("/api/v1/session", { headers: authHeaders(), credentials: "same-origin" });
  if (r.ok) {
    const s = await r.json();
    if (!s.auth) { showApp(""); return; }
    showApp(s.user);
    return;
  }
  showSignIn();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("/api/v1/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: $("user").value, password: $("password").value }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { $("login-error").textContent = body.reason || "Sign-in failed."; return; }
  token = body.token;
  sessionStorage.setItem("bib_token", token);
  $("password").value = "";
  showApp(body.user);
});

$("logout").addEventListener("click", async () => {
  await stopListening();
  await fetch("/api/v1/logout", { method: "POST", headers: authHeaders(), credentials: "same-origin" });
  token = "";
  sessionStorage.removeItem("bib_token");
  showSignIn();
});

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  return m + ":" + String(s % 60).padStart(2, "0");
}

function agentOf(call) {
  const sides = (call.gate && call.gate.sides) || [];
  if (sides.length > 0) {
    const a = sides[0];
    return { agent: a.line + (a.device ? " (" + a.device + ")" : ""), other: a.side === "a" ? call.callee : call.caller, sides };
  }
  return { agent: call.caller, other: call.callee, sides };
}

function recordingState(call, sides) {
  if (Array.isArray(call.recordings) && call.recordings.length > 0) {
    return call.recordings.map((r) => r.status).join(", ");
  }
  for (const s of sides) {
    for (const v of s.verdicts || []) {
      if (v.action === "record") return v.allowed ? "allowed" : "off";
    }
  }
  return "off";
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

async function refreshCalls() {
  let calls = [];
  try {
    const r = await api("/api/v1/calls");
    calls = (await r.json()).calls || [];
  } catch (e) { return; }
  const tbody = document.querySelector("#calls tbody");
  tbody.replaceChildren();
  $("no-calls").hidden = calls.length > 0;
  const now = Date.now();
  for (const c of calls) {
    const tr = document.createElement("tr");
    tr.dataset.callId = c.id;
    const who = agentOf(c);
    cell(tr, who.agent);
    cell(tr, who.other);
    cell(tr, fmtDuration(now - Date.parse(c.answer || c.start)));
    cell(tr, recordingState(c, who.sides));
    const td = cell(tr, "");
    const b = document.createElement("button");
    const mine = listening && listening.callId === c.id;
    b.textContent = mine ? "Stop" : "Listen";
    b.className = mine ? "listening" : "";
    b.dataset.action = mine ? "stop" : "listen";
    b.addEventListener("click", () => (mine ? stopListening() : listen(c.id)));
    td.appendChild(b);
    tbody.appendChild(tr);
  }
  if (listening && !calls.some((c) => c.id === listening.callId)) {
    await stopListening("The call ended.");
  }
}

async function refreshRecordings() {
  const tbody = document.querySelector("#recordings tbody");
  let recs = [];
  try {
    const r = await api("/api/v1/recordings?limit=50");
    if (r.ok) recs = (await r.json()).recordings || [];
  } catch (e) { /* not available: show none */ }
  tbody.replaceChildren();
  $("no-recordings").hidden = recs.length > 0;
  for (const m of recs) {
    const tr = document.createElement("tr");
    cell(tr, m.start_time ? new Date(m.start_time).toLocaleString() : "");
    cell(tr, (m.near && (m.near.line || m.near.addr)) || "");
    cell(tr, (m.far && (m.far.line || m.far.addr)) || "");
    cell(tr, fmtDuration(m.duration_ms || 0));
    cell(tr, m.status || "");
    const td = cell(tr, "");
    if (m.status === "complete" || m.status === "completed" || m.status === "ok") {
      const a = document.createElement("audio");
      a.controls = true;
      a.preload = "none";
      a.src = "/api/v1/recordings/" + encodeURIComponent(m.id) + "/audio";
      td.appendChild(a);
    }
    tbody.appendChild(tr);
  }
}

function startPolling() {
  stopPolling();
  const tick = () => { refreshCalls(); };
  tick();
  refreshRecordings();
  pollTimer = setInterval(tick, 1000);
  recTimer = setInterval(refreshRecordings, 15000);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  if (recTimer) clearInterval(recTimer);
  pollTimer = recTimer = null;
}

async function listen(callId) {
  await stopListening();
  $("listen-error").textContent = "";
  $("listen-status").textContent = "Connecting...";
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    const player = $("player");
    player.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    player.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    if (listening && listening.pc === pc) {
      $("listen-status").textContent = pc.connectionState === "connected" ? "Listening to call " + callId : pc.connectionState;
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, 2000);
  });
  const r = await api("/api/v1/calls/" + encodeURIComponent(callId) + "/listen", {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  if (r.status !== 201) {
    const body = await r.json().catch(() => ({}));
    pc.close();
    $("listen-status").textContent = "";
    $("listen-error").textContent = body.reason || ("Listening refused (" + r.status + ").");
    return;
  }
  listening = { callId, pc, location: r.headers.get("Location") };
  window.bibListening = listening; // for tests and debugging
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  refreshCalls();
}

async function stopListening(msg) {
  const l = listening;
  listening = null;
  window.bibListening = null;
  if (!l) return;
  l.pc.close();
  $("player").srcObject = null;
  if (l.location) {
    await fetch(l.location, { method: "DELETE", headers: authHeaders(), credentials: "same-origin" }).catch(() => {});
  }
  $("listen-status").textContent = msg || "";
  refreshCalls();
}

// Audio statistics of the current session (used by the browser test).
window.bibAudioStats = async function () {
  if (!listening) return null;
  const stats = await listening.pc.getStats();
  let out = null;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out = { packetsReceived: s.packetsReceived || 0, audioLevel: s.audioLevel || 0, totalAudioEnergy: s.totalAudioEnergy || 0, packetsLost: s.packetsLost || 0 };
    }
  });
  return out;
};

checkSession();
