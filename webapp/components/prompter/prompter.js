// Point/box prompter: runs once per component mount as Gradio's `js_on_load`, with `element`,
// `props`, `trigger` and `watch` in scope.
//
// Value: {image: FileData | null, points: [[x1, y1, t1, x2, y2, t2], ...]} in the pixels of
// the image it holds (floats, never rounded to screen pixels):
//   positive point [x, y, 1, 0, 0, 4], negative point [x, y, 0, 0, 0, 4], box [x0, y0, 2, x1, y1, 3].
// The overlay is an SVG whose viewBox is the image's own pixel grid, so what is drawn and what
// is reported are the same numbers at any display size. A user edit sets `props.value` and
// fires "input"; values set by the server only redraw (no event loop).
const SVG = "http://www.w3.org/2000/svg";
const CLICK_SLOP_PX = 5; // screen pixels a press may move and still count as a click
const stage = element.querySelector(".mp-stage");
const img = element.querySelector(".mp-image");
const svg = element.querySelector(".mp-overlay");
const empty = element.querySelector(".mp-empty");
const status = element.querySelector(".mp-status");
const buttons = {
  negative: element.querySelector(".mp-negative"),
  undo: element.querySelector(".mp-undo"),
  remove: element.querySelector(".mp-delete"),
  clear: element.querySelector(".mp-clear"),
};

let history = []; // earlier `points` lists, for undo
let selected = -1; // index into points, or -1
let draft = null; // {x0, y0, x1, y1, startX, startY} while a press is down
let cursor = null; // keyboard cursor {x, y} in image pixels
let anchor = null; // first corner of a keyboard box
let negativeMode = false;
let shownUrl = null;

const points = () => (props.value && Array.isArray(props.value.points) ? props.value.points : []);
const imageUrl = () => (props.value && props.value.image ? props.value.image.url || null : null);
const naturalSize = () => [img.naturalWidth || 0, img.naturalHeight || 0];
const isPositive = (row) => row[2] === 1 || row[2] === 2;

function commit(next, message) {
  history.push(points());
  if (history.length > 200) history.shift();
  props.value = { ...(props.value || {}), image: props.value ? props.value.image : null, points: next };
  say(message);
  draw();
  trigger("input");
}

function say(message) {
  status.textContent = message || "";
}

function layout() {
  const [w, h] = naturalSize();
  if (!w || !h) {
    svg.style.display = "none";
    return;
  }
  const maxH = Number(props.max_height_px) || 460;
  const avail = stage.clientWidth || w;
  // Every image fills the canvas width (small ones scaled up), within the height limit.
  const scale = Math.min(avail / w, maxH / h);
  const dw = w * scale;
  const dh = h * scale;
  img.style.width = `${dw}px`;
  img.style.height = `${dh}px`;
  svg.style.display = "block";
  svg.style.width = `${dw}px`;
  svg.style.height = `${dh}px`;
  svg.style.left = `${img.offsetLeft}px`;
  svg.style.top = `${img.offsetTop}px`;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  draw();
}

function node(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  parent.appendChild(el);
  return el;
}

function draw() {
  const [w, h] = naturalSize();
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!w || !h) return;
  const unit = w / Math.max(1, svg.getBoundingClientRect().width || w); // image px per screen px
  const first = Number(props.first_label) || 1;
  let number = first;
  points().forEach((row, index) => {
    const group = node("g", { "data-index": index, class: index === selected ? "mp-selected" : "" }, svg);
    let tagX;
    let tagY;
    let label = null;
    if (row[2] === 2) {
      const [x0, y0, , x1, y1] = row;
      node("rect", {
        class: "mp-shape", x: Math.min(x0, x1), y: Math.min(y0, y1),
        width: Math.abs(x1 - x0), height: Math.abs(y1 - y0),
      }, group);
      tagX = Math.min(x0, x1) + 3 * unit;
      tagY = Math.min(y0, y1) + 14 * unit;
    } else {
      node("circle", {
        class: `mp-shape ${row[2] === 1 ? "mp-positive-point" : "mp-negative-point"}`,
        cx: row[0], cy: row[1], r: 6 * unit,
      }, group);
      tagX = row[0] + 8 * unit;
      tagY = row[1] - 8 * unit;
    }
    if (isPositive(row)) label = String(number++);
    else label = "−";
    const tag = node("text", { class: "mp-tag", x: tagX, y: tagY, "font-size": 14 * unit }, group);
    tag.textContent = label;
  });
  if (draft && draft.moved) {
    node("rect", {
      class: "mp-draft", x: Math.min(draft.x0, draft.x1), y: Math.min(draft.y0, draft.y1),
      width: Math.abs(draft.x1 - draft.x0), height: Math.abs(draft.y1 - draft.y0),
    }, svg);
  }
  if (cursor) {
    const r = 10 * unit;
    node("line", { class: "mp-cursor", x1: cursor.x - r, y1: cursor.y, x2: cursor.x + r, y2: cursor.y }, svg);
    node("line", { class: "mp-cursor", x1: cursor.x, y1: cursor.y - r, x2: cursor.x, y2: cursor.y + r }, svg);
    if (anchor) {
      node("rect", {
        class: "mp-draft", x: Math.min(anchor.x, cursor.x), y: Math.min(anchor.y, cursor.y),
        width: Math.abs(cursor.x - anchor.x), height: Math.abs(cursor.y - anchor.y),
      }, svg);
    }
  }
  const hasImage = Boolean(imageUrl());
  buttons.undo.disabled = !hasImage || history.length === 0;
  buttons.clear.disabled = !hasImage || points().length === 0;
  buttons.remove.disabled = selected < 0;
  buttons.negative.disabled = !hasImage;
}

function toImage(event) {
  const rect = svg.getBoundingClientRect();
  const [w, h] = naturalSize();
  const x = ((event.clientX - rect.left) / rect.width) * w;
  const y = ((event.clientY - rect.top) / rect.height) * h;
  return { x: Math.min(w, Math.max(0, x)), y: Math.min(h, Math.max(0, y)) };
}

function addPoint(x, y, negative) {
  const row = negative ? [x, y, 0, 0, 0, 4] : [x, y, 1, 0, 0, 4];
  selected = -1;
  commit([...points(), row], negative ? "Negative point added." : "Point added.");
}

function addBox(ax, ay, bx, by) {
  const row = [Math.min(ax, bx), Math.min(ay, by), 2, Math.max(ax, bx), Math.max(ay, by), 3];
  selected = -1;
  commit([...points(), row], "Box added.");
}

function removeSelected() {
  if (selected < 0) return;
  const next = points().filter((_, i) => i !== selected);
  selected = -1;
  commit(next, "Prompt deleted.");
}

function undo() {
  if (!history.length) return;
  const previous = history.pop();
  selected = -1;
  props.value = { ...(props.value || {}), points: previous };
  say("Undone.");
  draw();
  trigger("input");
}

function clearAll() {
  if (!points().length) return;
  selected = -1;
  commit([], "All prompts removed.");
}

svg.addEventListener("contextmenu", (event) => event.preventDefault());
svg.addEventListener("pointerdown", (event) => {
  if (!imageUrl() || (event.button !== 0 && event.button !== 2)) return;
  const hit = event.target.closest ? event.target.closest("[data-index]") : null;
  if (hit) {
    selected = Number(hit.getAttribute("data-index"));
    say(`Prompt ${selected + 1} selected: Delete removes it.`);
    draw();
    event.preventDefault();
    return;
  }
  const p = toImage(event);
  draft = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, sx: event.clientX, sy: event.clientY, moved: false,
            negative: event.button === 2 || event.shiftKey || negativeMode };
  svg.setPointerCapture(event.pointerId);
  event.preventDefault();
});
svg.addEventListener("pointermove", (event) => {
  if (!draft) return;
  const p = toImage(event);
  draft.x1 = p.x;
  draft.y1 = p.y;
  draft.moved = draft.moved || Math.hypot(event.clientX - draft.sx, event.clientY - draft.sy) > CLICK_SLOP_PX;
  draw();
});
const finish = (event) => {
  if (!draft) return;
  const d = draft;
  draft = null;
  if (svg.hasPointerCapture && svg.hasPointerCapture(event.pointerId)) svg.releasePointerCapture(event.pointerId);
  if (event.type === "pointercancel") return draw();
  if (d.moved && !d.negative) addBox(d.x0, d.y0, d.x1, d.y1);
  else addPoint(d.x0, d.y0, d.negative);
  if (negativeMode) setNegative(false);
};
svg.addEventListener("pointerup", finish);
svg.addEventListener("pointercancel", finish);

function setNegative(on) {
  negativeMode = on;
  buttons.negative.setAttribute("aria-pressed", on ? "true" : "false");
}
buttons.negative.addEventListener("click", () => setNegative(!negativeMode));
buttons.undo.addEventListener("click", undo);
buttons.remove.addEventListener("click", removeSelected);
buttons.clear.addEventListener("click", clearAll);

stage.addEventListener("keydown", (event) => {
  const [w, h] = naturalSize();
  if (!w || !h || !imageUrl()) return;
  const key = event.key;
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") {
    undo();
  } else if (key === "Delete" || key === "Backspace") {
    removeSelected();
  } else if (key.startsWith("Arrow")) {
    const step = event.shiftKey ? 1 : Math.max(1, Math.round(Math.max(w, h) / 50));
    cursor = cursor || { x: w / 2, y: h / 2 };
    if (key === "ArrowLeft") cursor.x = Math.max(0, cursor.x - step);
    if (key === "ArrowRight") cursor.x = Math.min(w, cursor.x + step);
    if (key === "ArrowUp") cursor.y = Math.max(0, cursor.y - step);
    if (key === "ArrowDown") cursor.y = Math.min(h, cursor.y + step);
    say(`Cursor at (${cursor.x.toFixed(0)}, ${cursor.y.toFixed(0)}) px.`);
    draw();
  } else if (key === "Enter" || key === " ") {
    cursor = cursor || { x: w / 2, y: h / 2 };
    addPoint(cursor.x, cursor.y, event.shiftKey || negativeMode);
  } else if (key.toLowerCase() === "b") {
    cursor = cursor || { x: w / 2, y: h / 2 };
    if (!anchor) {
      anchor = { ...cursor };
      say("First corner set: move the cursor and press B again.");
      draw();
    } else {
      const a = anchor;
      anchor = null;
      addBox(a.x, a.y, cursor.x, cursor.y);
    }
  } else if (key === "[" || key === "]") {
    const n = points().length;
    if (!n) return;
    selected = key === "]" ? (selected + 1) % n : (selected <= 0 ? n - 1 : selected - 1);
    say(`Prompt ${selected + 1} of ${n} selected.`);
    draw();
  } else if (key === "Escape") {
    anchor = null;
    selected = -1;
    say("");
    draw();
  } else {
    return;
  }
  event.preventDefault();
});
stage.addEventListener("blur", () => {
  cursor = null;
  anchor = null;
  draw();
});

function showImage() {
  const url = imageUrl();
  if (url !== shownUrl) {
    // A new image starts a new drawing: nothing to undo into from the previous one.
    shownUrl = url;
    history = [];
    selected = -1;
    draft = null;
    anchor = null;
    if (url) img.setAttribute("src", url);
    else img.removeAttribute("src");
  }
  empty.style.display = url ? "none" : "block";
  if (url && img.complete && img.naturalWidth) layout();
  else if (!url) {
    svg.style.display = "none";
    draw();
  }
}

img.addEventListener("load", layout);
new ResizeObserver(() => layout()).observe(stage);
watch(["value", "first_label", "max_height_px"], showImage);
showImage();
