// gemcord web chat: one WebSocket, a channel list, messages rendered as safe Markdown.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const state = { ws: null, channels: [], channel: null, replies: new Map(), asks: new Map(), next: 1, files: [], maxFile: 0, maxVoice: 600 };

// --- Markdown, safely: escape everything first, then add only our own tags --------------------

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function inline(text) {
  const codes = [];
  text = text.replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return "\u0000" + (codes.length - 1) + "\u0000"; });
  text = text
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
    .replace(/~~([^~\n]+)~~/g, "<del>$1</del>")
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => "<code>" + codes[Number(i)] + "</code>");
}

function renderMarkdown(source) {
  const out = [];
  const parts = escapeHtml(source).split(/^```/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {  // inside a code fence: first line is the language
      const nl = part.indexOf("\n");
      const body = nl < 0 ? "" : part.slice(nl + 1);
      out.push("<pre><code>" + body.replace(/\n$/, "") + "</code></pre>");
      return;
    }
    let list = null;
    const closeList = () => { if (list) { out.push("</" + list + ">"); list = null; } };
    for (const line of part.split("\n")) {
      let m;
      if ((m = line.match(/^\s*[-*] (.*)$/)) && !line.startsWith("-# ")) {
        if (list !== "ul") { closeList(); out.push("<ul>"); list = "ul"; }
        out.push("<li>" + inline(m[1]) + "</li>");
      } else if ((m = line.match(/^\s*\d+[.)] (.*)$/))) {
        if (list !== "ol") { closeList(); out.push("<ol>"); list = "ol"; }
        out.push("<li>" + inline(m[1]) + "</li>");
      } else {
        closeList();
        if ((m = line.match(/^-# (.*)$/))) out.push("<small>" + inline(m[1]) + "</small>");
        else if ((m = line.match(/^(#{1,3}) (.*)$/))) out.push("<h" + (m[1].length + 2) + ">" + inline(m[2]) + "</h" + (m[1].length + 2) + ">");
        else if ((m = line.match(/^&gt; ?(.*)$/))) out.push("<blockquote>" + inline(m[1]) + "</blockquote>");
        else if (line.trim()) out.push("<p>" + inline(line) + "</p>");
      }
    }
    closeList();
  });
  return out.join("");
}

// --- messages ------------------------------------------------------------------------------

function addMessage(role, text, files) {
  const el = document.createElement("div");
  el.className = "msg " + role;
  el.innerHTML = '<div class="who"></div><div class="body"></div><div class="figures"></div><div class="state"></div>';
  el.querySelector(".who").textContent = role === "user" ? "you" : "gemcord";
  el.querySelector(".body").innerHTML = renderMarkdown(text || "");
  if (files) {  // the names of the attached files
    const f = document.createElement("div");
    f.className = "files";
    f.textContent = "📎 " + files;
    el.querySelector(".body").after(f);
  }
  $("messages").appendChild(el);
  $("messages").scrollTop = $("messages").scrollHeight;
  return el;
}

function showFigures(el, figures) {  // the images the model's code drew
  const box = el.querySelector(".figures");
  box.innerHTML = "";
  for (const f of figures) {
    const img = document.createElement("img");
    img.src = "data:" + f.type + ";base64," + f.data;
    img.alt = f.name;
    img.title = f.name;
    box.appendChild(img);
  }
}

function setState(el, text, kind) {
  const s = el.querySelector(".state");
  s.textContent = text;
  s.className = "state" + (kind ? " " + kind : "");
}

function fmt(seconds) { return seconds == null ? "–" : Math.round(seconds * 1000) + " ms"; }

function replyElement(reply) {
  const r = state.replies.get(reply);
  return r && r.channel === state.channel ? r.el : null;
}

function showReply(event) {
  const r = state.replies.get(event.reply);
  if (!r) return;
  if (event.text !== undefined) r.text = event.text;
  const el = replyElement(event.reply);
  if (!el) return;
  el.querySelector(".body").innerHTML = renderMarkdown(r.text);
  $("messages").scrollTop = $("messages").scrollHeight;
}

function finish(event, cls, label) {
  const r = state.replies.get(event.reply);
  if (!r) return;
  showReply(event);
  r.over = true;
  r.el.classList.remove("live");
  r.el.classList.add(cls);
  r.el.querySelector(".stop")?.remove();
  setState(r.el, label, cls === "failed" ? "error" : "");
}

function stopButton(el, reply) {
  const b = document.createElement("button");
  b.className = "stop";
  b.type = "button";
  b.textContent = "Stop";
  b.addEventListener("click", () => send({ type: "stop", reply }));
  el.querySelector(".state").after(b);
}

// --- the socket ------------------------------------------------------------------------------

function send(event) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(event));
}

const handlers = {
  hello(e) {
    state.channels = e.channels;
    state.maxFile = e.max_file;
    state.maxVoice = e.max_voice;
    $("model").textContent = "Model: " + e.model;
    const list = $("channel-list");
    list.innerHTML = "";
    for (const c of e.channels) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.textContent = "# " + c.name;
      b.dataset.channel = c.id;
      b.addEventListener("click", () => selectChannel(c.id));
      li.appendChild(b);
      list.appendChild(li);
    }
    const wanted = Number(location.hash.slice(1));
    selectChannel(e.channels.some((c) => c.id === wanted) ? wanted : e.channels[0].id);
  },
  history(e) {
    if (e.channel !== state.channel) return;
    $("messages").innerHTML = "";
    for (const t of e.turns) {
      if (t.status === "streaming") continue;  // shown live below, if it is ours
      const el = addMessage(t.role, t.text, (t.files || []).join(", "));
      showFigures(el, t.figures || []);
      if (t.role === "model" && t.status !== "complete") setState(el, "■ " + t.status, t.status === "failed" ? "error" : "");
    }
    for (const [reply, r] of state.replies) {
      if (r.channel !== state.channel) continue;
      r.el = addMessage("model", r.text);
      showFigures(r.el, r.figures);
      if (!r.over) { r.el.classList.add("live"); stopButton(r.el, reply); }
    }
  },
  status(e) {
    if (e.state === "queued") {
      const ask = state.asks.get(e.id);
      state.asks.delete(e.id);
      const el = ask ? ask.el : addMessage("model", "");
      el.dataset.reply = e.reply;
      el.classList.add("live");
      state.replies.set(e.reply, { channel: e.channel, el, text: "", figures: [], question: ask ? ask.text : "" });
      stopButton(el, e.reply);
      setState(el, "waiting…");
    } else if (e.state === "live") {  // what the model is doing, until its answer comes
      const el = replyElement(e.reply);
      if (el && !state.replies.get(e.reply).text) setState(el, e.line, "live-status");
    } else {
      const el = replyElement(e.reply);
      if (el && !el.querySelector(".state.live-status")) setState(el, e.state + "…");
    }
  },
  chunk(e) {
    const el = replyElement(e.reply);
    if (el) setState(el, "");
    showReply(e);
  },
  done(e) {
    const m = e.metrics;
    finish(e, "complete", "");
    const el = state.replies.get(e.reply)?.el;
    if (!el) return;
    const p = document.createElement("div");
    p.className = "metrics";
    p.textContent = `first chunk ${fmt(m.first_chunk)} · first visible ${fmt(m.first_visible)} · total ${fmt(m.total)} · ${m.chunks} chunks`;
    el.appendChild(p);
  },
  files(e) {
    const r = state.replies.get(e.reply);
    if (!r) return;
    r.figures.push(...e.files);
    const el = replyElement(e.reply);
    if (el) showFigures(el, r.figures);
  },
  stopped(e) { finish(e, "stopped", "■ stopped"); },
  error(e) {
    if (e.reply) { finish(e, "failed", "⚠ " + e.message); return; }
    const ask = state.asks.get(e.id);
    if (ask && e.file) {  // a refused file: the question goes on without it
      const note = document.createElement("div");
      note.className = "note";
      note.textContent = "⚠ " + e.message;
      ask.user.appendChild(note);
      return;
    }
    if (ask) { state.asks.delete(e.id); setState(ask.el, "⚠ " + e.message, "error"); return; }
    $("connection").textContent = "⚠ " + e.message;
  },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = scheme + "://" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => { $("connection").textContent = ""; };
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    handlers[e.type]?.(e);
  };
  ws.onclose = () => {
    $("connection").textContent = "Disconnected; reconnecting…";
    for (const r of state.replies.values()) if (!r.over) { r.over = true; r.el.classList.remove("live"); }
    setTimeout(connect, 1000);
  };
}

function selectChannel(id) {
  state.channel = id;
  history.replaceState(null, "", location.pathname + location.search + "#" + id);
  const c = state.channels.find((x) => x.id === id);
  $("channel-title").textContent = "# " + (c ? c.name : id);
  for (const b of document.querySelectorAll("#channel-list button")) b.classList.toggle("active", Number(b.dataset.channel) === id);
  send({ type: "history", channel: id });
  loadSettings();
}

// --- the channel's settings: changed through the server's checks, as /settings set on Discord ---

function settingsUrl(channel) {
  const query = new URLSearchParams(channel === undefined ? {} : { channel });
  if (token) query.set("token", token);
  return "/settings" + (String(query) ? "?" + query : "");
}

function settingsNote(text, error) {
  const note = $("settings-note");
  note.innerHTML = text ? renderMarkdown((error ? "⚠ " : "") + text) : "";
  note.className = "settings-note" + (error ? " error" : "");
}

function settingRow(s) {
  const form = document.createElement("form");
  form.dataset.name = s.name;
  const label = document.createElement("label");
  label.htmlFor = "setting-" + s.name;
  label.textContent = s.name;
  label.title = s.description;
  let control;
  if (s.choices.length) {
    control = document.createElement("select");
    for (const c of s.choices) control.add(new Option(c + (c === s.default ? " (default)" : ""), c, false, c === s.value));
    control.addEventListener("change", () => form.requestSubmit());
  } else {
    control = document.createElement("input");
    control.value = s.own || "";
    control.placeholder = s.default ? s.default + " (default)" : "the default " + s.name;
  }
  control.id = "setting-" + s.name;
  control.title = s.description;
  form.append(label, control);
  if (!s.choices.length) {
    const set = document.createElement("button");
    set.type = "submit";
    set.textContent = "Set";
    form.append(set);
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); changeSetting(s.name, control.value); });
  return form;
}

function showSettings(settings) {
  $("settings-rows").replaceChildren(...settings.map(settingRow));
  const model = settings.find((s) => s.name === "model");
  if (model) $("model").textContent = "Model: " + model.value;  // this channel's
}

async function settingsCall(url, init, typed) {
  const channel = state.channel;
  let body;
  try {
    const response = await fetch(url, init);
    body = await response.json().catch(() => ({ ok: false, message: "The chat answered HTTP " + response.status + "." }));
  }
  catch (err) { body = { ok: false, message: "The settings could not be reached (" + err.message + ")." }; }
  if (channel !== state.channel) return;  // another channel was chosen meanwhile
  if (body.settings) showSettings(body.settings);
  settingsNote(body.message, !body.ok);
  const input = typed && $("setting-" + typed.name);
  if (!body.ok && input && input.tagName === "INPUT") input.value = typed.value;  // to correct it
}

function loadSettings() {
  return settingsCall(settingsUrl(state.channel));
}

function changeSetting(name, value) {  // an empty value is "default"
  return settingsCall(settingsUrl(), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ channel: state.channel, name, value }),
  }, { name, value });
}

$("settings-toggle").addEventListener("click", () => {
  const open = $("settings").hidden;
  $("settings").hidden = !open;
  $("settings-toggle").setAttribute("aria-expanded", String(open));
});

// --- attached files: previewed with a remove ×, sent with the next question as binary messages ---

const ICONS = [[/^audio\//, "🎵"], [/^video\//, "🎬"], [/pdf$/, "📕"]];

function showPreviews() {
  const box = $("previews");
  box.innerHTML = "";
  for (const f of state.files) {
    const p = document.createElement("div");
    p.className = "preview";
    let img;
    if (f.url) {
      img = document.createElement("img");
      img.src = f.url;
      img.alt = "";
    } else {
      img = document.createElement("b");
      img.className = "icon";
      img.textContent = (ICONS.find(([re]) => re.test(f.type)) || [null, "📄"])[1];
    }
    const name = document.createElement("span");
    name.textContent = f.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.title = "Remove " + f.name;
    remove.textContent = "×";
    remove.addEventListener("click", () => {
      if (f.url) URL.revokeObjectURL(f.url);
      state.files = state.files.filter((x) => x !== f);
      showPreviews();
    });
    p.append(img, name, remove);
    box.appendChild(p);
  }
}

function addFile(file, name) {
  const url = file.type.startsWith("image/") ? URL.createObjectURL(file) : "";
  state.files.push({ name: name || file.name, type: file.type, url, file });
}

$("files").addEventListener("change", () => {
  for (const file of $("files").files) addFile(file);
  $("files").value = "";
  showPreviews();
});

// --- a voice message: recorded here, attached as a 16 kHz WAV file (audio Gemini reads) -------

function wav(buffer) {  // 16-bit PCM of the first channel (a voice is mono)
  const samples = buffer.getChannelData(0);
  const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const ascii = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
  ascii(0, "RIFF"); out.setUint32(4, 36 + samples.length * 2, true); ascii(8, "WAVE");
  ascii(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, buffer.sampleRate, true); out.setUint32(28, buffer.sampleRate * 2, true);
  out.setUint16(32, 2, true); out.setUint16(34, 16, true);
  ascii(36, "data"); out.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => out.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([out], { type: "audio/wav" });
}

let recording = null;

async function record() {
  const button = $("record");
  if (recording) { recording.stop(); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (err) { $("connection").textContent = "⚠ The microphone is not available: " + err.message; return; }
  const recorder = new MediaRecorder(stream);
  const parts = [];
  const started = Date.now();
  const seconds = () => Math.max(1, Math.round((Date.now() - started) / 1000));
  const tick = setInterval(() => { button.textContent = "⏹ " + seconds() + " s"; }, 250);
  const limit = setTimeout(() => recorder.stop(), state.maxVoice * 1000);  // as on Discord
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.onstop = async () => {
    clearInterval(tick);
    clearTimeout(limit);
    for (const track of stream.getTracks()) track.stop();
    recording = null;
    button.textContent = "🎤";
    button.classList.remove("on");
    const name = "voice message (" + seconds() + " s)";
    try {
      const data = await new Blob(parts).arrayBuffer();
      const decoded = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(data);
      addFile(wav(decoded), name);
      showPreviews();
    } catch (err) { $("connection").textContent = "⚠ The recording could not be read: " + err.message; }
  };
  recorder.start();
  recording = recorder;
  button.classList.add("on");
  button.textContent = "⏹ 0 s";
}

if (navigator.mediaDevices && window.MediaRecorder) $("record").addEventListener("click", record);
else $("record").hidden = true;  // not over plain http beyond this machine

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if ((!text && !state.files.length) || state.channel === null) return;
  const chosen = state.files;
  state.files = [];
  showPreviews();
  $("text").value = "";
  const id = String(state.next++);
  const user = addMessage("user", text, chosen.map((f) => f.name).join(", "));
  const el = addMessage("model", "");
  setState(el, "sending…");
  state.asks.set(id, { el, text, user });
  const files = chosen.map((f) => ({ name: f.name, type: f.type, size: f.file.size }));
  send({ type: "ask", channel: state.channel, text, id, files });
  for (const f of chosen) {  // then each file's bytes; none for one over every limit
    if (f.url) URL.revokeObjectURL(f.url);
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(f.file.size <= state.maxFile ? f.file : new Blob());
  }
});

$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
});

connect();
