// One request of the playground, as a card: what was asked, what came back
// (images, stream events, errors), how long it took, its usage, and the
// request again as curl and Python code.

import { copyText, describeError, h, integer, millis, selectContents } from "./dom.js";
import { curlCommand, pythonCode } from "./snippets.js";

const MIME_BY_MAGIC = [
  ["image/png", [0x89, 0x50, 0x4e, 0x47]],
  ["image/jpeg", [0xff, 0xd8, 0xff]],
  ["image/gif", [0x47, 0x49, 0x46]],
];

/** The image type of some bytes (the answer's output_format may be absent). */
function mimeOf(bytes) {
  for (const [mime, magic] of MIME_BY_MAGIC) {
    if (magic.every((byte, i) => bytes[i] === byte)) return mime;
  }
  const text = String.fromCharCode(...bytes.subarray(0, 12));
  if (text.startsWith("RIFF") && text.endsWith("WEBP")) return "image/webp";
  if (text.includes("<svg") || text.startsWith("<?xml")) return "image/svg+xml";
  return "application/octet-stream";
}

function blobFromBase64(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: mimeOf(bytes) });
}

function kilobytes(size) {
  return `${integer.format(Math.max(1, Math.round(size / 1024)))} KB`;
}

function usageText(usage) {
  if (!usage) return "not reported";
  const { input_tokens: input = 0, output_tokens: output = 0, total_tokens: total = 0 } = usage;
  if (!input && !output && !total) return "none reported (0 tokens)";
  return `${integer.format(input)} in · ${integer.format(output)} out · ${integer.format(total)} total tokens`;
}

/** Adds usages field by field (a stream of n images has n completed events). */
export function addUsage(sum, usage) {
  if (!usage) return sum;
  const next = { ...(sum ?? {}) };
  for (const key of ["input_tokens", "output_tokens", "total_tokens"])
    next[key] = (next[key] ?? 0) + (usage[key] ?? 0);
  return next;
}

export class RunCard {
  /**
   * @param request What was sent ({operation, fields, images, mask}; see snippets.js).
   * @param maskBlob The mask sent with an edit, offered for download; or null.
   */
  constructor(request, maskBlob = null) {
    this.request = request;
    this.urls = []; // object URLs this card made, revoked when it goes
    this.images = []; // one {figure, img, history} per image of the answer
    this.completed = 0;
    const verb = request.operation === "generate" ? "Generate" : "Edit";
    const model = request.fields.model ?? "default model";
    const time = new Date().toLocaleTimeString();
    this.state = h("p", { class: "run-state", role: "status" }, "Sending…");
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    this.facts = h("dl", { class: "facts", hidden: true });
    this.events = h("ol", { class: "events", hidden: true, "aria-label": "Stream events" });
    this.gallery = h("div", { class: "gallery" });
    this.element = h(
      "article",
      { class: "run panel", "data-state": "running", "aria-busy": "true" },
      h(
        "header",
        { class: "run-header" },
        h("h3", {}, `${verb} · ${model}`),
        h("p", { class: "hint" }, time),
      ),
      h("p", { class: "run-prompt" }, request.fields.prompt || "(no prompt)"),
      this.state,
      this.error,
      this.facts,
      this.events,
      this.gallery,
      this.#snippets(maskBlob),
    );
  }

  /** An image of a unary answer (`data[i]`: b64_json or a url). */
  showImage(index, item) {
    const slot = this.#slot(index);
    if (item.b64_json) this.#show(slot, blobFromBase64(item.b64_json), "final", null);
    else if (item.url) this.#showUrl(slot, item.url);
    if (item.revised_prompt)
      slot.figure.append(h("p", { class: "hint" }, `Revised prompt: ${item.revised_prompt}`));
  }

  /** A stream event: partials replace the picture of the image being made, completed ends it. */
  showEvent(name, data, elapsedMs) {
    const partial = name.endsWith(".partial_image");
    const blob = data.b64_json ? blobFromBase64(data.b64_json) : null;
    let label = name;
    if (partial) label += ` #${data.partial_image_index ?? 0}`;
    if (blob) label += ` (${kilobytes(blob.size)})`;
    this.events.hidden = false;
    this.events.append(
      h("li", { "data-event": name }, h("span", { class: "elapsed" }, `+${millis(elapsedMs)}`), " ", label),
    );
    if (!blob) return;
    const slot = this.#slot(this.completed);
    this.#show(slot, blob, partial ? "partial" : "final", partial ? (data.partial_image_index ?? 0) : null);
    if (!partial) this.completed += 1;
  }

  /** Ends the card: status, latency, request id and token usage. */
  finish({ status, latencyMs, requestId, usage, firstEventMs = null }) {
    this.#facts([
      ["status", "Status", `HTTP ${status}`],
      [
        "latency",
        "Latency",
        firstEventMs === null
          ? millis(latencyMs)
          : `${millis(latencyMs)} (first event after ${millis(firstEventMs)})`,
      ],
      ["request-id", "Request id", requestId ?? "—"],
      ["usage", "Usage", usageText(usage)],
    ]);
    const count = this.images.length;
    this.#end("done", `${count} image${count === 1 ? "" : "s"}.`);
  }

  failed(error) {
    this.error.hidden = false;
    this.error.textContent = describeError(error);
    const facts = [["status", "Status", error.status ? `HTTP ${error.status}` : "no answer"]];
    if (error.latencyMs !== undefined) facts.push(["latency", "Latency", millis(error.latencyMs)]);
    facts.push(["request-id", "Request id", error.requestId ?? "—"]);
    this.#facts(facts);
    this.#end("failed", "Failed.");
  }

  cancelled() {
    this.#end("cancelled", "Cancelled.");
  }

  /** Frees the images' memory: the card is gone from the page. */
  dispose() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }

  #end(state, text) {
    this.element.dataset.state = state;
    this.element.removeAttribute("aria-busy");
    this.state.textContent = text;
  }

  #facts(rows) {
    this.facts.hidden = false;
    this.facts.replaceChildren(
      ...rows.map(([key, term, value]) =>
        h("div", { "data-fact": key }, h("dt", {}, term), h("dd", {}, value)),
      ),
    );
  }

  #slot(index) {
    while (this.images.length <= index) {
      const number = this.images.length + 1;
      const img = h("img", {
        alt: `Image ${number}: ${this.request.fields.prompt ?? ""}`,
        decoding: "async",
      });
      const caption = h("figcaption", {});
      const figure = h(
        "figure",
        { class: "result-image", "data-history": "" },
        h("div", { class: "frame" }, img),
        caption,
      );
      this.gallery.append(figure);
      this.images.push({ figure, img, caption, number, history: [] });
    }
    return this.images[index];
  }

  #track(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }

  #show(slot, blob, state, partialIndex) {
    const previous = slot.img.getAttribute("src");
    const url = this.#track(blob);
    slot.img.src = url;
    if (previous?.startsWith("blob:")) {
      URL.revokeObjectURL(previous);
      this.urls = this.urls.filter((kept) => kept !== previous);
    }
    // What the figure has shown, in order: the tests read it, and so can people.
    slot.history.push(state === "partial" ? `partial:${partialIndex}` : "final");
    slot.figure.dataset.history = slot.history.join(" ");
    slot.figure.dataset.state = state;
    const extension = blob.type.split("/")[1]?.replace("svg+xml", "svg") ?? "bin";
    // A stream may show the next picture before this one is decoded: only the latest captions.
    const current = () => slot.img.src === url;
    slot.img.decode().then(
      () => {
        if (!current()) return;
        const size = `${slot.img.naturalWidth} × ${slot.img.naturalHeight}`;
        const kind = extension.toUpperCase();
        if (state === "partial") {
          slot.caption.replaceChildren(
            `Partial ${partialIndex + 1} · ${size} · ${kind} · ${kilobytes(blob.size)}`,
          );
        } else {
          const name = `aqueduct-${this.request.operation}-${slot.number}.${extension}`;
          slot.caption.replaceChildren(
            `${size} · ${kind} · ${kilobytes(blob.size)} · `,
            h(
              "a",
              { href: url, download: name },
              `Download`,
              h("span", { class: "visually-hidden" }, ` image ${slot.number}`),
            ),
          );
        }
      },
      () => {
        if (current()) slot.caption.replaceChildren(`${kilobytes(blob.size)} (${blob.type}: not shown here)`);
      },
    );
  }

  #showUrl(slot, url) {
    slot.img.src = url;
    slot.history.push("final");
    slot.figure.dataset.history = slot.history.join(" ");
    slot.figure.dataset.state = "final";
    slot.caption.replaceChildren(h("a", { href: url }, "Open image URL"));
  }

  #snippets(maskBlob) {
    const block = (title, text) => {
      const code = h("code", {}, text);
      const status = h("span", { class: "hint", role: "status" });
      const copy = h("button", { type: "button" }, `Copy ${title}`);
      copy.addEventListener("click", () => copyText(code.textContent, status, () => selectContents(code)));
      return h(
        "div",
        { class: "snippet" },
        h("h4", {}, title),
        h("pre", { tabindex: "0" }, code),
        h("div", { class: "snippet-actions" }, copy, status),
      );
    };
    const children = [h("summary", {}, "Copy as curl or Python SDK")];
    if (this.request.operation === "edit") {
      const note = h("p", { class: "hint" }, "Uploads are named as chosen; run these where those files are.");
      if (maskBlob)
        note.append(" ", h("a", { href: this.#track(maskBlob), download: "mask.png" }, "Download mask.png"));
      children.push(note);
    }
    children.push(block("curl", curlCommand(this.request)), block("Python", pythonCode(this.request)));
    return h("details", { class: "snippets" }, ...children);
  }
}
