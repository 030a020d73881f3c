// Painting an edit's mask over its first image, with a mouse, a finger or the keyboard.
//
// The canvas shows the image at its own pixel size (CSS scales it to fit), so
// strokes are kept in image pixels and the mask is exactly the image's size, as
// the API requires. What is painted becomes transparent in the mask: the area
// the model edits. Everything else stays opaque.

// Painted pixels are shown as what they become: mostly see-through, so the
// canvas's checkerboard shows there whatever the image's colours are.
const PAINTED_OPACITY = 0.8;
const KEYBOARD_STEP = 8; // screen pixels per arrow key press (Shift: 4x)

export class MaskPainter {
  /**
   * @param {HTMLCanvasElement} canvas The visible canvas (image + strokes).
   * @param {HTMLInputElement} brushSize Brush diameter in screen pixels.
   * @param {HTMLInputElement} erase Checked: strokes remove paint.
   */
  constructor(canvas, brushSize, erase) {
    this.canvas = canvas;
    this.brushSize = brushSize;
    this.erase = erase;
    this.image = null;
    this.strokes = document.createElement("canvas"); // the painted area, image-sized
    this.painted = false;
    this.last = null; // the previous point of the stroke being drawn
    this.cursor = null; // the keyboard's brush position, in image pixels
    canvas.addEventListener("pointerdown", (event) => this.#pointerDown(event));
    canvas.addEventListener("pointermove", (event) => this.#pointerMove(event));
    canvas.addEventListener("pointerup", () => (this.last = null));
    canvas.addEventListener("pointercancel", () => (this.last = null));
    canvas.addEventListener("keydown", (event) => this.#key(event));
    canvas.addEventListener("focus", () => this.#redraw());
    canvas.addEventListener("blur", () => this.#redraw());
  }

  /**
   * Shows `file` (the first image) and starts an empty mask; null clears the
   * canvas. Resolves to whether there is an image to paint on (false too for
   * a file the browser cannot decode: the gateway will say what is wrong).
   */
  async setImage(file) {
    try {
      this.image = file ? await createImageBitmap(file) : null;
    } catch {
      this.image = null;
    }
    const [width, height] = this.image ? [this.image.width, this.image.height] : [1, 1];
    this.canvas.width = this.strokes.width = width;
    this.canvas.height = this.strokes.height = height;
    this.cursor = { x: width / 2, y: height / 2 };
    this.clear();
    return this.image !== null;
  }

  clear() {
    this.strokes.getContext("2d").clearRect(0, 0, this.strokes.width, this.strokes.height);
    this.painted = false;
    this.#redraw();
  }

  /** The mask as a PNG Blob of the image's size, or null when nothing is painted. */
  async maskBlob() {
    if (!this.image || !this.painted) return null;
    const mask = document.createElement("canvas");
    mask.width = this.strokes.width;
    mask.height = this.strokes.height;
    const context = mask.getContext("2d");
    context.fillStyle = "black";
    context.fillRect(0, 0, mask.width, mask.height);
    context.globalCompositeOperation = "destination-out"; // painted pixels -> alpha 0
    context.drawImage(this.strokes, 0, 0);
    return new Promise((resolve) => mask.toBlob(resolve, "image/png"));
  }

  /** How many image pixels one screen pixel is (the canvas is scaled to fit). */
  #scale() {
    const box = this.canvas.getBoundingClientRect();
    return box.width ? this.canvas.width / box.width : 1;
  }

  #point(event) {
    const box = this.canvas.getBoundingClientRect();
    const scale = this.#scale();
    return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale };
  }

  #pointerDown(event) {
    if (!this.image || event.button !== 0) return;
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.#point(event);
    this.#paint(this.last, this.last);
  }

  #pointerMove(event) {
    if (!this.last) return;
    const point = this.#point(event);
    this.#paint(this.last, point);
    this.last = point;
  }

  #key(event) {
    if (!this.image) return;
    const step = KEYBOARD_STEP * (event.shiftKey ? 4 : 1) * this.#scale();
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (event.key in moves) {
      const [dx, dy] = moves[event.key];
      this.cursor = {
        x: Math.min(this.canvas.width, Math.max(0, this.cursor.x + dx)),
        y: Math.min(this.canvas.height, Math.max(0, this.cursor.y + dy)),
      };
      this.#redraw();
    } else if (event.key === " " || event.key === "Enter") {
      this.#paint(this.cursor, this.cursor);
    } else {
      return;
    }
    event.preventDefault(); // arrows and Space would scroll the page
  }

  #paint(from, to) {
    const context = this.strokes.getContext("2d");
    context.globalCompositeOperation = this.erase.checked ? "destination-out" : "source-over";
    context.strokeStyle = "black"; // any opaque colour: only the strokes' alpha counts
    context.lineWidth = Number(this.brushSize.value) * this.#scale();
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    if (!this.erase.checked) this.painted = true;
    this.#redraw();
  }

  #redraw() {
    const context = this.canvas.getContext("2d");
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    context.drawImage(this.image, 0, 0);
    context.globalCompositeOperation = "destination-out";
    context.globalAlpha = PAINTED_OPACITY;
    context.drawImage(this.strokes, 0, 0);
    context.globalAlpha = 1;
    context.globalCompositeOperation = "source-over";
    if (document.activeElement === this.canvas) {
      // Where Space paints: a ring the brush's size.
      context.beginPath();
      context.arc(
        this.cursor.x,
        this.cursor.y,
        (Number(this.brushSize.value) * this.#scale()) / 2,
        0,
        2 * Math.PI,
      );
      context.lineWidth = 2 * this.#scale();
      context.strokeStyle = "white";
      context.stroke();
      context.setLineDash([4 * this.#scale(), 4 * this.#scale()]);
      context.strokeStyle = "black";
      context.stroke();
      context.setLineDash([]);
    }
  }
}
