// Roombox panel: the framed video over WebRTC, the box's events over a WebSocket, a small room map.
// window.roombox exposes the page's state for tests and debugging.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video");

const state = (window.roombox = {
  framesDecoded: 0,      // frames presented by the <video>, counted with requestVideoFrameCallback
  fps: 0,                // presented frames per second over the last second
  videoWidth: 0,
  videoHeight: 0,
  pcState: "new",
  connected: false,      // WebRTC connected
  wsConnected: false,
  reconnects: 0,
  lastDrop: null,        // why the last connection was given up
  lastShot: null,
  lastFaces: null,
  lastDoa: null,
  devices: {},
  camera: { width: 1920, height: 1080, hfov_deg: 90 },  // replaced by a "camera" event if the box sends one
  lastReply: null,
  signedIn: null,        // true once a session is known good, false when the box takes none (sign-in needed)
  roomStale: true,       // the room's state on screen is not known to be true (the socket is down)
  wsCloseCode: null,     // why the socket last closed (4401: its credentials ended)
  pending: {},           // what was last sent and not yet confirmed: muted, volume, ptz
  stats: {},             // the box's counters, from "stats" events
  policy: null,          // the framing mode the box runs (speaker, group, gallery, manual, off)
  why: [],               // the latest cuts, newest first: {t, mode, reason}
  ptz: { pan: 0, tilt: 0, zoom: 1 },
  room: null,            // the room's controls (a "room" event): muted, volume, meetings, cameras, mic arrays
  settings: null,        // the settings form's last outcome: {ok, text}
  calibration: null,     // the mic array's calibration: saved, under way (a "calibration" event or the API)
  calibMessage: null,    // the calibration flow's last outcome: {ok, text}
  send: sendCommand,     // send({cmd: ...}) -> Promise of the reply's data
  rtcSummary,            // () -> Promise of {video: {...}, audio: {...}} from the receiver's getStats
});

// ---------- WebRTC video ----------
let pc = null;
let retryTimer = null;
let retryDelay = 1000;
let lastFrameAt = 0;

function setConn(cls, text) {
  const el = $("conn");
  el.className = "item " + cls;
  $("conn-text").textContent = text;
}

function waitForIce(conn, timeoutMs) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { conn.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (conn.iceGatheringState === "complete") done(); };
    conn.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

const SIGN_IN_NEEDED = "sign-in needed (the kiosk link, or the PIN)";
const BOX_SILENT = "the box does not answer (restarting?)";
const BOX_LOST = "connection to the box lost – reconnecting…";

// What went wrong, in words for the room: a fetch that could not reach the box rejects with the browser's own
// TypeError ("Failed to fetch", "NetworkError when attempting to fetch resource.", "Load failed"), never shown raw.
function errorWords(e) {
  if (!e) return "";
  const text = String(e.message || e);
  // (by its words only: a TypeError of the panel's own code is not a network outage)
  if (/failed to fetch|networkerror|load failed|network error/i.test(text)) return BOX_SILENT;
  return text.replace(/^(Type)?Error: /, "");
}

// the panel's socket is closed and waiting to be opened again (not: still opening)
function socketLost() { return ws === null || ws.readyState > WebSocket.OPEN; }

function scheduleReconnect(why) {
  if (retryTimer) return;
  state.connected = false;
  state.lastDrop = why;
  setConn("bad", state.signedIn === false ? SIGN_IN_NEEDED : why === BOX_SILENT ? why + " – reconnecting…" :
    socketLost() ? BOX_LOST : why + " – reconnecting…");
  if (pc) { try { pc.close(); } catch (e) { /* already closed */ } pc = null; }
  retryTimer = setTimeout(() => { retryTimer = null; state.reconnects += 1; connectVideo(); }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 10000);
}

// Start the video again now (after a sign-in), instead of at the end of the retry's back-off.
function restartVideo() {
  if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  retryDelay = 1000;
  connectVideo();
}

async function connectVideo() {
  // (with the socket down too, what the header says of the box stays until the box answers)
  if (state.signedIn !== false && !socketLost()) setConn("wait", "connecting…");
  if (pc) { try { pc.close(); } catch (e) { /* already closed */ } }
  state.connected = false;
  const conn = new RTCPeerConnection({ iceServers: [] });
  pc = conn;
  conn.addTransceiver("video", { direction: "recvonly" });
  conn.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  conn.ontrack = (ev) => {
    if (conn !== pc) return;
    stream.addTrack(ev.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch(() => { /* muted autoplay is allowed; a refusal only delays the picture */ });
  };
  conn.onconnectionstatechange = () => {
    if (conn !== pc) return;
    state.pcState = conn.connectionState;
    if (conn.connectionState === "connected") {
      state.connected = true;
      retryDelay = 1000;
      lastFrameAt = performance.now();
      if (socketLost()) setConn("bad", BOX_LOST); else setConn("ok", "live");
    } else if (conn.connectionState === "failed" || conn.connectionState === "closed") {
      scheduleReconnect("connection " + conn.connectionState);
    } else if (conn.connectionState === "disconnected") {
      if (!socketLost()) setConn("wait", "interrupted…");
      setTimeout(() => { if (conn === pc && conn.connectionState === "disconnected") scheduleReconnect("lost"); },
        4000);
    }
  };
  try {
    await conn.setLocalDescription(await conn.createOffer());
    await waitForIce(conn, 3000);
    const res = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: conn.localDescription.sdp, type: conn.localDescription.type }),
    });
    if (res.status === 401) {
      // the box does not know this page's session (it restarted, or the session ended): sign in again with the
      // token this tab was opened with, then try again at once; without one that the box takes, sign-in is needed
      const how = await ensureSession(false);
      if (conn !== pc) return;
      const again = how === "ok" || how === "renewed";
      if (how === "renewed") retryDelay = 250;
      throw new Error(again ? "signed in again" : how === "signed-out" ? SIGN_IN_NEEDED : "box unreachable");
    }
    if (!res.ok) throw new Error("offer refused: " + res.status);
    const answer = await res.json();
    if (conn !== pc) return;
    await conn.setRemoteDescription(answer);
  } catch (e) {
    if (conn === pc) scheduleReconnect(errorWords(e));
  }
}

async function rtcSummary() {
  const out = { video: null, audio: null };
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    const codec = r.codecId && stats.get(r.codecId) ? stats.get(r.codecId).mimeType : null;
    if (r.kind === "video") {
      out.video = { codec, framesDecoded: r.framesDecoded, framesDropped: r.framesDropped,
        framesPerSecond: r.framesPerSecond, frameWidth: r.frameWidth, frameHeight: r.frameHeight };
    } else if (r.kind === "audio") {
      out.audio = { codec, packetsReceived: r.packetsReceived, audioLevel: r.audioLevel,
        totalSamplesReceived: r.totalSamplesReceived, concealedSamples: r.concealedSamples };
    }
  });
  return out;
}

// Count presented frames and measure the frame rate.
const frameTimes = [];
let lastPresented = null;
function onVideoFrame(now, meta) {
  const presented = meta && typeof meta.presentedFrames === "number" ? meta.presentedFrames : null;
  let n = 1;
  if (presented !== null && lastPresented !== null && presented > lastPresented) n = presented - lastPresented;
  lastPresented = presented;
  state.framesDecoded += n;
  for (let i = 0; i < n; i++) frameTimes.push(now);
  lastFrameAt = performance.now();
  state.videoWidth = video.videoWidth;
  state.videoHeight = video.videoHeight;
  if (state.connected) $("res").textContent = video.videoWidth + "×" + video.videoHeight;
  $("overlay").classList.add("hidden");
  video.requestVideoFrameCallback(onVideoFrame);
}
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
  video.requestVideoFrameCallback(onVideoFrame);
}
video.addEventListener("emptied", () => { lastPresented = null; });

setInterval(() => {
  const now = performance.now();
  while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
  state.fps = frameTimes.length;
  $("fps").textContent = state.connected ? String(state.fps) : "–";
  if (!state.connected || now - lastFrameAt > 2000) $("res").textContent = "–";
  // The box sends a picture at least every two frame intervals, so a visible page that has shown nothing
  // for 4 s has lost the box (a box that drops the viewer is not noticed by the browser's ICE for long).
  if (state.connected && pc && document.visibilityState === "visible" && now - lastFrameAt > 4000) {
    scheduleReconnect("no video");
  }
  if (!state.connected || now - lastFrameAt > 2000) {
    $("overlay").classList.remove("hidden");
    $("overlay").textContent = state.connected ? "waiting for video…" : "no connection";
  }
}, 500);

$("sound").addEventListener("click", () => {
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  $("sound").textContent = video.muted ? "Sound on" : "Sound off";  // what a tap does
  $("sound").setAttribute("aria-pressed", String(!video.muted));
});

// ---------- events over the WebSocket ----------
let ws = null;
let wsTimer = null;
let wsDelay = 1000;
let nextId = 1;
const pending = new Map();

function dropSocket(sock, why) {
  if (ws === sock) ws = null;
  state.wsConnected = false;
  for (const [, p] of pending) p.reject(new Error(why));
  pending.clear();
  setStale(true);  // what the screen shows of the room is no longer known to be true
}

function connectEvents() {
  if (wsTimer) { clearTimeout(wsTimer); wsTimer = null; }
  if (ws) { const old = ws; dropSocket(old, "reconnecting"); old.close(1000); }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    if (sock !== ws) return;
    state.wsConnected = true;
    wsDelay = 1000;
    if (state.connected) setConn("ok", "live");
    else if (state.signedIn !== false) setConn("wait", "video reconnecting…");
  };
  sock.onclose = (ev) => {
    if (sock !== ws) return;  // replaced on purpose (a new sign-in)
    state.wsCloseCode = ev.code;
    dropSocket(sock, "connection closed");
    // the panel's link to the box is gone now: "live" is not claimed a moment longer (the video notices later)
    if (ev.code !== 4401 && state.signedIn !== false) setConn("bad", BOX_LOST);
    // A refused handshake (401: the box restarted and forgot the session) looks like any failure here (1006);
    // 4401: the session or its token ended. Either way, ask the box, and sign in again with the stored token.
    ensureSession(ev.code === 4401).then((how) => {
      if (how === "renewed" && !state.connected) restartVideo();
      if (how === "signed-out") setConn("bad", SIGN_IN_NEEDED);
      const delay = how === "renewed" ? 100 : wsDelay;
      if (how !== "renewed") wsDelay = Math.min(wsDelay * 2, 8000);
      if (!wsTimer && ws === null) wsTimer = setTimeout(connectEvents, delay);
    });
  };
  sock.onmessage = (ev) => {
    if (sock !== ws) return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    handleEvent(msg.kind, msg.data || {});
  };
}

function sendCommand(cmd) {
  return new Promise((resolve, reject) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ ...cmd, id }));
  });
}

function handleEvent(kind, data) {
  switch (kind) {
    case "shot":
      state.lastShot = data;
      $("shot-mode").textContent = data.mode || "–";
      $("shot-reason").textContent = data.reason || "";
      $("shot-reason").title = data.reason || "";
      if (data.policy !== state.policy) { state.policy = data.policy; drawModes(); }
      if (data.cut) {
        state.why.unshift({ t: data.t, mode: data.mode, reason: data.reason });
        state.why.length = Math.min(state.why.length, 10);
        drawWhy();
        if (data.policy === "manual") ptzShown(data);
      }
      drawMap();
      break;
    case "decisions":  // the latest cuts, newest first: sent on connect, and after each cut
      state.why = (data.cuts || []).slice(0, 10).map((c) => ({ t: c.t, mode: c.mode, reason: c.reason }));
      drawWhy();
      break;
    case "faces": state.lastFaces = data; drawMap(); break;
    case "doa": state.lastDoa = data; drawMap(); break;
    case "camera": state.camera = { ...state.camera, ...data }; drawMap(); break;
    case "stats": state.stats = data; drawStats(); break;
    case "calibration": state.calibration = { ...(state.calibration || {}), ...data }; drawCalibration(); break;
    case "room": takeRoom(data); break;
    case "meeting":  // one connector's state: the next "room" event has all of them
      joinTried.delete(data.name);  // news of it: shown as it is
      if (state.room) {
        state.room.meetings = state.room.meetings.map((m) => (m.name === data.name ? data : m));
        drawMeetings();
      }
      break;
    case "reply":
    case "error": {
      state.lastReply = { kind, ...data };
      const p = pending.get(data.id);
      if (p) { pending.delete(data.id); (kind === "reply" ? p.resolve : p.reject)(kind === "reply" ? data : new Error(data.error)); }
      break;
    }
    default:
      if (kind === "device") {  // one DeviceStatus
        state.devices[data.name] = data;
        drawDevices();
      }
      break;
  }
}

// The room's state, from a "room" event or a command's reply (the reply can overtake the event: an older state,
// by the box's clock, is not shown over a newer one).
function takeRoom(data) {
  const old = state.room;
  if (!state.roomStale && old && typeof old.t === "number" && typeof data.t === "number" && data.t < old.t) return;
  state.room = data;
  if (data.policy && data.policy !== state.policy) state.policy = data.policy;
  if (state.roomStale) setStale(false); else { drawModes(); drawRoom(); }
}

function drawStats() {
  const box = $("stats");
  box.textContent = "";
  for (const [k, v] of Object.entries(state.stats || {})) {
    if (typeof v === "object" || k === "t") continue;  // t: the box's monotonic clock, meaningless here
    const dt = document.createElement("dt");
    dt.textContent = k.replace(/_/g, " ");
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    box.append(dt, dd);
  }
}

function drawDevices() {
  const box = $("devices");
  box.textContent = "";
  const why = $("devices-why");  // a touch panel cannot hover: why a device is down is written out
  why.textContent = "";
  for (const name of Object.keys(state.devices).sort()) {
    const d = state.devices[name];
    if (d.state !== "running" && d.detail) why.append(el("li", "", `${name}: ${d.detail}`));
  }
  for (const name of Object.keys(state.devices).sort()) {
    const d = state.devices[name];
    const chip = document.createElement("span");
    chip.className = "chip " + d.state;
    chip.title = d.detail || "";
    const dot = document.createElement("i");
    dot.className = "dot";
    const label = document.createElement("span");
    label.textContent = name + " ";
    const st = document.createElement("small");
    st.textContent = d.state;
    label.appendChild(st);
    chip.append(dot, label);
    box.appendChild(chip);
  }
}

// ---------- room map: the camera at the bottom, looking up into the room ----------
function faceAzimuth(box) {
  const cam = state.camera;
  const half = ((state.lastFaces && state.lastFaces.width) || cam.width) / 2;
  const cx = box[0] + box[2] / 2;
  return Math.atan(((cx - half) / half) * Math.tan((cam.hfov_deg * Math.PI) / 360)) * 180 / Math.PI;
}

function drawMap() {
  const cv = $("map");
  const dpr = window.devicePixelRatio || 1;
  const W = cv.clientWidth || 300, H = Math.round(W * 0.56);
  if (cv.width !== Math.round(W * dpr)) { cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); }
  const g = cv.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const ox = W / 2, oy = H - 16, R = Math.min(W / 2 - 24, H - 40);
  const half = state.camera.hfov_deg / 2;
  const at = (az, r) => [ox + r * Math.sin(az * Math.PI / 180), oy - r * Math.cos(az * Math.PI / 180)];
  const arcAngle = (az) => -Math.PI / 2 + az * Math.PI / 180;
  g.clearRect(0, 0, W, H);
  // field of view wedge and the arc the faces sit on
  g.fillStyle = "rgba(108,182,255,0.06)";
  g.beginPath(); g.moveTo(ox, oy); g.arc(ox, oy, R + 14, arcAngle(-half), arcAngle(half)); g.closePath(); g.fill();
  g.strokeStyle = "#2a2f3a"; g.lineWidth = 2;
  g.beginPath(); g.arc(ox, oy, R, arcAngle(-half), arcAngle(half)); g.stroke();
  for (const a of [-half, half]) { const [x, y] = at(a, R + 14); g.beginPath(); g.moveTo(ox, oy); g.lineTo(x, y); g.stroke(); }
  // framed direction
  const shot = state.lastShot;
  if (shot && shot.target_azimuth_deg !== null && shot.target_azimuth_deg !== undefined) {
    const [x, y] = at(shot.target_azimuth_deg, R);
    g.strokeStyle = "#3ecf8e"; g.lineWidth = 4;
    g.beginPath(); g.arc(x, y, 18, 0, 2 * Math.PI); g.stroke();
  }
  // voice direction
  const doa = state.lastDoa;
  if (doa && doa.speech && doa.azimuth_deg !== null && doa.azimuth_deg !== undefined) {
    const [x, y] = at(doa.azimuth_deg, R + 10);
    g.strokeStyle = "#ff9f43"; g.lineWidth = 4; g.lineCap = "round";
    g.beginPath(); g.moveTo(ox, oy); g.lineTo(x, y); g.stroke();
  }
  // faces
  const faces = (state.lastFaces && state.lastFaces.faces) || [];
  g.fillStyle = "#6cb6ff";
  for (const f of faces) {
    const [x, y] = at(faceAzimuth(f.box), R);
    g.beginPath(); g.arc(x, y, 10, 0, 2 * Math.PI); g.fill();
  }
  // the camera
  g.fillStyle = "#e6e8ee";
  g.fillRect(ox - 14, oy - 6, 28, 16);
  g.fillStyle = "#8a91a0"; g.font = "13px system-ui, sans-serif"; g.textAlign = "left";
  g.fillText(faces.length + (faces.length === 1 ? " face" : " faces"), 10, 20);
}
window.addEventListener("resize", drawMap);

// leave politely: the box frees this viewer at once instead of after ICE consent runs out (~30 s)
window.addEventListener("pagehide", () => { if (pc) pc.close(); });

// ---------- sign-in ----------
// A kiosk link carries its token in the fragment (http://box/#token=...: a fragment is never sent in a
// request nor logged). The page trades it for an HttpOnly session cookie and takes it out of the address bar,
// and keeps it in this tab's sessionStorage: the box keeps sessions in memory, so after it restarts (or when
// the session ends) the panel signs in again with it by itself, where it used to say "sign-in needed" until
// someone opened a new link. sessionStorage is this tab's and this origin's alone, survives a reload and goes
// with the tab; a script running on the page could read it, which is acceptable because the panel loads no
// third-party script (only /static/panel.js, served by the box; no CDN, no analytics, no inline code from
// elsewhere). A token the box refuses (revoked, expired, the demo's token of an earlier run) is forgotten.
const TOKEN_KEY = "roombox.token";

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage refused (a private mode): the panel then signs in once, as before */ }
}

function tokenInLink() {  // the token of a #token= link, taken out of the address bar
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + location.search);  // fires no hashchange
  try { return decodeURIComponent(m[1]); } catch (e) { return null; }
}

function signedOut(why) {
  state.signedIn = false;
  state.lastDrop = why;
  setConn("bad", SIGN_IN_NEEDED);
}

// -> "renewed" (a new session), "signed-out" (the token was refused: forgotten), "unreachable" (try later)
async function signInWith(token) {
  let res;
  try {
    res = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch (e) {
    state.lastDrop = "sign-in failed: " + errorWords(e);
    return "unreachable";
  }
  if (res.ok) { state.signedIn = true; signIns += 1; return "renewed"; }
  if (res.status >= 500 || res.status === 429) { state.lastDrop = "sign-in failed: " + res.status; return "unreachable"; }
  if (res.status === 401) storeToken(null);  // unknown, revoked or expired: it will not come back
  signedOut("sign-in refused: " + (await errorText(res)));
  return "signed-out";
}

// Whether the box knows this page's session; when it does not (or `ended`: the socket was closed because its
// credentials ended), sign in again with the stored token. -> "ok", "renewed", "signed-out" or "unreachable".
// The socket and the video may both find out at once: one check serves both.
let checking = null;
let signIns = 0;  // sessions signed in so far: a check that began before the latest one does not undo it
function ensureSession(ended) {
  if (!checking) checking = checkSession(ended).finally(() => { checking = null; });
  return checking;
}

async function checkSession(ended) {
  const before = signIns;
  if (!ended) {
    let res;
    try {
      res = await fetch("/api/session", { headers: { Accept: "application/json" } });
    } catch (e) {
      return "unreachable";  // the box is down or restarting
    }
    if (res.ok) { if (state.signedIn === false) state.signedIn = true; return "ok"; }
    if (res.status !== 401) return res.status >= 500 || res.status === 429 ? "unreachable" : "ok";
  }
  const token = storedToken();
  if (signIns !== before) return "renewed";  // signed in meanwhile (a new link, the PIN)
  if (!token) { signedOut("no session"); return "signed-out"; }
  return signInWith(token);
}

// A new kiosk link pasted into an open panel (only the fragment changes: the page does not reload).
async function useLink() {
  const token = tokenInLink();
  if (!token) return;
  storeToken(token);
  if ((await signInWith(token)) === "renewed") reconnect();
}
window.addEventListener("hashchange", () => { useLink().catch(() => {}); });

// The socket and the video again, at once, on the session just signed in.
function reconnect() {
  wsDelay = 1000;
  connectEvents();
  restartVideo();
}

async function start() {
  const token = tokenInLink();
  if (token) {
    storeToken(token);
    await signInWith(token);
  } else if (storedToken()) {
    await ensureSession(false);  // a reload: the session may still be good, else the stored token signs in
  }
  connectEvents();
  connectVideo();
}

// ---------- framing controls ----------
function drawModes() {
  for (const b of document.querySelectorAll("#modes [data-mode]")) {
    b.setAttribute("aria-pressed", String(!state.roomStale && b.dataset.mode === state.policy));
  }
}

// While the socket is down the box may have changed (or restarted: unmuted, volume back at its start), so the
// room's state on screen is shown as unknown, greyed, until the box sends it again.
function setStale(stale) {
  state.roomStale = stale;
  document.body.classList.toggle("stale", stale);
  if (stale) {
    state.pending = {};
    $("shot-mode").textContent = "–";
    $("shot-reason").textContent = "";
    $("shot-reason").title = "";
  }
  drawModes();
  drawRoom();
}

function drawWhy() {
  const list = $("why");
  list.textContent = "";
  if (!state.why.length) list.append(el("li", "muted", "no cut yet"));
  for (const w of state.why) {
    const li = document.createElement("li");
    const when = document.createElement("small");
    when.textContent = `${w.mode} · `;
    li.append(when, document.createTextNode(w.reason || ""));
    list.append(li);
  }
}

// Each card says what went wrong with its own controls, on its own line: a refused mute under Sound, not
// under Framing.
function errorLine(id) {
  return (e) => { $(id).textContent = e ? String(e.message || e) : ""; };
}
const showError = errorLine("panel-error");
const showSoundError = errorLine("sound-error");
const showMeetingError = errorLine("meeting-error");

// `show(error)` says what went wrong where the user looks (the Framing card's line unless told otherwise).
async function command(cmd, show = showError) {
  try {
    const reply = await sendCommand(cmd);
    show(null);
    if (reply.result && Array.isArray(reply.result.meetings)) takeRoom(reply.result);  // the room's state after it
    if (reply.result && reply.result.mode) { state.policy = reply.result.mode; drawModes(); }
    return reply;
  } catch (e) {
    show(e);
    return null;
  }
}

// Taps faster than the box's replies: the next value is computed from what was last sent and not yet confirmed
// (state.pending[key]), not from the last state the box confirmed; two mute taps in one tick then leave the room
// as it was, and five "−" taps go five steps down.
let pendingSeq = 0;
function sendPending(key, value, cmd, show = showError) {
  const seq = ++pendingSeq;
  state.pending[key] = { value, seq, confirmed: false };
  drawRoom();
  return command(cmd, show).then((reply) => {
    const p = state.pending[key];
    if (p && p.seq === seq) {
      // the latest one sent is answered: the box's state is the truth again (for ptz: once the shot shows it)
      if (key === "ptz" && reply) { p.confirmed = performance.now(); } else { delete state.pending[key]; }
      // this panel's own tap settling (a refused mute put back): not a change from elsewhere
      if (key === "muted") muteByTap = true;
      try { drawRoom(); } finally { if (key === "muted") muteByTap = false; }
    }
    return reply;
  });
}

function pendingValue(key, confirmed) {
  const p = state.pending[key];
  return p ? p.value : confirmed;
}

// Manual pan-tilt-zoom starts from the box's current shot (whoever framed it: another panel, the director),
// read back from its crop, or from what this panel last sent and the box has not shown yet.
const PTZ_STEP = 0.25;
function streamAspect() {
  if (state.videoWidth > 0 && state.videoHeight > 0) return state.videoWidth / state.videoHeight;
  const c = state.lastShot && state.lastShot.crop;
  return c && c[3] > 0 && !(state.lastShot.tiles || []).length ? c[2] / c[3] : 16 / 9;
}

function ptzGeometry() {
  const W = state.camera.width, H = state.camera.height, aspect = streamAspect();
  return { W, H, aspect, fullW: Math.min(W, H * aspect) };
}

function ptzFromShot(shot) {
  if (!shot || !shot.crop) return { pan: 0, tilt: 0, zoom: 1 };
  const { W, H, aspect, fullW } = ptzGeometry();
  const [x, y, w, h] = shot.crop;
  const cw = Math.min(fullW, Math.max(w, h * aspect, 1)), ch = cw / aspect;
  const zoom = Math.min(4, Math.max(1, fullW / cw));
  const clamp = (v) => Math.max(-1, Math.min(1, v));
  const pan = W - cw > 1 ? clamp((2 * (x + w / 2 - cw / 2)) / (W - cw) - 1) : 0;
  const tilt = H - ch > 1 ? clamp((2 * (y + h / 2 - ch / 2)) / (H - ch) - 1) : 0;
  return { pan, tilt, zoom };
}

function ptzShown(shot) {  // a manual shot arrived: once it shows what this panel sent, the shot is the truth
  const p = state.pending.ptz;
  if (!p || !p.confirmed) return;
  const seen = ptzFromShot(shot), want = p.value;
  const near = Math.abs(seen.pan - want.pan) < 0.03 && Math.abs(seen.tilt - want.tilt) < 0.03 &&
    Math.abs(seen.zoom / want.zoom - 1) < 0.03;
  if (near || performance.now() - p.confirmed > 1000) delete state.pending.ptz;
}

function ptz(action) {
  const p = state.pending.ptz;
  if (p && p.confirmed && performance.now() - p.confirmed > 1000) delete state.pending.ptz;  // shown by now
  const from = state.pending.ptz ? state.pending.ptz.value : ptzFromShot(state.lastShot);
  const v = { ...from };
  if (action === "home") Object.assign(v, { pan: 0, tilt: 0, zoom: 1 });
  if (action === "left") v.pan = Math.max(-1, v.pan - PTZ_STEP);
  if (action === "right") v.pan = Math.min(1, v.pan + PTZ_STEP);
  if (action === "up") v.tilt = Math.max(-1, v.tilt - PTZ_STEP);
  if (action === "down") v.tilt = Math.min(1, v.tilt + PTZ_STEP);
  if (action === "in") v.zoom = Math.min(4, v.zoom * 1.25);
  if (action === "out") v.zoom = Math.max(1, v.zoom / 1.25);
  // a crop as wide (or tall) as the picture cannot pan (tilt): no travel builds up that a later zoom would jump to
  const { W, H, aspect, fullW } = ptzGeometry();
  if (W - fullW / v.zoom < 1) v.pan = 0;
  if (H - fullW / v.zoom / aspect < 1) v.tilt = 0;
  state.ptz = v;
  return sendPending("ptz", v, { cmd: "ptz", pan: v.pan, tilt: v.tilt, zoom: v.zoom });
}

for (const b of document.querySelectorAll("#modes [data-mode]")) {
  b.addEventListener("click", () => command({ cmd: "set_mode", mode: b.dataset.mode }));
}
for (const b of document.querySelectorAll("#ptz [data-ptz]")) {
  b.addEventListener("click", () => ptz(b.dataset.ptz));
}

// ---------- the room's controls: meetings, microphones, speaker, sources ----------
const MEETING_STATES = {
  stopped: ["idle", "idle"],
  connecting: ["connecting", "wait"],
  retrying: ["retrying", "wait"],
  connected: ["in meeting", "ok"],
  failed: ["failed", "bad"],
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const joinTried = new Map();   // meeting -> {state, detail, at}: Join tapped on a failed meeting, no news yet
const openDetails = new Set(); // meetings whose whole error text is shown

function drawMeetings() {
  const list = $("meetings");
  const meetings = (state.room && state.room.meetings) || [];
  list.textContent = "";
  if (!state.room) {
    list.append(el("li", "muted", "not known yet (no connection to the box)"));
    return;
  }
  if (!meetings.length) {
    list.append(el("li", "muted", "no meeting configured ([whip] or [janus] in the config)"));
    return;
  }
  for (const m of meetings) {
    let [label, cls] = MEETING_STATES[m.state] || [m.state, "wait"];
    const tried = joinTried.get(m.name);
    if (tried && (m.state !== tried.state || m.detail !== tried.detail || performance.now() - tried.at > 15000)) {
      joinTried.delete(m.name);  // the next state arrived (or none came): shown as it is
    } else if (tried) {
      [label, cls] = ["trying again…", "wait"];
    }
    const li = el("li", "meeting " + cls);
    li.dataset.meeting = m.name;
    const text = el("div", "meeting-text");
    const title = el("span", "meeting-name", m.name === "janus" ? "Janus room" : m.name.toUpperCase());
    const st = el("span", "meeting-state", label);
    st.dataset.state = label;
    text.append(el("i", "dot"), title, st);
    if (m.detail && (m.state === "failed" || m.state === "retrying")) {
      // a far end's error can be a paragraph: three lines, the whole of it on a tap (and in the title)
      const detail = el("small", "meeting-detail", m.detail);
      detail.title = m.detail;
      if (openDetails.has(m.name)) detail.classList.add("open");
      detail.addEventListener("click", () => {
        if (openDetails.has(m.name)) openDetails.delete(m.name); else openDetails.add(m.name);
        detail.classList.toggle("open", openDetails.has(m.name));
      });
      text.append(detail);
    }
    const joined = m.state !== "stopped" && m.state !== "failed";
    const b = el("button", "button " + (joined ? "leave" : "join"),
      joined ? (m.state === "retrying" ? "Stop trying" : "Leave") : "Join");
    b.type = "button";
    b.dataset.action = joined ? "leave" : "join";
    b.addEventListener("click", () => {
      if (b.dataset.action === "join" && m.state === "failed") {  // the same words would come back: say it is on
        joinTried.set(m.name, { state: m.state, detail: m.detail, at: performance.now() });
        setTimeout(drawMeetings, 15500);
        drawMeetings();
      }
      command({ cmd: b.dataset.action, meeting: m.name }, showMeetingError);
    });
    const actions = el("div", "meeting-actions");  // the buttons go under the text when it needs the room
    if (m.state === "retrying") {  // waiting to try again (a far end's Retry-After may say minutes): now
      const now = el("button", "button join", "Try now");
      now.type = "button";
      now.dataset.action = "join";
      now.addEventListener("click", () => command({ cmd: "join", meeting: m.name }, showMeetingError));
      actions.append(now);
    }
    actions.append(b);
    li.append(text, actions);
    list.append(li);
  }
}

// A tap means what the button said when the person decided to tap it: when another panel's change relabels the
// button just before the finger lands (MUTE_SETTLE_MS), the tap means the label shown before (a second "Mute"
// then mutes again, idempotent, instead of unmuting the room that both people wanted muted).
const MUTE_SETTLE_MS = 700;
let muteShown = null;        // the mute state the button shows: true, false, or null (not known)
let muteShownBefore = null;  // what it showed before the last change that did not come from this panel's tap
let muteChangedAt = -Infinity;
let muteByTap = false;       // drawing this panel's own tap: not a change from elsewhere

function noteMuteShown(muted) {
  if (muted !== muteShown) {
    if (!muteByTap && muted !== null && muteShown !== null) {
      muteShownBefore = muteShown;
      muteChangedAt = performance.now();
    } else {
      muteChangedAt = -Infinity;
    }
    muteShown = muted;
  }
}

function drawMute() {
  const b = $("mute");
  if (state.roomStale || !state.room) {  // not known: neither "muted" nor "on" is claimed
    noteMuteShown(null);
    b.dataset.state = "unknown";
    b.setAttribute("aria-pressed", "false");
    b.textContent = "Microphones: not known (no connection to the box)";
    b.classList.remove("alert");
    $("muted-badge").classList.add("hidden");
    $("muted-banner").classList.add("hidden");
    document.body.classList.remove("is-muted");
    return;
  }
  const muted = !!pendingValue("muted", state.room.muted);
  noteMuteShown(muted);
  b.dataset.state = muted ? "muted" : "on";
  b.setAttribute("aria-pressed", String(muted));
  b.textContent = muted ? "Microphones muted – tap to unmute" : "Mute microphones";
  b.classList.toggle("alert", muted);
  $("muted-badge").classList.toggle("hidden", !muted);
  $("muted-banner").classList.toggle("hidden", !muted);
  document.body.classList.toggle("is-muted", muted);
}

// While a finger (or the mouse) holds the slider, the box's events do not move it: the thumb stays under the
// finger, the number beside it follows the drag, and the value is sent when it is let go ("change").
let volumeHeld = false;
let volumeTypedAt = -Infinity;  // the last "input" (a drag, or the keyboard's arrows while it has the focus)

function volumeBusy() {
  return volumeHeld || (document.activeElement === $("volume") && performance.now() - volumeTypedAt < 1500);
}

// the number beside the slider, "80 %" on screen (the unit comes from the style sheet: the text is the number)
function showVolumeNumber(v) {
  const b = $("volume-value");
  if (v === null) { b.textContent = "–"; delete b.dataset.unit; return; }
  b.textContent = String(v);
  b.dataset.unit = "%";
}

function drawVolume() {
  if (state.roomStale || !state.room) { showVolumeNumber(null); return; }
  if (volumeBusy()) return;
  const v = pendingValue("volume", state.room.volume);
  $("volume").value = String(v);
  showVolumeNumber(v);
}

let sourcesError = null;  // a camera or mic refused: said beside the choice, until the next choice
function showSourcesError(e) {
  sourcesError = e ? String(e.message || e) : null;
  drawSources();
}

function drawChoices(box, names, running, chosen, kind) {
  box.textContent = "";
  for (const name of names) {
    const b = el("button", "button", name);
    b.type = "button";
    b.dataset.name = name;
    b.setAttribute("aria-pressed", String(name === chosen));
    if (name === running) b.append(el("small", "tag", " in use"));
    b.addEventListener("click", () => {
      showSourcesError(null);
      command({ cmd: "choose_source", kind, name }, showSourcesError);
    });
    box.append(b);
  }
}

function drawSources() {
  const r = state.room;
  const note = $("sources-note");
  if (r) {
    drawChoices($("cameras"), r.cameras, r.camera, r.camera_chosen, "camera");
    drawChoices($("mic-arrays"), r.mic_arrays, r.mic_array, r.mic_array_chosen, "mic_array");
  }
  const waiting = [];
  if (r && r.camera_chosen !== r.camera) waiting.push(`camera ${r.camera_chosen}`);
  if (r && r.mic_array_chosen !== r.mic_array) waiting.push(`microphones ${r.mic_array_chosen}`);
  const lines = [];
  if (sourcesError) lines.push(sourcesError);
  if (waiting.length) lines.push(`restart needed to use ${waiting.join(" and ")}`);
  note.textContent = lines.join("; ");
  note.className = "note" + (sourcesError ? " bad" : "");
}

function drawRoom() { drawMeetings(); drawMute(); drawVolume(); drawSources(); }

$("mute").addEventListener("click", () => {
  if (state.roomStale || !state.room) { showSoundError("not connected to the box"); return; }
  let shown = !!pendingValue("muted", state.room.muted);
  if (performance.now() - muteChangedAt < MUTE_SETTLE_MS && muteShownBefore !== null) shown = muteShownBefore;
  const muted = !shown;  // (a second tap in that moment means the same: a double tap on "Mute" mutes)
  muteByTap = true;
  try {
    sendPending("muted", muted, { cmd: "set_mute", muted }, showSoundError);
  } finally {
    muteByTap = false;
  }
});
function setVolume(v) {
  const volume = Math.max(0, Math.min(100, v));
  return sendPending("volume", volume, { cmd: "set_volume", volume }, showSoundError);
}
function stepVolume(by) {
  if (state.roomStale || !state.room) { showSoundError("not connected to the box"); return; }
  setVolume(pendingValue("volume", state.room.volume) + by);
}
$("vol-down").addEventListener("click", () => stepVolume(-10));
$("vol-up").addEventListener("click", () => stepVolume(10));
$("volume").addEventListener("pointerdown", () => { volumeHeld = true; });
function volumeLetGo() {
  if (!volumeHeld) return;
  // "change" comes with the release, in the same task: the slider is redrawn after it, from what was sent
  setTimeout(() => { volumeHeld = false; volumeTypedAt = -Infinity; drawVolume(); }, 0);
}
for (const type of ["pointerup", "pointercancel"]) window.addEventListener(type, volumeLetGo, true);
$("volume").addEventListener("lostpointercapture", volumeLetGo);
$("volume").addEventListener("input", () => {
  volumeTypedAt = performance.now();
  showVolumeNumber(Number($("volume").value));
});
$("volume").addEventListener("change", () => {
  if (state.roomStale || !state.room) { showSoundError("not connected to the box"); return; }
  volumeTypedAt = -Infinity;
  const held = volumeHeld;
  volumeHeld = false;
  setVolume(Number($("volume").value));
  volumeHeld = held;
});

// ---------- settings behind the admin PIN ----------
let pin = "";
let keptEdits = null;  // the form as typed when admin rights ran out at Save: put back after the PIN
let configDoc = null;
let configTag = null;

function settingsMessage(ok, text) {
  state.settings = { ok, text };
  const m = $("settings-msg");
  m.textContent = text;
  m.className = "note " + (ok ? "good" : "bad");
}

function showPinPad(show) {
  $("pin-pad").classList.toggle("hidden", !show);
  pin = "";
  $("pin-dots").textContent = "enter the admin PIN";
}

function drawPin() { $("pin-dots").textContent = pin ? "•".repeat(pin.length) : "enter the admin PIN"; }

async function errorText(res) {
  try { const body = await res.json(); return body.error || String(res.status); } catch (e) { return String(res.status); }
}

async function openSettings() {
  settingsMessage(true, "");
  const res = await fetch("/api/config", { headers: { Accept: "application/json" } });
  if (res.status === 401 || res.status === 403) { $("settings").classList.add("hidden"); showPinPad(true); return; }
  if (!res.ok) { settingsMessage(false, await errorText(res)); return; }
  configTag = res.headers.get("ETag");
  configDoc = await res.json();
  const d = configDoc.director;
  $("set-mode").value = d.mode;
  $("set-resume").value = String(d.manual_resume_s);
  $("set-exclude").value = (d.exclude_deg || []).map((r) => r.join(",")).join("; ");
  const kept = keptEdits;
  keptEdits = null;
  if (kept) {
    $("set-mode").value = kept.mode;
    $("set-resume").value = kept.resume;
    $("set-exclude").value = kept.exclude;
    settingsMessage(true, "your changes are kept: tap Save");
  }
  showPinPad(false);
  $("settings").classList.remove("hidden");
  $("calib").classList.remove("hidden");
  refreshCalibration().catch(() => {});
}

// After too many wrong PINs the box makes the next try wait (retry_after_s, said with the wrong PIN that starts
// the wait, or a 429): the pad counts down and sends nothing until then (before, every tap in the wait only
// brought another refusal).
let pinWaitUntil = 0;
let pinWaitSaid = "";  // what the countdown says before "try again in N s"
let pinTimer = null;
let pinBusy = false;

function pinWaitLeft() { return Math.max(0, Math.ceil((pinWaitUntil - performance.now()) / 1000)); }

function drawPinWait() {
  const left = pinWaitLeft();
  $("keys").querySelector("[data-key=enter]").disabled = left > 0;
  if (left > 0) {
    settingsMessage(false, `${pinWaitSaid}: try again in ${left} s`);
    return;
  }
  clearInterval(pinTimer);
  pinTimer = null;
  if (state.settings && !state.settings.ok && pinWaitSaid && state.settings.text.startsWith(pinWaitSaid)) {
    settingsMessage(true, "you may try the PIN again");
  }
}

function pinBackOff(seconds, said) {
  pinWaitUntil = performance.now() + seconds * 1000;
  pinWaitSaid = said;
  clearInterval(pinTimer);
  pinTimer = setInterval(drawPinWait, 250);
  drawPinWait();
}

async function signInWithPin() {
  if (pinWaitLeft() > 0 || pinBusy) { drawPinWait(); return; }
  pinBusy = true;
  let res;
  try {
    res = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pin }),
    });
  } finally {
    pinBusy = false;
    pin = "";
    drawPin();
  }
  if (res.status === 429) {
    let wait = Number(res.headers.get("Retry-After")) || 1;
    try { const body = await res.json(); if (Number.isFinite(body.retry_after_s)) wait = body.retry_after_s; } catch (e) { /* header */ }
    pinBackOff(wait, "too many wrong PINs");
    return;
  }
  if (res.status === 401) {  // wrong; the box says when the failure that starts its back-off lets the next try go
    let body = {};
    try { body = await res.json(); } catch (e) { /* no body: no wait known */ }
    if (Number(body.retry_after_s) > 0) { pinBackOff(Number(body.retry_after_s), "wrong PIN"); return; }
    settingsMessage(false, body.error || "wrong PIN");
    return;
  }
  if (!res.ok) { settingsMessage(false, await errorText(res)); return; }
  // a PIN session also carries the panel's socket and video: bring them back now if they were refused
  signIns += 1;
  state.signedIn = true;
  if (!state.wsConnected) { wsDelay = 1000; connectEvents(); }
  if (!state.connected) restartVideo();
  await openSettings();
}

function pinKey(k) {
  if (k === "clear") pin = pin.slice(0, -1);
  else if (k === "enter") { signInWithPin().catch((e) => settingsMessage(false, errorWords(e))); return; }
  else if (pin.length < 12) pin += k;
  drawPin();
}

// The form's fields are read here, with messages that name the field in plain words; what the panel cannot
// judge (bounds, order) goes to the box, which says what is wrong.
const RESUME_FIELD = "Automatic framing resumes after manual";
const EXCLUDE_FIELD = "Nobody framed in these azimuth ranges";

// "30", "1.5", "1,5" (a decimal comma, as many touch keyboards offer) -> a number; anything else -> null
function parseSeconds(text) {
  const t = text.trim();
  if (!/^[+-]?(\d+([.,]\d*)?|[.,]\d+)$/.test(t)) return null;
  const n = Number(t.replace(",", "."));
  return Number.isFinite(n) ? n : null;
}

// "from,to; from,to" -> [[from, to], ...], or {error} saying what is wrong in plain words
function parseRanges(text) {
  const how = "give ranges as from,to; from,to in degrees (for example -90,-60; 40,55)";
  const out = [];
  const seen = new Set();
  for (const r of text.split(";").map((x) => x.trim()).filter((x) => x)) {
    const parts = r.split(/[\s,]+/).filter((x) => x !== "");
    const nums = parts.map((x) => (/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(x) ? Number(x) : NaN));
    if (nums.length !== 2 || !nums.every(Number.isFinite)) return { error: `${EXCLUDE_FIELD}: ${how}: "${r}" is not one` };
    const key = nums.join(",");
    if (seen.has(key)) return { error: `${EXCLUDE_FIELD}: the range ${key} is given twice: give it once` };
    seen.add(key);
    out.push(nums);
  }
  return { ranges: out };
}

let saving = false;  // a save in flight: a second tap on Save waits for it (its 412 hid the first one's "saved")

async function saveSettings(ev) {
  ev.preventDefault();
  if (!configDoc || saving) return;
  saving = true;
  try { await saveSettingsNow(); } finally { saving = false; }
}

async function saveSettingsNow() {
  const resume = parseSeconds($("set-resume").value);
  if (resume === null) {
    settingsMessage(false, `${RESUME_FIELD}: give a number of seconds (0: never), for example 30 or 1.5; nothing was saved`);
    return;
  }
  const ranges = parseRanges($("set-exclude").value);
  if (ranges.error) { settingsMessage(false, `${ranges.error}; nothing was saved`); return; }
  const doc = JSON.parse(JSON.stringify(configDoc));
  doc.director.mode = $("set-mode").value;
  doc.director.manual_resume_s = resume;
  doc.director.exclude_deg = ranges.ranges;
  const headers = { "Content-Type": "application/json" };
  if (configTag) headers["If-Match"] = configTag;
  const res = await fetch("/api/config", { method: "PUT", headers, body: JSON.stringify(doc) });
  if (res.status === 401 || res.status === 403) {
    keptEdits = { mode: $("set-mode").value, resume: $("set-resume").value, exclude: $("set-exclude").value };
    settingsMessage(false, "admin rights ran out: enter the PIN again (your changes are kept)");
    $("settings").classList.add("hidden");
    showPinPad(true);
    return;
  }
  if (res.status === 412) {  // changed elsewhere since the form was filled: show what is in force now
    const why = await errorText(res);
    await openSettings();
    settingsMessage(false, `${why}; the settings in force are shown again: make the change and save again`);
    return;
  }
  if (!res.ok) { settingsMessage(false, await errorText(res)); return; }
  const change = await res.json();
  configTag = res.headers.get("ETag");
  configDoc = doc;
  const restart = change.restart_required.length ? `; restart needed for ${change.restart_required.join(", ")}` : "";
  settingsMessage(true, change.changed.length ? `saved as revision ${change.revision}${restart}` : "nothing changed");
}

$("settings-open").addEventListener("click", () => { openSettings().catch((e) => settingsMessage(false, errorWords(e))); });
$("settings-close").addEventListener("click", () => {
  keptEdits = null;
  settingsMessage(true, "");
  $("settings").classList.add("hidden");
  $("calib").classList.add("hidden");
  showPinPad(false);
});
$("settings").addEventListener("submit", (ev) => { saveSettings(ev).catch((e) => settingsMessage(false, errorWords(e))); });
$("settings").addEventListener("input", () => {  // an edited form: "saved" no longer describes what it shows
  if (state.settings && state.settings.ok && state.settings.text) settingsMessage(true, "");
});
for (const b of document.querySelectorAll("#keys [data-key]")) {
  b.addEventListener("click", () => pinKey(b.dataset.key));
}
// a hardware keyboard (digits, Backspace, Enter) and a pasted PIN, while the pad is shown
function padShown() { return !$("pin-pad").classList.contains("hidden"); }
document.addEventListener("keydown", (ev) => {
  if (!padShown() || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
  let k = null;
  if (/^[0-9]$/.test(ev.key)) k = ev.key;
  else if (ev.key === "Backspace") k = "clear";
  // Enter signs in, except on another focused button (a pad key's Enter types that key, as a click would)
  else if (ev.key === "Enter" && !(t && t.tagName === "BUTTON" && t.id !== "settings-open" && t.dataset.key !== "enter")) {
    k = "enter";
  }
  if (k === null) return;
  ev.preventDefault();  // else the focused button clicks too: OK twice, or Settings showing the pad afresh
  pinKey(k);
});
document.addEventListener("paste", (ev) => {
  if (!padShown()) return;
  const digits = ((ev.clipboardData && ev.clipboardData.getData("text")) || "").replace(/\D/g, "");
  if (!digits) return;
  ev.preventDefault();
  pin = (pin + digits).slice(0, 12);
  drawPin();
});

// ---------- the mic array's guided calibration (behind the admin PIN, /api/calibration) ----------
// left end, right end, then an optional centre point; each: a prompt, a few seconds of listening, the point
// or the reason it was refused; then the fit, saved (a config revision) or discarded.
const CALIB_ORDER = ["left", "right", "centre"];
let calibBusy = false;

function fmtDeg(v) {
  const r = Math.round(v * 10) / 10;
  if (r === 0) return "0.0°";  // no "−0.0°"
  return (r > 0 ? "+" : "−") + Math.abs(r).toFixed(1) + "°";
}

function calibMessage(ok, text) {
  state.calibMessage = { ok, text };
  const m = $("calib-result");
  m.textContent = text;
  m.className = "note " + (ok ? "good" : "bad");
}

function nextCalibPoint() {
  const c = state.calibration || {};
  const have = new Set((c.captured || []).map((p) => p.name));
  return CALIB_ORDER.find((n) => !have.has(n)) || null;
}

function drawCalibration() {
  const c = state.calibration;
  if (!c) return;
  const status = c.calibrated
    ? `calibrated ${c.when ? c.when.replace("T", " ").replace("Z", " UTC") : ""}: array turned ${fmtDeg(c.rotation_deg)}` +
      (c.points.length > 1 ? `, scale ${c.scale.toFixed(2)}` : "") + ` (${c.points.length} point${c.points.length === 1 ? "" : "s"})` +
      (c.gain_db ? `, gain ${c.gain_db > 0 ? "+" : ""}${c.gain_db.toFixed(1)} dB` : "") +
      (c.in_use ? "" : ` — for mic array ${c.mic_array}, not in use`)
    : "not calibrated: voices are matched to faces as the array hears them";
  $("calib-status").textContent = status;
  $("calib-remove").classList.toggle("hidden", !c.calibrated);
  const next = nextCalibPoint();
  const prompts = c.prompts || {};
  if (c.capturing) {
    const left = Math.max(0, c.until - c.t);
    $("calib-prompt").textContent = `Listening to the ${c.capturing} point… ${c.blocks} speech blocks so far` +
      (left > 0 ? ` (${left.toFixed(0)} s left)` : "");
  } else if (next) {
    const optional = next === "centre" ? " (optional)" : "";
    const text = prompts[next] || `the person at the ${next}, please talk for a few seconds`;
    $("calib-prompt").textContent = `${next}${optional}: ${text.charAt(0).toUpperCase()}${text.slice(1)}, then press Listen.`;
  } else {
    $("calib-prompt").textContent = "All points captured: save or discard.";
  }
  $("calib-listen").textContent = next ? `Listen: ${next}` : "Listen";
  $("calib-listen").disabled = calibBusy || !!c.capturing || !next;
  $("calib-listen").dataset.point = next || "";
  const list = $("calib-points");
  list.textContent = "";
  for (const p of c.captured || []) {
    list.append(el("li", "calib-point",
      `${p.name}: heard at ${fmtDeg(p.doa_deg)}, face at ${fmtDeg(p.camera_deg)} — ${p.blocks} speech blocks, ` +
      `spread ${p.spread_deg.toFixed(1)}°`));
  }
  if (c.proposal) list.append(el("li", "calib-fit " + (c.proposal_ok ? "good" : "bad"), `fit: ${c.proposal}`));
  $("calib-save").disabled = calibBusy || !!c.capturing || !c.proposal_ok;
  $("calib-discard").disabled = calibBusy || !(c.captured || []).length;
}

async function calibCall(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(path, opts);
  let data = {};
  try { data = await res.json(); } catch (e) { /* no body */ }
  if (res.status === 401 || res.status === 403) {
    $("settings").classList.add("hidden");
    $("calib").classList.add("hidden");
    showPinPad(true);
    settingsMessage(false, "admin rights ran out: enter the PIN again");
  }
  if (data.calibration) state.calibration = { ...(state.calibration || {}), ...data.calibration };
  else if (res.ok) state.calibration = { ...(state.calibration || {}), ...data };
  return { ok: res.ok, status: res.status, data };
}

async function refreshCalibration() {
  const r = await calibCall("GET", "/api/calibration");
  if (!r.ok) calibMessage(false, r.data.error || String(r.status));
  drawCalibration();
}

async function calibStep(fn) {
  if (calibBusy) return;
  calibBusy = true;
  drawCalibration();
  try { await fn(); } catch (e) { calibMessage(false, errorWords(e)); }
  calibBusy = false;
  drawCalibration();
}

$("calib-listen").addEventListener("click", () => calibStep(async () => {
  const point = $("calib-listen").dataset.point;
  if (!point) return;
  calibMessage(true, `listening to the ${point} point…`);
  const r = await calibCall("POST", "/api/calibration/capture", { point });
  if (!r.ok) { calibMessage(false, r.data.error || String(r.status)); return; }
  const p = r.data.point;
  calibMessage(true, `${point}: heard at ${fmtDeg(p.doa_deg)}, face at ${fmtDeg(p.camera_deg)}`);
}));
$("calib-save").addEventListener("click", () => calibStep(async () => {
  const r = await calibCall("POST", "/api/calibration/save");
  if (!r.ok) { calibMessage(false, r.data.error || String(r.status)); return; }
  const gain = r.data.gain_db ? `, gain ${r.data.gain_db > 0 ? "+" : ""}${r.data.gain_db.toFixed(1)} dB` : "";
  calibMessage(true, `saved as revision ${r.data.revision}: array turned ${fmtDeg(r.data.rotation_deg)}${gain}`);
}));
$("calib-discard").addEventListener("click", () => calibStep(async () => {
  const r = await calibCall("POST", "/api/calibration/discard");
  calibMessage(r.ok, r.ok ? "captured points discarded" : r.data.error || String(r.status));
}));
$("calib-remove").addEventListener("click", () => calibStep(async () => {
  const r = await calibCall("DELETE", "/api/calibration");
  calibMessage(r.ok, r.ok ? `calibration removed (revision ${r.data.revision})` : r.data.error || String(r.status));
}));

// ---------- start ----------
drawMap();
setStale(true);
start();
