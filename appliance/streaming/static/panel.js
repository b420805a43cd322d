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
  signedIn: null,        // true/false once a #token= link was traded for a session
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

function scheduleReconnect(why) {
  if (retryTimer) return;
  state.connected = false;
  state.lastDrop = why;
  setConn("bad", why + " – reconnecting…");
  if (pc) { try { pc.close(); } catch (e) { /* already closed */ } pc = null; }
  retryTimer = setTimeout(() => { retryTimer = null; state.reconnects += 1; connectVideo(); }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 10000);
}

async function connectVideo() {
  setConn("wait", "connecting…");
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
      setConn("ok", "live");
    } else if (conn.connectionState === "failed" || conn.connectionState === "closed") {
      scheduleReconnect("connection " + conn.connectionState);
    } else if (conn.connectionState === "disconnected") {
      setConn("wait", "interrupted…");
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
    if (res.status === 401) throw new Error("sign-in needed (the kiosk link, or the PIN)");
    if (!res.ok) throw new Error("offer refused: " + res.status);
    const answer = await res.json();
    if (conn !== pc) return;
    await conn.setRemoteDescription(answer);
  } catch (e) {
    if (conn === pc) scheduleReconnect(String(e.message || e));
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
  $("res").textContent = video.videoWidth + "×" + video.videoHeight;
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
  $("sound").textContent = video.muted ? "Sound off" : "Sound on";
  $("sound").setAttribute("aria-pressed", String(!video.muted));
});

// ---------- events over the WebSocket ----------
let ws = null;
let nextId = 1;
const pending = new Map();

function connectEvents() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  ws = new WebSocket(url);
  ws.onopen = () => { state.wsConnected = true; };
  ws.onclose = () => {
    state.wsConnected = false;
    for (const [, p] of pending) p.reject(new Error("connection closed"));
    pending.clear();
    setTimeout(connectEvents, 1500);
  };
  ws.onmessage = (ev) => {
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
      if (data.policy !== state.policy) { state.policy = data.policy; drawModes(); }
      if (data.cut) {
        state.why.unshift({ t: data.t, mode: data.mode, reason: data.reason });
        state.why.length = Math.min(state.why.length, 10);
        drawWhy();
      }
      drawMap();
      break;
    case "faces": state.lastFaces = data; drawMap(); break;
    case "doa": state.lastDoa = data; drawMap(); break;
    case "camera": state.camera = { ...state.camera, ...data }; drawMap(); break;
    case "stats": state.stats = data; drawStats(); break;
    case "calibration": state.calibration = { ...(state.calibration || {}), ...data }; drawCalibration(); break;
    case "room":
      state.room = data;
      if (data.policy && data.policy !== state.policy) { state.policy = data.policy; drawModes(); }
      drawRoom();
      break;
    case "meeting":  // one connector's state: the next "room" event has all of them
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

function drawStats() {
  const box = $("stats");
  box.textContent = "";
  for (const [k, v] of Object.entries(state.stats || {})) {
    if (typeof v === "object") continue;
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
// request nor logged); it is traded once for an HttpOnly session cookie and taken out of the address bar.
async function signIn() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    const res = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: decodeURIComponent(m[1]) }),
    });
    state.signedIn = res.ok;
    if (!res.ok) state.lastDrop = "sign-in refused: " + res.status;
  } catch (e) {
    state.lastDrop = "sign-in failed: " + String(e.message || e);
  }
}

drawMap();
signIn().finally(() => { connectEvents(); connectVideo(); });

// ---------- framing controls ----------
function drawModes() {
  for (const b of document.querySelectorAll("#modes [data-mode]")) {
    b.setAttribute("aria-pressed", String(b.dataset.mode === state.policy));
  }
}

function drawWhy() {
  const list = $("why");
  list.textContent = "";
  for (const w of state.why) {
    const li = document.createElement("li");
    const when = document.createElement("small");
    when.textContent = `${w.mode} · `;
    li.append(when, document.createTextNode(w.reason || ""));
    list.append(li);
  }
}

function showError(e) {
  $("panel-error").textContent = e ? String(e.message || e) : "";
}

async function command(cmd) {
  try {
    const reply = await sendCommand(cmd);
    showError(null);
    if (reply.result && reply.result.mode) { state.policy = reply.result.mode; drawModes(); }
    return reply;
  } catch (e) {
    showError(e);
    return null;
  }
}

const PTZ_STEP = 0.25;
function ptz(action) {
  const p = state.ptz;
  if (action === "home") Object.assign(p, { pan: 0, tilt: 0, zoom: 1 });
  if (action === "left") p.pan = Math.max(-1, p.pan - PTZ_STEP);
  if (action === "right") p.pan = Math.min(1, p.pan + PTZ_STEP);
  if (action === "up") p.tilt = Math.max(-1, p.tilt - PTZ_STEP);
  if (action === "down") p.tilt = Math.min(1, p.tilt + PTZ_STEP);
  if (action === "in") p.zoom = Math.min(4, p.zoom * 1.25);
  if (action === "out") p.zoom = Math.max(1, p.zoom / 1.25);
  return command({ cmd: "ptz", pan: p.pan, tilt: p.tilt, zoom: p.zoom });
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
  retrying: ["connecting", "wait"],
  connected: ["in meeting", "ok"],
  failed: ["failed", "bad"],
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawMeetings() {
  const list = $("meetings");
  const meetings = (state.room && state.room.meetings) || [];
  list.textContent = "";
  if (!meetings.length) {
    list.append(el("li", "muted", "no meeting configured ([whip] or [janus] in the config)"));
    return;
  }
  for (const m of meetings) {
    const [label, cls] = MEETING_STATES[m.state] || [m.state, "wait"];
    const li = el("li", "meeting " + cls);
    li.dataset.meeting = m.name;
    const text = el("div", "meeting-text");
    const title = el("span", "meeting-name", m.name === "janus" ? "Janus room" : m.name.toUpperCase());
    const st = el("span", "meeting-state", label);
    st.dataset.state = label;
    text.append(el("i", "dot"), title, st);
    if (m.detail && (m.state === "failed" || m.state === "retrying")) text.append(el("small", "meeting-detail", m.detail));
    const joined = m.state !== "stopped" && m.state !== "failed";
    const b = el("button", "button " + (joined ? "leave" : "join"), joined ? "Leave" : "Join");
    b.type = "button";
    b.dataset.action = joined ? "leave" : "join";
    b.addEventListener("click", () => command({ cmd: b.dataset.action, meeting: m.name }));
    li.append(text, b);
    list.append(li);
  }
}

function drawMute() {
  const muted = !!(state.room && state.room.muted);
  const b = $("mute");
  b.setAttribute("aria-pressed", String(muted));
  b.textContent = muted ? "Microphones muted – tap to unmute" : "Mute microphones";
  b.classList.toggle("alert", muted);
  $("muted-badge").classList.toggle("hidden", !muted);
  $("muted-banner").classList.toggle("hidden", !muted);
  document.body.classList.toggle("is-muted", muted);
}

function drawVolume() {
  if (!state.room) return;
  $("volume").value = String(state.room.volume);
  $("volume-value").textContent = String(state.room.volume);
}

function drawChoices(box, names, running, chosen, kind) {
  box.textContent = "";
  for (const name of names) {
    const b = el("button", "button", name);
    b.type = "button";
    b.dataset.name = name;
    b.setAttribute("aria-pressed", String(name === chosen));
    if (name === running) b.append(el("small", "tag", " in use"));
    b.addEventListener("click", () => command({ cmd: "choose_source", kind, name }));
    box.append(b);
  }
}

function drawSources() {
  const r = state.room;
  if (!r) return;
  drawChoices($("cameras"), r.cameras, r.camera, r.camera_chosen, "camera");
  drawChoices($("mic-arrays"), r.mic_arrays, r.mic_array, r.mic_array_chosen, "mic_array");
  const waiting = [];
  if (r.camera_chosen !== r.camera) waiting.push(`camera ${r.camera_chosen}`);
  if (r.mic_array_chosen !== r.mic_array) waiting.push(`microphones ${r.mic_array_chosen}`);
  $("sources-note").textContent = waiting.length ? `restart needed to use ${waiting.join(" and ")}` : "";
}

function drawRoom() { drawMeetings(); drawMute(); drawVolume(); drawSources(); }

$("mute").addEventListener("click", () => command({ cmd: "set_mute", muted: !(state.room && state.room.muted) }));
function setVolume(v) { return command({ cmd: "set_volume", volume: Math.max(0, Math.min(100, v)) }); }
$("vol-down").addEventListener("click", () => setVolume(((state.room && state.room.volume) || 0) - 10));
$("vol-up").addEventListener("click", () => setVolume(((state.room && state.room.volume) || 0) + 10));
$("volume").addEventListener("change", () => setVolume(Number($("volume").value)));

// ---------- settings behind the admin PIN ----------
let pin = "";
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
  showPinPad(false);
  $("settings").classList.remove("hidden");
  $("calib").classList.remove("hidden");
  refreshCalibration().catch(() => {});
}

async function signInWithPin() {
  const res = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pin }),
  });
  pin = "";
  drawPin();
  if (!res.ok) { settingsMessage(false, await errorText(res)); return; }
  await openSettings();
}

function parseRanges(text) {
  // "from,to; from,to" -> [[from, to], ...]; what is not a number goes as null: the box says what is wrong
  return text.split(";").map((r) => r.trim()).filter((r) => r).map((r) => r.split(/[ ,]+/).map((x) => {
    const n = Number(x);
    return x !== "" && Number.isFinite(n) ? n : null;
  }));
}

let saving = false;  // a save in flight: a second tap on Save waits for it (its 412 hid the first one's "saved")

async function saveSettings(ev) {
  ev.preventDefault();
  if (!configDoc || saving) return;
  saving = true;
  try { await saveSettingsNow(); } finally { saving = false; }
}

async function saveSettingsNow() {
  const resume = $("set-resume").value.trim();
  const doc = JSON.parse(JSON.stringify(configDoc));
  doc.director.mode = $("set-mode").value;
  doc.director.manual_resume_s = resume !== "" && Number.isFinite(Number(resume)) ? Number(resume) : resume;
  doc.director.exclude_deg = parseRanges($("set-exclude").value);
  const headers = { "Content-Type": "application/json" };
  if (configTag) headers["If-Match"] = configTag;
  const res = await fetch("/api/config", { method: "PUT", headers, body: JSON.stringify(doc) });
  if (res.status === 401 || res.status === 403) {
    settingsMessage(false, "admin rights ran out: enter the PIN again");
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

$("settings-open").addEventListener("click", () => { openSettings().catch((e) => settingsMessage(false, String(e))); });
$("settings-close").addEventListener("click", () => {
  $("settings").classList.add("hidden");
  $("calib").classList.add("hidden");
  showPinPad(false);
});
$("settings").addEventListener("submit", (ev) => { saveSettings(ev).catch((e) => settingsMessage(false, String(e))); });
for (const b of document.querySelectorAll("#keys [data-key]")) {
  b.addEventListener("click", () => {
    const k = b.dataset.key;
    if (k === "clear") pin = pin.slice(0, -1);
    else if (k === "enter") { signInWithPin().catch((e) => settingsMessage(false, String(e))); return; }
    else if (pin.length < 12) pin += k;
    drawPin();
  });
}

// ---------- the mic array's guided calibration (behind the admin PIN, /api/calibration) ----------
// left end, right end, then an optional centre point; each: a prompt, a few seconds of listening, the point
// or the reason it was refused; then the fit, saved (a config revision) or discarded.
const CALIB_ORDER = ["left", "right", "centre"];
let calibBusy = false;

function fmtDeg(v) { return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(1) + "°"; }

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
  try { await fn(); } catch (e) { calibMessage(false, String(e.message || e)); }
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
