// The labeling page of `quarry project serve`: one self-contained document (no CDN, no external
// font or script: hospital networks reach nothing outside). Keys: 1-9 label, S or Space skips,
// Backspace or U undoes, Enter asks for the next batch when this one is done.
//
// Labels are queued on the page and sent in small groups (at once from 5, else after 200 ms); a
// label counts as saved only when the server answered that it is in the journal. Unsaved labels
// are sent again until they are (server restarted, a round in progress), and the page warns
// before it is closed with any unsaved.
#include "serve/server.hpp"

namespace quarry::serve {

const char* page_html() {
  return R"PAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>quarry labeling</title>
<style>
  :root { --fg:#1d2330; --muted:#667085; --line:#d0d5dd; --accent:#2f6fde; --ok:#12805c; --warn:#b54708; --bg:#f6f7f9; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; gap:16px; align-items:center; padding:10px 18px; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { font-size:17px; margin:0; }
  #save { margin-left:auto; font-size:14px; }
  #save.ok { color:var(--ok); } #save.busy { color:var(--muted); } #save.bad { color:var(--warn); font-weight:600; }
  .bar { height:8px; background:#e4e7ec; border-radius:4px; overflow:hidden; min-width:160px; }
  .bar > div { height:100%; background:var(--accent); width:0; transition:width .1s; }
  main { display:grid; grid-template-columns: minmax(0,1fr) 300px; gap:18px; padding:18px; }
  #stage { background:#fff; border:1px solid var(--line); border-radius:10px; padding:16px; display:flex; flex-direction:column; align-items:center; gap:12px; min-height:70vh; }
  #view { display:flex; align-items:center; justify-content:center; width:100%; height:56vh; background:#111; border-radius:8px; }
  #img { max-width:100%; max-height:100%; object-fit:contain; }
  #img.pixel { image-rendering:pixelated; height:100%; width:auto; }
  #noimg { color:#ccc; }
  #meta { color:var(--muted); font-size:14px; }
  #pred { font-size:16px; }
  #classes { display:flex; flex-wrap:wrap; gap:8px; justify-content:center; }
  button { font:inherit; padding:8px 14px; border-radius:8px; border:1px solid var(--line); background:#fff; cursor:pointer; }
  button:hover { border-color:var(--accent); }
  button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
  button.chosen { outline:3px solid var(--accent); }
  button kbd { font:12px ui-monospace, monospace; background:#eef2f6; border-radius:4px; padding:1px 5px; margin-right:6px; color:var(--fg); }
  button:disabled { opacity:.5; cursor:default; }
  aside section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 14px; margin-bottom:14px; }
  aside h2 { font-size:14px; margin:0 0 8px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
  .cls { display:grid; grid-template-columns: 90px 1fr 44px; gap:6px; align-items:center; font-size:13px; margin:3px 0; }
  .cls .bar { min-width:0; }
  #log { font:12px ui-monospace, monospace; white-space:pre-wrap; max-height:160px; overflow:auto; color:var(--muted); }
  #conflicts li { font-size:13px; margin-bottom:6px; }
  #done { text-align:center; }
  .hidden { display:none !important; }
  #error { color:var(--warn); font-weight:600; }
</style>
</head>
<body>
<header>
  <h1 id="title">quarry</h1>
  <span id="batchname"></span>
  <div class="bar" title="this batch"><div id="progress"></div></div>
  <span id="counts"></span>
  <span id="save" class="ok">all labels saved</span>
</header>
<main>
  <div id="stage">
    <div id="labeling" class="hidden" style="width:100%;display:flex;flex-direction:column;align-items:center;gap:12px">
      <div id="view"><img id="img" alt="item"><span id="noimg" class="hidden">no image for this item</span></div>
      <div id="meta"></div>
      <div id="pred"></div>
      <div id="classes"></div>
      <div><button id="skip"><kbd>S</kbd>skip</button> <button id="undo"><kbd>&#9003;</kbd>undo</button></div>
    </div>
    <div id="done" class="hidden">
      <h2 id="donetitle">Batch complete</h2>
      <p id="donetext"></p>
      <button id="back" class="hidden">back to the skipped</button>
      <button id="next" class="primary"><kbd>&#9166;</kbd>next batch</button>
      <div id="log"></div>
    </div>
    <div id="error"></div>
  </div>
  <aside>
    <section><h2>Labels by class</h2><div id="balance"></div></section>
    <section><h2>Validation over rounds</h2><div id="curve"></div></section>
    <section id="conflictbox" class="hidden"><h2>Conflicts</h2><ul id="conflicts"></ul></section>
    <section><h2>Keys</h2><div style="font-size:13px">1-9 label &middot; S or Space skip &middot; Backspace or U undo &middot; Enter next batch</div></section>
  </aside>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("quarryToken") || "";
if (params.get("token")) { sessionStorage.setItem("quarryToken", token); history.replaceState(null, "", location.pathname); }
const session = Math.random().toString(36).slice(2, 10);
const $ = (id) => document.getElementById(id);
// What the page knows: the server's state, this tab's answers, what is queued or in flight.
let S = null, items = [], pos = 0, undoStack = [];
const mine = new Map();      // index -> class this tab answered (saved or not)
const queue = new Map();     // index -> {label, relabel, t}: not yet sent
let inflight = null;         // Map of the group being sent
let offline = "", retrying = false, keyTime = null, flushTimer = null, pollTimer = null;
const conflicts = new Map(); // index -> {current, wanted}
const imgCache = new Map();
// Small images (MNIST-like 28x28) are scaled up with sharp pixels; large ones fit the view.
$("img").addEventListener("load", () => { const i = $("img"); i.classList.toggle("pixel", i.naturalWidth < 256 && i.naturalHeight < 256); });
window.quarry = { timings: [], saveTimes: [], unsaved: () => queue.size + (inflight ? inflight.size : 0) };

function withToken(url) { return /^https?:/.test(url) ? url : url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token); }
async function api(path, body) {
  const opts = body === undefined ? { headers: { "X-Quarry-Token": token } }
    : { method: "POST", headers: { "X-Quarry-Token": token, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  let j = {};
  try { j = await r.json(); } catch (e) { j = { error: "HTTP " + r.status }; }
  return { status: r.status, body: j };
}
function labelOf(it) { return mine.has(it.index) ? mine.get(it.index) : it.label; }
function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }

async function load() {
  const r = await api("api/state");
  if (r.status !== 200) { $("error").textContent = r.body.error || ("HTTP " + r.status); return; }
  S = r.body;
  const same = items.length && S.batch && items.batch === S.batch.number;
  items = S.batch ? S.batch.items : [];
  items.batch = S.batch ? S.batch.number : 0;
  // A saved label of this tab that the server now has otherwise was changed by another session:
  // the server's wins (a key on it is then a conflict, not a silent relabel).
  const byIndex = new Map(items.map((it) => [it.index, it]));
  for (const [idx, c] of [...mine]) {
    const it = byIndex.get(idx);
    if (!queue.has(idx) && !(inflight && inflight.has(idx)) && it && it.label !== null && it.label !== c) mine.delete(idx);
  }
  if (!same) { pos = firstOpen(0); undoStack = []; }
  else if (pos < items.length && items[pos].label !== null && !mine.has(items[pos].index)) pos = firstOpen(pos);  // labeled elsewhere
  renderAll();
}
function firstOpen(from) {
  for (let i = from; i < items.length; i++) if (labelOf(items[i]) === null || labelOf(items[i]) === undefined) return i;
  return items.length;
}
function batchDone() { return !S || !S.batch || pos >= items.length; }

function renderAll() {
  $("title").textContent = "quarry · " + S.project;
  renderItem(); renderCounts(); renderBalance(); renderCurve(); renderConflicts(); renderSave();
}
function renderCounts() {
  const labeled = items.filter((it) => labelOf(it) !== null && labelOf(it) !== undefined).length;
  $("batchname").textContent = S.batch ? "batch " + String(S.batch.number).padStart(4, "0") + " · " + labeled + "/" + items.length : "no batch yet";
  $("progress").style.width = (items.length ? 100 * labeled / items.length : 0) + "%";
  $("counts").textContent = S.labeled + " labels of " + S.pool_size;
}
function renderItem() {
  const done = batchDone();
  $("labeling").classList.toggle("hidden", done);
  $("done").classList.toggle("hidden", !done);
  if (done) { renderDone(); return; }
  const it = items[pos];
  const img = $("img");
  if (it.image) {
    img.classList.remove("hidden"); $("noimg").classList.add("hidden");
    const src = withToken(it.image);
    if (img.getAttribute("src") !== src) img.src = src;
  } else { img.classList.add("hidden"); $("noimg").classList.remove("hidden"); }
  $("meta").textContent = "item " + it.id + " · " + (pos + 1) + " of " + items.length + " · score " + Number(it.score).toFixed(4);
  $("pred").innerHTML = it.predicted === null ? "<span style='color:var(--muted)'>no model prediction yet</span>"
    : "model: <b>" + esc(S.classes[it.predicted]) + "</b> (" + (100 * it.confidence).toFixed(0) + "%)";
  const have = labelOf(it);
  $("classes").innerHTML = S.classes.map((c, k) =>
    "<button data-k='" + k + "' class='" + (have === k ? "chosen" : "") + "'>" + (k < 9 ? "<kbd>" + (k + 1) + "</kbd>" : "") + esc(c) + "</button>").join("");
  $("undo").disabled = undoStack.length === 0;
  preload();
}
function renderDone() {
  const r = S.round || {};
  const pending = S.batch ? items.filter((it) => labelOf(it) === null || labelOf(it) === undefined).length : 0;
  $("donetitle").textContent = !S.batch ? "No batch yet" : r.running ? "Preparing the next batch…" : pending ? "Skipped items remain" : "Batch complete";
  $("donetext").textContent = !S.batch ? "Ask for the first batch: quarry picks " + S.next_k + " items for you to label."
    : pending ? pending + " item(s) of this batch have no label yet. Go back to them, or ask for the next batch anyway: they return to the pool."
    : "Every item of this batch is labeled. The next batch retrains the model on the " + S.labeled + " labels and picks " + S.next_k + " more.";
  $("back").classList.toggle("hidden", !pending || !!r.running);
  $("next").innerHTML = "<kbd>&#9166;</kbd>" + (pending ? "next batch anyway" : S.batch ? "next batch" : "first batch");
  $("next").disabled = !!r.running || window.quarry.unsaved() > 0;
  $("log").textContent = (r.log || []).join("\n") + (r.error ? "\nfailed: " + r.error : "") + (r.result && !r.running ? "\n" + r.result : "");
}
function preload() {
  for (let i = pos + 1; i < Math.min(items.length, pos + 8); i++) {
    const u = items[i].image;
    if (u && !imgCache.has(u)) {
      // Fetched and decoded ahead: the key press only swaps a decoded image in.
      const im = new Image(); im.src = withToken(u); im.decode().catch(() => {}); imgCache.set(u, im);
    }
  }
}
function renderBalance() {
  const per = S.per_class.slice();
  for (const [idx, c] of mine) { const it = items.find((x) => x.index === idx); if (it && it.label === null) per[c]++; }
  const most = Math.max(1, ...per);
  $("balance").innerHTML = S.classes.map((c, k) => "<div class='cls'><span>" + esc(c) + "</span><div class='bar'><div style='width:" +
    (100 * per[k] / most) + "%'></div></div><span style='text-align:right'>" + per[k] + "</span></div>").join("");
}
function renderCurve() {
  const pts = (S.rounds || []).filter((r) => r.val_balanced_accuracy !== null);
  if (!pts.length) { $("curve").innerHTML = "<span style='color:var(--muted);font-size:13px'>after the first model</span>"; return; }
  const W = 270, H = 150, L = 34, B = 22;
  const xmax = Math.max(...pts.map((p) => p.labels)), xmin = Math.min(...pts.map((p) => p.labels));
  const x = (v) => L + (xmax === xmin ? (W - L) / 2 : (v - xmin) / (xmax - xmin) * (W - L - 8));
  const y = (v) => (H - B) - v * (H - B - 6);
  const line = pts.map((p) => x(p.labels).toFixed(1) + "," + y(p.val_balanced_accuracy).toFixed(1)).join(" ");
  $("curve").innerHTML = "<svg width='" + W + "' height='" + H + "' role='img' aria-label='balanced accuracy by labels'>" +
    [0, 0.5, 1].map((v) => "<line x1='" + L + "' x2='" + W + "' y1='" + y(v) + "' y2='" + y(v) + "' stroke='#e4e7ec'/><text x='2' y='" + (y(v) + 4) + "' font-size='11' fill='#667085'>" + (100 * v) + "%</text>").join("") +
    "<polyline fill='none' stroke='#2f6fde' stroke-width='2' points='" + line + "'/>" +
    pts.map((p) => "<circle cx='" + x(p.labels) + "' cy='" + y(p.val_balanced_accuracy) + "' r='3' fill='#2f6fde'><title>" + p.labels + " labels: " + (100 * p.val_balanced_accuracy).toFixed(1) + "%</title></circle>").join("") +
    "<text x='" + L + "' y='" + (H - 4) + "' font-size='11' fill='#667085'>" + xmin + "</text><text x='" + (W - 2) + "' y='" + (H - 4) + "' font-size='11' fill='#667085' text-anchor='end'>" + xmax + " labels</text></svg>" +
    "<div style='font-size:13px'>balanced accuracy " + (100 * pts[pts.length - 1].val_balanced_accuracy).toFixed(1) + "% at " + pts[pts.length - 1].labels + " labels</div>";
}
function renderConflicts() {
  $("conflictbox").classList.toggle("hidden", conflicts.size === 0);
  $("conflicts").innerHTML = [...conflicts].map(([idx, c]) => "<li>item " + idx + ": already <b>" + esc(S.classes[c.current]) +
    "</b> (another session), yours <b>" + esc(S.classes[c.wanted]) + "</b> was not saved. <button data-keep='" + idx + "'>use mine</button></li>").join("");
}
function renderSave() {
  const n = window.quarry.unsaved(), el = $("save");
  if (offline) { el.className = "bad"; el.textContent = n + " label(s) not saved yet: " + offline + (retrying ? " (retrying)" : " (not retrying: the next key sends them again)"); }
  else if (n) { el.className = "busy"; el.textContent = "saving " + n + "…"; }
  else { el.className = "ok"; el.textContent = "all labels saved"; }
}

function answer(k) {
  if (batchDone() || k >= S.classes.length) return;
  const it = items[pos];
  const before = labelOf(it);
  // A relabel only of what this tab itself answered (undo); another session's label is a conflict.
  const relabel = mine.has(it.index) && before !== k;
  mine.set(it.index, k);
  queue.set(it.index, { label: k, relabel: relabel || (queue.get(it.index) || {}).relabel || false, t: keyTime || performance.now() });
  undoStack.push(pos);
  pos = firstOpen(pos + 1);
  show();
  scheduleFlush();
}
function skip() { if (batchDone()) return; undoStack.push(pos); pos = Math.min(items.length, pos + 1); while (pos < items.length && labelOf(items[pos]) !== null && labelOf(items[pos]) !== undefined) pos++; show(); }
function undo() {
  if (!undoStack.length) return;
  pos = undoStack.pop();
  const it = items[pos];
  if (queue.has(it.index)) { queue.delete(it.index); if (it.label === null) mine.delete(it.index); else mine.set(it.index, it.label); }
  show();
}
function show() {
  const t0 = keyTime;
  keyTime = null;
  renderItem(); renderCounts(); renderBalance(); renderSave();
  if (t0 !== null && !batchDone()) {
    const img = $("img");
    const done = () => requestAnimationFrame(() => window.quarry.timings.push(performance.now() - t0));
    if (img.classList.contains("hidden")) done(); else img.decode().then(done, done);
  }
}

function scheduleFlush() {
  renderSave();
  if (queue.size >= 5) flush();
  else if (!flushTimer) flushTimer = setTimeout(() => { flushTimer = null; flush(); }, 200);
}
async function flush() {
  if (inflight || queue.size === 0) return;
  inflight = new Map([...queue].slice(0, 200));
  for (const k of inflight.keys()) queue.delete(k);
  renderSave();
  let r;
  try { r = await api("api/labels", { session, labels: [...inflight].map(([index, v]) => ({ index, label: v.label, relabel: v.relabel })) }); }
  catch (e) { r = { status: 0, body: { error: "the server is unreachable" } }; }
  const sent = inflight;
  inflight = null;
  if (r.status === 200) {
    offline = "";
    retrying = false;
    const bad = new Set(r.body.conflicts.map((c) => c.index));
    for (const c of r.body.conflicts) { conflicts.set(c.index, c); const it = items.find((x) => x.index === c.index); if (it) it.label = c.current; mine.delete(c.index); }
    const now = performance.now();
    for (const [index, v] of sent) {
      if (bad.has(index)) continue;
      const it = items.find((x) => x.index === index);
      if (it) it.label = v.label;
      conflicts.delete(index);
      window.quarry.saveTimes.push(now - v.t);
    }
    S.labeled = r.body.labeled; S.per_class = r.body.per_class;
    renderCounts(); renderBalance(); renderConflicts(); renderSave();
  } else {
    // Not saved: back into the queue (unless answered again since), sent again shortly.
    for (const [index, v] of sent) if (!queue.has(index)) queue.set(index, v);
    offline = r.body.error || ("HTTP " + r.status);
    // Sent again by itself only where waiting helps: the server unreachable or busy with a round.
    retrying = r.status === 0 || r.status === 503 || r.status >= 500;
    if (!retrying) $("error").textContent = offline;
    renderSave();
    if (retrying) setTimeout(flush, 1000);
    return;
  }
  if (queue.size) flush();
  if (batchDone()) renderItem();
}

async function nextBatch() {
  if ($("next").disabled) return;
  $("next").disabled = true;
  const pending = S.batch ? items.filter((it) => labelOf(it) === null || labelOf(it) === undefined).length : 0;
  const r = await api("api/next", pending ? { replace_pending: true } : {});
  if (r.status !== 202) { $("error").textContent = r.body.error || ("HTTP " + r.status); await load(); return; }
  $("error").textContent = "";
  await load();
  const started = r.body.round.id;
  const poll = async () => {
    await load();
    if (S.round.running || S.round.id !== started) { setTimeout(poll, 400); return; }
    if (S.round.error) $("error").textContent = "next batch failed: " + S.round.error;
  };
  setTimeout(poll, 400);
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  keyTime = e.timeStamp;  // when the key event was made, not when this handler ran
  if (/^[1-9]$/.test(e.key)) { e.preventDefault(); answer(Number(e.key) - 1); }
  else if (e.key === " " || e.key.toLowerCase() === "s") { e.preventDefault(); skip(); }
  else if (e.key === "Backspace" || e.key.toLowerCase() === "u") { e.preventDefault(); undo(); }
  else if (e.key === "Enter" && batchDone()) { e.preventDefault(); nextBatch(); }
  keyTime = null;
});
document.addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (!b) return;
  b.blur();  // Enter and Space are the page's keys, not a repeat of this button
  if (b.dataset.k !== undefined) { keyTime = e.timeStamp; answer(Number(b.dataset.k)); keyTime = null; }
  else if (b.dataset.keep !== undefined) {
    const idx = Number(b.dataset.keep), c = conflicts.get(idx);
    mine.set(idx, c.wanted); queue.set(idx, { label: c.wanted, relabel: true, t: performance.now() }); conflicts.delete(idx); renderConflicts(); scheduleFlush();
  }
  else if (b.id === "skip") skip();
  else if (b.id === "undo") undo();
  else if (b.id === "next") nextBatch();
  else if (b.id === "back") { pos = firstOpen(0); show(); }
});
window.addEventListener("beforeunload", (e) => { if (window.quarry.unsaved()) { e.preventDefault(); e.returnValue = ""; } });
// Labels of other tabs and people, and a round started elsewhere, every few seconds.
setInterval(() => { if (!window.quarry.unsaved() && !(S && S.round && S.round.running)) load(); }, 4000);
if (!token) $("error").textContent = "This page needs its access token: open the address quarry printed (it ends in ?token=...).";
else load();
</script>
</body>
</html>
)PAGE";
}

}  // namespace quarry::serve
