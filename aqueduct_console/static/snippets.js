// The exact request the playground sent, as a curl command and as OpenAI Python SDK code.
//
// A request is {operation: "generate" | "edit", fields, images, mask}: `fields`
// holds only the parameters that were sent, `images` the uploaded files'
// names, `mask` whether a mask went with them (saved as mask.png). The token
// is never written out: both read it from $AQ_TOKEN, as the README does.

const PATHS = { generate: "/v1/images/generations", edit: "/v1/images/edits" };

/** Single-quotes a shell word (a ' inside becomes '\''). */
function shellQuoted(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

/** A Python literal for a JSON value (JSON's string escapes are Python's too). */
function pythonLiteral(value) {
  if (value === true) return "True";
  if (value === false) return "False";
  if (value === null) return "None";
  return JSON.stringify(value);
}

export function curlCommand(request, origin = location.origin) {
  const streamed = request.fields.stream === true;
  const lines = [
    `curl -s${streamed ? "N" : ""} ${origin}${PATHS[request.operation]}`,
    `-H "Authorization: Bearer $AQ_TOKEN"`,
  ];
  if (request.operation === "generate") {
    lines.push(`-H "Content-Type: application/json"`, `-d ${shellQuoted(JSON.stringify(request.fields))}`);
  } else {
    for (const name of request.images) lines.push(`-F ${shellQuoted(`image[]=@${name}`)}`);
    if (request.mask) lines.push(`-F 'mask=@mask.png'`);
    // --form-string: a prompt starting with @ or < is text, not a file to read.
    for (const [name, value] of Object.entries(request.fields)) {
      lines.push(`--form-string ${shellQuoted(`${name}=${value}`)}`);
    }
  }
  return lines.join(" \\\n  ");
}

export function pythonCode(request, origin = location.origin) {
  const fields = { ...request.fields };
  const streamed = fields.stream === true;
  const extension = fields.output_format ?? "png";
  const call = request.operation === "generate" ? "generate" : "edit";
  const arguments_ = [];
  if (request.operation === "edit") {
    const files = request.images.map((name) => `open(${pythonLiteral(name)}, "rb")`);
    arguments_.push(`image=[${files.join(", ")}]`);
    if (request.mask) arguments_.push(`mask=open("mask.png", "rb")`);
  }
  for (const [name, value] of Object.entries(fields)) arguments_.push(`${name}=${pythonLiteral(value)}`);

  const lines = [
    "import base64, os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${pythonLiteral(`${origin}/v1`)}, api_key=os.environ["AQ_TOKEN"])`,
    `${streamed ? "stream" : "result"} = client.images.${call}(`,
    ...arguments_.map((argument) => `    ${argument},`),
    ")",
  ];
  if (streamed) {
    lines.push(
      "done = 0",
      "for event in stream:",
      "    print(event.type)",
      '    if event.type.endswith(".completed"):',
      `        open(f"image-{done}.${extension}", "wb").write(base64.b64decode(event.b64_json))`,
      "        done += 1",
    );
  } else {
    lines.push(
      "for i, image in enumerate(result.data):",
      `    open(f"image-{i}.${extension}", "wb").write(base64.b64decode(image.b64_json))`,
    );
  }
  return lines.join("\n");
}
