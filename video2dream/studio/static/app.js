// The review page: plain JavaScript, no build step. Everything it shows comes from /api/.
"use strict";
const $ = (id) => document.getElementById(id);
let keyframes = [], selected = -1, stamp = Date.now(), seq = 0, run = null, duration = 0;

async function api(path, options) {
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  return { ok: response.ok, status: response.status, data };
}
const post = (path, body, method = "POST") =>
  api(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function statusWords(st) {
  if (st.error) return st.error;
  if (!st.generate) return "";
  const video = (st.videos || [])[0] || { state: "not run" };
  const parts = [["captions", st.interrogate.state], ["dreams", st.generate.state], ["dream.mp4", video.state]];
  if (parts.every(([, s]) => s === "current")) return "everything current";
  return parts.map(([what, s]) => `${what} ${s}`).join(", ");
}

async function loadRun() {
  run = (await api("/api/run")).data;
  $("run-name").textContent = run.name;
  $("status").textContent = statusWords(run.status);
  showHeld(run.held_by);
  const which = $("which"), keep = which.value;
  which.innerHTML = "";
  for (const v of run.videos) which.add(new Option(v, v));
  $("no-video").hidden = run.videos.length > 0;
  which.hidden = run.videos.length < 2;
  if (run.videos.length) {
    which.value = run.videos.includes(keep) ? keep : run.videos[0];
    $("player").src = `/api/files/${which.value}?t=${stamp}`;
  }
  if (run.chain) loadChain();
}

function showHeld(held) {
  $("held").hidden = !held;
  if (held) $("held").textContent = `A video2dream command holds this folder (pid ${held.pid || "?"}` +
    ` on ${held.host || "?"}, since ${held.since || "?"}): the page's saves and jobs are refused until it ends.`;
}

async function loadKeyframes() {
  const r = await api("/api/keyframes");
  if (!r.ok) { $("status").textContent = r.data.error; return; }
  keyframes = r.data.keyframes;
  const strip = $("strip");
  strip.innerHTML = "";
  keyframes.forEach((k, i) => {
    const tile = document.createElement("div");
    tile.className = `tile ${k.state}`;
    tile.dataset.name = k.name;
    tile.title = `${k.name} ${k.time.toFixed(2)} s ${k.kind} (${k.state})`;
    tile.innerHTML = `<img loading="lazy" src="/api/thumbs/dreams/${k.name}?t=${stamp}" alt="">` +
      `<img loading="lazy" src="/api/thumbs/frames/${k.name}" alt="">` +
      (k.kind !== "tick" ? `<span class="mark">${k.kind}</span>` : "");
    tile.querySelector("img").onerror = (e) => { e.target.style.visibility = "hidden"; };
    tile.onclick = () => { select(i); seek(i); };
    strip.appendChild(tile);
  });
  // awaited: a caller's message ("saved", "picked 2") is written after the panel is filled again
  if (selected >= 0 && selected < keyframes.length) await select(selected, false);
}

function seek(i) {
  const p = $("player");
  if (p.src) p.currentTime = keyframes[i].time + 0.001;
}

async function select(i, scroll = true) {
  selected = i;
  document.querySelectorAll(".tile").forEach((t, j) => t.classList.toggle("selected", j === i));
  const tile = document.querySelectorAll(".tile")[i];
  if (scroll && tile) tile.scrollIntoView({ block: "nearest", inline: "nearest" });
  const k = keyframes[i];
  const r = await api(`/api/keyframes/${k.name}`);
  if (!r.ok) { $("save-msg").textContent = r.data.error; return; }
  const d = r.data;
  keyframes[i] = { ...k, ...d };
  $("panel").hidden = false;
  $("src-img").src = `/api/files/frames/${d.name}`;
  $("dream-img").src = d.dream_state === "missing" ? "" : `/api/files/dreams/${d.name}?t=${stamp}`;
  $("kf-name").textContent = d.name;
  $("kf-time").textContent = d.time.toFixed(2);
  $("kf-kind").textContent = d.kind;
  $("kf-state").textContent = d.state;
  $("kf-seed").textContent = d.seed ?? "–";
  $("prompt").value = d.prompt;
  $("negative").value = d.negative_prompt;
  $("params").textContent = d.parameters_text || "(no dream yet)";
  $("save-msg").textContent = "";
  $("pick-msg").textContent = "";
  showCandidates(d);
}

function showCandidates(d) {  // the frame's candidates of `generate --variants K`, each picked with a click
  const box = $("candidates");
  box.innerHTML = "";
  $("cand-title").textContent = d.candidates.length ? `${d.candidates.length} candidate(s)` : "no candidates";
  for (const c of d.candidates) {
    const fig = document.createElement("figure");
    fig.className = "candidate";
    fig.innerHTML = `<img src="/api/thumbs/${c.file}?t=${stamp}" alt=""><figcaption>${c.number}: seed ` +
      `${c.seed ?? "?"} <button class="pick" data-number="${c.number}">pick</button></figcaption>`;
    fig.querySelector("button").onclick = () => pick(d.name, c.number);
    box.appendChild(fig);
  }
}

async function pick(name, number) {
  const r = await post(`/api/keyframes/${name}/pick`, { number });
  const msg = $("pick-msg");
  msg.className = r.ok ? "ok" : "err";
  msg.textContent = r.ok ? `picked ${number}` : r.data.error;
  if (r.ok) { stamp = Date.now(); await refresh(); msg.textContent = `picked ${number}`; }
}

async function save() {
  const k = keyframes[selected];
  const r = await post(`/api/keyframes/${k.name}`,
    { prompt: $("prompt").value, negative_prompt: $("negative").value, version: k.version }, "PUT");
  const msg = $("save-msg");
  msg.className = r.ok ? "ok" : "err";
  msg.textContent = r.ok ? "saved" : r.data.error;
  if (r.ok) { k.version = r.data.version; await refresh(); msg.textContent = "saved"; }
}

async function startJob(kind, names, replace = false, count = null) {
  const body = { kind };
  if (names) body.names = names;
  if (count) body.count = count;
  if (replace) body.replace_edits = true;
  const r = await post("/api/jobs", body);
  if (r.status === 409 && r.data.confirm) {
    if (confirm(r.data.error + ". Replace them?")) return startJob(kind, names, true, count);
    return;
  }
  if (!r.ok) { $("job-state").className = "err"; $("job-state").textContent = r.data.error; return; }
  $("job-state").className = "";
  $("job-state").textContent = `${kind}: started`;
  $("cancel").disabled = false;
}

function onEvent(e) {
  const ev = JSON.parse(e.data);
  if (ev.seq !== undefined) seq = ev.seq + 1;
  if (ev.type === "lock") { showHeld(ev.held_by); return; }
  if (ev.type === "progress") {
    $("bar").max = Math.max(1, ev.total); $("bar").value = ev.n;
    $("job-state").textContent = `${ev.desc}: ${ev.n}/${ev.total} ${ev.unit}`;
  } else if (ev.type === "line") {
    $("log").textContent += ev.text + "\n";
    $("log").scrollTop = 1e9;
  } else if (ev.type === "start") {
    $("cancel").disabled = false;
    $("job-state").textContent = `${ev.kind}: running`;
  } else if (ev.type === "end") {
    $("cancel").disabled = true;
    $("job-state").className = ev.state === "failed" ? "err" : "";
    $("job-state").textContent = `${ev.kind}: ${ev.state}${ev.message ? " – " + ev.message : ""}`;
    stamp = Date.now();
    refresh();
  }
}

function listen() {
  const source = new EventSource(`/api/events?since=${seq}`);
  source.onmessage = onEvent;
  source.onerror = () => { source.close(); setTimeout(listen, 2000); };
}

async function refresh() { await loadRun(); await loadKeyframes(); }

function highlight() {
  const t = $("player").currentTime;
  let at = -1;
  for (let i = 0; i < keyframes.length && keyframes[i].time <= t + 1e-3; i++) at = i;
  document.querySelectorAll(".tile").forEach((tile, j) => tile.classList.toggle("playing", j === at));
}

async function drawWave() {
  const w = (await api("/api/waveform")).data, c = $("wave");
  c.width = c.clientWidth || 800;
  const g = c.getContext("2d"), h = c.height;
  g.fillStyle = "#4a6"; duration = w.duration || 0;
  const n = w.peaks.length;
  for (let x = 0; x < c.width && n; x++) {
    const p = w.peaks[Math.floor(x * n / c.width)], y = p * h / 2;
    g.fillRect(x, h / 2 - y, 1, Math.max(1, 2 * y));
  }
  const total = duration || (keyframes.length ? keyframes[keyframes.length - 1].time + 1 : 0);
  for (const k of keyframes) {  // keyframes on the waveform: beats orange, cuts red
    if (!total) break;
    g.fillStyle = k.kind === "cut" ? "#e33" : k.kind === "beat" ? "#e90" : "#fff3";
    g.fillRect(Math.round(k.time / total * c.width), 0, 1, h);
  }
  c.onclick = (e) => {
    if (!total) return;
    const t = e.offsetX / c.width * total;
    $("player").currentTime = t;
  };
}

async function loadChain() {
  const d = (await api("/api/chain")).data.chain;
  if (!d) return;
  $("chain").hidden = false;
  if (d.strip) $("chain-strip").src = "/api/files/chain_strip.png";
  if (d.drift) $("chain-drift").src = "/api/files/drift.png";
  const list = $("chain-steps");
  list.innerHTML = "";
  for (const s of d.steps) {
    const li = document.createElement("li");
    li.textContent = `step ${s.step}: ${s.caption || "(the input)"}`;
    list.appendChild(li);
  }
}

document.addEventListener("keydown", (e) => {
  if (["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement.tagName)) return;
  if (!keyframes.length || (e.key !== "ArrowRight" && e.key !== "ArrowLeft")) return;
  e.preventDefault();
  const i = Math.min(keyframes.length - 1, Math.max(0, selected + (e.key === "ArrowRight" ? 1 : -1)));
  select(i); seek(i);
});
$("player").addEventListener("timeupdate", highlight);
$("player").addEventListener("seeked", highlight);
$("which").onchange = () => { $("player").src = `/api/files/${$("which").value}?t=${stamp}`; };
$("save").onclick = save;
$("repaint-selected").onclick = () => selected >= 0 && startJob("repaint", [keyframes[selected].name]);
$("repaint-stale").onclick = () => startJob("repaint");
$("recaption").onclick = () => selected >= 0 && startJob("recaption", [keyframes[selected].name]);
$("paint-variants").onclick = () => selected >= 0 &&
  startJob("variants", [keyframes[selected].name], false, 4);
$("inbetweens").onclick = () => startJob("inbetweens");
$("assemble").onclick = () => startJob("assemble");
$("cancel").onclick = () => post("/api/jobs/cancel", {});

(async () => {
  await refresh();
  document.body.dataset.ready = "1";  // first paint with every tile: scripts and tests wait for it
  listen();
  drawWave();
})();
