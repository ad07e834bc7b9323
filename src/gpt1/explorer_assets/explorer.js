// The attention explorer's page: reads the model's recorded numbers from #explorer-data and draws five views
// on canvases. Written by gpt1/explorer.py; no network, no libraries.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  const TOKENS = DATA.tokens;
  const T = TOKENS.length;
  const TRIANGLE = (T * (T + 1)) / 2; // stored weights per head: row i holds keys 0..i
  const SEGMENT_COLOURS = ["#0969da", "#bf8700", "#1a7f37", "#8250df", "#cf222e", "#57606a"];
  const VIEW_NAMES = {
    model: "model view", head: "head view", step: "step by step", summary: "head summaries", classify: "classify token",
  };
  const $ = (id) => document.getElementById(id);
  const range = (n) => Array.from({ length: n }, (_, index) => index);
  const DPR = () => window.devicePixelRatio || 1;

  const models = []; // decoded: {name, layers, heads, headDim, scaling, weights (Uint16Array), vectors (Float32Array), ...}
  const state = {
    view: "model",
    model: 0, // an index into models, or "diff" (the second model minus the first)
    scale: "sqrt", // faint weights stay visible; 0 stays white and 1 full colour
    layer: 0, // a layer index, or "all"
    heads: new Set(),
    direction: "to", // "to": what the focused token attends to; "from": what attends to it
    query: T - 1, // the chosen token
    hover: null, // the token under the pointer, which the head view shows while it is there
    stepLayer: 0,
    stepHead: 0,
    stepModel: 0,
    sort: { key: null, descending: true },
  };
  let tokenBoxes = [];
  const thumbnailCache = new Map();

  // ---------------------------------------------------------------- data
  async function inflate(base64) {
    const bytes = Uint8Array.from(atob(base64), (character) => character.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer();
  }

  function halfToFloat(halves) {
    const floats = new Float32Array(halves.length);
    for (let index = 0; index < halves.length; index++) {
      const half = halves[index];
      const sign = half & 0x8000 ? -1 : 1;
      const exponent = (half >> 10) & 0x1f;
      const fraction = half & 0x3ff;
      if (exponent === 0) floats[index] = sign * 2 ** -14 * (fraction / 1024);
      else if (exponent === 31) floats[index] = fraction ? NaN : sign * Infinity;
      else floats[index] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
    }
    return floats;
  }

  async function decodeModel(payload) {
    const weights = new Uint16Array(await inflate(payload.weights));
    const raw = await inflate(payload.vectors);
    const vectors = payload.vectorType === "float16" ? halfToFloat(new Uint16Array(raw)) : new Float32Array(raw);
    if (weights.length !== payload.layers * payload.heads * TRIANGLE) throw new Error("attention weights are damaged");
    return { ...payload, weights, vectors, width: payload.heads * payload.headDim };
  }

  /** The attention weight of `query` on `key` in one head (0 for keys in the query's future). */
  function weight(model, layer, head, query, key) {
    if (key > query) return 0;
    return model.weights[(layer * model.heads + head) * TRIANGLE + (query * (query + 1)) / 2 + key] / model.weightScale;
  }

  /** A head's query (kind 0), key (1) or value (2) vector of one token. */
  function vector(model, layer, kind, token, head) {
    const start = ((layer * 3 + kind) * T + token) * model.width + head * model.headDim;
    return model.vectors.subarray(start, start + model.headDim);
  }

  const isDiff = () => state.model === "diff";
  const shown = () => models[isDiff() ? 0 : state.model];

  /** The (layer, head) pairs the head view averages over. */
  function chosenPairs() {
    const model = shown();
    const layers = state.layer === "all" ? range(model.layers) : [state.layer];
    const heads = [...state.heads].filter((head) => head < model.heads).sort((a, b) => a - b);
    return layers.flatMap((layer) => heads.map((head) => [layer, head]));
  }

  function meanWeight(modelIndex, pairs, query, key) {
    if (modelIndex === "diff") return meanWeight(1, pairs, query, key) - meanWeight(0, pairs, query, key);
    if (!pairs.length) return 0;
    const model = models[modelIndex];
    let sum = 0;
    for (const [layer, head] of pairs) sum += weight(model, layer, head, query, key);
    return sum / pairs.length;
  }

  const focus = () => (state.hover ?? state.query);

  /** What the head view shades each token with: the focused token's row ("to") or column ("from"). */
  function highlighted(token = focus()) {
    const pairs = chosenPairs();
    return range(T).map((other) =>
      state.direction === "to" ? meanWeight(state.model, pairs, token, other) : meanWeight(state.model, pairs, other, token),
    );
  }

  // ---------------------------------------------------------------- colour
  const SEQUENTIAL = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const NEGATIVE = [33, 102, 172];
  const MASKED = [232, 234, 237];
  const POSITIVE = [178, 24, 43];
  const scaled = (value) => (state.scale === "sqrt" ? Math.sign(value) * Math.sqrt(Math.abs(value)) : value);

  function sequential(value) {
    const position = Math.min(1, Math.max(0, value)) * (SEQUENTIAL.length - 1);
    const low = Math.floor(position);
    const high = Math.min(low + 1, SEQUENTIAL.length - 1);
    const t = position - low;
    return SEQUENTIAL[low].map((channel, index) => Math.round(channel + (SEQUENTIAL[high][index] - channel) * t));
  }

  function diverging(value) {
    const end = value < 0 ? NEGATIVE : POSITIVE;
    const t = Math.min(1, Math.abs(value));
    return end.map((channel) => Math.round(255 + (channel - 255) * t));
  }

  /** A weight's colour; a difference is scaled by `extent`, its largest size on screen. */
  function colour(value, extent = 1) {
    return isDiff() ? diverging(scaled(value / (extent || 1))) : sequential(scaled(value));
  }
  const escapeHtml = (text) =>
    String(text).replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
  const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  const darkBackground = (rgb) => 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140;

  function sizeCanvas(canvas, width, height) {
    const ratio = DPR();
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    return context;
  }

  /** A `pixels`×`pixels` picture of one matrix (the largest weight under each pixel), as a canvas to scale. */
  function matrixImage(valueAt, pixels, extent) {
    const image = new ImageData(pixels, pixels);
    for (let row = 0; row < pixels; row++) {
      const queryStart = Math.floor((row * T) / pixels);
      const queryEnd = Math.max(queryStart + 1, Math.floor(((row + 1) * T) / pixels));
      for (let column = 0; column < pixels; column++) {
        const keyStart = Math.floor((column * T) / pixels);
        const keyEnd = Math.max(keyStart + 1, Math.floor(((column + 1) * T) / pixels));
        const offset = (row * pixels + column) * 4;
        let rgb;
        if (keyStart > queryEnd - 1) {
          rgb = MASKED; // the future, hidden by the causal mask
        } else {
          let strongest = 0;
          for (let query = queryStart; query < queryEnd; query++) {
            for (let key = keyStart; key < Math.min(keyEnd, query + 1); key++) {
              const value = valueAt(query, key);
              if (Math.abs(value) > Math.abs(strongest)) strongest = value;
            }
          }
          rgb = colour(strongest, extent);
        }
        image.data[offset] = rgb[0];
        image.data[offset + 1] = rgb[1];
        image.data[offset + 2] = rgb[2];
        image.data[offset + 3] = 255;
      }
    }
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = pixels;
    canvas.getContext("2d").putImageData(image, 0, 0);
    return canvas;
  }

  function headValue(layer, head) {
    if (isDiff()) return (query, key) => weight(models[1], layer, head, query, key) - weight(models[0], layer, head, query, key);
    const model = shown();
    return (query, key) => weight(model, layer, head, query, key);
  }

  function largestDifference(pairsList) {
    if (!isDiff()) return 1;
    let largest = 0;
    for (const [layer, head] of pairsList) {
      const base = (layer * models[0].heads + head) * TRIANGLE;
      for (let index = 0; index < TRIANGLE; index++) {
        const difference = Math.abs(models[1].weights[base + index] - models[0].weights[base + index]);
        if (difference > largest) largest = difference;
      }
    }
    return largest / models[0].weightScale || 1;
  }

  // ---------------------------------------------------------------- model view
  const modelGrid = { label: 52, top: 22, gap: 6, cell: 80 };

  function renderModelView() {
    const model = shown();
    const available = Math.max(400, $("view-model").clientWidth - 10);
    modelGrid.cell = Math.max(44, Math.min(150, Math.floor((available - modelGrid.label) / model.heads) - modelGrid.gap));
    const { label, top, gap, cell } = modelGrid;
    const canvas = $("model-canvas");
    const context = sizeCanvas(canvas, label + model.heads * (cell + gap), top + model.layers * (cell + gap) + 4);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    const pairs = range(model.layers).flatMap((layer) => range(model.heads).map((head) => [layer, head]));
    const extent = largestDifference(pairs);
    const pixels = Math.min(T, Math.round(cell * DPR()));
    context.font = "12px system-ui, sans-serif";
    context.fillStyle = "#424a53";
    for (let head = 0; head < model.heads; head++) context.fillText(`head ${head}`, label + head * (cell + gap), 14);
    for (const [layer, head] of pairs) {
      const key = `${state.model}|${state.scale}|${layer}|${head}|${pixels}`;
      if (!thumbnailCache.has(key)) thumbnailCache.set(key, matrixImage(headValue(layer, head), pixels, extent));
      const x = label + head * (cell + gap);
      const y = top + layer * (cell + gap);
      context.imageSmoothingEnabled = false;
      context.drawImage(thumbnailCache.get(key), x, y, cell, cell);
      context.strokeStyle = "#d0d7de";
      context.lineWidth = 1;
      context.strokeRect(x - 0.5, y - 0.5, cell + 1, cell + 1);
      if (head === 0) {
        context.fillStyle = "#424a53";
        context.fillText(`layer ${layer}`, 2, y + cell / 2 + 4);
      }
    }
    if (state.layer !== "all" && state.heads.size === 1) {
      const [head] = state.heads;
      context.strokeStyle = "#cf222e";
      context.lineWidth = 2.5;
      context.strokeRect(label + head * (cell + gap) - 2, top + state.layer * (cell + gap) - 2, cell + 4, cell + 4);
    }
  }

  function modelCellAt(event) {
    const rect = $("model-canvas").getBoundingClientRect();
    const { label, top, gap, cell } = modelGrid;
    const head = Math.floor((event.clientX - rect.left - label) / (cell + gap));
    const layer = Math.floor((event.clientY - rect.top - top) / (cell + gap));
    const model = shown();
    return head >= 0 && head < model.heads && layer >= 0 && layer < model.layers ? { layer, head } : null;
  }

  // ---------------------------------------------------------------- head view
  function tokenLabel(index) {
    const kind = DATA.kinds[index];
    if (kind !== "text") return TOKENS[index];
    return TOKENS[index].replace(/^ /, "").replace(/ /g, "·") || "·";
  }

  function layoutTokens(context, width) {
    const margin = 10;
    const boxHeight = 24;
    const lineHeight = 34;
    let x = margin;
    let y = margin;
    tokenBoxes = TOKENS.map((token, index) => {
      const special = DATA.kinds[index] !== "text";
      context.font = special ? "12px ui-monospace, Menlo, monospace" : "15px system-ui, sans-serif";
      const label = tokenLabel(index);
      const boxWidth = context.measureText(label).width + 8;
      const wordGap = token.startsWith(" ") ? 6 : 1;
      if (x + wordGap + boxWidth > width - margin && x > margin) {
        x = margin;
        y += lineHeight;
      } else {
        x += x > margin ? wordGap : 0;
      }
      const box = { x, y, width: boxWidth, height: boxHeight, label, special };
      x += boxWidth + 1;
      if (token.endsWith("⏎")) {
        x = margin;
        y += lineHeight;
      }
      return box;
    });
    return y + lineHeight + margin;
  }

  function renderTokens() {
    const canvas = $("token-canvas");
    const width = Math.max(340, $("token-pane").clientWidth - 2);
    const measure = canvas.getContext("2d");
    const height = layoutTokens(measure, width);
    const context = sizeCanvas(canvas, width, height);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    const values = highlighted();
    const extent = isDiff() ? Math.max(1e-9, ...values.map(Math.abs)) : 1;
    const current = focus();
    const showSegments = new Set(DATA.segments).size > 1 || DATA.kinds.some((kind) => kind !== "text");
    tokenBoxes.forEach((box, index) => {
      const future = state.direction === "to" ? index > current : index < current;
      const rgb = future ? [246, 247, 248] : colour(values[index], extent);
      context.fillStyle = css(rgb);
      context.fillRect(box.x, box.y, box.width, box.height);
      context.font = box.special ? "12px ui-monospace, Menlo, monospace" : "15px system-ui, sans-serif";
      context.fillStyle = future ? "#a8aeb5" : darkBackground(rgb) ? "#fff" : "#1f2328";
      context.fillText(box.label, box.x + 4, box.y + 17);
      if (showSegments) {
        context.fillStyle = SEGMENT_COLOURS[DATA.segments[index] % SEGMENT_COLOURS.length];
        context.fillRect(box.x, box.y + box.height + 2, box.width, 3);
      }
      if (box.special) {
        context.setLineDash([3, 2]);
        context.strokeStyle = "#57606a";
        context.lineWidth = 1;
        context.strokeRect(box.x + 0.5, box.y + 0.5, box.width - 1, box.height - 1);
        context.setLineDash([]);
      }
    });
    const chosen = tokenBoxes[state.query];
    context.strokeStyle = "#cf222e";
    context.lineWidth = 2.5;
    context.strokeRect(chosen.x - 1, chosen.y - 1, chosen.width + 2, chosen.height + 2);
    if (state.hover !== null && state.hover !== state.query) {
      const hovered = tokenBoxes[state.hover];
      context.strokeStyle = "#1f2328";
      context.lineWidth = 1.5;
      context.strokeRect(hovered.x - 1, hovered.y - 1, hovered.width + 2, hovered.height + 2);
    }
    renderReadout(values, current);
  }

  function quoted(index) {
    return `‘${TOKENS[index].trim() || TOKENS[index].replace(/ /g, "·")}’`;
  }

  function describePairs() {
    const heads = [...state.heads].sort((a, b) => a - b);
    const model = shown();
    const headText =
      heads.length === model.heads ? "all heads" : heads.length === 1 ? `head ${heads[0]}` : `heads ${heads.join(", ")}`;
    const layerText = state.layer === "all" ? "all layers" : `layer ${state.layer}`;
    return `${heads.length > 1 || state.layer === "all" ? "mean over " : ""}${headText} of ${layerText}`;
  }

  function renderReadout(values, current) {
    const readout = $("readout");
    if (!state.heads.size) {
      readout.textContent = "Choose at least one head.";
      return;
    }
    const candidates = range(T).filter((index) => (state.direction === "to" ? index <= current : index >= current));
    candidates.sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]));
    const top = candidates.slice(0, 8).map((index) => `${quoted(index)} ${values[index].toFixed(3)}`);
    const verb = state.direction === "to" ? "attends most to" : "is attended most by";
    const what = isDiff() ? `changes most (${models[1].name} − ${models[0].name}) on` : verb;
    readout.innerHTML = "";
    const line = document.createElement("div");
    const name = document.createElement("b");
    name.textContent = `${quoted(current)} (token ${current})`;
    line.append(name, ` ${what}: ${top.join(" · ")}`);
    const context = document.createElement("div");
    context.className = "note";
    context.textContent = `${describePairs()} · ${isDiff() ? "difference of the two models" : shown().name}`;
    readout.append(line, context);
  }

  function renderMatrix() {
    const canvas = $("matrix-canvas");
    const size = Math.min(440, Math.max(220, T * 14));
    const context = sizeCanvas(canvas, size + 28, size + 28);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, size + 28, size + 28);
    const pairs = chosenPairs();
    const extent = largestDifference(pairs);
    const valueAt = (query, key) => meanWeight(state.model, pairs, query, key);
    const pixels = Math.min(T, Math.round(size * DPR()));
    context.imageSmoothingEnabled = false;
    context.drawImage(matrixImage(valueAt, pixels, extent), 24, 24, size, size);
    context.font = "12px system-ui, sans-serif";
    context.fillStyle = "#424a53";
    context.fillText("key (attended to) →", 24, 14);
    context.save();
    context.translate(14, 24);
    context.rotate(Math.PI / 2);
    context.fillText("query (attending) →", 0, 0);
    context.restore();
    const step = size / T;
    const current = focus();
    context.strokeStyle = "#cf222e";
    context.lineWidth = 1.5;
    if (state.direction === "to") context.strokeRect(24, 24 + current * step, size, Math.max(step, 1.5));
    else context.strokeRect(24 + current * step, 24, Math.max(step, 1.5), size);
  }

  function renderHeadView() {
    renderTokens();
    renderMatrix();
  }

  function tokenAt(event) {
    const rect = $("token-canvas").getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const index = tokenBoxes.findIndex((box) => x >= box.x && x <= box.x + box.width && y >= box.y && y <= box.y + box.height);
    return index >= 0 ? index : null;
  }

  // ---------------------------------------------------------------- step by step
  const format = (value, digits = 3) => (Number.isFinite(value) ? value.toFixed(digits) : String(value));

  function strip(values) {
    const canvas = document.createElement("canvas");
    canvas.className = "strip";
    const cellWidth = Math.max(1, Math.min(3, Math.floor(96 / values.length)));
    const context = sizeCanvas(canvas, cellWidth * values.length, 12);
    const extent = Math.max(1e-9, ...Array.from(values, Math.abs));
    Array.from(values).forEach((value, index) => {
      context.fillStyle = css(diverging(value / extent));
      context.fillRect(index * cellWidth, 0, cellWidth, 12);
    });
    canvas.title = Array.from(values, (value) => value.toFixed(4)).join(", ");
    return canvas;
  }

  function vectorCell(values, shown = 3) {
    const cell = document.createElement("td");
    cell.append(strip(values));
    const text = document.createElement("span");
    text.className = "vector";
    const head = Array.from(values.slice(0, shown), (value) => format(value, 3)).join(", ");
    text.textContent = `[${head}${values.length > shown ? ", …" : ""}]`;
    cell.append(text);
    return cell;
  }

  /** softmax(q·kᵀ/√d)·v for the chosen token and head, from the recorded query, key and value vectors. */
  function stepNumbers(modelIndex = state.stepModel, layer = state.stepLayer, head = state.stepHead, query = state.query) {
    const model = models[modelIndex];
    const q = vector(model, layer, 0, query, head);
    const dots = range(query + 1).map((key) => {
      const k = vector(model, layer, 1, key, head);
      let dot = 0;
      for (let index = 0; index < q.length; index++) dot += q[index] * k[index];
      return dot;
    });
    const scores = dots.map((dot) => dot * model.scaling);
    const largest = Math.max(...scores);
    const exponentials = scores.map((score) => Math.exp(score - largest));
    const total = exponentials.reduce((sum, value) => sum + value, 0);
    const weights = exponentials.map((value) => value / total);
    const output = new Float64Array(model.headDim);
    weights.forEach((w, key) => {
      const v = vector(model, layer, 2, key, head);
      for (let index = 0; index < output.length; index++) output[index] += w * v[index];
    });
    const recorded = range(query + 1).map((key) => weight(model, layer, head, query, key));
    const maxDifference = Math.max(...weights.map((w, key) => Math.abs(w - recorded[key])));
    return { model, q, dots, scores, weights, output: Array.from(output), recorded, maxDifference };
  }

  function renderStep() {
    const body = $("step-body");
    body.innerHTML = "";
    const query = state.query;
    const numbers = stepNumbers();
    const { model } = numbers;
    const d = model.headDim;
    const title = document.createElement("p");
    title.className = "formula";
    title.textContent = `output = softmax(q · Kᵀ / √${d}) · V   for ${quoted(query)} (token ${query}), layer ${state.stepLayer}, head ${state.stepHead} of ${model.name}`;
    body.append(title);

    const intro = document.createElement("p");
    intro.className = "explain";
    intro.textContent =
      `1. The token's hidden state is projected to a query q, and every token's to a key k and a value v (${d} numbers ` +
      `each for this head). 2. The dot product q·k scores how well each key matches the query. 3. The scores are ` +
      `scaled by 1/√${d} = ${model.scaling.toFixed(4)}, so that softmax does not saturate as d grows. 4. The causal mask ` +
      `adds −∞ to every key after the query: the future gets weight 0. 5. Softmax turns the scores into weights that ` +
      `sum to 1. 6. The output is the weighted sum of the values: the head's contribution, which goes on to the output ` +
      `projection with the other heads'.`;
    body.append(intro);

    const queryLine = document.createElement("h3");
    queryLine.textContent = `The query q of ${quoted(query)}`;
    body.append(queryLine);
    const queryRow = document.createElement("div");
    queryRow.append(...Array.from(vectorCell(numbers.q, 8).childNodes));
    body.append(queryRow);

    const keysTitle = document.createElement("h3");
    const limit = 40;
    let keys = range(query + 1);
    if (keys.length > limit) {
      keys = [...keys].sort((a, b) => numbers.weights[b] - numbers.weights[a]).slice(0, limit).sort((a, b) => a - b);
    }
    keysTitle.textContent =
      keys.length < query + 1
        ? `The ${limit} keys with the largest weights, of ${query + 1} (all of them are in the sum)`
        : `Every key up to the query`;
    body.append(keysTitle);
    const table = document.createElement("table");
    const header = table.insertRow();
    for (const name of ["j", "key token", "k_j", "q·k_j", `÷ √${d}`, "+ mask", "softmax weight", "w_j · v_j"]) {
      const cell = document.createElement("th");
      cell.textContent = name;
      header.append(cell);
    }
    const largestWeight = Math.max(...numbers.weights);
    for (const key of keys) {
      const row = table.insertRow();
      row.insertCell().textContent = key;
      const token = row.insertCell();
      token.className = "token";
      token.textContent = quoted(key);
      row.append(vectorCell(vector(model, state.stepLayer, 1, key, state.stepHead)));
      row.insertCell().textContent = format(numbers.dots[key]);
      row.insertCell().textContent = format(numbers.scores[key]);
      row.insertCell().textContent = "0";
      const weightCell = row.insertCell();
      const bar = document.createElement("span");
      bar.className = "weightbar";
      bar.style.width = `${Math.round((60 * numbers.weights[key]) / largestWeight)}px`;
      weightCell.append(bar, format(numbers.weights[key], 4));
      const value = vector(model, state.stepLayer, 2, key, state.stepHead);
      row.append(vectorCell(Array.from(value, (component) => component * numbers.weights[key])));
    }
    if (query < T - 1) {
      const row = table.insertRow();
      row.className = "masked";
      row.insertCell().textContent = `${query + 1}…${T - 1}`;
      const token = row.insertCell();
      token.className = "token";
      token.textContent = `${T - 1 - query} later token${T - 1 - query > 1 ? "s" : ""}`;
      for (const text of ["", "", "", "−∞", "0", ""]) row.insertCell().textContent = text;
    }
    body.append(table);

    const outputTitle = document.createElement("h3");
    outputTitle.textContent = `The output: Σ_j w_j · v_j (${d} numbers)`;
    body.append(outputTitle);
    const outputRow = document.createElement("div");
    outputRow.append(...Array.from(vectorCell(numbers.output, 8).childNodes));
    body.append(outputRow);

    const check = document.createElement("div");
    check.className = "check";
    const precision = model.vectorType === "float16" ? " The vectors are stored in float16 here, so expect ~1e-3." : "";
    check.textContent =
      `Check: the weights computed above, in this page from the model's q and k, equal the model's own attention ` +
      `weights for this row to within ${numbers.maxDifference.toExponential(1)} (the page stores those to ±7.7e-6).${precision}`;
    body.append(check);
  }

  // ---------------------------------------------------------------- summaries
  const SUMMARY_COLUMNS = [
    ["layer", "layer"], ["head", "head"], ["entropy", "entropy (bits)"], ["previous", "previous token"],
    ["first", "first token (sink)"], ["induction", "induction"],
  ];

  function summaryRows() {
    const model = shown();
    const rows = [];
    for (let layer = 0; layer < model.layers; layer++) {
      for (let head = 0; head < model.heads; head++) {
        const row = { layer, head };
        for (const [key] of SUMMARY_COLUMNS.slice(2)) {
          const value = (index) => models[index].summaries[key][layer][head];
          row[key] = isDiff() ? (value(1) === null || value(0) === null ? null : value(1) - value(0)) : value(state.model);
        }
        rows.push(row);
      }
    }
    const { key, descending } = state.sort;
    if (key) {
      rows.sort((a, b) => {
        if (a[key] === null) return 1;
        if (b[key] === null) return -1;
        return descending ? b[key] - a[key] : a[key] - b[key];
      });
    }
    return rows;
  }

  function renderSummary() {
    const table = $("summary-table");
    table.innerHTML = "";
    const rows = summaryRows();
    const header = table.createTHead().insertRow();
    for (const [key, title] of SUMMARY_COLUMNS) {
      const cell = document.createElement("th");
      cell.textContent = isDiff() && !["layer", "head"].includes(key) ? `Δ ${title}` : title;
      cell.dataset.key = key;
      if (state.sort.key === key) cell.className = state.sort.descending ? "sorted-desc" : "sorted-asc";
      header.append(cell);
    }
    const largest = {};
    for (const [key] of SUMMARY_COLUMNS) largest[key] = Math.max(1e-9, ...rows.map((row) => Math.abs(row[key] ?? 0)));
    const body = table.createTBody();
    for (const row of rows) {
      const line = body.insertRow();
      line.dataset.layer = row.layer;
      line.dataset.head = row.head;
      for (const [key] of SUMMARY_COLUMNS) {
        const cell = line.insertCell();
        const value = row[key];
        if (key === "layer" || key === "head") cell.textContent = value;
        else if (value === null) cell.textContent = "—";
        else {
          const bar = document.createElement("span");
          bar.className = "cellbar";
          bar.style.width = `${Math.round((50 * Math.abs(value)) / largest[key])}px`;
          cell.append(bar, value.toFixed(3));
        }
      }
    }
  }

  // ---------------------------------------------------------------- classify
  const classifyPosition = () => DATA.kinds.lastIndexOf("classify");

  function renderClassify() {
    const position = classifyPosition();
    if (position < 0) return;
    const model = shown();
    const keys = position + 1;
    const width = Math.max(480, Math.min(1400, $("view-classify").clientWidth - 10));
    const label = 66;
    const rowHeight = 64;
    const barArea = width - label - 180;
    const barWidth = barArea / keys;
    const labelsHeight = keys <= 80 ? 90 : 20;
    const canvas = $("classify-canvas");
    const context = sizeCanvas(canvas, width, model.layers * rowHeight + labelsHeight);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, model.layers * rowHeight + labelsHeight);
    for (let layer = 0; layer < model.layers; layer++) {
      const pairs = range(model.heads).map((head) => [layer, head]);
      const values = range(keys).map((key) => meanWeight(state.model, pairs, position, key));
      const extent = Math.max(1e-9, ...values.map(Math.abs));
      const top = layer * rowHeight + 6;
      const baseline = top + rowHeight - 18;
      context.fillStyle = "#424a53";
      context.font = "12px system-ui, sans-serif";
      context.fillText(`layer ${layer}`, 4, top + (rowHeight - 18) / 2 + 4);
      values.forEach((value, key) => {
        const height = ((rowHeight - 26) * Math.abs(value)) / (isDiff() ? extent : Math.max(extent, 0.05));
        context.fillStyle = isDiff() ? css(value < 0 ? NEGATIVE : POSITIVE) : "#2171b5";
        context.fillRect(label + key * barWidth + 0.5, baseline - height, Math.max(1, barWidth - 1), height);
        context.fillStyle = SEGMENT_COLOURS[DATA.segments[key] % SEGMENT_COLOURS.length];
        context.fillRect(label + key * barWidth, baseline + 2, Math.max(1, barWidth), 3);
      });
      const order = range(keys).sort((a, b) => Math.abs(values[b]) - Math.abs(values[a])).slice(0, 3);
      context.fillStyle = "#1f2328";
      context.fillText(
        order.map((key) => `${quoted(key)} ${values[key].toFixed(2)}`).join("  "),
        label + barArea + 10,
        top + (rowHeight - 18) / 2 + 4,
      );
    }
    if (keys <= 80) {
      context.font = "11px system-ui, sans-serif";
      context.fillStyle = "#424a53";
      for (let key = 0; key < keys; key++) {
        context.save();
        context.translate(label + (key + 0.5) * barWidth, model.layers * rowHeight + 4);
        context.rotate(Math.PI / 3);
        context.fillText(tokenLabel(key).slice(0, 14), 0, 0);
        context.restore();
      }
    }
  }

  // ---------------------------------------------------------------- PNG
  function tableToCanvas(table) {
    const rows = Array.from(table.rows).map((row) => Array.from(row.cells, (cell) => cell.textContent.trim()));
    const probe = document.createElement("canvas").getContext("2d");
    probe.font = "13px system-ui, sans-serif";
    const columns = Math.max(...rows.map((row) => row.length));
    const widths = range(columns).map((column) =>
      Math.min(260, Math.max(...rows.map((row) => probe.measureText(row[column] ?? "").width)) + 16),
    );
    const canvas = document.createElement("canvas");
    const context = sizeCanvas(canvas, widths.reduce((a, b) => a + b, 0), rows.length * 20 + 4);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.font = "13px system-ui, sans-serif";
    rows.forEach((row, rowIndex) => {
      let x = 0;
      if (rowIndex === 0) {
        context.fillStyle = "#f6f8fa";
        context.fillRect(0, 0, canvas.width, 20);
      }
      row.forEach((text, column) => {
        context.fillStyle = "#1f2328";
        context.fillText(text, x + 8, rowIndex * 20 + 15, widths[column] - 12);
        x += widths[column];
      });
    });
    return canvas;
  }

  function viewCanvases() {
    if (state.view === "model") return [$("model-canvas")];
    if (state.view === "head") return [$("token-canvas"), $("matrix-canvas")];
    if (state.view === "classify") return [$("classify-canvas")];
    if (state.view === "summary") return [tableToCanvas($("summary-table"))];
    return Array.from($("step-body").querySelectorAll("table"), tableToCanvas);
  }

  /** What the current view shows, as a PNG data URL (with a title line), and offered as a download. */
  function savePNG(download = true) {
    const parts = viewCanvases();
    const ratio = DPR();
    const titleHeight = Math.round(28 * ratio);
    const gap = Math.round(16 * ratio);
    const width = parts.reduce((sum, part) => sum + part.width, 0) + gap * (parts.length + 1);
    const height = titleHeight + Math.max(...parts.map((part) => part.height)) + gap;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    context.fillStyle = "#1f2328";
    context.font = `${Math.round(14 * ratio)}px system-ui, sans-serif`;
    const modelName = isDiff() ? `${models[1].name} − ${models[0].name}` : shown().name;
    context.fillText(`${DATA.title}: ${VIEW_NAMES[state.view]} · ${modelName} · ${T} tokens`, gap, Math.round(19 * ratio));
    let x = gap;
    for (const part of parts) {
      context.drawImage(part, x, titleHeight);
      x += part.width + gap;
    }
    const url = canvas.toDataURL("image/png");
    if (download) {
      const link = document.createElement("a");
      link.href = url;
      link.download = `attention-${state.view}.png`;
      document.body.append(link);
      link.click();
      link.remove();
    }
    return url;
  }

  // ---------------------------------------------------------------- controls
  function render() {
    document.querySelectorAll(".view").forEach((section) => section.classList.toggle("active", section.id === `view-${state.view}`));
    document.querySelectorAll("#tabs button").forEach((button) => button.setAttribute("aria-selected", String(button.dataset.view === state.view)));
    if (state.view === "model") renderModelView();
    else if (state.view === "head") renderHeadView();
    else if (state.view === "step") renderStep();
    else if (state.view === "summary") renderSummary();
    else if (state.view === "classify") renderClassify();
    syncControls();
  }

  function fillSelect(select, options) {
    select.innerHTML = "";
    for (const [value, text] of options) select.add(new Option(text, value));
  }

  function buildHeadCheckboxes() {
    const container = $("head-heads");
    container.innerHTML = "";
    for (let head = 0; head < shown().heads; head++) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = head;
      box.addEventListener("change", () => {
        if (box.checked) state.heads.add(head);
        else state.heads.delete(head);
        render();
      });
      label.append(box, ` ${head}`);
      container.append(label);
    }
  }

  function syncControls() {
    $("head-layer").value = String(state.layer);
    $("head-heads").querySelectorAll("input").forEach((box) => (box.checked = state.heads.has(Number(box.value))));
    document.querySelectorAll("input[name=direction]").forEach((radio) => (radio.checked = radio.value === state.direction));
    $("step-query").value = String(state.query);
    $("step-layer").value = String(state.stepLayer);
    $("step-head").value = String(state.stepHead);
    $("step-model").value = String(state.stepModel);
    $("model-select").value = String(state.model);
    $("scale-select").value = state.scale;
    $("step-model-choice").hidden = models.length < 2;
  }

  function legend() {
    const parts = [];
    if (DATA.kinds.some((kind) => kind !== "text") || new Set(DATA.segments).size > 1) {
      const segments = [...new Set(DATA.segments)];
      parts.push(
        "Task format: " +
          segments.map((segment) => `<span class="swatch" style="background:${SEGMENT_COLOURS[segment % SEGMENT_COLOURS.length]}"></span>part ${segment + 1}`).join("") +
          " · special tokens in dashed boxes",
      );
    }
    if (models.length > 1) {
      const [first, second] = models.map((model) => escapeHtml(model.name));
      parts.push(`Comparing <b>${first}</b> and <b>${second}</b> on the same tokens; "difference": red where the second attends more, blue where less.`);
    }
    $("tokens-legend").innerHTML = parts.join(" &nbsp;·&nbsp; ");
  }

  function choose(layer, head) {
    state.layer = layer;
    state.heads = new Set([head]);
    state.stepLayer = layer;
    state.stepHead = head;
  }

  function wire() {
    document.querySelectorAll("#tabs button").forEach((button) =>
      button.addEventListener("click", () => {
        state.view = button.dataset.view;
        render();
      }),
    );
    $("model-select").addEventListener("change", (event) => {
      state.model = event.target.value === "diff" ? "diff" : Number(event.target.value);
      if (!isDiff()) state.stepModel = state.model;
      render();
    });
    $("scale-select").addEventListener("change", (event) => {
      state.scale = event.target.value;
      render();
    });
    $("save-png").addEventListener("click", () => savePNG(true));
    $("model-canvas").addEventListener("click", (event) => {
      const cell = modelCellAt(event);
      if (!cell) return;
      choose(cell.layer, cell.head);
      state.view = "head";
      render();
    });
    $("model-canvas").addEventListener("mousemove", (event) => {
      const cell = modelCellAt(event);
      $("model-canvas").title = cell ? `layer ${cell.layer}, head ${cell.head}: click to open` : "";
    });
    const tokens = $("token-canvas");
    tokens.addEventListener("mousemove", (event) => {
      const index = tokenAt(event);
      if (index !== state.hover) {
        state.hover = index;
        renderHeadView();
      }
    });
    tokens.addEventListener("mouseleave", () => {
      state.hover = null;
      renderHeadView();
    });
    tokens.addEventListener("click", (event) => {
      const index = tokenAt(event);
      if (index === null) return;
      state.query = index;
      state.hover = null;
      renderHeadView();
      syncControls();
    });
    tokens.addEventListener("keydown", (event) => {
      const move = { ArrowLeft: -1, ArrowRight: 1 }[event.key];
      if (!move) return;
      state.query = Math.min(T - 1, Math.max(0, state.query + move));
      renderHeadView();
      event.preventDefault();
    });
    $("matrix-canvas").addEventListener("mousemove", (event) => {
      const rect = $("matrix-canvas").getBoundingClientRect();
      const size = rect.width - 28;
      const query = Math.floor(((event.clientY - rect.top - 24) / size) * T);
      const key = Math.floor(((event.clientX - rect.left - 24) / size) * T);
      if (query < 0 || key < 0 || query >= T || key >= T) return;
      const value = key > query ? "masked (the future)" : meanWeight(state.model, chosenPairs(), query, key).toFixed(4);
      $("matrix-canvas").title = `query ${quoted(query)} (${query}) → key ${quoted(key)} (${key}): ${value}`;
    });
    $("head-layer").addEventListener("change", (event) => {
      state.layer = event.target.value === "all" ? "all" : Number(event.target.value);
      if (state.layer !== "all") state.stepLayer = state.layer;
      render();
    });
    $("heads-all").addEventListener("click", () => {
      state.heads = new Set(range(shown().heads));
      render();
    });
    $("heads-none").addEventListener("click", () => {
      state.heads = new Set();
      render();
    });
    document.querySelectorAll("input[name=direction]").forEach((radio) =>
      radio.addEventListener("change", () => {
        state.direction = radio.value;
        render();
      }),
    );
    $("step-query").addEventListener("change", (event) => {
      state.query = Number(event.target.value);
      render();
    });
    $("step-layer").addEventListener("change", (event) => {
      state.stepLayer = Number(event.target.value);
      render();
    });
    $("step-head").addEventListener("change", (event) => {
      state.stepHead = Number(event.target.value);
      render();
    });
    $("step-model").addEventListener("change", (event) => {
      state.stepModel = Number(event.target.value);
      render();
    });
    $("summary-table").addEventListener("click", (event) => {
      const header = event.target.closest("th");
      if (header) {
        const key = header.dataset.key;
        state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "layer" && key !== "head" };
        renderSummary();
        return;
      }
      const row = event.target.closest("tr");
      if (row && row.dataset.layer !== undefined) {
        choose(Number(row.dataset.layer), Number(row.dataset.head));
        state.view = "head";
        render();
      }
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(render, 120);
    });
  }

  function setUp() {
    const first = models[0];
    $("title").textContent = DATA.title;
    const sizes = models.map((model) => `${model.name}: ${model.layers} layers × ${model.heads} heads, d = ${model.headDim}`);
    $("subtitle").textContent = `${T} tokens · ${sizes.join(" · ")}`;
    if (models.length > 1) {
      const options = models.map((model, index) => [index, `${model.name}`]);
      const comparable = models[1].layers === first.layers && models[1].heads === first.heads;
      if (comparable) options.push(["diff", `difference (${models[1].name} − ${first.name})`]);
      fillSelect($("model-select"), options);
      fillSelect($("step-model"), models.map((model, index) => [index, model.name]));
      $("model-choice").hidden = false;
    }
    fillSelect($("head-layer"), [...range(first.layers).map((layer) => [layer, `${layer}`]), ["all", "all (mean)"]]);
    fillSelect($("step-layer"), range(first.layers).map((layer) => [layer, `${layer}`]));
    fillSelect($("step-head"), range(first.heads).map((head) => [head, `${head}`]));
    fillSelect($("step-query"), range(T).map((index) => [index, `${index}: ${quoted(index)}`]));
    document.querySelector('#tabs button[data-view="classify"]').hidden = classifyPosition() < 0;
    state.heads = new Set(range(first.heads));
    state.query = classifyPosition() >= 0 ? classifyPosition() : T - 1;
    buildHeadCheckboxes();
    legend();
    wire();
  }

  async function start() {
    try {
      for (const payload of DATA.models) models.push(await decodeModel(payload));
      setUp();
      render();
    } catch (error) {
      document.querySelector("main").textContent = `The explorer could not start: ${error.message}`;
      console.error(error);
      throw error;
    }
  }

  // For notebooks and tests: the page's state and what it has drawn.
  window.gpt1Explorer = {
    ready: start(),
    state,
    render,
    weight: (modelIndex, layer, head, query, key) => weight(models[modelIndex], layer, head, query, key),
    highlighted: () => highlighted(),
    tokenBox: (index) => ({ ...tokenBoxes[index] }),
    stepNumbers: () => {
      const { model, ...numbers } = stepNumbers();
      return { ...numbers, q: Array.from(numbers.q), model: model.name };
    },
    savePNG: () => savePNG(false),
  };
})();
