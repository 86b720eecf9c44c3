// medlite serve: the page. Plain JavaScript, no library, no request but to this server.
"use strict";

const COLOURS = [[255, 64, 64], [64, 160, 255], [80, 220, 120], [255, 200, 40], [200, 90, 255],
                 [255, 130, 200], [60, 220, 220], [255, 150, 60]];
const $ = (id) => document.getElementById(id);

const state = {
  session: null, name: "", width: 0, height: 0, scale: 1, medical: false,
  preview: null,            // ImageData of the image as the server sent it
  objects: [], current: 0, nextId: 0,
  tool: "box", threshold: 0.5, drag: null, stroke: null,
  timings: { upload: [], prompt: [] },   // ms, read by the browser test and the latency benchmark
  busy: 0,
};
window.medlite = state;

// ------------------------------------------------------------------ helpers
function status(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.session) headers["X-Session"] = state.session;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      msg = typeof body.error === "string" ? body.error
        : body.detail ? JSON.stringify(body.detail) : JSON.stringify(body.error || body);
    } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not decode the server's image"));
    img.src = url;
  });
}

async function imageData(url, w, h) {
  const img = await loadImage(url);
  const c = new OffscreenCanvas(w, h);
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, w, h);
}

function toImage(evt) {
  const r = $("overlay").getBoundingClientRect();
  const x = Math.min(Math.max((evt.clientX - r.left) / state.scale, 0), state.width);
  const y = Math.min(Math.max((evt.clientY - r.top) / state.scale, 0), state.height);
  return [x, y];
}

function currentObject() {
  return state.objects.find((o) => o.id === state.current);
}

function newObject() {
  const o = { id: state.nextId++, box: null, points: [], strokes: [], history: [], prob: null, mask: null, iou: null };
  state.objects.push(o);
  state.current = o.id;
  renderObjects();
  return o;
}

function hasPrompt(o) {
  return o.box !== null || o.points.length > 0 || o.strokes.length > 0;
}

// ------------------------------------------------------------------ drawing
function drawImage() {
  if (!state.preview) return;
  const win = Number($("window").value), level = Number($("level").value);
  const lo = level - win / 2;
  const src = state.preview.data;
  const out = new ImageData(state.width, state.height);
  for (let i = 0; i < src.length; i += 4) {
    for (let c = 0; c < 3; c++) out.data[i + c] = ((src[i + c] - lo) / win) * 255;
    out.data[i + 3] = 255;
  }
  const full = new OffscreenCanvas(state.width, state.height);
  full.getContext("2d").putImageData(out, 0, 0);
  const ctx = $("image").getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.clearRect(0, 0, $("image").width, $("image").height);
  ctx.drawImage(full, 0, 0, $("image").width, $("image").height);
}

function colourMask(o, index) {
  // the object's probability map thresholded as the slider says, in its colour
  const [r, g, b] = COLOURS[index % COLOURS.length];
  const t = state.threshold * 255;
  const out = new ImageData(state.width, state.height);
  const p = o.prob.data;
  for (let i = 0; i < p.length; i += 4) {
    if (p[i] > t) { out.data[i] = r; out.data[i + 1] = g; out.data[i + 2] = b; out.data[i + 3] = 115; }
  }
  const c = new OffscreenCanvas(state.width, state.height);
  c.getContext("2d").putImageData(out, 0, 0);
  o.mask = c;
}

function drawOverlay() {
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const s = state.scale;
  state.objects.forEach((o, k) => {
    if (o.prob && !o.mask) colourMask(o, k);
    if (o.mask) ctx.drawImage(o.mask, 0, 0, canvas.width, canvas.height);
    const [r, g, b] = COLOURS[k % COLOURS.length];
    const colour = `rgb(${r},${g},${b})`;
    ctx.lineWidth = o.id === state.current ? 2 : 1;
    ctx.strokeStyle = colour;
    if (o.box) ctx.strokeRect(o.box[0] * s, o.box[1] * s, (o.box[2] - o.box[0]) * s, (o.box[3] - o.box[1]) * s);
    for (const [x, y, label] of o.points) {
      ctx.beginPath();
      ctx.arc(x * s, y * s, 5, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#3ddc84" : "#ff5252";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
    for (const st of o.strokes) drawStroke(ctx, st);
  });
  if (state.drag) {
    const [x0, y0, x1, y1] = state.drag;
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(Math.min(x0, x1) * s, Math.min(y0, y1) * s, Math.abs(x1 - x0) * s, Math.abs(y1 - y0) * s);
    ctx.setLineDash([]);
  }
  if (state.stroke) drawStroke(ctx, state.stroke);
}

function drawStroke(ctx, st) {
  ctx.beginPath();
  ctx.lineWidth = 3;
  ctx.strokeStyle = st.label ? "#3ddc84" : "#ff5252";
  st.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * state.scale, y * state.scale) : ctx.moveTo(x * state.scale, y * state.scale)));
  ctx.stroke();
}

function renderObjects() {
  const ul = $("objects");
  ul.replaceChildren();
  state.objects.forEach((o, k) => {
    const li = document.createElement("li");
    li.className = o.id === state.current ? "current" : "";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = `rgb(${COLOURS[k % COLOURS.length].join(",")})`;
    li.append(sw, `Object ${k + 1}` + (o.iou !== null ? ` · predicted IoU ${o.iou.toFixed(2)}` : ""));
    li.addEventListener("click", () => { state.current = o.id; renderObjects(); drawOverlay(); });
    ul.append(li);
  });
}

// ------------------------------------------------------------------ server calls
async function openFile(file) {
  if (!file) return;
  status(`Reading ${file.name}…`);
  const t0 = performance.now();
  state.busy++;
  try {
    const res = await api("/api/image", { method: "POST", body: file,
                                          headers: { "X-Filename": encodeURIComponent(file.name).slice(0, 255) } });
    const info = await res.json();
    Object.assign(state, { session: info.session, name: info.name, width: info.width, height: info.height,
                           medical: info.medical, objects: [], nextId: 0 });
    state.preview = await imageData(info.preview, info.width, info.height);
    const stage = $("stage");
    state.scale = Math.min(1, (stage.clientWidth - 4) / info.width, Math.max(480, window.innerHeight - 120) / info.height);
    for (const id of ["image", "overlay"]) {
      $(id).width = Math.round(info.width * state.scale);
      $(id).height = Math.round(info.height * state.scale);
    }
    $("drop").hidden = true;
    $("heat").hidden = true;
    $("dl-nifti").hidden = !info.medical;
    $("probs").replaceChildren();
    newObject();
    drawImage();
    drawOverlay();
    const ms = performance.now() - t0;
    state.timings.upload.push(ms);
    status(`${info.name}: ${info.width} × ${info.height} ${info.kind}, encoded in ${info.encoder_ms.toFixed(0)} ms ` +
           `(ready after ${ms.toFixed(0)} ms). Draw a box around the structure.`);
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy--;
  }
}

async function segment(o, t0 = performance.now()) {
  if (!hasPrompt(o)) {
    o.prob = o.mask = null;
    o.iou = null;
    await api(`/api/objects/${o.id}`, { method: "DELETE" }).catch(() => {});
    renderObjects();
    drawOverlay();
    return;
  }
  state.busy++;
  try {
    const body = { object: o.id, box: o.box, points: o.points, strokes: o.strokes };
    const res = await api("/api/segment", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) });
    const out = await res.json();
    o.prob = await imageData(out.prob, state.width, state.height);
    o.mask = null;
    o.iou = out.iou;
    drawOverlay();
    const ms = performance.now() - t0;
    state.timings.prompt.push(ms);
    renderObjects();
    status(`Mask in ${ms.toFixed(0)} ms (decoder ${out.ms.toFixed(0)} ms), predicted IoU ${out.iou.toFixed(2)}.`);
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy--;
  }
}

async function download(what) {
  try {
    const res = await api(`/api/download/${what}?threshold=${state.threshold}`);
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${state.name.split(".")[0] || "image"}_${what}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    status(e.message, true);
  }
}

async function classify() {
  const model = $("classifier").value;
  if (!state.session || !model) return status("Open an image and pick a classifier first.", true);
  state.busy++;
  try {
    const res = await api("/api/classify", { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify({ model }) });
    const out = await res.json();
    const table = $("probs");
    table.replaceChildren();
    const entries = Object.entries(out.probs).sort((a, b) => b[1] - a[1]);
    entries.forEach(([name, p], i) => {
      const tr = document.createElement("tr");
      tr.className = i === 0 ? "top" : "";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.round(p * 100)}%`;
      const cells = [name, `${(p * 100).toFixed(1)} %`];
      for (const text of cells) { const td = document.createElement("td"); td.textContent = text; tr.append(td); }
      const td = document.createElement("td"); td.append(bar); tr.append(td);
      table.append(tr);
    });
    if (out.heatmap) {
      const img = $("heat");
      img.src = out.heatmap;
      img.width = $("image").width;
      img.height = $("image").height;
      img.hidden = !$("show-heat").checked;
    }
    status(`${out.model}: ${Array.isArray(out.label) ? out.label.join(", ") || "no label" : out.label} ` +
           `(${out.ms.toFixed(0)} ms)` + (out.heatmap ? "" : "; this model has no heat map"));
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy--;
  }
}

// ------------------------------------------------------------------ events
function undo() {
  const o = currentObject();
  if (!o || !o.history.length) return;
  const last = o.history.pop();
  if (last.kind === "box") o.box = last.previous;
  else if (last.kind === "point") o.points.pop();
  else o.strokes.pop();
  segment(o);
}

function setup() {
  $("file").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("hover"); });
  stage.addEventListener("dragleave", () => $("drop").classList.remove("hover"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    $("drop").classList.remove("hover");
    openFile(e.dataTransfer.files[0]);
  });
  for (const r of document.querySelectorAll("input[name=tool]")) {
    r.addEventListener("change", () => { state.tool = r.value; });
  }
  for (const id of ["window", "level"]) $(id).addEventListener("input", drawImage);
  $("threshold").addEventListener("input", (e) => {
    state.threshold = Number(e.target.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    state.objects.forEach((o) => { o.mask = null; });
    drawOverlay();
  });
  $("undo").addEventListener("click", undo);
  $("new-object").addEventListener("click", () => { if (state.session) { newObject(); drawOverlay(); } });
  $("clear").addEventListener("click", async () => {
    for (const o of state.objects) await api(`/api/objects/${o.id}`, { method: "DELETE" }).catch(() => {});
    state.objects = [];
    newObject();
    drawOverlay();
  });
  for (const b of document.querySelectorAll("button.download")) {
    b.addEventListener("click", () => download(b.dataset.file));
  }
  $("classify").addEventListener("click", classify);
  $("show-heat").addEventListener("change", (e) => { if ($("heat").src) $("heat").hidden = !e.target.checked; });
  for (const t of document.querySelectorAll(".tab")) {
    t.addEventListener("click", () => {
      for (const u of document.querySelectorAll(".tab")) u.classList.toggle("active", u === t);
      for (const p of document.querySelectorAll(".pane")) p.hidden = p.dataset.pane !== t.dataset.tab;
      $("heat").hidden = t.dataset.tab !== "classify" || !$("heat").src || !$("show-heat").checked;
      $("overlay").hidden = t.dataset.tab !== "segment";
    });
  }
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
    if (e.key === "n" && e.target.tagName !== "INPUT" && state.session) { newObject(); drawOverlay(); }
  });

  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", (e) => {
    if (!state.session) return;
    overlay.setPointerCapture(e.pointerId);
    const [x, y] = toImage(e);
    if (state.tool === "box") state.drag = [x, y, x, y];
    else if (state.tool.startsWith("scribble")) state.stroke = { points: [[x, y]], label: state.tool === "scribble-pos" ? 1 : 0 };
  });
  overlay.addEventListener("pointermove", (e) => {
    if (state.drag) { const [x, y] = toImage(e); state.drag[2] = x; state.drag[3] = y; drawOverlay(); }
    if (state.stroke) { state.stroke.points.push(toImage(e)); drawOverlay(); }
  });
  overlay.addEventListener("pointerup", (e) => {
    if (!state.session) return;
    const t0 = performance.now();
    const o = currentObject() || newObject();
    const [x, y] = toImage(e);
    if (state.drag) {
      const [x0, y0] = state.drag;
      state.drag = null;
      if (Math.abs(x - x0) < 2 || Math.abs(y - y0) < 2) { drawOverlay(); return; }
      o.history.push({ kind: "box", previous: o.box });
      o.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)].map((v) => Math.round(v * 10) / 10);
    } else if (state.stroke) {
      o.strokes.push(state.stroke);
      o.history.push({ kind: "stroke" });
      state.stroke = null;
    } else if (state.tool === "pos" || state.tool === "neg") {
      o.points.push([x, y, state.tool === "pos" ? 1 : 0]);
      o.history.push({ kind: "point" });
    } else {
      return;
    }
    drawOverlay();
    segment(o, t0);
  });
}

async function start() {
  setup();
  try {
    const info = await (await api("/api/info")).json();
    $("model").textContent = `Promptable model: ${info.sam} · ${info.threads} thread(s) · uploads up to ${info.max_upload_mb} MB`;
    const sel = $("classifier");
    for (const name of info.classifiers) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = name;
      sel.append(opt);
    }
    if (!info.classifiers.length) { $("classify").disabled = true; sel.disabled = true; }
  } catch (e) {
    status(`The server does not answer: ${e.message}`, true);
  }
}

start();
