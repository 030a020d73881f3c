// The playground: generations and edits, streamed or not, against any model the token may use.

import { callApi, savedToken, streamApi } from "./api.js";
import { describeError, h } from "./dom.js";
import { MaskPainter } from "./mask_painter.js";
import { addUsage, RunCard } from "./run_card.js";

const PATHS = { generate: "/v1/images/generations", edit: "/v1/images/edits" };
const KEPT_RUNS = 10; // older cards (and their images' memory) are dropped
const OPTIONAL_FIELDS = ["size", "quality", "output_format", "background"];

export function startPlayground() {
  const form = document.getElementById("image-form");
  const fields = form.elements;
  const submit = document.getElementById("image-submit");
  const cancel = document.getElementById("image-cancel");
  const runs = document.getElementById("runs");
  const runsEmpty = document.getElementById("runs-empty");
  const cards = [];
  const editFiles = []; // the chosen images, in order: the first is the one edited
  const painter = new MaskPainter(
    document.getElementById("mask-canvas"),
    document.getElementById("brush-size"),
    document.getElementById("mask-erase"),
  );
  let running = null; // the AbortController of the request under way

  function operation() {
    return fields.operation.value;
  }

  function showOperation() {
    const editing = operation() === "edit";
    document.getElementById("edit-inputs").hidden = !editing;
    submit.textContent = editing ? "Edit" : "Generate";
  }

  function showFiles() {
    const list = document.getElementById("edit-image-list");
    for (const image of list.querySelectorAll("img")) URL.revokeObjectURL(image.src);
    list.replaceChildren(
      ...editFiles.map((file, index) => {
        const remove = h(
          "button",
          { type: "button" },
          "Remove",
          h("span", { class: "visually-hidden" }, ` ${file.name}`),
        );
        remove.addEventListener("click", () => {
          editFiles.splice(index, 1);
          showFiles();
        });
        return h(
          "li",
          {},
          h("img", { src: URL.createObjectURL(file), alt: "" }),
          h(
            "span",
            { class: "file-name" },
            file.name,
            h("span", { class: "hint" }, index === 0 ? " (edited)" : " (reference)"),
          ),
          remove,
        );
      }),
    );
    const maskFieldset = document.getElementById("mask-fieldset");
    maskFieldset.disabled = true;
    painter.setImage(editFiles[0] ?? null).then((shown) => (maskFieldset.disabled = !shown));
  }

  /** The request the form describes: only the fields that are set, as the API takes them. */
  function describeRequest() {
    const request = {
      operation: operation(),
      fields: {},
      images: editFiles.map((file) => file.name),
      mask: false,
    };
    const sent = request.fields;
    if (fields.model.value) sent.model = fields.model.value;
    sent.prompt = fields.prompt.value;
    for (const name of OPTIONAL_FIELDS) if (fields[name].value) sent[name] = fields[name].value;
    // 1 is the API's own default: leaving it out keeps the copied request short.
    if (fields.n.value && Number(fields.n.value) !== 1) sent.n = Number(fields.n.value);
    if (fields.stream.checked) {
      sent.stream = true;
      if (fields.partial_images.value !== "") sent.partial_images = Number(fields.partial_images.value);
    }
    return request;
  }

  function bodyOf(request, maskBlob) {
    if (request.operation === "generate") return { json: request.fields };
    const form = new FormData();
    for (const file of editFiles) form.append("image[]", file, file.name);
    if (maskBlob) form.append("mask", maskBlob, "mask.png");
    for (const [name, value] of Object.entries(request.fields)) form.append(name, String(value));
    return { form };
  }

  function addCard(card) {
    cards.unshift(card);
    runs.prepend(card.element);
    runsEmpty.hidden = true;
    for (const old of cards.splice(KEPT_RUNS)) {
      old.dispose();
      old.element.remove();
    }
  }

  async function send() {
    running = new AbortController();
    submit.disabled = true;
    cancel.hidden = false;
    const request = describeRequest();
    const maskBlob = request.operation === "edit" ? await painter.maskBlob() : null;
    request.mask = maskBlob !== null;
    const card = new RunCard(request, maskBlob);
    addCard(card);
    const options = { ...bodyOf(request, maskBlob), signal: running.signal };
    try {
      if (request.fields.stream) await sendStreamed(card, request, options);
      else await sendUnary(card, request, options);
    } catch (error) {
      if (error.name === "AbortError") card.cancelled();
      else card.failed(error);
    } finally {
      running = null;
      submit.disabled = false;
      cancel.hidden = true;
    }
  }

  async function sendUnary(card, request, options) {
    const answer = await callApi("POST", PATHS[request.operation], options);
    answer.body.data.forEach((item, index) => card.showImage(index, item));
    card.finish({ ...answer, usage: answer.body.usage });
  }

  async function sendStreamed(card, request, options) {
    const stream = await streamApi("POST", PATHS[request.operation], options);
    let usage = null;
    let firstEventMs = null;
    try {
      for await (const { event, data } of stream.events) {
        const elapsed = performance.now() - stream.started;
        firstEventMs ??= elapsed;
        card.showEvent(event, data, elapsed);
        if (event.endsWith(".completed")) usage = addUsage(usage, data.usage);
      }
    } catch (error) {
      error.latencyMs = performance.now() - stream.started;
      throw error;
    }
    card.finish({
      status: stream.status,
      requestId: stream.requestId,
      latencyMs: performance.now() - stream.started,
      usage,
      firstEventMs,
    });
  }

  async function loadModels() {
    const select = fields.model;
    const status = document.getElementById("model-status");
    const previous = select.value;
    select.replaceChildren(h("option", { value: "" }, "Gateway default"));
    status.classList.remove("error-text");
    if (!savedToken()) {
      status.textContent = "Enter a token above to list the models it may use.";
      return;
    }
    status.textContent = "Loading models…";
    try {
      const { body } = await callApi("GET", "/v1/models");
      const names = body.data.map((model) => model.id);
      select.append(...names.map((name) => h("option", { value: name }, name)));
      select.value = names.includes(previous) ? previous : (names[0] ?? "");
      status.textContent = `${names.length} model${names.length === 1 ? "" : "s"} this token may use.`;
    } catch (error) {
      status.textContent = `Could not list models: ${describeError(error)}`;
      status.classList.add("error-text");
    }
  }

  for (const radio of form.querySelectorAll("input[name=operation]"))
    radio.addEventListener("change", showOperation);
  fields.stream.addEventListener("change", () => (fields.partial_images.disabled = !fields.stream.checked));
  document.getElementById("edit-images").addEventListener("change", (event) => {
    editFiles.push(...event.target.files);
    event.target.value = ""; // so that choosing the same file again adds it again
    showFiles();
  });
  document.getElementById("mask-clear").addEventListener("click", () => painter.clear());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!running) send();
  });
  cancel.addEventListener("click", () => running?.abort());
  document.getElementById("runs-clear").addEventListener("click", () => {
    for (const card of cards.splice(0)) {
      card.dispose();
      card.element.remove();
    }
    runsEmpty.hidden = false;
  });
  document.addEventListener("token-changed", loadModels);

  fields.partial_images.disabled = !fields.stream.checked;
  showOperation();
  loadModels();
}
